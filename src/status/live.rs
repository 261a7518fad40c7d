//! The daemon's live view (`status.json`) as data: what the planner fills in and
//! `status` reads back, and the figures derived from it (percent, ETA, per-source
//! sums). No IO: writing and reading the file is [`super`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

/// Files and bytes per source name, from `(source, size)` pairs.
pub fn by_source<'a>(files: impl Iterator<Item = (&'a str, u64)>) -> BTreeMap<String, Count> {
    let mut out: BTreeMap<String, Count> = BTreeMap::new();
    for (source, size) in files {
        let c = out.entry(source.to_string()).or_default();
        c.files += 1;
        c.bytes += size;
    }
    out
}

/// One upload in progress (or paused with parts stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub source: String,
    pub path: String,
    pub size: u64,
    pub done_bytes: u64,
    pub percent: f64,
}

impl Transfer {
    pub fn new(source: &str, path: &str, size: u64, done_bytes: u64) -> Transfer {
        let done_bytes = done_bytes.min(size);
        Transfer {
            source: source.to_string(),
            path: path.to_string(),
            size,
            done_bytes,
            percent: percent(done_bytes, size),
        }
    }
}

/// `done` of `size` as a percentage with one decimal; an empty file is done.
pub fn percent(done: u64, size: u64) -> f64 {
    if size == 0 {
        100.0
    } else {
        (done as f64 * 1000.0 / size as f64).round() / 10.0
    }
}

/// Seconds to send `left` bytes at `rate` bytes per second, if anything is moving.
pub fn eta_seconds(left: u64, rate: f64) -> Option<f64> {
    (rate > 0.0).then(|| (left as f64 / rate).round())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveQueue {
    pub files: u64,
    pub bytes: u64,
    pub settling_files: u64,
    pub oldest_pending_seconds: f64,
    pub by_source: BTreeMap<String, Count>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Bytes on the wire (after compression); absent in older status files.
    #[serde(default)]
    pub bytes_sent: u64,
    pub files_already_in_s3: u64,
    pub failed_attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub at: String,
    pub message: String,
}

/// The upload window: open now (with its cap), or when it next opens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub open: bool,
    /// Present (true) when no schedule is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_second: Option<u64>,
    /// When the next window opens, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_open: Option<String>,
    /// The same at `schedule.utc_offset`, as the windows are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_open_local: Option<String>,
}

/// A file waiting, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub source: String,
    pub path: String,
    /// `settling`, `growing`, `queued`, `outside the upload window`, `backing off`,
    /// `S3 refusing`, `S3 slowing down`, `recovered`, `given up this run`.
    pub reason: String,
    /// Since when, RFC 3339.
    pub since: String,
    pub seconds: u64,
    /// When that changes (a retry, the window opening, a snapshot), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// For a quarantined file, the error that set it aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A daemon-wide trouble in force: S3 unreachable or refusing, the state dir failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TroubleView {
    /// `S3 unreachable`, `S3 refusing`, `state dir failing`.
    pub what: String,
    /// Since when, RFC 3339.
    pub since: String,
    pub seconds: u64,
    /// Failed requests (or appends) since it began.
    pub failures: u64,
    /// When the next probe may go, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe: Option<String>,
    pub last_error: String,
}

/// Waiting files listed in the status, oldest first; the rest are only counted.
pub const MAX_WAITING_LISTED: usize = 100;

/// `status.json`: the daemon's live view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub pid: u32,
    pub updated_at: String,
    pub started_at: String,
    pub queue: LiveQueue,
    pub in_flight: Vec<Transfer>,
    pub totals: Totals,
    pub throughput_bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub window: Window,
    pub last_error: Option<LastError>,
    /// Files waiting (not being uploaded), oldest first, at most
    /// [`MAX_WAITING_LISTED`].
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    #[serde(default)]
    pub waiting_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble: Option<TroubleView>,
    #[serde(default)]
    pub quarantined_files: u64,
    /// Open on-demand requests (`tvm-upload request`, the fleet's), oldest first.
    #[serde(default)]
    pub requests: Vec<RequestView>,
    /// The link uploads go over and each link's bytes today (with `links` configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
}

/// The link now, and what each link carried today.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// The link's name (`other` for an interface no link names, or no default route).
    pub current: String,
    /// The interface carrying the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub links: Vec<LinkUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkUsage {
    pub name: String,
    /// Bytes on the wire today (local day at `schedule.utc_offset`).
    pub used_today: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_bytes: Option<u64>,
    /// What is left of the budget today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_today: Option<u64>,
}

/// An open on-demand request and how far it has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    pub id: String,
    /// `local` or `fleet`.
    pub origin: String,
    /// RFC 3339.
    pub since: String,
    pub until: String,
    /// Empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Files of the slice in S3, and still to go; absent while the daemon does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

impl Live {
    /// Sets the throughput and, from what is left of the queue, the ETA.
    /// Only while something is being sent: an idle daemon has no rate and no ETA (the
    /// last rate of a burst must not linger as "ETA 0s at 542.9 KiB/s").
    pub fn set_rate(&mut self, bytes_per_second: f64) {
        if self.in_flight.is_empty() {
            self.throughput_bytes_per_second = 0.0;
            self.eta_seconds = None;
            return;
        }
        self.throughput_bytes_per_second = bytes_per_second.round();
        let in_flight_done: u64 = self.in_flight.iter().map(|t| t.done_bytes).sum();
        let left = self.queue.bytes.saturating_sub(in_flight_done);
        self.eta_seconds = eta_seconds(left, bytes_per_second);
    }
}
