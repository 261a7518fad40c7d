//! The planner: what happens to every file, decided as a pure function of
//! `(state, input, now) → effects`. It does no IO: it is told what the watcher saw, what
//! a stat found, whether a journal append worked and how each upload ended, and it
//! answers with [`Effect`]s (stat this, journal that, send this job, open the gate) that
//! the daemon's thread carries out, feeding the answers back as [`Input`]s. It reads the
//! journal's replayed state, passed in, and never writes it.
//!
//! Each file is in one [`Phase`] in [`Files`]; S3's treatment of us is one [`Health`].
//! What a run did is counted once, in [`Totals`]: the status, the metrics and the last
//! log line are all derived from it.

mod failures;
mod files;
mod health;
#[cfg(test)]
mod model_tests;
mod outage;
mod outcome;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

pub use failures::{QUARANTINE_AFTER, UNREACHABLE_PROBE_MAX};
pub use files::{Counts, Files, Phase, Tracked};
pub use health::{Allowance, Health, Trouble};
pub use outcome::{Failure, FailureKind, Hold, Outcome};

use crate::file::{FileRef, Version, split};
use crate::journal::record::Record;
use crate::journal::state::State;
use crate::link_rules::LinkRules;
use crate::retry::Jitter;
use crate::schedule::{Schedule, allowed};
use crate::slice::Slice;

/// Files turned ready in one step, so watch events keep flowing in a flood.
pub const READY_BATCH: usize = 512;
/// Files the planner holds (settling, queued, uploading) before it stops taking watch
/// events: the watcher then waits, and the rest of a flood stays on disk rather than in
/// memory. Dispatch starts without waiting for the start-up scan once this is reached.
pub const MAX_TRACKED_FILES: usize = 16_384;
/// Uploaded files lately seen going away, remembered by inode so that one reappearing
/// under a new name (a rotation) is known for what it is; the oldest are dropped first.
pub const MAX_MOVED_AWAY: usize = 16_384;
/// A file changed again within this many `stability_seconds` of its previous change is
/// taken as still being written (see [`Planner::settling`]).
pub const GROWING_FACTOR: u32 = 10;
/// In `once` mode a file that failed this many times (transiently) is given up; it stays
/// queued in the journal for the next run.
pub const ONCE_MAX_ATTEMPTS: u32 = 4;
/// While uploads are in flight the planner wakes this often (status, gauges).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// A planner with nothing scheduled still wakes this often to log progress.
pub const IDLE_WAKE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Once,
}

/// The three clocks the planner reads, read once per step by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For deadlines.
    pub mono: Instant,
    /// The wall clock, for file ages (mtimes are wall-clock times).
    pub wall_ns: i64,
    /// Unix seconds as the schedule sees them (the daemon reads them with
    /// `clock::schedule_now`).
    pub schedule: i64,
}

impl Now {
    fn unix(&self) -> i64 {
        self.wall_ns.div_euclid(1_000_000_000)
    }
}

/// What the planner is told.
#[derive(Debug)]
pub enum Input {
    /// The watcher saw a wanted regular file at this version.
    Seen { file: FileRef, version: Version },
    /// The watcher saw a wanted regular file at this version, with a content that is
    /// not the one it had before and more (rewritten in place): never taken for growth.
    Rewritten { file: FileRef, version: Version },
    /// The watcher saw the file deleted or moved away.
    Gone { file: FileRef },
    /// The watcher saw a directory (`source/rel`) moved away: each file known under it
    /// is [`Input::Gone`].
    DirGone { dir: FileRef },
    /// The start-up scan has reported every file present.
    ScanDone,
    /// The answer to [`Effect::Confirm`]: each file's version now (`None`: gone), or why
    /// it could not be read.
    Confirmed(Vec<(FileRef, Result<Option<Version>, String>)>),
    /// The answer to [`Effect::Journal`]: whether the records are durable.
    Journaled {
        files: Vec<FileRef>,
        result: Result<(), String>,
    },
    /// An uploader's report.
    Finished(Report),
    /// The open requests' slices (all of them, each time the set changes): the files
    /// they cover go first, inside or outside the upload window.
    Requests(Vec<Slice>),
    /// The link uploads go over now, the local day, and whether its budget is spent
    /// (each time one of them changes).
    Link(LinkNow),
}

/// The link uploads go over now (SPEC.md, "Links, byte budgets and on-demand requests").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNow {
    pub name: String,
    /// The local day (days since 1970-01-01 at `schedule.utc_offset`).
    pub day: i64,
    /// Its daily budget is spent: only requested files go over it.
    pub spent: bool,
}

/// A stable file to upload, as the planner queued it.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: FileRef,
    pub path: PathBuf,
    pub version: Version,
    /// A snapshot of a file still being appended to: its first `version.size` bytes
    /// are uploaded, and the file may grow meanwhile (but not be rewritten).
    pub snapshot: bool,
    /// The name this file had when it was queued before a restart (renamed while the
    /// daemon was down): its upload may have reached S3 under that name's key before
    /// the crash recorded it.
    pub origin: Option<FileRef>,
    /// Bytes of this file stored or sent so far, for `status`.
    pub progress: Arc<AtomicU64>,
    /// An open request asks for it: it goes whether the upload window is open or not.
    pub requested: bool,
}

impl Job {
    /// Whether the file, now at `now`, is still the job's version: the same, or for a
    /// snapshot the same file grown by appending.
    pub fn is_current(&self, now: &Version) -> bool {
        if self.snapshot {
            self.version.grown_into(now)
        } else {
            *now == self.version
        }
    }
}

/// How one job ended.
#[derive(Debug)]
pub struct Report {
    pub job: Job,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// What the planner asks for.
#[derive(Debug)]
pub enum Effect {
    /// Stat these files once more; answer with [`Input::Confirmed`].
    Confirm(Vec<(FileRef, Version)>),
    /// Append and fsync these records; answer with [`Input::Journaled`] for `files`.
    Journal {
        records: Vec<Record>,
        files: Vec<FileRef>,
    },
    /// Stat the file and report it as [`Input::Seen`] or [`Input::Gone`].
    Look(FileRef),
    /// Hand the job to a free uploader.
    Dispatch(Job),
    /// Set the uploaders' gate: the window's verdict and bandwidth cap.
    Gate { open: bool, cap: Option<u64> },
    /// Whether parts must leave one upload slot to small files.
    KeepOneForSmall(bool),
    /// An upload finished: deferred deletions may be due.
    WakeDisk,
    /// Read the credentials again before the next request.
    ReloadCredentials,
}

/// What a run did. Counted once here; status, metrics and the summary read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Bytes on the wire: after compression, and not counting parts stored before.
    pub bytes_sent: u64,
    pub files_already_in_s3: u64,
    pub failed_attempts: u64,
    /// Files given up this run (`once`).
    pub given_up: u64,
    /// Files quarantined this run.
    pub quarantined: u64,
}

/// How far a request has come (see [`Planner::slice_progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SliceProgress {
    pub pending: usize,
    pub set_aside: usize,
    pub uploaded: usize,
    /// Whether the start-up scan is over (before, files on disk may not be known yet).
    pub scan_done: bool,
}

impl SliceProgress {
    pub fn done(&self) -> bool {
        self.scan_done && self.pending == 0
    }
}

/// A source as the planner needs it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub root: PathBuf,
    pub prio: i32,
    /// `max_wait_seconds`: snapshots of files that never stop changing.
    pub max_wait: Option<Duration>,
}

/// The planner's settings: the daemon takes them from the config (see
/// `daemon::planner_settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub stability: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub concurrency: usize,
    pub multipart_threshold: u64,
    pub sources: HashMap<String, SourceInfo>,
    pub schedule: Option<Schedule>,
    /// [`MAX_TRACKED_FILES`]; smaller in the model tests, to reach the flood path.
    pub max_tracked_files: usize,
    /// Which source may use which link (empty: no links configured).
    pub link_rules: LinkRules,
}

/// An upload that ended: of which version, after how many failed attempts.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    version: Version,
    attempts: u32,
    snapshot: bool,
}

/// What happens to a file after its upload ended.
enum Next {
    /// In S3, or gone: forget it.
    Forget,
    /// Back in the queue, ready now.
    Requeue,
    /// Back in the queue after `at`; `counts` as a failed attempt.
    Retry { at: Instant, counts: bool },
    /// Changed: look at it again (it settles anew).
    LookAgain,
    /// `once`: given up for this run.
    GiveUp,
    /// Failing for a reason of its own that retrying does not fix: set aside.
    Quarantine { reason: String, at: i64 },
}

/// Uploaded files seen going away, by inode (see [`MAX_MOVED_AWAY`]).
#[derive(Debug, Default)]
struct MovedAway {
    by_ino: HashMap<u64, FileRef>,
    order: std::collections::VecDeque<u64>,
}

impl MovedAway {
    fn insert(&mut self, ino: u64, file: FileRef) {
        if self.by_ino.insert(ino, file).is_none() {
            self.order.push_back(ino);
        }
        while self.order.len() > MAX_MOVED_AWAY {
            if let Some(old) = self.order.pop_front() {
                self.by_ino.remove(&old);
            }
        }
    }
}

pub struct Planner {
    cfg: Settings,
    files: Files,
    moved_away: MovedAway,
    /// The registry's and the queue's inodes, gathered when dispatch starts before the
    /// scan ends.
    registry_inodes: Option<std::collections::HashSet<u64>>,
    /// Files renamed while the daemon was down from a name queued before the restart
    /// (see [`Job::origin`]).
    origins: HashMap<FileRef, FileRef>,
    /// The inodes of the files queued before the restart, and their names then (more
    /// than one when a file was queued under two names).
    recovered_inodes: ByInode,
    health: Health,
    jitter: Jitter,
    scan_done: bool,
    /// The start-up backlog has begun to go out (see [`Planner::dispatch`]).
    backlog_ordered: bool,
    /// The gate last set: open, cap.
    gate: Option<(bool, Option<u64>)>,
    small_reserved: Option<bool>,
    /// Bytes done of each uploading file, shared with its uploader.
    progress: HashMap<FileRef, Arc<AtomicU64>>,
    totals: Totals,
    last_error: Option<(i64, String)>,
    started: Instant,
    /// The wall clock (Unix seconds) at the first step: uploads since are this run's.
    started_unix: Option<i64>,
    /// The daemon-wide trouble in force, for its log lines and the status.
    outage: Option<outage::Outage>,
    /// Per-file failure lines left this minute.
    quota: outage::Quota,
    last_success: Option<Instant>,
    gave_up_logged: bool,
    /// The link now, as last told (`None`: not told, or no links configured).
    link: Option<LinkNow>,
}

impl Planner {
    /// A planner that knows what the journal had queued or in progress: those files are
    /// ready at once when the scan sees them unchanged.
    pub fn new(cfg: Settings, jitter: Jitter, journal: &State, now: Instant) -> Planner {
        let n = journal.pending.len() + journal.multipart.len();
        let mut files = Files::with_capacity(cfg.multipart_threshold, n);
        let mut recovered: Vec<(&FileRef, Version)> = Vec::with_capacity(n);
        recovered.extend(journal.pending.iter().map(|(f, p)| (f, p.version)));
        recovered.extend(journal.multipart.iter().map(|(f, m)| (f, m.version)));
        let mut recovered_inodes = Vec::with_capacity(n);
        for (file, version) in recovered {
            if let Some(src) = cfg.sources.get(file.source()) {
                let phase = Phase::Recovered { version };
                files.set(
                    file.clone(),
                    Tracked {
                        phase,
                        prio: src.prio,
                    },
                );
                if version.ino != 0 {
                    recovered_inodes.push((version.ino, file.clone()));
                }
            }
        }
        let recovered_inodes = ByInode::new(recovered_inodes);
        // Names their contents may have reached S3 under, as journaled with them.
        let origins = journal
            .pending
            .iter()
            .filter_map(|(f, p)| {
                let origin = p.origin()?;
                Some((f.clone(), FileRef::new(f.source(), origin)))
            })
            .collect();
        Planner {
            cfg,
            files,
            moved_away: MovedAway::default(),
            registry_inodes: None,
            origins,
            recovered_inodes,
            health: Health::Up,
            jitter,
            scan_done: false,
            backlog_ordered: false,
            gate: None,
            small_reserved: None,
            progress: HashMap::new(),
            totals: Totals::default(),
            last_error: None,
            started: now,
            started_unix: None,
            outage: None,
            quota: outage::Quota::default(),
            last_success: None,
            gave_up_logged: false,
            link: None,
        }
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether to take more watch events now (see [`MAX_TRACKED_FILES`]).
    pub fn wants_events(&self) -> bool {
        self.active() < self.cfg.max_tracked_files
    }

    /// Files that cost memory and work: all but recovered, given-up and held ones.
    fn active(&self) -> usize {
        let c = self.files.counts();
        self.files.len() - c.recovered - c.given_up - c.held - c.quarantined
    }

    /// Whether the start-up scan is over, or the planner is too full to wait for it.
    fn may_dispatch(&self) -> bool {
        self.scan_done || !self.wants_events()
    }

    /// Takes one input.
    pub fn handle(&mut self, input: Input, now: Now, journal: &State, out: &mut Vec<Effect>) {
        self.started_unix.get_or_insert(now.unix());
        match input {
            Input::Seen { file, version } => self.seen(file, version, false, now, journal, out),
            Input::Rewritten { file, version } => self.seen(file, version, true, now, journal, out),
            Input::Gone { file } => self.gone(&file, journal, out),
            Input::DirGone { dir } => self.dir_gone(&dir, journal, out),
            Input::ScanDone => self.scan_done(journal, out),
            Input::Confirmed(answers) => self.confirmed(answers, now, journal, out),
            Input::Journaled { files, result } => self.journaled(files, result, now),
            Input::Finished(report) => self.finished(report, now, journal, out),
            Input::Requests(slices) => {
                self.files.set_slices(slices);
                self.dispatch(now, journal, out);
            }
            Input::Link(link) => {
                self.link = Some(link);
                self.dispatch(now, journal, out);
            }
        }
    }

    /// What time alone moves on: settled files, due retries, the window, dispatch, a
    /// trouble's summary line.
    pub fn tick(&mut self, now: Now, journal: &State, out: &mut Vec<Effect>) {
        self.outage_summary(now.mono);
        // Until the start-up scan ends nothing is dispatched, so what has settled waits
        // for it too: then it is confirmed and journaled in batches, one fsync each,
        // instead of one a file as the scan finds them.
        let stable = if self.may_dispatch() {
            self.files.settled(now.mono, READY_BATCH)
        } else {
            Vec::new()
        };
        if !stable.is_empty() {
            let mut ask = Vec::with_capacity(stable.len());
            for file in stable {
                if let Some(Phase::Settling {
                    version, snapshot, ..
                }) = self.files.phase(&file).cloned()
                {
                    // Due by its max_wait_seconds while still changing: a snapshot.
                    if snapshot {
                        log::info!(
                            "{file}: still changing after max_wait_seconds; uploading a snapshot"
                        );
                    }
                    self.files
                        .set_phase(&file, Phase::Confirming { version, snapshot });
                    ask.push((file, version));
                }
            }
            out.push(Effect::Confirm(ask));
        }
        for file in self.files.retries_due(now.mono) {
            if let Some(Phase::Queued {
                version,
                attempts,
                snapshot,
                ..
            }) = self.files.phase(&file).cloned()
            {
                let ready = Phase::Queued {
                    version,
                    attempts,
                    retry_at: None,
                    snapshot,
                };
                self.files.set_phase(&file, ready);
            }
        }
        self.dispatch(now, journal, out);
        let c = self.files.counts();
        let small = c.queued_small > 0 || c.settling > 0;
        if self.small_reserved != Some(small) {
            self.small_reserved = Some(small);
            out.push(Effect::KeepOneForSmall(small));
        }
    }

    fn seen(
        &mut self,
        file: FileRef,
        version: Version,
        rewritten: bool,
        now: Now,
        journal: &State,
        out: &mut Vec<Effect>,
    ) {
        let Some(src) = self.cfg.sources.get(file.source()) else {
            return;
        };
        let prio = src.prio;
        let recovered = match self.files.phase(&file) {
            Some(Phase::Uploading { version: v, .. }) if *v == version => return,
            Some(Phase::Uploading { .. }) => {
                self.mark_changed(&file);
                return;
            }
            // Already on its way as it is (a settling one keeps its deadline).
            Some(
                Phase::Queued { version: v, .. }
                | Phase::GivenUp { version: v }
                | Phase::Quarantined { version: v, .. }
                | Phase::Settling { version: v, .. }
                | Phase::Confirming { version: v, .. }
                | Phase::Journaling { version: v, .. },
            ) if *v == version => return,
            Some(Phase::Recovered { version: v }) => v.matches(&version),
            _ => false,
        };
        if journal.is_uploaded(&file, &version) {
            self.forget(&file, journal, out);
            return;
        }
        if let Some(from) = self.renamed_from(&file, &version, journal) {
            self.moved_away.by_ino.remove(&version.ino);
            log::info!(
                "{file}: renamed from {}; already in S3, not sent again",
                from.rel()
            );
            out.push(renamed(&from, &file, version.ino));
            self.forget(&file, journal, out);
            return;
        }
        // The same file (inode, size, mtime) tracked under another name: renamed while
        // queued or being sent; its upload may have reached S3 under that name.
        if let Some(other) = self.files.by_ino(version.ino).filter(|o| **o != file)
            && self
                .files
                .phase(other)
                .is_some_and(|p| p.version() == version)
        {
            self.origins.insert(file.clone(), other.clone());
        }
        // `once` trusts an old mtime at a file's first sight only: the wall clock may be
        // ahead of the mtimes (another host's files, a clock jump). Once seen changing
        // (or sent) in this run, a file goes when the daemon has seen it unchanged.
        let first_sight = self.files.phase(&file).is_none()
            && journal
                .uploaded(&file)
                .is_none_or(|u| Some(u.at()) < self.started_unix);
        let old_enough = self.cfg.mode == Mode::Once
            && first_sight
            && now.wall_ns.saturating_sub(version.mtime_ns) >= self.cfg.stability.as_nanos() as i64;
        let ready_now = recovered || old_enough;
        let settling = matches!(self.files.phase(&file), Some(Phase::Settling { .. }));
        let phase = self.settling(&file, version, now, journal, ready_now, rewritten);
        // A wait that counts towards max_wait_seconds began: journaled, so that a restart
        // counts from now too (its own start would put a file off forever under restarts).
        if !settling
            && !ready_now
            && self.max_wait(&file).is_some()
            && journal.waiting_since(&file, version.ino).is_none()
        {
            out.push(Effect::Journal {
                records: vec![Record::Waiting {
                    file: file.clone(),
                    ino: version.ino,
                    since: now.unix(),
                }],
                files: Vec::new(),
            });
        }
        self.files.set(file, Tracked { phase, prio });
    }

    /// A file seen at `version` waits to be unchanged: for `stability_seconds`, or, if it
    /// keeps growing, for twice the longest pause between its changes (so a log appended
    /// every few seconds is not sent again after each append), at most
    /// [`GROWING_FACTOR`] × `stability_seconds`. With `max_wait_seconds` on its source, a
    /// snapshot goes once it has been changing that long.
    fn settling(
        &self,
        file: &FileRef,
        version: Version,
        now: Now,
        journal: &State,
        ready_now: bool,
        rewritten: bool,
    ) -> Phase {
        let (since, mut gap, prev) = match self.files.phase(file) {
            Some(Phase::Settling {
                version: prev,
                since,
                gap_ms,
                ..
            }) => (
                *since,
                Duration::from_millis(u64::from(*gap_ms)),
                Some(*prev),
            ),
            // Changed again after its last upload (or snapshot): the pause counts.
            _ => (
                self.waiting_since(file, &version, now, journal),
                Duration::ZERO,
                journal.uploaded(file).map(|u| u.version),
            ),
        };
        let limit = self.cfg.stability * GROWING_FACTOR;
        match prev {
            Some(prev) if !rewritten && prev.grown_into(&version) => {
                let step = Duration::from_nanos(
                    version.mtime_ns.saturating_sub(prev.mtime_ns).max(0) as u64,
                );
                if step <= limit {
                    gap = gap.max(step);
                }
            }
            // A new content (rewritten in place, truncated, replaced) waits its own
            // quiet time: no pause carried over from the one before.
            Some(_) => {
                if rewritten {
                    log::debug!("{file}: rewritten in place; a new version");
                }
                gap = Duration::ZERO;
            }
            None => {}
        }
        let quiet = self.cfg.stability.max((gap * 2).min(limit));
        let due = if ready_now {
            now.mono
        } else {
            now.mono + quiet
        };
        let (due, snapshot) = self.snapshot_first(file, since, due);
        Phase::Settling {
            version,
            due,
            since,
            gap_ms: u32::try_from(gap.as_millis()).unwrap_or(u32::MAX),
            snapshot,
        }
    }

    /// When a file changing since `since` is next looked at, given it would be quiet
    /// enough at `due`: its source's `max_wait_seconds` from `since` if that comes
    /// first (then it goes as a snapshot).
    fn snapshot_first(&self, file: &FileRef, since: Instant, due: Instant) -> (Instant, bool) {
        match self.max_wait_at(file, since) {
            Some(at) if at < due => (at, true),
            _ => (due, false),
        }
    }

    fn max_wait_at(&self, file: &FileRef, since: Instant) -> Option<Instant> {
        self.max_wait(file).map(|w| since + w)
    }

    fn max_wait(&self, file: &FileRef) -> Option<Duration> {
        self.cfg.sources.get(file.source()).and_then(|s| s.max_wait)
    }

    /// When a file not settling now began to wait: now, unless its source has
    /// `max_wait_seconds` and the journal says it began earlier (a run before a restart,
    /// or before a closer look saw it change). Only `since + max_wait` is ever asked, so
    /// the time is counted back at most that far.
    fn waiting_since(
        &self,
        file: &FileRef,
        version: &Version,
        now: Now,
        journal: &State,
    ) -> Instant {
        let (Some(max_wait), Some(since)) = (
            self.max_wait(file),
            journal.waiting_since(file, version.ino),
        ) else {
            return now.mono;
        };
        let waited = u64::try_from(now.unix().saturating_sub(since)).unwrap_or(0);
        let waited = Duration::from_secs(waited).min(max_wait);
        now.mono.checked_sub(waited).unwrap_or(now.mono)
    }

    fn mark_changed(&mut self, file: &FileRef) {
        if let Some(Phase::Uploading {
            version,
            attempts,
            snapshot,
            ..
        }) = self.files.phase(file).cloned()
        {
            let phase = Phase::Uploading {
                version,
                attempts,
                changed: true,
                snapshot,
            };
            self.files.set_phase(file, phase);
        }
    }

    /// Stops tracking a file; a queued record left in the journal is dropped.
    fn forget(&mut self, file: &FileRef, journal: &State, out: &mut Vec<Effect>) {
        self.files.remove(file);
        self.origins.remove(file);
        if journal.pending.contains_key(file) && !journal.multipart.contains_key(file) {
            out.push(dropped(file, "gone"));
        }
    }

    /// The uploaded file that `file` at `version` was before a rename, if any: one seen
    /// going away, in the same source, with the same inode, size and mtime.
    fn renamed_from(&self, file: &FileRef, version: &Version, journal: &State) -> Option<FileRef> {
        if version.ino == 0 {
            return None;
        }
        let from = self
            .moved_away
            .by_ino
            .get(&version.ino)
            .filter(|from| {
                journal
                    .uploaded(from)
                    .is_some_and(|u| u.version == *version)
            })
            .cloned()
            .or_else(|| journal.displaced(version))?;
        (from != *file && from.source() == file.source()).then_some(from)
    }

    fn gone(&mut self, file: &FileRef, journal: &State, out: &mut Vec<Effect>) {
        if let Some(u) = journal.uploaded(file).filter(|u| u.version.ino != 0) {
            let ino = u.version.ino;
            self.moved_away.insert(ino, file.clone());
            // Seen already under its new name (events come late in a flood)?
            let new_name = self
                .files
                .by_ino(ino)
                .filter(|to| *to != file && to.source() == file.source())
                .cloned();
            if let Some(to) = new_name {
                let version = self.files.phase(&to).map(Phase::version);
                let waiting = !matches!(self.files.phase(&to), Some(Phase::Uploading { .. }));
                if waiting && version.is_some_and(|v| v == u.version) {
                    self.moved_away.by_ino.remove(&ino);
                    log::info!(
                        "{to}: renamed from {}; already in S3, not sent again",
                        file.rel()
                    );
                    out.push(renamed(file, &to, ino));
                    self.forget(&to, journal, out);
                }
            }
        }
        // A queued or uploading file is left to its uploader, which also aborts a
        // multipart upload and drops it from the journal; a settling one just goes.
        if let Some(Phase::Settling { .. } | Phase::Confirming { .. }) = self.files.phase(file) {
            self.forget(file, journal, out);
        }
    }

    /// A directory moved away: every uploaded or tracked file under it has gone from
    /// there, so that each one seen again under the directory's new name is a rename.
    fn dir_gone(&mut self, dir: &FileRef, journal: &State, out: &mut Vec<Effect>) {
        let prefix = format!("{}/", dir.as_str());
        let mut under: Vec<FileRef> = journal
            .registry()
            .map(|(path, _)| path)
            .chain(self.files.iter().map(|(f, _)| f.as_str()))
            .filter(|path| path.starts_with(&prefix))
            .map(|path| {
                let (source, rel) = split(path);
                FileRef::new(source, rel)
            })
            .collect();
        under.sort();
        under.dedup();
        for file in under {
            self.gone(&file, journal, out);
        }
    }

    fn scan_done(&mut self, journal: &State, out: &mut Vec<Effect>) {
        self.scan_done = true;
        self.renames_while_down(journal, out);
        let c = self.files.counts();
        log::info!(
            "start-up scan done in {:.2}s: {} files settling, {} queued",
            self.started.elapsed().as_secs_f64(),
            c.settling,
            c.queued
        );
        // Queued in the journal but not found by the scan: deleted while we were down.
        // Dispatch them anyway so the uploader aborts any multipart upload and the
        // journal drops them.
        let left: Vec<(FileRef, Version)> = self
            .files
            .iter()
            .filter_map(|(f, t)| match t.phase {
                Phase::Recovered { version } | Phase::Held { version } => {
                    Some((f.clone(), version))
                }
                _ => None,
            })
            .collect();
        for (file, version) in left {
            self.files.set_phase(&file, queued(version, 0, false));
        }
        self.registry_inodes = None;
        retry_quarantined(journal, out);
    }

    /// At the end of the start-up scan: files renamed while the daemon was down. The
    /// registry entries the scan did not see are matched by inode against the files it
    /// found that the registry does not know; the renames are journaled so that no entry
    /// is overwritten before it has moved on (a rotation moves `.1` to `.2` before `.0`
    /// to `.1`).
    fn renames_while_down(&mut self, journal: &State, out: &mut Vec<Effect>) {
        // In path order, so that what the bound drops does not depend on hashing.
        let mut unseen: Vec<(FileRef, u64)> = journal
            .unseen()
            .filter(|(_, u)| u.version.ino != 0)
            .map(|(f, u)| (f, u.version.ino))
            .collect();
        unseen.sort();
        for (file, ino) in unseen {
            self.moved_away.insert(ino, file);
        }
        let mut renames = Vec::new();
        for (file, t) in self.files.iter() {
            let v = t.phase.version();
            // (A file given up this run is renamed all the same: the next run must know.)
            let waiting = !matches!(t.phase, Phase::Uploading { .. });
            if waiting
                && !journal.is_uploaded(file, &v)
                && let Some(from) = self.renamed_from(file, &v, journal)
            {
                renames.push((from, file.clone(), v.ino));
            }
        }
        self.queued_renames(journal, out);
        renames.sort();
        let renames = dependency_order(renames);
        if renames.is_empty() {
            return;
        }
        log::info!(
            "{} files were renamed while the daemon was down; not sent again",
            renames.len()
        );
        let mut records = Vec::with_capacity(renames.len());
        for (from, to, ino) in renames {
            self.moved_away.by_ino.remove(&ino);
            self.forget(&to, journal, out);
            if let Effect::Journal { records: r, .. } = renamed(&from, &to, ino) {
                records.extend(r);
            }
        }
        out.push(Effect::Journal {
            records,
            files: Vec::new(),
        });
    }

    /// At the end of the start-up scan: files queued before the restart under another
    /// name (a recovered entry the scan did not see, same inode, size and mtime) are
    /// linked to that name, which their uploader checks first.
    fn queued_renames(&mut self, journal: &State, out: &mut Vec<Effect>) {
        if self.recovered_inodes.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for (file, t) in self.files.iter() {
            let v = t.phase.version();
            let waiting = !matches!(t.phase, Phase::Recovered { .. } | Phase::Uploading { .. });
            let names = self.recovered_inodes.names(v.ino);
            if names.is_empty() {
                continue;
            }
            // An old name that does not hold it any more (gone, or another file now).
            let from = names.iter().map(|(_, f)| f).find(|from| {
                *from != file
                    && !matches!(
                        self.files.phase(from),
                        Some(p) if !matches!(p, Phase::Recovered { .. }) && p.version().ino == v.ino
                    )
            });
            if let Some(from) = from
                && waiting
                && !journal.is_uploaded(file, &v)
            {
                found.push((file.clone(), from.clone()));
            }
        }
        // A file already journaled as queued gets its record again, with the origin, so
        // a crash before its upload does not lose the link.
        let mut records = Vec::new();
        for (file, from) in &found {
            if let Some(p) = journal.pending.get(file)
                && p.origin() != Some(from.rel())
            {
                records.push(Record::Queued {
                    file: file.clone(),
                    version: p.version,
                    prio: p.prio,
                    queued_at: p.queued_at,
                    origin: Some(from.rel().to_string()),
                });
            }
        }
        if !records.is_empty() {
            out.push(Effect::Journal {
                records,
                files: Vec::new(),
            });
        }
        self.origins.extend(found);
    }

    fn confirmed(
        &mut self,
        answers: Vec<(FileRef, Result<Option<Version>, String>)>,
        now: Now,
        journal: &State,
        out: &mut Vec<Effect>,
    ) {
        let mut records = Vec::new();
        let mut waiting = Vec::new();
        for (file, answer) in answers {
            let Some(Tracked {
                phase: Phase::Confirming { version, snapshot },
                prio,
            }) = self.files.get(&file).cloned()
            else {
                continue;
            };
            match answer {
                // A stale observation caught up with a version already in S3.
                Ok(Some(v)) if journal.is_uploaded(&file, &v) => self.forget(&file, journal, out),
                // Stable as seen; or, for a snapshot, the same file however far it grew:
                // its first bytes as they are now are what goes.
                Ok(Some(v)) if v == version || (snapshot && version.grown_into(&v)) => {
                    // Already queued as it is (a restart): nothing new to journal.
                    let origin = self.origins.get(&file).map(|o| o.rel().to_string());
                    let known = journal.pending.get(&file).is_some_and(|p| {
                        p.version.matches(&v) && p.prio == prio && p.origin() == origin.as_deref()
                    });
                    if known {
                        self.files.set_phase(&file, queued(v, 0, snapshot));
                        continue;
                    }
                    records.push(Record::Queued {
                        file: file.clone(),
                        version: v,
                        prio,
                        queued_at: now.unix(),
                        origin,
                    });
                    let phase = Phase::Journaling {
                        version: v,
                        snapshot,
                    };
                    self.files.set_phase(&file, phase);
                    waiting.push(file);
                }
                // Changed since it was seen: as if seen so now (a rename is noticed too).
                Ok(Some(v)) => self.seen(file, v, false, now, journal, out),
                Ok(None) => self.forget(&file, journal, out),
                Err(why) => {
                    log::warn!("{file}: {why}; looking again later");
                    self.settle(&file, version, now);
                }
            }
        }
        if !records.is_empty() {
            out.push(Effect::Journal {
                records,
                files: waiting,
            });
        }
    }

    /// Back to waiting for `stability_seconds` (a change seen on a closer look, or a
    /// failure to journal).
    fn settle(&mut self, file: &FileRef, version: Version, now: Now) {
        let (due, snapshot) = self.snapshot_first(file, now.mono, now.mono + self.cfg.stability);
        let phase = Phase::Settling {
            version,
            due,
            since: now.mono,
            gap_ms: 0,
            snapshot,
        };
        self.files.set_phase(file, phase);
    }

    fn journaled(&mut self, files: Vec<FileRef>, result: Result<(), String>, now: Now) {
        match &result {
            // Not journaled means not acknowledged: they wait and are tried again.
            Err(e) => self.journal_failed(e, now),
            Ok(()) => self.journal_works(now.mono),
        }
        for file in files {
            if let Some(Phase::Journaling { version, snapshot }) = self.files.phase(&file).cloned()
            {
                match result {
                    Ok(()) => self.files.set_phase(&file, queued(version, 0, snapshot)),
                    Err(_) => self.settle(&file, version, now),
                }
            }
        }
    }

    fn dispatch(&mut self, now: Now, journal: &State, out: &mut Vec<Effect>) {
        if !self.may_dispatch() {
            return;
        }
        // The start-up backlog goes out in its order: the first dispatch waits until
        // every file already due is in the queue (a stat and a journal append away,
        // carried out within the same step), so that a file queued a step earlier does
        // not overtake a higher-priority or older one the scan found after it.
        if !self.backlog_ordered {
            if self.files.entering(now.mono) {
                return;
            }
            self.backlog_ordered = true;
        }
        if self.health.gave_up() {
            self.give_up_queued();
            return;
        }
        // A closed window, or a link no file may use, lets only what a request asks
        // for go.
        let open = self.window(now, out);
        let link_open = self.link.as_ref().is_none_or(|l| !l.spent);
        if !(open && link_open) && self.files.slices().is_empty() {
            return;
        }
        let allowance = self.health.allowance(now.mono, self.cfg.concurrency);
        if allowance.reload_credentials {
            out.push(Effect::ReloadCredentials);
        }
        // Multipart files may fill at most `concurrency - 1` uploaders, so a small file
        // never waits behind large ones.
        let max_large = self.cfg.concurrency.saturating_sub(1).max(1);
        while self.files.counts().uploading < allowance.max_in_flight {
            let large_ok = self.files.counts().uploading_large < max_large;
            let may_go = |file: &FileRef, requested: bool| {
                requested || (open && self.link_allows(file.source()))
            };
            let Some(file) = self.files.next_ready(large_ok, may_go) else {
                break;
            };
            if self.maybe_renamed(&file, journal) {
                continue;
            }
            out.push(Effect::Dispatch(self.start(&file)));
        }
    }

    /// Whether the link now lets `source`'s files go (not counting requests).
    fn link_allows(&self, source: &str) -> bool {
        match &self.link {
            None => true,
            Some(l) => !l.spent && self.cfg.link_rules.may_use(source, &l.name),
        }
    }

    /// An uploader found the link may not take `file`'s next body: a spent budget
    /// holds every file back until the link or the day changes.
    fn held(&mut self, file: &FileRef, hold: Hold) {
        if let (Hold::Budget, Some(link)) = (hold, self.link.as_mut()) {
            if !link.spent {
                log::info!(
                    "{file}: its next bytes would take {} past its daily budget: it waits",
                    link.name
                );
            }
            link.spent = true;
        }
    }

    /// How far a request for `slice` has come: its files not yet in S3 (tracked and not
    /// set aside), set aside (quarantined or given up), and in S3 (the registry's).
    /// A request is answered once none is pending and the start-up scan is over.
    pub fn slice_progress(&self, slice: &Slice, journal: &State) -> SliceProgress {
        let mut p = SliceProgress::default();
        for (file, t) in self.files.iter() {
            if !slice.covers(file.source(), t.phase.version().mtime_ns) {
                continue;
            }
            match t.phase {
                Phase::Quarantined { .. } | Phase::GivenUp { .. } => p.set_aside += 1,
                _ => p.pending += 1,
            }
        }
        p.uploaded = journal
            .registry()
            .filter(|(f, u)| slice.covers(split(f).0, u.version.mtime_ns))
            .count();
        p.scan_done = self.scan_done;
        p
    }

    /// Before the start-up scan ends (a flood filled the planner): holds a file that has
    /// the inode of an uploaded one, for the end of the scan to tell whether it is that
    /// file renamed. Returns whether it was held. The registry's inodes are gathered
    /// once, only then.
    fn maybe_renamed(&mut self, file: &FileRef, journal: &State) -> bool {
        if self.scan_done {
            return false;
        }
        let Some(version) = self.files.phase(file).map(Phase::version) else {
            return false;
        };
        if version.ino == 0 {
            return false;
        }
        let inodes = self.registry_inodes.get_or_insert_with(|| {
            journal
                .registry()
                .map(|(_, u)| u.version.ino)
                .filter(|i| *i != 0)
                .collect()
        });
        // The inode of an uploaded file under another name, or of a file queued under
        // another name before the restart.
        let uploaded_elsewhere = inodes.contains(&version.ino)
            && journal
                .uploaded(file)
                .is_none_or(|u| u.version.ino != version.ino);
        let queued_elsewhere = self
            .recovered_inodes
            .names(version.ino)
            .iter()
            .any(|(_, f)| f != file);
        if !uploaded_elsewhere && !queued_elsewhere {
            return false;
        }
        self.files.set_phase(file, Phase::Held { version });
        true
    }

    /// `once` after a refusal: what is queued is given up, not sent.
    fn give_up_queued(&mut self) {
        let queued: Vec<(FileRef, Version)> = self
            .files
            .iter()
            .filter_map(|(f, t)| match t.phase {
                Phase::Queued { version, .. } => Some((f.clone(), version)),
                _ => None,
            })
            .collect();
        for (file, version) in queued {
            self.files.set_phase(&file, Phase::GivenUp { version });
            self.totals.given_up += 1;
        }
    }

    /// Sets the gate from the schedule (logging a change). Returns whether it is open.
    fn window(&mut self, now: Now, out: &mut Vec<Effect>) -> bool {
        let open = allowed(self.cfg.schedule.as_ref(), now.schedule);
        let gate = (open.is_some(), open.and_then(|o| o.max_bytes_per_second));
        if self.gate != Some(gate) {
            match (self.gate.map(|g| g.0), gate.0) {
                (Some(false), true) => log::info!("upload window open"),
                (None | Some(true), false) => log::info!(
                    "upload window closed: uploads pause at the next part boundary; files keep being queued"
                ),
                _ => {}
            }
            self.gate = Some(gate);
            out.push(Effect::Gate {
                open: gate.0,
                cap: gate.1,
            });
        }
        gate.0
    }

    fn start(&mut self, file: &FileRef) -> Job {
        let (version, attempts, snapshot) = match self.files.phase(file) {
            Some(Phase::Queued {
                version,
                attempts,
                snapshot,
                ..
            }) => (*version, *attempts, *snapshot),
            other => unreachable!("{file} dispatched from {other:?}"),
        };
        let phase = Phase::Uploading {
            version,
            attempts,
            changed: false,
            snapshot,
        };
        self.files.set_phase(file, phase);
        let progress = Arc::new(AtomicU64::new(0));
        self.progress.insert(file.clone(), Arc::clone(&progress));
        log::debug!("sending {file}");
        Job {
            file: file.clone(),
            path: self.path(file),
            version,
            snapshot,
            origin: self.origins.get(file).cloned(),
            progress,
            requested: self.files.requested(file, &version),
        }
    }

    pub fn path(&self, file: &FileRef) -> PathBuf {
        self.cfg
            .sources
            .get(file.source())
            .map_or_else(PathBuf::new, |s| s.root.join(file.rel()))
    }

    /// `once`: done when the scan is over, nothing settles or uploads, and nothing
    /// queued may go now (all sent, or the window is closed).
    ///
    /// A file that keeps changing is waited for at most [`Planner::once_patience`] from
    /// the start: then it is left settling, for the next run ([`Planner::still_changing`]
    /// names it).
    pub fn idle(&self, now: Instant) -> bool {
        let c = self.files.counts();
        let closed = self.gate.is_some_and(|g| !g.0);
        let waiting = c.queued - c.uploading;
        let settled = c.settling == 0
            || (now >= self.started + self.once_patience()
                && self.still_changing().len() == c.settling);
        self.may_dispatch()
            && (self.scan_done || closed)
            && settled
            && c.uploading == 0
            && (closed || waiting == 0)
    }

    /// How long `once` waits for files that keep changing: as long as a growing file's
    /// quiet time may be ([`GROWING_FACTOR`] × `stability_seconds`), or, with
    /// `max_wait_seconds`, long enough for its snapshot to settle, whichever is longer.
    pub fn once_patience(&self) -> Duration {
        let snapshot = self
            .cfg
            .sources
            .values()
            .filter_map(|s| s.max_wait)
            .max()
            .map_or(Duration::ZERO, |w| w + self.cfg.stability);
        (self.cfg.stability * GROWING_FACTOR).max(snapshot)
    }

    /// Files still waiting to be unchanged (not those being confirmed or journaled).
    pub fn still_changing(&self) -> Vec<FileRef> {
        let mut out: Vec<FileRef> = self
            .files
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Settling { .. }))
            .map(|(f, _)| f.clone())
            .collect();
        out.sort();
        out
    }

    /// When the planner must next look at the time.
    pub fn next_wake(&self, now: Now) -> Instant {
        let busy = self.files.counts().uploading > 0;
        let mut wake = now.mono + if busy { STATUS_INTERVAL } else { IDLE_WAKE };
        let schedule_change = self.cfg.schedule.as_ref().and_then(|s| {
            s.next_change(now.schedule).map(|c| {
                let secs = c.saturating_sub(now.schedule).max(1) as u64;
                now.mono + Duration::from_secs(secs)
            })
        });
        // Settled files wait for the scan's end (see `tick`), which comes as an input.
        let files = self
            .may_dispatch()
            .then(|| self.files.next_deadline())
            .flatten();
        for t in [files, self.health.until(), schedule_change]
            .into_iter()
            .flatten()
        {
            wake = wake.min(t);
        }
        wake.max(now.mono)
    }

    /// The files still queued when `once` ends outside every window.
    pub fn queued_left(&self) -> usize {
        let c = self.files.counts();
        c.queued - c.uploading
    }
}

/// Files quarantined before a restart are tried again after it: queued anew, which
/// clears their mark in the journal.
fn retry_quarantined(journal: &State, out: &mut Vec<Effect>) {
    let records: Vec<Record> = journal
        .quarantined()
        .filter_map(|(file, _)| {
            let p = journal.pending.get(file)?;
            Some(Record::Queued {
                file: file.clone(),
                version: p.version,
                prio: p.prio,
                queued_at: p.queued_at,
                origin: p.origin().map(str::to_string),
            })
        })
        .collect();
    if !records.is_empty() {
        log::info!(
            "{} files quarantined before the restart are tried again",
            records.len()
        );
        out.push(Effect::Journal {
            records,
            files: Vec::new(),
        });
    }
}

/// Names by inode, sorted once (16 bytes a name, no hash table): the files queued before
/// a restart, looked up when the scan ends.
#[derive(Debug, Default)]
struct ByInode(Vec<(u64, FileRef)>);

impl ByInode {
    /// In (inode, path) order: which name comes first must not depend on hashing.
    fn new(mut names: Vec<(u64, FileRef)>) -> ByInode {
        names.sort_unstable();
        names.shrink_to_fit();
        ByInode(names)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names journaled with inode `ino`, in path order.
    fn names(&self, ino: u64) -> &[(u64, FileRef)] {
        let start = self.0.partition_point(|(i, _)| *i < ino);
        let end = self.0.partition_point(|(i, _)| *i <= ino);
        &self.0[start..end]
    }
}

fn queued(version: Version, attempts: u32, snapshot: bool) -> Phase {
    Phase::Queued {
        version,
        attempts,
        retry_at: None,
        snapshot,
    }
}

fn renamed(from: &FileRef, to: &FileRef, ino: u64) -> Effect {
    Effect::Journal {
        records: vec![Record::Renamed {
            file: to.clone(),
            from: from.rel().to_string(),
            ino,
        }],
        files: Vec::new(),
    }
}

/// Renames `(from, to, ino)` in an order where none overwrites an entry that has yet to
/// move on: a rename into `x` comes after the rename out of `x`. Renames in a cycle are
/// left out (those files are sent again under their new names).
fn dependency_order(mut todo: Vec<(FileRef, FileRef, u64)>) -> Vec<(FileRef, FileRef, u64)> {
    let mut out = Vec::with_capacity(todo.len());
    while let Some(i) = todo
        .iter()
        .position(|(_, to, _)| !todo.iter().any(|(from, _, _)| from == to))
    {
        out.push(todo.remove(i));
    }
    if !todo.is_empty() {
        log::warn!(
            "{} renames form a cycle; those files are sent again",
            todo.len()
        );
    }
    out
}

fn dropped(file: &FileRef, reason: &str) -> Effect {
    Effect::Journal {
        records: vec![Record::Dropped {
            file: file.clone(),
            reason: reason.to_string(),
        }],
        files: Vec::new(),
    }
}
