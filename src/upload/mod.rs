//! One file's upload, start to finish: hash it, skip it if S3 already has it, then a
//! single PUT or a multipart upload ([`multipart`]) that resumes from the journal's
//! completed parts.
//!
//! Runs on an uploader thread. It reads the file, talks to S3 through [`S3`] and
//! journals the multipart steps and the final upload; it decides nothing about
//! ordering or retries (the planner does). Every way a job can end without the file in
//! S3 is an [`UploadError`]; the planner decides what each means.
//!
//! Integrity: the whole file's SHA-256 is computed before sending and goes in the
//! metadata; a single PUT carries `x-amz-checksum-sha256` and every part `Content-MD5`,
//! so the server refuses bytes that differ from what was hashed. An object therefore
//! never mixes two versions of a file: a change during the upload fails a checksum or is
//! seen by the stat after it, and the upload is abandoned and retried once stable.

mod multipart;
mod permits;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use permits::{Permit, Permits};

use crate::digest::{Digests, HashError, base64, hash_file};
use crate::file::{FileRef, Version, stat};
use crate::journal::{Journal, JournalError, MAX_PARTS, Record};
use crate::key::{KeyScheme, rfc3339_utc};
use crate::s3::{Class, S3, S3Error};
use crate::throttle::Gate;

/// A stable file to upload, as the planner queued it.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: FileRef,
    pub path: PathBuf,
    pub version: Version,
    /// Bytes of this file stored or sent so far, for `status`.
    pub progress: Arc<AtomicU64>,
}

/// A job that ended with the file in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// Sent now; `bytes` went over the network this time (parts stored before a
    /// restart are not counted).
    Sent { bytes: u64 },
    /// S3 had it already (a crash before journaling, a wiped state dir).
    AlreadyThere,
}

/// A job that ended without the file in S3, and why.
#[derive(Debug)]
pub enum UploadError {
    /// The file is gone (or is no longer a regular file).
    Gone,
    /// The file changed since it was queued or during the upload.
    Changed,
    /// Stopped by shutdown; the journal keeps what was done.
    Interrupted,
    /// The upload window closed: stopped at a part boundary, resumed in the next one.
    Paused,
    /// S3 refused or could not be reached.
    S3(S3Error),
    /// Reading the file failed (permission denied, an IO error).
    Read { path: PathBuf, source: io::Error },
    /// Writing the journal failed (disk full, read-only): nothing is acknowledged.
    Journal(JournalError),
    /// The file cannot have an object (its key would be too long).
    Unkeyable { why: String },
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadError::Gone => write!(f, "deleted before its upload"),
            UploadError::Changed => write!(f, "changed during its upload"),
            UploadError::Interrupted => write!(f, "interrupted by shutdown"),
            UploadError::Paused => write!(f, "paused: the upload window closed"),
            UploadError::S3(e) => write!(f, "{e}"),
            UploadError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            UploadError::Journal(e) => write!(f, "{e}"),
            UploadError::Unkeyable { why } => write!(f, "{why}"),
        }
    }
}

impl From<S3Error> for UploadError {
    fn from(e: S3Error) -> Self {
        UploadError::S3(e)
    }
}

impl From<JournalError> for UploadError {
    fn from(e: JournalError) -> Self {
        UploadError::Journal(e)
    }
}

type Result<T> = std::result::Result<T, UploadError>;

/// What the uploader needs besides the job.
pub struct Settings {
    /// How objects are named (and the vehicle id for the metadata).
    pub scheme: KeyScheme,
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Parts of one file sent at once (bounded further by the shared permits).
    pub concurrency: usize,
}

/// Shared by the uploader threads.
pub struct Context {
    pub s3: Arc<S3>,
    pub journal: Arc<Journal>,
    pub settings: Settings,
    pub permits: Arc<Permits>,
    /// Set at shutdown: transfers stop at the next buffer, parts are not started.
    pub stop: Arc<AtomicBool>,
    /// Bytes sent, for progress and metrics.
    pub sent_bytes: Arc<AtomicU64>,
    /// The schedule's verdict and bandwidth cap, set by the planner.
    pub gate: Arc<Gate>,
}

impl Context {
    fn journal(&self, records: &[Record]) -> Result<()> {
        Ok(self.journal.append(records)?)
    }
}

/// The part size for a file: the configured one, grown (to whole MiB) when the file would
/// otherwise need more than S3's 10,000 parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let min = size.div_ceil(u64::from(MAX_PARTS));
    if min <= configured {
        configured
    } else {
        min.div_ceil(1 << 20) << 20
    }
}

/// Uploads one file. Never panics on operating errors.
pub fn upload(job: &Job, ctx: &Context) -> Result<Uploaded> {
    let s = &ctx.settings;
    still_there(job, ctx)?;
    if ctx.journal.read().is_uploaded(&job.file, &job.version) {
        return Ok(Uploaded::AlreadyThere);
    }
    let key = s
        .scheme
        .key(&job.file, &job.version)
        .map_err(|why| UploadError::Unkeyable {
            why: format!("{}: {why}", job.path.display()),
        })?;
    let multipart = job.version.size >= s.multipart_threshold_bytes;
    let part_size = part_size_for(job.version.size, s.part_size_bytes);
    let digests = hash(job, ctx, multipart.then_some(part_size))?;
    still_there(job, ctx)?;
    let object = Object {
        job,
        ctx,
        key: &key,
        digests: &digests,
    };
    let resumable = ctx
        .journal
        .read()
        .multipart
        .get(&job.file)
        .filter(|m| m.version == job.version && m.sha256 == digests.sha256)
        .cloned();
    // Before sending a version the registry does not have, ask S3: an object with the
    // same SHA-256 means it was uploaded already (a crash before journaling, or a wiped
    // state dir), also when the registry knows an older version of the file. Also
    // before resuming a multipart upload: it may have been completed just before a power
    // cut, and not every server says NoSuchUpload for it then (s3s-fs lists it as empty,
    // inviting every part again).
    if object.already_there("already in S3")? {
        return Ok(Uploaded::AlreadyThere);
    }
    // The window may have closed while this file was hashed.
    if !ctx.gate.is_open() {
        return Err(UploadError::Paused);
    }
    if multipart {
        multipart::run(&object, part_size, resumable)
    } else {
        object.put()
    }
}

/// One version of a file on its way to one key.
struct Object<'a> {
    job: &'a Job,
    ctx: &'a Context,
    key: &'a str,
    digests: &'a Digests,
}

impl Object<'_> {
    /// The `x-amz-meta-*` of SPEC.md.
    fn metadata(&self) -> Vec<(String, String)> {
        let s = &self.ctx.settings;
        vec![
            ("vehicle-id".to_string(), s.scheme.vehicle_id.clone()),
            ("source".to_string(), self.job.file.source().to_string()),
            (
                "mtime".to_string(),
                rfc3339_utc(self.job.version.mtime_seconds()),
            ),
            ("sha256".to_string(), self.digests.sha256_hex()),
        ]
    }

    /// The registry's record of this upload.
    fn uploaded(&self, etag: String) -> Record {
        Record::Uploaded {
            file: self.job.file.clone(),
            version: self.job.version,
            sha256: self.digests.sha256,
            key: self.key.to_string(),
            etag,
            at: crate::clock::system_now(),
        }
    }

    /// Whether S3 has this content at the key already; if so it is journaled as
    /// uploaded. `why` goes in the log line.
    fn already_there(&self, why: &str) -> Result<bool> {
        let head = self.ctx.s3.head(self.key)?;
        let sha_hex = self.digests.sha256_hex();
        let etag = head
            .filter(|h| {
                h.get("sha256")
                    .is_some_and(|v| v.eq_ignore_ascii_case(&sha_hex))
            })
            .map(|h| h.get("etag").cloned().unwrap_or_default());
        let Some(etag) = etag else {
            return Ok(false);
        };
        log::info!("{}: {why} as {}, not sent again", self.job.file, self.key);
        self.ctx.journal(&[self.uploaded(etag)])?;
        Ok(true)
    }

    fn put(&self) -> Result<Uploaded> {
        let (job, ctx) = (self.job, self.ctx);
        let size = job.version.size;
        let mut reader = body(job, 0, size, ctx).map_err(|e| read_error(job, e))?;
        let sha = base64(&self.digests.sha256);
        let sent = {
            let _permit = ctx.permits.acquire(false);
            ctx.s3
                .put(self.key, &mut reader, size, &sha, &self.metadata())
        };
        let etag = match sent {
            Ok(e) => e,
            Err(_) if ctx.stop.load(Ordering::Relaxed) => return Err(UploadError::Interrupted),
            Err(e) if e.class() == Class::ContentChanged => return Err(UploadError::Changed),
            // Cut short by a file that shrank or changed under the transfer.
            Err(e) => return Err(changed_or(job, ctx, UploadError::S3(e))),
        };
        ctx.journal(&[self.uploaded(etag)])?;
        Ok(Uploaded::Sent { bytes: size })
    }
}

fn hash(job: &Job, ctx: &Context, part_size: Option<u64>) -> Result<Digests> {
    match hash_file(&job.path, job.version.size, part_size, &ctx.stop) {
        Ok(d) => Ok(d),
        Err(HashError::Changed) => Err(UploadError::Changed),
        Err(HashError::Stopped) => Err(UploadError::Interrupted),
        Err(HashError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            multipart::abandon_any(job, ctx);
            Err(UploadError::Gone)
        }
        Err(HashError::Io(e)) => Err(read_error(job, e)),
    }
}

/// A reader over `len` bytes of a file from `offset`, that stops at shutdown, charges
/// every byte to the shared bandwidth budget and counts what it hands out.
struct BodyReader<'a> {
    inner: io::Take<File>,
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
    progress: &'a AtomicU64,
    gate: &'a Gate,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("shutting down"));
        }
        let want = self.gate.chunk(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 && self.inner.limit() > 0 {
            // The file ended early: it was truncated while being sent. Failing the
            // body ends the request now, instead of leaving the server waiting for
            // bytes that will never come (and us for its answer).
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being sent",
            ));
        }
        if !self.gate.charge(n, self.stop) {
            return Err(io::Error::other("shutting down"));
        }
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn body<'a>(job: &'a Job, offset: u64, len: u64, ctx: &'a Context) -> io::Result<BodyReader<'a>> {
    let mut f = File::open(&job.path)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(BodyReader {
        inner: f.take(len),
        stop: &ctx.stop,
        sent: &ctx.sent_bytes,
        progress: &job.progress,
        gate: &ctx.gate,
    })
}

fn read_error(job: &Job, e: io::Error) -> UploadError {
    if e.kind() == io::ErrorKind::NotFound {
        UploadError::Gone
    } else {
        UploadError::Read {
            path: job.path.clone(),
            source: e,
        }
    }
}

/// Whether the file is still the version the job is for.
fn unchanged(job: &Job) -> Result<bool> {
    match stat(&job.path) {
        Ok(Some(now)) => Ok(now == job.version),
        Ok(None) => Ok(false),
        Err(e) => Err(read_error(job, e)),
    }
}

/// Ok if the file is still the job's version; `Gone` (aborting any multipart upload it
/// had) or `Changed` if not.
fn still_there(job: &Job, ctx: &Context) -> Result<()> {
    match stat(&job.path) {
        Ok(Some(now)) if now == job.version => Ok(()),
        Ok(Some(_)) => Err(UploadError::Changed),
        Ok(None) => {
            multipart::abandon_any(job, ctx);
            Err(UploadError::Gone)
        }
        Err(e) => Err(read_error(job, e)),
    }
}

/// A failed request whose file changed under it is `Changed`; else `otherwise`.
fn changed_or(job: &Job, ctx: &Context, otherwise: UploadError) -> UploadError {
    match still_there(job, ctx) {
        Ok(()) => otherwise,
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, 8 << 20), 8 << 20);
        let huge = 200u64 << 30; // 200 GiB needs > 20 MiB parts
        let ps = part_size_for(huge, 8 << 20);
        assert!(huge.div_ceil(ps) <= 10_000 && ps.is_multiple_of(1 << 20));
    }

    #[test]
    fn errors_name_their_cause() {
        let e = UploadError::Read {
            path: "/logs/a".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().contains("/logs/a"), "{e}");
        assert!(
            UploadError::Gone
                .to_string()
                .contains("deleted before its upload")
        );
        assert!(
            UploadError::Changed
                .to_string()
                .contains("changed during its upload")
        );
    }
}
