//! A compressed upload: the file's zstd stream, one frame per part ([`crate::compress`]).
//!
//! One thread compresses part after part (a part's input starts where the previous
//! part's ended, so this is sequential) while `concurrency` sender threads upload them.
//! A part takes its request permit before it is compressed and gives it back once sent,
//! so compressed parts in memory never outnumber the shared permits (`s3.concurrency`),
//! whatever the files' sizes and however many are uploaded at once; their buffers are
//! reused ([`Buffers`]). Each part is journaled with the input it holds, so a resumed upload
//! continues from the end of its last stored part and never compresses or sends a
//! stored part again; a part the server stored after the journal's last record is
//! recognised when its input, compressed again (deterministically), gives the same bytes.
//!
//! Integrity: each 1 MiB block read is checked against its CRC-32 taken when the file
//! was hashed (the file did not change since), each frame is decompressed and compared
//! with its input before it is sent, and the server checks each part's Content-MD5 (a
//! single PUT's `x-amz-checksum-sha256`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::multipart::Upload;
use super::{Context, Job, Object, Permit, Result, UploadError, Uploaded, read_error};
use crate::compress::{self, BLOCK_BYTES, Compressor, Frame};
use crate::digest::{base64, hex, md5};
use crate::journal::PartInput;
use crate::limits::MAX_PARTS;
use crate::s3::{PartChecksum, PartUpload, etag_hex};

/// A fresh compressed upload: the first part's frame is made first; if it holds the whole
/// file and is under the multipart threshold it goes in one PUT, else a multipart upload
/// starts with it. `checked`: the key was found free already.
pub(super) fn send(object: &Object, level: i32, part_size: u64, checked: bool) -> Result<Uploaded> {
    let (job, ctx) = (object.job, object.ctx);
    let mut frames = Frames::new(object, level)?;
    let permit = ctx.permits.acquire(checked);
    let first = frames.next(0, part_size)?;
    if first.input_len == job.version.size
        && (first.bytes.len() as u64) < ctx.settings.multipart_threshold_bytes
    {
        let done = put(object, &first, permit);
        ctx.buffers.give(first.bytes);
        return done;
    }
    if !checked && let Some(there) = object.claim()? {
        return Ok(there);
    }
    let mut upload = Upload::create(object, part_size)?;
    let sent = pipeline(&mut upload, frames, Some((first, permit)))?;
    upload.finish(sent)
}

/// Sends the parts of `upload` not stored yet (a resumed one, or one just created).
pub(super) fn send_parts(upload: &mut Upload, level: i32) -> Result<u64> {
    let frames = Frames::new(upload.object, level)?;
    pipeline(upload, frames, None)
}

/// One PUT of a whole-file frame, under `permit`.
fn put(object: &Object, frame: &Frame, permit: Permit) -> Result<Uploaded> {
    let ctx = object.ctx;
    let sha: [u8; 32] = Sha256::digest(&frame.bytes).into();
    let mut body = Body::new(&frame.bytes, ctx);
    let len = frame.bytes.len() as u64;
    ctx.admit(object.job, len)?;
    let sent = ctx.s3.put(
        object.key,
        &mut body,
        len,
        &base64(&sha),
        &object.attributes(),
    );
    drop(permit);
    let done = object.put_answer(sent, false, len)?;
    object
        .job
        .progress
        .fetch_add(object.job.version.size, Ordering::Relaxed);
    Ok(done)
}

/// A part compressed and checked, ready to send, with the permit it is sent under.
struct Ready {
    n: u32,
    input: PartInput,
    frame: Frame,
    md5: [u8; 16],
    permit: Permit,
}

/// What the sender threads share with the compressing one.
#[derive(Default)]
struct Shared {
    stored: Mutex<Vec<(u32, String, PartInput)>>,
    failure: Mutex<Option<UploadError>>,
    failed: AtomicBool,
    sent: AtomicU64,
}

impl Shared {
    fn fail(&self, e: UploadError) {
        self.failed.store(true, Ordering::Relaxed);
        lock(&self.failure).get_or_insert(e);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Compresses the parts not stored yet in turn and hands them to the sender threads;
/// then records what was stored. Returns the bytes sent.
fn pipeline(
    upload: &mut Upload,
    mut frames: Frames,
    first: Option<(Frame, Permit)>,
) -> Result<u64> {
    let job = upload.object.job;
    let stored_before: u64 = upload.inputs.values().map(|i| i.end - i.start).sum();
    job.progress.store(stored_before, Ordering::Relaxed);
    if !upload.done.is_empty() {
        log::info!(
            "{}: resuming upload of {}: {} parts already stored",
            job.file,
            upload.object.key,
            upload.done.len()
        );
    }
    let shared = Shared::default();
    let threads = upload.object.ctx.settings.concurrency.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Ready>(0);
    let this: &Upload = upload;
    let produced = std::thread::scope(|scope| {
        for _ in 0..threads {
            let rx = rx.clone();
            let shared = &shared;
            scope.spawn(move || {
                for ready in rx {
                    if !shared.failed.load(Ordering::Relaxed)
                        && let Err(e) = send_one(this, shared, &ready)
                    {
                        shared.fail(e);
                    }
                    drop(ready.permit);
                    this.object.ctx.buffers.give(ready.frame.bytes);
                }
            });
        }
        drop(rx);
        let produced = produce(this, &mut frames, first, &tx, &shared);
        drop(tx);
        produced
    });
    for (n, etag, input) in shared
        .stored
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        upload.done.insert(n, etag);
        upload.inputs.insert(n, input);
    }
    let mut failure = shared
        .failure
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let left = match produced {
        Ok(left) => left,
        Err(e) => {
            failure.get_or_insert(e);
            0
        }
    };
    let sent = upload.conclude(failure, left, shared.sent.into_inner())?;
    covered(upload)?;
    Ok(sent)
}

/// The compressing side: part after part from the end of the last one stored, each
/// recognised as stored already or handed to a sender. Returns how many parts are left
/// unsent at least (a closed window; 0 when done or a sender failed).
fn produce(
    upload: &Upload,
    frames: &mut Frames,
    mut first: Option<(Frame, Permit)>,
    tx: &crossbeam_channel::Sender<Ready>,
    shared: &Shared,
) -> Result<usize> {
    let ctx = upload.object.ctx;
    let size = upload.object.job.version.size;
    let (mut offset, mut n) = (0u64, 1u32);
    while offset < size {
        if shared.failed.load(Ordering::Relaxed) || ctx.stop.load(Ordering::Relaxed) {
            return Ok(0);
        }
        if !ctx.gate.is_open() && !upload.object.job.requested {
            return Ok(1);
        }
        if let Some(input) = upload.inputs.get(&n).filter(|i| i.start == offset)
            && upload.done.contains_key(&n)
        {
            (offset, n) = (input.end, n + 1);
            continue;
        }
        if n > MAX_PARTS {
            return Err(UploadError::Unkeyable {
                why: format!(
                    "{}: its zstd stream needs more than {MAX_PARTS} parts of {} bytes",
                    upload.object.job.path.display(),
                    upload.part_size
                ),
            });
        }
        let (frame, permit) = match first.take() {
            Some(f) => f,
            None => {
                let permit = ctx.permits.acquire(true);
                (frames.next(offset, upload.part_size)?, permit)
            }
        };
        let input = PartInput {
            start: offset,
            end: offset + frame.input_len,
            len: frame.bytes.len() as u64,
        };
        let ready = Ready {
            n,
            input,
            md5: md5(&frame.bytes),
            frame,
            permit,
        };
        (offset, n) = (input.end, n + 1);
        if let Some(etag) = stored_unjournaled(upload, &ready) {
            upload
                .object
                .ctx
                .journal(&[upload.part_record(ready.n, &etag, Some(ready.input))])?;
            note_stored(upload, shared, &ready, etag);
            ctx.buffers.give(ready.frame.bytes);
            continue;
        }
        if tx.send(ready).is_err() {
            return Ok(0);
        }
    }
    Ok(0)
}

/// The ETag of a part the server stored before a crash and the journal does not know,
/// if it is this one: the same size and the same MD5. A server that lists no ETag cannot
/// say which bytes it holds: its part is taken at the right size only when the frames
/// are the same as those sent before the crash (the same zstd library: `same_frames`);
/// after an upgrade, a frame of the same size may hold other bytes, so it is sent again.
fn stored_unjournaled(upload: &Upload, ready: &Ready) -> Option<String> {
    let p = upload.unjournaled.get(&ready.n)?;
    same_part(
        p.size,
        &p.etag,
        ready.input.len,
        &ready.md5,
        upload.same_frames,
    )
}

/// [`stored_unjournaled`]'s test, on a listed part's size and ETag.
fn same_part(size: u64, etag: &str, len: u64, md5: &[u8; 16], same_frames: bool) -> Option<String> {
    let local = hex(md5);
    let same = size == len
        && if etag.is_empty() {
            same_frames
        } else {
            etag_hex(etag).eq_ignore_ascii_case(&local)
        };
    same.then(|| {
        if etag.is_empty() {
            format!("\"{local}\"")
        } else {
            etag.to_string()
        }
    })
}

fn note_stored(upload: &Upload, shared: &Shared, ready: &Ready, etag: String) {
    upload
        .object
        .job
        .progress
        .fetch_add(ready.input.end - ready.input.start, Ordering::Relaxed);
    lock(&shared.stored).push((ready.n, etag, ready.input));
}

/// Sends one part (under its permit) and journals it with its input.
fn send_one(upload: &Upload, shared: &Shared, ready: &Ready) -> Result<()> {
    let ctx = upload.object.ctx;
    let md5 = base64(&ready.md5);
    let part = PartUpload {
        key: upload.object.key,
        upload_id: &upload.upload_id,
        number: ready.n,
        len: ready.input.len,
        checksum: PartChecksum::Md5(&md5),
    };
    ctx.admit(upload.object.job, ready.input.len)?;
    let mut body = Body::new(&ready.frame.bytes, ctx);
    let etag = ctx.s3.upload_part(&part, &mut body)?;
    ctx.journal(&[upload.part_record(ready.n, &etag, Some(ready.input))])?;
    shared.sent.fetch_add(ready.input.len, Ordering::Relaxed);
    note_stored(upload, shared, ready, etag);
    Ok(())
}

/// Whether the stored parts are 1, 2, … with inputs end to end over the whole file: what
/// completing the upload would make of them. Parts past the last one (stored by an
/// earlier run that cut the stream otherwise) are dropped: completing leaves them out.
/// A gap is a bug, never completed.
fn covered(upload: &mut Upload) -> Result<()> {
    let mut offset = 0;
    let mut last = 0;
    for (i, (n, input)) in upload.inputs.iter().enumerate() {
        if *n != i as u32 + 1 || input.start != offset || !upload.done.contains_key(n) {
            break;
        }
        (offset, last) = (input.end, *n);
        if offset == upload.object.job.version.size {
            break;
        }
    }
    upload.inputs.retain(|n, _| *n <= last);
    upload.done.retain(|n, _| *n <= last);
    if offset == upload.object.job.version.size {
        return Ok(());
    }
    Err(UploadError::Read {
        path: upload.object.job.path.clone(),
        source: io::Error::other(format!(
            "the stored parts of {} cover {offset} of {} bytes; not completed",
            upload.object.key, upload.object.job.version.size
        )),
    })
}

/// Frames of one file: its blocks read in turn, each checked against its CRC-32 from
/// hashing, compressed, and each frame decompressed and checked before it is handed out.
struct Frames<'a> {
    job: &'a Job,
    compressor: Compressor,
    blocks: Blocks<'a>,
    buffers: &'a Buffers,
}

impl<'a> Frames<'a> {
    fn new(object: &Object<'a>, level: i32) -> Result<Frames<'a>> {
        let job = object.job;
        let file = File::open(&job.path).map_err(|e| read_error(job, e))?;
        let compressor = Compressor::new(level).map_err(|e| zstd_error(job, e))?;
        Ok(Frames {
            job,
            compressor,
            buffers: &object.ctx.buffers,
            blocks: Blocks {
                job,
                crcs: &object.digests.body_crc,
                stop: &object.ctx.stop,
                file,
                pos: 0,
                block: Vec::new(),
            },
        })
    }

    /// The frame of the blocks from `offset` until it holds `target` bytes or the file
    /// (its hashed size) ends.
    fn next(&mut self, offset: u64, target: u64) -> Result<Frame> {
        let job = self.job;
        let size = job.version.size;
        let target = usize::try_from(target).unwrap_or(usize::MAX);
        let left = usize::try_from(size - offset).unwrap_or(usize::MAX);
        let capacity = compress::frame_capacity(target)
            .min(zstd::zstd_safe::compress_bound(left).saturating_add(1024));
        // Input that surely ends within the frame is pledged: zstd then sizes its
        // tables to it (a small log costs kilobytes, not megabytes).
        let pledge = (left <= target / 2).then_some(left as u64);
        let mut w = self
            .compressor
            .start(self.buffers.take(capacity), pledge)
            .map_err(|e| zstd_error(job, e))?;
        let mut at = offset;
        while at < size && w.len() < target {
            let block = self.blocks.read(at)?;
            w.write(block).map_err(|e| zstd_error(job, e))?;
            at += block.len() as u64;
        }
        let frame = w.finish().map_err(|e| zstd_error(job, e))?;
        compress::verify(&frame).map_err(|why| zstd_error(job, io::Error::other(why)))?;
        Ok(frame)
    }
}

/// The file's blocks, read whole and checked against their CRC-32s from hashing.
struct Blocks<'a> {
    job: &'a Job,
    crcs: &'a [u32],
    stop: &'a AtomicBool,
    file: File,
    /// Where `file` is positioned.
    pos: u64,
    block: Vec<u8>,
}

impl Blocks<'_> {
    /// The block at `offset` (a multiple of [`BLOCK_BYTES`]): read whole, and the bytes
    /// hashed there, or the file changed since.
    fn read(&mut self, offset: u64) -> Result<&[u8]> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(UploadError::Interrupted);
        }
        let job = self.job;
        let index = usize::try_from(offset / BLOCK_BYTES).unwrap_or(usize::MAX);
        let (Some(&expect), 0) = (self.crcs.get(index), offset % BLOCK_BYTES) else {
            return Err(zstd_error(
                job,
                io::Error::other(format!("no block of the file at {offset}")),
            ));
        };
        let len = BLOCK_BYTES.min(job.version.size - offset) as usize;
        if self.pos != offset {
            self.file
                .seek(SeekFrom::Start(offset))
                .map_err(|e| read_error(job, e))?;
        }
        self.block.resize(len, 0);
        match self.file.read_exact(&mut self.block) {
            Ok(()) => {}
            // Shorter than when it was hashed: it changed.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(UploadError::Changed);
            }
            Err(e) => return Err(read_error(job, e)),
        }
        self.pos = offset + len as u64;
        if crc32fast::hash(&self.block) != expect {
            log::info!(
                "{}: bytes at {offset} differ from those hashed: rewritten",
                job.file
            );
            return Err(UploadError::Changed);
        }
        Ok(&self.block)
    }
}

/// Compressed parts' buffers kept for the next part, at most a few: allocating and
/// freeing several MiB per part would leave the allocator holding freed memory in each
/// thread's arena (glibc) or mapping it again and again (musl).
#[derive(Debug, Default)]
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Buffers smaller than this are not kept (a small file's frame).
const KEEP_AT_LEAST: usize = 1 << 20;
/// At most this many are kept (the permits bound how many are in use).
const KEEP_AT_MOST: usize = 4;

impl Buffers {
    /// An empty buffer of at least `capacity`.
    fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity >= KEEP_AT_LEAST {
            let mut free = lock(&self.free);
            if let Some(i) = free.iter().position(|b| b.capacity() >= capacity) {
                return free.swap_remove(i);
            }
        }
        Vec::with_capacity(capacity)
    }

    fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() < KEEP_AT_LEAST {
            return;
        }
        buffer.clear();
        let mut free = lock(&self.free);
        if free.len() < KEEP_AT_MOST {
            free.push(buffer);
        }
    }
}

fn zstd_error(job: &Job, e: io::Error) -> UploadError {
    UploadError::Read {
        path: job.path.clone(),
        source: io::Error::new(e.kind(), format!("zstd: {e}")),
    }
}

/// A body from memory that stops at shutdown, charges every byte to the bandwidth
/// budget (the cap applies to the bytes on the wire) and counts them as sent.
struct Body<'a> {
    bytes: &'a [u8],
    ctx: &'a Context,
}

impl<'a> Body<'a> {
    fn new(bytes: &'a [u8], ctx: &'a Context) -> Body<'a> {
        Body { bytes, ctx }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ctx = self.ctx;
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("shutting down"));
        }
        let want = ctx.gate.chunk(buf.len()).min(self.bytes.len());
        let (now, rest) = self.bytes.split_at(want);
        buf[..want].copy_from_slice(now);
        self.bytes = rest;
        if !ctx.gate.charge(want, &ctx.stop) {
            return Err(io::Error::other("shutting down"));
        }
        ctx.sent_bytes.fetch_add(want as u64, Ordering::Relaxed);
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24 (6): a listed part without an ETag was taken for this frame whenever its
    /// size matched (after a zstd upgrade, a corrupt object); it is now sent again.
    #[test]
    fn an_unjournaled_part_is_kept_only_when_its_etag_is_this_frames_md5() {
        let frame = md5(b"frame bytes");
        let etag = format!("\"{}\"", hex(&frame));
        for same_frames in [true, false] {
            assert_eq!(
                same_part(11, &etag, 11, &frame, same_frames),
                Some(etag.clone())
            );
            assert!(same_part(11, &etag.to_uppercase(), 11, &frame, same_frames).is_some());
            assert_eq!(same_part(12, &etag, 11, &frame, same_frames), None, "size");
            let other = format!("\"{}\"", hex(&md5(b"other bytes")));
            assert_eq!(same_part(11, &other, 11, &frame, same_frames), None, "MD5");
        }
        // No ETag listed: by its size only when the frames are the same as before.
        assert_eq!(same_part(11, "", 11, &frame, true), Some(etag.clone()));
        assert_eq!(same_part(11, "", 11, &frame, false), None, "another zstd");
        assert_eq!(same_part(12, "", 11, &frame, true), None, "another size");
    }
}
