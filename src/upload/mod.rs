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
//! seen by the stat after it, and the upload is abandoned and retried once stable. A
//! small file sent in one PUT is read once, whole: the bytes sent are those hashed.

mod compressed;
mod multipart;
pub mod orphans;
mod permits;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use permits::{Permit, Permits};

use crate::calendar::rfc3339_utc;
use crate::compress::{self, Rule};
use crate::digest::{Bodies, Digests, HashError, SMALL_FILE_BYTES, base64, hash_file, read_small};
use crate::file::FileRef;
use crate::journal::{Journal, JournalError, Record};
use crate::key::KeyScheme;
use crate::limits::MAX_PARTS;
use crate::planner::{Failure, FailureKind, Hold, Job, Outcome};
use crate::probe::stat;
use crate::s3::{Attributes, Class, S3, S3Error};
use crate::throttle::Gate;

/// A job that ended with the file in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// Sent now; `bytes` went over the network this time (parts stored before a
    /// restart are not counted).
    Sent { bytes: u64 },
    /// S3 had it already (a crash before journaling, a wiped state dir).
    AlreadyThere,
    /// Made by a server-side copy of an object with the same content: nothing sent.
    Copied,
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
    /// The link now may not take the next body (the source may not use it, or its
    /// budget would be passed): stopped before it, the parts stored so far kept.
    Held(Hold),
    /// S3 refused or could not be reached.
    S3(S3Error),
    /// Reading the file failed (permission denied, an IO error).
    Read { path: PathBuf, source: io::Error },
    /// Writing the journal failed (disk full, read-only): nothing is acknowledged.
    Journal(JournalError),
    /// The file cannot have an object (its key would be too long, or every `~N` tried
    /// holds another content).
    Unkeyable { why: String },
    /// The key holds another content: try the next `~N`. Never leaves [`upload`].
    KeyTaken,
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadError::Gone => write!(f, "deleted before its upload"),
            UploadError::Changed => write!(f, "changed during its upload"),
            UploadError::Interrupted => write!(f, "interrupted by shutdown"),
            UploadError::Paused => write!(f, "paused: the upload window closed"),
            UploadError::Held(Hold::Link) => write!(f, "paused: the link now may not carry it"),
            UploadError::Held(Hold::Budget) => {
                write!(f, "paused: the link's daily budget would be passed")
            }
            UploadError::S3(e) => write!(f, "{e}"),
            UploadError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            UploadError::Journal(e) => write!(f, "{e}"),
            UploadError::Unkeyable { why } => write!(f, "{why}"),
            UploadError::KeyTaken => write!(f, "the key holds another content"),
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

/// How a job's result reads to the planner, in its own words (see [`Outcome`]).
pub fn outcome(result: Result<Uploaded>) -> Outcome {
    let e = match result {
        Ok(Uploaded::Sent { bytes }) => return Outcome::Sent { bytes },
        Ok(Uploaded::AlreadyThere) => return Outcome::AlreadyThere,
        Ok(Uploaded::Copied) => return Outcome::Copied,
        Err(e) => e,
    };
    let (kind, advice) = match &e {
        UploadError::Gone => return Outcome::Gone,
        UploadError::Changed => return Outcome::Changed,
        UploadError::Interrupted => return Outcome::Interrupted,
        UploadError::Paused => return Outcome::Paused,
        UploadError::Held(h) => return Outcome::Held(*h),
        UploadError::S3(s3) => (s3_failure(s3), s3.advice()),
        UploadError::Read { .. } => (FailureKind::Read, ""),
        UploadError::Journal(_) => (FailureKind::StateDir, ""),
        UploadError::Unkeyable { .. } => (FailureKind::Unkeyable, ""),
        // Never leaves `upload`; if it did, trying again is right.
        UploadError::KeyTaken => (FailureKind::Transient, ""),
    };
    Outcome::Failed(Failure {
        kind,
        message: e.to_string(),
        advice,
    })
}

/// What an S3 error means for the planner: whether every upload shares it, and whether
/// trying again can help.
fn s3_failure(e: &S3Error) -> FailureKind {
    if e.unreachable() {
        return FailureKind::Unreachable;
    }
    if let S3Error::NoCredentials { .. } = e {
        return FailureKind::NoCredentials;
    }
    match e.class() {
        Class::Credentials | Class::Configuration => FailureKind::Refused,
        Class::SlowDown => FailureKind::SlowDown,
        Class::Rejected => FailureKind::Rejected,
        Class::Transient | Class::ContentChanged | Class::UploadLost => FailureKind::Transient,
    }
}

/// What the uploader needs besides the job.
pub struct Settings {
    /// How objects are named (and the vehicle id for the metadata).
    pub scheme: KeyScheme,
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Parts of one file sent at once (bounded further by the shared permits).
    pub concurrency: usize,
    /// Sources whose files are sent zstd-compressed (by name).
    pub compress: std::collections::HashMap<String, Rule>,
}

impl Settings {
    /// The zstd level a file is sent at, if it is compressed.
    pub fn zstd_for(&self, file: &FileRef) -> Option<i32> {
        self.compress
            .get(file.source())
            .filter(|r| r.applies(file.rel()))
            .map(|r| r.level)
    }
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
    /// Contents uploaded lately, for server-side copies of the same content.
    pub recent: Recent,
    /// Compressed parts' buffers, reused (compressed uploads only).
    pub buffers: compressed::Buffers,
    /// Keys whose CreateMultipartUpload answer was lost (see [`orphans`]).
    pub doubts: orphans::Doubts,
    /// The last key asked after a PUT closed without an answer could not be asked
    /// either: the link is down, and the next such PUT is not followed by a question
    /// that would only fail too (an offline vehicle probes with one request, not two).
    /// Cleared by any answer.
    pub link_down: AtomicBool,
    /// The link now, and each link's bytes today: asked before each body.
    pub links: Arc<crate::links::Links>,
}

impl Context {
    /// May a body of `len` bytes of `job`'s file go over the link now? Its bytes are
    /// counted to the link if so.
    pub fn admit(&self, job: &Job, len: u64) -> Result<()> {
        self.links
            .admit(job.file.source(), job.requested, len)
            .map_err(UploadError::Held)
    }
}

/// Contents uploaded lately (SHA-256 and encoding → key), so that a copy of a file
/// (logrotate's `copytruncate`) becomes a server-side copy instead of the same bytes sent
/// again; a compressed object is copied only to a compressed one, and the reverse.
/// Bounded: the oldest are dropped first; memory only (after a restart a copy is sent).
#[derive(Debug, Default)]
pub struct Recent {
    inner: std::sync::Mutex<RecentInner>,
}

#[derive(Debug, Default)]
struct RecentInner {
    by_sha: std::collections::HashMap<Content, String>,
    order: std::collections::VecDeque<Content>,
}

/// A file's SHA-256, and whether its object is zstd-compressed.
pub type Content = ([u8; 32], bool);

/// Contents remembered for copies.
pub const MAX_RECENT_UPLOADS: usize = 1024;

impl Recent {
    pub fn note(&self, sha256: Content, key: &str) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if r.by_sha.insert(sha256, key.to_string()).is_none() {
            r.order.push_back(sha256);
        }
        while r.order.len() > MAX_RECENT_UPLOADS {
            if let Some(old) = r.order.pop_front() {
                r.by_sha.remove(&old);
            }
        }
    }

    pub fn find(&self, sha256: &Content) -> Option<String> {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.by_sha.get(sha256).cloned()
    }

    pub fn forget(&self, sha256: &Content) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.by_sha.remove(sha256);
    }
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

/// Whether the job's file is an MCAP file whose chunks are compressed already (or that
/// cannot be read to tell): sent as it is by a compressing source.
fn mcap_compressed(job: &Job) -> bool {
    compress::is_mcap(job.file.rel())
        && File::open(&job.path).map_or(true, compress::mcap_is_compressed)
}

/// How many keys (`~N`) are tried for one version before giving up: each refusal is a
/// different content already at that key.
const MAX_KEY_TRIES: u16 = 64;
/// CopyObject copies at most this much in one request.
const MAX_COPY_BYTES: u64 = 5 << 30;

/// Uploads one file. Never panics on operating errors.
pub fn upload(job: &Job, ctx: &Context) -> Result<Uploaded> {
    let s = &ctx.settings;
    still_there(job, ctx)?;
    if ctx.journal.read().is_uploaded(&job.file, &job.version) {
        return Ok(Uploaded::AlreadyThere);
    }
    let zstd = s.zstd_for(&job.file).filter(|_| !mcap_compressed(job));
    let multipart = job.version.size >= s.multipart_threshold_bytes;
    let journaled = ctx.journal.read().multipart.get(&job.file).cloned();
    // An upload resumed keeps the part size it began with, whatever the config says now
    // (digests at another size would not match its parts, and it would start over).
    let part_size = journaled
        .as_ref()
        .filter(|m| m.version.matches(&job.version) && m.zstd == zstd && m.part_size > 0)
        .map_or_else(
            || part_size_for(job.version.size, s.part_size_bytes),
            |m| m.part_size,
        );
    let bodies = match (zstd, multipart) {
        (Some(_), _) => Bodies::Parts(compress::BLOCK_BYTES),
        (None, true) => Bodies::Parts(part_size),
        (None, false) => Bodies::Whole,
    };
    let (digests, small) = hash(job, ctx, bodies)?;
    still_there(job, ctx)?;
    // The window may have closed while this file was hashed.
    if !ctx.gate.is_open() && !job.requested {
        return Err(UploadError::Paused);
    }
    let resumable = match journaled {
        Some(m)
            if m.version.matches(&job.version) && m.sha256 == digests.sha256 && m.zstd == zstd =>
        {
            Some(m)
        }
        // An upload of another version (or of the same one rewritten in place, or
        // encoded otherwise): not to be resumed, nor left on the server.
        Some(m) => {
            multipart::abandon_journaled(ctx, &job.file, &m);
            None
        }
        None => None,
    };
    if let Some(mp) = resumable {
        let key = mp.key.clone();
        let object = Object::new(job, ctx, &key, &digests, zstd);
        // It may have been completed just before a power cut, and not every server says
        // NoSuchUpload for it then (s3s-fs lists it as empty, inviting every part again).
        if object.occupant()? == Occupant::Same {
            object.record_there("already completed")?;
            return Ok(Uploaded::AlreadyThere);
        }
        return multipart::run(&object, part_size, Some(mp), &parts_sender(zstd));
    }
    if let Some(origin) = &job.origin
        && !still_linked(job, origin)
        && let Some(key) = uploaded_as(job, ctx, origin, &digests, zstd)?
    {
        let object = Object::new(job, ctx, &key, &digests, zstd);
        object.record_there(&format!("already in S3 as {origin}, renamed since"))?;
        return Ok(Uploaded::AlreadyThere);
    }
    let first = ctx.journal.read().next_suffix(&job.file, &job.version);
    for suffix in suffixes(first).take(usize::from(MAX_KEY_TRIES)) {
        let key = s
            .scheme
            .key_with_suffix(&job.file, &job.version, suffix, zstd.is_some())
            .map_err(|why| UploadError::Unkeyable {
                why: format!("{}: {why}", job.path.display()),
            })?;
        let object = Object::new(job, ctx, &key, &digests, zstd).holding(small.as_deref());
        match object.send(multipart, part_size) {
            Err(UploadError::KeyTaken) => {
                log::debug!("{}: {key} holds another content; trying the next", job.file);
            }
            other => return other,
        }
    }
    Err(UploadError::Unkeyable {
        why: format!(
            "{}: {MAX_KEY_TRIES} keys tried, each holding another content",
            job.path.display()
        ),
    })
}

/// The key under which this content reached S3 as `origin` (the file's name before a
/// rename while the daemon was down), if it did: the keys `origin` may have used are
/// looked at in turn, from the plain one, until a free one.
/// Whether `origin` (the name this file had when it was queued or sent) still holds it,
/// the same inode: then it is a hard link, not a rename, and this name is a file of its
/// own that gets its own object (a server-side copy when the content went lately).
fn still_linked(job: &Job, origin: &FileRef) -> bool {
    let Some(root) = job
        .path
        .to_str()
        .and_then(|p| p.strip_suffix(job.file.rel()))
    else {
        return false;
    };
    stat(&std::path::Path::new(root).join(origin.rel()))
        .ok()
        .flatten()
        .is_some_and(|v| v.ino == job.version.ino)
}

fn uploaded_as(
    job: &Job,
    ctx: &Context,
    origin: &FileRef,
    digests: &Digests,
    zstd: Option<i32>,
) -> Result<Option<String>> {
    for suffix in suffixes(0).take(usize::from(MAX_KEY_TRIES)) {
        let Ok(key) =
            ctx.settings
                .scheme
                .key_with_suffix(origin, &job.version, suffix, zstd.is_some())
        else {
            return Ok(None);
        };
        match Object::new(job, ctx, &key, digests, zstd).occupant()? {
            Occupant::Free => return Ok(None),
            Occupant::Same => return Ok(Some(key)),
            Occupant::Other => {}
        }
    }
    Ok(None)
}

/// The `~N` to try in turn from `first`: 0 (the plain key), then 2, 3, ...
fn suffixes(first: u16) -> impl Iterator<Item = u16> {
    let start = if first == 1 { 2 } else { first };
    std::iter::once(start).chain((start.max(1) + 1..=u16::MAX).filter(|n| *n >= 2))
}

/// What is at a key already.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Occupant {
    Free,
    /// An object with this content (by its `sha256` metadata).
    Same,
    /// Another content.
    Other,
}

/// One version of a file on its way to one key, as it is or zstd-compressed.
struct Object<'a> {
    job: &'a Job,
    ctx: &'a Context,
    key: &'a str,
    digests: &'a Digests,
    /// The zstd level, when compressed.
    zstd: Option<i32>,
    /// A small file's bytes, read whole when it was hashed: a single PUT sends them.
    bytes: Option<&'a [u8]>,
}

impl<'a> Object<'a> {
    fn new(
        job: &'a Job,
        ctx: &'a Context,
        key: &'a str,
        digests: &'a Digests,
        zstd: Option<i32>,
    ) -> Object<'a> {
        Object {
            job,
            ctx,
            key,
            digests,
            zstd,
            bytes: None,
        }
    }

    /// This object with the file's bytes in memory (a small file, read whole).
    fn holding(self, bytes: Option<&'a [u8]>) -> Object<'a> {
        Object { bytes, ..self }
    }

    /// What [`Recent`] knows this content by.
    fn content(&self) -> Content {
        (self.digests.sha256, self.zstd.is_some())
    }

    /// Sends this version to this key, unless the key holds another content
    /// ([`UploadError::KeyTaken`]): by a copy of an object of the same content uploaded
    /// lately, a conditional PUT, or a multipart upload to a key found free (compressed:
    /// [`compressed::send`]).
    fn send(&self, multipart: bool, part_size: u64) -> Result<Uploaded> {
        if let Some(source) = self.ctx.recent.find(&self.content()) {
            match self.copy_from(&source) {
                Err(UploadError::S3(e)) if !e.key_taken() => {
                    log::info!(
                        "{}: copying {source} failed ({e}); sending it",
                        self.job.file
                    );
                    self.ctx.recent.forget(&self.content());
                }
                other => return other,
            }
        }
        if !multipart && self.zstd.is_none() {
            return self.put();
        }
        if multipart && let Some(there) = self.claim()? {
            return Ok(there);
        }
        match self.zstd {
            Some(level) => compressed::send(self, level, part_size, multipart),
            None => multipart::run(self, part_size, None, &parts_sender(None)),
        }
    }

    /// Looks at the key before sending there: `None` if it is free; this content
    /// already there (journaled now); or [`UploadError::KeyTaken`].
    fn claim(&self) -> Result<Option<Uploaded>> {
        match self.occupant()? {
            Occupant::Free => Ok(None),
            Occupant::Same => {
                self.record_there("already in S3")?;
                Ok(Some(Uploaded::AlreadyThere))
            }
            Occupant::Other => Err(UploadError::KeyTaken),
        }
    }

    /// The object at the key: none, this content, or another.
    fn occupant(&self) -> Result<Occupant> {
        let head = match self.ctx.s3.head(self.key) {
            // After a refused PUT (412) the server closes the connection while our body
            // is still on its way; the pool may hand that connection out once more.
            Err(crate::s3::S3Error::Transport { .. }) => self.ctx.s3.head(self.key)?,
            other => other?,
        };
        let Some(head) = head else {
            return Ok(Occupant::Free);
        };
        let sha_hex = self.digests.sha256_hex();
        let same = head
            .get("sha256")
            .is_some_and(|v| v.eq_ignore_ascii_case(&sha_hex));
        Ok(if same {
            Occupant::Same
        } else {
            Occupant::Other
        })
    }

    /// Journals that this content is at the key already. `why` goes in the log line.
    fn record_there(&self, why: &str) -> Result<()> {
        log::info!("{}: {why} as {}, not sent again", self.job.file, self.key);
        self.ctx.journal(&[self.uploaded(String::new())])?;
        self.ctx.recent.note(self.content(), self.key);
        Ok(())
    }

    /// A server-side copy of `source` (the same content, uploaded lately) to the key,
    /// which must be free: CopyObject overwrites.
    fn copy_from(&self, source: &str) -> Result<Uploaded> {
        if self.job.version.size > MAX_COPY_BYTES {
            return Err(UploadError::S3(crate::s3::S3Error::BadAnswer {
                op: "CopyObject",
                key: self.key.to_string(),
                why: "over 5 GiB".into(),
            }));
        }
        if let Some(there) = self.claim()? {
            return Ok(there);
        }
        let etag = self.ctx.s3.copy(self.key, source, &self.attributes())?;
        log::info!(
            "{}: the same content as {source}: copied on the server, not sent",
            self.job.file
        );
        self.ctx.journal(&[self.uploaded(etag)])?;
        self.ctx.recent.note(self.content(), self.key);
        Ok(Uploaded::Copied)
    }

    /// The `x-amz-meta-*` of SPEC.md and, compressed, the file's size and zstd's
    /// Content-Type.
    fn attributes(&self) -> Attributes {
        let s = &self.ctx.settings;
        let mut meta = vec![
            ("vehicle-id".to_string(), s.scheme.vehicle_id.clone()),
            ("source".to_string(), self.job.file.source().to_string()),
            (
                "mtime".to_string(),
                rfc3339_utc(self.job.version.mtime_seconds()),
            ),
            ("sha256".to_string(), self.digests.sha256_hex()),
        ];
        if self.zstd.is_some() {
            meta.push((
                ORIGINAL_SIZE_META.to_string(),
                self.job.version.size.to_string(),
            ));
        }
        Attributes {
            meta,
            content_type: self.zstd.map(|_| compress::CONTENT_TYPE),
        }
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

    fn put(&self) -> Result<Uploaded> {
        let (job, ctx) = (self.job, self.ctx);
        let size = job.version.size;
        let rewritten = AtomicBool::new(false);
        let span = Span {
            offset: 0,
            len: size,
            expect: Expect(self.digests.body_crc.first().copied().unwrap_or(0)),
            changed: &rewritten,
        };
        // The bytes in memory, or the file: on the stack, not boxed (one file a request).
        let (mut in_memory, mut from_file);
        let reader: &mut dyn Read = match self.bytes {
            Some(bytes) => {
                in_memory = span.reader(io::Cursor::new(bytes), job, ctx);
                &mut in_memory
            }
            None => {
                from_file = body(job, span, ctx).map_err(|e| read_error(job, e))?;
                &mut from_file
            }
        };
        let sha = base64(&self.digests.sha256);
        ctx.admit(job, size)?;
        let sent = {
            let _permit = ctx.permits.acquire(false);
            ctx.s3.put(self.key, reader, size, &sha, &self.attributes())
        };
        self.put_answer(sent, rewritten.load(Ordering::Relaxed), size)
    }

    /// What a single PUT of `bytes` bytes ended in, the server's answer `sent`;
    /// `rewritten` if the file changed under the transfer.
    fn put_answer(
        &self,
        sent: std::result::Result<String, S3Error>,
        rewritten: bool,
        bytes: u64,
    ) -> Result<Uploaded> {
        let (job, ctx) = (self.job, self.ctx);
        if !matches!(&sent, Err(e) if e.unreachable()) {
            ctx.link_down.store(false, Ordering::Relaxed);
        }
        let etag = match sent {
            Ok(e) => e,
            Err(_) if ctx.stop.load(Ordering::Relaxed) => return Err(UploadError::Interrupted),
            Err(_) if rewritten => return Err(UploadError::Changed),
            Err(e) if e.class() == Class::ContentChanged => return Err(UploadError::Changed),
            // The key holds something: this content (a crash before journaling, a wiped
            // state dir) or another one (the next `~N` then).
            Err(e) if e.key_taken() => {
                return match self.occupant()? {
                    Occupant::Same => {
                        self.record_there("already in S3")?;
                        Ok(Uploaded::AlreadyThere)
                    }
                    _ => Err(UploadError::KeyTaken),
                };
            }
            // The connection closed under the body: perhaps a 412 answered before the
            // body was read. The key says whether it is taken (else the link it is).
            Err(e) if e.cut_while_sending() && !ctx.link_down.load(Ordering::Relaxed) => {
                let occupant = self.occupant();
                ctx.link_down.store(
                    matches!(&occupant, Err(UploadError::S3(a)) if a.unreachable()),
                    Ordering::Relaxed,
                );
                return match occupant {
                    Ok(Occupant::Same) => {
                        self.record_there("already in S3")?;
                        Ok(Uploaded::AlreadyThere)
                    }
                    Ok(Occupant::Other) => Err(UploadError::KeyTaken),
                    _ => Err(changed_or(job, ctx, UploadError::S3(e))),
                };
            }
            // Cut short by a file that shrank or changed under the transfer.
            Err(e) => return Err(changed_or(job, ctx, UploadError::S3(e))),
        };
        ctx.journal(&[self.uploaded(etag)])?;
        ctx.recent.note(self.content(), self.key);
        Ok(Uploaded::Sent { bytes })
    }
}

/// The metadata naming a compressed object's uncompressed size (`x-amz-meta-original-size`).
pub const ORIGINAL_SIZE_META: &str = "original-size";

/// How a multipart upload's missing parts are sent: compressed at `zstd`'s level, or as
/// the file has them.
fn parts_sender(zstd: Option<i32>) -> impl Fn(&mut multipart::Upload) -> Result<u64> {
    move |upload| match zstd {
        Some(level) => compressed::send_parts(upload, level),
        None => upload.send_missing(),
    }
}

/// The file's digests and, a small file sent in one PUT, its bytes (read whole).
fn hash(job: &Job, ctx: &Context, bodies: Bodies) -> Result<(Digests, Option<Vec<u8>>)> {
    let (path, size) = (&job.path, job.version.size);
    let read = if bodies == Bodies::Whole && size <= SMALL_FILE_BYTES {
        read_small(path, size, job.snapshot, &ctx.stop).map(|(d, bytes)| (d, Some(bytes)))
    } else {
        hash_file(path, size, bodies, job.snapshot, &ctx.stop).map(|d| (d, None))
    };
    match read {
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

/// The CRC-32 the bytes of a body must have, taken when the file was hashed: checked
/// by [`BodyReader`] as it reads them.
pub struct Expect(pub u32);

struct Hasher(crc32fast::Hasher, u32);

impl Hasher {
    fn new(expect: Expect) -> Hasher {
        Hasher(crc32fast::Hasher::new(), expect.0)
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Whether everything read has the expected CRC.
    fn matches(&mut self) -> bool {
        std::mem::replace(&mut self.0, crc32fast::Hasher::new()).finalize() == self.1
    }
}

/// A reader over `len` bytes of a file from `offset`, that stops at shutdown, charges
/// every byte to the shared bandwidth budget, counts what it hands out, and hashes it:
/// the last bytes are handed out only if everything read hashes to the digest taken
/// before sending. Otherwise the file was rewritten meanwhile (its mtime maybe put
/// back): the read fails, so the request never completes and no server, checking or
/// not, stores a mix of two versions; `changed` tells the caller why.
struct BodyReader<'a, R> {
    inner: io::Take<R>,
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
    progress: &'a AtomicU64,
    gate: &'a Gate,
    hasher: Hasher,
    changed: &'a AtomicBool,
}

impl<R: Read> Read for BodyReader<'_, R> {
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
        self.hasher.update(&buf[..n]);
        if n > 0 && self.inner.limit() == 0 && !self.hasher.matches() {
            self.changed.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the bytes read differ from those hashed: the file was rewritten",
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

/// The bytes `offset..offset + len` of the job's file, to be checked against `expect`;
/// `changed` is set if they do not match.
struct Span<'a> {
    offset: u64,
    len: u64,
    expect: Expect,
    changed: &'a AtomicBool,
}

impl<'a> Span<'a> {
    /// The span's bytes read from `source`, which is at its start.
    fn reader<R: Read>(self, source: R, job: &'a Job, ctx: &'a Context) -> BodyReader<'a, R> {
        BodyReader {
            inner: source.take(self.len),
            stop: &ctx.stop,
            sent: &ctx.sent_bytes,
            progress: &job.progress,
            gate: &ctx.gate,
            hasher: Hasher::new(self.expect),
            changed: self.changed,
        }
    }
}

fn body<'a>(job: &'a Job, span: Span<'a>, ctx: &'a Context) -> io::Result<BodyReader<'a, File>> {
    let mut f = File::open(&job.path)?;
    if span.offset > 0 {
        f.seek(SeekFrom::Start(span.offset))?;
    }
    Ok(span.reader(f, job, ctx))
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
        Ok(Some(now)) => Ok(job.is_current(&now)),
        Ok(None) => Ok(false),
        Err(e) => Err(read_error(job, e)),
    }
}

/// Ok if the file is still the job's version; `Gone` (aborting any multipart upload it
/// had) or `Changed` if not.
fn still_there(job: &Job, ctx: &Context) -> Result<()> {
    match stat(&job.path) {
        Ok(Some(now)) if job.is_current(&now) => Ok(()),
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

    fn status(status: u16, code: &str) -> UploadError {
        UploadError::S3(S3Error::Status {
            op: "PutObject",
            key: "v001/x".into(),
            status,
            code: code.into(),
            message: "m".into(),
        })
    }

    fn kind(e: UploadError) -> FailureKind {
        match outcome(Err(e)) {
            Outcome::Failed(f) => f.kind,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn results_read_to_the_planner_as_its_outcomes() {
        assert_eq!(
            outcome(Ok(Uploaded::Sent { bytes: 7 })),
            Outcome::Sent { bytes: 7 }
        );
        assert_eq!(outcome(Ok(Uploaded::Copied)), Outcome::Copied);
        assert_eq!(outcome(Ok(Uploaded::AlreadyThere)), Outcome::AlreadyThere);
        assert_eq!(outcome(Err(UploadError::Gone)), Outcome::Gone);
        assert_eq!(outcome(Err(UploadError::Changed)), Outcome::Changed);
        assert_eq!(outcome(Err(UploadError::Interrupted)), Outcome::Interrupted);
        assert_eq!(outcome(Err(UploadError::Paused)), Outcome::Paused);
        for hold in [Hold::Link, Hold::Budget] {
            assert_eq!(outcome(Err(UploadError::Held(hold))), Outcome::Held(hold));
        }
    }

    #[test]
    fn each_stop_says_why_in_the_log() {
        for (e, says) in [
            (UploadError::Gone, "deleted before its upload"),
            (UploadError::Changed, "changed during its upload"),
            (UploadError::Interrupted, "interrupted by shutdown"),
            (UploadError::Paused, "the upload window closed"),
            (
                UploadError::Held(Hold::Link),
                "the link now may not carry it",
            ),
            (
                UploadError::Held(Hold::Budget),
                "the link's daily budget would be passed",
            ),
            (UploadError::KeyTaken, "the key holds another content"),
        ] {
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn a_missing_file_reads_as_gone_and_a_changed_one_as_not_current() {
        let dir = std::env::temp_dir().join(format!("tvm-upload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").expect("write");
        let version = stat(&path).expect("stat").expect("a file");
        let job = Job {
            file: FileRef::new("s", "f"),
            path: path.clone(),
            version,
            snapshot: false,
            origin: None,
            progress: Default::default(),
            requested: false,
        };
        assert!(unchanged(&job).expect("stat"));
        std::fs::write(&path, b"abcd").expect("grow");
        assert!(!unchanged(&job).expect("stat"));
        std::fs::remove_file(&path).expect("rm");
        assert!(!unchanged(&job).expect("stat"));
        let gone = read_error(&job, io::Error::from(io::ErrorKind::NotFound));
        assert!(matches!(gone, UploadError::Gone));
        let denied = read_error(&job, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(denied, UploadError::Read { .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_content_copied_from_is_forgotten_when_its_copy_fails() {
        let recent = Recent::default();
        let content = ([7u8; 32], false);
        recent.note(content, "v/k");
        assert_eq!(recent.find(&content).as_deref(), Some("v/k"));
        recent.forget(&content);
        assert_eq!(recent.find(&content), None);
    }

    #[test]
    fn s3_errors_are_told_apart_as_the_failure_policy_needs() {
        let reset = UploadError::S3(S3Error::Transport {
            op: "PutObject",
            key: "k".into(),
            message: "connection reset".into(),
        });
        assert_eq!(kind(reset), FailureKind::Unreachable);
        let none = UploadError::S3(S3Error::NoCredentials { why: "x".into() });
        assert_eq!(kind(none), FailureKind::NoCredentials);
        assert_eq!(kind(status(403, "AccessDenied")), FailureKind::Refused);
        assert_eq!(
            kind(status(403, "SignatureDoesNotMatch")),
            FailureKind::Refused
        );
        assert_eq!(kind(status(503, "SlowDown")), FailureKind::SlowDown);
        assert_eq!(kind(status(400, "InvalidArgument")), FailureKind::Rejected);
        assert_eq!(kind(status(500, "InternalError")), FailureKind::Transient);
        let skewed = UploadError::S3(S3Error::Skewed {
            op: "PutObject",
            key: "k".into(),
        });
        assert_eq!(kind(skewed), FailureKind::Transient);
    }

    #[test]
    fn other_failures_keep_their_message_and_refusals_their_advice() {
        let unkeyable = UploadError::Unkeyable {
            why: "key too long".into(),
        };
        assert_eq!(kind(unkeyable), FailureKind::Unkeyable);
        let read = UploadError::Read {
            path: PathBuf::from("/logs/a"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let Outcome::Failed(f) = outcome(Err(read)) else {
            panic!("a read error is a failure");
        };
        assert_eq!(f.kind, FailureKind::Read);
        assert!(f.message.starts_with("reading /logs/a: "), "{}", f.message);
        assert_eq!(kind(UploadError::KeyTaken), FailureKind::Transient);
        let Outcome::Failed(f) = outcome(Err(status(403, "AccessDenied"))) else {
            panic!("a refusal is a failure");
        };
        assert_eq!(f.message, status(403, "AccessDenied").to_string());
        assert!(!f.advice.is_empty());
    }

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
