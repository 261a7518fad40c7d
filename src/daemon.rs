//! The daemon: starts the threads, runs the planner on the calling thread, carries out
//! what it asks for, and stops everything in a fixed order. `run` and `once` are the
//! same machine; `once` treats old files as stable at once and returns when nothing is
//! left to do.
//!
//! Threads and channels (capacities are bounds, see ARCHITECTURE.md):
//! - `watch` → planner: [`WatchEvent`], 4,096, read only while the planner has room;
//! - `signals` → planner: [`Control`], 4;
//! - planner → `upload-N`: [`Job`], `s3.concurrency` (never full: the planner sends only
//!   into a free slot);
//! - `upload-N` → planner: [`Report`], 64.
//!
//! The planner ([`crate::planner`]) decides; this file does the IO it asks for: stats,
//! journal appends, handing jobs to uploaders, the gate, the disk thread's wake-up, the
//! status file and the metrics gauges.
//!
//! Shutdown order: the planner returns; the stop flag is raised so transfers end at the
//! next buffer; the job channel is closed and the uploaders are joined; the watcher's
//! channel is closed and it is woken and joined; the signal thread is closed and joined;
//! the metrics publisher publishes once more and is joined. The journal, fsynced at
//! every step, is the last thing dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, never, select};

use crate::config::Config;
use crate::credentials::Provider;
use crate::disk::{self, DiskManager};
use crate::journal::Journal;
use crate::links::{LinkWatch, Links};
use crate::metrics::{Metrics, Publisher};
use crate::planner::{self, Effect, Input, Job, Mode, Now, Outcome, Planner, Report, Totals};
use crate::probe::stat;
use crate::requests;
use crate::retry::Jitter;
use crate::s3::S3;
use crate::status::{self, Rate};
use crate::throttle::Gate;
use crate::upload::{self, Context, Permits, Recent, Settings};
use crate::watch::{SourceSpec, WatchEvent, Watcher};

/// Watch events buffered before the watcher waits for the planner: as many as the loop
/// takes at once ([`WATCH_BATCH`]). A bounded channel allocates and writes all its
/// slots up front; 4096 of them were a quarter MiB of a small upload's peak RSS.
const WATCH_CHANNEL_CAPACITY: usize = 1024;
/// Reports buffered before an uploader waits for the planner.
const DONE_CHANNEL_CAPACITY: usize = 64;
/// How long uploaders get at shutdown to notice the stop flag; a request blocked waiting
/// for an answer cannot be interrupted, so past this the process exits without them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Planner ticks run back to back before the channels are read again (a tick promotes
/// at most [`planner::READY_BATCH`] files).
const TICKS_PER_STEP: usize = 4;
/// Watch events taken in one go before the planner ticks again: a start-up scan of
/// 100,000 files is not 100,000 ticks.
const WATCH_BATCH: usize = 1024;
/// How often the state dir is read for new on-demand requests (a readdir), and open
/// ones checked for being done.
const REQUESTS_CHECK: Duration = Duration::from_secs(1);

/// Messages to the planner from outside the pipeline.
#[derive(Debug)]
pub enum Control {
    Shutdown(i32),
}

/// What a run did, for the exit status and the last log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub totals: Totals,
    pub stopped_by_signal: bool,
}

/// Runs the daemon until SIGTERM/SIGINT (`Run`) or until idle (`Once`).
pub fn run(config: Config, mode: Mode) -> Result<Summary, String> {
    let journal = open_journal(&config)?;
    let credentials = Provider::resolve(
        config.credentials_profile.as_deref(),
        config.credentials_iot.as_ref(),
    )
    .map_err(|e| e.to_string())?;
    log::info!("credentials from {}", credentials.source().describe());
    let s3 = Arc::new(S3::new(&config.s3, Arc::clone(&credentials))?);
    let stop = Arc::new(AtomicBool::new(false));
    let links = Arc::new(Links::from_config(&config)?);
    let ctx = Arc::new(context(
        &config,
        (s3, Arc::clone(&links)),
        Arc::clone(&journal),
        Arc::clone(&stop),
    ));
    let disk_counters = Arc::new(disk::Counters::default());
    let metrics = Arc::new(Metrics {
        disk: Arc::clone(&disk_counters),
        links: links.enabled().then(|| Arc::clone(&links)),
        ..Metrics::default()
    });
    // Everything that can fail comes before the threads that must be stopped.
    let publisher = spawn_publisher(&config, credentials, &metrics)?;
    let disk_manager = match mode {
        Mode::Run => DiskManager::spawn(&config, Arc::clone(&journal), Arc::clone(&disk_counters))
            .map_err(|e| format!("spawning the disk thread: {e}"))?,
        Mode::Once => None,
    };
    let (ctl_tx, ctl_rx) = bounded::<Control>(4);
    let signals = Signals::spawn(ctl_tx)?;
    let (job_tx, job_rx) = bounded::<Job>(config.s3.concurrency);
    let (done_tx, done_rx) = bounded::<Report>(DONE_CHANNEL_CAPACITY);
    let uploaders = Uploaders::spawn(config.s3.concurrency, &ctx, job_rx, done_tx)?;
    let watcher = Watcher::spawn(sources(&config), WATCH_CHANNEL_CAPACITY)
        .map_err(|e| format!("inotify: {e}"))?;
    let (link_tx, link_rx) = bounded::<planner::LinkNow>(4);
    let link_watch = match links.enabled() {
        true => Some(
            LinkWatch::spawn(Arc::clone(&links), link_tx)
                .map_err(|e| format!("spawning the links thread: {e}"))?,
        ),
        false => None,
    };
    let fleet = match (mode, config.requests_poll) {
        (Mode::Run, Some(poll)) => Some(
            requests::fleet::Fleet::spawn(Arc::clone(&ctx.s3), fleet_settings(&config, poll))
                .map_err(|e| format!("spawning the requests thread: {e}"))?,
        ),
        _ => None,
    };

    let mut shell = Shell {
        planner: new_planner(&config, mode, &journal),
        mode,
        journal: Arc::clone(&journal),
        ctx: Arc::clone(&ctx),
        jobs: Some(job_tx),
        disk: disk_manager,
        metrics,
        published: Totals::default(),
        status: StatusWriter::new(&config),
        last_progress: Instant::now(),
        requests: Requests::new(&config.state_dir),
    };
    let stopped_by_signal = shell.run(watcher.events(), &done_rx, (&ctl_rx, &link_rx));
    let totals = shell.planner.totals();

    // Shutdown, in the documented order.
    stop.store(true, Ordering::Relaxed);
    drop(shell); // closes the job channel, joins the disk thread
    let stuck = uploaders.join(&done_rx, SHUTDOWN_GRACE);
    drop(watcher);
    drop(link_watch);
    drop(fleet);
    drop(signals);
    if mode == Mode::Once && stuck == 0 && !stopped_by_signal {
        let n = disk::pass_once(&config, &journal, &disk_counters);
        if n > 0 {
            log::info!("disk: {n} files deleted");
        }
    }
    // Last: one more publish, so what this run did is counted.
    drop(publisher);
    if stuck > 0 {
        // A request waiting on a server that does not answer cannot be interrupted.
        // Everything acknowledged is in the journal; holding its writer until the
        // process exits guarantees no append is cut in half.
        log::warn!(
            "{stuck} uploads still waiting on the network after {SHUTDOWN_GRACE:?}; exiting (their progress is journaled)"
        );
        std::mem::forget(journal.writer());
    }
    log::info!(
        "stopped: {} files uploaded ({} bytes), {} already in S3, {} failed",
        totals.files_uploaded,
        totals.bytes_uploaded,
        totals.files_already_in_s3,
        totals.given_up
    );
    Ok(Summary {
        totals,
        stopped_by_signal,
    })
}

/// What the fleet's request poller needs of the config.
fn fleet_settings(config: &Config, poll: Duration) -> requests::fleet::Settings {
    requests::fleet::Settings {
        prefix: format!("{}{}/.requests/", config.s3.prefix, config.vehicle_id),
        state_dir: config.state_dir.clone(),
        poll,
        sources: config.sources.iter().map(|s| s.name.clone()).collect(),
    }
}

/// What the planner needs of the config (the planner itself imports no config).
fn planner_settings(config: &Config, mode: Mode) -> planner::Settings {
    planner::Settings {
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
                let info = planner::SourceInfo {
                    root: s.path.clone(),
                    prio: s.priority,
                    max_wait: s.max_wait,
                };
                (s.name.clone(), info)
            })
            .collect(),
        schedule: config.schedule.clone(),
        max_tracked_files: planner::MAX_TRACKED_FILES,
        link_rules: crate::links::rules(config),
    }
}

/// The planner, knowing what the journal had queued, with a jitter seed of its own.
fn new_planner(config: &Config, mode: Mode, journal: &Journal) -> Planner {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ std::process::id() as u64;
    log::debug!("retry jitter seed {seed}");
    Planner::new(
        planner_settings(config, mode),
        Jitter::new(seed),
        &journal.read(),
        Instant::now(),
    )
}

/// Opens the journal, reporting damage it skipped.
fn open_journal(config: &Config) -> Result<Arc<Journal>, String> {
    let (journal, replayed) =
        Journal::open(&config.state_dir, config.key_scheme()).map_err(|e| e.to_string())?;
    for (line, why) in &replayed.damaged {
        log::warn!(
            "journal {} line {line} was damaged (torn by a power cut?) and skipped: {why}",
            journal.path().display()
        );
    }
    {
        let state = journal.read();
        log::info!(
            "state: {} uploaded, {} queued, {} multipart in progress",
            state.registry_len(),
            state.pending.len(),
            state.multipart.len()
        );
    }
    Ok(Arc::new(journal))
}

fn context(
    config: &Config,
    (s3, links): (Arc<S3>, Arc<Links>),
    journal: Arc<Journal>,
    stop: Arc<AtomicBool>,
) -> Context {
    Context {
        links,
        s3,
        journal,
        settings: Settings {
            scheme: config.key_scheme(),
            multipart_threshold_bytes: config.s3.multipart_threshold_bytes,
            part_size_bytes: config.s3.part_size_bytes,
            concurrency: config.s3.concurrency,
            compress: config.compress_rules(),
        },
        permits: Permits::new(config.s3.concurrency),
        stop,
        sent_bytes: Arc::new(AtomicU64::new(0)),
        gate: Arc::new(Gate::default()),
        recent: Recent::default(),
        buffers: Default::default(),
        doubts: crate::upload::orphans::Doubts::new(&config.state_dir),
        link_down: AtomicBool::new(false),
    }
}

fn sources(config: &Config) -> Vec<SourceSpec> {
    config
        .sources
        .iter()
        .map(|s| SourceSpec {
            name: s.name.clone(),
            root: s.path.clone(),
            recursive: s.recursive,
            include: s.include.clone(),
            exclude: s.exclude.clone(),
        })
        .collect()
}

fn spawn_publisher(
    config: &Config,
    credentials: Arc<Provider>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Publisher>, String> {
    let Some(m) = &config.metrics else {
        return Ok(None);
    };
    let measured = match &config.disk {
        Some(d) => d.paths.clone(),
        None => config.sources.iter().map(|s| s.path.clone()).collect(),
    };
    log::info!(
        "metrics: publishing to {} every {}s",
        m.endpoint,
        m.interval.as_secs()
    );
    Publisher::spawn(
        m,
        &config.vehicle_id,
        credentials,
        Arc::clone(metrics),
        measured,
    )
    .map(Some)
    .map_err(|e| format!("spawning the metrics thread: {e}"))
}

/// The planner's hands: owns the planner and does what it asks.
struct Shell {
    planner: Planner,
    mode: Mode,
    journal: Arc<Journal>,
    ctx: Arc<Context>,
    jobs: Option<Sender<Job>>,
    /// Woken after each upload, so deferred deletion and cleanup follow uploads.
    disk: Option<DiskManager>,
    metrics: Arc<Metrics>,
    /// The totals last added to the metrics counters.
    published: Totals,
    status: StatusWriter,
    last_progress: Instant,
    requests: Requests,
}

/// The open on-demand requests, read from the state dir every [`REQUESTS_CHECK`].
struct Requests {
    state_dir: std::path::PathBuf,
    open: Vec<requests::Request>,
    checked: Option<Instant>,
    /// For the status: each open request and its progress.
    views: Vec<status::RequestView>,
}

impl Requests {
    fn new(state_dir: &std::path::Path) -> Requests {
        Requests {
            state_dir: state_dir.to_path_buf(),
            open: Vec::new(),
            checked: None,
            views: Vec::new(),
        }
    }

    fn slices(&self) -> Vec<crate::slice::Slice> {
        self.open.iter().map(requests::Request::slice).collect()
    }

    /// Reads the open requests; returns whether the set changed.
    fn read(&mut self) -> bool {
        let open = requests::open(&self.state_dir);
        let ids = |v: &[requests::Request]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        if ids(&open) == ids(&self.open) {
            return false;
        }
        for r in open
            .iter()
            .filter(|r| !self.open.iter().any(|o| o.id == r.id))
        {
            log::info!(
                "request {}: {} goes first{}",
                r.id,
                requests::fleet::describe(r),
                r.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        self.open = open;
        true
    }

    /// Answers each request none of whose files is pending; returns whether any was.
    fn answer_done(&mut self, planner: &Planner, journal: &crate::journal::State) -> bool {
        let now = crate::clock::system_now();
        let before = self.open.len();
        self.views.clear();
        let mut still = Vec::with_capacity(before);
        for r in std::mem::take(&mut self.open) {
            let p = planner.slice_progress(&r.slice(), journal);
            if !p.done() {
                let progress = (p.uploaded as u64, (p.pending + p.set_aside) as u64);
                self.views.push(status::request_view(&r, Some(progress)));
                still.push(r);
                continue;
            }
            let matched = p.uploaded + p.set_aside;
            log::info!(
                "request {}: done, {} of its {matched} files in S3{}",
                r.id,
                p.uploaded,
                match p.set_aside {
                    0 => String::new(),
                    n => format!(", {n} set aside (see status)"),
                }
            );
            let answer = r.answer(matched, p.uploaded, p.set_aside, now);
            requests::finish(&self.state_dir, &r, &answer);
        }
        self.open = still;
        self.open.len() != before
    }
}

impl Shell {
    /// The planner loop. Returns whether a signal stopped it.
    fn run(
        &mut self,
        watch: &Receiver<WatchEvent>,
        done: &Receiver<Report>,
        (ctl, link): (&Receiver<Control>, &Receiver<planner::LinkNow>),
    ) -> bool {
        let full = never::<WatchEvent>();
        // The links thread ends only at shutdown; a closed channel is then never ready.
        let no_link = never::<planner::LinkNow>();
        let mut link = link;
        loop {
            let (now, more) = self.tick();
            if self.mode == Mode::Once && self.planner.idle(now.mono) {
                let changing = self.planner.still_changing();
                if !changing.is_empty() {
                    let names: Vec<String> =
                        changing.iter().take(5).map(ToString::to_string).collect();
                    log::warn!(
                        "{} files still changing after {}s are left for the next run: {}{}",
                        changing.len(),
                        self.planner.once_patience().as_secs(),
                        names.join(", "),
                        if changing.len() > 5 { ", …" } else { "" }
                    );
                }
                if self.planner.queued_left() > 0 {
                    log::info!(
                        "outside every upload window: {} files stay queued",
                        self.planner.queued_left()
                    );
                }
                break;
            }
            let timeout = if more {
                Duration::ZERO
            } else {
                self.planner
                    .next_wake(now)
                    .saturating_duration_since(now.mono)
                    .min(REQUESTS_CHECK)
            };
            // With no room for more files the watcher waits (and a flood stays on disk).
            let watch = if self.planner.wants_events() {
                watch
            } else {
                &full
            };
            select! {
                recv(ctl) -> msg => {
                    if let Ok(Control::Shutdown(sig)) = msg {
                        log::info!("signal {sig}: stopping (in-flight uploads resume on the next start)");
                        self.finish();
                        return true;
                    }
                }
                recv(done) -> msg => {
                    if let Ok(report) = msg {
                        self.input(Input::Finished(report));
                    }
                }
                recv(link) -> msg => match msg {
                    Ok(now) => self.input(Input::Link(now)),
                    Err(_) => link = &no_link,
                },
                recv(watch) -> msg => match msg {
                    Ok(ev) => {
                        self.input(watch_input(ev));
                        for ev in watch.try_iter().take(WATCH_BATCH) {
                            self.input(watch_input(ev));
                            if !self.planner.wants_events() {
                                break;
                            }
                        }
                    }
                    Err(_) => {
                        log::error!("the watcher stopped; stopping");
                        break;
                    }
                },
                default(timeout) => {}
            }
            self.log_progress();
        }
        self.finish();
        false
    }

    /// Lets time move the planner on, and refreshes what is derived from it. Returns
    /// whether the planner may have more to do at once: every tick of the step had
    /// effects (a backlog of settled files larger than the step takes, say), so the
    /// loop must not wait for an event or its next deadline before the next step.
    fn tick(&mut self) -> (Now, bool) {
        let mut now = read_now();
        let mut more = true;
        for _ in 0..TICKS_PER_STEP {
            now = read_now();
            let mut effects = Vec::new();
            self.planner.tick(now, &self.journal.read(), &mut effects);
            if effects.is_empty() {
                more = false;
                break;
            }
            self.carry_out(now, effects);
        }
        self.check_requests(now);
        self.publish_counters();
        self.status.maybe_write(
            &self.planner,
            &self.ctx,
            &self.metrics,
            (now, &self.requests.views),
            false,
        );
        (now, more)
    }

    /// Takes requests new in the state dir to the planner, and answers those done.
    fn check_requests(&mut self, now: Now) {
        let r = &mut self.requests;
        if r.checked
            .is_some_and(|t| now.mono.duration_since(t) < REQUESTS_CHECK)
        {
            return;
        }
        r.checked = Some(now.mono);
        if r.read() {
            let slices = r.slices();
            self.input(Input::Requests(slices));
        }
        let answered = {
            let state = self.journal.read();
            self.requests.answer_done(&self.planner, &state)
        };
        if answered {
            let slices = self.requests.slices();
            self.input(Input::Requests(slices));
        }
    }

    fn input(&mut self, input: Input) {
        let now = read_now();
        let mut effects = Vec::new();
        let scan_done = matches!(input, Input::ScanDone);
        {
            let state = self.journal.read();
            if let Input::Seen { file, version } = &input {
                state.mark_seen(file, version);
            }
            self.planner.handle(input, now, &state, &mut effects);
        }
        // Renames found at the end of the scan are journaled before what the scan did
        // not see is forgotten.
        self.carry_out(now, effects);
        if scan_done {
            // Registry entries the scan did not see are of files deleted (or replaced)
            // while the daemon was down: forgotten now, without a stat of every file.
            match self.journal.forget_unseen() {
                Ok(0) => {}
                Ok(n) => log::info!("journal: forgot {n} entries whose files are gone"),
                Err(e) => log::warn!("journal: {e}"),
            }
        }
    }

    /// Carries out effects, feeding their answers back to the planner until none is left.
    fn carry_out(&mut self, now: Now, effects: Vec<Effect>) {
        let mut todo: VecDeque<Effect> = effects.into();
        while let Some(effect) = todo.pop_front() {
            if let Some(answer) = self.execute(effect) {
                let mut more = Vec::new();
                {
                    let state = self.journal.read();
                    self.planner.handle(answer, now, &state, &mut more);
                }
                todo.extend(more);
            }
        }
    }

    fn execute(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Confirm(files) => {
                let answers = files
                    .into_iter()
                    .map(|(file, _)| {
                        let path = self.ctx_path(&file);
                        let now = stat(&path).map_err(|e| format!("{}: {e}", path.display()));
                        (file, now)
                    })
                    .collect();
                Some(Input::Confirmed(answers))
            }
            Effect::Journal { records, files } => {
                let result = self.journal.append(&records).map_err(|e| e.to_string());
                if files.is_empty() {
                    if let Err(e) = result {
                        log::warn!("{e}");
                    }
                    return None;
                }
                Some(Input::Journaled { files, result })
            }
            Effect::Look(file) => match stat(&self.ctx_path(&file)) {
                Ok(Some(version)) => Some(Input::Seen { file, version }),
                Ok(None) => Some(Input::Gone { file }),
                Err(e) => {
                    log::warn!("{file}: {e}; it is looked at again when it changes");
                    None
                }
            },
            Effect::Dispatch(job) => self.dispatch(job),
            Effect::Gate { open, cap } => {
                self.ctx.gate.set(open, cap);
                None
            }
            Effect::KeepOneForSmall(keep) => {
                self.ctx.permits.keep_one_for_small(keep);
                None
            }
            Effect::WakeDisk => {
                if let Some(d) = &self.disk {
                    d.wake();
                }
                None
            }
            Effect::ReloadCredentials => {
                self.ctx.s3.reload_credentials();
                None
            }
        }
    }

    fn dispatch(&mut self, job: Job) -> Option<Input> {
        let jobs = self.jobs.as_ref()?;
        match jobs.try_send(job) {
            Ok(()) => None,
            // Cannot happen while fewer than `concurrency` are in flight.
            Err(e) => {
                log::error!("uploader queue unexpectedly full");
                Some(Input::Finished(Report {
                    job: e.into_inner(),
                    outcome: Outcome::Interrupted,
                    elapsed: Duration::ZERO,
                }))
            }
        }
    }

    fn ctx_path(&self, file: &crate::file::FileRef) -> std::path::PathBuf {
        self.planner.path(file)
    }

    /// Adds what the planner counted since the last call to the metrics counters.
    fn publish_counters(&mut self) {
        let t = self.planner.totals();
        let p = self.published;
        let m = &self.metrics;
        m.files_uploaded
            .fetch_add(t.files_uploaded - p.files_uploaded, Ordering::Relaxed);
        m.bytes_uploaded
            .fetch_add(t.bytes_uploaded - p.bytes_uploaded, Ordering::Relaxed);
        m.bytes_sent
            .fetch_add(t.bytes_sent - p.bytes_sent, Ordering::Relaxed);
        m.failed_uploads
            .fetch_add(t.failed_attempts - p.failed_attempts, Ordering::Relaxed);
        self.published = t;
    }

    fn log_progress(&mut self) {
        if self.last_progress.elapsed() < planner::IDLE_WAKE {
            return;
        }
        self.last_progress = Instant::now();
        let c = self.planner.files().counts();
        if c.queued + c.settling > 0 {
            log::info!(
                "progress: {} queued, {} uploading, {} settling; {} uploaded so far",
                c.queued - c.uploading,
                c.uploading,
                c.settling,
                self.planner.totals().files_uploaded
            );
        }
    }

    fn finish(&mut self) {
        self.publish_counters();
        let now = read_now();
        self.status.maybe_write(
            &self.planner,
            &self.ctx,
            &self.metrics,
            (now, &self.requests.views),
            true,
        );
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Closing the job channel ends the uploaders' loops; dropping the disk manager
        // joins its thread.
        self.jobs.take();
        self.disk.take();
    }
}

fn watch_input(ev: WatchEvent) -> Input {
    match ev {
        WatchEvent::Seen {
            file,
            version,
            rewritten: false,
        } => Input::Seen { file, version },
        WatchEvent::Seen { file, version, .. } => Input::Rewritten { file, version },
        WatchEvent::Gone { file } => Input::Gone { file },
        WatchEvent::DirGone { dir } => Input::DirGone { dir },
        WatchEvent::ScanDone => Input::ScanDone,
    }
}

/// Writes `status.json` and the metrics gauges about once a second while anything is
/// happening, and once more when asked.
struct StatusWriter {
    state_dir: std::path::PathBuf,
    started_at: i64,
    last_write: Option<Instant>,
    was_busy: bool,
    rate: Rate,
}

impl StatusWriter {
    fn new(config: &Config) -> StatusWriter {
        StatusWriter {
            state_dir: config.state_dir.clone(),
            started_at: crate::clock::system_now(),
            last_write: None,
            was_busy: true,
            rate: Rate::default(),
        }
    }

    fn maybe_write(
        &mut self,
        planner: &Planner,
        ctx: &Context,
        metrics: &Metrics,
        (now, requests): (Now, &[status::RequestView]),
        force: bool,
    ) {
        let c = planner.files().counts();
        let busy = c.queued + c.settling > 0;
        let due = self
            .last_write
            .is_none_or(|t| now.mono.duration_since(t) >= planner::STATUS_INTERVAL);
        // Going idle is written at once: the planner may then sleep a minute, and the
        // last busy view (uploads in flight, a rate) must not stand for it.
        let settled_down = self.was_busy && !busy;
        if !(force || settled_down || busy && due) {
            return;
        }
        self.was_busy = busy;
        self.last_write = Some(now.mono);
        let mut live = planner.view(now);
        live.set_rate(
            self.rate
                .sample(now.mono, ctx.sent_bytes.load(Ordering::Relaxed)),
        );
        live.pid = std::process::id();
        live.requests = requests.to_vec();
        live.link = ctx.links.enabled().then(|| crate::links::view(&ctx.links));
        live.updated_at = crate::calendar::rfc3339_utc(crate::clock::system_now());
        live.started_at = crate::calendar::rfc3339_utc(self.started_at);
        {
            let mut g = metrics.gauges.lock().unwrap_or_else(|p| p.into_inner());
            g.queue_depth = live.queue.files;
            g.queue_bytes = live.queue.bytes;
            g.oldest_pending_seconds = live.queue.oldest_pending_seconds;
            g.quarantined_files = live.quarantined_files;
        }
        if let Err(e) = status::write(&self.state_dir, &live) {
            log::debug!("status file: {e}");
        }
    }
}

/// The signal thread: turns SIGTERM/SIGINT into [`Control::Shutdown`], and SIGHUP into
/// a reopening of the log file.
struct Signals {
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl Signals {
    fn spawn(tx: Sender<Control>) -> Result<Signals, String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| format!("signal handlers: {e}"))?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        // An external logrotate moved the log file away.
                        crate::logfile::request_reopen();
                        log::info!("SIGHUP: log file reopened");
                        continue;
                    }
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
        done: Sender<Report>,
    ) -> Result<Uploaders, String> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (ctx, jobs, done) = (Arc::clone(ctx), jobs.clone(), done.clone());
            let t = std::thread::Builder::new()
                .name(format!("upload-{i}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        let started = Instant::now();
                        let outcome = upload::outcome(upload::upload(&job, &ctx));
                        let report = Report {
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

    /// Joins every uploader, draining their last reports so none blocks on a full
    /// channel. Returns how many are still blocked on the network after `grace`.
    fn join(self, done: &Receiver<Report>, grace: Duration) -> usize {
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

/// The planner's three clocks, read once for a step (the planner reads none itself).
fn read_now() -> Now {
    Now {
        mono: Instant::now(),
        wall_ns: crate::clock::wall_ns(),
        schedule: crate::clock::schedule_now(),
    }
}
