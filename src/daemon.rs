//! The daemon: starts the threads, runs the planner on the calling thread, and stops
//! everything in a fixed order. `run` and `once` are the same machine; `once` treats old
//! files as stable at once and returns when nothing is left to do.
//!
//! Threads and channels (capacities are bounds, see ARCHITECTURE.md):
//! - `watch` → planner: [`WatchEvent`], 4,096;
//! - `signals` → planner: [`Control`], 4;
//! - planner → `upload-N`: [`Job`], `s3.concurrency` (never full: the planner sends only
//!   into a free slot);
//! - `upload-N` → planner: [`Done`], 64.
//!
//! The planner owns the stability tracker and the dispatch queue. It does no network IO;
//! its file IO is one `stat` when a file becomes ready and the journal's `queued` and
//! `dropped` records.
//!
//! Shutdown order: the planner returns; the stop flag is raised so transfers end at the
//! next buffer; the job channel is closed and the uploaders are joined; the watcher is
//! woken and joined; the signal thread is closed and joined. The journal, fsynced at
//! every step, is the last thing dropped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use crate::config::Config;
use crate::credentials::Credentials;
use crate::disk::{self, DiskManager};
use crate::metrics::{Metrics, Publisher};
use crate::queue::{self, FileRef, Journal, Record, SharedJournal};
use crate::retry::{Jitter, backoff};
use crate::s3::{Class, S3};
use crate::schedule::{Schedule, allowed, schedule_now};
use crate::settle::{Seen, Tracker};
use crate::throttle::Gate;
use crate::upload::{self, Context, Job, Outcome, Permits, Settings};
use crate::watch::{SourceSpec, WatchEvent, Watcher};

/// Watch events buffered before the watcher waits for the planner.
const WATCH_CHANNEL_CAPACITY: usize = 4096;
/// Outcomes buffered before an uploader waits for the planner.
const DONE_CHANNEL_CAPACITY: usize = 64;
/// Files turned ready in one planner step, so watch events keep flowing in a flood.
const READY_BATCH: usize = 512;
/// In `once` mode a file that failed this many times (transiently) is given up; it stays
/// queued in the journal for the next run.
const ONCE_MAX_ATTEMPTS: u32 = 4;
/// How long uploaders get at shutdown to notice the stop flag; a request blocked waiting
/// for an answer cannot be interrupted, so past this the process exits without them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A planner with nothing scheduled still wakes this often to log progress; it never
/// scans or polls files.
const IDLE_WAKE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Once,
}

/// Messages to the planner from outside the pipeline.
#[derive(Debug)]
pub enum Control {
    Shutdown(i32),
}

/// An uploader's report on one job.
#[derive(Debug)]
pub struct Done {
    pub job: Job,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// What a run did, for the exit status and the last log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub skipped_files: u64,
    pub failed_files: u64,
    pub stopped_by_signal: bool,
}

/// Runs the daemon until SIGTERM/SIGINT (`Run`) or until idle (`Once`).
pub fn run(config: Config, mode: Mode) -> Result<Summary, String> {
    let (mut journal, replayed) = Journal::open(&config.state_dir).map_err(|e| e.to_string())?;
    for (line, why) in &replayed.damaged {
        log::warn!(
            "journal {} line {line} was damaged (torn by a power cut?) and skipped: {why}",
            journal.path().display()
        );
    }
    let roots: HashMap<String, PathBuf> = config
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.path.clone()))
        .collect();
    let exists = |f: &FileRef| {
        roots
            .get(&f.source)
            .is_some_and(|root| matches!(upload::stat(&root.join(&f.rel)), Ok(Some(_))))
    };
    match journal.prune(&exists) {
        Ok(0) => {}
        Ok(n) => log::info!("journal: forgot {n} entries whose files are gone"),
        Err(e) => return Err(e.to_string()),
    }
    log::info!(
        "state: {} uploaded, {} queued, {} multipart in progress",
        journal.state().registry.len(),
        journal.state().pending.len(),
        journal.state().multipart.len()
    );
    let credentials =
        Credentials::resolve(config.credentials_profile.as_deref()).map_err(|e| e.to_string())?;
    log::info!("credentials from {}", credentials.source);
    let s3 = Arc::new(S3::new(
        &config.s3,
        credentials.clone(),
        config.credentials_profile.clone(),
    )?);
    let journal: SharedJournal = Arc::new(Mutex::new(journal));

    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Context {
        s3,
        journal: Arc::clone(&journal),
        settings: Settings {
            vehicle_id: config.vehicle_id.clone(),
            prefix: config.s3.prefix.clone(),
            utc_offset_seconds: config.schedule.as_ref().map_or(0, |s| s.utc_offset_seconds),
            multipart_threshold_bytes: config.s3.multipart_threshold_bytes,
            part_size_bytes: config.s3.part_size_bytes,
            concurrency: config.s3.concurrency,
        },
        permits: Permits::new(config.s3.concurrency),
        stop: Arc::clone(&stop),
        sent_bytes: Arc::new(AtomicU64::new(0)),
        gate: Arc::new(Gate::default()),
    });

    let disk_counters = Arc::new(disk::Counters::default());
    let disk_manager = if mode == Mode::Run {
        DiskManager::spawn(&config, Arc::clone(&journal), Arc::clone(&disk_counters))
            .map_err(|e| format!("spawning the disk thread: {e}"))?
    } else {
        None
    };
    let (ctl_tx, ctl_rx) = bounded::<Control>(4);
    let signals = Signals::spawn(ctl_tx)?;
    let (job_tx, job_rx) = bounded::<Job>(config.s3.concurrency);
    let (done_tx, done_rx) = bounded::<Done>(DONE_CHANNEL_CAPACITY);
    let uploaders = Uploaders::spawn(config.s3.concurrency, &ctx, job_rx, done_tx)?;
    let (watch_tx, watch_rx) = bounded::<WatchEvent>(WATCH_CHANNEL_CAPACITY);
    let specs = config
        .sources
        .iter()
        .map(|s| SourceSpec {
            name: s.name.clone(),
            root: s.path.clone(),
            recursive: s.recursive,
            include: s.include.clone(),
            exclude: s.exclude.clone(),
        })
        .collect();
    let watcher = Watcher::spawn(specs, watch_tx).map_err(|e| format!("inotify: {e}"))?;

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ std::process::id() as u64;
    log::debug!("retry jitter seed {seed}");
    let metrics = Arc::new(Metrics {
        disk: Arc::clone(&disk_counters),
        ..Metrics::default()
    });
    let publisher = match &config.metrics {
        Some(m) => {
            let measured = match &config.disk {
                Some(d) => d.paths.clone(),
                None => config.sources.iter().map(|s| s.path.clone()).collect(),
            };
            log::info!(
                "metrics: publishing to {} every {}s",
                m.endpoint,
                m.interval.as_secs()
            );
            Some(
                Publisher::spawn(
                    m,
                    &config.vehicle_id,
                    credentials,
                    Arc::clone(&metrics),
                    measured,
                )
                .map_err(|e| format!("spawning the metrics thread: {e}"))?,
            )
        }
        None => None,
    };
    let mut planner = Planner::new(&config, mode, Arc::clone(&ctx), job_tx, Jitter::new(seed));
    planner.disk = disk_manager;
    planner.metrics = Arc::clone(&metrics);
    let summary = planner.run(&watch_rx, &done_rx, &ctl_rx);

    // Shutdown, in the documented order.
    stop.store(true, Ordering::Relaxed);
    drop(planner); // closes the job channel
    let stuck = uploaders.join(&done_rx, SHUTDOWN_GRACE);
    // The watcher may be blocked sending to the planner: closing the channel frees it.
    drop(watch_rx);
    drop(watcher);
    drop(signals);
    if mode == Mode::Once && stuck == 0 && !summary.stopped_by_signal {
        let n = disk::pass_once(&config, &journal, &disk_counters);
        if n > 0 {
            log::info!("disk: {n} files deleted");
        }
    }
    // Last: one more publish, so what this run did is counted.
    drop(publisher);
    if stuck > 0 {
        // A request waiting on a server that does not answer cannot be interrupted.
        // Everything acknowledged is in the journal; holding its lock until the process
        // exits guarantees no append is cut in half.
        log::warn!(
            "{stuck} uploads still waiting on the network after {SHUTDOWN_GRACE:?}; exiting (their progress is journaled)"
        );
        std::mem::forget(queue::lock(&journal));
    }
    log::info!(
        "stopped: {} files uploaded ({} bytes), {} already in S3, {} failed",
        summary.uploaded_files,
        summary.uploaded_bytes,
        summary.skipped_files,
        summary.failed_files
    );
    Ok(summary)
}

/// The signal thread: turns SIGTERM/SIGINT into [`Control::Shutdown`].
struct Signals {
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl Signals {
    fn spawn(tx: Sender<Control>) -> Result<Signals, String> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map_err(|e| format!("signal handlers: {e}"))?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    // A full channel means a shutdown is already pending.
                    let _ = tx.try_send(Control::Shutdown(sig));
                }
            })
            .map_err(|e| format!("spawning the signal thread: {e}"))?;
        Ok(Signals {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Uploaders {
    threads: Vec<JoinHandle<()>>,
}

impl Uploaders {
    fn spawn(
        n: usize,
        ctx: &Arc<Context>,
        jobs: Receiver<Job>,
        done: Sender<Done>,
    ) -> Result<Uploaders, String> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (ctx, jobs, done) = (Arc::clone(ctx), jobs.clone(), done.clone());
            let t = std::thread::Builder::new()
                .name(format!("upload-{i}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        let started = Instant::now();
                        let outcome = upload::upload(&job, &ctx);
                        let report = Done {
                            job,
                            outcome,
                            elapsed: started.elapsed(),
                        };
                        if done.send(report).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| format!("spawning an uploader thread: {e}"))?;
            threads.push(t);
        }
        Ok(Uploaders { threads })
    }

    /// Joins every uploader, draining their last reports so none blocks on a full channel.
    /// Joins every uploader, draining their last reports so none blocks on a full
    /// channel. Returns how many are still blocked on the network after `grace`.
    fn join(self, done: &Receiver<Done>, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        let mut stuck = 0;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                if let Ok(d) = done.recv_timeout(Duration::from_millis(50)) {
                    log::debug!("{}: ended during shutdown: {:?}", d.job.file, d.outcome);
                }
            }
            if !t.is_finished() {
                stuck += 1;
                continue;
            }
            if t.join().is_err() {
                log::error!("an uploader thread panicked");
            }
        }
        stuck
    }
}

/// How often the status file is rewritten while the daemon is busy.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Throughput is the bytes sent over this last stretch of time.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What the status file needs that the planner does not otherwise keep.
struct StatusBook {
    state_dir: PathBuf,
    started_at: i64,
    last_write: Instant,
    was_busy: bool,
    /// (when, bytes sent in total): samples over the last [`RATE_WINDOW`].
    samples: std::collections::VecDeque<(Instant, u64)>,
    last_error: Option<(i64, String)>,
    failed_total: u64,
}

impl StatusBook {
    fn new(config: &Config) -> StatusBook {
        StatusBook {
            state_dir: config.state_dir.clone(),
            started_at: upload::unix_now(),
            last_write: Instant::now() - STATUS_INTERVAL,
            was_busy: true,
            samples: std::collections::VecDeque::new(),
            last_error: None,
            failed_total: 0,
        }
    }

    /// Bytes per second over the last stretch.
    fn rate(&mut self, now: Instant, sent: u64) -> f64 {
        self.samples.push_back((now, sent));
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
                (b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// A queued file as the planner dispatches it.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    prio: i32,
    attempts: u32,
}

impl Entry {
    /// A file newly queued, not yet tried.
    fn fresh(path: PathBuf, size: u64, mtime_ns: i64, prio: i32) -> Entry {
        Entry {
            path,
            size,
            mtime_ns,
            prio,
            attempts: 0,
        }
    }
}

type ReadyKey = (Reverse<i32>, i64, FileRef);

struct Planner {
    mode: Mode,
    ctx: Arc<Context>,
    jobs: Option<Sender<Job>>,
    jitter: Jitter,
    stability: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    concurrency: usize,
    roots: HashMap<String, (PathBuf, i32)>,
    /// `None`: always open.
    schedule: Option<Schedule>,
    /// Whether the last look found a window open, to log the change once.
    window_open: bool,
    tracker: Tracker<FileRef>,
    entries: HashMap<FileRef, Entry>,
    ready: BTreeSet<ReadyKey>,
    delayed: BTreeSet<(Instant, FileRef)>,
    /// When each file in `delayed` is due, to remove it without a scan.
    delayed_at: HashMap<FileRef, Instant>,
    in_flight: HashSet<FileRef>,
    /// Bytes done of each in-flight file, shared with its uploader.
    progress: HashMap<FileRef, Arc<AtomicU64>>,
    /// Sum of `entries`' sizes.
    queued_bytes: u64,
    metrics: Arc<Metrics>,
    status: StatusBook,
    /// How many of `entries` are below the multipart threshold.
    small_entries: usize,
    /// The subset of `in_flight` at or above the multipart threshold.
    large_in_flight: HashSet<FileRef>,
    multipart_threshold: u64,
    /// Changed while in flight: looked at again when its upload ends.
    dirty: HashSet<FileRef>,
    /// Versions the journal had queued (or in multipart) at start-up: ready at once
    /// when seen unchanged. Left over after the scan means gone while we were down.
    journaled: HashMap<FileRef, (u64, i64)>,
    scan_done: bool,
    /// After a credentials/configuration error nothing is sent until then, and then one
    /// probe at a time until something succeeds.
    blocked_until: Option<Instant>,
    blocked: bool,
    /// After SlowDown, nothing new is sent until then.
    slow_until: Option<Instant>,
    slowdowns: u32,
    summary: Summary,
    /// Woken after each upload, so deferred deletion and cleanup follow uploads.
    disk: Option<DiskManager>,
    /// Files given up this run (`once`), counted once each.
    failed: HashSet<FileRef>,
    /// `once` after a credentials/configuration error: nothing more is sent.
    gave_up: bool,
    last_progress: Instant,
    /// When the planner started, for the start-up scan's duration.
    status_started: Instant,
}

impl Planner {
    fn new(
        config: &Config,
        mode: Mode,
        ctx: Arc<Context>,
        jobs: Sender<Job>,
        jitter: Jitter,
    ) -> Planner {
        // Only what is queued or in progress, never a copy of the registry.
        let mut journaled = HashMap::new();
        {
            let j = queue::lock(&ctx.journal);
            for (f, p) in &j.state().pending {
                journaled.insert(f.clone(), (p.size, p.mtime_ns));
            }
            for (f, m) in &j.state().multipart {
                journaled.insert(f.clone(), (m.size, m.mtime_ns));
            }
        }
        Planner {
            mode,
            ctx,
            jobs: Some(jobs),
            jitter,
            stability: config.stability,
            retry_initial: config.retry.initial,
            retry_max: config.retry.max,
            concurrency: config.s3.concurrency,
            schedule: config.schedule.clone(),
            window_open: true,
            roots: config
                .sources
                .iter()
                .map(|s| (s.name.clone(), (s.path.clone(), s.priority)))
                .collect(),
            tracker: Tracker::new(config.stability),
            entries: HashMap::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            delayed_at: HashMap::new(),
            in_flight: HashSet::new(),
            large_in_flight: HashSet::new(),
            small_entries: 0,
            progress: HashMap::new(),
            queued_bytes: 0,
            metrics: Arc::new(Metrics::default()),
            status: StatusBook::new(config),
            multipart_threshold: config.s3.multipart_threshold_bytes,
            dirty: HashSet::new(),
            journaled,
            scan_done: false,
            blocked_until: None,
            blocked: false,
            slow_until: None,
            slowdowns: 0,
            summary: Summary::default(),
            disk: None,
            failed: HashSet::new(),
            gave_up: false,
            last_progress: Instant::now(),
            status_started: Instant::now(),
        }
    }

    fn run(
        &mut self,
        watch: &Receiver<WatchEvent>,
        done: &Receiver<Done>,
        ctl: &Receiver<Control>,
    ) -> Summary {
        loop {
            let now = Instant::now();
            self.promote(now);
            self.dispatch(now);
            self.update_small_reservation();
            self.report(now, false);
            if self.mode == Mode::Once && self.idle() {
                if !self.window_open && !self.entries.is_empty() {
                    log::info!(
                        "outside every upload window: {} files stay queued",
                        self.entries.len()
                    );
                }
                break;
            }
            let timeout = self.next_wake(now).saturating_duration_since(now);
            select! {
                recv(ctl) -> msg => {
                    if let Ok(Control::Shutdown(sig)) = msg {
                        log::info!("signal {sig}: stopping (in-flight uploads resume on the next start)");
                        self.summary.stopped_by_signal = true;
                        break;
                    }
                }
                recv(done) -> msg => {
                    if let Ok(d) = msg {
                        self.finished(d, Instant::now());
                    }
                }
                recv(watch) -> msg => match msg {
                    Ok(ev) => self.watched(ev, Instant::now()),
                    Err(_) => {
                        log::error!("the watcher stopped; stopping");
                        break;
                    }
                },
                default(timeout) => {}
            }
            if self.last_progress.elapsed() >= IDLE_WAKE {
                self.last_progress = Instant::now();
                if !self.entries.is_empty() || !self.tracker.is_empty() {
                    log::info!(
                        "progress: {} queued, {} uploading, {} settling; {} uploaded so far",
                        self.entries.len() - self.in_flight.len().min(self.entries.len()),
                        self.in_flight.len(),
                        self.tracker.len(),
                        self.summary.uploaded_files
                    );
                }
            }
        }
        self.summary.failed_files = self.failed.len() as u64;
        self.report(Instant::now(), true);
        std::mem::take(&mut self.summary)
    }

    fn idle(&self) -> bool {
        // Outside every window nothing queued can go now: `once` is done with it.
        let nothing_allowed = !self.window_open;
        self.scan_done
            && self.tracker.is_empty()
            && (nothing_allowed || (self.ready.is_empty() && self.delayed.is_empty()))
            && self.in_flight.is_empty()
    }

    fn next_wake(&self, now: Instant) -> Instant {
        // While uploading, wake once a second to refresh the status file and gauges;
        // idle, only for deadlines (no polling).
        let mut wake = now
            + if self.in_flight.is_empty() {
                IDLE_WAKE
            } else {
                STATUS_INTERVAL
            };
        for t in [
            self.tracker.next_deadline(),
            self.delayed.first().map(|(t, _)| *t),
            self.blocked_until,
            self.slow_until,
            self.schedule.as_ref().and_then(|s| {
                let t = schedule_now();
                s.next_change(t)
                    .map(|c| now + Duration::from_secs(c.saturating_sub(t).max(1) as u64))
            }),
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        wake.max(now)
    }

    fn watched(&mut self, ev: WatchEvent, now: Instant) {
        match ev {
            WatchEvent::ScanDone => {
                self.scan_done = true;
                log::info!(
                    "start-up scan done in {:.2}s: {} files settling, {} queued",
                    self.status_started.elapsed().as_secs_f64(),
                    self.tracker.len(),
                    self.entries.len()
                );
                // Queued in the journal but not found by the scan: deleted while we were
                // down. Dispatch them anyway so the uploader aborts any multipart upload
                // and the journal drops them.
                let left: Vec<_> = self.journaled.drain().collect();
                for (file, (size, mtime_ns)) in left {
                    if let Some((root, prio)) = self.roots.get(&file.source).cloned() {
                        let path = root.join(&file.rel);
                        self.enqueue_entry(file, Entry::fresh(path, size, mtime_ns, prio));
                    }
                }
            }
            WatchEvent::Gone { file } => {
                self.tracker.remove(&file);
                if !self.in_flight.contains(&file) && self.entries.contains_key(&file) {
                    // Let the uploader confirm: it also aborts a multipart upload.
                    log::debug!("{file}: deleted while queued");
                }
            }
            WatchEvent::Seen {
                file,
                size,
                mtime_ns,
            } => {
                self.journaled_seen(&file, size, mtime_ns, now);
            }
        }
    }

    fn journaled_seen(&mut self, file: &FileRef, size: u64, mtime_ns: i64, now: Instant) {
        let seen = Seen { size, mtime_ns };
        if let Some(e) = self.entries.get(file) {
            if (e.size, e.mtime_ns) == (size, mtime_ns) {
                return; // queued as it is
            }
            if self.in_flight.contains(file) {
                self.dirty.insert(file.clone());
                return;
            }
            // Changed after it was queued: it waits to be stable again.
            self.remove_entry(file);
        }
        if queue::lock(&self.ctx.journal)
            .state()
            .is_uploaded(file, size, mtime_ns)
        {
            self.tracker.remove(file);
            self.journaled.remove(file);
            return;
        }
        let was_journaled = self.journaled.remove(file) == Some((size, mtime_ns));
        let old_enough = self.mode == Mode::Once && age(mtime_ns) >= self.stability;
        if was_journaled || old_enough {
            self.tracker.observe_with_deadline(file.clone(), seen, now);
        } else {
            self.tracker.observe(file.clone(), seen, now);
        }
    }

    /// Moves stable files into the queue (journaling them) and due retries back to ready.
    fn promote(&mut self, now: Instant) {
        let stable = self.tracker.take_ready(now, READY_BATCH);
        let mut records = Vec::new();
        let mut new_entries = Vec::new();
        for (file, seen) in stable {
            let Some((root, prio)) = self.roots.get(&file.source).cloned() else {
                continue;
            };
            let path = root.join(&file.rel);
            // One stat to confirm: writes through mmap, or events lost, change nothing
            // inotify told us about.
            match upload::stat(&path) {
                Ok(Some((size, mtime_ns))) if (size, mtime_ns) == (seen.size, seen.mtime_ns) => {
                    if self.in_flight.contains(&file) {
                        self.dirty.insert(file);
                        continue;
                    }
                    // Already queued as it is (a restart): nothing new to journal.
                    let known = queue::lock(&self.ctx.journal)
                        .state()
                        .pending
                        .get(&file)
                        .is_some_and(|p| (p.size, p.mtime_ns, p.prio) == (size, mtime_ns, prio));
                    if !known {
                        records.push(Record::Queued {
                            src: file.source.clone(),
                            rel: file.rel.clone(),
                            size,
                            mtime_ns,
                            prio,
                            queued_at: upload::unix_now(),
                        });
                    }
                    new_entries.push((file, Entry::fresh(path, size, mtime_ns, prio)));
                }
                Ok(Some((size, mtime_ns))) => {
                    self.tracker.observe(file, Seen { size, mtime_ns }, now);
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("{}: {e}; looking again later", path.display());
                    self.tracker.observe(file, seen, now);
                }
            }
        }
        if !new_entries.is_empty() {
            let appended = queue::lock(&self.ctx.journal).append(&records); // a no-op when empty
            match appended {
                Ok(()) => {
                    for (file, entry) in new_entries {
                        self.enqueue_entry(file, entry);
                    }
                }
                Err(e) => {
                    // Not journaled means not acknowledged: they wait and are tried again.
                    log::error!("{e}; {} files stay waiting", records.len());
                    for (file, entry) in new_entries {
                        self.tracker.observe(
                            file,
                            Seen {
                                size: entry.size,
                                mtime_ns: entry.mtime_ns,
                            },
                            now,
                        );
                    }
                }
            }
        }
        while let Some((t, _)) = self.delayed.first() {
            if *t > now {
                break;
            }
            let Some((_, file)) = self.delayed.pop_first() else {
                break;
            };
            self.delayed_at.remove(&file);
            if let Some(e) = self.entries.get(&file) {
                self.ready.insert((Reverse(e.prio), e.mtime_ns, file));
            }
        }
    }

    fn enqueue_entry(&mut self, file: FileRef, entry: Entry) {
        self.remove_entry(&file);
        if entry.size < self.multipart_threshold {
            self.small_entries += 1;
        }
        self.queued_bytes += entry.size;
        self.ready
            .insert((Reverse(entry.prio), entry.mtime_ns, file.clone()));
        self.entries.insert(file, entry);
    }

    fn remove_entry(&mut self, file: &FileRef) {
        if let Some(e) = self.entries.remove(file) {
            if e.size < self.multipart_threshold {
                self.small_entries -= 1;
            }
            self.queued_bytes -= e.size;
            self.ready
                .remove(&(Reverse(e.prio), e.mtime_ns, file.clone()));
            if let Some(at) = self.delayed_at.remove(file) {
                self.delayed.remove(&(at, file.clone()));
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        // Until the start-up scan is over, what is ready is only what was found first;
        // waiting for all of it lets priorities decide the order.
        if !self.scan_done {
            return;
        }
        if self.gave_up {
            // `once` after a fatal error: what becomes ready is failed, not sent.
            let files: Vec<FileRef> = self
                .entries
                .keys()
                .filter(|f| !self.in_flight.contains(*f))
                .cloned()
                .collect();
            for f in files {
                self.remove_entry(&f);
                self.failed.insert(f);
            }
            return;
        }
        let open = allowed(self.schedule.as_ref(), schedule_now());
        if open.is_some() != self.window_open {
            self.window_open = open.is_some();
            if self.window_open {
                log::info!("upload window open");
            } else {
                log::info!(
                    "upload window closed: uploads pause at the next part boundary; files keep being queued"
                );
            }
        }
        self.ctx
            .gate
            .set(open.is_some(), open.and_then(|o| o.max_bytes_per_second));
        if open.is_none() {
            return;
        }
        if self.blocked_until.is_some_and(|t| now < t) || self.slow_until.is_some_and(|t| now < t) {
            return;
        }
        // After a credentials error, one probe at a time.
        let limit = if self.blocked { 1 } else { self.concurrency };
        if self.blocked && self.blocked_until.is_some() {
            self.blocked_until = None;
            self.ctx.s3.reload_credentials();
        }
        while self.in_flight.len() < limit {
            let Some(file) = self.next_ready() else { break };
            let Some(e) = self.entries.get(&file) else {
                continue;
            };
            let progress = Arc::new(AtomicU64::new(0));
            self.progress.insert(file.clone(), Arc::clone(&progress));
            let job = Job {
                progress,
                file: file.clone(),
                path: e.path.clone(),
                size: e.size,
                mtime_ns: e.mtime_ns,
            };
            let large = e.size >= self.multipart_threshold;
            let Some(jobs) = &self.jobs else { return };
            match jobs.try_send(job) {
                Ok(()) => {
                    log::debug!("sending {file}");
                    if large {
                        self.large_in_flight.insert(file.clone());
                    }
                    self.in_flight.insert(file);
                }
                Err(_) => {
                    // Cannot happen while in_flight < capacity; put it back and wait.
                    log::error!("uploader queue unexpectedly full");
                    if let Some(e) = self.entries.get(&file) {
                        self.ready.insert((Reverse(e.prio), e.mtime_ns, file));
                    }
                    break;
                }
            }
        }
    }

    /// About once a second while anything is happening (and once more when asked):
    /// updates the metrics gauges and rewrites the status file.
    fn report(&mut self, now: Instant, force: bool) {
        let busy =
            !self.entries.is_empty() || !self.tracker.is_empty() || !self.in_flight.is_empty();
        if !(force || busy || self.status.was_busy) {
            return;
        }
        if !force && now.duration_since(self.status.last_write) < STATUS_INTERVAL {
            return;
        }
        self.status.was_busy = busy;
        self.status.last_write = now;
        let t = upload::unix_now();
        let oldest = self
            .entries
            .values()
            .map(|e| e.mtime_ns)
            .min()
            .map_or(0.0, |m| age(m).as_secs_f64());
        {
            let mut g = self
                .metrics
                .gauges
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            g.queue_depth = self.entries.len() as u64;
            g.queue_bytes = self.queued_bytes;
            g.oldest_pending_seconds = oldest;
        }
        let sent = self.ctx.sent_bytes.load(Ordering::Relaxed);
        let rate = self.status.rate(now, sent);
        let mut by_source: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (f, e) in &self.entries {
            let s = by_source.entry(f.source.as_str()).or_default();
            s.0 += 1;
            s.1 += e.size;
        }
        let mut in_flight: Vec<serde_json::Value> = Vec::new();
        let mut done_in_flight = 0u64;
        for f in &self.in_flight {
            let size = self.entries.get(f).map_or(0, |e| e.size);
            let done = self
                .progress
                .get(f)
                .map_or(0, |p| p.load(Ordering::Relaxed))
                .min(size);
            done_in_flight += done;
            in_flight.push(serde_json::json!({
                "source": f.source, "path": f.rel, "size": size, "done_bytes": done,
                "percent": if size == 0 { 100.0 } else { (done as f64 * 1000.0 / size as f64).round() / 10.0 },
            }));
        }
        in_flight.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        let left = self.queued_bytes.saturating_sub(done_in_flight);
        let eta = (rate > 0.0).then(|| (left as f64 / rate).round());
        let window = match &self.schedule {
            None => serde_json::json!({ "open": true }),
            Some(s) => {
                let now_s = schedule_now();
                serde_json::json!({
                    "open": self.window_open,
                    "next_open": if self.window_open { None } else { s.next_open(now_s).map(crate::key::rfc3339_utc) },
                })
            }
        };
        let doc = serde_json::json!({
            "pid": std::process::id(),
            "updated_at": crate::key::rfc3339_utc(t),
            "started_at": crate::key::rfc3339_utc(self.status.started_at),
            "queue": {
                "files": self.entries.len(),
                "bytes": self.queued_bytes,
                "settling_files": self.tracker.len(),
                "oldest_pending_seconds": oldest.round(),
                "by_source": by_source.iter().map(|(s, (n, b))| (s.to_string(), serde_json::json!({"files": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            },
            "in_flight": in_flight,
            "totals": {
                "files_uploaded": self.summary.uploaded_files,
                "bytes_uploaded": self.summary.uploaded_bytes,
                "files_already_in_s3": self.summary.skipped_files,
                "failed_attempts": self.status.failed_total,
            },
            "throughput_bytes_per_second": rate.round(),
            "eta_seconds": eta,
            "window": window,
            "last_error": self.status.last_error.as_ref().map(|(at, m)| serde_json::json!({"at": crate::key::rfc3339_utc(*at), "message": m})),
        });
        if let Err(e) = crate::status::write(&self.status.state_dir, &doc) {
            log::debug!("status file: {e}");
        }
    }

    /// Tells the permits whether small files are about, so that one is kept for them.
    fn update_small_reservation(&self) {
        self.ctx
            .permits
            .keep_one_for_small(self.small_entries > 0 || !self.tracker.is_empty());
    }

    /// The next file to send: highest priority, then oldest. Multipart files may fill at
    /// most `concurrency - 1` uploaders, so a small file never waits behind large ones;
    /// while that many are in flight the first small file in order goes instead.
    fn next_ready(&mut self) -> Option<FileRef> {
        let max_large = if self.concurrency >= 2 {
            self.concurrency - 1
        } else {
            1
        };
        let key = if self.large_in_flight.len() >= max_large {
            let threshold = self.multipart_threshold;
            let entries = &self.entries;
            self.ready
                .iter()
                .find(|k| entries.get(&k.2).is_some_and(|e| e.size < threshold))
                .cloned()
        } else {
            self.ready.first().cloned()
        }?;
        self.ready.remove(&key);
        Some(key.2)
    }

    fn finished(&mut self, d: Done, now: Instant) {
        let file = d.job.file.clone();
        self.in_flight.remove(&file);
        self.large_in_flight.remove(&file);
        self.progress.remove(&file);
        let mut look_again = self.dirty.remove(&file);
        match d.outcome {
            Outcome::Uploaded {
                sent_bytes,
                skipped,
            } => {
                if skipped {
                    self.summary.skipped_files += 1;
                } else {
                    self.summary.uploaded_files += 1;
                    self.summary.uploaded_bytes += d.job.size;
                    self.metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .bytes_uploaded
                        .fetch_add(d.job.size, Ordering::Relaxed);
                    log::info!(
                        "uploaded {file} ({} bytes, {} sent, {:.1}s)",
                        d.job.size,
                        sent_bytes,
                        d.elapsed.as_secs_f64()
                    );
                }
                self.remove_entry(&file);
                if let Some(d) = &self.disk {
                    d.wake();
                }
                if self.blocked {
                    log::info!("S3 accepts the requests again; uploads resume");
                    self.blocked = false;
                }
                self.slowdowns = 0;
            }
            Outcome::Gone => {
                log::info!("{file}: deleted before its upload; dropped from the queue");
                self.remove_entry(&file);
                let record = Record::Dropped {
                    src: file.source.clone(),
                    rel: file.rel.clone(),
                    reason: "gone".into(),
                };
                if let Err(e) = queue::lock(&self.ctx.journal).append(&[record]) {
                    log::warn!("{e}");
                }
                look_again = false;
            }
            Outcome::Changed => {
                log::info!("{file}: changed during its upload; it is sent again once stable");
                self.remove_entry(&file);
                look_again = true;
            }
            Outcome::Interrupted => {}
            Outcome::Paused => {
                // Back in line, not counted as a failure; the gate keeps it until the
                // next window, and the journal keeps its parts.
                if let Some(e) = self.entries.get(&file) {
                    self.ready
                        .insert((Reverse(e.prio), e.mtime_ns, file.clone()));
                }
            }
            Outcome::Failed(e) => {
                self.metrics.failed_uploads.fetch_add(1, Ordering::Relaxed);
                self.status.failed_total += 1;
                self.status.last_error = Some((upload::unix_now(), format!("{file}: {e}")));
                let class = e.class();
                match class {
                    Class::Credentials | Class::Configuration => {
                        if !self.blocked {
                            log::error!(
                                "S3 refused {file}: {e}. {}. Uploads pause; retrying every {}s",
                                e.advice(),
                                self.retry_max.as_secs()
                            );
                        } else {
                            log::debug!("still refused: {e}");
                        }
                        self.blocked = true;
                        self.blocked_until = Some(now + self.retry_max);
                        if self.mode == Mode::Once {
                            // Nothing will work this run: give up, keep every file queued.
                            self.failed.insert(file.clone());
                            self.remove_entry(&file);
                            if !self.gave_up {
                                log::error!(
                                    "giving up this run; the files stay queued for the next"
                                );
                            }
                            self.gave_up = true;
                            self.blocked_until = None;
                            self.blocked = false;
                            return;
                        }
                        self.retry_later(&file, now + self.retry_max, false);
                    }
                    Class::SlowDown => {
                        self.slowdowns += 1;
                        let wait = backoff(
                            self.slowdowns,
                            self.retry_initial,
                            self.retry_max,
                            &mut self.jitter,
                        );
                        log::warn!(
                            "{e}: S3 asks to slow down; pausing new requests for {:.1}s",
                            wait.as_secs_f64()
                        );
                        self.slow_until = Some(now + wait);
                        self.retry_after_failure(&file, now, &e.to_string());
                    }
                    Class::Rejected => {
                        log::warn!("{e}; retrying {file} in {}s", self.retry_max.as_secs());
                        self.retry_later(&file, now + self.retry_max, true);
                    }
                    Class::Transient | Class::ContentChanged | Class::UploadLost => {
                        self.retry_after_failure(&file, now, &e.to_string());
                    }
                }
            }
            Outcome::Local(why) => {
                self.metrics.failed_uploads.fetch_add(1, Ordering::Relaxed);
                self.status.failed_total += 1;
                self.status.last_error = Some((upload::unix_now(), format!("{file}: {why}")));
                self.retry_after_failure(&file, now, &why);
            }
        }
        if look_again
            && let Some((root, _)) = self.roots.get(&file.source).cloned()
            && let Ok(Some((size, mtime_ns))) = upload::stat(&root.join(&file.rel))
        {
            self.remove_entry(&file);
            self.journaled_seen(&file, size, mtime_ns, now);
        }
    }

    fn retry_after_failure(&mut self, file: &FileRef, now: Instant, why: &str) {
        let attempts = self.entries.get(file).map_or(1, |e| e.attempts + 1);
        let wait = backoff(
            attempts,
            self.retry_initial,
            self.retry_max,
            &mut self.jitter,
        );
        log::warn!(
            "{file}: attempt {attempts} failed: {why}; retrying in {:.1}s",
            wait.as_secs_f64()
        );
        self.retry_later(file, now + wait, true);
    }

    fn retry_later(&mut self, file: &FileRef, at: Instant, counts: bool) {
        let Some(e) = self.entries.get_mut(file) else {
            return;
        };
        if counts {
            e.attempts += 1;
        }
        if self.mode == Mode::Once && e.attempts >= ONCE_MAX_ATTEMPTS {
            log::error!(
                "{file}: giving up after {} attempts this run; it stays queued",
                e.attempts
            );
            self.failed.insert(file.clone());
            self.remove_entry(file);
            return;
        }
        self.ready
            .remove(&(Reverse(e.prio), e.mtime_ns, file.clone()));
        if let Some(old) = self.delayed_at.insert(file.clone(), at) {
            self.delayed.remove(&(old, file.clone()));
        }
        self.delayed.insert((at, file.clone()));
    }
}

impl Drop for Planner {
    fn drop(&mut self) {
        self.jobs.take();
    }
}

/// How long ago `mtime_ns` was, by the wall clock (zero if in the future).
fn age(mtime_ns: i64) -> Duration {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Duration::from_nanos(now_ns.saturating_sub(mtime_ns).max(0) as u64)
}
