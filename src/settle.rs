//! Stability: a file is ready once its size and mtime have stayed unchanged for the
//! stability period; any change restarts its wait. Pure: time comes in as an argument.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What the tracker knows of one file's last observed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime_ns: i64,
}

/// Files waiting to become stable, ordered by when they will be.
#[derive(Debug)]
pub struct Tracker<K: Ord + Hash + Clone> {
    stability: Duration,
    waiting: HashMap<K, (Seen, Instant)>,
    /// Deadlines, so the next one is found without scanning every file.
    by_deadline: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Hash + Clone> Tracker<K> {
    pub fn new(stability: Duration) -> Self {
        Tracker {
            stability,
            waiting: HashMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }

    /// Records what a file looks like at `now`. A new file, or one whose size or mtime
    /// changed, (re)starts its wait; an unchanged one keeps its deadline.
    pub fn observe(&mut self, key: K, seen: Seen, now: Instant) {
        self.observe_with_deadline(key, seen, now + self.stability);
    }

    /// Like [`observe`](Self::observe) but the file is ready at `deadline` if unchanged,
    /// for files already known to be stable (a journaled queue entry, an old file in
    /// `once` mode).
    pub fn observe_with_deadline(&mut self, key: K, seen: Seen, deadline: Instant) {
        if let Some((old, old_deadline)) = self.waiting.get(&key) {
            if *old == seen {
                return;
            }
            self.by_deadline.remove(&(*old_deadline, key.clone()));
        }
        self.waiting.insert(key.clone(), (seen, deadline));
        self.by_deadline.insert((deadline, key));
    }

    /// Forgets a file (deleted, or moved away).
    pub fn remove(&mut self, key: &K) {
        if let Some((_, deadline)) = self.waiting.remove(key) {
            self.by_deadline.remove(&(deadline, key.clone()));
        }
    }

    /// Removes and returns the files whose wait is over at `now`, with what they looked
    /// like when last observed, at most `limit` of them (bounding one planner step).
    pub fn take_ready(&mut self, now: Instant, limit: usize) -> Vec<(K, Seen)> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((deadline, _)) = self.by_deadline.first() else {
                break;
            };
            if *deadline > now {
                break;
            }
            let Some((_, key)) = self.by_deadline.pop_first() else {
                break;
            };
            if let Some((seen, _)) = self.waiting.remove(&key) {
                out.push((key, seen));
            }
        }
        out
    }

    /// When the next file becomes ready, if any is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(60);

    fn seen(size: u64) -> Seen {
        Seen {
            size,
            mtime_ns: size as i64 * 1000,
        }
    }

    #[test]
    fn ready_only_after_a_quiet_stability_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        t.observe("a", seen(1), t0);
        assert!(
            t.take_ready(t0 + S - Duration::from_millis(1), 10)
                .is_empty()
        );
        assert_eq!(t.next_deadline(), Some(t0 + S));
        assert_eq!(t.take_ready(t0 + S, 10), vec![("a", seen(1))]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_change_restarts_the_wait_and_no_change_keeps_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        t.observe("a", seen(1), t0);
        t.observe("a", seen(1), t0 + Duration::from_secs(30));
        assert_eq!(
            t.next_deadline(),
            Some(t0 + S),
            "same state keeps the deadline"
        );
        t.observe("a", seen(2), t0 + Duration::from_secs(50));
        assert!(t.take_ready(t0 + S, 10).is_empty(), "grew: wait restarted");
        let ready = t.take_ready(t0 + Duration::from_secs(110), 10);
        assert_eq!(ready, vec![("a", seen(2))]);
    }

    #[test]
    fn removed_files_never_become_ready_and_limit_bounds_a_step() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        t.observe("a", seen(1), t0);
        t.observe("b", seen(1), t0);
        t.observe("c", seen(1), t0);
        t.remove(&"b");
        assert_eq!(t.take_ready(t0 + S, 1).len(), 1);
        assert_eq!(t.take_ready(t0 + S, 10).len(), 1);
        assert!(t.next_deadline().is_none());
    }

    #[test]
    fn known_stable_files_can_be_ready_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        t.observe_with_deadline("a", seen(1), t0);
        assert_eq!(t.take_ready(t0, 10).len(), 1);
    }
}
