//! How S3 is treating us, as one state: whether new uploads may go out now, how many,
//! and whether the credentials should be read again before the next one. Pure: time
//! comes in as an argument.

use std::time::{Duration, Instant};

use crate::retry::{Jitter, backoff};

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Requests go out as fast as the concurrency allows.
    Up,
    /// S3 asked us to slow down: nothing new goes out before `until`; `strikes` grows the
    /// pause until an upload succeeds.
    SlowedDown { until: Instant, strikes: u32 },
    /// The credentials or the configuration were refused: nothing goes out before
    /// `until`, then one probe (with the credentials read again).
    Refused { until: Instant },
    /// One probe in flight to learn whether S3 accepts us again.
    Probing,
    /// `once` after a refusal: nothing more goes out this run.
    GaveUp,
}

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Uploads that may be in flight at once.
    pub max_in_flight: usize,
    /// Read the credentials again before sending (an operator may have fixed them).
    pub reload_credentials: bool,
}

impl Health {
    /// How many uploads may be in flight at `now`; moves a finished refusal to probing.
    pub fn allowance(&mut self, now: Instant, concurrency: usize) -> Allowance {
        let (max_in_flight, reload_credentials) = match self {
            Health::Up => (concurrency, false),
            Health::SlowedDown { until, .. } if now < *until => (0, false),
            Health::SlowedDown { .. } => (concurrency, false),
            Health::Refused { until } if now < *until => (0, false),
            Health::Refused { .. } => {
                *self = Health::Probing;
                (1, true)
            }
            Health::Probing => (1, false),
            Health::GaveUp => (0, false),
        };
        Allowance {
            max_in_flight,
            reload_credentials,
        }
    }

    /// An upload succeeded. Returns true when S3 had been refusing us.
    pub fn succeeded(&mut self) -> bool {
        let was_refusing = matches!(self, Health::Refused { .. } | Health::Probing);
        if *self != Health::GaveUp {
            *self = Health::Up;
        }
        was_refusing
    }

    /// The credentials or configuration were refused. `give_up` (`once`): nothing more
    /// this run. Returns true when this is news (log it), false while already refused.
    pub fn refused(&mut self, now: Instant, wait: Duration, give_up: bool) -> bool {
        let news = !matches!(
            self,
            Health::Refused { .. } | Health::Probing | Health::GaveUp
        );
        *self = if give_up {
            Health::GaveUp
        } else {
            Health::Refused { until: now + wait }
        };
        news
    }

    /// S3 said SlowDown: pause new requests, longer at each strike. Returns the pause.
    pub fn slow_down(
        &mut self,
        now: Instant,
        (initial, max): (Duration, Duration),
        jitter: &mut Jitter,
    ) -> Duration {
        let strikes = match self {
            Health::SlowedDown { strikes, .. } => *strikes + 1,
            Health::Up => 1,
            // A refusal or give-up is the stronger verdict; keep it.
            _ => return Duration::ZERO,
        };
        let wait = backoff(strikes, initial, max, jitter);
        *self = Health::SlowedDown {
            until: now + wait,
            strikes,
        };
        wait
    }

    /// When the verdict next changes by itself.
    pub fn until(&self) -> Option<Instant> {
        match self {
            Health::SlowedDown { until, .. } | Health::Refused { until } => Some(*until),
            _ => None,
        }
    }

    pub fn gave_up(&self) -> bool {
        *self == Health::GaveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_refusal_pauses_then_probes_once_with_fresh_credentials() {
        let t0 = Instant::now();
        let mut h = Health::Up;
        assert_eq!(h.allowance(t0, 4).max_in_flight, 4);
        assert!(h.refused(t0, 10 * S, false));
        assert!(!h.refused(t0, 10 * S, false), "already known");
        assert_eq!(h.allowance(t0 + S, 4).max_in_flight, 0);
        let probe = h.allowance(t0 + 10 * S, 4);
        assert_eq!(
            probe,
            Allowance {
                max_in_flight: 1,
                reload_credentials: true
            }
        );
        assert!(!h.allowance(t0 + 11 * S, 4).reload_credentials);
        assert!(h.succeeded());
        assert_eq!(h, Health::Up);
    }

    #[test]
    fn slowdowns_pause_longer_each_time_until_a_success() {
        let t0 = Instant::now();
        let mut j = Jitter::new(7);
        let mut h = Health::Up;
        let first = h.slow_down(t0, (S, 60 * S), &mut j);
        let second = h.slow_down(t0, (S, 60 * S), &mut j);
        assert!(second > first, "{first:?} then {second:?}");
        assert_eq!(h.allowance(t0, 4).max_in_flight, 0);
        assert_eq!(h.allowance(t0 + 60 * S, 4).max_in_flight, 4);
        assert_eq!(h.until(), Some(t0 + second));
        assert!(!h.succeeded());
        assert_eq!(h, Health::Up);
    }

    #[test]
    fn giving_up_is_final() {
        let t0 = Instant::now();
        let mut h = Health::Up;
        h.refused(t0, S, true);
        assert!(h.gave_up());
        h.succeeded();
        assert_eq!(h.slow_down(t0, (S, S), &mut Jitter::new(1)), Duration::ZERO);
        assert!(h.gave_up() && h.allowance(t0 + S, 4).max_in_flight == 0);
    }
}
