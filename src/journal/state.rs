//! What the journal says, replayed: the pending queue, the multipart uploads in progress
//! and the registry of uploaded files. Pure data: [`State::apply`] is the whole meaning
//! of a record, and [`replay`] never fails.
//!
//! The registry is the big part (a vehicle keeps 100,000 uploaded files on disk), so an
//! entry is kept dense: the path once (`source/rel`, the map's key), the SHA-256 and ETag
//! as bytes, and the object key only when it is not the one [`KeyScheme`] derives from
//! the path and mtime (which it almost always is). [`State::write_snapshot`] gives back
//! exactly the records it was built from, streamed, without a copy of the state.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::file::{FileRef, Version};
use crate::journal::record::{PartInput, Record, parse};
pub use crate::key::KeyScheme;
use crate::key::ZST_FLAG;

/// A journal line longer than this is damage, not a record (a key is at most 1 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Damaged lines reported one by one; past this only counted.
const MAX_DAMAGE_REPORTED: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub version: Version,
    pub prio: i32,
    pub queued_at: i64,
    /// See [`Record::Queued`]. Boxed twice so that the rare name costs the common
    /// entry one pointer, not two (a restart may hold 10,000 queued files).
    pub origin: Option<Box<String>>,
}

impl Pending {
    /// The name it was queued under before a rename, if any.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref().map(String::as_str)
    }
}

/// Why a queued file is set aside (see [`Record::Quarantined`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    pub version: Version,
    pub reason: String,
    /// When, Unix seconds.
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Multipart {
    pub key: String,
    pub upload_id: String,
    pub version: Version,
    pub sha256: [u8; 32],
    pub part_size: u64,
    /// Part number to ETag, of the parts known to be stored.
    pub parts: BTreeMap<u32, String>,
    /// A compressed upload's zstd level.
    pub zstd: Option<i32>,
    /// The zstd library's version that began it (see [`Record::MpStarted`]).
    pub zstd_lib: Option<u32>,
    /// Its parts carry CRC-32s, not `Content-MD5`s (see [`Record::MpStarted`]).
    pub crc32: bool,
    /// A compressed upload's stored parts: the input each holds.
    pub inputs: BTreeMap<u32, PartInput>,
}

impl Multipart {
    /// Bytes of the file in parts known to be stored.
    pub fn stored_bytes(&self) -> u64 {
        if self.zstd.is_some() {
            return self.inputs.values().map(|i| i.end - i.start).sum();
        }
        self.parts
            .keys()
            .map(|&n| part_len(self.version.size, self.part_size, n))
            .sum()
    }
}

/// The length of part `n` (1-based) of a `size`-byte file cut in `part_size` parts.
pub fn part_len(size: u64, part_size: u64, n: u32) -> u64 {
    let start = u64::from(n.saturating_sub(1)) * part_size;
    part_size.min(size.saturating_sub(start))
}

/// One uploaded version, as the registry keeps it: 64 bytes. (The ETag S3 answered is
/// in the `uploaded` record as written; the registry does not keep it, as nothing reads
/// it back, so a compacted journal has it empty.)
#[derive(Debug)]
pub struct Uploaded {
    pub version: Version,
    pub sha256: [u8; 32],
    /// When it was uploaded, Unix seconds (until 2106).
    at: u32,
    /// The `~N` of the key (0: none), when the key is the derived one; with
    /// [`ZST_FLAG`] if it ends in `.zst`.
    suffix: u16,
    /// The object key is not the derived one: it is in [`State`]'s `other_keys`.
    other_key: bool,
    /// The start-up scan saw the file at this version ([`State::mark_seen`]). Atomic so
    /// that it is set under the journal's read lock.
    seen: AtomicBool,
}

impl Clone for Uploaded {
    fn clone(&self) -> Uploaded {
        Uploaded {
            seen: AtomicBool::new(self.seen.load(Ordering::Relaxed)),
            ..*self
        }
    }
}

/// Equal as records: whether the scan saw the file is not part of the journal.
impl PartialEq for Uploaded {
    fn eq(&self, o: &Uploaded) -> bool {
        (
            self.version,
            self.sha256,
            self.at,
            self.suffix,
            self.other_key,
        ) == (o.version, o.sha256, o.at, o.suffix, o.other_key)
    }
}

impl Uploaded {
    /// When it was uploaded, Unix seconds.
    pub fn at(&self) -> i64 {
        i64::from(self.at)
    }
}

/// The replayed journal.
#[derive(Debug, Default, Clone)]
pub struct State {
    scheme: KeyScheme,
    pub pending: HashMap<FileRef, Pending>,
    pub multipart: HashMap<FileRef, Multipart>,
    /// Quarantined files (a few). An entry counts only while the file is queued at that
    /// version: see [`State::quarantined`].
    quarantined: HashMap<FileRef, Quarantine>,
    /// Keyed by `source/rel` ([`FileRef::as_str`]).
    registry: Registry,
    /// The object keys of registry entries whose key is not the derived one (rare: a
    /// config change of prefix, vehicle id or UTC offset since the upload).
    other_keys: HashMap<Box<str>, Box<str>>,
    /// Set once the replay is over: entries applied from then on are of files just
    /// uploaded, seen by definition (the start-up scan may still be running).
    replayed: bool,
    /// For paths whose registry entry was renamed away: the day and `~N` of the key it
    /// had, so a new file there does not reuse that key (rotations; a few entries).
    vacated: HashMap<Box<str>, (i64, u16)>,
    /// Entries replaced by the upload of another file (inode) at their path, by inode:
    /// the file may have been renamed and not seen yet under its new name (a rotation
    /// while the daemon was down). Bounded; the oldest go first.
    displaced: Displaced,
    /// Files of sources with `max_wait_seconds` that have been changing since a time
    /// (see [`Record::Waiting`]): the next run counts that source's wait from it.
    waiting: HashMap<FileRef, Waiting>,
}

/// A file has been changing since `since` (Unix seconds), as inode `ino`.
#[derive(Debug)]
pub struct Waiting {
    pub ino: u64,
    pub since: i64,
    /// The start-up scan saw the file (the same inode): kept by `forget_unseen`.
    seen: AtomicBool,
}

impl Clone for Waiting {
    fn clone(&self) -> Waiting {
        Waiting {
            seen: AtomicBool::new(self.seen.load(Ordering::Relaxed)),
            ..*self
        }
    }
}

impl PartialEq for Waiting {
    fn eq(&self, o: &Waiting) -> bool {
        (self.ino, self.since) == (o.ino, o.since)
    }
}

/// At most this many waiting files are kept (the planner tracks at most as many); a
/// `waiting` record past it is ignored, so a file then waits from its first sight.
pub const MAX_WAITING: usize = 16_384;

/// Entries kept aside when another file took their path; see [`State`].
pub const MAX_DISPLACED: usize = 1024;

#[derive(Debug, Default, Clone)]
struct Displaced {
    by_ino: HashMap<u64, (Box<str>, Uploaded, Box<str>)>,
    order: std::collections::VecDeque<u64>,
}

impl Displaced {
    fn insert(&mut self, ino: u64, path: &str, u: Uploaded, key: String) {
        if self
            .by_ino
            .insert(ino, (path.into(), u, key.into()))
            .is_none()
        {
            self.order.push_back(ino);
        }
        while self.order.len() > MAX_DISPLACED {
            if let Some(old) = self.order.pop_front() {
                self.by_ino.remove(&old);
            }
        }
    }
}

/// Equal when they hold the same facts (whether the replay is over is not one).
impl PartialEq for State {
    fn eq(&self, o: &State) -> bool {
        self.scheme == o.scheme
            && self.pending == o.pending
            && self.multipart == o.multipart
            && self.registry == o.registry
            && self.other_keys == o.other_keys
            && self.vacated == o.vacated
            && self.waiting == o.waiting
            && self
                .displaced
                .by_ino
                .keys()
                .collect::<std::collections::HashSet<_>>()
                == o.displaced.by_ino.keys().collect()
            && self.quarantined().collect::<HashMap<_, _>>()
                == o.quarantined().collect::<HashMap<_, _>>()
    }
}

impl State {
    pub fn new(scheme: KeyScheme) -> State {
        State {
            scheme,
            ..State::default()
        }
    }

    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Queued {
                file,
                version,
                prio,
                queued_at,
                origin,
            } => {
                let p = Pending {
                    version: *version,
                    prio: *prio,
                    queued_at: *queued_at,
                    origin: origin.clone().map(Box::new),
                };
                self.pending.insert(file.clone(), p);
                // Queued again (changed, or tried again after a restart).
                self.quarantined.remove(file);
                // It settled (or its snapshot is due): its wait is over.
                self.waiting.remove(file);
            }
            Record::Dropped { file, .. } => {
                self.pending.remove(file);
                self.quarantined.remove(file);
                self.waiting.remove(file);
            }
            Record::Waiting { file, ino, since } => {
                if self.waiting.len() < MAX_WAITING || self.waiting.contains_key(file) {
                    let w = Waiting {
                        ino: *ino,
                        since: *since,
                        seen: AtomicBool::new(self.replayed),
                    };
                    self.waiting.insert(file.clone(), w);
                }
            }
            Record::Quarantined {
                file,
                version,
                reason,
                at,
            } => {
                let q = Quarantine {
                    version: *version,
                    reason: reason.clone(),
                    at: *at,
                };
                self.quarantined.insert(file.clone(), q);
            }
            Record::MpStarted {
                file,
                key,
                upload_id,
                version,
                sha256,
                part_size,
                zstd,
                zstd_lib,
                crc32,
            } => {
                let m = Multipart {
                    key: key.clone(),
                    upload_id: upload_id.clone(),
                    version: *version,
                    sha256: *sha256,
                    part_size: *part_size,
                    parts: BTreeMap::new(),
                    zstd: *zstd,
                    zstd_lib: *zstd_lib,
                    crc32: *crc32,
                    inputs: BTreeMap::new(),
                };
                self.multipart.insert(file.clone(), m);
            }
            Record::Part {
                file,
                upload_id,
                n,
                etag,
                input,
            } => {
                if let Some(mp) = self.multipart.get_mut(file)
                    && mp.upload_id == *upload_id
                {
                    mp.parts.insert(*n, etag.clone());
                    match input {
                        Some(i) => mp.inputs.insert(*n, *i),
                        None => mp.inputs.remove(n),
                    };
                }
            }
            Record::MpAborted { file, upload_id } => {
                if self
                    .multipart
                    .get(file)
                    .is_some_and(|mp| mp.upload_id == *upload_id)
                {
                    self.multipart.remove(file);
                }
            }
            Record::Uploaded { .. } => self.apply_uploaded(record),
            Record::Deleted { file, .. } => {
                self.registry.remove(file.as_str());
                self.other_keys.remove(file.as_str());
                self.pending.remove(file);
                self.waiting.remove(file);
            }
            Record::Renamed { file, from, ino } => self.apply_renamed(file, from, *ino),
            Record::Vacated { file, day, suffix } => {
                self.vacated.insert(file.as_str().into(), (*day, *suffix));
            }
            Record::Displaced {
                file,
                version,
                sha256,
                key,
                at,
            } => {
                let entry = Uploaded {
                    version: *version,
                    sha256: *sha256,
                    at: u32::try_from((*at).max(0)).unwrap_or(u32::MAX),
                    suffix: 0,
                    other_key: true,
                    seen: AtomicBool::new(self.replayed),
                };
                self.displaced
                    .insert(version.ino, file.as_str(), entry, key.clone());
            }
        }
    }

    /// Moves a registry entry to the file's new name; it keeps its key. Nothing moves if
    /// the entry at `from` is not of that file (inode) any more.
    fn apply_renamed(&mut self, to: &FileRef, from_rel: &str, ino: u64) {
        let from = FileRef::new(to.source(), from_rel);
        let (mut u, key) = if self.uploaded(&from).is_some_and(|u| u.version.ino == ino) {
            let Some(u) = self.registry.remove(from.as_str()) else {
                return;
            };
            let key = self.key_of(&from, &u);
            self.other_keys.remove(from.as_str());
            if !u.other_key {
                self.vacated.insert(
                    from.as_str().into(),
                    (self.scheme.day(&u.version), u.suffix & !ZST_FLAG),
                );
            }
            (u, key)
        } else {
            // Another file took its old path before the rename was seen.
            match self.displaced.by_ino.remove(&ino) {
                Some((path, u, key)) if *path == *from.as_str() => (u, key.to_string()),
                Some(other) => {
                    self.displaced.by_ino.insert(ino, other);
                    return;
                }
                None => return,
            }
        };
        // Renamed now (not replayed): seen where it is, not forgotten at the end of the
        // start-up scan. A replayed rename leaves it for this run's scan to see.
        u.seen = AtomicBool::new(self.replayed);
        u.other_key = true;
        u.suffix = 0;
        // Another file's entry at the new name is kept aside, as an upload over it would.
        if let Some(there) = self
            .uploaded(to)
            .filter(|t| t.version.ino != ino && t.version.ino != 0)
        {
            let there_key = self.key_of(to, there);
            let there = there.clone();
            self.displaced
                .insert(there.version.ino, to.as_str(), there, there_key);
        }
        self.other_keys.insert(to.as_str().into(), key.into());
        self.vacated.remove(to.as_str());
        self.registry.insert(to.as_str().into(), u);
    }

    fn apply_uploaded(&mut self, record: &Record) {
        let Record::Uploaded {
            file,
            version,
            sha256,
            key,
            at,
            ..
        } = record
        else {
            return;
        };
        // A newer version queued meanwhile stays queued.
        if self
            .pending
            .get(file)
            .is_some_and(|p| p.version.matches(version))
        {
            self.pending.remove(file);
        }
        if self
            .multipart
            .get(file)
            .is_some_and(|m| m.version.matches(version))
        {
            self.multipart.remove(file);
        }
        // Another file (inode) had this path: kept aside with its key, for a rename.
        let replaced_key = self
            .uploaded(file)
            .filter(|u| u.version.ino != 0 && u.version.ino != version.ino)
            .map(|u| self.key_of(file, u));
        let derived = self.scheme.derives(key, file, version);
        let entry = Uploaded {
            version: *version,
            sha256: *sha256,
            at: u32::try_from((*at).max(0)).unwrap_or(u32::MAX),
            suffix: derived.unwrap_or(0),
            other_key: derived.is_none(),
            seen: AtomicBool::new(self.replayed),
        };
        match derived {
            Some(_) => self.other_keys.remove(file.as_str()),
            None => self
                .other_keys
                .insert(file.as_str().into(), key.as_str().into()),
        };
        self.vacated.remove(file.as_str());
        match self.registry.get_mut(file.as_str()) {
            Some(slot) => {
                let replaced = std::mem::replace(slot, entry);
                if let Some(key) = replaced_key {
                    let ino = replaced.version.ino;
                    self.displaced.insert(ino, file.as_str(), replaced, key);
                }
            }
            None => {
                self.registry.insert(file.as_str().into(), entry);
            }
        }
    }

    /// The uploaded file a file at `version` was before a rename whose path another
    /// file has taken since: its path.
    pub fn displaced(&self, version: &Version) -> Option<FileRef> {
        let (path, u, _) = self.displaced.by_ino.get(&version.ino)?;
        let (source, rel) = crate::file::split(path);
        (u.version == *version).then(|| FileRef::new(source, rel))
    }

    /// The registry's entry for a file: its last uploaded version.
    pub fn uploaded(&self, file: &FileRef) -> Option<&Uploaded> {
        self.registry.get(file.as_str())
    }

    /// Whether this version of the file is in S3 already.
    pub fn is_uploaded(&self, file: &FileRef, version: &Version) -> bool {
        self.uploaded(file)
            .is_some_and(|u| u.version.matches(version))
    }

    /// The first `~N` to try for a key of this version of `file` (0: the plain key):
    /// past every key this path is known to have used on the same day, so a new content
    /// never overwrites an earlier one. (Conditional writes catch what this misses.)
    pub fn next_suffix(&self, file: &FileRef, version: &Version) -> u16 {
        let day = self.scheme.day(version);
        let used = self
            .uploaded(file)
            .filter(|u| !u.other_key && self.scheme.day(&u.version) == day)
            .map(|u| u.suffix & !ZST_FLAG)
            .into_iter()
            .chain(
                self.vacated
                    .get(file.as_str())
                    .filter(|(d, _)| *d == day)
                    .map(|(_, s)| *s),
            )
            .max();
        match used {
            None => 0,
            Some(0) => 2,
            Some(n) => n.saturating_add(1),
        }
    }

    /// Every registry entry, by `source/rel` (see [`crate::file::split`]).
    pub fn registry(&self) -> impl Iterator<Item = (&str, &Uploaded)> {
        self.registry.iter()
    }

    pub fn registry_len(&self) -> usize {
        self.registry.len()
    }

    /// The object key of a registry entry.
    pub fn key_of(&self, file: &FileRef, u: &Uploaded) -> String {
        match self.other_keys.get(file.as_str()).filter(|_| u.other_key) {
            Some(k) => k.to_string(),
            None => self
                .scheme
                .key_with_suffix(
                    file,
                    &u.version,
                    u.suffix & !ZST_FLAG,
                    u.suffix & ZST_FLAG != 0,
                )
                .unwrap_or_default(),
        }
    }

    /// Marks the end of the replay: entries applied from now on count as seen.
    pub fn replay_over(&mut self) {
        self.replayed = true;
    }

    /// Notes that the start-up scan saw `file` at `version`; if that is the version the
    /// registry has, the entry is kept by [`forget_unseen`](Self::forget_unseen).
    pub fn mark_seen(&self, file: &FileRef, version: &Version) {
        if let Some(u) = self.registry.get(file.as_str())
            && u.version.matches(version)
        {
            u.seen.store(true, Ordering::Relaxed);
        }
        if let Some(w) = self.waiting.get(file)
            && w.ino == version.ino
        {
            w.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Since when (Unix seconds) `file`, as inode `ino`, has been waiting to settle, if
    /// an earlier run journaled it.
    pub fn waiting_since(&self, file: &FileRef, ino: u64) -> Option<i64> {
        self.waiting
            .get(file)
            .filter(|w| w.ino == ino)
            .map(|w| w.since)
    }

    /// Registry entries the start-up scan has not seen at their version (so far): files
    /// deleted, replaced or renamed while the daemon was down.
    pub fn unseen(&self) -> impl Iterator<Item = (FileRef, &Uploaded)> {
        self.registry
            .iter()
            .filter(|(_, u)| !u.seen.load(Ordering::Relaxed))
            .map(|(k, u)| {
                let (source, rel) = crate::file::split(k);
                (FileRef::new(source, rel), u)
            })
    }

    /// After the start-up scan: forgets the registry entries it did not see at their
    /// version (the files were deleted, or replaced, while the daemon was down). Their
    /// objects stay in S3; this only keeps the registry from growing forever. Returns
    /// how many were forgotten.
    ///
    /// The key each forgotten entry took stays taken (as `vacated`), so a new file at that
    /// path the same day takes the next `~N` instead of meeting a 412 (or, on a server that
    /// ignores conditional writes, overwriting it). Vacated keys of days before the newest
    /// day known but one are dropped then: a new file's key is of its own day.
    pub fn forget_unseen(&mut self) -> usize {
        let before = self.registry.len();
        let mut forgotten = Vec::new();
        let scheme = &self.scheme;
        self.registry.retain(&mut |path: &str, u: &Uploaded| {
            let keep = u.seen.load(Ordering::Relaxed);
            if !keep && !u.other_key {
                forgotten.push((
                    Box::<str>::from(path),
                    (scheme.day(&u.version), u.suffix & !ZST_FLAG),
                ));
            }
            keep
        });
        for (path, (day, suffix)) in forgotten {
            let slot = self.vacated.entry(path).or_insert((day, suffix));
            *slot = (*slot).max((day, suffix));
        }
        let newest = self
            .registry
            .iter()
            .map(|(_, u)| self.scheme.day(&u.version))
            .chain(self.vacated.values().map(|(d, _)| *d))
            .max()
            .unwrap_or(0);
        self.vacated.retain(|_, (day, _)| *day >= newest - 1);
        let registry = &self.registry;
        self.other_keys.retain(|k, _| registry.contains_key(k));
        // Waiting files gone (or replaced) while the daemon was down.
        let waiting = self.waiting.len();
        self.waiting.retain(|_, w| w.seen.load(Ordering::Relaxed));
        before - self.registry.len() + (waiting - self.waiting.len())
    }

    /// Makes room for `n` more registry entries at once, so that a replay does not grow
    /// the table by doubling (when the old and the new table both exist for a moment).
    pub fn reserve_registry(&mut self, n: usize) {
        self.registry.reserve(n);
    }

    /// The quarantined files, in no order: those still queued at the version that
    /// failed.
    pub fn quarantined(&self) -> impl Iterator<Item = (&FileRef, &Quarantine)> {
        self.quarantined.iter().filter(|(f, q)| {
            self.pending
                .get(*f)
                .is_some_and(|p| p.version.matches(&q.version))
        })
    }

    /// How many records [`write_snapshot`](Self::write_snapshot) writes.
    pub fn live_records(&self) -> usize {
        self.registry.len()
            + self.vacated.len()
            + self.displaced.by_ino.len()
            + self.waiting.len()
            + self.pending.len()
            + self.quarantined().count()
            + self
                .multipart
                .values()
                .map(|m| 1 + m.parts.len())
                .sum::<usize>()
    }

    /// Writes the records that rebuild this state, registry first, each part of the
    /// state in path order so equal states give equal files. Returns the line count.
    pub fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<usize> {
        let mut lines = 0;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut emit = |r: Record, buf: &mut Vec<u8>| -> io::Result<()> {
            r.write_line(buf);
            lines += 1;
            if buf.len() >= 60 * 1024 {
                out.write_all(buf)?;
                buf.clear();
            }
            Ok(())
        };
        let mut paths: Vec<&str> = self.registry.iter().map(|(k, _)| k).collect();
        paths.sort_unstable();
        for path in paths {
            let Some(u) = self.registry.get(path) else {
                continue;
            };
            let (source, rel) = crate::file::split(path);
            let file = FileRef::new(source, rel);
            let key = self.key_of(&file, u);
            let r = Record::Uploaded {
                version: u.version,
                sha256: u.sha256,
                key,
                etag: String::new(),
                at: u.at(),
                file,
            };
            emit(r, &mut buf)?;
        }
        // After the registry, whose uploads would clear a path's vacated entry.
        for r in self.kept_aside_records() {
            emit(r, &mut buf)?;
        }
        for r in self.queue_records() {
            emit(r, &mut buf)?;
        }
        out.write_all(&buf)?;
        Ok(lines)
    }

    /// Vacated paths (in path order) and displaced entries (oldest first, as they are
    /// dropped) as records: without them, a rotation seen out of order after a
    /// compaction would be sent again, or a new file reuse a vacated key's `~N`.
    fn kept_aside_records(&self) -> Vec<Record> {
        let mut vacated: Vec<_> = self.vacated.iter().collect();
        vacated.sort();
        let mut out: Vec<Record> = vacated
            .into_iter()
            .map(|(path, (day, suffix))| {
                let (source, rel) = crate::file::split(path);
                Record::Vacated {
                    file: FileRef::new(source, rel),
                    day: *day,
                    suffix: *suffix,
                }
            })
            .collect();
        for ino in &self.displaced.order {
            if let Some((path, u, key)) = self.displaced.by_ino.get(ino) {
                let (source, rel) = crate::file::split(path);
                out.push(Record::Displaced {
                    file: FileRef::new(source, rel),
                    version: u.version,
                    sha256: u.sha256,
                    key: key.to_string(),
                    at: u.at(),
                });
            }
        }
        out
    }

    /// The pending queue and multipart progress as records, in path order.
    fn queue_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut pending: Vec<_> = self.pending.iter().collect();
        pending.sort_by(|a, b| a.0.cmp(b.0));
        for (f, p) in pending {
            out.push(Record::Queued {
                file: f.clone(),
                version: p.version,
                prio: p.prio,
                queued_at: p.queued_at,
                origin: p.origin.as_deref().cloned(),
            });
        }
        let mut quarantined: Vec<_> = self.quarantined().collect();
        quarantined.sort_by(|a, b| a.0.cmp(b.0));
        for (f, q) in quarantined {
            out.push(Record::Quarantined {
                file: f.clone(),
                version: q.version,
                reason: q.reason.clone(),
                at: q.at,
            });
        }
        let mut multipart: Vec<_> = self.multipart.iter().collect();
        multipart.sort_by(|a, b| a.0.cmp(b.0));
        for (f, m) in multipart {
            out.push(Record::MpStarted {
                file: f.clone(),
                key: m.key.clone(),
                upload_id: m.upload_id.clone(),
                version: m.version,
                sha256: m.sha256,
                part_size: m.part_size,
                zstd: m.zstd,
                zstd_lib: m.zstd_lib,
                crc32: m.crc32,
            });
            for (n, etag) in &m.parts {
                out.push(Record::Part {
                    file: f.clone(),
                    upload_id: m.upload_id.clone(),
                    n: *n,
                    etag: etag.clone(),
                    input: m.inputs.get(n).copied(),
                });
            }
        }
        // After the queue, whose records would end a wait.
        let mut waiting: Vec<_> = self.waiting.iter().collect();
        waiting.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(waiting.into_iter().map(|(f, w)| Record::Waiting {
            file: f.clone(),
            ino: w.ino,
            since: w.since,
        }));
        out
    }
}

/// Shards of the registry: with 16 tables, one growing (when a table doubles, old and new
/// exist for a moment) costs a sixteenth of the whole, so the registry grows by small
/// steps while `once` uploads 100,000 files.
const REGISTRY_SHARDS: usize = 16;

/// The registry's map, in [`REGISTRY_SHARDS`] shards chosen by a hash of the path
/// (made on first use).
#[derive(Debug, Clone, Default)]
struct Registry {
    shards: Vec<HashMap<Box<str>, Uploaded>>,
}

impl PartialEq for Registry {
    fn eq(&self, o: &Registry) -> bool {
        self.len() == o.len() && self.iter().all(|(k, v)| o.get(k) == Some(v))
    }
}

impl Registry {
    /// FNV-1a of the path, so the shard is the same in every process.
    fn shard(key: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % REGISTRY_SHARDS as u64) as usize
    }

    fn map(&self, key: &str) -> Option<&HashMap<Box<str>, Uploaded>> {
        self.shards.get(Registry::shard(key))
    }

    fn map_mut(&mut self, key: &str) -> &mut HashMap<Box<str>, Uploaded> {
        if self.shards.is_empty() {
            self.shards = vec![HashMap::new(); REGISTRY_SHARDS];
        }
        &mut self.shards[Registry::shard(key)]
    }

    fn get(&self, key: &str) -> Option<&Uploaded> {
        self.map(key)?.get(key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Uploaded> {
        self.map_mut(key).get_mut(key)
    }

    fn insert(&mut self, key: Box<str>, value: Uploaded) {
        self.map_mut(&key).insert(key, value);
    }

    fn remove(&mut self, key: &str) -> Option<Uploaded> {
        self.map_mut(key).remove(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Uploaded)> {
        self.shards
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (&**k, v)))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&str, &Uploaded) -> bool) {
        for m in &mut self.shards {
            m.retain(|k, v| keep(k, v));
        }
    }

    /// Room for `n` entries in all, spread evenly with a little slack.
    fn reserve(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let per_shard = n / REGISTRY_SHARDS + n / (REGISTRY_SHARDS * 16) + 16;
        self.map_mut("");
        for m in &mut self.shards {
            m.reserve(per_shard);
        }
    }
}

/// What replay found besides the state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replay {
    pub state: State,
    /// Records applied.
    pub records: usize,
    /// Damaged lines skipped: (1-based line number, why), the first
    /// [`MAX_DAMAGE_REPORTED`] of them.
    pub damaged: Vec<(usize, String)>,
    /// Damaged lines in all.
    pub damaged_total: usize,
    /// Whether the input ended with a newline (or was empty): else its last record
    /// would be joined to the next one appended.
    pub ends_whole: bool,
}

/// Rebuilds the state from journal bytes. Never fails and never panics: a damaged line
/// is skipped and reported, and every intact record before or after it is kept.
pub fn replay(bytes: &[u8], scheme: KeyScheme) -> Replay {
    // Reading from memory cannot fail.
    let uploaded = count_uploaded(bytes).unwrap_or(0);
    replay_from(bytes, scheme, uploaded).unwrap_or_default()
}

/// How many lines of a journal are `uploaded` records (the kind comes first, as this
/// module writes it; spaces around it are allowed), for sizing the registry before a
/// replay. A line counted wrongly only makes the table a little larger or smaller.
pub fn count_uploaded(mut input: impl BufRead) -> io::Result<usize> {
    /// How much of a line's start is looked at.
    const HEAD: usize = 24;
    const KIND: &[u8] = br#""uploaded""#;
    let mut count = 0;
    // The first bytes of the current line, up to START's length.
    let mut head: Vec<u8> = Vec::with_capacity(HEAD);
    let counts = |head: &[u8]| usize::from(head.windows(KIND.len()).any(|w| w == KIND));
    let mut in_head = true;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut rest = buf;
        while !rest.is_empty() {
            if in_head {
                let take = (HEAD - head.len()).min(rest.len());
                let chunk = &rest[..take];
                let end = chunk.iter().position(|&b| b == b'\n');
                head.extend_from_slice(&chunk[..end.unwrap_or(take)]);
                if head.len() == HEAD {
                    count += counts(&head);
                    in_head = false;
                }
                if let Some(e) = end {
                    if in_head {
                        count += counts(&head);
                    }
                    head.clear();
                    in_head = true;
                    rest = &rest[e + 1..];
                    continue;
                }
                rest = &rest[take..];
            } else {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(e) => {
                        head.clear();
                        in_head = true;
                        rest = &rest[e + 1..];
                    }
                    None => rest = &[],
                }
            }
        }
        input.consume(len);
    }
    if in_head {
        count += counts(&head);
    }
    Ok(count)
}

/// [`replay`] from a reader, one line at a time: memory holds the state and one line.
/// `uploaded_lines` (see [`count_uploaded`]) sizes the registry up front.
pub fn replay_from(
    mut input: impl BufRead,
    scheme: KeyScheme,
    uploaded_lines: usize,
) -> io::Result<Replay> {
    let mut out = Replay {
        state: State::new(scheme),
        ends_whole: true,
        ..Replay::default()
    };
    out.state.reserve_registry(uploaded_lines);
    let mut line = Vec::with_capacity(512);
    let mut number = 0;
    loop {
        line.clear();
        let (read, too_long) = read_line(&mut input, &mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        out.ends_whole = line.last() == Some(&b'\n');
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) && !too_long {
            continue;
        }
        let parsed = if too_long {
            Err(format!("over {MAX_LINE_BYTES} bytes long"))
        } else {
            parse(text)
        };
        match parsed {
            Ok(record) => {
                out.state.apply(&record);
                out.records += 1;
            }
            Err(why) => {
                out.damaged_total += 1;
                if out.damaged.len() < MAX_DAMAGE_REPORTED {
                    out.damaged.push((number, why));
                }
            }
        }
    }
    Ok(out)
}

/// Reads one line (with its newline, if any) into `line`, keeping at most
/// [`MAX_LINE_BYTES`] + 1 bytes of it. Returns the bytes consumed and whether the line
/// was longer than that.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((consumed, too_long));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
        if take > room {
            too_long = true;
        }
        line.extend_from_slice(&buf[..take.min(room)]);
        if done && too_long {
            line.push(b'\n');
        }
        input.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, too_long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: [u8; 32] = [0xe3; 32];

    fn scheme() -> KeyScheme {
        KeyScheme {
            prefix: String::new(),
            vehicle_id: "v".into(),
            utc_offset_seconds: 0,
        }
    }

    fn f(rel: &str) -> FileRef {
        FileRef::new("s", rel)
    }

    fn ver(size: u64) -> Version {
        Version {
            size,
            mtime_ns: 7,
            ino: 0,
        }
    }

    fn queued(rel: &str, size: u64) -> Record {
        Record::Queued {
            file: f(rel),
            version: ver(size),
            prio: 0,
            queued_at: 1,
            origin: None,
        }
    }

    fn uploaded(rel: &str, size: u64) -> Record {
        Record::Uploaded {
            file: f(rel),
            version: ver(size),
            sha256: SHA,
            key: format!("v/1970-01-01/s/{rel}"),
            etag: String::new(),
            at: 2,
        }
    }

    fn started(rel: &str, id: &str) -> Record {
        Record::MpStarted {
            file: f(rel),
            key: "k".into(),
            upload_id: id.into(),
            version: ver(100),
            sha256: SHA,
            part_size: 10,
            zstd: None,
            zstd_lib: None,
            crc32: true,
        }
    }

    fn part(rel: &str, id: &str, n: u32) -> Record {
        Record::Part {
            file: f(rel),
            upload_id: id.into(),
            n,
            etag: format!("e{n}"),
            input: None,
        }
    }

    fn lines(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.write_line(&mut out);
        }
        out
    }

    fn apply_all(records: &[Record]) -> State {
        let mut s = State::new(scheme());
        records.iter().for_each(|r| s.apply(r));
        s
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
        let r = replay(&lines(&recs), scheme());
        assert!(r.damaged.is_empty() && r.ends_whole);
        assert!(!r.state.pending.contains_key(&f("a")));
        assert!(r.state.is_uploaded(&f("a"), &ver(1)));
        assert!(!r.state.is_uploaded(&f("a"), &ver(2)));
        let mp = &r.state.multipart[&f("b")];
        assert_eq!(mp.parts.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(mp.stored_bytes(), 10);
    }

    #[test]
    fn a_newer_version_queued_survives_the_upload_of_the_older() {
        let s = apply_all(&[queued("a", 1), queued("a", 2), uploaded("a", 1)]);
        assert_eq!(s.pending[&f("a")].version.size, 2);
    }

    #[test]
    fn aborted_upload_is_forgotten_only_if_it_is_the_current_one() {
        let abort = |id: &str| Record::MpAborted {
            file: f("b"),
            upload_id: id.into(),
        };
        let s = apply_all(&[started("b", "u1"), abort("old")]);
        assert!(s.multipart.contains_key(&f("b")));
        let s = apply_all(&[started("b", "u1"), abort("u1")]);
        assert!(!s.multipart.contains_key(&f("b")));
    }

    #[test]
    fn a_deletion_forgets_the_registry_entry_and_the_queue_entry() {
        let deleted = Record::Deleted {
            file: f("a"),
            reason: "keep_expired".into(),
        };
        let s = apply_all(&[uploaded("a", 1), queued("a", 2), deleted]);
        assert!(s.uploaded(&f("a")).is_none() && s.pending.is_empty());
    }

    #[test]
    fn derived_keys_are_not_stored_and_other_keys_are() {
        let mut other = uploaded("b", 1);
        if let Record::Uploaded { key, .. } = &mut other {
            *key = "elsewhere/b".into();
        }
        let s = apply_all(&[uploaded("a", 1), other]);
        let a = s.uploaded(&f("a")).expect("a");
        assert!(!a.other_key && s.other_keys.len() == 1);
        assert_eq!(
            std::mem::size_of::<Uploaded>(),
            64,
            "a registry entry stays dense"
        );
        assert_eq!(s.key_of(&f("a"), a), "v/1970-01-01/s/a");
        let b = s.uploaded(&f("b")).expect("b");
        assert_eq!(s.key_of(&f("b"), b), "elsewhere/b");
    }

    #[test]
    fn a_derived_key_is_recognised_without_building_it() {
        let s = KeyScheme {
            prefix: "fleet/".into(),
            vehicle_id: "v1".into(),
            utc_offset_seconds: 8 * 3600,
        };
        let file = f("d/x y.log");
        for mtime_s in [
            0i64,
            1_780_000_000,
            1_780_000_000 - 8 * 3600 + 5,
            9_000_000_000,
        ] {
            let v = Version {
                size: 1,
                mtime_ns: mtime_s * 1_000_000_000,
                ino: 0,
            };
            let key = s.key(&file, &v).expect("key");
            assert_eq!(s.derives(&key, &file, &v), Some(0), "{key}");
            assert_eq!(s.derives(&format!("{key}~2"), &file, &v), Some(2));
            assert_eq!(s.derives(&key.replace("fleet/", "other/"), &file, &v), None);
        }
    }

    #[test]
    fn torn_last_line_is_skipped_and_reported() {
        let mut bytes = lines(&[queued("a", 1), uploaded("a", 1)]);
        let full = bytes.len();
        bytes.extend_from_slice(br#"{"t":"queued","src":"s","rel":"c","si"#);
        let r = replay(&bytes, scheme());
        assert_eq!(r.records, 2);
        assert_eq!(r.damaged.len(), 1);
        assert!(!r.ends_whole);
        assert!(r.state.is_uploaded(&f("a"), &ver(1)));
        assert_eq!(replay(&bytes[..full], scheme()).state, r.state);
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
            let r = replay(&bytes[..cut], scheme());
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert!(r.records >= whole, "cut {cut}: {} < {whole}", r.records);
            assert_eq!(r.state, apply_all(&recs[..r.records]), "cut {cut}");
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
            let r = replay(&bytes, scheme());
            assert!(r.state.pending.contains_key(&f("a")), "round {round}");
            assert!(r.state.is_uploaded(&f("z"), &ver(3)), "round {round}");
        }
    }

    #[test]
    fn uploaded_lines_are_counted_across_buffer_edges() {
        let mut bytes = lines(&[uploaded("a", 1), queued("b", 1), uploaded("c", 1)]);
        bytes.extend_from_slice(b"\n{\"t\":\"upl\n");
        bytes.extend(lines(&[uploaded("d", 1)]));
        bytes.extend_from_slice(b"{\"t\": \"uploaded\", \"src\": \"s\"}\n{\"t\":\"uploaded\"}");
        for cap in [1, 2, 7, 15, 16, 64, 4096] {
            let reader = std::io::BufReader::with_capacity(cap, &bytes[..]);
            assert_eq!(count_uploaded(reader).expect("count"), 5, "buffer {cap}");
        }
    }

    #[test]
    fn an_overlong_line_is_damage_and_the_next_line_still_counts() {
        let mut bytes = vec![b'x'; MAX_LINE_BYTES * 3];
        bytes.push(b'\n');
        bytes.extend(lines(&[queued("a", 1)]));
        let r = replay(&bytes, scheme());
        assert_eq!(r.damaged.len(), 1);
        assert!(r.damaged[0].1.contains("bytes long"));
        assert_eq!(r.records, 1);
    }

    #[test]
    fn snapshot_replays_to_the_same_state() {
        let mut other = uploaded("e", 4);
        if let Record::Uploaded { key, .. } = &mut other {
            *key = "elsewhere/e".into();
        }
        let recs = [
            queued("a", 1),
            started("b", "u1"),
            part("b", "u1", 3),
            uploaded("c", 9),
            queued("d", 2),
            other,
        ];
        let s = apply_all(&recs);
        let mut out = Vec::new();
        let n = s.write_snapshot(&mut out).expect("write");
        assert_eq!(n, s.live_records());
        let again = replay(&out, scheme());
        assert_eq!(again.state, s);
        assert_eq!(again.records, n);
    }

    /// Issue 24 (6): compaction wrote neither the vacated paths nor the displaced
    /// entries, so after it a rotation seen out of order was sent again.
    #[test]
    fn compaction_keeps_vacated_paths_and_displaced_entries() {
        let mut s = State::new(scheme());
        let with_ino = |rel: &str, size: u64, ino: u64| {
            let mut r = uploaded(rel, size);
            if let Record::Uploaded { version, .. } = &mut r {
                version.ino = ino;
            }
            r
        };
        // `a` renamed away to `a.1` (its path vacated); `b` replaced by another file
        // (inode 8) before its own rename to `b.1` is seen.
        s.apply(&with_ino("a", 1, 5));
        s.apply(&Record::Renamed {
            file: f("a.1"),
            from: "a".into(),
            ino: 5,
        });
        s.apply(&with_ino("b", 2, 7));
        let old_b = s.uploaded(&f("b")).expect("b").version;
        s.apply(&with_ino("b", 3, 8));
        assert_eq!(s.displaced(&old_b), Some(f("b")));
        let mut out = Vec::new();
        let n = s.write_snapshot(&mut out).expect("snapshot");
        assert_eq!(n, s.live_records());
        let again = replay(&out, scheme()).state;
        assert_eq!(again, s);
        assert_eq!(
            again.next_suffix(&f("a"), &ver(9)),
            2,
            "a's key stays taken"
        );
        assert_eq!(
            again.displaced(&old_b),
            Some(f("b")),
            "b's entry kept aside"
        );
    }

    /// Issue 24 (5): when a file began waiting (max_wait_seconds) outlives a restart and
    /// a compaction, ends with its `queued`, and is forgotten with its file.
    #[test]
    fn a_waiting_file_is_kept_by_compaction_ended_by_queued_and_forgotten_when_gone() {
        let waiting = |rel: &str, ino: u64, since: i64| Record::Waiting {
            file: f(rel),
            ino,
            since,
        };
        let mut s = State::new(scheme());
        s.apply(&waiting("a", 5, 100));
        s.apply(&waiting("b", 6, 200));
        s.apply(&waiting("c", 7, 300));
        assert_eq!(s.waiting_since(&f("a"), 5), Some(100));
        assert_eq!(
            s.waiting_since(&f("a"), 9),
            None,
            "another file at the path"
        );
        let mut out = Vec::new();
        let n = s.write_snapshot(&mut out).expect("snapshot");
        assert_eq!(n, s.live_records());
        let mut again = replay(&out, scheme()).state;
        assert_eq!(again, s);
        assert_eq!(again.waiting_since(&f("b"), 6), Some(200));
        again.apply(&Record::Queued {
            file: f("b"),
            version: ver(1),
            prio: 0,
            queued_at: 1,
            origin: None,
        });
        assert_eq!(again.waiting_since(&f("b"), 6), None, "settled");
        // After a restart the scan sees only `a` (`c` was deleted meanwhile).
        let mut seen = ver(2);
        seen.ino = 5;
        again.mark_seen(&f("a"), &seen);
        assert_eq!(again.forget_unseen(), 1);
        assert_eq!(again.waiting_since(&f("a"), 5), Some(100));
        assert_eq!(again.waiting_since(&f("c"), 7), None);
    }

    #[test]
    fn waiting_files_are_bounded() {
        let mut s = State::new(scheme());
        for i in 0..=MAX_WAITING as u64 {
            s.apply(&Record::Waiting {
                file: f(&format!("w{i}")),
                ino: i,
                since: 1,
            });
        }
        assert_eq!(s.live_records(), MAX_WAITING);
        let last = MAX_WAITING as u64;
        assert_eq!(s.waiting_since(&f(&format!("w{last}")), last), None);
        assert_eq!(s.waiting_since(&f("w0"), 0), Some(1));
    }

    #[test]
    fn a_rename_moves_the_entry_and_its_key_and_the_old_path_takes_the_next_suffix() {
        let mut s = State::new(scheme());
        let mut a = uploaded("messages", 1);
        if let Record::Uploaded { version, .. } = &mut a {
            version.ino = 5;
        }
        s.apply(&a);
        let key = s.key_of(&f("messages"), s.uploaded(&f("messages")).expect("entry"));
        // Not that file any more: nothing moves.
        s.apply(&Record::Renamed {
            file: f("messages.1"),
            from: "messages".into(),
            ino: 6,
        });
        assert!(s.uploaded(&f("messages.1")).is_none());
        s.apply(&Record::Renamed {
            file: f("messages.1"),
            from: "messages".into(),
            ino: 5,
        });
        assert!(s.uploaded(&f("messages")).is_none());
        let moved = s.uploaded(&f("messages.1")).expect("moved");
        assert_eq!(
            s.key_of(&f("messages.1"), moved),
            key,
            "the key of its first name"
        );
        assert_eq!(
            s.next_suffix(&f("messages"), &ver(9)),
            2,
            "its old key is taken"
        );
        let mut again = State::new(scheme());
        let mut out = Vec::new();
        s.write_snapshot(&mut out).expect("snapshot");
        replay(&out, scheme()).state.clone_into(&mut again);
        assert_eq!(
            again.key_of(
                &f("messages.1"),
                again.uploaded(&f("messages.1")).expect("e")
            ),
            key
        );
    }

    #[test]
    fn entries_the_scan_did_not_see_at_their_version_are_forgotten() {
        let mut s = apply_all(&[uploaded("a", 1), uploaded("b", 1), uploaded("c", 1)]);
        s.replay_over();
        s.mark_seen(&f("a"), &ver(1));
        s.mark_seen(&f("b"), &ver(2)); // replaced meanwhile: not this version
        // Uploaded during the scan (a flood fills the planner before the scan ends).
        s.apply(&uploaded("d", 1));
        assert_eq!(s.forget_unseen(), 2);
        assert!(s.uploaded(&f("a")).is_some() && s.uploaded(&f("d")).is_some());
        assert_eq!(s.registry_len(), 2);
        // Issue 24 (5): their keys stay taken (a restart forgot them, and a new file at
        // the path met a 412 again and again).
        assert_eq!(s.next_suffix(&f("c"), &ver(7)), 2, "c's key is taken");
        let mut out = Vec::new();
        s.write_snapshot(&mut out).expect("snapshot");
        let again = replay(&out, scheme()).state;
        assert_eq!(again.next_suffix(&f("c"), &ver(7)), 2, "and stays taken");
    }
}
