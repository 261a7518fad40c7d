//! How S3 and the state dir are treating us, as one daemon-wide state: whether new
//! uploads may go out now, how many, and whether the credentials should be read again
//! first. A trouble that every file would hit alike (the link is down, the credentials
//! are refused, the journal cannot be written) pauses everything and is probed by one
//! upload at a time, instead of each file failing, backing off and logging on its own.
//! Pure: time comes in as an argument.

use std::time::{Duration, Instant};

use crate::retry::{Jitter, backoff};

/// What stops every upload alike. Ordered by precedence: a stronger verdict is kept
/// when a weaker one is reported meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trouble {
    /// No answer from S3 at all (connect, DNS, reset, timeout): the link is down.
    Unreachable,
    /// No valid credentials to sign with: the provider fails and the last ones expired.
    Credentials,
    /// The journal cannot be appended to (the state dir is full or failing): nothing
    /// may be sent whose upload could not be recorded.
    StateDir,
    /// The credentials or the configuration were refused.
    Refused,
}

impl Trouble {
    /// How the status and the log say it.
    pub fn describe(self) -> &'static str {
        match self {
            Trouble::Unreachable => "S3 unreachable",
            Trouble::Credentials => "no valid credentials",
            Trouble::StateDir => "state dir failing",
            Trouble::Refused => "S3 refusing",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Requests go out as fast as the concurrency allows.
    Up,
    /// S3 asked us to slow down: nothing new goes out before `until`; `strikes` grows the
    /// pause until an upload succeeds.
    SlowedDown { until: Instant, strikes: u32 },
    /// Nothing new goes out before `until`; then one upload probes. `strikes`: probes
    /// that failed so far (1 after the failure that started it).
    Paused {
        trouble: Trouble,
        until: Instant,
        strikes: u32,
    },
    /// One probe in flight to learn whether the trouble is over.
    Probing { trouble: Trouble, strikes: u32 },
    /// `once` after a trouble that did not pass: nothing more goes out this run.
    GaveUp { trouble: Trouble },
}

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Uploads that may be in flight at once.
    pub max_in_flight: usize,
    /// Read the credentials again before sending (an operator may have fixed them).
    pub reload_credentials: bool,
}

/// How a trouble's pauses grow, and when `once` gives up on it.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    /// Failed probes after which the run gives up (`once`); `None`: never (`run`).
    pub give_up_after: Option<u32>,
}

impl Health {
    /// How many uploads may be in flight at `now`; moves a finished pause to probing.
    pub fn allowance(&mut self, now: Instant, concurrency: usize) -> Allowance {
        let (max_in_flight, reload_credentials) = match *self {
            Health::Up => (concurrency, false),
            Health::SlowedDown { until, .. } if now < until => (0, false),
            Health::SlowedDown { .. } => (concurrency, false),
            Health::Paused { until, .. } if now < until => (0, false),
            Health::Paused {
                trouble, strikes, ..
            } => {
                *self = Health::Probing { trouble, strikes };
                (1, trouble == Trouble::Refused)
            }
            Health::Probing { .. } => (1, false),
            Health::GaveUp { .. } => (0, false),
        };
        Allowance {
            max_in_flight,
            reload_credentials,
        }
    }

    /// An upload succeeded (sent and journaled). Returns the trouble that ended, if any.
    pub fn succeeded(&mut self) -> Option<Trouble> {
        let ended = self.trouble();
        if !self.gave_up() {
            *self = Health::Up;
        }
        ended
    }

    /// S3 answered (with an error of the request's own): the link works. Ends an
    /// `Unreachable`; returns whether it did.
    pub fn answered(&mut self) -> bool {
        self.ends(Trouble::Unreachable)
    }

    /// The journal took an append: ends a `StateDir` trouble; returns whether it did.
    pub fn journal_works(&mut self) -> bool {
        self.ends(Trouble::StateDir)
    }

    fn ends(&mut self, which: Trouble) -> bool {
        let ended = matches!(
            self,
            Health::Paused { trouble, .. } | Health::Probing { trouble, .. } if *trouble == which
        );
        if ended {
            *self = Health::Up;
        }
        ended
    }

    /// A failure every upload would share. Returns true when this is news (log it):
    /// the trouble starts, or replaces a weaker one. A failed probe pauses longer; a
    /// failure of an upload sent before the pause began changes nothing.
    pub fn failed(
        &mut self,
        now: Instant,
        trouble: Trouble,
        policy: Policy,
        jitter: &mut Jitter,
    ) -> bool {
        let (strikes, news) = match *self {
            Health::GaveUp { .. } => return false,
            Health::Probing {
                trouble: t,
                strikes,
            } if t == trouble => (strikes + 1, false),
            Health::Paused { trouble: t, .. } | Health::Probing { trouble: t, .. }
                if t >= trouble =>
            {
                return false;
            }
            _ => (1, true),
        };
        if policy.give_up_after.is_some_and(|n| strikes >= n) {
            *self = Health::GaveUp { trouble };
            return news;
        }
        let wait = backoff(strikes, policy.initial, policy.max, jitter);
        *self = Health::Paused {
            trouble,
            until: now + wait,
            strikes,
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
            // A trouble or give-up is the stronger verdict; keep it.
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
            Health::SlowedDown { until, .. } | Health::Paused { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The trouble in force, if any.
    pub fn trouble(&self) -> Option<Trouble> {
        match self {
            Health::Paused { trouble, .. }
            | Health::Probing { trouble, .. }
            | Health::GaveUp { trouble } => Some(*trouble),
            _ => None,
        }
    }

    pub fn gave_up(&self) -> bool {
        matches!(self, Health::GaveUp { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy(max: Duration, give_up_after: Option<u32>) -> Policy {
        Policy {
            initial: S,
            max,
            give_up_after,
        }
    }

    #[test]
    fn a_refusal_pauses_then_probes_once_with_fresh_credentials() {
        let t0 = Instant::now();
        let mut j = Jitter::new(1);
        let mut h = Health::Up;
        let p = policy(10 * S, None);
        assert_eq!(h.allowance(t0, 4).max_in_flight, 4);
        assert!(h.failed(t0, Trouble::Refused, p, &mut j));
        assert!(!h.failed(t0, Trouble::Refused, p, &mut j), "already known");
        assert_eq!(h.allowance(t0 + S / 4, 4).max_in_flight, 0);
        let probe = h.allowance(t0 + 10 * S, 4);
        assert_eq!(
            probe,
            Allowance {
                max_in_flight: 1,
                reload_credentials: true
            }
        );
        assert!(!h.allowance(t0 + 11 * S, 4).reload_credentials);
        assert_eq!(h.succeeded(), Some(Trouble::Refused));
        assert_eq!(h, Health::Up);
    }

    #[test]
    fn an_unreachable_link_is_probed_ever_more_slowly_up_to_the_cap() {
        let t0 = Instant::now();
        let mut j = Jitter::new(3);
        let mut h = Health::Up;
        let p = policy(5 * S, None);
        assert!(h.failed(t0, Trouble::Unreachable, p, &mut j));
        let mut t = t0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let until = h.until().expect("paused");
            pauses.push(until - t);
            t = until;
            assert_eq!(h.allowance(t, 4).max_in_flight, 1, "one probe");
            assert!(!h.failed(t, Trouble::Unreachable, p, &mut j), "not news");
        }
        assert!(pauses.iter().all(|d| *d <= 5 * S), "{pauses:?}");
        assert!(pauses[4] >= 5 * S / 2, "grown to the cap: {pauses:?}");
        // Any answer from S3 means the link works.
        assert!(h.answered());
        assert_eq!(h, Health::Up);
        assert!(!h.answered());
    }

    #[test]
    fn a_stronger_trouble_wins_and_a_weaker_one_waits_its_turn() {
        let t0 = Instant::now();
        let mut j = Jitter::new(5);
        let mut h = Health::Up;
        let p = policy(5 * S, None);
        assert!(h.failed(t0, Trouble::Unreachable, p, &mut j));
        assert!(h.failed(t0, Trouble::StateDir, p, &mut j), "stronger: news");
        assert!(
            !h.failed(t0, Trouble::Unreachable, p, &mut j),
            "weaker: kept"
        );
        assert_eq!(h.trouble(), Some(Trouble::StateDir));
        assert!(!h.answered(), "an answer does not fix the state dir");
        assert!(h.journal_works());
        assert_eq!(h.trouble(), None);
    }

    #[test]
    fn once_gives_up_after_its_probes_fail() {
        let t0 = Instant::now();
        let mut j = Jitter::new(9);
        let mut h = Health::Up;
        let p = policy(S, Some(3));
        h.failed(t0, Trouble::Unreachable, p, &mut j);
        for _ in 0..2 {
            let until = h.until().expect("paused");
            h.allowance(until, 4);
            h.failed(until, Trouble::Unreachable, p, &mut j);
        }
        assert!(h.gave_up());
        assert_eq!(h.succeeded(), Some(Trouble::Unreachable));
        assert!(h.gave_up(), "final");
        assert_eq!(h.allowance(t0 + 60 * S, 4).max_in_flight, 0);
        let refused = &mut Health::Up;
        refused.failed(t0, Trouble::Refused, policy(S, Some(1)), &mut j);
        assert!(refused.gave_up(), "a refusal gives up at once");
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
        assert_eq!(h.succeeded(), None);
        assert_eq!(h, Health::Up);
        let paused = &mut Health::Up;
        paused.failed(t0, Trouble::Refused, policy(S, None), &mut j);
        assert_eq!(paused.slow_down(t0, (S, S), &mut j), Duration::ZERO);
    }
}
