//! The journal against a filesystem whose fsync, rename and open fail on demand.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::*;
use crate::file::{FileRef, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    SyncFile,
    SyncDir,
    Rename,
    Open,
}

/// The real disk, except that the operations in `failing` fail; `seen` records every
/// directory fsynced.
#[derive(Clone, Default)]
struct Faulty {
    failing: Arc<Mutex<HashSet<Op>>>,
    dirs_synced: Arc<Mutex<Vec<PathBuf>>>,
    /// File fsyncs done, and how long each takes (a slow disk).
    files_synced: Arc<std::sync::atomic::AtomicUsize>,
    sync_delay: Arc<Mutex<std::time::Duration>>,
}

impl Faulty {
    fn fail(&self, op: Op, on: bool) {
        let mut f = self.failing.lock().expect("faults");
        if on {
            f.insert(op);
        } else {
            f.remove(&op);
        }
    }

    fn check(&self, op: Op) -> io::Result<()> {
        if self.failing.lock().expect("faults").contains(&op) {
            Err(io::Error::other(format!("injected {op:?} failure")))
        } else {
            Ok(())
        }
    }
}

impl Storage for Faulty {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        let delay = *self.sync_delay.lock().expect("delay");
        std::thread::sleep(delay);
        self.files_synced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.check(Op::SyncFile)?;
        Disk.sync_file(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.dirs_synced
            .lock()
            .expect("dirs")
            .push(dir.to_path_buf());
        self.check(Op::SyncDir)?;
        Disk.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename)?;
        Disk.rename(from, to)
    }
    fn open_existing(&self, path: &Path) -> io::Result<File> {
        self.check(Op::Open)?;
        Disk.open_existing(path)
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tvm-journal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn queued(rel: &str, size: u64) -> Record {
    Record::Queued {
        file: FileRef::new("s", rel),
        version: Version {
            size,
            mtime_ns: 7,
            ino: 0,
        },
        prio: 0,
        queued_at: 1,
        origin: None,
    }
}

fn open(dir: &Path, faults: &Faulty) -> Result<Journal, JournalError> {
    Journal::open_with(dir, KeyScheme::default(), Box::new(faults.clone())).map(|(j, _)| j)
}

fn reopen_pending(dir: &Path) -> Vec<u64> {
    let r = Journal::read_only(dir, KeyScheme::default()).expect("read");
    assert!(r.damaged.is_empty(), "{:?}", r.damaged);
    let mut sizes: Vec<u64> = r.state.pending.values().map(|p| p.version.size).collect();
    sizes.sort_unstable();
    sizes
}

#[test]
fn appends_survive_reopen_and_compaction_bounds_the_file() {
    let dir = Dir::new("bounds");
    {
        let (j, _) = Journal::open(&dir.0, KeyScheme::default()).expect("open");
        assert!(matches!(
            Journal::open(&dir.0, KeyScheme::default()),
            Err(JournalError::Locked { .. })
        ));
        for i in 0..(COMPACT_MIN_LINES + 10) {
            j.append(&[queued("a", i as u64)]).expect("append");
        }
    }
    let text = std::fs::read_to_string(dir.0.join(JOURNAL_FILE)).expect("read");
    assert!(text.lines().count() < 100, "{} lines", text.lines().count());
    assert_eq!(reopen_pending(&dir.0), vec![(COMPACT_MIN_LINES + 9) as u64]);
    // A torn tail is dropped on open and gone from the file afterwards.
    std::fs::write(dir.0.join(JOURNAL_FILE), format!("{text}{{\"t\":\"que")).expect("write");
    let (j, replayed) = Journal::open(&dir.0, KeyScheme::default()).expect("reopen");
    assert_eq!(replayed.damaged.len(), 1);
    drop(j);
    assert!(
        Journal::read_only(&dir.0, KeyScheme::default())
            .expect("read")
            .damaged
            .is_empty()
    );
}

/// Regression (queue.rs 660–667 before the redesign): a compaction whose rename
/// succeeded but whose directory fsync, or reopen, failed left the writer appending to
/// the old, unlinked file; those records were gone at restart.
#[test]
fn a_compaction_that_renamed_but_could_not_finish_loses_no_later_record() {
    for op in [Op::SyncDir, Op::Open] {
        let dir = Dir::new("renamed");
        let faults = Faulty::default();
        {
            let j = open(&dir.0, &faults).expect("open");
            j.append(&[queued("a", 1)]).expect("append");
            faults.fail(op, true);
            assert!(j.compact().is_err(), "{op:?}");
            // While the journal cannot be made whole, nothing is acknowledged.
            assert!(j.append(&[queued("b", 2)]).is_err(), "{op:?}");
            faults.fail(op, false);
            j.append(&[queued("c", 3)]).expect("append after the fault");
        }
        assert_eq!(reopen_pending(&dir.0), vec![1, 3], "{op:?}");
    }
}

/// Regression (queue.rs 617–623, upload.rs 449–557 before the redesign): a compaction
/// failing after the records were durable made `append` report an error, the uploader
/// retried a file already recorded as uploaded, and sent it again.
#[test]
fn an_append_is_ok_once_durable_even_when_the_compaction_after_it_fails() {
    let dir = Dir::new("durable");
    let faults = Faulty::default();
    {
        let j = open(&dir.0, &faults).expect("open");
        faults.fail(Op::Rename, true);
        for i in 0..(COMPACT_MIN_LINES + 10) {
            j.append(&[queued("a", i as u64)]).expect("durable, so Ok");
        }
        assert_eq!(
            j.read().pending[&FileRef::new("s", "a")].version.size,
            (COMPACT_MIN_LINES + 9) as u64
        );
        faults.fail(Op::Rename, false);
        // The compaction is tried again later and then succeeds.
        for i in 0..(COMPACT_MIN_LINES + 10) {
            j.append(&[queued("b", i as u64)]).expect("append");
        }
    }
    let text = std::fs::read_to_string(dir.0.join(JOURNAL_FILE)).expect("read");
    assert!(
        text.lines().count() < COMPACT_MIN_LINES,
        "compacted at last"
    );
    assert_eq!(
        reopen_pending(&dir.0),
        vec![
            (COMPACT_MIN_LINES + 9) as u64,
            (COMPACT_MIN_LINES + 9) as u64
        ]
    );
}

/// Regression (queue.rs 515, 542–548 before the redesign): creating the state dir and
/// the journal never fsynced the directory holding them.
#[test]
fn creating_the_state_dir_and_the_journal_fsyncs_their_directories() {
    let dir = Dir::new("create");
    let state = dir.0.join("state");
    let faults = Faulty::default();
    drop(open(&state, &faults).expect("open"));
    let synced = faults.dirs_synced.lock().expect("dirs").clone();
    assert!(synced.contains(&state), "{synced:?}");
    assert!(synced.contains(&dir.0), "{synced:?}");
    // And a failing directory fsync at creation is an error, not a silent risk.
    let other = dir.0.join("other");
    faults.fail(Op::SyncDir, true);
    let e = open(&other, &faults).err().expect("refused");
    assert!(e.to_string().contains("fsync directory"), "{e}");
}

#[test]
fn a_failed_fsync_is_not_acknowledged_and_the_file_is_rewritten_before_the_next_append() {
    let dir = Dir::new("fsync");
    let faults = Faulty::default();
    {
        let j = open(&dir.0, &faults).expect("open");
        j.append(&[queued("a", 1)]).expect("append");
        faults.fail(Op::SyncFile, true);
        let e = j.append(&[queued("b", 2)]).expect_err("fsync fails");
        assert!(e.to_string().contains("fsync"), "{e}");
        assert!(!j.read().pending.contains_key(&FileRef::new("s", "b")));
        faults.fail(Op::SyncFile, false);
        j.append(&[queued("c", 3)]).expect("append");
    }
    assert_eq!(reopen_pending(&dir.0), vec![1, 3]);
}

#[test]
fn registry_entries_the_scan_did_not_see_are_forgotten_on_disk_too() {
    let dir = Dir::new("unseen");
    let uploaded = |rel: &str| Record::Uploaded {
        file: FileRef::new("s", rel),
        version: Version {
            size: 1,
            mtime_ns: 7,
            ino: 0,
        },
        sha256: [1; 32],
        key: format!("k/{rel}"),
        etag: String::new(),
        at: 1,
    };
    let v = Version {
        size: 1,
        mtime_ns: 7,
        ino: 0,
    };
    let (j, _) = Journal::open(&dir.0, KeyScheme::default()).expect("open");
    j.append(&[uploaded("a"), uploaded("b")]).expect("append");
    assert_eq!(j.forget_unseen().expect("forget"), 0, "uploaded now: seen");
    drop(j);
    let (j, _) = Journal::open(&dir.0, KeyScheme::default()).expect("reopen");
    j.read().mark_seen(&FileRef::new("s", "a"), &v);
    assert_eq!(j.forget_unseen().expect("forget"), 1);
    drop(j);
    let r = Journal::read_only(&dir.0, KeyScheme::default()).expect("read");
    assert_eq!(r.state.registry_len(), 1);
    assert!(r.state.uploaded(&FileRef::new("s", "a")).is_some());
}

#[test]
fn invalid_records_are_refused_before_writing() {
    let dir = Dir::new("invalid");
    let (j, _) = Journal::open(&dir.0, KeyScheme::default()).expect("open");
    let bad = Record::Part {
        file: FileRef::new("s", "a"),
        upload_id: String::new(),
        n: 1,
        etag: "e".into(),
        input: None,
    };
    assert!(matches!(
        j.append(&[bad]),
        Err(JournalError::Invalid { .. })
    ));
}

/// Appends from many threads at once share fsyncs (group commit), and every append that
/// returned Ok, and only those, is in the journal after a reopen, also when a group's
/// fsync failed (then every append of that group failed).
#[test]
fn concurrent_appends_share_fsyncs_and_exactly_the_acknowledged_ones_survive() {
    let dir = Dir::new("group");
    let faults = Faulty::default();
    *faults.sync_delay.lock().expect("delay") = std::time::Duration::from_millis(3);
    let acknowledged = Mutex::new(Vec::new());
    let refused = std::sync::atomic::AtomicUsize::new(0);
    {
        let j = open(&dir.0, &faults).expect("open");
        let before = faults
            .files_synced
            .load(std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let (j, faults, acknowledged, refused) = (&j, &faults, &acknowledged, &refused);
                scope.spawn(move || {
                    for i in 0..40u64 {
                        let size = t * 1000 + i;
                        // Thread 0 makes fsyncs fail for a while in the middle.
                        if t == 0 && i == 15 {
                            faults.fail(Op::SyncFile, true);
                        }
                        if t == 0 && i == 22 {
                            faults.fail(Op::SyncFile, false);
                        }
                        match j.append(&[queued(&format!("f{size}"), size)]) {
                            Ok(()) => acknowledged.lock().expect("ack").push(size),
                            Err(_) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        // An uploader's next record comes after its next request.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                });
            }
        });
        let syncs = faults
            .files_synced
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        assert!(
            syncs < 320 / 2,
            "{syncs} fsyncs for 320 appends: no group commit"
        );
        let mut in_state: Vec<u64> = j.read().pending.values().map(|p| p.version.size).collect();
        in_state.sort_unstable();
        let mut acked = acknowledged.lock().expect("ack").clone();
        acked.sort_unstable();
        assert_eq!(
            in_state, acked,
            "the state holds exactly the acknowledged appends"
        );
    }
    assert!(
        refused.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "some appends failed"
    );
    let mut acked = acknowledged.into_inner().expect("ack");
    acked.sort_unstable();
    assert_eq!(
        reopen_pending(&dir.0),
        acked,
        "on disk: exactly the acknowledged appends"
    );
}
