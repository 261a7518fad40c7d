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

mod files;
mod health;
#[cfg(test)]
mod model_tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use files::{Counts, Files, Phase, Tracked};
pub use health::{Allowance, Health};

use crate::config::Config;
use crate::file::{FileRef, Version};
use crate::journal::{Record, State};
use crate::retry::{Jitter, backoff};
use crate::s3::{Class, S3Error};
use crate::schedule::{Schedule, allowed};
use crate::status::{self, LastError, Live, LiveQueue, Transfer};
use crate::upload::{Job, UploadError, Uploaded};

/// Files turned ready in one step, so watch events keep flowing in a flood.
pub const READY_BATCH: usize = 512;
/// Files the planner holds (settling, queued, uploading) before it stops taking watch
/// events: the watcher then waits, and the rest of a flood stays on disk rather than in
/// memory. Dispatch starts without waiting for the start-up scan once this is reached.
pub const MAX_TRACKED_FILES: usize = 16_384;
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
    /// Unix seconds as the schedule sees them (see [`crate::schedule::schedule_now`]).
    pub schedule: i64,
}

impl Now {
    pub fn read() -> Now {
        let wall_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Now {
            mono: Instant::now(),
            wall_ns,
            schedule: crate::schedule::schedule_now(),
        }
    }

    fn unix(&self) -> i64 {
        self.wall_ns.div_euclid(1_000_000_000)
    }
}

/// What the planner is told.
#[derive(Debug)]
pub enum Input {
    /// The watcher saw a wanted regular file at this version.
    Seen { file: FileRef, version: Version },
    /// The watcher saw the file deleted or moved away.
    Gone { file: FileRef },
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
}

/// How one job ended.
#[derive(Debug)]
pub struct Report {
    pub job: Job,
    pub result: Result<Uploaded, UploadError>,
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
    pub files_already_in_s3: u64,
    pub failed_attempts: u64,
    /// Files given up this run (`once`).
    pub given_up: u64,
}

/// A source as the planner needs it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub root: PathBuf,
    pub prio: i32,
}

/// The planner's settings, from the config.
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
}

impl Settings {
    pub fn from_config(config: &Config, mode: Mode) -> Settings {
        Settings {
            mode,
            stability: config.stability,
            retry_initial: config.retry.initial,
            retry_max: config.retry.max,
            concurrency: config.s3.concurrency,
            multipart_threshold: config.s3.multipart_threshold_bytes,
            sources: config
                .sources
                .iter()
                .map(|s| {
                    let info = SourceInfo {
                        root: s.path.clone(),
                        prio: s.priority,
                    };
                    (s.name.clone(), info)
                })
                .collect(),
            schedule: config.schedule.clone(),
            max_tracked_files: MAX_TRACKED_FILES,
        }
    }
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
}

pub struct Planner {
    cfg: Settings,
    files: Files,
    health: Health,
    jitter: Jitter,
    scan_done: bool,
    /// The gate last set: open, cap.
    gate: Option<(bool, Option<u64>)>,
    small_reserved: Option<bool>,
    /// Bytes done of each uploading file, shared with its uploader.
    progress: HashMap<FileRef, Arc<AtomicU64>>,
    totals: Totals,
    last_error: Option<(i64, String)>,
    started: Instant,
}

impl Planner {
    /// A planner that knows what the journal had queued or in progress: those files are
    /// ready at once when the scan sees them unchanged.
    pub fn new(cfg: Settings, jitter: Jitter, journal: &State, now: Instant) -> Planner {
        let mut files = Files::new(cfg.multipart_threshold);
        let recovered = journal
            .pending
            .iter()
            .map(|(f, p)| (f, p.version))
            .chain(journal.multipart.iter().map(|(f, m)| (f, m.version)));
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
            }
        }
        Planner {
            cfg,
            files,
            health: Health::Up,
            jitter,
            scan_done: false,
            gate: None,
            small_reserved: None,
            progress: HashMap::new(),
            totals: Totals::default(),
            last_error: None,
            started: now,
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

    /// Files that cost memory and work: all but recovered and given-up ones.
    fn active(&self) -> usize {
        let c = self.files.counts();
        self.files.len() - c.recovered - c.given_up
    }

    /// Whether the start-up scan is over, or the planner is too full to wait for it.
    fn may_dispatch(&self) -> bool {
        self.scan_done || !self.wants_events()
    }

    /// Takes one input.
    pub fn handle(&mut self, input: Input, now: Now, journal: &State, out: &mut Vec<Effect>) {
        match input {
            Input::Seen { file, version } => self.seen(file, version, now, journal, out),
            Input::Gone { file } => self.gone(&file, journal, out),
            Input::ScanDone => self.scan_done(),
            Input::Confirmed(answers) => self.confirmed(answers, now, journal, out),
            Input::Journaled { files, result } => self.journaled(files, result, now),
            Input::Finished(report) => self.finished(report, now, journal, out),
        }
    }

    /// What time alone moves on: settled files, due retries, the window, dispatch.
    pub fn tick(&mut self, now: Now, out: &mut Vec<Effect>) {
        let stable = self.files.settled(now.mono, READY_BATCH);
        if !stable.is_empty() {
            let mut ask = Vec::with_capacity(stable.len());
            for file in stable {
                let version = self.files.phase(&file).map(Phase::version);
                if let Some(version) = version {
                    self.files.set_phase(&file, Phase::Confirming { version });
                    ask.push((file, version));
                }
            }
            out.push(Effect::Confirm(ask));
        }
        for file in self.files.retries_due(now.mono) {
            if let Some(Phase::Queued {
                version, attempts, ..
            }) = self.files.phase(&file).cloned()
            {
                let ready = Phase::Queued {
                    version,
                    attempts,
                    retry_at: None,
                };
                self.files.set_phase(&file, ready);
            }
        }
        self.dispatch(now, out);
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
                | Phase::Settling { version: v, .. }
                | Phase::Confirming { version: v }
                | Phase::Journaling { version: v },
            ) if *v == version => return,
            Some(Phase::Recovered { version: v }) => *v == version,
            _ => false,
        };
        if journal.is_uploaded(&file, &version) {
            self.forget(&file, journal, out);
            return;
        }
        let old_enough = self.cfg.mode == Mode::Once
            && now.wall_ns.saturating_sub(version.mtime_ns) >= self.cfg.stability.as_nanos() as i64;
        let due = if recovered || old_enough {
            now.mono
        } else {
            now.mono + self.cfg.stability
        };
        let phase = Phase::Settling { version, due };
        self.files.set(file, Tracked { phase, prio });
    }

    fn mark_changed(&mut self, file: &FileRef) {
        if let Some(Phase::Uploading {
            version, attempts, ..
        }) = self.files.phase(file).cloned()
        {
            let phase = Phase::Uploading {
                version,
                attempts,
                changed: true,
            };
            self.files.set_phase(file, phase);
        }
    }

    /// Stops tracking a file; a queued record left in the journal is dropped.
    fn forget(&mut self, file: &FileRef, journal: &State, out: &mut Vec<Effect>) {
        self.files.remove(file);
        if journal.pending.contains_key(file) && !journal.multipart.contains_key(file) {
            out.push(dropped(file, "gone"));
        }
    }

    fn gone(&mut self, file: &FileRef, journal: &State, out: &mut Vec<Effect>) {
        // A queued or uploading file is left to its uploader, which also aborts a
        // multipart upload and drops it from the journal; a settling one just goes.
        if let Some(Phase::Settling { .. } | Phase::Confirming { .. }) = self.files.phase(file) {
            self.forget(file, journal, out);
        }
    }

    fn scan_done(&mut self) {
        self.scan_done = true;
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
                Phase::Recovered { version } => Some((f.clone(), version)),
                _ => None,
            })
            .collect();
        for (file, version) in left {
            self.files.set_phase(&file, queued(version, 0));
        }
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
                phase: Phase::Confirming { version },
                prio,
            }) = self.files.get(&file).cloned()
            else {
                continue;
            };
            match answer {
                // A stale observation caught up with a version already in S3.
                Ok(Some(v)) if journal.is_uploaded(&file, &v) => self.forget(&file, journal, out),
                Ok(Some(v)) if v == version => {
                    // Already queued as it is (a restart): nothing new to journal.
                    let known = journal
                        .pending
                        .get(&file)
                        .is_some_and(|p| p.version == v && p.prio == prio);
                    if known {
                        self.files.set_phase(&file, queued(v, 0));
                        continue;
                    }
                    records.push(Record::Queued {
                        file: file.clone(),
                        version: v,
                        prio,
                        queued_at: now.unix(),
                    });
                    self.files
                        .set_phase(&file, Phase::Journaling { version: v });
                    waiting.push(file);
                }
                Ok(Some(v)) => self.settle(&file, v, now),
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

    fn settle(&mut self, file: &FileRef, version: Version, now: Now) {
        let due = now.mono + self.cfg.stability;
        self.files.set_phase(file, Phase::Settling { version, due });
    }

    fn journaled(&mut self, files: Vec<FileRef>, result: Result<(), String>, now: Now) {
        if let Err(e) = &result {
            // Not journaled means not acknowledged: they wait and are tried again.
            log::error!("{e}; {} files stay waiting", files.len());
        }
        for file in files {
            if let Some(Phase::Journaling { version }) = self.files.phase(&file).cloned() {
                match result {
                    Ok(()) => self.files.set_phase(&file, queued(version, 0)),
                    Err(_) => self.settle(&file, version, now),
                }
            }
        }
    }

    fn dispatch(&mut self, now: Now, out: &mut Vec<Effect>) {
        if !self.may_dispatch() {
            return;
        }
        if self.health.gave_up() {
            self.give_up_queued();
            return;
        }
        if !self.window(now, out) {
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
            let Some(file) = self.files.next_ready(large_ok) else {
                break;
            };
            out.push(Effect::Dispatch(self.start(&file)));
        }
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
        let (version, attempts) = match self.files.phase(file) {
            Some(Phase::Queued {
                version, attempts, ..
            }) => (*version, *attempts),
            other => unreachable!("{file} dispatched from {other:?}"),
        };
        let phase = Phase::Uploading {
            version,
            attempts,
            changed: false,
        };
        self.files.set_phase(file, phase);
        let progress = Arc::new(AtomicU64::new(0));
        self.progress.insert(file.clone(), Arc::clone(&progress));
        log::debug!("sending {file}");
        Job {
            file: file.clone(),
            path: self.path(file),
            version,
            progress,
        }
    }

    pub fn path(&self, file: &FileRef) -> PathBuf {
        self.cfg
            .sources
            .get(file.source())
            .map_or_else(PathBuf::new, |s| s.root.join(file.rel()))
    }

    fn finished(&mut self, report: Report, now: Now, journal: &State, out: &mut Vec<Effect>) {
        let file = report.job.file.clone();
        self.progress.remove(&file);
        let Some(Phase::Uploading {
            version,
            attempts,
            changed,
        }) = self.files.phase(&file).cloned()
        else {
            log::debug!("{file}: a report for a file not uploading");
            return;
        };
        self.account(&report, now);
        let next = match report.result {
            Ok(_) => {
                if self.health.succeeded() {
                    log::info!("S3 accepts the requests again; uploads resume");
                }
                // An uploader that found this version in the registry journals nothing:
                // a `queued` record left for it is dropped here.
                if journal
                    .pending
                    .get(&file)
                    .is_some_and(|p| p.version == version)
                {
                    out.push(dropped(&file, "uploaded"));
                }
                out.push(Effect::WakeDisk);
                Next::Forget
            }
            Err(UploadError::Gone) => {
                log::info!("{file}: deleted before its upload; dropped from the queue");
                out.push(dropped(&file, "gone"));
                self.files.remove(&file);
                return;
            }
            Err(UploadError::Changed) => {
                log::info!("{file}: changed during its upload; it is sent again once stable");
                Next::LookAgain
            }
            Err(UploadError::Interrupted | UploadError::Paused) => Next::Requeue,
            Err(UploadError::S3(e)) => self.s3_failed(&file, &e, attempts, now),
            Err(e) => self.retry_after_failure(&file, attempts, now, &e.to_string()),
        };
        // Seen changing while it was sent: whatever happened, look at it again.
        let next = if changed { Next::LookAgain } else { next };
        self.apply_next(&file, version, attempts, next, out);
    }

    /// Counts what the report says, once.
    fn account(&mut self, report: &Report, now: Now) {
        let job = &report.job;
        match &report.result {
            Ok(Uploaded::AlreadyThere) => self.totals.files_already_in_s3 += 1,
            Ok(Uploaded::Sent { bytes }) => {
                self.totals.files_uploaded += 1;
                self.totals.bytes_uploaded += job.version.size;
                log::info!(
                    "uploaded {} ({} bytes, {bytes} sent, {:.1}s)",
                    job.file,
                    job.version.size,
                    report.elapsed.as_secs_f64()
                );
            }
            Err(
                e @ (UploadError::S3(_)
                | UploadError::Read { .. }
                | UploadError::Journal(_)
                | UploadError::Unkeyable { .. }),
            ) => {
                self.totals.failed_attempts += 1;
                self.last_error = Some((now.unix(), format!("{}: {e}", job.file)));
            }
            Err(_) => {}
        }
    }

    fn s3_failed(&mut self, file: &FileRef, e: &S3Error, attempts: u32, now: Now) -> Next {
        let retry_max = self.cfg.retry_max;
        match e.class() {
            Class::Credentials | Class::Configuration => {
                let once = self.cfg.mode == Mode::Once;
                if self.health.refused(now.mono, retry_max, once) {
                    log::error!(
                        "S3 refused {file}: {e}. {}. Uploads pause; retrying every {}s",
                        e.advice(),
                        retry_max.as_secs()
                    );
                    if once {
                        log::error!("giving up this run; the files stay queued for the next");
                    }
                } else {
                    log::debug!("still refused: {e}");
                }
                if once {
                    return Next::GiveUp;
                }
                Next::Retry {
                    at: now.mono + retry_max,
                    counts: false,
                }
            }
            Class::SlowDown => {
                let limits = (self.cfg.retry_initial, retry_max);
                let wait = self.health.slow_down(now.mono, limits, &mut self.jitter);
                log::warn!(
                    "{e}: S3 asks to slow down; pausing new requests for {:.1}s",
                    wait.as_secs_f64()
                );
                self.retry_after_failure(file, attempts, now, &e.to_string())
            }
            Class::Rejected => {
                log::warn!("{e}; retrying {file} in {}s", retry_max.as_secs());
                Next::Retry {
                    at: now.mono + retry_max,
                    counts: true,
                }
            }
            Class::Transient | Class::ContentChanged | Class::UploadLost => {
                self.retry_after_failure(file, attempts, now, &e.to_string())
            }
        }
    }

    fn retry_after_failure(&mut self, file: &FileRef, attempts: u32, now: Now, why: &str) -> Next {
        let attempt = attempts + 1;
        let (initial, max) = (self.cfg.retry_initial, self.cfg.retry_max);
        let wait = backoff(attempt, initial, max, &mut self.jitter);
        log::warn!(
            "{file}: attempt {attempt} failed: {why}; retrying in {:.1}s",
            wait.as_secs_f64()
        );
        Next::Retry {
            at: now.mono + wait,
            counts: true,
        }
    }

    fn apply_next(
        &mut self,
        file: &FileRef,
        version: Version,
        attempts: u32,
        next: Next,
        out: &mut Vec<Effect>,
    ) {
        let phase = match next {
            Next::Forget => {
                self.files.remove(file);
                return;
            }
            Next::LookAgain => {
                self.files.remove(file);
                out.push(Effect::Look(file.clone()));
                return;
            }
            Next::Requeue => queued(version, attempts),
            Next::GiveUp => Phase::GivenUp { version },
            Next::Retry { at, counts } => {
                let attempts = attempts + u32::from(counts);
                if self.cfg.mode == Mode::Once && attempts >= ONCE_MAX_ATTEMPTS {
                    log::error!(
                        "{file}: giving up after {attempts} attempts this run; it stays queued"
                    );
                    Phase::GivenUp { version }
                } else {
                    Phase::Queued {
                        version,
                        attempts,
                        retry_at: Some(at),
                    }
                }
            }
        };
        if matches!(phase, Phase::GivenUp { .. }) {
            self.totals.given_up += 1;
        }
        self.files.set_phase(file, phase);
    }

    /// `once`: done when the scan is over, nothing settles or uploads, and nothing
    /// queued may go now (all sent, or the window is closed).
    pub fn idle(&self) -> bool {
        let c = self.files.counts();
        let closed = self.gate.is_some_and(|g| !g.0);
        let waiting = c.queued - c.uploading;
        self.may_dispatch()
            && (self.scan_done || closed)
            && c.settling == 0
            && c.uploading == 0
            && (closed || waiting == 0)
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
        for t in [
            self.files.next_deadline(),
            self.health.until(),
            schedule_change,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        wake.max(now.mono)
    }

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
                files_already_in_s3: t.files_already_in_s3,
                failed_attempts: t.failed_attempts,
            },
            window: self.window_view(now),
            last_error: self.last_error.as_ref().map(|(at, m)| LastError {
                at: crate::key::rfc3339_utc(*at),
                message: m.clone(),
            }),
            ..Live::default()
        }
    }

    fn window_view(&self, now: Now) -> status::Window {
        let open = self.gate.is_none_or(|g| g.0);
        let next_open = match &self.cfg.schedule {
            Some(s) if !open => s.next_open(now.schedule).map(crate::key::rfc3339_utc),
            _ => None,
        };
        status::Window {
            open,
            next_open,
            ..status::Window::default()
        }
    }

    /// The files still queued when `once` ends outside every window.
    pub fn queued_left(&self) -> usize {
        let c = self.files.counts();
        c.queued - c.uploading
    }
}

fn queued(version: Version, attempts: u32) -> Phase {
    Phase::Queued {
        version,
        attempts,
        retry_at: None,
    }
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
