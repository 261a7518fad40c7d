//! The planner's live view for `status.json`: the queue, the uploads in flight, the
//! files that wait and why, the window, the trouble in force. Read-only.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::health::{Health, Trouble};
use super::{Now, Phase, Planner};
use crate::file::{FileRef, Version};
use crate::status::live::{self as status, LastError, Live, LiveQueue, Transfer};

impl Planner {
    /// The live view for `status.json` (the caller adds the throughput and times).
    pub fn view(&self, now: Now) -> Live {
        let c = self.files.counts();
        let in_queue = || {
            self.files
                .iter()
                .filter(|(_, t)| matches!(t.phase, Phase::Queued { .. } | Phase::Uploading { .. }))
        };
        let oldest = in_queue().map(|(_, t)| t.phase.version().mtime_ns).min();
        let mut in_flight: Vec<Transfer> = self
            .progress
            .iter()
            .filter_map(|(f, done)| {
                let size = self.files.phase(f)?.version().size;
                Some(Transfer::new(
                    f.source(),
                    f.rel(),
                    size,
                    done.load(Ordering::Relaxed),
                ))
            })
            .collect();
        in_flight.sort_by(|a, b| a.path.cmp(&b.path));
        let t = self.totals;
        Live {
            queue: LiveQueue {
                files: c.queued as u64,
                bytes: c.queued_bytes,
                settling_files: c.settling as u64,
                oldest_pending_seconds: oldest.map_or(0.0, |m| {
                    (now.wall_ns.saturating_sub(m).max(0) as f64 / 1e9).round()
                }),
                by_source: status::by_source(
                    in_queue().map(|(f, t)| (f.source(), t.phase.version().size)),
                ),
            },
            in_flight,
            totals: status::Totals {
                files_uploaded: t.files_uploaded,
                bytes_uploaded: t.bytes_uploaded,
                bytes_sent: t.bytes_sent,
                files_already_in_s3: t.files_already_in_s3,
                failed_attempts: t.failed_attempts,
            },
            window: self.window_view(now),
            last_error: self.last_error.as_ref().map(|(at, m)| LastError {
                at: crate::calendar::rfc3339_utc(*at),
                message: m.clone(),
            }),
            waiting: self.waiting(now),
            waiting_total: (self.files.len() - c.uploading) as u64,
            trouble: self.trouble_view(now),
            quarantined_files: c.quarantined as u64,
            ..Live::default()
        }
    }

    /// Every file not being uploaded, why it waits and since when, oldest first (at most
    /// [`status::MAX_WAITING_LISTED`]). Runs once a second over every tracked file, so it
    /// keeps only the oldest in a bounded heap and formats just those.
    fn waiting(&self, now: Now) -> Vec<status::Waiting> {
        let wall = |t: Instant| -> i64 {
            let ago = now.mono.saturating_duration_since(t).as_secs() as i64;
            let ahead = t.saturating_duration_since(now.mono).as_secs() as i64;
            now.unix() - ago + ahead
        };
        let next_open = std::cell::OnceCell::new();
        let next_open = || {
            *next_open.get_or_init(|| {
                self.cfg
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_open(now.schedule))
            })
        };
        let mut oldest =
            std::collections::BinaryHeap::with_capacity(status::MAX_WAITING_LISTED + 1);
        for (file, t) in self.files.iter() {
            let Some((reason, since, until)) =
                self.why_waiting(file, &t.phase, now, &wall, &next_open)
            else {
                continue;
            };
            oldest.push((since, file, reason, until));
            if oldest.len() > status::MAX_WAITING_LISTED {
                oldest.pop();
            }
        }
        oldest
            .into_sorted_vec()
            .into_iter()
            .map(|(since, file, reason, until)| status::Waiting {
                source: file.source().to_string(),
                path: file.rel().to_string(),
                reason: reason.to_string(),
                since: crate::calendar::rfc3339_utc(since),
                seconds: now.unix().saturating_sub(since).max(0) as u64,
                until: until.map(crate::calendar::rfc3339_utc),
                detail: match self.files.phase(file) {
                    Some(Phase::Quarantined { reason, .. }) => Some(reason.to_string()),
                    _ => None,
                },
            })
            .collect()
    }

    /// Why a file in `phase` waits: the reason, since when and until when (Unix
    /// seconds); `None` when it does not wait (being uploaded).
    fn why_waiting(
        &self,
        file: &FileRef,
        phase: &Phase,
        now: Now,
        wall: &dyn Fn(Instant) -> i64,
        next_open: &dyn Fn() -> Option<i64>,
    ) -> Option<(&'static str, i64, Option<i64>)> {
        let mtime = |v: &Version| v.mtime_seconds().min(now.unix());
        Some(match phase {
            Phase::Uploading { .. } => return None,
            Phase::Settling {
                version,
                since,
                gap_ms,
                ..
            } => {
                let growing = *gap_ms > 0
                    || now.mono.saturating_duration_since(*since) > self.cfg.stability * 2;
                let reason = if growing { "growing" } else { "settling" };
                (
                    reason,
                    wall(*since).min(mtime(version)),
                    self.max_wait_at(file, *since).map(wall),
                )
            }
            Phase::Confirming { version, .. } | Phase::Journaling { version, .. } => {
                ("settling", mtime(version), None)
            }
            Phase::Recovered { version } => ("recovered", mtime(version), None),
            Phase::GivenUp { version } => ("given up this run", mtime(version), None),
            Phase::Quarantined { version, .. } => ("quarantined", mtime(version), None),
            Phase::Held { version } => ("held for the start-up scan", mtime(version), None),
            Phase::Queued {
                version, retry_at, ..
            } => {
                let since = mtime(version);
                match (retry_at, &self.health) {
                    (Some(at), _) => ("backing off", since, Some(wall(*at))),
                    _ if self.gate.is_some_and(|g| !g.0) => {
                        ("outside the upload window", since, next_open())
                    }
                    _ if self.link.as_ref().is_some_and(|l| l.spent) => {
                        ("link budget spent", since, None)
                    }
                    _ if !self.link_allows(file.source()) => ("link not allowed", since, None),
                    (_, h) if h.trouble().is_some() => (
                        h.trouble().map_or("queued", Trouble::describe),
                        since,
                        h.until().map(wall),
                    ),
                    (_, Health::SlowedDown { until, .. }) if *until > now.mono => {
                        ("S3 slowing down", since, Some(wall(*until)))
                    }
                    _ => ("queued", since, None),
                }
            }
        })
    }

    /// The daemon-wide trouble in force, if any.
    fn trouble_view(&self, now: Now) -> Option<status::TroubleView> {
        let o = self.outage.as_ref()?;
        let next_probe = self.health.until().map(|t| {
            let ahead = t.saturating_duration_since(now.mono).as_secs() as i64;
            crate::calendar::rfc3339_utc(now.unix() + ahead)
        });
        Some(status::TroubleView {
            what: o.trouble.describe().to_string(),
            since: crate::calendar::rfc3339_utc(o.since_unix),
            seconds: now.mono.saturating_duration_since(o.since).as_secs(),
            failures: o.failures,
            next_probe,
            last_error: o.last_error.clone(),
        })
    }

    fn window_view(&self, now: Now) -> status::Window {
        let open = self.gate.is_none_or(|g| g.0);
        let next_open = match &self.cfg.schedule {
            Some(s) if !open => s.next_open(now.schedule).map(crate::calendar::rfc3339_utc),
            _ => None,
        };
        status::Window {
            open,
            next_open,
            ..status::Window::default()
        }
    }
}
