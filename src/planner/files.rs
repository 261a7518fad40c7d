//! Every file the planner is responsible for, each in exactly one [`Phase`], and the
//! orders derived from the phases: when each settling file is due, which queued file goes
//! next (a file an open request asks for, then priority, then age), when each backed-off
//! file may go again, and the counts the status and the dispatch rules read.
//!
//! The derived indexes are private and change only in [`Files::set`] and
//! [`Files::remove`], which un-index a file's old phase and index its new one; after each
//! change the file's place in them is checked (`debug_assert!`), and [`Files::check`]
//! recomputes everything from the phases (the model tests run it after every step).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::file::{FileRef, Version};
use crate::slice::Slice;

/// Where a file is in its life, and what happens next.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Queued in the journal before a restart, not yet seen by the start-up scan: ready
    /// at once when seen unchanged; left over after the scan means deleted meanwhile.
    Recovered { version: Version },
    /// Seen; looked at again at `due`: ready if its version has not changed by then. It
    /// has been waiting (changing) since `since`; `gap_ms` is the longest pause between
    /// its changes while it grew (zero for a file written once). `snapshot`: `due` is
    /// its source's `max_wait_seconds` from `since`, which comes before it would be
    /// quiet long enough, so what goes then is a snapshot. (Kept small: a planner holds
    /// up to 16,384 of these.)
    Settling {
        version: Version,
        due: Instant,
        since: Instant,
        gap_ms: u32,
        snapshot: bool,
    },
    /// Stable (or waited long enough, for a `snapshot`); the shell is stat-ing it once
    /// more.
    Confirming { version: Version, snapshot: bool },
    /// Confirmed; its `queued` record is being written.
    Journaling { version: Version, snapshot: bool },
    /// Waiting for an uploader: now (`retry_at` none) or after a failure's backoff.
    Queued {
        version: Version,
        attempts: u32,
        retry_at: Option<Instant>,
        snapshot: bool,
    },
    /// With an uploader; `changed`: the watcher saw a newer version meanwhile.
    Uploading {
        version: Version,
        attempts: u32,
        changed: bool,
        snapshot: bool,
    },
    /// `once` gave up on this version for the run; it stays queued in the journal.
    GivenUp { version: Version },
    /// Ready before the start-up scan ended, but with the inode of an uploaded file: it
    /// may be that file renamed while the daemon was down, which the end of the scan
    /// tells.
    Held { version: Version },
    /// Failed [`super::QUARANTINE_AFTER`] times for a reason of its own (journaled): set
    /// aside until it changes or the daemon restarts.
    Quarantined { version: Version, reason: Box<str> },
}

impl Phase {
    /// When a settling file must be looked at: stable, or due for a snapshot.
    pub fn settle_at(&self) -> Option<Instant> {
        match self {
            Phase::Settling { due, .. } => Some(*due),
            _ => None,
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Phase::Recovered { version }
            | Phase::Settling { version, .. }
            | Phase::Confirming { version, .. }
            | Phase::Journaling { version, .. }
            | Phase::Queued { version, .. }
            | Phase::Uploading { version, .. }
            | Phase::GivenUp { version }
            | Phase::Held { version }
            | Phase::Quarantined { version, .. } => *version,
        }
    }
}

/// A tracked file: its phase and its source's priority.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub phase: Phase,
    pub prio: i32,
}

/// Counts derived from the phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Settling, confirming or journaling: not yet in the queue.
    pub settling: usize,
    /// Of those, confirming or journaling: a stat and a journal append from the queue.
    pub entering: usize,
    /// Queued or uploading: the queue as the status shows it.
    pub queued: usize,
    pub queued_bytes: u64,
    /// Of the queue, files below the multipart threshold.
    pub queued_small: usize,
    pub uploading: usize,
    /// Of those uploading, files at or above the multipart threshold.
    pub uploading_large: usize,
    /// Recovered from the journal and not yet seen.
    pub recovered: usize,
    pub given_up: usize,
    pub held: usize,
    pub quarantined: usize,
}

/// Asked for by an open request first, then priority, then age.
type ReadyKey = (Reverse<bool>, Reverse<i32>, i64, FileRef);

/// The planner's files. See the module documentation.
#[derive(Debug)]
pub struct Files {
    map: HashMap<FileRef, Tracked>,
    /// Tracked files by inode (a rename noticed when the old name's `Gone` comes after
    /// the new name was seen).
    by_ino: HashMap<u64, FileRef>,
    settle_due: BTreeSet<(Instant, FileRef)>,
    ready: BTreeSet<ReadyKey>,
    retry_due: BTreeSet<(Instant, FileRef)>,
    counts: Counts,
    multipart_threshold: u64,
    /// The open requests' slices: a file one of them covers goes first.
    slices: Vec<Slice>,
}

impl Files {
    pub fn new(multipart_threshold: u64) -> Files {
        Files::with_capacity(multipart_threshold, 0)
    }

    /// Room for `n` files from the start: a planner that recovers 10,000 queued files
    /// makes its tables once instead of doubling them (old and new side by side) on the way.
    pub fn with_capacity(multipart_threshold: u64, n: usize) -> Files {
        Files {
            map: HashMap::with_capacity(n),
            by_ino: HashMap::new(),
            settle_due: BTreeSet::new(),
            ready: BTreeSet::new(),
            retry_due: BTreeSet::new(),
            counts: Counts::default(),
            multipart_threshold,
            slices: Vec::new(),
        }
    }

    /// Whether an open request asks for `file` at `version`.
    pub fn requested(&self, file: &FileRef, version: &Version) -> bool {
        self.slices
            .iter()
            .any(|s| s.covers(file.source(), version.mtime_ns))
    }

    /// The open requests' slices are now `slices`: the queue is ordered anew.
    pub fn set_slices(&mut self, slices: Vec<Slice>) {
        if slices == self.slices {
            return;
        }
        self.slices = slices;
        let ready = std::mem::take(&mut self.ready);
        for (_, prio, mtime, file) in ready {
            let version = self.map.get(&file).map(|t| t.phase.version());
            let asked = version.is_some_and(|v| self.requested(&file, &v));
            self.ready.insert((Reverse(asked), prio, mtime, file));
        }
    }

    pub fn slices(&self) -> &[Slice] {
        &self.slices
    }

    fn ready_key(&self, file: &FileRef, prio: i32, version: &Version) -> ReadyKey {
        (
            Reverse(self.requested(file, version)),
            Reverse(prio),
            version.mtime_ns,
            file.clone(),
        )
    }

    pub fn get(&self, file: &FileRef) -> Option<&Tracked> {
        self.map.get(file)
    }

    pub fn phase(&self, file: &FileRef) -> Option<&Phase> {
        self.map.get(file).map(|t| &t.phase)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FileRef, &Tracked)> {
        self.map.iter()
    }

    /// The tracked file with this inode, if any.
    pub fn by_ino(&self, ino: u64) -> Option<&FileRef> {
        self.by_ino.get(&ino)
    }

    /// Puts `file` in a new phase.
    pub fn set(&mut self, file: FileRef, tracked: Tracked) {
        if let Some(old) = self.map.remove(&file) {
            self.index(&file, &old, false);
        }
        self.index(&file, &tracked, true);
        let ino = tracked.phase.version().ino;
        if ino != 0 {
            self.by_ino.insert(ino, file.clone());
        }
        self.map.insert(file.clone(), tracked);
        debug_assert!(self.indexed_right(&file), "{file}: indexes disagree");
    }

    /// Changes only the phase, keeping the priority.
    pub fn set_phase(&mut self, file: &FileRef, phase: Phase) {
        if let Some(prio) = self.map.get(file).map(|t| t.prio) {
            self.set(file.clone(), Tracked { phase, prio });
        }
    }

    pub fn remove(&mut self, file: &FileRef) -> Option<Tracked> {
        let old = self.map.remove(file)?;
        self.index(file, &old, false);
        let ino = old.phase.version().ino;
        if self.by_ino.get(&ino) == Some(file) {
            self.by_ino.remove(&ino);
        }
        debug_assert!(self.indexed_right(file), "{file}: indexes disagree");
        Some(old)
    }

    /// Settling files whose wait is over at `now`, at most `limit` (one planner step
    /// stays short in a flood), earliest first.
    pub fn settled(&self, now: Instant, limit: usize) -> Vec<FileRef> {
        self.settle_due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(limit)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Backed-off files whose wait is over at `now`.
    pub fn retries_due(&self, now: Instant) -> Vec<FileRef> {
        self.retry_due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// The next file to send: highest priority, then oldest mtime; only a file below
    /// the multipart threshold when `large_allowed` is false.
    /// Of those, only one `may_go` allows (given whether an open request asks for it).
    pub fn next_ready(
        &self,
        large_allowed: bool,
        may_go: impl Fn(&FileRef, bool) -> bool,
    ) -> Option<FileRef> {
        self.ready
            .iter()
            .find(|k| {
                (large_allowed
                    || self
                        .map
                        .get(&k.3)
                        .is_some_and(|t| t.phase.version().size < self.multipart_threshold))
                    && may_go(&k.3, k.0.0)
            })
            .map(|k| k.3.clone())
    }

    /// Whether a file is on its way into the queue at `now`: settled and not yet
    /// looked at, or being confirmed or journaled.
    pub fn entering(&self, now: Instant) -> bool {
        self.counts.entering > 0 || self.settle_due.first().is_some_and(|(due, _)| *due <= now)
    }

    /// The earliest settle or retry deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let settle = self.settle_due.first().map(|(t, _)| *t);
        let retry = self.retry_due.first().map(|(t, _)| *t);
        settle.into_iter().chain(retry).min()
    }

    /// Adds (`on`) or removes a file's entries in the indexes and counts.
    fn index(&mut self, file: &FileRef, t: &Tracked, on: bool) {
        let small = t.phase.version().size < self.multipart_threshold;
        let c = &mut self.counts;
        match &t.phase {
            Phase::Recovered { .. } => bump(&mut c.recovered, on),
            Phase::GivenUp { .. } => bump(&mut c.given_up, on),
            Phase::Held { .. } => bump(&mut c.held, on),
            Phase::Quarantined { .. } => bump(&mut c.quarantined, on),
            Phase::Settling { .. } => {
                bump(&mut c.settling, on);
                if let Some(at) = t.phase.settle_at() {
                    toggle(&mut self.settle_due, (at, file.clone()), on);
                }
            }
            Phase::Confirming { .. } | Phase::Journaling { .. } => {
                bump(&mut c.settling, on);
                bump(&mut c.entering, on);
            }
            Phase::Queued {
                version, retry_at, ..
            } => {
                add_to_queue(c, version.size, small, on);
                match retry_at {
                    Some(at) => toggle(&mut self.retry_due, (*at, file.clone()), on),
                    None => {
                        let key = self.ready_key(file, t.prio, version);
                        toggle(&mut self.ready, key, on);
                    }
                }
            }
            Phase::Uploading { version, .. } => {
                add_to_queue(c, version.size, small, on);
                bump(&mut c.uploading, on);
                if !small {
                    bump(&mut c.uploading_large, on);
                }
            }
        }
    }

    /// Whether `file` is in the indexes its phase calls for (`toggle` already asserts
    /// that nothing is added twice or removed when absent; [`check`](Self::check) is the
    /// full comparison).
    fn indexed_right(&self, file: &FileRef) -> bool {
        match self.map.get(file) {
            Some(Tracked {
                phase: p @ Phase::Settling { .. },
                ..
            }) => p
                .settle_at()
                .is_some_and(|at| self.settle_due.contains(&(at, file.clone()))),
            Some(Tracked {
                phase:
                    Phase::Queued {
                        version,
                        retry_at: None,
                        ..
                    },
                prio,
            }) => self.ready.contains(&self.ready_key(file, *prio, version)),
            Some(Tracked {
                phase: Phase::Queued {
                    retry_at: Some(at), ..
                },
                ..
            }) => self.retry_due.contains(&(*at, file.clone())),
            _ => true,
        }
    }

    /// Recomputes every index and count from the phases and compares: the whole
    /// invariant, for tests.
    pub fn check(&self) -> Result<(), String> {
        let mut fresh = Files::new(self.multipart_threshold);
        fresh.slices = self.slices.clone();
        for (f, t) in &self.map {
            fresh.index(f, t, true);
        }
        if fresh.counts != self.counts {
            return Err(format!("counts {:?} != {:?}", self.counts, fresh.counts));
        }
        if fresh.settle_due != self.settle_due {
            return Err("settle deadlines disagree with the phases".into());
        }
        if fresh.ready != self.ready {
            return Err("the ready order disagrees with the phases".into());
        }
        if fresh.retry_due != self.retry_due {
            return Err("retry deadlines disagree with the phases".into());
        }
        Ok(())
    }
}

fn add_to_queue(c: &mut Counts, size: u64, small: bool, on: bool) {
    bump(&mut c.queued, on);
    if on {
        c.queued_bytes += size;
    } else {
        debug_assert!(c.queued_bytes >= size, "queued bytes would go negative");
        c.queued_bytes = c.queued_bytes.saturating_sub(size);
    }
    if small {
        bump(&mut c.queued_small, on);
    }
}

fn bump(n: &mut usize, on: bool) {
    if on {
        *n += 1;
    } else {
        debug_assert!(*n > 0, "a count would go negative");
        *n = n.saturating_sub(1);
    }
}

fn toggle<K: Ord>(set: &mut BTreeSet<K>, key: K, on: bool) {
    let changed = if on {
        set.insert(key)
    } else {
        set.remove(&key)
    };
    debug_assert!(
        changed,
        "an index entry was {}",
        if on { "there already" } else { "missing" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v(size: u64, mtime_ns: i64) -> Version {
        Version {
            size,
            mtime_ns,
            ino: 1,
        }
    }

    fn f(rel: &str) -> FileRef {
        FileRef::new("s", rel)
    }

    fn queued(version: Version) -> Phase {
        Phase::Queued {
            version,
            attempts: 0,
            retry_at: None,
            snapshot: false,
        }
    }

    #[test]
    fn settling_files_come_out_by_deadline_and_limit() {
        let t0 = Instant::now();
        let mut files = Files::new(100);
        for (i, name) in ["c", "a", "b"].iter().enumerate() {
            let due = t0 + Duration::from_secs(i as u64);
            files.set(
                f(name),
                Tracked {
                    phase: Phase::Settling {
                        version: v(1, 1),
                        due,
                        since: t0,
                        gap_ms: 0,
                        snapshot: false,
                    },
                    prio: 0,
                },
            );
        }
        assert_eq!(files.settled(t0, 10), vec![f("c")]);
        assert_eq!(
            files.settled(t0 + Duration::from_secs(5), 2),
            vec![f("c"), f("a")]
        );
        assert_eq!(files.next_deadline(), Some(t0));
        assert_eq!(files.counts().settling, 3);
        files.check().expect("consistent");
    }

    #[test]
    fn the_queue_orders_by_priority_then_age_and_keeps_large_files_back_when_asked() {
        let mut files = Files::new(100);
        files.set(
            f("old-low"),
            Tracked {
                phase: queued(v(1, 1)),
                prio: 0,
            },
        );
        files.set(
            f("new-high"),
            Tracked {
                phase: queued(v(1, 9)),
                prio: 5,
            },
        );
        files.set(
            f("old-high-large"),
            Tracked {
                phase: queued(v(500, 2)),
                prio: 5,
            },
        );
        assert_eq!(
            files.next_ready(true, |_, _| true),
            Some(f("old-high-large"))
        );
        assert_eq!(files.next_ready(false, |_, _| true), Some(f("new-high")));
        let c = files.counts();
        assert_eq!((c.queued, c.queued_bytes, c.queued_small), (3, 502, 2));
        files.set_phase(
            &f("old-high-large"),
            Phase::Uploading {
                version: v(500, 2),
                attempts: 0,
                changed: false,
                snapshot: false,
            },
        );
        let c = files.counts();
        assert_eq!((c.queued, c.uploading, c.uploading_large), (3, 1, 1));
        files.remove(&f("old-high-large"));
        assert_eq!(files.counts().queued_bytes, 2);
        files.check().expect("consistent");
    }

    #[test]
    fn backed_off_files_are_not_ready_until_their_time() {
        let t0 = Instant::now();
        let mut files = Files::new(100);
        let at = t0 + Duration::from_secs(3);
        files.set(
            f("a"),
            Tracked {
                phase: Phase::Queued {
                    version: v(1, 1),
                    attempts: 1,
                    retry_at: Some(at),
                    snapshot: false,
                },
                prio: 0,
            },
        );
        assert_eq!(files.next_ready(true, |_, _| true), None);
        assert!(files.retries_due(t0).is_empty());
        assert_eq!(files.retries_due(at), vec![f("a")]);
        assert_eq!(files.next_deadline(), Some(at));
        files.check().expect("consistent");
    }

    #[test]
    fn a_phase_stays_within_a_cache_line() {
        // 16,384 tracked files: each byte of a phase is 16 KiB of the daemon's memory.
        assert!(
            std::mem::size_of::<Phase>() <= 64,
            "{}",
            std::mem::size_of::<Phase>()
        );
    }

    #[test]
    fn a_settling_file_is_due_at_its_snapshot_time_if_that_comes_first() {
        let t0 = Instant::now();
        let mut files = Files::new(100);
        let phase = Phase::Settling {
            version: v(1, 1),
            due: t0 + Duration::from_secs(30),
            since: t0,
            gap_ms: 7000,
            snapshot: true,
        };
        files.set(f("a"), Tracked { phase, prio: 0 });
        assert_eq!(files.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(
            files.settled(t0 + Duration::from_secs(30), 10),
            vec![f("a")]
        );
        files.check().expect("consistent");
    }

    #[test]
    fn check_finds_an_index_that_disagrees() {
        let mut files = Files::new(100);
        files.set(
            f("a"),
            Tracked {
                phase: queued(v(1, 1)),
                prio: 0,
            },
        );
        files.ready.clear();
        assert!(files.check().is_err());
    }
}
