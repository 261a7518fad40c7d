//! One job: one S3 object streamed into Kafka, exactly once. The steps, each able to
//! stop at any moment (SIGKILL included) without losing or repeating a row:
//!
//! 1. take the job's lease in the checkpoint table (or learn it is done or busy);
//! 2. scan the job's partitions from the checkpoint's offsets to their end, learning the
//!    highest line of this job in each: rows sent after the last checkpoint that landed;
//! 3. read the object from the checkpoint's byte offset; each row goes to a partition
//!    fixed by its key, and is skipped if the scan found it there;
//! 4. as delivery reports arrive, the rows durably in Kafka form a prefix; every
//!    `interval_lines` rows (and at a stop) that prefix, its byte offset and the
//!    partition offsets past it are checkpointed;
//! 5. at the end: flush; then (`checkpoint.verify`) read every row of the job back from
//!    the offsets where it began, sending again from the object any row the broker lost;
//!    then COMPLETED with `total_lines`.
//!
//! A Kafka failure mid-way (a delivery timeout, a fatal idempotence error) goes back to
//! step 2 with a new producer: the same path as a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};

use super::checkpoint::{Checkpoint, Manager, Status, Taken};
use super::config::Config;
use super::csv::{Reader, Row, json_keys, to_json};
use super::emitter::{Emitter, Sample};
use super::kafka::{self, Ack, Dest, SendError, Sink, Slot};
use super::lease::{Lease, Now, now_ms};
use super::saver::{InFlight, Saver};
use super::scan::{self, Landed};
use super::source;
use super::values;
use crate::s3::S3;

/// How a job ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Completed,
    /// Stopped by a signal: the checkpoint holds where it stopped.
    Stopped,
    /// Another worker holds its lease.
    Busy,
}

/// How a stream over the object ended: a job outcome, or every row acknowledged and
/// the verification pass due.
enum Ended {
    Done(Outcome),
    Streamed,
}

/// Verification passes that may find rows missing and send them again before the job
/// is FAILED (a broker that keeps losing what it acknowledged is not one to trust).
const MAX_REPAIRS: u32 = 3;

/// Everything a job needs that outlives it.
pub struct Context<'a> {
    pub config: &'a Config,
    pub checkpoints: &'a Manager,
    pub emitter: Option<&'a Emitter>,
    pub stop: &'a AtomicBool,
}

/// A row sent and not yet acknowledged, in line order.
#[derive(Debug)]
struct Pending {
    line: u64,
    end: u64,
    bytes_done: u64,
    /// Where it went, or `None` for a row that needs no acknowledgement.
    slot: Option<Slot>,
    acked: Option<i64>,
    sent: bool,
    failed: bool,
    /// Failed and sent nowhere (no dead-letter topic, or refused there too): the
    /// verification pass does not look for it in Kafka.
    withheld: bool,
    /// When it was handed to the producer (every [`LATENCY_EVERY`]th row).
    sent_at: Option<Instant>,
}

/// A row's message: destination, key (`None`: the job id), and value (`None`: the JSON
/// written into [`Stream::json`]).
type Message<'r> = (Dest, Option<&'r [u8]>, Option<&'r [u8]>);

/// Attempts in a row that move no row before the job is FAILED (with the backoff
/// capped at a minute: about a quarter of an hour).
const RETRY_BUDGET: u32 = 20;

/// A row refused as too large goes to the dead-letter topic cut to this many bytes
/// (below librdkafka's default `message.max.bytes` of 1,000,000 with room for headers).
const DEAD_LETTER_BYTES: usize = 900_000;
/// Lines refused as too large remembered across attempts (past it, the oldest half is
/// forgotten: such a row is then refused once more and learnt again).
const REFUSED_KEPT: usize = 10_000;

/// Rows sent between two servings of delivery reports, checkpoints and metrics.
const SERVE_EVERY: u32 = 256;

/// One row in this many has its send-to-acknowledgement latency measured.
const LATENCY_EVERY: u64 = 16;
/// Latency samples kept (the oldest half dropped past it).
const LATENCY_SAMPLES: usize = 65_536;

/// The durable prefix: rows acknowledged (or needing none) in line order.
#[derive(Default)]
struct Tracker {
    pending: VecDeque<Pending>,
    durable_line: u64,
    durable_end: u64,
    durable_bytes: u64,
    /// Per partition, past the last acknowledged row of the durable prefix.
    next_offsets: BTreeMap<Slot, i64>,
    /// Per partition, where a scan must start at the least: the checkpoint's offsets,
    /// moved by the resume scan past other jobs' messages where it found none of ours.
    base: BTreeMap<Slot, i64>,
    /// Per partition, the rows the resume scan found: a checkpoint may not move the
    /// partition's offset past them until the durable prefix holds them all.
    held: BTreeMap<Slot, Landed>,
    sent: u64,
    failed: u64,
    withheld: u64,
    /// Send-to-acknowledgement latencies, microseconds.
    latencies: Vec<u32>,
}

impl Tracker {
    /// The partition offsets a checkpoint of the durable prefix may record: never past
    /// a row of this job above `durable_line`, so the next scan finds every such row.
    fn offsets(&self) -> BTreeMap<Slot, i64> {
        let mut out = self.base.clone();
        for (slot, landed) in &self.held {
            let Some(first) = landed.first_offset else {
                continue;
            };
            if landed.max_line().is_some_and(|l| l > self.durable_line) {
                out.insert(*slot, first);
            } else {
                let e = out.entry(*slot).or_insert(0);
                *e = (*e).max(landed.next_offset);
            }
        }
        for (slot, next) in &self.next_offsets {
            let held = self
                .held
                .get(slot)
                .is_some_and(|l| l.max_line().is_some_and(|m| m > self.durable_line));
            if !held {
                let e = out.entry(*slot).or_insert(0);
                *e = (*e).max(*next);
            }
        }
        out
    }

    fn push(&mut self, p: Pending) {
        self.pending.push_back(p);
        self.advance();
    }

    fn ack(&mut self, ack: &Ack) -> Result<(), String> {
        let (slot, offset) = ack.result.clone()?;
        let front = self.pending.front().map_or(0, |p| p.line);
        let i = ack
            .line
            .checked_sub(front)
            .ok_or("a report for a row already durable")?;
        let p = self
            .pending
            .get_mut(i as usize)
            .ok_or("a report for a row never sent")?;
        p.slot = Some(slot);
        p.acked = Some(offset);
        if let Some(at) = p.sent_at {
            if self.latencies.len() >= LATENCY_SAMPLES {
                self.latencies.drain(..LATENCY_SAMPLES / 2);
            }
            self.latencies
                .push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        self.advance();
        Ok(())
    }

    fn advance(&mut self) {
        while let Some(p) = self.pending.front() {
            let done = p.slot.is_none() || p.acked.is_some();
            if !done {
                return;
            }
            let Some(p) = self.pending.pop_front() else {
                return;
            };
            if let (Some(slot), Some(off)) = (p.slot, p.acked) {
                let e = self.next_offsets.entry(slot).or_insert(0);
                *e = (*e).max(off + 1);
            }
            self.sent += u64::from(p.sent);
            self.failed += u64::from(p.failed);
            self.withheld += u64::from(p.withheld);
            self.durable_line = p.line;
            self.durable_end = p.end;
            self.durable_bytes = p.bytes_done;
        }
    }
}

/// Runs the job `job_id` over `s3://bucket/key` until it completes, stops or is busy.
pub fn run(
    ctx: &Context,
    s3: &Arc<S3>,
    bucket: &str,
    key: &str,
    job_id: &str,
) -> Result<Outcome, String> {
    let source_object = format!("s3://{bucket}/{key}");
    let mut lease = Lease::new(ctx.config.checkpoint.lease, ctx.config.delivery());
    let started = Now::read();
    let (mut cp, took_over) = match ctx
        .checkpoints
        .take(job_id, &source_object)
        .map_err(|e| table_error(ctx, &e))?
    {
        Taken::Completed(_) => {
            log::info!("{job_id}: already COMPLETED; nothing to send");
            return Ok(Outcome::Completed);
        }
        Taken::Busy(cp) => {
            log::info!(
                "{job_id}: worked by {} (lease until {}); leaving it",
                cp.lease_owner.as_deref().unwrap_or("?"),
                crate::calendar::rfc3339_utc(cp.lease_expires_ms / 1000)
            );
            return Ok(Outcome::Busy);
        }
        Taken::Mine { cp, took_over } => (cp, took_over),
    };
    lease.confirm(started);
    if took_over {
        // The worker whose lease ran out may be stalled with rows in its producer: each
        // lands within the delivery bound of being handed over, or never. Wait that out
        // (and the clock skew) so the resume scan sees every row it can still land.
        log::info!(
            "{job_id}: took over an expired lease; waiting {:.1}s for rows the last \
             worker may still land",
            lease.margin().as_secs_f64()
        );
        sleep_unless_stopped(lease.margin(), ctx.stop);
        if let Err(Failure::LeaseLost(why)) = renew(ctx, &cp, &mut lease) {
            log::warn!("{job_id}: {why}");
            return Ok(Outcome::Busy);
        }
    }
    if cp.last_line > 0 {
        log::info!(
            "{job_id}: resuming after line {} ({} sent, {} failed rows)",
            cp.last_line,
            cp.total_sent,
            cp.failed_rows
        );
    }
    let mut backoff = Duration::from_secs(1);
    let mut refused = BTreeSet::new();
    let mut unreachable: Option<Instant> = None;
    let mut stuck = (cp.last_line, 0u32);
    loop {
        let result = match lease.may_send(Now::read()) {
            true => attempt(ctx, s3, key, &mut cp, &mut lease, &mut refused),
            false => renew(ctx, &cp, &mut lease)
                .and_then(|()| attempt(ctx, s3, key, &mut cp, &mut lease, &mut refused)),
        };
        let result = match result {
            Err(Failure::Unreachable(why)) => {
                let since = *unreachable.get_or_insert_with(Instant::now);
                let limit = ctx.config.kafka.connect_timeout;
                if since.elapsed() >= limit {
                    Err(Failure::Fatal(format!(
                        "{why}: no broker answered for {}s (kafka.connect_timeout_seconds)",
                        limit.as_secs()
                    )))
                } else {
                    Err(Failure::Retry(why))
                }
            }
            other => {
                unreachable = None;
                other
            }
        };
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(Failure::Unreachable(why)) | Err(Failure::Retry(why)) => {
                if ctx.stop.load(Ordering::Relaxed) {
                    let _ = ctx.checkpoints.save(&cp, true);
                    return Ok(Outcome::Stopped);
                }
                // A budget of attempts that move nothing: a fault that never clears
                // ends as a named FAILED instead of a job retried forever.
                if cp.last_line == stuck.0 {
                    stuck.1 += 1;
                } else {
                    stuck = (cp.last_line, 1);
                }
                if stuck.1 > RETRY_BUDGET {
                    cp.status = Status::Failed;
                    cp.error = Some(format!(
                        "{RETRY_BUDGET} attempts in a row made no progress; the last: {why}"
                    ));
                    let _ = ctx.checkpoints.save(&cp, true);
                    return Err(format!("{job_id}: {}", cp.error.as_deref().unwrap_or("")));
                }
                log::warn!(
                    "{job_id}: {why}; carrying on from line {} in {:.0}s",
                    cp.last_line,
                    backoff.as_secs_f64()
                );
                // Rows of the last attempt still in flight land within the delivery
                // bound: the next scan must come after that.
                sleep_unless_stopped(backoff.max(lease.margin()), ctx.stop);
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(Failure::Fatal(why)) => {
                cp.status = Status::Failed;
                cp.error = Some(why.clone());
                let _ = ctx.checkpoints.save(&cp, true);
                return Err(format!("{job_id}: {why}"));
            }
            // Another worker has it now (this one was too slow to renew): not a failure
            // of the job; the worker looks at it again like any busy object.
            Err(Failure::LeaseLost(why)) => {
                log::warn!("{job_id}: {why}");
                return Ok(Outcome::Busy);
            }
        }
    }
}

enum Failure {
    /// Kafka or S3 trouble: go back to the scan.
    Retry(String),
    /// The brokers did not answer: retried until `kafka.connect_timeout_seconds` have
    /// passed without an answer, then the job fails.
    Unreachable(String),
    /// The object cannot be read as asked (gone, replaced): the job is FAILED.
    Fatal(String),
    /// Another worker took the job: stop touching it.
    LeaseLost(String),
}

fn table_error(ctx: &Context, e: &super::dynamo::DynamoError) -> String {
    if e.is("ResourceNotFoundException") {
        format!(
            "checkpoint table {} does not exist (create it: csv2kafka create-table --config ...)",
            ctx.config.checkpoint.table
        )
    } else {
        format!("checkpoint table {}: {e}", ctx.config.checkpoint.table)
    }
}

/// Extends the lease now (the loop's checkpoints extend it while streaming): a lease
/// another worker holds now is [`Failure::LeaseLost`], a table that cannot be written a
/// [`Failure::Retry`].
fn renew(ctx: &Context, cp: &Checkpoint, lease: &mut Lease) -> Result<(), Failure> {
    let started = Now::read();
    ctx.checkpoints
        .save(cp, false)
        .map_err(|e| {
            lease.drop_it();
            if e.condition_failed() {
                Failure::LeaseLost("lost its lease to another worker; stopping".to_string())
            } else {
                Failure::Retry(table_error(ctx, &e))
            }
        })
        .map(|()| lease.confirm(started))
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a job's rows go, in words: compared between attempts.
fn layout(config: &Config, topics: &HashMap<Dest, String>, counts: &HashMap<Dest, i32>) -> String {
    let mut out = format!(
        "topic {} of {} partitions",
        topics[&Dest::Main],
        counts[&Dest::Main]
    );
    if let Some(dlq) = topics.get(&Dest::DeadLetter) {
        out.push_str(&format!(
            ", dead letters to {dlq} of {} partitions",
            counts[&Dest::DeadLetter]
        ));
    }
    match &config.kafka.key_column {
        Some(k) => out.push_str(&format!(", keyed by column {k:?}")),
        None => out.push_str(", keyed by the job id"),
    }
    out
}

/// The job's two topics by destination.
fn topics(config: &Config) -> HashMap<Dest, String> {
    let mut t = HashMap::from([(Dest::Main, config.kafka.topic.clone())]);
    if let Some(d) = &config.kafka.dead_letter_topic {
        t.insert(Dest::DeadLetter, d.clone());
    }
    t
}

/// One pass: scan, then stream from the checkpoint to the end (or a stop).
fn attempt(
    ctx: &Context,
    s3: &Arc<S3>,
    key: &str,
    cp: &mut Checkpoint,
    lease: &mut Lease,
    refused: &mut BTreeSet<u64>,
) -> Result<Outcome, Failure> {
    let sink = Sink::new(&ctx.config.kafka, ctx.config.delivery()).map_err(Failure::Fatal)?;
    let topics = topics(ctx.config);
    let mut counts = HashMap::new();
    for dest in topics.keys() {
        let n = sink
            .partitions(*dest)
            .map_err(|e| match e.contains("does not exist") {
                true => Failure::Fatal(e),
                false => Failure::Unreachable(e),
            })?;
        counts.insert(*dest, n);
    }
    let layout = layout(ctx.config, &topics, &counts);
    match &cp.layout {
        Some(was) if *was != layout => {
            return Err(Failure::Fatal(format!(
                "the job began with {was} and would resume with {layout}: rows already in \
                 Kafka would be looked for in the wrong partitions (restore the topic or \
                 kafka.key_column, or start the object as a new job with --job-id)"
            )));
        }
        Some(_) => {}
        None => cp.layout = Some(layout),
    }
    let fresh = cp.offsets.is_empty();
    if fresh {
        // A new job: its messages can only be past today's ends.
        for (dest, n) in &counts {
            for (p, end) in sink.ends(*dest, *n).map_err(Failure::Retry)? {
                cp.offsets.insert((*dest, p), end);
            }
        }
        cp.origin = cp.offsets.clone();
        renew(ctx, cp, lease)?;
    }
    // Rows are sent only once offsets are in the checkpoint, so a job that had none sent
    // nothing before: there is nothing to scan for (this saved a second a job).
    let landed = if fresh {
        BTreeMap::new()
    } else {
        scan(ctx, &topics, cp, lease)?
    };
    let found: usize = landed.values().map(|l| l.lines.len()).sum();
    if found > 0 {
        log::info!(
            "{}: {found} rows after line {} are already in Kafka; they are not sent again",
            cp.job_id,
            cp.last_line
        );
    }
    let known = source::Known {
        etag: cp.etag.as_deref(),
        codec: cp.codec.as_deref().and_then(source::Codec::parse),
        size: cp.object_bytes,
    };
    let mut failed = None;
    let opened = keeping(ctx, cp, lease, |keep| {
        source::open(Arc::clone(s3), key, cp.byte_offset, known, keep).map_err(|e| {
            let why = e.to_string();
            failed = Some(classify_s3(&e));
            why
        })
    })
    .map_err(|f| failed.take().unwrap_or(f))?;
    if cp.etag.is_none() {
        // Saved before the first row goes: a crash now must not resume on another
        // version of the object, nor read a compressed one as plain.
        cp.etag = Some(opened.etag.clone());
        cp.object_bytes = opened.total;
        cp.codec = Some(opened.codec.name().to_string());
        renew(ctx, cp, lease)?;
    }
    let ended = std::thread::scope(|scope| {
        let saver = Saver::start(scope, ctx.checkpoints);
        let target = Target {
            sink: &sink,
            counts,
            landed,
            refused,
        };
        Stream::new(ctx, target, opened, cp, saver, lease).run(cp)
    })?;
    match ended {
        Ended::Done(outcome) => Ok(outcome),
        Ended::Streamed => verify(ctx, &topics, cp, lease),
    }
}

/// The verification pass (`checkpoint.verify`): every row of the job is read back from
/// Kafka, from the offsets where the job began, before it is COMPLETED. A broker can
/// acknowledge rows and lose them (a restart on storage that had not persisted them);
/// those are sent again: the checkpoint goes back to the start of the object with the
/// resume scan starting at those offsets, so the next attempt skips every row found and
/// sends only the lost ones. A crash anywhere in this ends in the same place.
fn verify(
    ctx: &Context,
    topics: &HashMap<Dest, String>,
    cp: &mut Checkpoint,
    lease: &mut Lease,
) -> Result<Outcome, Failure> {
    renew(ctx, cp, lease)?;
    let total = cp.total_lines.unwrap_or(cp.last_line);
    let from = match cp.origin.is_empty() {
        // Begun before origins were recorded: every partition from its start.
        true => cp.offsets.keys().map(|s| (*s, 0)).collect(),
        false => cp.origin.clone(),
    };
    let started = Instant::now();
    let back = keeping(ctx, cp, lease, |keep| {
        scan::read_back(&ctx.config.kafka, topics, &from, &cp.job_id, total, keep)
    })?;
    let took = started.elapsed().as_secs_f64();
    if back.duplicates > 0 {
        log::error!(
            "{}: {} messages repeat a row already in Kafka (first copies kept there too)",
            cp.job_id,
            back.duplicates
        );
    }
    let expected = total.saturating_sub(cp.withheld_rows);
    if back.found >= expected {
        cp.status = Status::Completed;
        ctx.checkpoints
            .save(cp, true)
            .map_err(|e| Failure::Retry(table_error(ctx, &e)))?;
        lease.drop_it();
        log::info!(
            "{}: COMPLETED: {total} rows, every one read back from Kafka in {took:.1}s \
             ({} sent, {} failed)",
            cp.job_id,
            cp.total_sent,
            cp.failed_rows
        );
        return Ok(Outcome::Completed);
    }
    let lost = expected - back.found;
    let first = back.missing(5);
    if cp.repairs >= MAX_REPAIRS {
        return Err(Failure::Fatal(format!(
            "{lost} rows Kafka acknowledged are not in it after {MAX_REPAIRS} passes sending \
             them again (lines {first:?} among them): the broker loses what it acknowledges"
        )));
    }
    log::warn!(
        "{}: {lost} of {total} rows Kafka acknowledged are not in it (lines {first:?} among \
         them: the broker lost them); reading the object again to send those",
        cp.job_id
    );
    cp.repairs += 1;
    restart(ctx.config, cp, from);
    renew(ctx, cp, lease)?;
    Err(Failure::Retry(format!(
        "sending again the {lost} rows the broker lost"
    )))
}

/// The checkpoint of a job about to be read again from its first row, with the resume
/// scan starting at `from` (where its first rows could land).
fn restart(config: &Config, cp: &mut Checkpoint, from: BTreeMap<Slot, i64>) {
    cp.last_line = 0;
    cp.byte_offset = 0;
    cp.bytes_done = 0;
    cp.total_sent = 0;
    cp.failed_rows = 0;
    cp.withheld_rows = 0;
    if config.csv.header {
        // Read again from the object, which is the same version (its ETag is checked).
        cp.header = None;
    }
    cp.offsets = from;
}

/// The resume scan, renewing the lease as it goes: a scan longer than the lease still
/// ends with the job in hand (and a lease lost meanwhile ends it).
fn scan(
    ctx: &Context,
    topics: &HashMap<Dest, String>,
    cp: &Checkpoint,
    lease: &mut Lease,
) -> Result<BTreeMap<Slot, Landed>, Failure> {
    keeping(ctx, cp, lease, |keep| {
        scan::scan(
            &ctx.config.kafka,
            topics,
            &cp.offsets,
            &cp.job_id,
            cp.last_line,
            keep,
        )
    })
}

/// Runs `work`, which calls `keep` now and then, renewing the lease whenever that is
/// due: long work (the resume scan, decompressing up to the checkpoint) still ends with
/// the job in hand. `keep` answers false to stop the work (a stop, a lease lost).
fn keeping<T>(
    ctx: &Context,
    cp: &Checkpoint,
    lease: &mut Lease,
    work: impl FnOnce(&mut dyn FnMut() -> bool) -> Result<T, String>,
) -> Result<T, Failure> {
    let mut lost = None;
    let done = {
        let mut keep = || {
            if ctx.stop.load(Ordering::Relaxed) {
                lost = Some(Failure::Retry("stopping".into()));
                return false;
            }
            if !lease.renewal_due(Now::read()) {
                return true;
            }
            match renew(ctx, cp, lease) {
                Ok(()) => true,
                Err(f) => {
                    lost = Some(f);
                    false
                }
            }
        };
        work(&mut keep)
    };
    done.map_err(|e| lost.take().unwrap_or(Failure::Retry(e)))
}

/// S3 errors retrying cannot fix (a missing object or bucket, a refusal, the object
/// replaced since the checkpoint) fail the job; the rest (and no valid credentials
/// while the provider is down) are retried.
fn classify_s3(e: &crate::s3::S3Error) -> Failure {
    if let crate::s3::S3Error::NoCredentials { .. } = e {
        // The provider is down: it is retried, and so is the job.
        return Failure::Retry(e.to_string());
    }
    match e.class() {
        crate::s3::Class::Transient | crate::s3::Class::SlowDown => Failure::Retry(e.to_string()),
        _ => Failure::Fatal(e.to_string()),
    }
}

/// The streaming loop of one attempt.
struct Stream<'a> {
    ctx: &'a Context<'a>,
    sink: &'a Sink,
    counts: HashMap<Dest, i32>,
    landed: BTreeMap<Slot, Landed>,
    reader: Reader<Box<dyn std::io::BufRead + Send>>,
    stored_pos: Arc<std::sync::atomic::AtomicU64>,
    base_headers: Vec<(&'static str, String)>,
    tracker: Tracker,
    header: Option<Vec<String>>,
    /// The JSON value of the row being sent: one buffer for every row.
    json: String,
    /// The header's JSON keys (column numbers without a header).
    keys: Vec<String>,
    /// Each column's kind when `csv.columns` types any (empty: all strings).
    kinds: Vec<values::Kind>,
    /// The position of `kafka.key_column` in the header, once known.
    key_index: Option<usize>,
    /// Rows since delivery reports were last served.
    unserved: u32,
    /// Periodic checkpoints, written on a thread of their own.
    saver: Saver,
    last_saved: u64,
    last_sample: (Instant, u64, u64),
    lease: &'a mut Lease,
    /// Lines the broker refused as too large (see [`Stream::take_ack`]).
    refused: &'a mut BTreeSet<u64>,
    /// A clean stop: the last checkpoint gives the lease back.
    stopping: bool,
    rate: f64,
}

/// Where an attempt sends: the producer, each topic's partition count, and what the
/// resume scan found there.
struct Target<'a> {
    sink: &'a Sink,
    counts: HashMap<Dest, i32>,
    landed: BTreeMap<Slot, Landed>,
    refused: &'a mut BTreeSet<u64>,
}

impl<'a> Stream<'a> {
    fn new(
        ctx: &'a Context<'a>,
        target: Target<'a>,
        opened: source::Opened,
        cp: &Checkpoint,
        saver: Saver,
        lease: &'a mut Lease,
    ) -> Stream<'a> {
        let Target {
            sink,
            counts,
            landed,
            refused,
        } = target;
        let mut reader = Reader::new(
            opened.reader,
            ctx.config.csv.delimiter,
            cp.byte_offset,
            cp.last_line + 1,
        )
        .with_limit(ctx.config.csv.max_record_bytes);
        if let Some(h) = &cp.header {
            reader.set_header(h.clone());
        }
        let mut base_headers = vec![
            ("job", cp.job_id.clone()),
            ("source_object", cp.source_object.clone()),
        ];
        for (meta, name) in [("vehicle-id", "vehicle_id"), ("source", "source")] {
            if let Some(v) = opened.meta.get(meta) {
                base_headers.push((name, v.clone()));
            }
        }
        let mut base = cp.offsets.clone();
        for (slot, l) in &landed {
            if l.lines.is_empty() {
                // None of this job's rows past the checkpoint there: the next scan can
                // start where this one ended (on a busy shared topic, a long way on).
                let e = base.entry(*slot).or_insert(0);
                *e = (*e).max(l.end);
            }
        }
        let tracker = Tracker {
            durable_line: cp.last_line,
            durable_end: cp.byte_offset,
            durable_bytes: cp.bytes_done,
            base,
            held: landed
                .iter()
                .filter(|(_, l)| !l.lines.is_empty())
                .map(|(s, l)| (*s, l.clone()))
                .collect(),
            ..Tracker::default()
        };
        Stream {
            ctx,
            sink,
            counts,
            landed,
            reader,
            stored_pos: opened.stored_pos,
            base_headers,
            tracker,
            header: cp.header.clone(),
            json: String::new(),
            keys: Vec::new(),
            kinds: Vec::new(),
            key_index: None,
            unserved: 0,
            saver,
            last_saved: cp.last_line,
            last_sample: (Instant::now(), cp.last_line, cp.failed_rows),
            lease,
            refused,
            stopping: false,
            rate: 0.0,
        }
    }

    fn run(mut self, cp: &mut Checkpoint) -> Result<Ended, Failure> {
        if cp.header.is_none() {
            let header = if self.ctx.config.csv.header {
                self.reader.read_header().map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        Failure::Fatal(format!("{}: {e}", cp.source_object))
                    } else {
                        Failure::Retry(format!("reading the header: {e}"))
                    }
                })?
            } else {
                None
            };
            if let Some(h) = header {
                self.header = Some(h.clone());
                cp.header = Some(h);
                cp.byte_offset = self.reader.position();
                self.tracker.durable_end = cp.byte_offset;
            }
        }
        self.key_index = key_index(
            self.ctx.config.kafka.key_column.as_deref(),
            self.header.as_deref(),
        );
        if let (Some(col), None) = (&self.ctx.config.kafka.key_column, self.key_index) {
            log::warn!(
                "{}: kafka.key_column {col:?} is not a column of this object; the job id is \
                 the key",
                cp.job_id
            );
        }
        loop {
            if self.ctx.stop.load(Ordering::Relaxed) {
                self.drain(cp)?;
                self.stopping = true;
                self.checkpoint(cp, true)?;
                log::info!(
                    "{}: stopped at line {}; a later run resumes it",
                    cp.job_id,
                    cp.last_line
                );
                return Ok(Ended::Done(Outcome::Stopped));
            }
            let row = self
                .reader
                .next_row()
                .map_err(|e| Failure::Retry(format!("reading {}: {e}", cp.source_object)))?;
            let Some(row) = row else { break };
            if cp.header.is_none()
                && let Ok(fields) = &row.fields
            {
                // No header line: the first well-formed row fixes the width, kept in
                // the checkpoint so a resume classifies rows as before.
                let names = numbered(fields.len());
                self.reader.set_header(names.clone());
                cp.header = Some(names);
            }
            self.send(cp, row)?;
            // Delivery reports and the rest are served every so many rows: a poll per
            // row cost a tenth of the CPU.
            self.unserved += 1;
            if self.unserved >= SERVE_EVERY {
                self.unserved = 0;
                self.serve(cp)?;
            }
        }
        self.drain(cp)?;
        cp.total_lines = Some(self.tracker.durable_line);
        let verify = self.ctx.config.checkpoint.verify;
        if !verify {
            cp.status = Status::Completed;
        }
        cp.bytes_done = cp.object_bytes.unwrap_or(cp.bytes_done);
        self.sample(cp, true);
        self.checkpoint(cp, true)?;
        log::info!(
            "{}: {}: {} rows, {} sent, {} failed; send to acknowledgement {}",
            cp.job_id,
            if verify {
                "every row acknowledged"
            } else {
                "COMPLETED"
            },
            cp.last_line,
            cp.total_sent,
            cp.failed_rows,
            percentiles(&mut self.tracker.latencies)
        );
        Ok(match verify {
            true => Ended::Streamed,
            false => Ended::Done(Outcome::Completed),
        })
    }

    /// One row: to its partition, unless the resume scan found it there already.
    fn send(&mut self, cp: &Checkpoint, row: Row) -> Result<(), Failure> {
        let mut json = std::mem::take(&mut self.json);
        let sent = self.send_with(cp, &row, &mut json);
        self.json = json;
        sent
    }

    fn send_with(&mut self, cp: &Checkpoint, row: &Row, json: &mut String) -> Result<(), Failure> {
        if self.refused.contains(&row.line) {
            return self.dead_letter(cp, row, "the broker refused it as too large");
        }
        let Some((dest, key, raw)) = self.message(cp, row, json) else {
            // Malformed, no dead-letter topic: logged and counted, nothing to send.
            self.withhold(row);
            return Ok(());
        };
        let value = raw.unwrap_or(json.as_bytes());
        let key = key.unwrap_or(cp.job_id.as_bytes());
        match self.deliver(cp, row, dest, key, value, None)? {
            None => Ok(()),
            Some(why) if dest == Dest::Main => {
                log::warn!("{}: line {}: {why}", cp.job_id, row.line);
                self.dead_letter(cp, row, &why)
            }
            Some(why) => {
                log::warn!("{}: line {}: {why}; counted as failed", cp.job_id, row.line);
                self.withhold(row);
                Ok(())
            }
        }
    }

    /// A row Kafka refused as too large: malformed, so dead-lettered (its raw bytes, cut
    /// to [`DEAD_LETTER_BYTES`] and marked so, with `refused` saying why) or counted.
    fn dead_letter(&mut self, cp: &Checkpoint, row: &Row, why: &str) -> Result<(), Failure> {
        if self.ctx.config.kafka.dead_letter_topic.is_none() {
            self.withhold(row);
            return Ok(());
        }
        let value = &row.raw[..row.raw.len().min(DEAD_LETTER_BYTES)];
        let note = (value.len() < row.raw.len()).then_some(why);
        match self.deliver(
            cp,
            row,
            Dest::DeadLetter,
            cp.job_id.as_bytes(),
            value,
            Some(note.unwrap_or(why)),
        )? {
            None => Ok(()),
            Some(again) => {
                log::warn!(
                    "{}: line {}: {again}; counted as failed",
                    cp.job_id,
                    row.line
                );
                self.withhold(row);
                Ok(())
            }
        }
    }

    /// Hands one message to the producer unless the resume scan found it landed; tracks
    /// it. `Some(why)` when Kafka refuses it as too large (nothing was tracked).
    fn deliver(
        &mut self,
        cp: &Checkpoint,
        row: &Row,
        dest: Dest,
        key: &[u8],
        value: &[u8],
        refused: Option<&str>,
    ) -> Result<Option<String>, Failure> {
        let partition = kafka::partition_of(key, self.counts[&dest]);
        let slot = (dest, partition);
        let failed = dest == Dest::DeadLetter;
        if self
            .landed
            .get(&slot)
            .is_some_and(|l| l.lines.contains(&row.line))
        {
            self.track(row, None, failed, false);
            return Ok(None);
        }
        // Checked before a row is handed over and again after: a stall (SIGSTOP, a
        // frozen VM) anywhere in between shows as a lease whose margin is gone, and what
        // the producer holds is purged before it can outlive the lease.
        self.lease_check(cp, row.line)?;
        let mut headers = OwnedHeaders::new_with_capacity(self.base_headers.len() + 3);
        for (name, value) in &self.base_headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut digits = [0u8; 20];
        headers = headers.insert(Header {
            key: "line",
            value: Some(decimal(row.line, &mut digits)),
        });
        // A record cut short (past the record limit, or for the dead-letter topic) is
        // marked with the length it had.
        let mut whole = [0u8; 20];
        let total = row.truncated.unwrap_or(row.raw.len() as u64);
        if total > value.len() as u64 && dest == Dest::DeadLetter {
            headers = headers.insert(Header {
                key: "truncated_from_bytes",
                value: Some(decimal(total, &mut whole)),
            });
        }
        if let Some(why) = refused {
            headers = headers.insert(Header {
                key: "refused",
                value: Some(why.as_bytes()),
            });
        }
        match self
            .sink
            .send(dest, partition, row.line, key, value, headers)
        {
            Ok(()) => {}
            Err(SendError::TooLarge(why)) => return Ok(Some(why)),
            Err(SendError::Other(why)) => return Err(Failure::Retry(why)),
        }
        self.track(row, Some(slot), failed, true);
        self.lease_check(cp, row.line)?;
        Ok(None)
    }

    /// Stops sending at once when the lease has no margin left: everything the producer
    /// holds is purged (it may no longer land inside the lease), and the job goes back to
    /// renewing its lease, then the resume scan.
    fn lease_check(&mut self, cp: &Checkpoint, line: u64) -> Result<(), Failure> {
        if self.lease.may_send(Now::read()) {
            return Ok(());
        }
        self.sink.purge();
        Err(Failure::Retry(format!(
            "the lease was not confirmed with {:.1}s to spare at line {line} of {} (a stall, \
             or DynamoDB slow to answer); stopped sending",
            self.lease.margin().as_secs_f64(),
            cp.job_id
        )))
    }

    /// The message a row makes: its destination, value and key (`None`: the job id);
    /// `None` for a malformed row with no dead-letter topic.
    fn message<'r>(
        &mut self,
        cp: &Checkpoint,
        row: &'r Row,
        json: &mut String,
    ) -> Option<Message<'r>> {
        let fields = match &row.fields {
            Ok(fields) => fields,
            Err(why) => return self.malformed(cp, row, &why.to_string()),
        };
        let key = self
            .key_index
            .and_then(|i| fields.get(i))
            .map(|k| k.as_bytes());
        if self.keys.len() != fields.len() {
            let names = match &self.header {
                Some(h) => h.clone(),
                None => numbered(fields.len()),
            };
            self.keys = json_keys(&names);
            self.typed(cp, &names);
        }
        if self.kinds.is_empty() {
            to_json(&self.keys, fields, json);
        } else if let Err(why) = values::to_json_typed(&self.keys, &self.kinds, fields, json) {
            return self.malformed(cp, row, &why);
        }
        Some((Dest::Main, key, None))
    }

    /// The kinds of the columns (`csv.columns`) under `names`: none when every column
    /// is a string.
    fn typed(&mut self, cp: &Checkpoint, names: &[String]) {
        let columns = &self.ctx.config.csv.columns;
        let (kinds, missing) = values::kinds(names, columns);
        if !missing.is_empty() {
            log::warn!(
                "{}: csv.columns names {missing:?}, which this object's header does not have",
                cp.job_id
            );
        }
        self.kinds = match kinds.iter().all(|k| *k == values::Kind::String) {
            true => Vec::new(),
            false => kinds,
        };
    }

    /// A malformed row's message: its raw bytes to the dead-letter topic, or `None`
    /// (logged and counted) without one.
    fn malformed<'r>(&self, cp: &Checkpoint, row: &'r Row, why: &str) -> Option<Message<'r>> {
        log::warn!("{}: line {}: malformed ({why})", cp.job_id, row.line);
        self.ctx.config.kafka.dead_letter_topic.as_ref()?;
        Some((
            Dest::DeadLetter,
            None,
            Some(&row.raw[..row.raw.len().min(DEAD_LETTER_BYTES)]),
        ))
    }

    /// Adds a row to the durable-prefix tracker: `slot` when a delivery report is due.
    fn track(&mut self, row: &Row, slot: Option<Slot>, failed: bool, timed: bool) {
        self.push(row, slot, failed, timed, false);
    }

    /// A failed row sent nowhere: logged and counted.
    fn withhold(&mut self, row: &Row) {
        self.push(row, None, true, false, true);
    }

    fn push(&mut self, row: &Row, slot: Option<Slot>, failed: bool, timed: bool, withheld: bool) {
        self.tracker.push(Pending {
            line: row.line,
            end: row.end,
            bytes_done: self.stored_pos.load(Ordering::Relaxed),
            slot,
            acked: None,
            sent: !failed,
            failed,
            withheld,
            sent_at: (timed && row.line.is_multiple_of(LATENCY_EVERY)).then(Instant::now),
        });
    }

    /// Delivery reports, checkpoints, the lease and metrics: whatever is due.
    fn serve(&mut self, cp: &mut Checkpoint) -> Result<(), Failure> {
        if let Some(answer) = self.saver.answer() {
            self.settle(cp, answer)?;
        }
        for ack in self.sink.poll(Duration::ZERO) {
            self.take_ack(&ack)?;
        }
        if let Some(fatal) = self.sink.fatal() {
            return Err(Failure::Retry(fatal));
        }
        let due_rows = self.tracker.durable_line - self.last_saved
            >= self.ctx.config.checkpoint.interval_lines;
        let due_lease = self.lease.renewal_due(Now::read());
        if due_rows || due_lease {
            self.checkpoint(cp, false)?;
        }
        let interval = self
            .ctx
            .config
            .metrics
            .as_ref()
            .map_or(Duration::from_secs(10), |m| m.interval);
        if self.last_sample.0.elapsed() >= interval {
            self.sample(cp, false);
        }
        Ok(())
    }

    /// One delivery report into the tracker. A row the broker refused as too large is
    /// remembered: the attempt after this one dead-letters it instead.
    fn take_ack(&mut self, ack: &Ack) -> Result<(), Failure> {
        if ack.too_large {
            if self.refused.len() >= REFUSED_KEPT {
                let keep = self.refused.split_off(&(self.refused.len() as u64 / 2));
                *self.refused = keep;
            }
            self.refused.insert(ack.line);
        }
        self.tracker
            .ack(ack)
            .map_err(|e| Failure::Retry(format!("Kafka did not take line {}: {e}", ack.line)))
    }

    /// Waits until every row sent is acknowledged (or fails).
    fn drain(&mut self, cp: &mut Checkpoint) -> Result<(), Failure> {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.tracker.pending.is_empty() {
            if Instant::now() > deadline {
                return Err(Failure::Retry(
                    "Kafka did not acknowledge within 180 s".into(),
                ));
            }
            for ack in self.sink.poll(Duration::from_millis(50)) {
                self.take_ack(&ack)?;
            }
            if let Some(fatal) = self.sink.fatal() {
                return Err(Failure::Retry(fatal));
            }
            if self.lease.renewal_due(Now::read()) {
                self.checkpoint(cp, false)?;
            }
        }
        Ok(())
    }

    /// Checkpoints the durable prefix: handed to the saver unless a write is in flight
    /// already; written at once, after any in flight, when `release` (a stop, the end).
    fn checkpoint(&mut self, cp: &mut Checkpoint, release: bool) -> Result<(), Failure> {
        if release {
            if let Some(answer) = self.saver.wait() {
                self.settle(cp, answer)?;
            }
        } else if self.saver.busy() {
            return Ok(());
        }
        let t = &self.tracker;
        cp.last_line = t.durable_line;
        cp.byte_offset = t.durable_end;
        cp.bytes_done = t.durable_bytes.max(cp.bytes_done);
        cp.total_sent += t.sent;
        cp.failed_rows += t.failed;
        cp.withheld_rows += t.withheld;
        cp.offsets = t.offsets();
        cp.rate = self.rate;
        self.tracker.sent = 0;
        self.tracker.failed = 0;
        self.tracker.withheld = 0;
        if !release {
            self.saver.offer(cp);
            return Ok(());
        }
        let at = InFlight {
            line: cp.last_line,
            at: Now::read(),
        };
        // A clean stop gives the lease back: everything sent is acknowledged (drained),
        // so the next worker need not wait for it.
        let answer = self.ctx.checkpoints.save(cp, self.stopping);
        self.settle(cp, (at, answer))?;
        cp.lease_expires_ms = 0;
        self.lease.drop_it();
        Ok(())
    }

    /// Takes in the answer to a checkpoint write.
    fn settle(
        &mut self,
        cp: &mut Checkpoint,
        (write, answer): (InFlight, Result<(), super::dynamo::DynamoError>),
    ) -> Result<(), Failure> {
        // A lease that ran out under us may be another worker's by now.
        let held_until = cp.lease_expires_ms;
        let expired = held_until > 0 && now_ms() > held_until && cp.status == Status::InProgress;
        match answer {
            Ok(()) => {
                self.last_saved = write.line;
                self.lease.confirm(write.at);
                cp.lease_expires_ms =
                    write.at.wall_ms + self.ctx.config.checkpoint.lease.as_millis() as i64;
                Ok(())
            }
            Err(e) if e.condition_failed() => Err(Failure::LeaseLost(
                "lost its lease to another worker; stopping".into(),
            )),
            Err(e) if expired => Err(Failure::LeaseLost(table_error(self.ctx, &e))),
            Err(e) => Err(Failure::Retry(table_error(self.ctx, &e))),
        }
    }

    fn sample(&mut self, cp: &Checkpoint, last: bool) {
        let (at, line0, failed0) = self.last_sample;
        let secs = at.elapsed().as_secs_f64().max(0.001);
        let line = self.tracker.durable_line;
        let failed_total = cp.failed_rows + self.tracker.failed;
        self.rate = (line - line0) as f64 / secs;
        let mut view = cp.clone();
        view.last_line = line;
        view.bytes_done = self.tracker.durable_bytes;
        let sample = Sample {
            job_id: cp.job_id.clone(),
            rows_per_second: if last && line == line0 {
                0.0
            } else {
                self.rate
            },
            percent: view.percent(),
            processed: line - line0,
            remaining: view.remaining(),
            failed: failed_total.saturating_sub(failed0),
        };
        log::info!(
            "{}: line {line}, {:.1}%, {:.0} rows/s, ETA {:.0}s",
            cp.job_id,
            sample.percent,
            self.rate,
            view.eta(self.rate)
        );
        if let Some(e) = self.ctx.emitter {
            e.record(sample);
        }
        self.last_sample = (Instant::now(), line, failed_total);
    }
}

/// "p50 1.2 ms, p95 3.4 ms, p99 5.6 ms" of latency samples in microseconds.
fn percentiles(samples: &mut [u32]) -> String {
    if samples.is_empty() {
        return "not measured".into();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        f64::from(samples[i]) / 1000.0
    };
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        at(0.50),
        at(0.95),
        at(0.99)
    )
}

/// Where `column` is in `header` (with no header, columns are named "1", "2", …).
fn key_index(column: Option<&str>, header: Option<&[String]>) -> Option<usize> {
    let column = column?;
    match header {
        Some(h) => h.iter().position(|c| c == column),
        None => column.parse::<usize>().ok()?.checked_sub(1),
    }
}

/// Column names for an object without a header: "1", "2", …
fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

/// `n` in decimal, written into `buf` without an allocation.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(line: u64, slot: Option<Slot>) -> Pending {
        Pending {
            line,
            end: line * 10,
            bytes_done: line,
            slot,
            acked: None,
            sent: slot.is_some(),
            failed: slot.is_none(),
            withheld: slot.is_none(),
            sent_at: None,
        }
    }

    #[test]
    fn the_durable_prefix_waits_for_the_oldest_row() {
        let mut t = Tracker::default();
        t.push(pending(1, Some((Dest::Main, 0))));
        t.push(pending(2, Some((Dest::Main, 1))));
        t.push(pending(3, None));
        let ack = |line, p, off| Ack {
            line,
            result: Ok(((Dest::Main, p), off)),
            too_large: false,
        };
        t.ack(&ack(2, 1, 7)).expect("ack");
        assert_eq!(t.durable_line, 0, "line 1 is not acknowledged yet");
        t.ack(&ack(1, 0, 3)).expect("ack");
        assert_eq!((t.durable_line, t.durable_end), (3, 30));
        assert_eq!(t.next_offsets[&(Dest::Main, 0)], 4);
        assert_eq!(t.next_offsets[&(Dest::Main, 1)], 8);
        assert_eq!((t.sent, t.failed, t.withheld), (2, 1, 1));
        assert!(t.ack(&ack(1, 0, 3)).is_err(), "a report twice is an error");
        let failed = Ack {
            line: 4,
            result: Err("timed out".into()),
            too_large: false,
        };
        t.push(pending(4, Some((Dest::Main, 0))));
        assert!(t.ack(&failed).is_err());
        assert_eq!(t.durable_line, 3);
    }

    /// Regression (issue 22, "duplicates with one worker"): the scan found lines 105
    /// and 110 at offsets 50 and 51 of partition 0, above the checkpoint's line 100.
    /// While the durable prefix is below 110 a checkpoint keeps that partition's offset
    /// at 50, so the next scan still finds them; partition 1, where the scan found none
    /// of the job's rows, moves on to where the scan ended.
    #[test]
    fn a_checkpoint_never_moves_past_rows_found_above_it() {
        let slot = (Dest::Main, 0);
        let landed = Landed {
            lines: [105, 110].into_iter().collect(),
            next_offset: 52,
            first_offset: Some(50),
            end: 52,
        };
        let mut t = Tracker {
            durable_line: 100,
            base: [(slot, 40), ((Dest::Main, 1), 700)].into_iter().collect(),
            held: [(slot, landed)].into_iter().collect(),
            ..Tracker::default()
        };
        t.push(pending(101, Some(slot)));
        let ack = Ack {
            line: 101,
            result: Ok((slot, 52)),
            too_large: false,
        };
        t.ack(&ack).expect("ack");
        assert_eq!(t.durable_line, 101);
        assert_eq!(t.offsets()[&slot], 50);
        assert_eq!(t.offsets()[&(Dest::Main, 1)], 700);
        for line in 102..=110 {
            t.push(pending(line, None));
        }
        assert_eq!(t.durable_line, 110);
        assert_eq!(t.offsets()[&slot], 53);
    }

    #[test]
    fn line_numbers_in_decimal() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 1_000_001, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn latency_percentiles_read_as_milliseconds() {
        let mut samples: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(
            percentiles(&mut samples),
            "p50 51.0 ms, p95 95.0 ms, p99 99.0 ms"
        );
        assert_eq!(percentiles(&mut []), "not measured");
    }
}
