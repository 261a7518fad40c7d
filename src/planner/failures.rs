//! How an upload's end moves its file on: the failure policy.
//!
//! A failure every file would share (no answer from S3, refused credentials, a journal
//! that cannot be written) is a daemon-wide [`Trouble`]: the file goes back to the
//! queue as it was, [`Health`] pauses everything and probes with one upload at a time,
//! and the log says so three times at most (see [`super::outage`]). A failure of the
//! file's own backs it off; one that retrying cannot fix (a 4xx S3 will answer again, an
//! unreadable file, a key it cannot take) **quarantines** it after
//! [`QUARANTINE_AFTER`] attempts: journaled, shown in the status, counted in
//! `QuarantinedFiles`, tried again only when the file changes or the daemon restarts,
//! and never in the way of other files.

use std::time::{Duration, Instant};

use super::health::{Policy, Trouble};
use super::outage::{Outage, Waiting};
use super::outcome::{Failure, FailureKind, Outcome};
use super::{
    Attempt, Effect, Mode, Next, ONCE_MAX_ATTEMPTS, Phase, Planner, Report, dropped, queued,
};
use crate::file::FileRef;
use crate::journal::record::Record;
use crate::journal::state::State;
use crate::retry::backoff;

/// Attempts after which a file failing for a reason of its own is quarantined (within a
/// minute with the default backoff). No more than `once` allows a file, so that `once`
/// quarantines rather than gives up.
pub const QUARANTINE_AFTER: u32 = 4;
const _: () = assert!(QUARANTINE_AFTER <= ONCE_MAX_ATTEMPTS);
/// The longest pause between probes of an unreachable S3: a vehicle back in coverage
/// starts uploading within this, and an offline one makes a few requests a minute.
pub const UNREACHABLE_PROBE_MAX: Duration = Duration::from_secs(6);
/// The longest pause between probes of a failing state dir.
pub const STATE_DIR_PROBE_MAX: Duration = Duration::from_secs(60);

impl Planner {
    pub(super) fn finished(
        &mut self,
        report: Report,
        now: super::Now,
        journal: &State,
        out: &mut Vec<Effect>,
    ) {
        let file = report.job.file.clone();
        self.progress.remove(&file);
        let Some(Phase::Uploading {
            version,
            attempts,
            changed,
            snapshot,
        }) = self.files.phase(&file).cloned()
        else {
            log::debug!("{file}: a report for a file not uploading");
            return;
        };
        if report.outcome.succeeded() || matches!(report.outcome, Outcome::Gone | Outcome::Changed)
        {
            self.origins.remove(&file);
        }
        self.account(&report, now);
        let next = match report.outcome {
            Outcome::Sent { .. } | Outcome::Copied | Outcome::AlreadyThere => {
                self.succeeded(&file, &version, now, journal, out)
            }
            Outcome::Gone => {
                log::info!("{file}: deleted before its upload; dropped from the queue");
                out.push(dropped(&file, "gone"));
                self.files.remove(&file);
                return;
            }
            Outcome::Changed => {
                log::info!("{file}: changed during its upload; it is sent again once stable");
                Next::LookAgain
            }
            Outcome::Interrupted | Outcome::Paused => Next::Requeue,
            Outcome::Held(hold) => {
                self.held(&file, hold);
                Next::Requeue
            }
            Outcome::Failed(f) => self.failed(&file, &f, attempts, now),
        };
        // Seen changing while it was sent: whatever happened, look at it again.
        let next = if changed { Next::LookAgain } else { next };
        let done = Attempt {
            version,
            attempts,
            snapshot,
        };
        self.apply_next(&file, done, next, out);
    }

    fn succeeded(
        &mut self,
        file: &FileRef,
        version: &crate::file::Version,
        now: super::Now,
        journal: &State,
        out: &mut Vec<Effect>,
    ) -> Next {
        self.last_success = Some(now.mono);
        if self.health.succeeded().is_some() {
            self.end_outage(now.mono);
        }
        // An uploader that found this version in the registry journals nothing: a
        // `queued` record left for it is dropped here.
        if journal
            .pending
            .get(file)
            .is_some_and(|p| p.version.matches(version))
        {
            out.push(dropped(file, "uploaded"));
        }
        out.push(Effect::WakeDisk);
        Next::Forget
    }

    /// Counts what the report says, once.
    fn account(&mut self, report: &Report, now: super::Now) {
        let job = &report.job;
        match &report.outcome {
            Outcome::AlreadyThere => self.totals.files_already_in_s3 += 1,
            Outcome::Copied => {
                self.totals.files_uploaded += 1;
                self.totals.bytes_uploaded += job.version.size;
            }
            Outcome::Sent { bytes } => {
                self.totals.files_uploaded += 1;
                self.totals.bytes_uploaded += job.version.size;
                self.totals.bytes_sent += bytes;
                log::info!(
                    "uploaded {} ({} bytes, {bytes} sent, {:.1}s)",
                    job.file,
                    job.version.size,
                    report.elapsed.as_secs_f64()
                );
            }
            Outcome::Failed(f) => {
                self.totals.failed_attempts += 1;
                self.last_error = Some((now.unix(), format!("{}: {}", job.file, f.message)));
            }
            Outcome::Gone
            | Outcome::Changed
            | Outcome::Interrupted
            | Outcome::Paused
            | Outcome::Held(_) => {}
        }
    }

    fn failed(&mut self, file: &FileRef, f: &Failure, attempts: u32, now: super::Now) -> Next {
        let e = &f.message;
        match f.kind {
            FailureKind::Unreachable => {
                return self.shared_failure(Trouble::Unreachable, e, "", now);
            }
            // Nothing was sent: says nothing of S3, or of this file.
            FailureKind::NoCredentials => {
                return self.shared_failure(Trouble::Credentials, e, "", now);
            }
            FailureKind::StateDir => return self.shared_failure(Trouble::StateDir, e, "", now),
            // A name S3 cannot take never will; an unreadable file may become readable
            // (a chmod changes neither size nor mtime), so it keeps being retried.
            FailureKind::Unkeyable => return self.file_failed(file, attempts, now, e, true),
            FailureKind::Read => return self.file_failed(file, attempts, now, e, false),
            _ => {}
        }
        // Whatever it said, S3 answered: the link works.
        if self.health.answered() {
            self.end_outage(now.mono);
        }
        match f.kind {
            FailureKind::Refused if self.refused_alone(now.mono) => {
                // Refused while other uploads keep succeeding: this key is denied (a
                // bucket policy on a prefix), not the credentials.
                self.file_failed(file, attempts, now, e, true)
            }
            FailureKind::Refused => self.shared_failure(Trouble::Refused, e, f.advice, now),
            FailureKind::SlowDown => {
                let limits = (self.cfg.retry_initial, self.cfg.retry_max);
                let wait = self.health.slow_down(now.mono, limits, &mut self.jitter);
                log::warn!(
                    "{e}: S3 asks to slow down; pausing new requests for {:.1}s",
                    wait.as_secs_f64()
                );
                self.file_failed(file, attempts, now, e, false)
            }
            FailureKind::Rejected => self.file_failed(file, attempts, now, e, true),
            _ => self.file_failed(file, attempts, now, e, false),
        }
    }

    /// Whether a refusal concerns only the file: S3 was accepting us, and another upload
    /// succeeded within `retry.max_seconds`.
    fn refused_alone(&self, now: Instant) -> bool {
        self.health.trouble().is_none()
            && self
                .last_success
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.retry_max)
    }

    /// A failure every upload would share: the file waits in the queue as it was (no
    /// attempt counted) while the daemon pauses and probes.
    fn shared_failure(
        &mut self,
        trouble: Trouble,
        why: &str,
        advice: &str,
        now: super::Now,
    ) -> Next {
        let policy = self.policy(trouble);
        if self
            .health
            .failed(now.mono, trouble, policy, &mut self.jitter)
        {
            let waiting = self.waiting_counts();
            let (outage, line) = Outage::start(trouble, why, advice, now.mono, now.unix(), waiting);
            match trouble {
                Trouble::Unreachable | Trouble::Credentials => log::warn!("{line}"),
                Trouble::StateDir | Trouble::Refused => log::error!("{line}"),
            }
            self.outage = Some(outage);
        } else if let Some(o) = self.outage.as_mut() {
            o.failed(why);
        }
        if self.health.gave_up() {
            if !self.gave_up_logged {
                self.gave_up_logged = true;
                log::error!(
                    "{}: giving up this run; the files stay queued for the next",
                    trouble.describe()
                );
            }
            return Next::GiveUp;
        }
        Next::Requeue
    }

    fn policy(&self, trouble: Trouble) -> Policy {
        let once = self.cfg.mode == Mode::Once;
        let (initial, max, give_up_after) = match trouble {
            // The credentials provider retries by itself; a probe finds out soon after.
            Trouble::Unreachable | Trouble::Credentials => (
                self.cfg.retry_initial.min(UNREACHABLE_PROBE_MAX),
                UNREACHABLE_PROBE_MAX,
                ONCE_MAX_ATTEMPTS,
            ),
            Trouble::StateDir => (
                self.cfg.retry_initial.min(STATE_DIR_PROBE_MAX),
                self.cfg.retry_max.min(STATE_DIR_PROBE_MAX),
                ONCE_MAX_ATTEMPTS,
            ),
            // Only an operator fixes credentials: probe on the slow schedule, and in
            // `once` stop at the first refusal.
            Trouble::Refused => (self.cfg.retry_max, self.cfg.retry_max, 1),
        };
        Policy {
            initial,
            max,
            give_up_after: once.then_some(give_up_after),
        }
    }

    /// A failure of this file's own: back off, and after [`QUARANTINE_AFTER`] attempts
    /// of a failure that retrying cannot fix (`permanent`), quarantine it.
    fn file_failed(
        &mut self,
        file: &FileRef,
        attempts: u32,
        now: super::Now,
        why: &str,
        permanent: bool,
    ) -> Next {
        let attempt = attempts + 1;
        if permanent && attempt >= QUARANTINE_AFTER {
            return Next::Quarantine {
                reason: why.to_string(),
                at: now.unix(),
            };
        }
        let (initial, max) = (self.cfg.retry_initial, self.cfg.retry_max);
        let wait = backoff(attempt, initial, max, &mut self.jitter);
        let (log_it, held_back) = self.quota.take(now.mono);
        if let Some(n) = held_back {
            log::warn!("{n} more upload failures in the last minute (not logged each)");
        }
        let line = format!(
            "{file}: attempt {attempt} failed: {why}; retrying in {:.1}s",
            wait.as_secs_f64()
        );
        if log_it {
            log::warn!("{line}");
        } else {
            log::debug!("{line}");
        }
        Next::Retry {
            at: now.mono + wait,
            counts: true,
        }
    }

    pub(super) fn apply_next(
        &mut self,
        file: &FileRef,
        done: Attempt,
        next: Next,
        out: &mut Vec<Effect>,
    ) {
        let Attempt {
            version,
            attempts,
            snapshot,
        } = done;
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
            Next::Requeue => queued(version, attempts, snapshot),
            Next::GiveUp => Phase::GivenUp { version },
            Next::Quarantine { reason, at } => {
                log::error!(
                    "{file}: quarantined after {} attempts: {reason}. It is tried again when \
                     it changes or the daemon restarts",
                    attempts + 1
                );
                out.push(Effect::Journal {
                    records: vec![Record::Quarantined {
                        file: file.clone(),
                        version,
                        reason: reason.clone(),
                        at,
                    }],
                    files: Vec::new(),
                });
                self.totals.quarantined += 1;
                Phase::Quarantined {
                    version,
                    reason: reason.into_boxed_str(),
                }
            }
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
                        snapshot,
                    }
                }
            }
        };
        if matches!(phase, Phase::GivenUp { .. }) {
            self.totals.given_up += 1;
        }
        self.files.set_phase(file, phase);
    }

    /// A journal append worked: a state dir trouble is over.
    pub(super) fn journal_works(&mut self, now: Instant) {
        if self.health.journal_works() {
            self.end_outage(now);
        }
    }

    /// Records for the queue could not be journaled: the state dir is failing.
    pub(super) fn journal_failed(&mut self, why: &str, now: super::Now) {
        // The files go back to settling (the caller); no upload is held by this.
        let _ = self.shared_failure(Trouble::StateDir, why, "", now);
    }

    fn end_outage(&mut self, now: Instant) {
        if let Some(o) = self.outage.take() {
            log::info!("{}", o.end(now, self.waiting_counts()));
        }
    }

    /// While a trouble lasts: its summary line, every few minutes.
    pub(super) fn outage_summary(&mut self, now: Instant) {
        let waiting = self.waiting_counts();
        if let Some(line) = self.outage.as_mut().and_then(|o| o.summary(now, waiting)) {
            log::warn!("{line}");
        }
    }

    fn waiting_counts(&self) -> Waiting {
        let c = self.files.counts();
        Waiting {
            files: (c.queued + c.settling) as u64,
            bytes: c.queued_bytes,
        }
    }
}
