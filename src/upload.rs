//! One file's upload, start to finish: hash it, skip it if S3 already has it, then a
//! single PUT or a multipart upload that resumes from the journal's completed parts.
//!
//! Runs on an uploader thread. It reads the file, talks to S3 through [`S3`] and
//! journals the multipart steps and the final upload through the shared journal; it
//! decides nothing about ordering or retries (the planner does).
//!
//! Integrity: the whole file's SHA-256 is computed before sending and goes in the
//! metadata; a single PUT carries `x-amz-checksum-sha256` and every part `Content-MD5`,
//! so the server refuses bytes that differ from what was hashed. An object therefore
//! never mixes two versions of a file: a change during the upload fails a checksum or is
//! seen by the stat after it, and the upload is abandoned and retried once stable.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

use crate::key::{object_key, rfc3339_utc};
use crate::queue::{self, FileRef, Record, SharedJournal};
use crate::s3::{Class, S3, S3Error, etag_hex};
use crate::throttle::Gate;

/// Read buffer for hashing and sending: large enough for few syscalls, small enough that
/// `concurrency` of them cost nothing on a vehicle computer.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// A stable file to upload, as the planner queued it.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: FileRef,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// Bytes of this file stored or sent so far, for `status`.
    pub progress: Arc<AtomicU64>,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// In S3 now; `sent_bytes` went over the network this time (0 when S3 had it).
    Uploaded { sent_bytes: u64, skipped: bool },
    /// The file is gone (or is no longer a regular file).
    Gone,
    /// The file changed since it was queued or during the upload.
    Changed,
    /// Stopped by shutdown; the journal keeps what was done.
    Interrupted,
    /// The upload window closed: stopped at a part boundary, resumed in the next one.
    Paused,
    /// S3 refused or could not be reached.
    Failed(S3Error),
    /// Reading the file or writing the state failed (permission denied, disk full).
    Local(String),
}

/// What the uploader needs besides the job.
pub struct Settings {
    pub vehicle_id: String,
    pub prefix: String,
    pub utc_offset_seconds: i32,
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Parts of one file sent at once (bounded further by the shared permits).
    pub concurrency: usize,
}

/// A counting semaphore over requests that carry a body, shared by every uploader, so
/// that files and parts together never exceed `s3.concurrency`.
///
/// Small files must not starve behind a multi-gigabyte one: while the planner says
/// small files are about (queued, in flight or still settling), parts may hold at most
/// `concurrency - 1` permits, keeping one for single PUTs. Otherwise parts use them all,
/// so a lone large file gets the whole concurrency.
pub struct Permits {
    state: Mutex<PermitState>,
    freed: Condvar,
    total: usize,
    /// Set by the planner.
    keep_one_for_small: AtomicBool,
}

struct PermitState {
    free: usize,
    parts_in_use: usize,
}

impl Permits {
    pub fn new(n: usize) -> Arc<Permits> {
        Arc::new(Permits {
            state: Mutex::new(PermitState {
                free: n,
                parts_in_use: 0,
            }),
            freed: Condvar::new(),
            total: n,
            keep_one_for_small: AtomicBool::new(false),
        })
    }

    /// The planner's word on whether small files are waiting somewhere.
    pub fn keep_one_for_small(&self, keep: bool) {
        if self.keep_one_for_small.swap(keep, Ordering::Relaxed) != keep && !keep {
            self.freed.notify_all();
        }
    }

    fn acquire(self: &Arc<Self>, part: bool) -> Permit {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let reserved = self.total >= 2 && self.keep_one_for_small.load(Ordering::Relaxed);
            let part_limit = if reserved { self.total - 1 } else { self.total };
            if s.free > 0 && (!part || s.parts_in_use < part_limit) {
                break;
            }
            // Bounded wait: the reservation flag can change without a permit freeing.
            s = self
                .freed
                .wait_timeout(s, Duration::from_millis(250))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.free -= 1;
        if part {
            s.parts_in_use += 1;
        }
        Permit {
            permits: Arc::clone(self),
            part,
        }
    }
}

struct Permit {
    permits: Arc<Permits>,
    part: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.permits.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free += 1;
        if self.part {
            s.parts_in_use -= 1;
        }
        self.permits.freed.notify_all();
    }
}

/// Shared by the uploader threads.
pub struct Context {
    pub s3: Arc<S3>,
    pub journal: SharedJournal,
    pub settings: Settings,
    pub permits: Arc<Permits>,
    /// Set at shutdown: transfers stop at the next buffer, parts are not started.
    pub stop: Arc<AtomicBool>,
    /// Bytes sent, for progress and metrics.
    pub sent_bytes: Arc<AtomicU64>,
    /// The schedule's verdict and bandwidth cap, set by the planner.
    pub gate: Arc<Gate>,
}

/// The digests of one version of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Digests {
    pub sha256: [u8; 32],
    /// MD5 of each part, when hashed for multipart.
    pub part_md5: Vec<[u8; 16]>,
}

impl Digests {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding, for `Content-MD5` and `x-amz-checksum-sha256`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why hashing stopped short.
#[derive(Debug)]
pub enum HashError {
    /// The file ended before `size` bytes or ran past them: it changed.
    Changed,
    Stopped,
    Io(io::Error),
}

/// Reads exactly `size` bytes of `path`, computing the SHA-256 and, with `part_size`,
/// the MD5 of each part.
pub fn hash_file(
    path: &Path,
    size: u64,
    part_size: Option<u64>,
    stop: &AtomicBool,
) -> Result<Digests, HashError> {
    let mut file = File::open(path).map_err(HashError::Io)?;
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut part_md5 = Vec::new();
    let mut in_part = 0u64;
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(HashError::Stopped);
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Io(e)),
        };
        total += n as u64;
        if total > size {
            return Err(HashError::Changed);
        }
        let chunk = &buf[..n];
        sha.update(chunk);
        if let Some(ps) = part_size {
            let mut rest = chunk;
            while !rest.is_empty() {
                let take = rest.len().min((ps - in_part) as usize);
                md5.update(&rest[..take]);
                in_part += take as u64;
                rest = &rest[take..];
                if in_part == ps {
                    part_md5.push(md5.finalize_reset().into());
                    in_part = 0;
                }
            }
        }
    }
    if total != size {
        return Err(HashError::Changed);
    }
    if part_size.is_some() && (in_part > 0 || size == 0) {
        part_md5.push(md5.finalize().into());
    }
    Ok(Digests {
        sha256: sha.finalize().into(),
        part_md5,
    })
}

/// The part size for a file: the configured one, grown (to whole MiB) when the file would
/// otherwise need more than S3's 10,000 parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let min = size.div_ceil(u64::from(queue::MAX_PARTS));
    if min <= configured {
        configured
    } else {
        min.div_ceil(1 << 20) << 20
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

/// The file's current size and mtime, or None if it is gone or not a regular file.
pub fn stat(path: &Path) -> io::Result<Option<(u64, i64)>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {
            Ok(Some((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec())))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn journal(ctx: &Context, records: &[Record]) -> Result<(), Outcome> {
    queue::lock(&ctx.journal)
        .append(records)
        .map_err(|e| Outcome::Local(e.to_string()))
}

/// Uploads one file. Never panics on operating errors; every path ends in an [`Outcome`].
pub fn upload(job: &Job, ctx: &Context) -> Outcome {
    match upload_inner(job, ctx) {
        Ok(o) | Err(o) => o,
    }
}

fn upload_inner(job: &Job, ctx: &Context) -> Result<Outcome, Outcome> {
    let s = &ctx.settings;
    match stat(&job.path) {
        Ok(None) => return Ok(gone(job, ctx)),
        Ok(Some(now)) if now != (job.size, job.mtime_ns) => return Ok(Outcome::Changed),
        Ok(Some(_)) => {}
        Err(e) => return Err(Outcome::Local(format!("{}: {e}", job.path.display()))),
    }
    let key = object_key(
        &s.prefix,
        &s.vehicle_id,
        job.mtime_ns.div_euclid(1_000_000_000),
        s.utc_offset_seconds,
        &job.file.source,
        &job.file.rel,
    )
    .map_err(|why| Outcome::Local(format!("{}: {why}", job.path.display())))?;
    let multipart = job.size >= s.multipart_threshold_bytes;
    let part_size = part_size_for(job.size, s.part_size_bytes);
    let digests = match hash_file(
        &job.path,
        job.size,
        multipart.then_some(part_size),
        &ctx.stop,
    ) {
        Ok(d) => d,
        Err(HashError::Changed) => return Ok(Outcome::Changed),
        Err(HashError::Stopped) => return Ok(Outcome::Interrupted),
        Err(HashError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(gone(job, ctx)),
        Err(HashError::Io(e)) => {
            return Err(Outcome::Local(format!(
                "reading {}: {e}",
                job.path.display()
            )));
        }
    };
    if !unchanged(job)? {
        return Ok(Outcome::Changed);
    }
    let sha_hex = digests.sha256_hex();
    let meta = vec![
        ("vehicle-id".to_string(), s.vehicle_id.clone()),
        ("source".to_string(), job.file.source.clone()),
        (
            "mtime".to_string(),
            rfc3339_utc(job.mtime_ns.div_euclid(1_000_000_000)),
        ),
        ("sha256".to_string(), sha_hex.clone()),
    ];
    let uploaded = |etag: String| Record::Uploaded {
        src: job.file.source.clone(),
        rel: job.file.rel.clone(),
        size: job.size,
        mtime_ns: job.mtime_ns,
        sha256: sha_hex.clone(),
        key: key.clone(),
        etag,
        at: unix_now(),
    };

    let resumable = if multipart {
        let state = queue::lock(&ctx.journal);
        state.state().multipart.get(&job.file).cloned()
    } else {
        None
    };
    let resumable = match resumable {
        Some(mp)
            if mp.size == job.size
                && mp.mtime_ns == job.mtime_ns
                && mp.sha256 == sha_hex
                && mp.part_size == part_size
                && mp.key == key =>
        {
            Some(mp)
        }
        Some(stale) => {
            abandon(ctx, &job.file, &stale.key, &stale.upload_id);
            None
        }
        None => None,
    };

    // Before sending anything the registry does not know of, ask S3: an object with the
    // same SHA-256 means it was uploaded already (a crash before journaling, or a wiped
    // state dir). Also before resuming a multipart upload: it may have been completed
    // just before a power cut, and not every server says NoSuchUpload for it then
    // (s3s-fs lists it as empty, inviting every part again).
    let known = queue::lock(&ctx.journal)
        .state()
        .registry
        .contains_key(&job.file);
    if (!known || resumable.is_some())
        && let Some(etag) = stored_etag(ctx, &key, &sha_hex)?
    {
        log::info!("{}: already in S3 as {key}, not sent again", job.file);
        journal(ctx, &[uploaded(etag)])?;
        return Ok(Outcome::Uploaded {
            sent_bytes: 0,
            skipped: true,
        });
    }

    // The window may have closed while this file was hashed.
    if !ctx.gate.is_open() {
        return Ok(Outcome::Paused);
    }
    if !multipart {
        let mut reader = body(job, 0, job.size, ctx).map_err(|e| local(job, e))?;
        let etag = {
            let _permit = ctx.permits.acquire(false);
            ctx.s3
                .put(&key, &mut reader, job.size, &base64(&digests.sha256), &meta)
        };
        let etag = match etag {
            Ok(e) => e,
            Err(_) if ctx.stop.load(Ordering::Relaxed) => return Ok(Outcome::Interrupted),
            Err(e) if e.class() == Class::ContentChanged => return Ok(Outcome::Changed),
            // Cut short by a file that shrank or changed under the transfer.
            Err(_) if !unchanged(job)? => return Ok(Outcome::Changed),
            Err(e) => return Err(Outcome::Failed(e)),
        };
        journal(ctx, &[uploaded(etag)])?;
        return Ok(Outcome::Uploaded {
            sent_bytes: job.size,
            skipped: false,
        });
    }

    let (upload_id, mut done) = match resumable {
        Some(mp) => match reconcile(
            job,
            ctx,
            &mp.key,
            &mp.upload_id,
            &mp.parts,
            &digests,
            part_size,
        )? {
            Some(done) => (mp.upload_id, done),
            None => {
                // The upload is gone: completed just before a crash (the object is
                // there), or expired by the server (start over).
                if let Some(etag) = stored_etag(ctx, &key, &sha_hex)? {
                    log::info!("{}: already completed as {key}, not sent again", job.file);
                    journal(ctx, &[uploaded(etag)])?;
                    return Ok(Outcome::Uploaded {
                        sent_bytes: 0,
                        skipped: true,
                    });
                }
                (
                    start(job, ctx, &key, &meta, &sha_hex, part_size)?,
                    BTreeMap::new(),
                )
            }
        },
        None => (
            start(job, ctx, &key, &meta, &sha_hex, part_size)?,
            BTreeMap::new(),
        ),
    };

    let total_parts = digests.part_md5.len() as u32;
    let stored: u64 = done.keys().map(|&n| part_len(job.size, part_size, n)).sum();
    job.progress.store(stored, Ordering::Relaxed);
    let todo: VecDeque<u32> = (1..=total_parts)
        .filter(|n| !done.contains_key(n))
        .collect();
    if !done.is_empty() {
        log::info!(
            "{}: resuming upload of {key}: {} of {total_parts} parts already stored",
            job.file,
            done.len()
        );
    }
    let sent = send_parts(
        job, ctx, &key, &upload_id, &digests, part_size, todo, &mut done,
    );
    // A part failing because the file shrank or changed under it: the upload is of a
    // version that no longer exists.
    let sent = match sent {
        Err(Outcome::Failed(_)) if !unchanged(job)? => {
            abandon(ctx, &job.file, &key, &upload_id);
            return Ok(Outcome::Changed);
        }
        other => other?,
    };
    if !unchanged(job)? {
        abandon(ctx, &job.file, &key, &upload_id);
        return Ok(Outcome::Changed);
    }
    let etags: Vec<String> = done.values().cloned().collect();
    match ctx.s3.complete(&key, &upload_id, &etags) {
        Ok(etag) => {
            journal(ctx, &[uploaded(etag)])?;
            Ok(Outcome::Uploaded {
                sent_bytes: sent,
                skipped: false,
            })
        }
        Err(e) if e.class() == Class::UploadLost => {
            // Completed before a crash, or expired by the server: S3 tells which.
            if let Ok(Some(etag)) = stored_etag(ctx, &key, &sha_hex) {
                journal(ctx, &[uploaded(etag)])?;
                return Ok(Outcome::Uploaded {
                    sent_bytes: sent,
                    skipped: false,
                });
            }
            forget(ctx, &job.file, &upload_id)?;
            Err(Outcome::Failed(e))
        }
        Err(e) => Err(Outcome::Failed(e)),
    }
}

/// The ETag of the object at `key` if S3 has it with this SHA-256.
fn stored_etag(ctx: &Context, key: &str, sha_hex: &str) -> Result<Option<String>, Outcome> {
    let head = ctx.s3.head(key).map_err(Outcome::Failed)?;
    Ok(head
        .filter(|h| {
            h.get("sha256")
                .is_some_and(|v| v.eq_ignore_ascii_case(sha_hex))
        })
        .map(|h| h.get("etag").cloned().unwrap_or_else(|| "\"\"".to_string())))
}

fn local(job: &Job, e: io::Error) -> Outcome {
    if e.kind() == io::ErrorKind::NotFound {
        Outcome::Gone
    } else {
        Outcome::Local(format!("reading {}: {e}", job.path.display()))
    }
}

fn unchanged(job: &Job) -> Result<bool, Outcome> {
    match stat(&job.path) {
        Ok(Some(now)) => Ok(now == (job.size, job.mtime_ns)),
        Ok(None) => Ok(false),
        Err(e) => Err(Outcome::Local(format!("{}: {e}", job.path.display()))),
    }
}

/// A file gone before its upload: abort any multipart upload it had.
fn gone(job: &Job, ctx: &Context) -> Outcome {
    let mp = queue::lock(&ctx.journal)
        .state()
        .multipart
        .get(&job.file)
        .cloned();
    if let Some(mp) = mp {
        abandon(ctx, &job.file, &mp.key, &mp.upload_id);
    }
    Outcome::Gone
}

/// Aborts a multipart upload on the server (best effort: S3 lifecycle rules clean up
/// what this misses) and forgets it in the journal.
fn abandon(ctx: &Context, file: &FileRef, key: &str, upload_id: &str) {
    if let Err(e) = ctx.s3.abort(key, upload_id) {
        log::warn!("{file}: could not abort the old multipart upload of {key}: {e}");
    }
    if let Err(Outcome::Local(e)) = forget(ctx, file, upload_id) {
        log::warn!("{file}: {e}");
    }
}

fn forget(ctx: &Context, file: &FileRef, upload_id: &str) -> Result<(), Outcome> {
    journal(
        ctx,
        &[Record::MpAborted {
            src: file.source.clone(),
            rel: file.rel.clone(),
            upload_id: upload_id.to_string(),
        }],
    )
}

fn start(
    job: &Job,
    ctx: &Context,
    key: &str,
    meta: &[(String, String)],
    sha_hex: &str,
    part_size: u64,
) -> Result<String, Outcome> {
    let upload_id = ctx
        .s3
        .create_multipart(key, meta)
        .map_err(Outcome::Failed)?;
    let record = Record::MpStarted {
        src: job.file.source.clone(),
        rel: job.file.rel.clone(),
        key: key.to_string(),
        upload_id: upload_id.clone(),
        size: job.size,
        mtime_ns: job.mtime_ns,
        sha256: sha_hex.to_string(),
        part_size,
    };
    if let Err(e) = journal(ctx, &[record]) {
        // Not journaled means not resumable: don't leave it on the server.
        let _ = ctx.s3.abort(key, &upload_id);
        return Err(e);
    }
    Ok(upload_id)
}

/// Compares the journal's parts with the server's. A part counts as done when the server
/// has it with the journaled ETag, or (stored after the journal's last record, before a
/// crash) at the right size with an ETag equal to the local part's MD5 or none at all.
/// Returns `None` when the server no longer knows the upload.
fn reconcile(
    job: &Job,
    ctx: &Context,
    key: &str,
    upload_id: &str,
    journaled: &BTreeMap<u32, String>,
    digests: &Digests,
    part_size: u64,
) -> Result<Option<BTreeMap<u32, String>>, Outcome> {
    let server = match ctx.s3.list_parts(key, upload_id) {
        Ok(parts) => parts,
        Err(e) if e.class() == Class::UploadLost => {
            log::info!(
                "{}: the server no longer has upload {key}; starting it over",
                job.file
            );
            forget(ctx, &job.file, upload_id)?;
            return Ok(None);
        }
        Err(e) => return Err(Outcome::Failed(e)),
    };
    let total = digests.part_md5.len() as u32;
    let mut done = BTreeMap::new();
    let mut learned = Vec::new();
    for p in server {
        if p.number == 0 || p.number > total {
            continue;
        }
        let expected_len = part_len(job.size, part_size, p.number);
        let same_md5 =
            etag_hex(&p.etag).eq_ignore_ascii_case(&hex(&digests.part_md5[p.number as usize - 1]));
        match journaled.get(&p.number) {
            // A server that lists no ETags: the journal's word and the size must do.
            Some(etag)
                if p.size == expected_len
                    && (p.etag.is_empty() || etag_hex(etag) == etag_hex(&p.etag)) =>
            {
                done.insert(p.number, etag.clone());
            }
            // Stored after the journal's last record, before a crash. Under this upload
            // id the server only accepted parts whose Content-MD5 matched the hash of
            // this same version (its SHA-256 was journaled with the id), so a part of the
            // right size is ours even from a server that lists no ETags; S3 names a
            // part's ETag by its MD5.
            None if p.size == expected_len && (same_md5 || p.etag.is_empty()) => {
                let etag = if p.etag.is_empty() {
                    format!("\"{}\"", hex(&digests.part_md5[p.number as usize - 1]))
                } else {
                    p.etag
                };
                learned.push(Record::Part {
                    src: job.file.source.clone(),
                    rel: job.file.rel.clone(),
                    upload_id: upload_id.to_string(),
                    n: p.number,
                    etag: etag.clone(),
                });
                done.insert(p.number, etag);
            }
            _ => {}
        }
    }
    journal(ctx, &learned)?;
    Ok(Some(done))
}

fn part_len(size: u64, part_size: u64, n: u32) -> u64 {
    let start = u64::from(n - 1) * part_size;
    part_size.min(size.saturating_sub(start))
}

/// Sends the parts in `todo` with up to `concurrency` threads (each request holding a
/// shared permit), journaling each as it completes. Returns the bytes sent.
#[allow(clippy::too_many_arguments)]
fn send_parts(
    job: &Job,
    ctx: &Context,
    key: &str,
    upload_id: &str,
    digests: &Digests,
    part_size: u64,
    todo: VecDeque<u32>,
    done: &mut BTreeMap<u32, String>,
) -> Result<u64, Outcome> {
    if todo.is_empty() {
        return Ok(0);
    }
    let threads = ctx.settings.concurrency.min(todo.len()).max(1);
    let todo = Mutex::new(todo);
    let results = Mutex::new(Vec::<(u32, String)>::new());
    let failure: Mutex<Option<Outcome>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    // A closed window pauses the upload here, at a part boundary.
                    if failed.load(Ordering::Relaxed)
                        || ctx.stop.load(Ordering::Relaxed)
                        || !ctx.gate.is_open()
                    {
                        return;
                    }
                    let Some(n) = todo.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                        return;
                    };
                    let len = part_len(job.size, part_size, n);
                    let md5 = base64(&digests.part_md5[n as usize - 1]);
                    let result = body(job, u64::from(n - 1) * part_size, len, ctx)
                        .map_err(|e| local(job, e))
                        .and_then(|mut reader| {
                            let _permit = ctx.permits.acquire(true);
                            ctx.s3
                                .upload_part(key, upload_id, n, &mut reader, len, &md5)
                                .map_err(Outcome::Failed)
                        })
                        .and_then(|etag| {
                            journal(
                                ctx,
                                &[Record::Part {
                                    src: job.file.source.clone(),
                                    rel: job.file.rel.clone(),
                                    upload_id: upload_id.to_string(),
                                    n,
                                    etag: etag.clone(),
                                }],
                            )
                            .map(|()| etag)
                        });
                    match result {
                        Ok(etag) => {
                            sent.fetch_add(len, Ordering::Relaxed);
                            results
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((n, etag));
                        }
                        Err(o) => {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                            if slot.is_none() {
                                *slot = Some(o);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    for (n, etag) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        done.insert(n, etag);
    }
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(Outcome::Interrupted);
    }
    let left = todo.into_inner().unwrap_or_else(|p| p.into_inner()).len();
    if left > 0 && failure.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
        log::info!(
            "{}: window closed; paused with {left} parts to go",
            job.file
        );
        return Err(Outcome::Paused);
    }
    if let Some(o) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(match o {
            Outcome::Failed(e) if e.class() == Class::ContentChanged => {
                abandon(ctx, &job.file, key, upload_id);
                Outcome::Changed
            }
            Outcome::Failed(e) if e.class() == Class::UploadLost => {
                forget(ctx, &job.file, upload_id)?;
                Outcome::Failed(e)
            }
            other => other,
        });
    }
    Ok(sent.into_inner())
}

pub fn unix_now() -> i64 {
    crate::clock::system_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, 8 << 20), 8 << 20);
        let huge = 200u64 << 30; // 200 GiB needs > 20 MiB parts
        let ps = part_size_for(huge, 8 << 20);
        assert!(huge.div_ceil(ps) <= 10_000 && ps.is_multiple_of(1 << 20));
        assert_eq!(part_len(20, 8, 3), 4);
        assert_eq!(part_len(16, 8, 2), 8);
    }

    #[test]
    fn hashing_gives_sha256_and_part_md5s_and_notices_a_size_change() {
        let dir = std::env::temp_dir().join(format!("tvm-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").expect("write");
        let stop = AtomicBool::new(false);
        let d = hash_file(&path, 3, Some(2), &stop).expect("hash");
        assert_eq!(
            d.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.part_md5.len(), 2);
        assert_eq!(hex(&d.part_md5[1]), "4a8a08f09d37b73795649038408b5f33"); // md5("c")
        assert!(matches!(
            hash_file(&path, 2, None, &stop),
            Err(HashError::Changed)
        ));
        assert!(matches!(
            hash_file(&path, 4, None, &stop),
            Err(HashError::Changed)
        ));
        let empty = hash_file(&dir.join("f"), 3, None, &stop).expect("hash");
        assert!(empty.part_md5.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
