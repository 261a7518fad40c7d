//! The journal: one JSON-lines file under `state_dir` holding the pending queue,
//! multipart progress and the registry of uploaded files.
//!
//! Every fact the daemon must not forget is a [`Record`] appended and fsynced here before
//! anything acts on it. The journal is two things behind two locks:
//! - the replayed [`State`] (pure data, `RwLock`): what the planner, the status and the
//!   disk thread read; a reader waits at most for a record to be applied in memory,
//!   never for a disk;
//! - the [`Writer`] (`Mutex`): the file, appends, fsyncs and compaction, one writer at a
//!   time. A record is applied to the state only once it is durable.
//!
//! Crash safety: appends are whole lines followed by `fsync`; a failed write is cut back
//! to the last good length, and after a failed fsync (or a compaction that renamed but
//! could not finish) the file is rewritten whole from the state before anything else is
//! appended. Compaction streams the state to a temporary file, fsyncs it, renames it
//! over the journal and fsyncs the directory. Creating the state dir or the journal
//! fsyncs the directory that holds it. Replay skips a damaged line (a torn last line
//! after a power cut) with a warning, and the journal is rewritten at once on open so the
//! damage is gone before anything is appended after it.
//!
//! Only this module writes the journal. It makes no network requests and decides
//! nothing about uploads.

pub mod record;
pub mod state;
mod storage;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use record::{MAX_PARTS, PartInput, Record};
pub use state::{
    KeyScheme, MAX_LINE_BYTES, Multipart, Pending, Replay, State, Uploaded, part_len, replay,
};
pub use storage::{Disk, Storage};

/// The journal file's name under `state_dir`.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The lock file's name under `state_dir`, held by the running daemon.
pub const LOCK_FILE: &str = "lock";
/// Compaction runs once the journal has this many lines and twice the live records, so a
/// busy daemon rewrites it rarely and an idle one keeps it near its live size.
pub const COMPACT_MIN_LINES: usize = 4096;
/// Stream buffer for replay and compaction.
const IO_BUFFER_BYTES: usize = 64 * 1024;

/// What went wrong writing or reading the state directory.
#[derive(Debug)]
pub enum JournalError {
    /// An IO call failed; `op` says which, `path` on what.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Another process holds the state directory's lock.
    Locked { path: PathBuf },
    /// A record failed its check before writing: a programmer error, refused.
    Invalid { why: String },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { op, path, source } => {
                write!(f, "state: {op} {}: {source}", path.display())
            }
            JournalError::Locked { path } => write!(
                f,
                "state dir {} is in use by another tvm-upload process (lock held)",
                path.display()
            ),
            JournalError::Invalid { why } => write!(f, "state: refusing an invalid record: {why}"),
        }
    }
}

impl JournalError {
    /// The same error, for each append of a group that failed together.
    fn again(&self) -> JournalError {
        match self {
            JournalError::Io { op, path, source } => JournalError::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            JournalError::Locked { path } => JournalError::Locked { path: path.clone() },
            JournalError::Invalid { why } => JournalError::Invalid { why: why.clone() },
        }
    }
}

impl std::error::Error for JournalError {}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The journal: the replayed state and the file's single writer.
pub struct Journal {
    path: PathBuf,
    state: RwLock<State>,
    writer: Mutex<Writer>,
    /// Appends gathered while another one holds the writer: one write and one fsync
    /// make the whole group durable (group commit).
    group: Mutex<Group>,
}

/// The open group of appends, and how the last ones ended.
#[derive(Default)]
struct Group {
    /// The open group's lines and records, in the order they were appended.
    buf: Vec<u8>,
    records: Vec<Record>,
    /// The open group's number; every group before it is written or failed.
    open: u64,
    /// Groups that failed lately, with why (those not here were written).
    failed: std::collections::VecDeque<(u64, JournalError)>,
}

/// Failed groups remembered for the appends that joined them (each looks once, when it
/// gets the writer; far more groups than appenders).
const FAILED_GROUPS_KEPT: usize = 1024;

impl Group {
    /// How group `n` ended (it is closed).
    fn outcome(&self, n: u64) -> Result<(), JournalError> {
        match self.failed.iter().find(|(g, _)| *g == n) {
            Some((_, e)) => Err(e.again()),
            None => Ok(()),
        }
    }
}

/// The file side. Held (locked) by whoever appends, compacts or prunes.
pub struct Writer {
    dir: PathBuf,
    path: PathBuf,
    /// `None` while what is on disk is in doubt (a failed fsync, or a compaction that
    /// renamed the new file in but could not finish): the next append rewrites the
    /// journal whole from the state before writing anything after it.
    file: Option<File>,
    /// Bytes known to be whole records; a failed append is cut back to this.
    good_len: u64,
    lines: usize,
    /// Compaction is not tried again before the journal has this many lines (it moves
    /// on after a failure, so a full disk is not rewritten at every append).
    compact_at_lines: usize,
    storage: Box<dyn Storage>,
    /// Held for the process's life so that two daemons never share a state dir.
    _lock: File,
}

impl Journal {
    /// Opens (or creates) the journal under `state_dir`, taking the directory's lock,
    /// replaying it and rewriting it if it holds damage. The returned [`Replay`] reports
    /// the record count and damage; its `state` is left empty (the journal holds it).
    pub fn open(state_dir: &Path, scheme: KeyScheme) -> Result<(Journal, Replay), JournalError> {
        Journal::open_with(state_dir, scheme, Box::new(Disk))
    }

    /// [`open`](Self::open) with the file operations of `storage` (tests make them fail).
    pub fn open_with(
        state_dir: &Path,
        scheme: KeyScheme,
        storage: Box<dyn Storage>,
    ) -> Result<(Journal, Replay), JournalError> {
        create_state_dir(state_dir, storage.as_ref())?;
        let lock = take_lock(state_dir)?;
        let path = state_dir.join(JOURNAL_FILE);
        let (mut replayed, existed) = match File::open(&path) {
            Ok(f) => (replay_file(f, &path, scheme)?, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (replay(b"", scheme), false),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if !existed {
            // The new file's name must survive a power cut like its contents.
            storage
                .sync_dir(state_dir)
                .map_err(io_err("fsync directory", state_dir))?;
        }
        let good_len = file.metadata().map_err(io_err("stat", &path))?.len();
        let lines = replayed.records + replayed.damaged_total;
        let mut state = std::mem::take(&mut replayed.state);
        state.replay_over();
        let live = state.live_records();
        let journal = Journal {
            path: path.clone(),
            state: RwLock::new(state),
            writer: Mutex::new(Writer {
                dir: state_dir.to_path_buf(),
                path,
                file: Some(file),
                good_len,
                lines,
                compact_at_lines: COMPACT_MIN_LINES,
                storage,
                _lock: lock,
            }),
            group: Mutex::new(Group::default()),
        };
        // Damage must be gone before anything is appended after it, and a last record
        // without its newline would be joined to the next; a journal mostly of dead
        // records is worth rewriting too. Otherwise start-up skips the rewrite.
        let mostly_dead = lines > COMPACT_MIN_LINES && lines > 2 * live;
        if replayed.damaged_total > 0 || !replayed.ends_whole || mostly_dead {
            journal.rewrite(&mut journal.writer())?;
        }
        Ok((journal, replayed))
    }

    /// Reads the journal without locking or writing, for `status` while a daemon runs.
    pub fn read_only(state_dir: &Path, scheme: KeyScheme) -> Result<Replay, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        match File::open(&path) {
            Ok(f) => replay_file(f, &path, scheme),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(replay(b"", scheme)),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The replayed state, for reading. Never waits for a disk.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer, locked: nothing is appended while the guard lives. The daemon holds
    /// it while exiting with an uploader still blocked, so no append is cut in half.
    pub fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records and fsyncs them. Only after this returns Ok may anything act on
    /// them, and then they are durable: a compaction that fails afterwards is logged
    /// and tried again later, never reported as a failed append. On error nothing of
    /// them counts.
    ///
    /// Appends from many threads are committed in groups: while one thread writes and
    /// fsyncs, the records of the others gather in the open group, and the first of them
    /// to get the writer writes the whole group with one fsync; the others find theirs
    /// done (or failed: then all of that group failed, and none of it counts).
    pub fn append(&self, records: &[Record]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 200);
        for r in records {
            r.check().map_err(|why| JournalError::Invalid { why })?;
            r.write_line(&mut buf);
        }
        let mine = {
            let mut g = self.group();
            g.buf.extend_from_slice(&buf);
            g.records.extend_from_slice(records);
            g.open
        };
        let mut w = self.writer();
        let (buf, records) = {
            let mut g = self.group();
            if g.open > mine {
                // Written (or failed) by the thread that had the writer before.
                return g.outcome(mine);
            }
            g.open += 1;
            (std::mem::take(&mut g.buf), std::mem::take(&mut g.records))
        };
        let result = self.write_group(&mut w, &buf, &records);
        if let Err(e) = &result {
            let mut g = self.group();
            g.failed.push_back((mine, e.again()));
            if g.failed.len() > FAILED_GROUPS_KEPT {
                g.failed.pop_front();
            }
        }
        result
    }

    fn group(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes and fsyncs one group's lines, then applies its records; compacts when the
    /// journal has grown past twice what it holds.
    fn write_group(
        &self,
        w: &mut Writer,
        buf: &[u8],
        records: &[Record],
    ) -> Result<(), JournalError> {
        if w.file.is_none() {
            self.rewrite(w)?;
        }
        w.write_durable(buf)?;
        {
            let mut state = self.state_mut();
            for r in records {
                state.apply(r);
            }
        }
        w.lines += records.len();
        let live = self.read().live_records();
        if w.lines > w.compact_at_lines.max(COMPACT_MIN_LINES)
            && w.lines > 2 * live
            && let Err(e) = self.rewrite(w)
        {
            w.compact_at_lines = w.lines + COMPACT_MIN_LINES;
            log::warn!("journal compaction failed (tried again later): {e}");
        }
        Ok(())
    }

    /// Rewrites the journal now, as the snapshot of the state.
    pub fn compact(&self) -> Result<(), JournalError> {
        self.rewrite(&mut self.writer())
    }

    /// After the start-up scan: forgets registry entries whose files it did not see (see
    /// [`State::forget_unseen`]) and rewrites the journal if any were. Returns how many.
    pub fn forget_unseen(&self) -> Result<usize, JournalError> {
        let mut w = self.writer();
        let removed = self.state_mut().forget_unseen();
        if removed > 0 {
            self.rewrite(&mut w)?;
        }
        Ok(removed)
    }

    /// The journal as the snapshot of the state: a temporary file, fsynced, renamed over
    /// the journal, the directory fsynced, the new file opened for appending. From the
    /// rename on, the old handle names an unlinked file: until the new one is open the
    /// writer has none, so a failure here makes the next append start again.
    fn rewrite(&self, w: &mut Writer) -> Result<(), JournalError> {
        let tmp = w.dir.join(format!("{JOURNAL_FILE}.tmp"));
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
        let lines = self
            .read()
            .write_snapshot(&mut out)
            .map_err(io_err("write", &tmp))?;
        let file = out
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        w.storage.sync_file(&file).map_err(io_err("fsync", &tmp))?;
        let len = file.metadata().map_err(io_err("stat", &tmp))?.len();
        drop(file);
        w.storage
            .rename(&tmp, &w.path)
            .map_err(io_err("rename", &tmp))?;
        w.file = None;
        w.storage
            .sync_dir(&w.dir)
            .map_err(io_err("fsync directory", &w.dir))?;
        let file = w
            .storage
            .open_existing(&w.path)
            .map_err(io_err("open", &w.path))?;
        w.file = Some(file);
        w.good_len = len;
        w.lines = lines;
        w.compact_at_lines = COMPACT_MIN_LINES;
        Ok(())
    }
}

impl Writer {
    /// Writes whole lines at the end and fsyncs them. On failure nothing of them counts:
    /// the file is cut back, or (if that, or the fsync, failed) left for a full rewrite.
    fn write_durable(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        let path = self.path.clone();
        let Some(file) = self.file.as_mut() else {
            return Err(JournalError::Io {
                op: "write",
                path,
                source: io::Error::other("the journal must be rewritten first"),
            });
        };
        let written = file
            .seek(SeekFrom::Start(self.good_len))
            .and_then(|_| file.write_all(buf));
        if let Err(e) = written {
            // Whatever part of the lines reached the file is cut off; if even that fails
            // the next append rewrites the whole journal first.
            if file.set_len(self.good_len).is_err() {
                self.file = None;
            }
            return Err(io_err("write", &path)(e));
        }
        if let Err(e) = self.storage.sync_file(file) {
            // After a failed fsync the kernel may have dropped the dirty pages: never
            // trust this file again until it is rewritten whole.
            self.file = None;
            return Err(io_err("fsync", &path)(e));
        }
        self.good_len += buf.len() as u64;
        Ok(())
    }
}

/// Replays a journal file: a first pass counts its registry records (so the registry's
/// table is made once, at its size), the second applies them.
fn replay_file(mut f: File, path: &Path, scheme: KeyScheme) -> Result<Replay, JournalError> {
    let uploaded = state::count_uploaded(BufReader::with_capacity(IO_BUFFER_BYTES, &mut f))
        .map_err(io_err("read", path))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    let reader = BufReader::with_capacity(IO_BUFFER_BYTES, f);
    state::replay_from(reader, scheme, uploaded).map_err(io_err("read", path))
}

/// Creates the state dir if needed, fsyncing the directory that gained an entry, so
/// that a power cut right after start-up does not lose the directory itself.
fn create_state_dir(dir: &Path, storage: &dyn Storage) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    storage
        .sync_dir(dir)
        .map_err(io_err("fsync directory", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        storage
            .sync_dir(parent)
            .map_err(io_err("fsync directory", parent))?;
    }
    Ok(())
}

fn take_lock(state_dir: &Path) -> Result<File, JournalError> {
    let lock_path = state_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: state_dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err("lock", &lock_path)(e)),
    }
}

#[cfg(test)]
mod tests;
