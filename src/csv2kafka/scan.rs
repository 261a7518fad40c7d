//! Reading a job's rows back from Kafka: the resume scan (which rows after the
//! checkpoint already landed, so none is sent twice) and the verification pass (every
//! row of the job read back before it is COMPLETED, so none the broker lost goes
//! unnoticed). Both read partitions to their ends with one consumer per topic and look
//! only at the `job` and `line` headers. See ARCHITECTURE.md, "csv2kafka: exactly once
//! without transactions".

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::Kafka;
use super::kafka::{Dest, Reader, Slot, client_config};

/// After every partition reported its end, a read keeps on this long for late messages
/// (a watermark may be behind the log: see the tansu note in ARCHITECTURE.md).
const QUIET: Duration = Duration::from_millis(500);
/// How long a watermark query may wait.
const META_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one topic's read may take before it is an error.
const LIMIT: Duration = Duration::from_secs(300);

/// What the scan found of one job in one partition: the lines after the checkpoint that
/// landed there (every one, not just the highest: a delivery that timed out can leave a
/// gap before later rows of the same partition), and the offset past the last of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Landed {
    pub lines: std::collections::HashSet<u64>,
    pub next_offset: i64,
    /// The offset of the first of them (a checkpoint must not move past it while any
    /// of them is above the checkpoint's line).
    pub first_offset: Option<i64>,
    /// Past the last message the scan read in the partition (anyone's): where the next
    /// scan may start when none of the job's rows were found.
    pub end: i64,
}

impl Landed {
    /// The highest line found.
    pub fn max_line(&self) -> Option<u64> {
        self.lines.iter().copied().max()
    }
}

/// Reads every partition from `from` (per slot) to its end and reports, per slot, the
/// `line` headers above `after` among messages whose `job` header is `job`. Reads to the end
/// of what the fetches return (partition EOF) and then a quiet period: never a
/// watermark query alone. One consumer per topic, so an EOF names its partition.
pub fn scan(
    k: &Kafka,
    topics: &HashMap<Dest, String>,
    from: &BTreeMap<Slot, i64>,
    job: &str,
    after: u64,
    keep: &mut dyn FnMut() -> bool,
) -> Result<BTreeMap<Slot, Landed>, String> {
    let mut found = BTreeMap::new();
    for (dest, topic) in topics {
        let starts = starts(from, *dest);
        for (p, landed) in scan_topic(k, topic, &starts, (job, after), keep)? {
            found.insert((*dest, p), landed);
        }
    }
    Ok(found)
}

/// One topic's part of [`scan`]: where each partition's read ended, and the job's lines
/// above `after` found there.
fn scan_topic(
    k: &Kafka,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    (job, after): (&str, u64),
    keep: &mut dyn FnMut() -> bool,
) -> Result<BTreeMap<i32, Landed>, String> {
    // Every partition scanned is reported, with where the scan ended in it.
    let mut found: BTreeMap<i32, Landed> = from
        .iter()
        .map(|(&p, &o)| {
            let landed = Landed {
                end: o,
                ..Landed::default()
            };
            (p, landed)
        })
        .collect();
    read_topic(k, topic, from, job, keep, &mut |p, offset, line| {
        let e = found.entry(p).or_default();
        e.end = e.end.max(offset + 1);
        if let Some(line) = line
            && line > after
        {
            e.lines.insert(line);
            e.next_offset = e.next_offset.max(offset + 1);
            e.first_offset = Some(e.first_offset.map_or(offset, |f| f.min(offset)));
        }
    })?;
    Ok(found)
}

/// What the verification pass read back of a job: which of its lines are in Kafka
/// (one bit per line), and how many were found more than once or past its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    bits: Vec<u64>,
    total: u64,
    /// Distinct lines of the job found.
    pub found: u64,
    /// Messages of a line found already (in the topic twice).
    pub duplicates: u64,
    /// Messages of a line past the job's last.
    pub strays: u64,
}

impl ReadBack {
    pub fn new(total: u64) -> ReadBack {
        ReadBack {
            bits: vec![0; total.div_ceil(64) as usize],
            total,
            found: 0,
            duplicates: 0,
            strays: 0,
        }
    }

    /// Notes one message of the job's line `line` (numbered from 1).
    pub fn add(&mut self, line: u64) {
        let Some(word) = line
            .checked_sub(1)
            .filter(|_| line <= self.total)
            .and_then(|i| self.bits.get_mut((i / 64) as usize))
        else {
            self.strays += 1;
            return;
        };
        let bit = 1u64 << ((line - 1) % 64);
        if *word & bit != 0 {
            self.duplicates += 1;
        } else {
            *word |= bit;
            self.found += 1;
        }
    }

    pub fn has(&self, line: u64) -> bool {
        line.checked_sub(1)
            .filter(|_| line <= self.total)
            .and_then(|i| {
                self.bits
                    .get((i / 64) as usize)
                    .map(|w| w >> (i % 64) & 1 == 1)
            })
            .unwrap_or(false)
    }

    /// The first `n` lines of the job not found.
    pub fn missing(&self, n: usize) -> Vec<u64> {
        (1..=self.total).filter(|l| !self.has(*l)).take(n).collect()
    }
}

/// The verification pass: every message of `job` in `topics` from `from` (per slot: the
/// offsets where the job's first rows could land) to the ends, as a [`ReadBack`] of
/// lines `1..=total`.
pub fn read_back(
    k: &Kafka,
    topics: &HashMap<Dest, String>,
    from: &BTreeMap<Slot, i64>,
    job: &str,
    total: u64,
    keep: &mut dyn FnMut() -> bool,
) -> Result<ReadBack, String> {
    let mut back = ReadBack::new(total);
    for (dest, topic) in topics {
        let starts = starts(from, *dest);
        read_topic(k, topic, &starts, job, keep, &mut |_, _, line| {
            if let Some(line) = line {
                back.add(line);
            }
        })?;
    }
    Ok(back)
}

/// The partitions of `dest` in `from`, with their offsets.
fn starts(from: &BTreeMap<Slot, i64>, dest: Dest) -> BTreeMap<i32, i64> {
    from.iter()
        .filter(|((d, _), _)| *d == dest)
        .map(|((_, p), o)| (*p, *o))
        .collect()
}

/// Reads `topic`'s partitions from `from` to their ends (partition EOF, then a quiet
/// period: never a watermark query alone), handing `visit` every message's partition,
/// offset and, for a message of `job`, its line. `keep` is called between polls (the
/// job renews its lease there, so a read longer than the lease still ends with the job
/// in hand) and ends the read when it answers false.
fn read_topic(
    k: &Kafka,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    job: &str,
    keep: &mut dyn FnMut() -> bool,
    visit: &mut dyn FnMut(i32, i64, Option<u64>),
) -> Result<(), String> {
    if from.is_empty() {
        return Ok(());
    }
    let from = within_logs(k, topic, from)?;
    let consumer = assigned(k, topic, &from)?;
    let mut at_end: BTreeMap<i32, bool> = from.keys().map(|p| (*p, false)).collect();
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    loop {
        if !keep() {
            return Err(format!("reading {topic} back: stopped"));
        }
        if started.elapsed() > LIMIT {
            return Err(format!(
                "reading {topic} back did not reach its end in {} s",
                LIMIT.as_secs()
            ));
        }
        if at_end.values().all(|e| *e) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                return Ok(());
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(e)) => return Err(format!("reading {topic} back: {e}")),
            Some(Ok(m)) => {
                quiet_since = None;
                at_end.insert(m.partition(), false);
                visit(m.partition(), m.offset(), job_line(&m, job));
            }
        }
    }
}

/// `from` moved inside each partition's log: an offset past a partition's end means the
/// broker lost messages it had (or the topic was created again), and the log is read
/// from its start; one before its start (retention) from there.
fn within_logs(
    k: &Kafka,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, String> {
    let probe: BaseConsumer<Reader> = client_config(k)
        .create_with_context(Reader)
        .map_err(|e| format!("Kafka consumer: {e}"))?;
    // With MSK IAM the token is asked for at creation, answered on a poll.
    let _ = probe.poll(Duration::ZERO);
    let mut out = BTreeMap::new();
    for (&p, &offset) in from {
        let (low, high) = probe
            .fetch_watermarks(topic, p, k.connect_timeout.min(META_TIMEOUT))
            .map_err(|e| format!("Kafka watermarks of {topic}/{p}: {e}"))?;
        let start = if offset > high {
            log::warn!(
                "{topic}/{p} ends at offset {high}, before {offset} where this job's rows \
                 were: the broker lost messages; reading the partition from its start"
            );
            low
        } else {
            offset.max(low)
        };
        out.insert(p, start.max(0));
    }
    Ok(out)
}

/// A consumer of `topic` assigned `from` (partition, offset). librdkafka's fetcher backs
/// off `fetch.queue.backoff.ms` (1 s by default) whenever its queue holds
/// `queued.min.messages`: at 5 ms the verification pass of 941,879 rows took 2.1 s
/// instead of 6.3 s (idle in between); the smaller queue keeps it near 75 MiB.
fn assigned(
    k: &Kafka,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> Result<BaseConsumer<Reader>, String> {
    let mut c = client_config(k);
    c.set("group.id", "csv2kafka-resume-scan")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "4194304")
        .set("fetch.queue.backoff.ms", "5")
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "16384");
    let consumer: BaseConsumer<Reader> = c
        .create_with_context(Reader)
        .map_err(|e| format!("Kafka consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &offset) in from {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))
            .map_err(|e| format!("Kafka assign: {e}"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("Kafka assign: {e}"))?;
    Ok(consumer)
}

/// The `line` header of a message of `job`.
fn job_line<M: Message>(m: &M, job: &str) -> Option<u64> {
    let headers = m.headers()?;
    let mut is_job = false;
    let mut line = None;
    for h in headers.iter() {
        match h.key {
            "job" => is_job = h.value == Some(job.as_bytes()),
            "line" => {
                line = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            }
            _ => {}
        }
    }
    if is_job { line } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_back_counts_each_line_once_and_names_the_missing() {
        let mut back = ReadBack::new(130);
        for line in (1..=130).filter(|l| l % 50 != 0) {
            back.add(line);
        }
        back.add(64);
        back.add(65);
        back.add(0);
        back.add(131);
        assert_eq!((back.found, back.duplicates, back.strays), (128, 2, 2));
        assert!(back.has(64) && back.has(130) && !back.has(100) && !back.has(131));
        assert_eq!(back.missing(5), vec![50, 100]);
        assert_eq!(back.missing(1), vec![50]);
    }
}
