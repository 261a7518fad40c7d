//! The watcher thread: raw inotify over every source directory (recursive where asked),
//! plus a full scan at start-up and after an inotify queue overflow, so files written
//! while the daemon was down, or events the kernel dropped, are not missed.
//!
//! It reports what it sees as [`WatchEvent`]s: a wanted regular file's size and mtime,
//! or that a file is gone. It decides nothing about stability or uploads. It sleeps in
//! `poll(2)` on the inotify fd and a wake pipe: no polling loop, no timer.
//!
//! A new subdirectory is watched before it is listed, so a file created in it between
//! the two is seen by one or the other. Symlinks are never followed; FIFOs, sockets and
//! devices are never reported.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::file::{FileRef, Version};
use crate::pattern::{self, Pattern};
use crate::probe::{Ends, stat};

/// inotify read buffer: room for ~1,000 events per read.
const EVENT_BUFFER_BYTES: usize = 64 * 1024;
/// Deepest directory nesting scanned below a source root; deeper trees are logged and
/// skipped (they are never log layouts, and a bind-mount loop must not hang a scan).
const MAX_DEPTH: usize = 32;

/// What the watcher tells the planner.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A wanted regular file exists at this version. `rewritten`: it is no shorter than
    /// when last reported, the same inode, but its content then is not its first bytes
    /// now (see [`Ends`]): a new content, not growth.
    Seen {
        file: FileRef,
        version: Version,
        rewritten: bool,
    },
    /// The file was deleted or moved away.
    Gone { file: FileRef },
    /// A directory (`source/rel`) was moved away: every file under it is gone from
    /// there (when it was moved within the source, its files are then seen under the
    /// new name, and the planner pairs each with its old name by inode).
    DirGone { dir: FileRef },
    /// The start-up scan is complete: every file present then has been reported.
    ScanDone,
}

/// What the watcher needs of a source.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub root: PathBuf,
    pub recursive: bool,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
}

/// Owns the watcher thread and the receiving end of its channel; dropping it (or
/// [`Watcher::stop`]) closes the channel, wakes the thread and joins it. Closing the
/// channel first matters: a watcher blocked sending into a full channel (a start-up scan
/// of a big tree) is freed by it, so stopping never hangs, whatever the caller did with
/// the events.
pub struct Watcher {
    events: Option<Receiver<WatchEvent>>,
    wake: Option<io::PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching; at most `capacity` events wait in the channel.
    pub fn spawn(sources: Vec<SourceSpec>, capacity: usize) -> io::Result<Watcher> {
        let (tx, rx) = bounded(capacity);
        let inotify = Inotify::init()?;
        let (wake_rx, wake_tx) = io::pipe()?;
        let thread = std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || {
                let mut state = State {
                    inotify,
                    sources,
                    dirs: HashMap::new(),
                    tx,
                    warned: HashSet::new(),
                    lost: BTreeSet::new(),
                    ends: HashMap::new(),
                };
                state.run(wake_rx);
            })?;
        Ok(Watcher {
            events: Some(rx),
            wake: Some(wake_tx),
            thread: Some(thread),
        })
    }

    /// The events, in the order seen. Disconnected once the thread has stopped.
    pub fn events(&self) -> &Receiver<WatchEvent> {
        static CLOSED: std::sync::OnceLock<Receiver<WatchEvent>> = std::sync::OnceLock::new();
        match &self.events {
            Some(rx) => rx,
            None => CLOSED.get_or_init(|| bounded(0).1),
        }
    }

    pub fn stop(&mut self) {
        self.events.take();
        if let Some(mut w) = self.wake.take() {
            // Writing wakes poll; closing the pipe (drop) would too.
            let _ = w.write_all(b"x");
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the watcher thread panicked");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

struct State {
    inotify: Inotify,
    sources: Vec<SourceSpec>,
    /// Each watched directory: its source and its path relative to the source root.
    dirs: HashMap<WatchDescriptor, (usize, String)>,
    tx: Sender<WatchEvent>,
    /// Paths already warned about (non-UTF-8 names), so a log is not flooded.
    warned: HashSet<PathBuf>,
    /// Sources whose root directory is missing (deleted, moved away, not yet created):
    /// looked for every [`LOST_ROOT_POLL_MS`] and watched again when back.
    lost: BTreeSet<usize>,
    /// Each reported file's version and [`Ends`] then (at most [`MAX_ENDS`]).
    ends: HashMap<FileRef, (Version, Ends)>,
}

/// Files whose ends are remembered; beyond it a file's first change is taken for growth.
/// 7/8 of 16,384: what a table of 16,384 slots holds at hashbrown's load factor (one
/// more entry doubles it, and 16,384 entries took 1.5 MiB instead of 0.75).
const MAX_ENDS: usize = 14_336;

/// How often a missing source root is looked for.
const LOST_ROOT_POLL_MS: i32 = 1000;

/// Result of one step, so that a closed channel ends the thread.
type Step = Result<(), Closed>;
struct Closed;

impl State {
    fn run(&mut self, mut wake: io::PipeReader) {
        if self.scan_all().is_err() || self.tx.send(WatchEvent::ScanDone).is_err() {
            return;
        }
        let mut buffer = vec![0u8; EVENT_BUFFER_BYTES];
        loop {
            let timeout = if self.lost.is_empty() {
                -1
            } else {
                LOST_ROOT_POLL_MS
            };
            match wait_readable(&self.inotify, &wake, timeout) {
                Ok(Ready::Wake) => {
                    let _ = wake.read(&mut [0u8; 8]);
                    return;
                }
                Ok(Ready::Events) => {
                    if self.drain(&mut buffer).is_err() {
                        return;
                    }
                }
                Ok(Ready::Timeout) => {}
                Err(e) => {
                    log::error!("watch: poll failed, watching stops: {e}");
                    return;
                }
            }
            if self.find_lost_roots().is_err() {
                return;
            }
        }
    }

    /// Reads every queued event and reports what changed, each file once per batch.
    fn drain(&mut self, buffer: &mut [u8]) -> Step {
        let mut touched: Vec<(usize, String)> = Vec::new();
        let mut touched_set: HashSet<(usize, String)> = HashSet::new();
        let mut new_dirs: Vec<(usize, String)> = Vec::new();
        let mut moved_away: Vec<WatchDescriptor> = Vec::new();
        let mut overflow = false;
        loop {
            let events = match self.inotify.read_events(buffer) {
                Ok(ev) => ev,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("watch: reading inotify events: {e}");
                    break;
                }
            };
            let mut any = false;
            for ev in events {
                any = true;
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                if ev.mask.contains(EventMask::IGNORED) {
                    if let Some((src, rel)) = self.dirs.remove(&ev.wd)
                        && rel.is_empty()
                    {
                        self.lose_root(src);
                    }
                    continue;
                }
                if ev.mask.contains(EventMask::MOVE_SELF) {
                    // A root moved away: its watch would follow the old directory.
                    // (A subdirectory's move is seen as MOVED_FROM/TO in its parent.)
                    if self.dirs.get(&ev.wd).is_some_and(|(_, rel)| rel.is_empty())
                        && let Some((src, _)) = self.dirs.remove(&ev.wd)
                    {
                        let _ = self.inotify.watches().remove(ev.wd.clone());
                        self.lose_root(src);
                    }
                    continue;
                }
                let Some((src, dir_rel)) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                let Some(name) = ev.name else { continue };
                let Some(child) = self.child_rel(src, &dir_rel, name) else {
                    continue;
                };
                if ev.mask.contains(EventMask::ISDIR) {
                    if !self.sources[src].recursive {
                        continue;
                    }
                    if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                        new_dirs.push((src, child));
                    } else if ev.mask.contains(EventMask::MOVED_FROM) {
                        moved_away.extend(self.forget_dir(src, &child));
                        touched.retain(|(s, rel)| *s != src || !under(rel, &child));
                        touched_set.retain(|(s, rel)| *s != src || !under(rel, &child));
                        let dir = FileRef::new(&self.sources[src].name, &child);
                        let prefix = format!("{}/", dir.as_str());
                        self.ends.retain(|f, _| !f.as_str().starts_with(&prefix));
                        self.send(WatchEvent::DirGone { dir })?;
                    }
                    continue;
                }
                if ev
                    .mask
                    .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
                {
                    touched_set.remove(&(src, child.clone()));
                    touched.retain(|t| t != &(src, child.clone()));
                    let file = FileRef::new(&self.sources[src].name, &child);
                    self.ends.remove(&file);
                    self.send(WatchEvent::Gone { file })?;
                    continue;
                }
                if touched_set.insert((src, child.clone())) {
                    touched.push((src, child));
                }
            }
            if !any {
                break;
            }
        }
        if overflow {
            log::warn!("watch: inotify queue overflowed; rescanning every source");
            return self.scan_all();
        }
        for (src, rel) in new_dirs {
            self.scan_dir(src, &rel, rel.matches('/').count() + 1)?;
        }
        // A directory moved out of every source keeps its watches on the moved inode
        // (one moved within a source got the same descriptors back from its scan).
        for wd in moved_away {
            if !self.dirs.contains_key(&wd) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
        for (src, rel) in touched {
            self.report(src, &rel)?;
        }
        Ok(())
    }

    /// Forgets the watched directories at `rel` and under it (moved away): their events
    /// would otherwise be reported under the old name. Returns their descriptors.
    fn forget_dir(&mut self, src: usize, rel: &str) -> Vec<WatchDescriptor> {
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, (s, r))| *s == src && (r == rel || under(r, rel)))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in &gone {
            self.dirs.remove(wd);
        }
        gone
    }

    fn lose_root(&mut self, src: usize) {
        if self.lost.insert(src) {
            log::warn!(
                "watch: source {:?} root {} went away; watching for it to come back",
                self.sources[src].name,
                self.sources[src].root.display()
            );
        }
    }

    /// Watches (and scans) every lost root that exists again.
    fn find_lost_roots(&mut self) -> Step {
        let back: Vec<usize> = self
            .lost
            .iter()
            .copied()
            .filter(|&src| self.sources[src].root.is_dir())
            .collect();
        for src in back {
            self.lost.remove(&src);
            log::info!(
                "watch: source {:?} root {} is there again; watching it",
                self.sources[src].name,
                self.sources[src].root.display()
            );
            self.scan_dir(src, "", 0)?;
        }
        Ok(())
    }

    fn child_rel(&mut self, src: usize, dir_rel: &str, name: &OsStr) -> Option<String> {
        let Some(name) = name.to_str() else {
            let path = self.sources[src].root.join(dir_rel).join(name);
            if self.warned.insert(path.clone()) {
                log::warn!(
                    "watch: {} has a name that is not UTF-8; it cannot be an S3 key, skipped",
                    path.display()
                );
            }
            return None;
        };
        Some(if dir_rel.is_empty() {
            name.to_string()
        } else {
            format!("{dir_rel}/{name}")
        })
    }

    fn send(&self, ev: WatchEvent) -> Step {
        self.tx.send(ev).map_err(|_| Closed)
    }

    /// Stats one file and reports it if it is a wanted regular file, or gone.
    fn report(&mut self, src: usize, rel: &str) -> Step {
        let spec = &self.sources[src];
        if !pattern::wanted(rel, &spec.include, &spec.exclude) {
            return Ok(());
        }
        let path = spec.root.join(rel);
        let file = FileRef::new(&spec.name, rel);
        match stat(&path) {
            Ok(Some(version)) => {
                let rewritten = self.rewritten(&file, &path, version);
                self.send(WatchEvent::Seen {
                    file,
                    version,
                    rewritten,
                })
            }
            Ok(None) => {
                if std::fs::symlink_metadata(&path).is_err() {
                    self.ends.remove(&file);
                    self.send(WatchEvent::Gone { file })
                } else {
                    Ok(()) // a FIFO, socket, device or symlink: never uploaded
                }
            }
            Err(e) => {
                log::warn!("watch: {}: {e}", path.display());
                Ok(())
            }
        }
    }

    /// Whether the file at `version` was rewritten since it was last reported (see
    /// [`WatchEvent::Seen`]); remembers its ends now.
    fn rewritten(&mut self, file: &FileRef, path: &std::path::Path, version: Version) -> bool {
        // Past MAX_ENDS a file not remembered is not opened at all (a start-up scan of
        // 100,000 files opened each one for nothing).
        if self.ends.len() >= MAX_ENDS && !self.ends.contains_key(file) {
            return false;
        }
        // One open for both reads (the ends at the old size and at the new one).
        let open = std::fs::File::open(path);
        let rewritten = match (self.ends.get(file), &open) {
            (Some((old, ends)), Ok(f))
                if old.ino == version.ino && old.size <= version.size && *old != version =>
            {
                Ends::read_open(f, old.size).is_ok_and(|now| now != *ends)
            }
            _ => false,
        };
        match open.and_then(|f| Ends::read_open(&f, version.size)) {
            Ok(ends) => {
                self.ends.insert(file.clone(), (version, ends));
            }
            Err(_) => {
                self.ends.remove(file);
            }
        }
        rewritten
    }

    fn scan_all(&mut self) -> Step {
        for src in 0..self.sources.len() {
            self.scan_dir(src, "", 0)?;
        }
        Ok(())
    }

    /// Watches a directory, then reports its files and descends into its subdirectories.
    fn scan_dir(&mut self, src: usize, rel: &str, depth: usize) -> Step {
        if !pattern::dir_wanted(rel) {
            return Ok(());
        }
        let spec = &self.sources[src];
        let dir = if rel.is_empty() {
            spec.root.clone()
        } else {
            spec.root.join(rel)
        };
        if depth > MAX_DEPTH {
            log::warn!(
                "watch: {} is nested deeper than {MAX_DEPTH} levels; not scanned",
                dir.display()
            );
            return Ok(());
        }
        let mask = WatchMask::CREATE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW
            | WatchMask::EXCL_UNLINK;
        match self.inotify.watches().add(&dir, mask) {
            Ok(wd) => {
                self.dirs.insert(wd, (src, rel.to_string()));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                log::error!(
                    "watch: cannot watch {}: the inotify watch limit is reached \
                     (raise fs.inotify.max_user_watches); its files are found only by rescans",
                    dir.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if rel.is_empty() {
                    self.lose_root(src);
                }
                return Ok(());
            }
            Err(e) => {
                log::warn!("watch: cannot watch {}: {e}", dir.display());
                return Ok(());
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                log::warn!("watch: cannot list {}: {e}", dir.display());
                return Ok(());
            }
        };
        let recursive = spec.recursive;
        let mut subdirs = Vec::new();
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let Some(child) = self.child_rel(src, rel, &entry.file_name()) else {
                continue;
            };
            // file_type() does not follow symlinks.
            match entry.file_type() {
                Ok(t) if t.is_dir() && recursive => {
                    subdirs.push(child);
                }
                Ok(t) if t.is_file() => files.push(child),
                _ => {}
            }
        }
        files.sort();
        for f in files {
            self.report(src, &f)?;
        }
        for d in subdirs {
            self.scan_dir(src, &d, depth + 1)?;
        }
        Ok(())
    }
}

/// Whether `rel` is below the directory `dir` (both relative to one source root).
fn under(rel: &str, dir: &str) -> bool {
    rel.len() > dir.len() && rel.starts_with(dir) && rel.as_bytes()[dir.len()] == b'/'
}

enum Ready {
    Events,
    Wake,
    Timeout,
}

/// Sleeps until inotify has events, the wake pipe is written (or closed), or
/// `timeout_ms` passes (-1: no timeout).
#[allow(unsafe_code)]
fn wait_readable(inotify: &Inotify, wake: &io::PipeReader, timeout_ms: i32) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: inotify.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two initialized pollfd structs that outlives
        // the call, and its length is passed with it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(Ready::Wake);
        }
        if fds[0].revents != 0 {
            return Ok(Ready::Events);
        }
        if n == 0 {
            return Ok(Ready::Timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(name: &str, root: &std::path::Path) -> SourceSpec {
        SourceSpec {
            name: name.into(),
            root: root.to_path_buf(),
            recursive: true,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tvm-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        d
    }

    #[test]
    fn the_start_up_scan_reports_every_wanted_file_then_scan_done() {
        let d = dir("scan");
        std::fs::write(d.join("a.log"), b"a").expect("write");
        std::fs::write(d.join("sub/b.log"), b"bb").expect("write");
        std::fs::write(d.join(".hidden"), b"h").expect("write");
        let w = Watcher::spawn(vec![spec("s", &d)], 16).expect("spawn");
        let mut seen = Vec::new();
        loop {
            match w
                .events()
                .recv_timeout(Duration::from_secs(10))
                .expect("event")
            {
                WatchEvent::Seen { file, version, .. } => {
                    seen.push((file.rel().to_string(), version.size))
                }
                WatchEvent::Gone { .. } | WatchEvent::DirGone { .. } => {}
                WatchEvent::ScanDone => break,
            }
        }
        seen.sort();
        assert_eq!(seen, vec![("a.log".into(), 1), ("sub/b.log".into(), 2)]);
        std::fs::write(d.join("c.log"), b"ccc").expect("write");
        let ev = w
            .events()
            .recv_timeout(Duration::from_secs(10))
            .expect("event");
        assert!(
            matches!(ev, WatchEvent::Seen { ref file, .. } if file.rel() == "c.log"),
            "{ev:?}"
        );
        drop(w);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Regression (daemon.rs around 202 before the redesign): a start-up step failing
    /// right after the watcher was spawned returned with `?` while the watcher was
    /// blocked on its full channel during the start-up scan, and dropping it hung.
    #[test]
    fn dropping_a_watcher_blocked_on_a_full_channel_returns() {
        let d = dir("blocked");
        for i in 0..64 {
            std::fs::write(d.join(format!("f{i}")), b"x").expect("write");
        }
        let w = Watcher::spawn(vec![spec("s", &d)], 2).expect("spawn");
        std::thread::sleep(Duration::from_millis(200)); // the scan fills the channel
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(w);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("dropping the watcher returned");
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// The live paths, each change made by the filesystem and read back as the planner
/// reads it.
#[cfg(test)]
mod live_tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::time::Duration;

    struct Live {
        w: Watcher,
    }

    impl Live {
        /// Events until one satisfies `want` (10 s at most), returning them all.
        fn until(&self, what: &str, want: impl Fn(&WatchEvent) -> bool) -> Vec<WatchEvent> {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(ev) = self.w.events().recv_timeout(Duration::from_millis(100)) {
                    let done = want(&ev);
                    got.push(ev);
                    if done {
                        return got;
                    }
                }
            }
            panic!("no {what} within 10 s; got {got:?}");
        }
    }

    fn seen(rel: &'static str, rewritten_want: Option<bool>) -> impl Fn(&WatchEvent) -> bool {
        move |ev| {
            matches!(ev, WatchEvent::Seen { file, rewritten, .. }
                if file.rel() == rel && rewritten_want.is_none_or(|r| r == *rewritten))
        }
    }

    #[test]
    fn live_changes_reach_the_planner_as_they_happen() {
        let d = std::env::temp_dir().join(format!("tvm-watch-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/b.log"), b"bb").expect("write");
        let spec = SourceSpec {
            name: "s".into(),
            root: d.clone(),
            recursive: true,
            include: Vec::new(),
            exclude: vec![Pattern::new("*.tmp").expect("glob")],
        };
        let live = Live {
            w: Watcher::spawn(vec![spec], 64).expect("spawn"),
        };
        live.until("the scan's end", |ev| matches!(ev, WatchEvent::ScanDone));

        // A new directory is watched: a file made in it at once is seen.
        std::fs::create_dir_all(d.join("new/deeper")).expect("mkdir");
        std::fs::write(d.join("new/deeper/x.log"), b"x").expect("write");
        live.until("a file in a new directory", seen("new/deeper/x.log", None));

        // Growth is not a rewrite; a rewrite in place of the first bytes is.
        let log = d.join("a.log");
        std::fs::write(&log, vec![b'a'; 1000]).expect("write");
        live.until("a.log", seen("a.log", Some(false)));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        f.write_all(b"more").expect("append");
        drop(f);
        live.until("a.log grown", seen("a.log", Some(false)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open");
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.write_all(b"REWRITTEN").expect("rewrite");
        f.write_all(&[b'z'; 2000]).expect("longer");
        drop(f);
        live.until("a.log rewritten", seen("a.log", Some(true)));

        // Excluded names and FIFOs are never reported; a deleted file is gone.
        std::fs::write(d.join("skip.tmp"), b"t").expect("write");
        let made = std::process::Command::new("mkfifo")
            .arg(d.join("pipe"))
            .status()
            .expect("mkfifo");
        assert!(made.success());
        std::fs::remove_file(&log).expect("rm");
        let got = live.until(
            "a.log gone",
            |ev| matches!(ev, WatchEvent::Gone { file } if file.rel() == "a.log"),
        );
        assert!(
            got.iter()
                .all(|ev| !matches!(ev, WatchEvent::Seen { file, .. }
                if file.rel() == "skip.tmp" || file.rel() == "pipe")),
            "{got:?}"
        );

        // A directory renamed within the source: gone there, seen under its new name.
        std::fs::rename(d.join("sub"), d.join("moved")).expect("mv");
        let got = live.until("moved/b.log", seen("moved/b.log", None));
        assert!(
            got.iter()
                .any(|ev| matches!(ev, WatchEvent::DirGone { dir } if dir.rel() == "sub")),
            "{got:?}"
        );

        // The root removed and made again: watched again, its files seen.
        std::fs::remove_dir_all(&d).expect("rm -r");
        std::thread::sleep(Duration::from_millis(300));
        std::fs::create_dir_all(&d).expect("mkdir again");
        std::fs::write(d.join("back.log"), b"b").expect("write");
        live.until("a file in the root made again", seen("back.log", None));
        drop(live);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[cfg(test)]
mod under_tests {
    use super::under;

    #[test]
    fn under_means_strictly_below_at_a_path_boundary() {
        assert!(under("d1/a.log", "d1"));
        assert!(under("d1/x/b.log", "d1"));
        assert!(!under("d1", "d1"));
        assert!(!under("d10/a.log", "d1"));
        assert!(!under("e/d1/a.log", "d1"));
    }
}
