//! The checkpoint table: one item per job (SPEC-csv2kafka.md, "Checkpoints"), plus what
//! exactly-once and leases need: the byte offset to read on from, the partition offsets
//! to scan from, and the lease (`lease_owner`, `lease_expires`). Every write but the
//! first is conditional on holding the lease, so a worker that lost it can never move a
//! checkpoint.

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::Duration;

use serde_json::{Value, json};

use super::dynamo::{Dynamo, DynamoError, typed};
use super::kafka::{Dest, Slot};
use super::lease::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "COMPLETED" => Status::Completed,
            "FAILED" => Status::Failed,
            _ => Status::InProgress,
        }
    }
}

/// A job's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub job_id: String,
    pub source_object: String,
    pub status: Status,
    /// Data rows durably handled (in Kafka, dead-lettered, or logged as failed).
    pub last_line: u64,
    pub total_sent: u64,
    pub total_lines: Option<u64>,
    pub failed_rows: u64,
    /// Of the failed rows, those sent nowhere (not to the dead-letter topic).
    pub withheld_rows: u64,
    pub updated_at: String,
    /// Offset in the decompressed object just past row `last_line`.
    pub byte_offset: u64,
    pub header: Option<Vec<String>>,
    /// Per partition, the offset a resume scan starts at.
    pub offsets: BTreeMap<Slot, i64>,
    /// Per partition, where the job's first rows could land (the ends when it began):
    /// where the verification pass reads them back from.
    pub origin: BTreeMap<Slot, i64>,
    /// Times the verification pass found rows missing and the job sent them again.
    pub repairs: u32,
    pub etag: Option<String>,
    /// How the object is stored (`plain`, `gzip`, `zstd`): a resume reads it the same way.
    pub codec: Option<String>,
    /// Where the job's rows go (topics, partition counts, key column), as the job began:
    /// a resume under another layout would look for landed rows in the wrong places.
    pub layout: Option<String>,
    /// The object's size, and the bytes read of it (progress before the total is known).
    pub object_bytes: Option<u64>,
    pub bytes_done: u64,
    /// Rows per second over the last interval, for `status` elsewhere.
    pub rate: f64,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_ms: i64,
}

impl Checkpoint {
    pub fn new(job_id: &str, source_object: &str) -> Checkpoint {
        Checkpoint {
            job_id: job_id.to_string(),
            source_object: source_object.to_string(),
            status: Status::InProgress,
            last_line: 0,
            total_sent: 0,
            total_lines: None,
            failed_rows: 0,
            withheld_rows: 0,
            updated_at: String::new(),
            byte_offset: 0,
            header: None,
            offsets: BTreeMap::new(),
            origin: BTreeMap::new(),
            repairs: 0,
            etag: None,
            codec: None,
            layout: None,
            object_bytes: None,
            bytes_done: 0,
            rate: 0.0,
            error: None,
            lease_owner: None,
            lease_expires_ms: 0,
        }
    }

    /// From the item's plain JSON.
    pub fn from_item(v: &Value) -> Checkpoint {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let header = s("header").and_then(|h| serde_json::from_str(&h).ok());
        let slots = |k: &str| -> BTreeMap<Slot, i64> {
            s(k).and_then(|o| serde_json::from_str::<BTreeMap<String, i64>>(&o).ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, off)| slot_of(&k).map(|slot| (slot, off)))
                .collect()
        };
        Checkpoint {
            job_id: s("job_id").unwrap_or_default(),
            source_object: s("source_object").unwrap_or_default(),
            status: Status::parse(v["status"].as_str().unwrap_or("")),
            last_line: n("last_line"),
            total_sent: n("total_sent"),
            total_lines: v["total_lines"].as_u64(),
            failed_rows: n("failed_rows"),
            withheld_rows: n("withheld_rows"),
            updated_at: s("updated_at").unwrap_or_default(),
            byte_offset: n("byte_offset"),
            header,
            offsets: slots("offsets"),
            origin: slots("origin_offsets"),
            repairs: n("repairs") as u32,
            etag: s("etag"),
            codec: s("codec"),
            layout: s("layout"),
            object_bytes: v["object_bytes"].as_u64(),
            bytes_done: n("bytes_done"),
            rate: v["rate"].as_f64().unwrap_or(0.0),
            error: s("error"),
            lease_owner: s("lease_owner"),
            lease_expires_ms: v["lease_expires"].as_i64().unwrap_or(0),
        }
    }

    /// The attributes a save writes (not the key, not the lease).
    fn attributes(&self) -> Vec<(&'static str, Value)> {
        let names = |slots: &BTreeMap<Slot, i64>| {
            let named: BTreeMap<String, i64> = slots
                .iter()
                .map(|(slot, off)| (slot_name(*slot), *off))
                .collect();
            json!(json!(named).to_string())
        };
        let mut out = vec![
            ("source_object", json!(self.source_object)),
            ("status", json!(self.status.as_str())),
            ("last_line", json!(self.last_line)),
            ("total_sent", json!(self.total_sent)),
            ("failed_rows", json!(self.failed_rows)),
            ("withheld_rows", json!(self.withheld_rows)),
            (
                "updated_at",
                json!(crate::calendar::rfc3339_utc(crate::clock::system_now())),
            ),
            ("byte_offset", json!(self.byte_offset)),
            ("offsets", names(&self.offsets)),
            ("bytes_done", json!(self.bytes_done)),
            ("rate", json!((self.rate * 10.0).round() / 10.0)),
        ];
        if !self.origin.is_empty() {
            out.push(("origin_offsets", names(&self.origin)));
        }
        if self.repairs > 0 {
            out.push(("repairs", json!(self.repairs)));
        }
        if let Some(t) = self.total_lines {
            out.push(("total_lines", json!(t)));
        }
        if let Some(h) = &self.header {
            out.push(("header", json!(json!(h).to_string())));
        }
        if let Some(e) = &self.etag {
            out.push(("etag", json!(e)));
        }
        if let Some(c) = &self.codec {
            out.push(("codec", json!(c)));
        }
        if let Some(l) = &self.layout {
            out.push(("layout", json!(l)));
        }
        if let Some(b) = self.object_bytes {
            out.push(("object_bytes", json!(b)));
        }
        if let Some(e) = &self.error {
            out.push(("error", json!(e)));
        }
        out
    }

    /// Percent done: by rows once the total is known, else by bytes read.
    pub fn percent(&self) -> f64 {
        if self.status == Status::Completed {
            return 100.0;
        }
        match (self.total_lines, self.object_bytes) {
            (Some(t), _) if t > 0 => 100.0 * self.last_line as f64 / t as f64,
            (_, Some(b)) if b > 0 => (100.0 * self.bytes_done as f64 / b as f64).min(100.0),
            _ => 0.0,
        }
    }

    /// Rows left: exact once the total is known, else estimated from the bytes left at
    /// the rows-per-byte seen so far (0 when nothing is known, as the plan's ETA).
    pub fn remaining(&self) -> u64 {
        if let Some(t) = self.total_lines {
            return t.saturating_sub(self.last_line);
        }
        match self.object_bytes {
            Some(b) if self.bytes_done > 0 && self.last_line > 0 => {
                let per_byte = self.last_line as f64 / self.bytes_done as f64;
                (b.saturating_sub(self.bytes_done) as f64 * per_byte).round() as u64
            }
            _ => 0,
        }
    }

    /// Seconds to go at `rate` rows/s: remaining / rate, 0 when either is unknown.
    pub fn eta(&self, rate: f64) -> f64 {
        if rate > 0.0 {
            self.remaining() as f64 / rate
        } else {
            0.0
        }
    }
}

fn slot_name((dest, p): Slot) -> String {
    match dest {
        Dest::Main => format!("main:{p}"),
        Dest::DeadLetter => format!("dlq:{p}"),
    }
}

fn slot_of(name: &str) -> Option<Slot> {
    let (d, p) = name.split_once(':')?;
    let dest = match d {
        "main" => Dest::Main,
        "dlq" => Dest::DeadLetter,
        _ => return None,
    };
    Some((dest, p.parse().ok()?))
}

/// What taking a job's lease found.
#[derive(Debug)]
pub enum Taken {
    /// Ours now: carry on from this checkpoint. `took_over`: another worker held it
    /// and its lease ran out (it may still be landing rows: see [`super::lease`]).
    Mine {
        cp: Checkpoint,
        took_over: bool,
    },
    Completed(Checkpoint),
    /// Another worker holds it until `lease_expires_ms`.
    Busy(Checkpoint),
}

pub struct Manager {
    pub db: Dynamo,
    pub table: String,
    pub owner: String,
    pub lease: Duration,
}

/// Attempts for a transient DynamoDB failure before giving up.
const ATTEMPTS: u32 = 6;

impl Manager {
    /// Calls `f`, retrying transient failures with backoff (1, 2, 4… s).
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T, DynamoError>) -> Result<T, DynamoError> {
        let mut wait = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    log::warn!("{e}; trying again in {:.1}s", wait.as_secs_f64());
                    sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub fn get(&self, job_id: &str) -> Result<Option<Checkpoint>, DynamoError> {
        self.retrying(|| self.db.get(&self.table, job_id))
            .map(|item| item.map(|v| Checkpoint::from_item(&v)))
    }

    /// Takes the lease of `job_id` if it is free, expired or ours; creates the item for a
    /// new job. A FAILED job taken again is IN_PROGRESS again (one worker at a time).
    pub fn take(&self, job_id: &str, source_object: &str) -> Result<Taken, DynamoError> {
        let now = now_ms();
        let until = now + self.lease.as_millis() as i64;
        let body = json!({
            "TableName": self.table,
            "Key": {"job_id": {"S": job_id}},
            "UpdateExpression": "SET lease_owner = :me, lease_expires = :until, \
                source_object = if_not_exists(source_object, :src), \
                #s = :ip, last_line = if_not_exists(last_line, :zero), \
                total_sent = if_not_exists(total_sent, :zero), \
                failed_rows = if_not_exists(failed_rows, :zero), updated_at = :now",
            "ConditionExpression": "(attribute_not_exists(job_id) OR lease_expires < :nowms \
                OR lease_owner = :me) AND (attribute_not_exists(#s) OR #s <> :done)",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {
                ":me": {"S": self.owner},
                ":until": {"N": until.to_string()},
                ":nowms": {"N": now.to_string()},
                ":src": {"S": source_object},
                ":ip": {"S": "IN_PROGRESS"},
                ":done": {"S": "COMPLETED"},
                ":zero": {"N": "0"},
                ":now": {"S": crate::calendar::rfc3339_utc(crate::clock::system_now())},
            },
            // The item as it was: whose lease this was, and whether it ran out or was
            // given back.
            "ReturnValues": "ALL_OLD",
        });
        match self.retrying(|| self.db.call("UpdateItem", &body)) {
            Ok(answer) => {
                let old = super::dynamo::plain(&answer["Attributes"]);
                let mut cp = match old.get("job_id") {
                    Some(_) => Checkpoint::from_item(&old),
                    None => Checkpoint::new(job_id, source_object),
                };
                let took_over = cp.lease_owner.as_deref().is_some_and(|o| o != self.owner)
                    && cp.lease_expires_ms > 0;
                cp.status = Status::InProgress;
                cp.lease_owner = Some(self.owner.clone());
                cp.lease_expires_ms = until;
                Ok(Taken::Mine { cp, took_over })
            }
            Err(e) if e.condition_failed() => {
                let cp = self
                    .get(job_id)?
                    .unwrap_or_else(|| Checkpoint::new(job_id, source_object));
                Ok(if cp.status == Status::Completed {
                    Taken::Completed(cp)
                } else {
                    Taken::Busy(cp)
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `cp` and extends the lease, only while we hold it. `release` lets the
    /// lease go at once (a clean stop), so another worker need not wait for it.
    pub fn save(&self, cp: &Checkpoint, release: bool) -> Result<(), DynamoError> {
        let mut names = serde_json::Map::new();
        let mut values = serde_json::Map::new();
        let mut sets = Vec::new();
        for (i, (name, value)) in cp.attributes().into_iter().enumerate() {
            names.insert(format!("#a{i}"), json!(name));
            values.insert(format!(":v{i}"), typed(&value));
            sets.push(format!("#a{i} = :v{i}"));
        }
        let until = if release || cp.status != Status::InProgress {
            0
        } else {
            now_ms() + self.lease.as_millis() as i64
        };
        sets.push("lease_expires = :until".into());
        values.insert(":until".into(), json!({"N": until.to_string()}));
        values.insert(":me".into(), json!({"S": self.owner}));
        let body = json!({
            "TableName": self.table,
            "Key": {"job_id": {"S": cp.job_id}},
            "UpdateExpression": format!("SET {}", sets.join(", ")),
            "ConditionExpression": "lease_owner = :me",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        });
        self.retrying(|| self.db.call("UpdateItem", &body))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_its_item() {
        let mut cp = Checkpoint::new("b/k.csv", "s3://b/k.csv");
        cp.last_line = 42;
        cp.total_sent = 40;
        cp.failed_rows = 2;
        cp.byte_offset = 999;
        cp.header = Some(vec!["a".into(), "b,c".into()]);
        cp.offsets.insert((Dest::Main, 3), 17);
        cp.offsets.insert((Dest::DeadLetter, 0), 2);
        cp.etag = Some("\"e\"".into());
        cp.object_bytes = Some(5000);
        cp.bytes_done = 1000;
        cp.origin.insert((Dest::Main, 3), 5);
        cp.repairs = 2;
        cp.withheld_rows = 7;
        let mut item: serde_json::Map<String, Value> = cp
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        item.insert("job_id".into(), json!("b/k.csv"));
        let back = Checkpoint::from_item(&Value::Object(item));
        assert_eq!(back.offsets, cp.offsets);
        assert_eq!(back.origin, cp.origin);
        assert_eq!((back.repairs, back.withheld_rows), (2, 7));
        assert_eq!(back.header, cp.header);
        assert_eq!((back.last_line, back.byte_offset), (42, 999));
        assert_eq!(back.percent(), 20.0);
        assert_eq!(back.remaining(), 168);
        assert_eq!(back.eta(84.0), 2.0);
        assert_eq!(back.eta(0.0), 0.0);
    }

    #[test]
    fn progress_by_rows_once_the_total_is_known() {
        let mut cp = Checkpoint::new("j", "s3://b/k");
        assert_eq!((cp.percent(), cp.remaining()), (0.0, 0));
        cp.total_lines = Some(200);
        cp.last_line = 50;
        assert_eq!((cp.percent(), cp.remaining()), (25.0, 150));
        cp.status = Status::Completed;
        assert_eq!(cp.percent(), 100.0);
    }
}
