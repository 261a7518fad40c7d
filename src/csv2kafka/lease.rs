//! A job's lease as this worker knows it, and the one answer to "may I hand a row to
//! the producer now?". Pure: every time is an argument ([`Now`]).
//!
//! The checkpoint item holds the lease until `lease_expires` (wall clock, written as
//! `write time + lease`). This worker counts its lease from *before* the write that
//! last extended it, by its own monotonic clock and by the wall clock (whichever says
//! less), so it never believes in more lease than the item gives. It sends only while
//! more than a margin is left: the producer's delivery bound (`message.timeout.ms`,
//! which librdkafka enforces before transmitting a message, and then fails it) plus an
//! allowance for clock skew between workers. A row handed over inside the lease has
//! therefore landed, or can no longer land, before the lease ends; a successor that
//! takes an expired lease waits the same margin before its resume scan, so the scan
//! sees everything the old holder can still land. A worker resumed from a stall (a
//! SIGSTOP, a frozen VM) finds its margin gone at the first row and stops sending.

use std::time::{Duration, Instant};

/// Allowance for the wall clocks of two workers disagreeing (NTP keeps them within
/// milliseconds; a worker whose clock is off by more is misconfigured).
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);
/// The producer's delivery bound is at most this share of the lease.
const DELIVERY_SHARE: u32 = 4;

/// The wall clock in Unix milliseconds, as leases and checkpoints are written.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A moment by both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: i64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            mono: Instant::now(),
            wall_ms: now_ms(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lease {
    duration: Duration,
    delivery: Duration,
    /// When the last successful write that extended the lease was started.
    confirmed: Option<Now>,
}

impl Lease {
    /// A lease of `duration` with rows bounded to land within `delivery`.
    pub fn new(duration: Duration, delivery: Duration) -> Lease {
        Lease {
            duration,
            delivery,
            confirmed: None,
        }
    }

    /// The delivery bound csv2kafka gives the producer for a lease of `duration`: a
    /// quarter of it, or `configured` (`message.timeout.ms`) when that is shorter.
    pub fn delivery_bound(duration: Duration, configured: Option<Duration>) -> Duration {
        let share = duration / DELIVERY_SHARE;
        configured.map_or(share, |c| c.min(share))
    }

    /// What must be left of the lease to hand a row over; also what a successor waits
    /// after taking an expired lease before it scans.
    pub fn margin(&self) -> Duration {
        self.delivery + CLOCK_SKEW
    }

    /// A write that extended the lease succeeded; `started` is when it was begun.
    pub fn confirm(&mut self, started: Now) {
        self.confirmed = Some(started);
    }

    /// Forgets the lease (lost, or given back).
    pub fn drop_it(&mut self) {
        self.confirmed = None;
    }

    /// How long rows may still be handed over, by the more pessimistic clock.
    pub fn left(&self, now: Now) -> Duration {
        let Some(at) = self.confirmed else {
            return Duration::ZERO;
        };
        let usable = self.duration.saturating_sub(self.margin());
        let by_mono = now.mono.saturating_duration_since(at.mono);
        // A wall clock that went backwards says nothing; one that jumped ahead counts.
        let by_wall = Duration::from_millis(now.wall_ms.saturating_sub(at.wall_ms).max(0) as u64);
        usable.saturating_sub(by_mono.max(by_wall))
    }

    /// Whether a row may be handed to the producer now.
    pub fn may_send(&self, now: Now) -> bool {
        !self.left(now).is_zero()
    }

    /// Whether it is time to extend it: a third of the usable time is gone, so two
    /// more attempts fit before sending must stop.
    pub fn renewal_due(&self, now: Now) -> bool {
        let usable = self.duration.saturating_sub(self.margin());
        self.left(now) <= usable * 2 / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Now, secs: f64) -> Now {
        Now {
            mono: base.mono + Duration::from_secs_f64(secs),
            wall_ms: base.wall_ms + (secs * 1000.0) as i64,
        }
    }

    #[test]
    fn rows_go_only_while_more_than_the_margin_is_left() {
        let t0 = Now::read();
        let delivery = Lease::delivery_bound(Duration::from_secs(5), None);
        assert_eq!(delivery, Duration::from_millis(1250));
        let mut lease = Lease::new(Duration::from_secs(5), delivery);
        assert!(!lease.may_send(t0), "not confirmed yet");
        lease.confirm(t0);
        assert_eq!(lease.margin(), Duration::from_millis(2250));
        assert!(lease.may_send(at(t0, 2.7)));
        assert!(!lease.may_send(at(t0, 2.8)), "within the margin");
        assert!(!lease.renewal_due(at(t0, 0.5)));
        assert!(lease.renewal_due(at(t0, 1.0)));
        // A SIGSTOP of 75 s: the first row after it is refused.
        assert!(!lease.may_send(at(t0, 75.0)));
        lease.drop_it();
        assert!(!lease.may_send(at(t0, 0.1)));
    }

    #[test]
    fn the_more_pessimistic_clock_counts() {
        let t0 = Now::read();
        let mut lease = Lease::new(Duration::from_secs(60), Duration::from_secs(15));
        lease.confirm(t0);
        // The monotonic clock stood still (a frozen VM) while the wall clock moved on.
        let frozen = Now {
            mono: t0.mono,
            wall_ms: t0.wall_ms + 50_000,
        };
        assert!(!lease.may_send(frozen));
        // The wall clock stepped back: the monotonic clock still counts.
        let back = Now {
            mono: t0.mono + Duration::from_secs(50),
            wall_ms: t0.wall_ms - 10_000,
        };
        assert!(!lease.may_send(back));
        assert!(lease.may_send(at(t0, 40.0)));
    }

    #[test]
    fn a_configured_delivery_timeout_only_shortens_the_bound() {
        let lease = Duration::from_secs(60);
        assert_eq!(Lease::delivery_bound(lease, None), Duration::from_secs(15));
        let short = Some(Duration::from_secs(5));
        assert_eq!(Lease::delivery_bound(lease, short), Duration::from_secs(5));
        let long = Some(Duration::from_secs(120));
        assert_eq!(Lease::delivery_bound(lease, long), Duration::from_secs(15));
    }
}
