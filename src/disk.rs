//! The disk manager: keeps the vehicle's disk from filling with logs, deleting only what
//! it may, for a reason it logs.
//!
//! Rules, for sources with `delete_after_upload` (files of other sources are never
//! deleted, e.g. `/var/log` that logrotate owns):
//! - **deferred**: an uploaded file is deleted `keep_uploaded_hours` after its upload;
//! - **age**: an uploaded file whose mtime is older than `max_age_days` is deleted;
//! - **cleanup**: above `cleanup_percent`, uploaded files are deleted oldest first,
//!   whatever their keep time, until usage is below `cleanup_percent`;
//! - **emergency**: above `emergency_percent`, the same, and then, only with
//!   `emergency_delete_unuploaded`, queued files not yet uploaded, lowest priority then
//!   oldest first, until usage is below `emergency_percent`.
//!
//! [`plan`] is pure. The thread ([`DiskManager`]) measures usage with statvfs and, before
//! each deletion, checks the file again: a regular file (no symlink followed), inside its
//! source root, outside `state_dir`, and for uploaded files the same size, mtime and
//! SHA-256 as the registry's record of the upload. It never deletes anything else. Each
//! deletion is journaled (`deleted`), so the registry forgets the file at once and the
//! next pass does not plan it again.
//!
//! A pass reads the registry under the journal's read lock without copying it: while
//! every filesystem is below `cleanup_percent` (the usual case) only the files a time
//! rule deletes become candidates; the full, sorted list is built only above it.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select};

use crate::clock::system_now as unix_now;
use crate::config::{Config, DiskConfig};
use crate::digest::{Bodies, hash_open};
use crate::file::{FileRef, Version, split};
use crate::journal::{Journal, Record};
use crate::openfiles::{self, Writers};

/// Written while the disk manager keeps files a rule would delete because they are open
/// for writing or changed since their upload: one line each. `status` shows it.
pub const DISK_KEPT_FILE: &str = "disk-kept";

/// How often the disk is looked at when nothing else wakes the manager (each finished
/// upload does). Statvfs is cheap; the rules are checked against the registry in memory.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Why a file is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    KeepExpired,
    MaxAge,
    Cleanup,
    Emergency,
    EmergencyUnuploaded,
}

impl Reason {
    /// The reason as the journal's `deleted` record names it.
    fn tag(self) -> &'static str {
        match self {
            Reason::KeepExpired => "keep_expired",
            Reason::MaxAge => "max_age",
            Reason::Cleanup => "cleanup",
            Reason::Emergency => "emergency",
            Reason::EmergencyUnuploaded => "emergency_unuploaded",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::KeepExpired => "uploaded, and kept for keep_uploaded_hours",
            Reason::MaxAge => "uploaded, and older than max_age_days",
            Reason::Cleanup => "uploaded; disk above cleanup_percent",
            Reason::Emergency => "uploaded; disk above emergency_percent",
            Reason::EmergencyUnuploaded => {
                "NOT UPLOADED; disk above emergency_percent and emergency_delete_unuploaded is set"
            }
        }
    }
}

/// A file the rules may delete.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub file: FileRef,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// 0: not known.
    pub ino: u64,
    pub prio: i32,
    /// When it was uploaded (unix seconds) and with which SHA-256; `None`: not uploaded.
    pub uploaded: Option<(i64, [u8; 32])>,
}

/// Whether a time rule deletes an uploaded file now (the first half of [`plan`]).
fn time_rule(uploaded_at: i64, mtime_ns: i64, cfg: &DiskConfig, now: i64) -> Option<Reason> {
    if now - uploaded_at >= cfg.keep_uploaded.as_secs() as i64 {
        Some(Reason::KeepExpired)
    } else if cfg
        .max_age
        .is_some_and(|a| now - mtime_ns.div_euclid(1_000_000_000) >= a.as_secs() as i64)
    {
        Some(Reason::MaxAge)
    } else {
        None
    }
}

/// Bytes used and usable on one filesystem, as `df` counts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub used: u64,
    pub size: u64,
}

impl Usage {
    fn percent_after(&self, freed: u64) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.used.saturating_sub(freed) as f64 * 100.0 / self.size as f64
        }
    }
}

/// A plan: candidates (by index) to delete and why, in order.
type Plan = Vec<(usize, Reason)>;

/// Which candidates to delete and why, in order. `usage` is the filesystem the
/// candidates live on (`None`: only the time rules apply).
pub fn plan(cands: &[Candidate], usage: Option<Usage>, cfg: &DiskConfig, now: i64) -> Plan {
    let mut out = Vec::new();
    let mut chosen = vec![false; cands.len()];
    let mut freed = 0u64;
    for (i, c) in cands.iter().enumerate() {
        let Some((at, _)) = &c.uploaded else { continue };
        if let Some(r) = time_rule(*at, c.mtime_ns, cfg, now) {
            out.push((i, r));
            chosen[i] = true;
            freed += c.size;
        }
    }
    let Some(usage) = usage else { return out };
    let start = usage.percent_after(freed);
    if start <= cfg.cleanup_percent {
        return out;
    }
    let emergency = start > cfg.emergency_percent;
    let mut uploaded: Vec<usize> = (0..cands.len())
        .filter(|&i| !chosen[i] && cands[i].uploaded.is_some())
        .collect();
    uploaded.sort_by_key(|&i| (cands[i].mtime_ns, i));
    for i in uploaded {
        if usage.percent_after(freed) < cfg.cleanup_percent {
            break;
        }
        out.push((
            i,
            if emergency {
                Reason::Emergency
            } else {
                Reason::Cleanup
            },
        ));
        chosen[i] = true;
        freed += cands[i].size;
    }
    if emergency && cfg.emergency_delete_unuploaded {
        let mut pending: Vec<usize> = (0..cands.len())
            .filter(|&i| !chosen[i] && cands[i].uploaded.is_none())
            .collect();
        pending.sort_by_key(|&i| (cands[i].prio, cands[i].mtime_ns, i));
        for i in pending {
            if usage.percent_after(freed) < cfg.emergency_percent {
                break;
            }
            out.push((i, Reason::EmergencyUnuploaded));
            freed += cands[i].size;
        }
    }
    out
}

/// Usage of the filesystem holding `path`, from statvfs.
#[allow(unsafe_code)]
pub fn usage(path: &Path) -> std::io::Result<Usage> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut s = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `s` points to
    // writable memory for exactly one statvfs struct, which the call fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    let s = unsafe { s.assume_init() };
    let frsize = s.f_frsize;
    let used = s.f_blocks.saturating_sub(s.f_bfree) * frsize;
    let avail = s.f_bavail * frsize;
    Ok(Usage {
        used,
        size: used + avail,
    })
}

/// Deletions done, for the metrics `FilesDeleted` and `UnuploadedFilesDeleted`.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_deleted: AtomicU64,
    pub unuploaded_files_deleted: AtomicU64,
}

/// What the manager needs, resolved once.
struct Scope {
    cfg: DiskConfig,
    /// Per source: canonical root, priority, whether its files may be deleted.
    sources: HashMap<String, (PathBuf, i32, bool)>,
    state_dir: Option<PathBuf>,
    disk_paths: Vec<PathBuf>,
    /// Files kept at the last pass (logged once, shown by `status`).
    kept: Mutex<Vec<String>>,
    warned_unreadable: AtomicBool,
}

impl Scope {
    fn new(config: &Config, cfg: &DiskConfig) -> Scope {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        // A note from an earlier run is stale.
        let _ = std::fs::remove_file(config.state_dir.join(DISK_KEPT_FILE));
        Scope {
            cfg: cfg.clone(),
            sources: config
                .sources
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        (canon(&s.path), s.priority, s.delete_after_upload),
                    )
                })
                .collect(),
            state_dir: std::fs::canonicalize(&config.state_dir).ok(),
            disk_paths: cfg.paths.iter().map(|p| canon(p)).collect(),
            kept: Mutex::new(Vec::new()),
            warned_unreadable: AtomicBool::new(false),
        }
    }

    /// One look at the disk: plan and delete. Returns the number deleted.
    fn pass(&self, journal: &Journal, counters: &Counters) -> usize {
        let usages: Vec<Option<Usage>> = self
            .disk_paths
            .iter()
            .map(|dp| match usage(dp) {
                Ok(u) => Some(u),
                Err(e) => {
                    log::warn!("disk: cannot measure {}: {e}", dp.display());
                    None
                }
            })
            .collect();
        let crowded = usages
            .iter()
            .flatten()
            .any(|u| u.percent_after(0) > self.cfg.cleanup_percent);
        let now = unix_now();
        let cands = self.candidates(journal, crowded, now);
        // Group by the disk path each file lives under; files under none get only the
        // time rules.
        let mut groups: Vec<(Option<Usage>, Vec<Candidate>)> = Vec::new();
        let mut rest = cands;
        for (dp, u) in self.disk_paths.iter().zip(usages) {
            let (mine, others): (Vec<_>, Vec<_>) =
                rest.into_iter().partition(|c| c.path.starts_with(dp));
            rest = others;
            groups.push((u, mine));
        }
        groups.push((None, rest));
        let plans: Vec<(Vec<Candidate>, Plan)> = groups
            .into_iter()
            .map(|(u, group)| {
                let p = plan(&group, u, &self.cfg, now);
                (group, p)
            })
            .collect();
        let inodes: HashSet<u64> = plans
            .iter()
            .flat_map(|(g, p)| p.iter().map(|(i, _)| g[*i].ino))
            .collect();
        let writers = if inodes.is_empty() {
            Writers::default()
        } else {
            self.writers(&inodes)
        };
        let mut kept = Vec::new();
        let mut deleted = 0;
        for (group, chosen) in plans {
            for (i, reason) in chosen {
                let c = &group[i];
                match self.delete(c, reason, &writers) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(why) => {
                        kept.push(format!("{}: {why}", c.path.display()));
                        continue;
                    }
                }
                self.forget(journal, c, reason);
                deleted += 1;
                counters.files_deleted.fetch_add(1, Ordering::Relaxed);
                if reason == Reason::EmergencyUnuploaded {
                    counters
                        .unuploaded_files_deleted
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.keep_note(kept);
        deleted
    }

    /// Who holds the files about to be deleted open for writing (one /proc scan).
    fn writers(&self, inodes: &HashSet<u64>) -> Writers {
        let started = std::time::Instant::now();
        let w = openfiles::scan(Path::new("/proc"), inodes);
        log::debug!(
            "disk: {} open descriptors looked at in {:.1} ms",
            w.descriptors,
            started.elapsed().as_secs_f64() * 1000.0
        );
        if w.unreadable > 0 && !self.warned_unreadable.swap(true, Ordering::Relaxed) {
            log::warn!(
                "disk: the open files of {} processes cannot be read (not running as root); \
                 a log one of them holds open could be deleted",
                w.unreadable
            );
        }
        w
    }

    /// Logs newly kept files and writes them for `status` (removed when none).
    fn keep_note(&self, kept: Vec<String>) {
        let mut before = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for line in kept.iter().filter(|l| !before.contains(*l)) {
            log::info!("disk: kept {line}");
        }
        if *before == kept {
            return;
        }
        let Some(state_dir) = &self.state_dir else {
            return;
        };
        let note = state_dir.join(DISK_KEPT_FILE);
        let result = if kept.is_empty() {
            std::fs::remove_file(&note).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        } else {
            let tmp = note.with_extension("tmp");
            std::fs::write(&tmp, kept.join("\n") + "\n").and_then(|()| std::fs::rename(&tmp, &note))
        };
        if let Err(e) = result {
            log::warn!("disk: {}: {e}", note.display());
        }
        *before = kept;
    }

    /// The registry's and queue's files the rules may delete: all of them when a disk is
    /// above `cleanup_percent` (`crowded`), else only those a time rule deletes now.
    fn candidates(&self, journal: &Journal, crowded: bool, now: i64) -> Vec<Candidate> {
        let state = journal.read();
        let mut out = Vec::new();
        for (path, u) in state.registry() {
            let (source, rel) = split(path);
            let Some((root, prio, true)) = self.sources.get(source) else {
                continue;
            };
            if !crowded && time_rule(u.at(), u.version.mtime_ns, &self.cfg, now).is_none() {
                continue;
            }
            out.push(Candidate {
                file: FileRef::new(source, rel),
                path: root.join(rel),
                size: u.version.size,
                mtime_ns: u.version.mtime_ns,
                ino: u.version.ino,
                prio: *prio,
                uploaded: Some((u.at(), u.sha256)),
            });
        }
        if crowded && self.cfg.emergency_delete_unuploaded {
            for (f, p) in &state.pending {
                if state.is_uploaded(f, &p.version) {
                    continue;
                }
                if let Some((root, prio, true)) = self.sources.get(f.source()) {
                    out.push(Candidate {
                        file: f.clone(),
                        path: root.join(f.rel()),
                        size: p.version.size,
                        mtime_ns: p.version.mtime_ns,
                        ino: p.version.ino,
                        prio: *prio,
                        uploaded: None,
                    });
                }
            }
        }
        out
    }

    /// Journals a deletion, so the registry and queue forget the file at once.
    fn forget(&self, journal: &Journal, c: &Candidate, reason: Reason) {
        let record = Record::Deleted {
            file: c.file.clone(),
            reason: reason.tag().to_string(),
        };
        if let Err(e) = journal.append(&[record]) {
            // The next pass finds the file gone and skips it; the next start prunes it.
            log::warn!("disk: {e}");
        }
    }

    /// Deletes one file after checking it again: `Ok(false)` if it was not deleted for
    /// a reason the log says, `Err` with the reason `status` shows for one kept because
    /// it is written to or changed since its upload.
    ///
    /// What is hashed and what is unlinked are the same inode: the file is read through
    /// one descriptor, then moved to a hidden name in its directory and unlinked there
    /// only if that name holds the inode read (a file renamed over the path meanwhile is
    /// put back).
    fn delete(&self, c: &Candidate, reason: Reason, writers: &Writers) -> Result<bool, String> {
        let Some((root, _, _)) = self.sources.get(c.file.source()) else {
            return Ok(false);
        };
        if !self.inside(&c.path, root) {
            log::warn!(
                "disk: {} is not inside its source root (a symlinked directory?); kept",
                c.path.display()
            );
            return Ok(false);
        }
        let Some((file, meta)) = open_regular(&c.path) else {
            return Ok(false);
        };
        let now = Version {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ino: meta.ino(),
        };
        let expected = Version {
            size: c.size,
            mtime_ns: c.mtime_ns,
            ino: c.ino,
        };
        if c.uploaded.is_some() && !expected.matches(&now) {
            return Err("changed since its upload; kept until that version is uploaded".into());
        }
        if let Some(w) = writers.by_file.get(&(meta.dev(), meta.ino())) {
            return Err(format!(
                "open for writing by process {} ({})",
                w.pid, w.command
            ));
        }
        if let Some((_, sha)) = &c.uploaded {
            let same = hash_open(&file, c.size, Bodies::Whole, false, &AtomicBool::new(false))
                .is_ok_and(|d| d.sha256 == *sha);
            if !same {
                log::warn!(
                    "disk: {} no longer matches its upload; kept",
                    c.path.display()
                );
                return Ok(false);
            }
        }
        match unlink_inode(&c.path, &meta) {
            Ok(()) => {
                let level = if reason == Reason::EmergencyUnuploaded {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "disk: deleted {} ({} bytes): {}",
                    c.path.display(),
                    c.size,
                    reason.describe()
                );
                Ok(true)
            }
            Err(e) => {
                log::warn!("disk: cannot delete {}: {e}", c.path.display());
                Ok(false)
            }
        }
    }

    /// Whether the directory `path` is in, every symlink resolved, is still inside the
    /// source root and outside the state dir.
    fn inside(&self, path: &Path, root: &Path) -> bool {
        path.parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|dir| {
                dir.starts_with(root)
                    && !self.state_dir.as_ref().is_some_and(|s| dir.starts_with(s))
            })
    }
}

/// The regular file at `path`, opened without following a symlink; `None` (logged when
/// unexpected) when it is gone or not a regular file.
fn open_regular(path: &Path) -> Option<(File, std::fs::Metadata)> {
    let opened = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| f.metadata().map(|m| (f, m)));
    match opened {
        Ok((f, m)) if m.is_file() => Some((f, m)),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => None, // a symlink
        Err(e) => {
            log::warn!("disk: {}: {e}; kept", path.display());
            None
        }
    }
}

/// Unlinks `path` if it names the inode `held` describes: moved first to a hidden name
/// (hidden files are never uploaded), which is unlinked only if it is that inode. A
/// different file found there (renamed over `path` since it was opened) is put back.
fn unlink_inode(path: &Path, held: &std::fs::Metadata) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let aside = path.with_file_name(format!(".tvm-upload-deleting.{}.{name}", held.ino()));
    std::fs::rename(path, &aside)?;
    let moved = std::fs::symlink_metadata(&aside)?;
    if moved.dev() == held.dev() && moved.ino() == held.ino() {
        return std::fs::remove_file(&aside);
    }
    // Back under its name, unless yet another file took it: then beside it, visible.
    let back = std::fs::hard_link(&aside, path).or_else(|_| {
        let beside = path.with_file_name(format!("{name}.kept-{}", moved.ino()));
        std::fs::hard_link(&aside, beside)
    });
    back.and_then(|()| std::fs::remove_file(&aside))?;
    Err(std::io::Error::other(
        "another file was renamed over it while it was checked; that one is kept",
    ))
}

/// The disk manager thread: a pass at start, after uploads (coalesced) and every minute.
pub struct DiskManager {
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DiskManager {
    pub fn spawn(
        config: &Config,
        journal: Arc<Journal>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Option<DiskManager>> {
        let Some(cfg) = &config.disk else {
            return Ok(None);
        };
        let scope = Scope::new(config, cfg);
        // Capacity 1: a wake-up pending is as good as many.
        let (tx, rx): (Sender<()>, Receiver<()>) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || {
                loop {
                    scope.pass(&journal, &counters);
                    select! {
                        recv(rx) -> msg => if msg.is_err() { return },
                        default(CHECK_INTERVAL) => {}
                    }
                }
            })?;
        Ok(Some(DiskManager {
            wake: Some(tx),
            thread: Some(thread),
        }))
    }

    /// Asks for a pass soon (after an upload); never blocks.
    pub fn wake(&self) {
        if let Some(tx) = &self.wake {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for DiskManager {
    fn drop(&mut self) {
        self.wake.take(); // closing the channel ends the loop
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the disk thread panicked");
        }
    }
}

/// One pass now, on the calling thread (the end of `once`).
pub fn pass_once(config: &Config, journal: &Journal, counters: &Counters) -> usize {
    match &config.disk {
        Some(cfg) => Scope::new(config, cfg).pass(journal, counters),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn cfg() -> DiskConfig {
        DiskConfig {
            paths: vec![],
            keep_uploaded: Duration::from_secs(24 * 3600),
            max_age: Some(Duration::from_secs(14 * 86400)),
            cleanup_percent: 85.0,
            emergency_percent: 95.0,
            emergency_delete_unuploaded: false,
        }
    }

    fn cand(name: &str, size: u64, mtime: i64, prio: i32, uploaded_at: Option<i64>) -> Candidate {
        Candidate {
            file: FileRef::new("s", name),
            path: PathBuf::from(name),
            size,
            mtime_ns: mtime * 1_000_000_000,
            ino: 0,
            prio,
            uploaded: uploaded_at.map(|a| (a, [0; 32])),
        }
    }

    fn names(c: &[Candidate], plan: &[(usize, Reason)]) -> Vec<(String, Reason)> {
        plan.iter()
            .map(|(i, r)| (c[*i].file.rel().to_string(), *r))
            .collect()
    }

    #[test]
    fn time_rules_need_an_upload() {
        let now = 100 * 86400;
        let c = vec![
            cand("kept-long-enough", 1, now - 2 * H, 0, Some(now - 25 * H)),
            cand("recent", 1, now - 2 * H, 0, Some(now - H)),
            cand("old-uploaded", 1, now - 20 * 86400, 0, Some(now - H)),
            cand("old-not-uploaded", 1, now - 20 * 86400, 0, None),
        ];
        let p = plan(&c, None, &cfg(), now);
        assert_eq!(
            names(&c, &p),
            vec![
                ("kept-long-enough".into(), Reason::KeepExpired),
                ("old-uploaded".into(), Reason::MaxAge)
            ]
        );
    }

    #[test]
    fn cleanup_deletes_uploaded_oldest_first_until_below_the_threshold() {
        let now = 100 * 86400;
        let c = vec![
            cand("newest", 10, now - 10, 0, Some(now - 5)),
            cand("oldest", 10, now - 300, 0, Some(now - 5)),
            cand("middle", 10, now - 200, 0, Some(now - 5)),
            cand("pending", 10, now - 400, 0, None),
        ];
        // 90 of 100 used: freeing 10 gives 80 < 85.
        let p = plan(
            &c,
            Some(Usage {
                used: 90,
                size: 100,
            }),
            &cfg(),
            now,
        );
        assert_eq!(names(&c, &p), vec![("oldest".into(), Reason::Cleanup)]);
        // 97 used: emergency; uploaded go until below 85, nothing un-uploaded without the flag.
        let p = plan(
            &c,
            Some(Usage {
                used: 97,
                size: 100,
            }),
            &cfg(),
            now,
        );
        assert_eq!(
            names(&c, &p),
            vec![
                ("oldest".into(), Reason::Emergency),
                ("middle".into(), Reason::Emergency)
            ]
        );
        // Under the threshold: nothing.
        assert!(
            plan(
                &c,
                Some(Usage {
                    used: 85,
                    size: 100
                }),
                &cfg(),
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn emergency_deletes_unuploaded_lowest_priority_then_oldest_only_with_the_flag() {
        let now = 100 * 86400;
        let c = vec![
            cand("high-old", 10, now - 900, 5, None),
            cand("low-new", 10, now - 100, 0, None),
            cand("low-old", 10, now - 800, 0, None),
        ];
        let mut with_flag = cfg();
        with_flag.emergency_delete_unuploaded = true;
        let full = Some(Usage {
            used: 99,
            size: 100,
        });
        assert!(plan(&c, full, &cfg(), now).is_empty());
        let p = plan(&c, full, &with_flag, now);
        assert_eq!(
            names(&c, &p),
            vec![("low-old".into(), Reason::EmergencyUnuploaded)]
        );
        let p = plan(
            &c,
            Some(Usage {
                used: 120,
                size: 100,
            }),
            &with_flag,
            now,
        );
        assert_eq!(
            names(&c, &p).into_iter().map(|n| n.0).collect::<Vec<_>>(),
            vec!["low-old", "low-new", "high-old"]
        );
    }

    #[test]
    fn statvfs_reads_a_real_filesystem() {
        let u = usage(Path::new("/")).expect("statvfs /");
        assert!(u.size > 0 && u.used <= u.size);
    }
}

#[cfg(test)]
mod pass_tests {
    use super::*;
    use crate::digest::hash_file;
    use crate::journal::KeyScheme;
    use crate::probe::stat;

    /// Regression (disk.rs before the redesign): deletions were never journaled, so the
    /// registry shrank only at the next start and every pass (woken after every upload)
    /// planned every file it had already deleted again.
    #[test]
    fn a_deletion_is_journaled_and_not_planned_again() {
        let dir = std::env::temp_dir().join(format!("tvm-disk-pass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("mkdir");
        let text = format!(
            r#"{{"vehicle_id":"v","state_dir":{:?},"sources":[{{"name":"s","path":{:?}}}],
               "s3":{{"bucket":"bucket","region":"r"}},"disk":{{"keep_uploaded_hours":0}}}}"#,
            dir.join("state"),
            logs
        );
        let config = Config::parse(&text, &|_| None).expect("config");
        let (journal, _) = Journal::open(&config.state_dir, KeyScheme::default()).expect("open");
        for name in ["a.log", "b.log"] {
            let path = logs.join(name);
            std::fs::write(&path, name.as_bytes()).expect("write");
            let version = stat(&path).expect("stat").expect("file");
            let digests = hash_file(
                &path,
                version.size,
                Bodies::Whole,
                false,
                &AtomicBool::new(false),
            )
            .expect("hash");
            let record = Record::Uploaded {
                file: FileRef::new("s", name),
                version,
                sha256: digests.sha256,
                key: format!("k/{name}"),
                etag: String::new(),
                at: unix_now() - 10,
            };
            journal.append(&[record]).expect("append");
        }
        let counters = Counters::default();
        assert_eq!(pass_once(&config, &journal, &counters), 2);
        assert!(!logs.join("a.log").exists() && !logs.join("b.log").exists());
        assert_eq!(
            journal.read().registry_len(),
            0,
            "the registry forgot them at once"
        );
        let scope = Scope::new(&config, config.disk.as_ref().expect("disk"));
        assert!(scope.candidates(&journal, false, unix_now()).is_empty());
        assert_eq!(pass_once(&config, &journal, &counters), 0);
        drop(journal);
        let replayed = Journal::read_only(&config.state_dir, KeyScheme::default()).expect("read");
        assert_eq!(
            replayed.state.registry_len(),
            0,
            "and so does the journal on disk"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod unlink_tests {
    use super::*;

    /// Issue 24 (6): the file hashed was the old inode, and a new file was renamed over
    /// the path meanwhile (a writer's rotation): the new one is never deleted, and is
    /// back under its name; the old inode is unlinked when it is still the one there.
    #[test]
    fn only_the_inode_that_was_checked_is_unlinked() {
        let dir = std::env::temp_dir().join(format!("tvm-disk-unlink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("app.log");
        std::fs::write(&path, b"uploaded content").expect("write");
        let (_old, held) = open_regular(&path).expect("open");
        std::fs::write(dir.join("app.log.new"), b"never uploaded").expect("write");
        std::fs::rename(dir.join("app.log.new"), &path).expect("rename over");
        let err = unlink_inode(&path, &held).expect_err("not the inode checked");
        assert!(err.to_string().contains("renamed over it"), "{err}");
        assert_eq!(std::fs::read(&path).expect("kept"), b"never uploaded");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("app.log")],
            "nothing left aside"
        );
        let (_f, held) = open_regular(&path).expect("open");
        unlink_inode(&path, &held).expect("the same inode");
        assert!(std::fs::read_dir(&dir).expect("ls").next().is_none());
        std::os::unix::fs::symlink("/etc/hostname", &path).expect("symlink");
        assert!(open_regular(&path).is_none(), "a symlink is never opened");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
