//! The multipart upload of one version of a file: begun (created, or resumed and
//! reconciled with the server's parts) → the missing parts sent → completed.
//!
//! Every step is journaled before the next relies on it: `mp_started` once the server
//! gave an upload id, `part` as each part is stored, `uploaded` once completed. A part
//! the journal or the server confirms is never sent again. Whenever the file turns out
//! to have changed or gone, the upload is aborted on the server and forgotten
//! ([`Upload::abandon_if_changed`], the one place that decides it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{
    Expect, Job, Object, Result, Span, UploadError, Uploaded, body, read_error, unchanged,
};
use crate::digest::{base64, hex};
use crate::file::FileRef;
use crate::journal::{Multipart, PartInput, Record, part_len};
use crate::s3::{Class, PartChecksum, PartUpload, ServerPart, etag_hex};

use super::Context;

/// How the parts not stored yet are sent: the file's bytes as they are
/// ([`Upload::send_missing`]), or compressed (`compressed::send_parts`). Returns the
/// bytes sent. (Passed in, so that this module does not know the compressed one.)
pub(super) type SendParts<'s> = &'s dyn Fn(&mut Upload) -> Result<u64>;

/// Uploads `object` in parts of `part_size`, resuming `resumable` when the journal has
/// an upload of this version; `send` sends the parts.
pub(super) fn run(
    object: &Object,
    part_size: u64,
    resumable: Option<Multipart>,
    send: SendParts,
) -> Result<Uploaded> {
    let mut upload = match resumable {
        Some(mp) => match Upload::resume(object, mp)? {
            Some(u) => u,
            // The upload is gone: completed just before a crash (the object is there),
            // or expired by the server (start over).
            None if object.occupant()? == super::Occupant::Same => {
                object.record_there("already completed")?;
                return Ok(Uploaded::AlreadyThere);
            }
            None => Upload::create(object, part_size)?,
        },
        None => Upload::create(object, part_size)?,
    };
    let sent = send(&mut upload)?;
    upload.finish(sent)
}

/// An upload id on the server for this version, and the parts known stored.
pub(super) struct Upload<'a> {
    pub(super) object: &'a Object<'a>,
    pub(super) upload_id: String,
    pub(super) part_size: u64,
    /// Part number to ETag.
    pub(super) done: BTreeMap<u32, String>,
    /// Compressed: the input each stored part holds.
    pub(super) inputs: BTreeMap<u32, PartInput>,
    /// Compressed and resumed: the parts the server listed that the journal does not
    /// know, each recognised (or not) once compressed again.
    pub(super) unjournaled: BTreeMap<u32, ServerPart>,
    /// Compressed: whether the frames compressed now are those sent before (the same
    /// zstd library as journaled; input and level are checked before resuming).
    pub(super) same_frames: bool,
    /// Its parts carry CRC-32s (else `Content-MD5`s): as it was created.
    pub(super) crc32: bool,
}

impl<'a> Upload<'a> {
    pub(super) fn create(object: &'a Object<'a>, part_size: u64) -> Result<Upload<'a>> {
        let (job, ctx) = (object.job, object.ctx);
        let known = |id: &str| {
            let state = ctx.journal.read();
            state.multipart.values().any(|mp| mp.upload_id == id)
        };
        // Parts of the file as it is carry the CRC-32s taken when it was hashed; a
        // compressed upload's parts, made as it goes, their Content-MD5.
        let crc32 = object.zstd.is_none();
        let upload_id =
            ctx.doubts
                .create(&ctx.s3, object.key, &object.attributes(), crc32, &known)?;
        let record = Record::MpStarted {
            file: job.file.clone(),
            key: object.key.to_string(),
            upload_id: upload_id.clone(),
            version: job.version,
            sha256: object.digests.sha256,
            part_size,
            zstd: object.zstd,
            zstd_lib: object.zstd.map(|_| crate::compress::library_version()),
            crc32,
        };
        if let Err(e) = ctx.journal(&[record]) {
            // Not journaled means not resumable: don't leave it on the server.
            let _ = ctx.s3.abort(object.key, &upload_id);
            return Err(e);
        }
        Ok(Upload {
            object,
            upload_id,
            part_size,
            done: BTreeMap::new(),
            inputs: BTreeMap::new(),
            unjournaled: BTreeMap::new(),
            same_frames: true,
            crc32,
        })
    }

    /// The journaled upload, its parts reconciled with the server's; `None` when the
    /// server no longer knows it (then it is forgotten).
    fn resume(object: &'a Object<'a>, mp: Multipart) -> Result<Option<Upload<'a>>> {
        let ctx = object.ctx;
        let server = match ctx.s3.list_parts(&mp.key, &mp.upload_id) {
            Ok(parts) => parts,
            Err(e) if e.class() == Class::UploadLost => {
                log::info!(
                    "{}: the server no longer has upload {}; starting it over",
                    object.job.file,
                    mp.key
                );
                forget(ctx, &object.job.file, &mp.upload_id)?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let mut upload = Upload {
            object,
            upload_id: mp.upload_id.clone(),
            part_size: mp.part_size,
            done: BTreeMap::new(),
            inputs: BTreeMap::new(),
            unjournaled: BTreeMap::new(),
            same_frames: mp.zstd_lib == Some(crate::compress::library_version()),
            crc32: mp.crc32,
        };
        if object.zstd.is_some() {
            upload.reconcile_compressed(&mp, server);
        } else {
            upload.reconcile(&mp.parts, server)?;
        }
        Ok(Some(upload))
    }

    /// A compressed part counts as done when the journal has it with its input and the
    /// server has it at that size with the journaled ETag (or none listed). The server's
    /// other parts are kept: compressing their input again tells whether they are ours.
    fn reconcile_compressed(&mut self, mp: &Multipart, server: Vec<ServerPart>) {
        for p in server {
            let journaled = mp.parts.get(&p.number).zip(mp.inputs.get(&p.number));
            match journaled {
                Some((etag, input))
                    if p.size == input.len
                        && (p.etag.is_empty() || etag_hex(etag) == etag_hex(&p.etag)) =>
                {
                    self.done.insert(p.number, etag.clone());
                    self.inputs.insert(p.number, *input);
                }
                _ => {
                    self.unjournaled.insert(p.number, p);
                }
            }
        }
    }

    /// A part counts as done when the server has it with the journaled ETag, or (stored
    /// after the journal's last record, before a crash) at the right size, with the
    /// local part's checksum if the server lists one (its CRC-32, or an ETag that is the
    /// part's MD5 for an upload of `Content-MD5`s). What is learnt is journaled.
    fn reconcile(
        &mut self,
        journaled: &BTreeMap<u32, String>,
        server: Vec<ServerPart>,
    ) -> Result<()> {
        let (job, digests) = (self.object.job, self.object.digests);
        let total = digests.body_crc.len() as u32;
        let mut learned = Vec::new();
        for p in server {
            if p.number == 0 || p.number > total {
                continue;
            }
            let expected_len = part_len(job.version.size, self.part_size, p.number);
            match journaled.get(&p.number) {
                // A server that lists no ETags: the journal's word and the size must do.
                Some(etag)
                    if p.size == expected_len
                        && (p.etag.is_empty() || etag_hex(etag) == etag_hex(&p.etag)) =>
                {
                    self.done.insert(p.number, etag.clone());
                }
                // Stored after the journal's last record, before a crash. Under this
                // upload id the server only accepted parts whose checksum matched the
                // hash of this same version (its SHA-256 was journaled with the id), so
                // a part of the right size is ours, unless what the server lists of it
                // says otherwise.
                None if p.size == expected_len => {
                    if let Some(etag) = self.unjournaled_ours(&p)? {
                        learned.push(self.part_record(p.number, &etag, None));
                        self.done.insert(p.number, etag);
                    }
                }
                _ => {}
            }
        }
        self.object.ctx.journal(&learned)
    }

    /// The ETag to complete with of a part of the right size the journal does not know,
    /// if it is this version's: its listed CRC-32 (or, for `Content-MD5` uploads, its
    /// ETag) is the local part's. A server that lists no ETag gets the part's MD5 as S3
    /// names it.
    fn unjournaled_ours(&self, p: &ServerPart) -> Result<Option<String>> {
        let i = p.number as usize - 1;
        if let Some(listed) = &p.crc32
            && *listed != crate::digest::crc32_b64(self.object.digests.body_crc[i])
        {
            return Ok(None);
        }
        let md5_needed = p.etag.is_empty() || !self.crc32;
        if !md5_needed {
            return Ok(Some(p.etag.clone()));
        }
        let md5 = hex(&self.part_md5(p.number)?);
        if p.etag.is_empty() {
            Ok(Some(format!("\"{md5}\"")))
        } else if etag_hex(&p.etag).eq_ignore_ascii_case(&md5) {
            Ok(Some(p.etag.clone()))
        } else {
            Ok(None)
        }
    }

    /// The MD5 of part `n` as the file holds it now (uploads of `Content-MD5`s, begun by
    /// an older version, and servers that list no ETags).
    fn part_md5(&self, n: u32) -> Result<[u8; 16]> {
        let job = self.object.job;
        let offset = u64::from(n - 1) * self.part_size;
        let len = part_len(job.version.size, self.part_size, n);
        std::fs::File::open(&job.path)
            .and_then(|f| crate::digest::md5_span(&f, offset, len))
            .map_err(|e| read_error(job, e))
    }

    pub(super) fn part_record(&self, n: u32, etag: &str, input: Option<PartInput>) -> Record {
        Record::Part {
            file: self.object.job.file.clone(),
            upload_id: self.upload_id.clone(),
            n,
            etag: etag.to_string(),
            input,
        }
    }

    /// Sends every part not known stored. Returns the bytes sent.
    pub(super) fn send_missing(&mut self) -> Result<u64> {
        let job = self.object.job;
        let total = self.object.digests.body_crc.len() as u32;
        let stored: u64 = self
            .done
            .keys()
            .map(|&n| part_len(job.version.size, self.part_size, n))
            .sum();
        job.progress.store(stored, Ordering::Relaxed);
        let todo: VecDeque<u32> = (1..=total).filter(|n| !self.done.contains_key(n)).collect();
        if !self.done.is_empty() {
            log::info!(
                "{}: resuming upload of {}: {} of {total} parts already stored",
                job.file,
                self.object.key,
                self.done.len()
            );
        }
        let sending = Sending::new(todo);
        let threads = self
            .object
            .ctx
            .settings
            .concurrency
            .min(sending.left())
            .max(1);
        if sending.left() > 0 {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| self.send_parts(&sending));
                }
            });
        }
        self.finish_sending(sending)
    }

    /// One sender thread: takes parts until none is left, one fails, the window closes
    /// or shutdown is asked for.
    fn send_parts(&self, sending: &Sending) {
        let ctx = self.object.ctx;
        // A closed window pauses the upload here, at a part boundary.
        while !sending.failed.load(Ordering::Relaxed)
            && !ctx.stop.load(Ordering::Relaxed)
            && (ctx.gate.is_open() || self.object.job.requested)
        {
            let Some(n) = lock(&sending.todo).pop_front() else {
                return;
            };
            match self.send_part(n) {
                Ok((etag, len)) => {
                    sending.sent.fetch_add(len, Ordering::Relaxed);
                    lock(&sending.stored).push((n, etag));
                }
                Err(e) => {
                    sending.failed.store(true, Ordering::Relaxed);
                    lock(&sending.failure).get_or_insert(e);
                    return;
                }
            }
        }
    }

    /// Sends part `n` (holding a shared permit) and journals it.
    fn send_part(&self, n: u32) -> Result<(String, u64)> {
        let (job, ctx) = (self.object.job, self.object.ctx);
        let len = part_len(job.version.size, self.part_size, n);
        let crc = self.object.digests.body_crc[n as usize - 1];
        let sum = if self.crc32 {
            crate::digest::crc32_b64(crc)
        } else {
            base64(&self.part_md5(n)?)
        };
        let rewritten = AtomicBool::new(false);
        let span = Span {
            offset: u64::from(n - 1) * self.part_size,
            len,
            expect: Expect(crc),
            changed: &rewritten,
        };
        let mut reader = body(job, span, ctx).map_err(|e| read_error(job, e))?;
        let part = PartUpload {
            key: self.object.key,
            upload_id: &self.upload_id,
            number: n,
            len,
            checksum: if self.crc32 {
                PartChecksum::Crc32(&sum)
            } else {
                PartChecksum::Md5(&sum)
            },
        };
        ctx.admit(job, len)?;
        let etag = {
            let _permit = ctx.permits.acquire(true);
            match ctx.s3.upload_part(&part, &mut reader) {
                Ok(etag) => etag,
                // Rewritten in place since it was hashed: this upload is of a version
                // that no longer exists.
                Err(_) if rewritten.load(Ordering::Relaxed) => return Err(UploadError::Changed),
                Err(e) => return Err(e.into()),
            }
        };
        ctx.journal(&[self.part_record(n, &etag, None)])?;
        Ok((etag, len))
    }

    /// What the sender threads left: the parts stored, and why they stopped if they did.
    fn finish_sending(&mut self, sending: Sending) -> Result<u64> {
        self.done.extend(
            sending
                .stored
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let failure = sending
            .failure
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let left = sending
            .todo
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        self.conclude(failure, left, sending.sent.into_inner())
    }

    /// How sending ended: `sent` bytes if every part is stored; else why not, the
    /// upload abandoned when the file changed. `left`: parts not sent (a closed window).
    pub(super) fn conclude(
        &mut self,
        failure: Option<UploadError>,
        left: usize,
        sent: u64,
    ) -> Result<u64> {
        let ctx = self.object.ctx;
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(UploadError::Interrupted);
        }
        match failure {
            None if left > 0 => {
                log::info!(
                    "{}: window closed; paused with parts still to send",
                    self.object.job.file
                );
                Err(UploadError::Paused)
            }
            None => Ok(sent),
            // The server's checksum of a part differs from the bytes sent, which matched
            // the file's as they left (a part read otherwise is `Changed`, below): they
            // were damaged on the way. The stored parts stay; the job is tried again and
            // sends the rest.
            Some(UploadError::S3(e)) if e.class() == Class::ContentChanged => {
                log::warn!(
                    "{}: a part was damaged on the way ({e}); it is sent again",
                    self.object.job.file
                );
                Err(UploadError::S3(e))
            }
            Some(UploadError::Held(hold)) => {
                log::info!(
                    "{}: {}; its stored parts are kept",
                    self.object.job.file,
                    UploadError::Held(hold)
                );
                Err(UploadError::Held(hold))
            }
            Some(UploadError::Changed) => {
                log::info!(
                    "{}: rewritten while its parts were sent; the upload of {} is abandoned",
                    self.object.job.file,
                    self.object.key
                );
                self.abandon();
                Err(UploadError::Changed)
            }
            Some(UploadError::S3(e)) if e.class() == Class::UploadLost => {
                forget(ctx, &self.object.job.file, &self.upload_id)?;
                Err(UploadError::S3(e))
            }
            // A part failing because the file shrank, changed or went away under it:
            // the upload is of a version that no longer exists.
            Some(e) => {
                self.abandon_if_changed()?;
                Err(e)
            }
        }
    }

    /// Completes the upload of `sent` bytes if the file is still this version.
    pub(super) fn finish(self, sent: u64) -> Result<Uploaded> {
        self.abandon_if_changed()?;
        self.complete(sent)
    }

    /// Aborts and forgets the upload if the file is no longer this version: `Changed`
    /// or `Gone` then, Ok if it still is.
    fn abandon_if_changed(&self) -> Result<()> {
        let job = self.object.job;
        if unchanged(job)? {
            return Ok(());
        }
        self.abandon();
        match crate::probe::stat(&job.path) {
            Ok(None) => Err(UploadError::Gone),
            _ => Err(UploadError::Changed),
        }
    }

    fn abandon(&self) {
        abandon(
            self.object.ctx,
            &self.object.job.file,
            self.object.key,
            &self.upload_id,
        );
    }

    fn complete(self, sent: u64) -> Result<Uploaded> {
        let ctx = self.object.ctx;
        let etags: Vec<String> = self.done.values().cloned().collect();
        debug_assert!(
            self.done.keys().copied().eq(1..=etags.len() as u32),
            "parts must be contiguous from 1"
        );
        let crcs: Option<Vec<String>> = self.crc32.then(|| {
            let crcs = &self.object.digests.body_crc;
            crcs[..etags.len().min(crcs.len())]
                .iter()
                .map(|c| crate::digest::crc32_b64(*c))
                .collect()
        });
        match ctx
            .s3
            .complete(self.object.key, &self.upload_id, &etags, crcs.as_deref())
        {
            Ok(etag) => {
                ctx.journal(&[self.object.uploaded(etag)])?;
                ctx.recent.note(self.object.content(), self.object.key);
                Ok(Uploaded::Sent { bytes: sent })
            }
            // Completed before a crash, or expired by the server: S3 tells which.
            Err(e) if e.class() == Class::UploadLost => {
                if let Ok(super::Occupant::Same) = self.object.occupant() {
                    self.object.record_there("completed")?;
                    return Ok(Uploaded::Sent { bytes: sent });
                }
                forget(ctx, &self.object.job.file, &self.upload_id)?;
                Err(e.into())
            }
            // Another content reached the key meanwhile (a race, or a wiped state dir):
            // this upload is dropped and the file goes to the next `~N`.
            Err(e) if e.key_taken() => {
                self.abandon();
                Err(UploadError::KeyTaken)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The work shared by one upload's sender threads.
struct Sending {
    todo: Mutex<VecDeque<u32>>,
    stored: Mutex<Vec<(u32, String)>>,
    failure: Mutex<Option<UploadError>>,
    failed: AtomicBool,
    sent: AtomicU64,
}

impl Sending {
    fn new(todo: VecDeque<u32>) -> Sending {
        Sending {
            todo: Mutex::new(todo),
            stored: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
        }
    }

    fn left(&self) -> usize {
        lock(&self.todo).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file gone before or during its upload: abort any multipart upload it had.
pub(super) fn abandon_any(job: &Job, ctx: &Context) {
    let mp = ctx.journal.read().multipart.get(&job.file).cloned();
    if let Some(mp) = mp {
        abandon(ctx, &job.file, &mp.key, &mp.upload_id);
    }
}

/// Aborts and forgets a journaled multipart upload that is not to be resumed.
pub(super) fn abandon_journaled(ctx: &Context, file: &FileRef, mp: &Multipart) {
    log::info!(
        "{file}: the upload of {} was of another version; aborting it",
        mp.key
    );
    abandon(ctx, file, &mp.key, &mp.upload_id);
}

/// Aborts a multipart upload on the server (best effort: S3 lifecycle rules clean up
/// what this misses) and forgets it in the journal.
fn abandon(ctx: &Context, file: &FileRef, key: &str, upload_id: &str) {
    if let Err(e) = ctx.s3.abort(key, upload_id) {
        log::warn!("{file}: could not abort the multipart upload of {key}: {e}");
    }
    if let Err(e) = forget(ctx, file, upload_id) {
        log::warn!("{file}: {e}");
    }
}

fn forget(ctx: &Context, file: &FileRef, upload_id: &str) -> Result<()> {
    ctx.journal(&[Record::MpAborted {
        file: file.clone(),
        upload_id: upload_id.to_string(),
    }])
}
