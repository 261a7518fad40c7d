//! The persistent queue and registry: one JSON-lines journal under `state_dir`.
//!
//! Every fact the daemon must not forget is a [`Record`] appended and fsynced here before
//! anything acts on it: a file queued, a multipart upload started, a part done, a file
//! uploaded (the registry), a file dropped. Replaying the journal ([`State::apply`]) gives
//! back the pending queue, the in-progress multipart uploads and the registry.
//!
//! Only this module writes the journal. It owns the file and nothing else: it makes no
//! network requests and decides nothing about uploads.
//!
//! Crash safety: appends are whole lines followed by `fsync`; a failed append truncates
//! back to the last good length. Compaction writes a temporary file, fsyncs it, renames it
//! over the journal and fsyncs the directory. Replay skips a damaged line (a torn last
//! line after a power cut) with a warning, and the journal is compacted at once on open
//! so the damage is gone before anything is appended after it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// The journal file's name under `state_dir`.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Compaction runs once the journal has this many lines and twice the live records, so a
/// busy daemon rewrites it rarely and an idle one keeps it near its live size.
pub const COMPACT_MIN_LINES: usize = 4096;
/// The most parts a multipart upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;
/// A journal line longer than this is damage, not a record (a key is at most 1 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A file, named by its source and its `/`-separated path relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRef {
    pub source: String,
    pub rel: String,
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.rel)
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// A stable file waits for upload.
    Queued {
        src: String,
        rel: String,
        size: u64,
        mtime_ns: i64,
        prio: i32,
        queued_at: i64,
    },
    /// A file left the queue without an upload (deleted, no longer wanted).
    Dropped {
        src: String,
        rel: String,
        reason: String,
    },
    /// A multipart upload was created for this version of the file.
    MpStarted {
        src: String,
        rel: String,
        key: String,
        upload_id: String,
        size: u64,
        mtime_ns: i64,
        sha256: String,
        part_size: u64,
    },
    /// One part of a multipart upload is stored on the server.
    Part {
        src: String,
        rel: String,
        upload_id: String,
        n: u32,
        etag: String,
    },
    /// A multipart upload was abandoned (aborted, or the server lost it).
    MpAborted {
        src: String,
        rel: String,
        upload_id: String,
    },
    /// This version of the file is in S3: the registry.
    Uploaded {
        src: String,
        rel: String,
        size: u64,
        mtime_ns: i64,
        sha256: String,
        key: String,
        etag: String,
        at: i64,
    },
}

impl Record {
    pub fn file(&self) -> FileRef {
        let (src, rel) = match self {
            Record::Queued { src, rel, .. }
            | Record::Dropped { src, rel, .. }
            | Record::MpStarted { src, rel, .. }
            | Record::Part { src, rel, .. }
            | Record::MpAborted { src, rel, .. }
            | Record::Uploaded { src, rel, .. } => (src, rel),
        };
        FileRef {
            source: src.clone(),
            rel: rel.clone(),
        }
    }

    /// Checks what serde cannot: run before writing and after reading.
    pub fn check(&self) -> Result<(), String> {
        let file = self.file();
        if file.source.is_empty() || file.rel.is_empty() {
            return Err("empty source or path".to_string());
        }
        match self {
            Record::MpStarted {
                upload_id,
                sha256,
                part_size,
                key,
                ..
            } => {
                nonempty("upload_id", upload_id)?;
                nonempty("key", key)?;
                check_sha256(sha256)?;
                if *part_size == 0 {
                    return Err("part_size 0".to_string());
                }
            }
            Record::Part {
                upload_id, n, etag, ..
            } => {
                nonempty("upload_id", upload_id)?;
                nonempty("etag", etag)?;
                if !(1..=MAX_PARTS).contains(n) {
                    return Err(format!("part number {n} outside 1..={MAX_PARTS}"));
                }
            }
            Record::MpAborted { upload_id, .. } => nonempty("upload_id", upload_id)?,
            Record::Uploaded { sha256, key, .. } => {
                check_sha256(sha256)?;
                nonempty("key", key)?;
            }
            Record::Queued { .. } | Record::Dropped { .. } => {}
        }
        Ok(())
    }
}

fn nonempty(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        Err(format!("empty {what}"))
    } else {
        Ok(())
    }
}

fn check_sha256(v: &str) -> Result<(), String> {
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("sha256 {v:?} is not 64 hex digits"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub size: u64,
    pub mtime_ns: i64,
    pub prio: i32,
    pub queued_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Multipart {
    pub key: String,
    pub upload_id: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
    pub part_size: u64,
    /// Part number to ETag, of the parts known to be stored.
    pub parts: BTreeMap<u32, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
    pub key: String,
    pub etag: String,
    pub at: i64,
}

/// What the journal says, replayed. Pure data: [`State::apply`] is the whole semantics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct State {
    pub pending: HashMap<FileRef, Pending>,
    pub multipart: HashMap<FileRef, Multipart>,
    pub registry: HashMap<FileRef, Uploaded>,
}

impl State {
    pub fn apply(&mut self, record: &Record) {
        let file = record.file();
        match record {
            Record::Queued {
                size,
                mtime_ns,
                prio,
                queued_at,
                ..
            } => {
                self.pending.insert(
                    file,
                    Pending {
                        size: *size,
                        mtime_ns: *mtime_ns,
                        prio: *prio,
                        queued_at: *queued_at,
                    },
                );
            }
            Record::Dropped { .. } => {
                self.pending.remove(&file);
            }
            Record::MpStarted {
                key,
                upload_id,
                size,
                mtime_ns,
                sha256,
                part_size,
                ..
            } => {
                self.multipart.insert(
                    file,
                    Multipart {
                        key: key.clone(),
                        upload_id: upload_id.clone(),
                        size: *size,
                        mtime_ns: *mtime_ns,
                        sha256: sha256.clone(),
                        part_size: *part_size,
                        parts: BTreeMap::new(),
                    },
                );
            }
            Record::Part {
                upload_id, n, etag, ..
            } => {
                if let Some(mp) = self.multipart.get_mut(&file)
                    && mp.upload_id == *upload_id
                {
                    mp.parts.insert(*n, etag.clone());
                }
            }
            Record::MpAborted { upload_id, .. } => {
                if self
                    .multipart
                    .get(&file)
                    .is_some_and(|mp| mp.upload_id == *upload_id)
                {
                    self.multipart.remove(&file);
                }
            }
            Record::Uploaded {
                size,
                mtime_ns,
                sha256,
                key,
                etag,
                at,
                ..
            } => {
                // A newer version queued meanwhile stays queued.
                if self
                    .pending
                    .get(&file)
                    .is_some_and(|p| p.size == *size && p.mtime_ns == *mtime_ns)
                {
                    self.pending.remove(&file);
                }
                if self
                    .multipart
                    .get(&file)
                    .is_some_and(|m| m.size == *size && m.mtime_ns == *mtime_ns)
                {
                    self.multipart.remove(&file);
                }
                self.registry.insert(
                    file,
                    Uploaded {
                        size: *size,
                        mtime_ns: *mtime_ns,
                        sha256: sha256.clone(),
                        key: key.clone(),
                        etag: etag.clone(),
                        at: *at,
                    },
                );
            }
        }
    }

    /// Whether this exact version of the file is in S3 already.
    pub fn is_uploaded(&self, file: &FileRef, size: u64, mtime_ns: i64) -> bool {
        self.registry
            .get(file)
            .is_some_and(|u| u.size == size && u.mtime_ns == mtime_ns)
    }

    /// The records that rebuild this state, in a stable order (for compaction).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.live_records());
        let mut registry: Vec<_> = self.registry.iter().collect();
        registry.sort_by(|a, b| a.0.cmp(b.0));
        for (f, u) in registry {
            out.push(Record::Uploaded {
                src: f.source.clone(),
                rel: f.rel.clone(),
                size: u.size,
                mtime_ns: u.mtime_ns,
                sha256: u.sha256.clone(),
                key: u.key.clone(),
                etag: u.etag.clone(),
                at: u.at,
            });
        }
        let mut pending: Vec<_> = self.pending.iter().collect();
        pending.sort_by(|a, b| a.0.cmp(b.0));
        for (f, p) in pending {
            out.push(Record::Queued {
                src: f.source.clone(),
                rel: f.rel.clone(),
                size: p.size,
                mtime_ns: p.mtime_ns,
                prio: p.prio,
                queued_at: p.queued_at,
            });
        }
        let mut multipart: Vec<_> = self.multipart.iter().collect();
        multipart.sort_by(|a, b| a.0.cmp(b.0));
        for (f, m) in multipart {
            out.push(Record::MpStarted {
                src: f.source.clone(),
                rel: f.rel.clone(),
                key: m.key.clone(),
                upload_id: m.upload_id.clone(),
                size: m.size,
                mtime_ns: m.mtime_ns,
                sha256: m.sha256.clone(),
                part_size: m.part_size,
            });
            for (n, etag) in &m.parts {
                out.push(Record::Part {
                    src: f.source.clone(),
                    rel: f.rel.clone(),
                    upload_id: m.upload_id.clone(),
                    n: *n,
                    etag: etag.clone(),
                });
            }
        }
        out
    }

    pub fn live_records(&self) -> usize {
        self.registry.len()
            + self.pending.len()
            + self
                .multipart
                .values()
                .map(|m| 1 + m.parts.len())
                .sum::<usize>()
    }
}

/// What replay found besides the state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replay {
    pub state: State,
    pub records: usize,
    /// Damaged lines skipped: (1-based line number, why).
    pub damaged: Vec<(usize, String)>,
}

/// Rebuilds the state from journal bytes. Never fails and never panics: a damaged line
/// is skipped and reported, and every intact record before or after it is kept.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = if line.len() > MAX_LINE_BYTES {
            Err(format!("{} bytes long", line.len()))
        } else {
            serde_json::from_slice::<Record>(line)
                .map_err(|e| e.to_string())
                .and_then(|r| r.check().map(|()| r))
        };
        match parsed {
            Ok(record) => {
                out.state.apply(&record);
                out.records += 1;
            }
            Err(why) => out.damaged.push((i + 1, why)),
        }
    }
    out
}

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

impl std::error::Error for JournalError {}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The journal file and the state it holds. Shared as [`SharedJournal`]; the mutex makes
/// it the single writer.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes known to be whole records; an append that fails is cut back to this.
    good_len: u64,
    lines: usize,
    state: State,
    /// Set after a failed fsync: what is on disk is unknown until a full rewrite succeeds.
    needs_rewrite: bool,
    /// Held for the process's life so that two daemons never share a state dir.
    _lock: Option<File>,
}

pub type SharedJournal = Arc<Mutex<Journal>>;

/// Locks the shared journal; a panic while holding it aborts the process (panic = abort),
/// so a poisoned mutex is impossible in release builds and harmless to take in tests.
pub fn lock(journal: &SharedJournal) -> MutexGuard<'_, Journal> {
    journal
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `fdatasync`, or an injected failure while the file named by the test-only knob
/// `TVM_UPLOAD_TEST_FAIL_FSYNC_WHILE` exists (there is no portable way to make a real
/// disk fail an fsync on demand). Never set it in production.
fn fsync_data(file: &File) -> std::io::Result<()> {
    static TRIGGER: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let trigger = TRIGGER
        .get_or_init(|| std::env::var_os("TVM_UPLOAD_TEST_FAIL_FSYNC_WHILE").map(PathBuf::from));
    if trigger.as_ref().is_some_and(|t| t.exists()) {
        return Err(std::io::Error::other("injected fsync failure"));
    }
    file.sync_data()
}

impl Journal {
    /// Opens (or creates) the journal under `state_dir`, taking the directory's lock,
    /// replaying it and compacting it so damage is never appended after. The returned
    /// [`Replay`] reports the record count and damage; its `state` is left empty (the
    /// journal holds the only copy).
    pub fn open(state_dir: &Path) -> Result<(Journal, Replay), JournalError> {
        std::fs::create_dir_all(state_dir).map_err(io_err("create", state_dir))?;
        let lock_path = state_dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    path: state_dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let path = state_dir.join(JOURNAL_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut replayed = replay(&bytes);
        let len = bytes.len() as u64;
        let ends_whole = bytes.last().is_none_or(|&b| b == b'\n');
        drop(bytes);
        let file = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut journal = Journal {
            dir: state_dir.to_path_buf(),
            path,
            file,
            good_len: len,
            lines: replayed.records,
            // Moved, not copied: at 100,000 registry entries a copy costs tens of MB.
            state: std::mem::take(&mut replayed.state),
            needs_rewrite: false,
            _lock: Some(lock),
        };
        // Damage must be gone before anything is appended after it, and a last record
        // without its newline would be joined to the next; a journal mostly of dead
        // records is worth rewriting too. Otherwise start-up skips the rewrite (at
        // 100,000 registry entries it costs a few hundred milliseconds).
        let mostly_dead =
            journal.lines > COMPACT_MIN_LINES && journal.lines > 2 * journal.state.live_records();
        if !replayed.damaged.is_empty() || !ends_whole || mostly_dead {
            journal.compact()?;
        }
        Ok((journal, replayed))
    }

    /// Reads the journal without locking or writing, for `status` while a daemon runs.
    pub fn read_only(state_dir: &Path) -> Result<Replay, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        match std::fs::read(&path) {
            Ok(b) => Ok(replay(&b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Replay::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records and fsyncs them. Only after this returns Ok may anything act on
    /// them; on error nothing of them counts and the file is cut back to its last good
    /// length.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 200);
        for r in records {
            r.check().map_err(|why| JournalError::Invalid { why })?;
            // Serializing plain data to a Vec cannot fail.
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| JournalError::Invalid { why: e.to_string() })?;
            buf.push(b'\n');
        }
        if self.needs_rewrite {
            self.compact()?;
        }
        let result = self.write_at_end(&buf);
        if let Err(e) = result {
            // Whatever part of the lines reached the file is cut off; if even that fails
            // the next append rewrites the whole journal first.
            if self.file.set_len(self.good_len).is_err() {
                self.needs_rewrite = true;
            }
            return Err(e);
        }
        self.good_len += buf.len() as u64;
        self.lines += records.len();
        for r in records {
            self.state.apply(r);
        }
        if self.lines > COMPACT_MIN_LINES && self.lines > 2 * self.state.live_records() {
            self.compact()?;
        }
        Ok(())
    }

    fn write_at_end(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        self.file
            .seek(SeekFrom::Start(self.good_len))
            .map_err(io_err("seek", &self.path))?;
        self.file
            .write_all(buf)
            .map_err(io_err("write", &self.path))?;
        if let Err(e) = fsync_data(&self.file) {
            // After a failed fsync the kernel may have dropped the dirty pages: never
            // trust this file again until it is rewritten whole.
            self.needs_rewrite = true;
            return Err(io_err("fsync", &self.path)(e));
        }
        Ok(())
    }

    /// Rewrites the journal as the snapshot of the live state: temp file, fsync, rename,
    /// fsync the directory.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.dir.join(format!("{JOURNAL_FILE}.tmp"));
        let records = self.state.snapshot();
        let mut buf = Vec::with_capacity(records.len() * 200);
        for r in &records {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| JournalError::Invalid { why: e.to_string() })?;
            buf.push(b'\n');
        }
        {
            let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(&buf).map_err(io_err("write", &tmp))?;
            fsync_data(&f).map_err(io_err("fsync", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", &self.dir))?;
        self.file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io_err("open", &self.path))?;
        self.good_len = buf.len() as u64;
        self.lines = records.len();
        self.needs_rewrite = false;
        Ok(())
    }

    /// Drops registry and queue entries whose file is gone from disk, as `exists` says,
    /// then compacts. Multipart entries stay: their uploads must still be aborted.
    pub fn prune(&mut self, exists: &dyn Fn(&FileRef) -> bool) -> Result<usize, JournalError> {
        let before = self.state.registry.len() + self.state.pending.len();
        self.state.registry.retain(|f, _| exists(f));
        self.state.pending.retain(|f, _| exists(f));
        let removed = before - self.state.registry.len() - self.state.pending.len();
        if removed > 0 {
            self.compact()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn queued(rel: &str, size: u64) -> Record {
        Record::Queued {
            src: "s".into(),
            rel: rel.into(),
            size,
            mtime_ns: 7,
            prio: 0,
            queued_at: 1,
        }
    }

    fn uploaded(rel: &str, size: u64) -> Record {
        Record::Uploaded {
            src: "s".into(),
            rel: rel.into(),
            size,
            mtime_ns: 7,
            sha256: SHA.into(),
            key: format!("v/2026-01-01/s/{rel}"),
            etag: "\"e\"".into(),
            at: 2,
        }
    }

    fn started(rel: &str, id: &str) -> Record {
        Record::MpStarted {
            src: "s".into(),
            rel: rel.into(),
            key: "k".into(),
            upload_id: id.into(),
            size: 100,
            mtime_ns: 7,
            sha256: SHA.into(),
            part_size: 10,
        }
    }

    fn part(rel: &str, id: &str, n: u32) -> Record {
        Record::Part {
            src: "s".into(),
            rel: rel.into(),
            upload_id: id.into(),
            n,
            etag: format!("e{n}"),
        }
    }

    fn lines(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend(serde_json::to_vec(r).expect("json"));
            out.push(b'\n');
        }
        out
    }

    fn f(rel: &str) -> FileRef {
        FileRef {
            source: "s".into(),
            rel: rel.into(),
        }
    }

    #[test]
    fn replay_rebuilds_queue_multipart_and_registry() {
        let recs = [
            queued("a", 1),
            queued("b", 100),
            started("b", "u1"),
            part("b", "u1", 1),
            part("b", "u2", 2), // another upload's part: ignored
            uploaded("a", 1),
        ];
        let r = replay(&lines(&recs));
        assert!(r.damaged.is_empty());
        assert!(!r.state.pending.contains_key(&f("a")));
        assert!(r.state.is_uploaded(&f("a"), 1, 7));
        assert!(!r.state.is_uploaded(&f("a"), 2, 7));
        let mp = &r.state.multipart[&f("b")];
        assert_eq!(mp.parts.keys().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_newer_version_queued_survives_the_upload_of_the_older() {
        let r = replay(&lines(&[queued("a", 1), queued("a", 2), uploaded("a", 1)]));
        assert_eq!(r.state.pending[&f("a")].size, 2);
    }

    #[test]
    fn aborted_upload_is_forgotten_only_if_it_is_the_current_one() {
        let abort = |id: &str| Record::MpAborted {
            src: "s".into(),
            rel: "b".into(),
            upload_id: id.into(),
        };
        let r = replay(&lines(&[started("b", "u1"), abort("old")]));
        assert!(r.state.multipart.contains_key(&f("b")));
        let r = replay(&lines(&[started("b", "u1"), abort("u1")]));
        assert!(!r.state.multipart.contains_key(&f("b")));
    }

    #[test]
    fn torn_last_line_is_skipped_and_reported() {
        let mut bytes = lines(&[queued("a", 1), uploaded("a", 1)]);
        let full = bytes.len();
        bytes.extend_from_slice(br#"{"t":"queued","src":"s","rel":"c","si"#);
        let r = replay(&bytes);
        assert_eq!(r.records, 2);
        assert_eq!(r.damaged.len(), 1);
        assert!(r.state.is_uploaded(&f("a"), 1, 7));
        assert_eq!(replay(&bytes[..full]).state, r.state);
    }

    #[test]
    fn truncation_at_every_offset_keeps_every_record_before_it() {
        let recs = [
            queued("a", 1),
            started("b", "u1"),
            part("b", "u1", 1),
            part("b", "u1", 2),
            uploaded("a", 1),
        ];
        let bytes = lines(&recs);
        let ends: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        for cut in 0..=bytes.len() {
            let r = replay(&bytes[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert!(r.records >= whole, "cut {cut}: {} < {whole}", r.records);
            let mut expect = State::default();
            recs[..r.records].iter().for_each(|x| expect.apply(x));
            assert_eq!(r.state, expect, "cut {cut}");
        }
    }

    #[test]
    fn garbage_never_panics_and_records_around_it_survive() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..300 {
            let mut bytes = lines(&[queued("a", 1)]);
            for _ in 0..(round % 50) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push((seed & 0xff) as u8);
            }
            bytes.push(b'\n');
            bytes.extend(lines(&[uploaded("z", 3)]));
            let r = replay(&bytes);
            assert!(r.state.pending.contains_key(&f("a")), "round {round}");
            assert!(r.state.is_uploaded(&f("z"), 3, 7), "round {round}");
        }
    }

    #[test]
    fn snapshot_replays_to_the_same_state() {
        let recs = [
            queued("a", 1),
            started("b", "u1"),
            part("b", "u1", 3),
            uploaded("c", 9),
            queued("d", 2),
        ];
        let r = replay(&lines(&recs));
        let again = replay(&lines(&r.state.snapshot()));
        assert_eq!(again.state, r.state);
    }

    #[test]
    fn records_are_checked() {
        assert!(part("b", "u", 0).check().is_err());
        assert!(part("b", "u", 10_001).check().is_err());
        assert!(part("b", "", 1).check().is_err());
        let mut bad = uploaded("a", 1);
        if let Record::Uploaded { sha256, .. } = &mut bad {
            *sha256 = "nothex".into();
        }
        assert!(bad.check().is_err());
        assert!(replay(&lines(&[bad])).damaged.len() == 1);
    }

    #[test]
    fn journal_appends_survive_reopen_and_compaction_bounds_it() {
        let dir = std::env::temp_dir().join(format!("tvm-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (mut j, _) = Journal::open(&dir).expect("open");
            assert!(matches!(
                Journal::open(&dir),
                Err(JournalError::Locked { .. })
            ));
            for i in 0..(COMPACT_MIN_LINES + 10) {
                j.append(&[queued("a", i as u64)]).expect("append");
            }
            j.append(&[uploaded("a", (COMPACT_MIN_LINES + 9) as u64)])
                .expect("append");
        }
        let text = std::fs::read_to_string(dir.join(JOURNAL_FILE)).expect("read");
        assert!(
            text.lines().count() < 100,
            "compacted: {} lines",
            text.lines().count()
        );
        // A torn tail is dropped on open and gone from the file afterwards.
        std::fs::write(dir.join(JOURNAL_FILE), format!("{text}{{\"t\":\"que")).expect("write");
        let (j, replayed) = Journal::open(&dir).expect("reopen");
        assert_eq!(replayed.damaged.len(), 1);
        assert!(
            j.state()
                .is_uploaded(&f("a"), (COMPACT_MIN_LINES + 9) as u64, 7)
        );
        drop(j);
        let again = Journal::read_only(&dir).expect("read");
        assert!(again.damaged.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
