//! Bounded noise: what the log says about failures. A daemon-wide trouble (see
//! [`Trouble`]) gets one line when it starts, a summary every [`SUMMARY_EVERY`] while it
//! lasts and one line when it ends, however many files wait behind it; failures of single
//! files are logged at most [`QUOTA_PER_MINUTE`] a minute, the rest counted. Pure: the
//! lines are returned, the planner logs them.

use std::time::{Duration, Instant};

use super::health::Trouble;

/// While a trouble lasts, a summary line this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(300);
/// Per-file failure lines logged a minute; the rest are counted in the next line.
pub const QUOTA_PER_MINUTE: u32 = 10;

/// Files and bytes waiting, for the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub files: u64,
    pub bytes: u64,
}

/// One trouble, from its first failure to its end.
#[derive(Debug, Clone)]
pub struct Outage {
    pub trouble: Trouble,
    pub since: Instant,
    /// When it began, Unix seconds (for the status).
    pub since_unix: i64,
    next_summary: Instant,
    /// Failures since it began (the first included).
    pub failures: u64,
    pub last_error: String,
}

impl Outage {
    /// A trouble begins with `why`: the outage and its first line.
    pub fn start(
        trouble: Trouble,
        why: &str,
        advice: &str,
        now: Instant,
        now_unix: i64,
        waiting: Waiting,
    ) -> (Outage, String) {
        let what = match trouble {
            Trouble::Unreachable => "Uploads pause; one request probes the link every few seconds",
            Trouble::StateDir => {
                "Nothing is sent until the journal can be written again (free space in the \
                 state dir); one upload probes it now and then"
            }
            Trouble::Refused => "Uploads pause; one request probes now and then",
            Trouble::Credentials => {
                "Uploads pause, files stay queued; the credentials provider is tried again \
                 with backoff"
            }
        };
        let advice = if advice.is_empty() {
            String::new()
        } else {
            let mut chars = advice.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or(' ');
            format!(" {first}{}.", chars.as_str())
        };
        let line = format!(
            "{}: {why}.{advice} {what}; {} waiting",
            trouble.describe(),
            files_and_bytes(waiting)
        );
        let outage = Outage {
            trouble,
            since: now,
            since_unix: now_unix,
            next_summary: now + SUMMARY_EVERY,
            failures: 1,
            last_error: why.to_string(),
        };
        (outage, line)
    }

    /// Another failure of the same trouble (a probe, or an upload sent before it began).
    pub fn failed(&mut self, why: &str) {
        self.failures += 1;
        if self.last_error != why {
            self.last_error = why.to_string();
        }
    }

    /// The summary line, when one is due at `now`.
    pub fn summary(&mut self, now: Instant, waiting: Waiting) -> Option<String> {
        if now < self.next_summary {
            return None;
        }
        self.next_summary = now + SUMMARY_EVERY;
        Some(format!(
            "{} for {}: {} failed requests, {} waiting; last error: {}",
            self.trouble.describe(),
            human_duration(now.saturating_duration_since(self.since)),
            self.failures,
            files_and_bytes(waiting),
            self.last_error
        ))
    }

    /// The line when it ends.
    pub fn end(&self, now: Instant, waiting: Waiting) -> String {
        format!(
            "{} no more, after {} ({} failed requests); {} to upload",
            self.trouble.describe(),
            human_duration(now.saturating_duration_since(self.since)),
            self.failures,
            files_and_bytes(waiting)
        )
    }
}

/// How many per-file failure lines may still be logged this minute.
#[derive(Debug, Clone, Default)]
pub struct Quota {
    minute_start: Option<Instant>,
    logged: u32,
    held_back: u32,
}

impl Quota {
    /// Whether a line may be logged at `now`; and, at the first line of a new minute,
    /// how many were held back in the minute before (to say so).
    pub fn take(&mut self, now: Instant) -> (bool, Option<u32>) {
        let mut held = None;
        let new_minute = self
            .minute_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(60));
        if new_minute {
            if self.held_back > 0 {
                held = Some(self.held_back);
            }
            *self = Quota {
                minute_start: Some(now),
                logged: 0,
                held_back: 0,
            };
        }
        if self.logged < QUOTA_PER_MINUTE {
            self.logged += 1;
            (true, held)
        } else {
            self.held_back += 1;
            (false, held)
        }
    }
}

fn files_and_bytes(w: Waiting) -> String {
    format!("{} files ({})", w.files, crate::human::human(w.bytes))
}

fn human_duration(d: Duration) -> String {
    crate::human::duration(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Waiting = Waiting {
        files: 2000,
        bytes: 3 << 20,
    };

    #[test]
    fn an_outage_says_three_things_however_long_it_lasts() {
        let t0 = Instant::now();
        let (mut o, first) = Outage::start(
            Trouble::Unreachable,
            "PutObject a: connection refused",
            "",
            t0,
            0,
            W,
        );
        assert_eq!(
            first,
            "S3 unreachable: PutObject a: connection refused. Uploads pause; one request \
             probes the link every few seconds; 2000 files (3.0 MiB) waiting"
        );
        let mut lines = 0;
        for s in 1..=3600u64 {
            o.failed("PutObject b: connection refused");
            lines += usize::from(o.summary(t0 + Duration::from_secs(s), W).is_some());
        }
        assert_eq!(lines, 12, "one summary every five minutes for an hour");
        let end = o.end(t0 + Duration::from_secs(3601), W);
        assert_eq!(
            end,
            "S3 unreachable no more, after 1h00m (3601 failed requests); 2000 files (3.0 MiB) \
             to upload"
        );
        let (_, refused) = Outage::start(Trouble::Refused, "e", "fix it", t0, 0, W);
        assert!(
            refused.starts_with("S3 refusing: e. Fix it. Uploads pause"),
            "{refused}"
        );
    }

    #[test]
    fn the_quota_logs_ten_a_minute_and_says_how_many_it_held_back() {
        let t0 = Instant::now();
        let mut q = Quota::default();
        let logged = (0..50)
            .filter(|i| q.take(t0 + Duration::from_millis(i * 100)).0)
            .count();
        assert_eq!(logged, 10);
        assert_eq!(q.take(t0 + Duration::from_secs(61)), (true, Some(40)));
        assert_eq!(q.take(t0 + Duration::from_secs(62)), (true, None));
    }
}
