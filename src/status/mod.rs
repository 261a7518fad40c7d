//! `tvm-upload status`: what is left to upload and how it is going, read without
//! disturbing a running daemon. Two sources, both under `state_dir`:
//! - `status.json` ([`Live`]), which the daemon rewrites atomically about once a second
//!   while busy: the live queue, in-flight uploads with progress, totals, throughput,
//!   ETA, last error;
//! - the journal (read, never written): what is queued and uploaded for certain, also
//!   when no daemon runs.
//!
//! Whether a daemon runs is read from `/proc/locks` (is the lock file's inode locked?),
//! so `status` never takes the lock itself: a daemon starting at that instant must not
//! find it held. Both documents are typed structs, written and read with serde; each
//! derived figure (a percent, an ETA, per-source sums) is computed in one function here.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::journal::{Journal, LOCK_FILE};

mod human;
pub mod live;

pub use crate::human::{duration, human};
pub use human::{human_view, wrap};
pub use live::{
    Count, LastError, LinkUsage, LinkView, Live, LiveQueue, MAX_WAITING_LISTED, RequestView,
    Totals, Transfer, TroubleView, Waiting, Window, by_source, eta_seconds, percent,
};

pub const STATUS_FILE: &str = "status.json";
/// Written by the daemon while the S3 server cannot list multipart uploads
/// (`src/upload/orphans.rs`); its text says why and what follows.
pub const UNLISTED_UPLOADS_FILE: &str = "multipart-uploads-unlisted";

/// Replaces `status.json` atomically (temp file and rename), so a reader never sees half
/// of one. Not fsynced: it is advice, rewritten every second, never state.
pub fn write(state_dir: &Path, live: &Live) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{STATUS_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(live).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    drop(f);
    std::fs::rename(&tmp, state_dir.join(STATUS_FILE))
}

fn read_live(state_dir: &Path) -> Option<Live> {
    let bytes = std::fs::read(state_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Throughput over a sliding window of (time, bytes sent so far) samples.
#[derive(Debug, Default)]
pub struct Rate {
    samples: std::collections::VecDeque<(std::time::Instant, u64)>,
}

/// Throughput is the bytes sent over this last stretch of time.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl Rate {
    /// Takes a sample and returns bytes per second over the last [`RATE_WINDOW`].
    pub fn sample(&mut self, now: std::time::Instant, sent_total: u64) -> f64 {
        self.samples.push_back((now, sent_total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// `status --json`: the journal's certain facts merged with the daemon's live view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub vehicle_id: String,
    pub daemon_running: bool,
    pub status_updated_at: Option<String>,
    pub pending: Pending,
    pub in_flight: Vec<Transfer>,
    pub incomplete_multipart: Vec<Transfer>,
    pub uploaded: Count,
    pub totals_since_start: Option<Totals>,
    pub throughput_bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub settling_files: u64,
    pub last_error: Option<LastError>,
    pub window: Window,
    pub journal_damaged_lines: usize,
    /// From the daemon's live view (empty when it does not run).
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    #[serde(default)]
    pub waiting_total: u64,
    /// The daemon-wide trouble in force (S3 unreachable or refusing, the state dir
    /// failing), from the live view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble: Option<TroubleView>,
    /// Files set aside after failing for a reason of their own, from the journal
    /// (tried again when they change or the daemon restarts).
    #[serde(default)]
    pub quarantined: Vec<QuarantinedFile>,
    /// Whether the state dir's filesystem is nearly full (journal appends may fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir_free_bytes: Option<u64>,
    /// Set when the server could not list multipart uploads: an upload whose create
    /// answer was lost is then left to the bucket's lifecycle rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_uploads_unlisted: Option<String>,
    /// Files the disk cleanup would delete but keeps: open for writing, or changed since
    /// their upload (path and why), while the daemon runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_kept: Vec<String>,
    /// Open on-demand requests: from the live view while the daemon runs (with their
    /// progress), else from the state dir.
    #[serde(default)]
    pub requests: Vec<RequestView>,
    /// The link now and each link's bytes today (with `links` configured): the
    /// daemon's view while it runs, else read from the route and the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
}

/// A quarantined file as the journal has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedFile {
    pub source: String,
    pub path: String,
    pub reason: String,
    /// Since when, RFC 3339.
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub files: u64,
    pub bytes: u64,
    pub by_source: BTreeMap<String, Count>,
}

/// Whether some process holds the state dir's lock, read from `/proc/locks` without
/// taking it. `None` when that cannot be told (no lock file, no `/proc`).
pub fn daemon_running(state_dir: &Path) -> Option<bool> {
    let meta = std::fs::metadata(state_dir.join(LOCK_FILE)).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(lock_listed(&locks, meta.dev(), meta.ino()))
}

/// Whether `/proc/locks` lists a lock on the inode `ino` of device `dev`. Its lines read
/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`: the device as hex major:minor.
pub fn lock_listed(locks: &str, dev: u64, ino: u64) -> bool {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks
        .lines()
        .filter(|l| !l.contains("->")) // a blocked waiter, not a holder
        .any(|l| l.split_whitespace().any(|field| field == want))
}

pub fn report(config: &Config) -> Result<Report, String> {
    let replay =
        Journal::read_only(&config.state_dir, config.key_scheme()).map_err(|e| e.to_string())?;
    let state = &replay.state;
    let by = by_source(
        state
            .pending
            .iter()
            .map(|(f, p)| (f.source(), p.version.size)),
    );
    let mut incomplete: Vec<Transfer> = state
        .multipart
        .iter()
        .map(|(f, m)| Transfer::new(f.source(), f.rel(), m.version.size, m.stored_bytes()))
        .collect();
    incomplete.sort_by(|a, b| a.path.cmp(&b.path));
    let live = read_live(&config.state_dir);
    // No /proc: a status file rewritten in the last minute by a live pid says so.
    let running = daemon_running(&config.state_dir).unwrap_or_else(|| {
        live.as_ref()
            .is_some_and(|l| Path::new(&format!("/proc/{}", l.pid)).exists())
    });
    let live_now = live.as_ref().filter(|_| running);
    Ok(Report {
        vehicle_id: config.vehicle_id.clone(),
        daemon_running: running,
        status_updated_at: live.as_ref().map(|l| l.updated_at.clone()),
        pending: Pending {
            files: by.values().map(|c| c.files).sum(),
            bytes: by.values().map(|c| c.bytes).sum(),
            by_source: by,
        },
        in_flight: live_now.map(|l| l.in_flight.clone()).unwrap_or_default(),
        incomplete_multipart: incomplete,
        uploaded: Count {
            files: state.registry_len() as u64,
            bytes: state.registry().map(|(_, u)| u.version.size).sum(),
        },
        totals_since_start: live.as_ref().map(|l| l.totals),
        throughput_bytes_per_second: live_now.map_or(0.0, |l| l.throughput_bytes_per_second),
        eta_seconds: live_now.and_then(|l| l.eta_seconds),
        settling_files: live_now.map_or(0, |l| l.queue.settling_files),
        last_error: live.as_ref().and_then(|l| l.last_error.clone()),
        window: window(config),
        journal_damaged_lines: replay.damaged_total,
        waiting: live_now.map(|l| l.waiting.clone()).unwrap_or_default(),
        waiting_total: live_now.map_or(0, |l| l.waiting_total),
        trouble: live_now.and_then(|l| l.trouble.clone()),
        quarantined: quarantined(state),
        state_dir_free_bytes: crate::disk::usage(&config.state_dir)
            .ok()
            .map(|u| u.size.saturating_sub(u.used)),
        multipart_uploads_unlisted: std::fs::read_to_string(
            config.state_dir.join(UNLISTED_UPLOADS_FILE),
        )
        .ok()
        .filter(|_| running)
        .map(|t| t.trim().to_string()),
        disk_kept: std::fs::read_to_string(config.state_dir.join(crate::disk::DISK_KEPT_FILE))
            .ok()
            .filter(|_| running)
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        link: live_now.and_then(|l| l.link.clone()),
        requests: match live_now {
            Some(l) => l.requests.clone(),
            None => crate::requests::read_open(&config.state_dir)
                .0
                .iter()
                .map(|r| request_view(r, None))
                .collect(),
        },
    })
}

/// An open request as the status shows it; `progress`: (uploaded, pending).
pub fn request_view(r: &crate::requests::Request, progress: Option<(u64, u64)>) -> RequestView {
    let t = |ns: i64| crate::calendar::rfc3339_utc(ns.div_euclid(1_000_000_000));
    RequestView {
        id: r.id.clone(),
        origin: match r.origin {
            crate::requests::Origin::Local => "local",
            crate::requests::Origin::Fleet => "fleet",
        }
        .to_string(),
        since: t(r.since_ns),
        until: t(r.until_ns),
        sources: r.sources.clone(),
        note: r.note.clone(),
        uploaded: progress.map(|p| p.0),
        pending: progress.map(|p| p.1),
    }
}

/// Whether uploads are allowed now, and if not when they next are.
fn quarantined(state: &crate::journal::State) -> Vec<QuarantinedFile> {
    let mut out: Vec<QuarantinedFile> = state
        .quarantined()
        .map(|(f, q)| QuarantinedFile {
            source: f.source().to_string(),
            path: f.rel().to_string(),
            reason: q.reason.clone(),
            since: crate::calendar::rfc3339_utc(q.at),
        })
        .collect();
    out.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    out
}

fn window(config: &Config) -> Window {
    let Some(schedule) = &config.schedule else {
        return Window {
            open: true,
            always: Some(true),
            ..Window::default()
        };
    };
    let now = crate::clock::schedule_now();
    match schedule.open_at(now) {
        Some(open) => Window {
            open: true,
            max_bytes_per_second: open.max_bytes_per_second,
            ..Window::default()
        },
        None => {
            let next = schedule.next_open(now);
            Window {
                open: false,
                next_open: next.map(crate::calendar::rfc3339_utc),
                next_open_local: next
                    .map(|t| crate::calendar::rfc3339_at_offset(t, schedule.utc_offset_seconds)),
                ..Window::default()
            }
        }
    }
}

/// What `status` prints: the human view, or with `as_json` the [`Report`] as JSON.
/// `status`: the report as JSON or for a person. `idle_link`: the link view to show
/// when no daemon runs (read by the caller from the route and the ledger).
pub fn show(
    config: &Config,
    as_json: bool,
    idle_link: impl FnOnce() -> Option<LinkView>,
) -> Result<String, String> {
    let mut r = report(config)?;
    if !r.daemon_running {
        r.link = idle_link();
    }
    if as_json {
        let mut text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        text.push('\n');
        return Ok(text);
    }
    Ok(human_view(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            vehicle_id: "v001-with-a-rather-long-vehicle-identifier-0000000001".into(),
            daemon_running: true,
            pending: Pending {
                files: 1_234_567,
                bytes: 987_654_321_987,
                by_source: by_source([("a-source-name-longer-than-twenty-chars", 2)].into_iter()),
            },
            settling_files: 12,
            eta_seconds: Some(123_456.0),
            throughput_bytes_per_second: 123_456_789.0,
            in_flight: vec![Transfer::new(
                "ros",
                "a/very/deep/directory/tree/with/a/very/long/file-name.mcap",
                1000,
                425,
            )],
            uploaded: Count {
                files: 99_999_999,
                bytes: 1_234_567_890_123_456,
            },
            totals_since_start: Some(Totals {
                files_uploaded: 10,
                bytes_uploaded: 100,
                bytes_sent: 20,
                files_already_in_s3: 1,
                failed_attempts: 2,
            }),
            window: Window {
                open: false,
                next_open: Some("2026-11-23T20:00:00Z".into()),
                ..Window::default()
            },
            last_error: Some(LastError {
                at: "2026-11-22T10:00:00Z".into(),
                message: "x".repeat(300),
            }),
            ..Report::default()
        }
    }

    #[test]
    fn links_and_requests_read_in_the_human_view() {
        let mut r = sample();
        r.link = Some(LinkView {
            current: "cellular".into(),
            interface: Some("wwan0".into()),
            links: vec![
                LinkUsage {
                    name: "depot".into(),
                    used_today: 5 << 20,
                    daily_bytes: None,
                    left_today: None,
                },
                LinkUsage {
                    name: "cellular".into(),
                    used_today: 200 << 20,
                    daily_bytes: Some(200 << 20),
                    left_today: Some(0),
                },
                LinkUsage {
                    name: "other".into(),
                    used_today: 1 << 20,
                    daily_bytes: Some(4 << 20),
                    left_today: Some(3 << 20),
                },
            ],
        });
        r.requests = vec![
            RequestView {
                id: "inc-7".into(),
                origin: "fleet".into(),
                since: "2026-12-06T06:00:00Z".into(),
                until: "2026-12-06T07:00:00Z".into(),
                sources: vec!["bags".into(), "logs".into()],
                note: Some("hard brake".into()),
                uploaded: Some(2),
                pending: Some(3),
            },
            RequestView {
                id: "local-1".into(),
                origin: "local".into(),
                ..RequestView::default()
            },
        ];
        let text = human_view(&r);
        assert!(text.contains("link       cellular (wwan0)"), "{text}");
        assert!(text.contains("budget spent until midnight"), "{text}");
        assert!(text.contains("3.0 MiB left"), "{text}");
        assert!(text.contains("2 open (their files go first)"), "{text}");
        let whole = text.replace(
            "
    ", "",
        );
        assert!(
            whole.contains("in bags, logs: 2 uploaded, 3 to go (hard brake)"),
            "{text}"
        );
        assert!(
            whole.contains("in every source: taken at the daemon's next start"),
            "{text}"
        );
        if let Some(l) = r.link.as_mut() {
            l.interface = None;
        }
        assert!(human_view(&r).contains("(no default route)"));
    }

    #[test]
    fn human_view_fits_eighty_columns() {
        let mut r = sample();
        r.waiting = vec![Waiting {
            source: "syslog".into(),
            path: format!("{}/messages", "deep/".repeat(30)),
            reason: "growing".into(),
            since: "2026-11-22T10:00:00Z".into(),
            seconds: 754,
            until: Some("2026-11-22T11:00:00Z".into()),
            detail: None,
        }];
        r.waiting_total = 12;
        let text = human_view(&r);
        assert!(text.contains("growing for 12m34s"), "{text}");
        assert!(text.contains("and 11 more"), "{text}");
        assert!(
            text.replace("\n    ", "").contains(&r.waiting[0].path),
            "the path is whole, wrapped: {text}"
        );
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(
            text.contains("ETA 34h17m") && text.contains("42.5%"),
            "{text}"
        );
    }

    #[test]
    fn documents_round_trip_through_serde() {
        let r = sample();
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<Report>(&text).expect("back"), r);
        let mut live = Live::default();
        live.queue.bytes = 1000;
        live.in_flight.push(Transfer::new("s", "p", 600, 200));
        live.set_rate(100.0);
        assert_eq!(live.eta_seconds, Some(8.0));
        let text = serde_json::to_string(&live).expect("json");
        assert_eq!(serde_json::from_str::<Live>(&text).expect("back"), live);
    }

    #[test]
    fn derived_figures() {
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(Transfer::new("s", "p", 10, 99).done_bytes, 10);
        assert_eq!(eta_seconds(100, 0.0), None);
        let t0 = std::time::Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.sample(t0, 0), 0.0);
        let r = rate.sample(t0 + std::time::Duration::from_secs(2), 1000);
        assert_eq!(r, 500.0);
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let dev = libc::makedev(0xfd, 0x01);
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4243 08:02:99 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4244 08:02:777 0 EOF\n";
        assert!(lock_listed(locks, dev, 123_456));
        assert!(!lock_listed(locks, dev, 12_345));
        assert!(lock_listed(locks, libc::makedev(8, 2), 99));
        assert!(
            !lock_listed(locks, libc::makedev(8, 2), 777),
            "a waiter holds nothing"
        );
    }

    #[test]
    fn status_sees_a_held_lock_without_taking_it() {
        let dir = std::env::temp_dir().join(format!("tvm-status-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let lock = std::fs::File::create(dir.join(LOCK_FILE)).expect("lock file");
        assert_eq!(daemon_running(&dir), Some(false));
        lock.try_lock().expect("lock");
        assert_eq!(daemon_running(&dir), Some(true));
        drop(lock);
        assert_eq!(daemon_running(&dir), Some(false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression (status.rs 37–43 before the redesign): `status` tested the lock by
    /// taking it, so a daemon starting at that instant failed with "lock held".
    #[test]
    fn a_daemon_starting_while_status_looks_always_gets_the_lock() {
        let dir = std::env::temp_dir().join(format!("tvm-status-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::File::create(dir.join(LOCK_FILE)).expect("lock file");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looker = {
            let (dir, stop) = (dir.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    daemon_running(&dir);
                }
            })
        };
        for _ in 0..2000 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(LOCK_FILE))
                .expect("open");
            f.try_lock().expect("the lock is never held by status");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        looker.join().expect("join");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
