//! Operational behaviour, end to end against s3s-fs: upload windows (with the test-only
//! clock knob), priorities, small files beside a large one, and disk management on a
//! real, small tmpfs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proxy::Proxy;
use common::*;

const MIB: usize = 1024 * 1024;
/// 2026-11-23, a Monday, 00:00 UTC.
const MONDAY: i64 = 1_795_392_000;
const NIGHTS: &str = r#","schedule":{"utc_offset":"+00:00","windows":[{"days":["mon","tue","wed","thu","fri"],"start":"20:00","end":"06:00"}]}"#;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The knob that makes the daemon's schedule see `at` as now.
fn clock_at(at: i64) -> String {
    (at - unix_now()).to_string()
}

fn key_of(setup: &Setup, src: &str, rel: &str) -> String {
    format!(
        "v001/{}/{src}/{rel}",
        mtime_date(&setup.source(src).join(rel))
    )
}

#[test]
fn closed_window_sends_nothing_and_uploads_start_when_it_opens_after_a_restart() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", NIGHTS);
    let path = setup.source("ros").join("day.log");
    write(&path, b"written during the day");
    age_file(&path, 3600);

    // Monday noon: outside the 20:00-06:00 window.
    let mut run = setup.command("run", SECRET_KEY);
    run.env(
        "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
        clock_at(MONDAY + 12 * 3600),
    );
    let log = std::fs::File::create(setup.dir.path().join("run.log")).expect("log");
    let mut child = run.stderr(log).spawn().expect("spawn");
    wait_until(20, "the file to be queued", || {
        setup.journal().contains(r#""t":"queued""#)
    });
    std::thread::sleep(Duration::from_secs(2));
    // Only the fleet's request listing goes on outside the windows.
    let uploads = || {
        let all = proxy.requests();
        all.into_iter()
            .filter(|r| !r.is_requests_listing())
            .collect::<Vec<_>>()
    };
    assert!(
        uploads().is_empty(),
        "no upload reaches the server outside a window"
    );
    assert!(proxy.requests().iter().any(|r| r.is_requests_listing()));
    let status = setup
        .command("status", SECRET_KEY)
        .arg("--json")
        .env(
            "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
            clock_at(MONDAY + 12 * 3600),
        )
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["window"]["open"], false, "{v}");
    assert_eq!(v["window"]["next_open"], "2026-11-23T20:00:00Z", "{v}");
    assert_eq!(v["pending"]["files"], 1);
    assert_eq!(v["daemon_running"], true);
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    assert!(uploads().is_empty());

    // Restart three seconds before the window opens: the queued file goes when it does.
    let started = Instant::now();
    let mut run = setup.command("run", SECRET_KEY);
    run.env(
        "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
        clock_at(MONDAY + 20 * 3600 - 3),
    );
    let mut child = run
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(30, "the upload once the window opens", || {
        proxy.requests().iter().any(|r| r.is_put_object())
    });
    let waited = uploads()[0].at.duration_since(started);
    assert!(
        waited >= Duration::from_millis(2000),
        "sent {waited:?} after start, before the window opened"
    );
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    assert_eq!(
        server.client().get(&key_of(&setup, "ros", "day.log")),
        b"written during the day"
    );
}

#[test]
fn window_closing_mid_multipart_pauses_at_a_part_boundary_and_resumes_in_the_next() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let s3 = r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":1"#;
    let setup = Setup::new(&proxy.endpoint(), &[("bags", "")], s3, NIGHTS);
    let path = setup.source("bags").join("night.mcap");
    let data = bytes(21 * MIB, 9); // 5 parts
    write(&path, &data);
    age_file(&path, 3600);
    proxy.set_delay(|r| r.part_number().map(|_| Duration::from_millis(1500)));

    // Tuesday 05:59:52: the Monday-night window closes in 8 s, mid-upload.
    let mut run = setup.command("run", SECRET_KEY);
    run.env(
        "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
        clock_at(MONDAY + 86_400 + 6 * 3600 - 8),
    );
    let log = std::fs::File::create(setup.dir.path().join("run.log")).expect("log");
    let mut child = run.stderr(log).spawn().expect("spawn");
    wait_until(30, "the pause", || setup.run_log().contains("paused with"));
    let parts_then = proxy
        .requests()
        .iter()
        .filter(|r| r.part_number().is_some())
        .count();
    std::thread::sleep(Duration::from_secs(3));
    let parts: Vec<u32> = proxy
        .requests()
        .iter()
        .filter_map(|r| r.part_number())
        .collect();
    assert_eq!(parts.len(), parts_then, "no part is started once paused");
    assert!((1..5).contains(&parts.len()), "paused part-way: {parts:?}");
    assert!(
        !proxy
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.query("uploadId").is_some()),
        "not completed"
    );
    assert!(
        !proxy.requests().iter().any(|r| r.method == "DELETE"),
        "never abandoned"
    );
    sigterm_and_wait(&mut child, Duration::from_secs(10));

    // Tuesday 19:59:58: the next window opens in 2 s; the upload resumes after a restart.
    proxy.set_delay(|_| None);
    let mut run = setup.command("run", SECRET_KEY);
    run.env(
        "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
        clock_at(MONDAY + 86_400 + 20 * 3600 - 2),
    );
    let mut child = run
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let key = key_of(&setup, "bags", "night.mcap");
    let client = server.client();
    wait_until(60, "the completed upload", || {
        client.metadata(&key).is_some()
    });
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    let mut sent: BTreeMap<u32, usize> = BTreeMap::new();
    for r in proxy.requests().iter().filter(|r| r.complete) {
        if let Some(n) = r.part_number() {
            *sent.entry(n).or_default() += 1;
        }
    }
    assert_eq!(
        sent,
        (1..=5).map(|n| (n, 1)).collect(),
        "each part sent exactly once across the pause"
    );
    assert_eq!(sha256_hex(&client.get(&key)), sha256_hex(&data));
}

#[test]
fn higher_priority_sources_go_first_then_the_oldest_file() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[
            ("low", r#","priority":0"#),
            ("high", r#","priority":2"#),
            ("mid", r#","priority":1"#),
        ],
        r#","concurrency":1"#,
        "",
    );
    for (src, ages) in [
        ("low", [500, 100]),
        ("high", [300, 900]),
        ("mid", [50, 700]),
    ] {
        for age in ages {
            let p = setup.source(src).join(format!("{src}-{age}.log"));
            write(&p, src.as_bytes());
            age_file(&p, age);
        }
    }
    assert!(setup.once().status.success());
    let order: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object())
        .map(|r| r.key().rsplit('/').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        order,
        [
            "high-900.log",
            "high-300.log",
            "mid-700.log",
            "mid-50.log",
            "low-500.log",
            "low-100.log"
        ],
        "by priority, then oldest first"
    );
}

#[test]
fn small_files_are_not_held_behind_large_uploads() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", r#","priority":5"#), ("logs", "")],
        r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":2"#,
        "",
    );
    // Two large files of higher priority, each part held 1 s: without a slot kept for
    // small files they would take both uploaders and every permit for seconds.
    // (Different contents: a second file equal to an uploaded one is a server-side copy.)
    for (i, name) in ["big1.mcap", "big2.mcap"].into_iter().enumerate() {
        let p = setup.source("bags").join(name);
        write(&p, &bytes(30 * MIB, 1 + i as u64));
        age_file(&p, 3600);
    }
    // Fresh small files: ready after the 2 s stability wait, while parts are in flight.
    for i in 0..5 {
        write(
            &setup.source("logs").join(format!("small{i}.log")),
            &bytes(2000, i),
        );
    }
    proxy.set_delay(|r| r.part_number().map(|_| Duration::from_secs(1)));
    assert!(setup.once().status.success());
    let reqs = proxy.requests();
    let completes: Vec<Instant> = reqs
        .iter()
        .filter(|r| r.method == "POST" && r.query("uploadId").is_some())
        .map(|r| r.at)
        .collect();
    let small: Vec<Instant> = reqs
        .iter()
        .filter(|r| r.is_put_object())
        .map(|r| r.at)
        .collect();
    assert_eq!((small.len(), completes.len()), (5, 2));
    let (first, last) = (small[0], small[4]);
    assert!(
        last < completes[1],
        "the small files went while a large upload was under way"
    );
    assert!(
        last.duration_since(first) < Duration::from_millis(900),
        "the small files went together, not one per finished part: {:?}",
        last.duration_since(first)
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn percent_used(&self) -> f64 {
        let out = Command::new("df")
            .args(["--output=used,avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<f64> = text
            .lines()
            .nth(1)
            .expect("df line")
            .split_whitespace()
            .map(|n| n.parse().expect("n"))
            .collect();
        nums[0] * 100.0 / (nums[0] + nums[1])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A setup whose sources live on a fresh 10 MiB tmpfs.
fn disk_setup(
    endpoint: &str,
    sources: &[(&str, &str)],
    disk: &str,
    extra: &str,
) -> (Setup, Tmpfs, PathBuf) {
    let setup = Setup::new(endpoint, &[], "", "");
    let mnt = setup.dir.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "10m");
    let srcs: Vec<String> = sources
        .iter()
        .map(|(name, more)| {
            let p = mnt.join(name);
            std::fs::create_dir_all(&p).expect("mkdir");
            format!(
                r#"{{"name":"{name}","path":{:?}{more}}}"#,
                p.to_str().expect("utf8")
            )
        })
        .collect();
    let text = format!(
        r#"{{"vehicle_id":"v001","state_dir":{:?},"stability_seconds":2,"sources":[{}],
            "s3":{{"bucket":"{BUCKET}","region":"{REGION}","endpoint":"{endpoint}","path_style":true}},
            "disk":{{"paths":[{:?}]{disk}}}{extra}}}"#,
        setup.state.to_str().expect("utf8"),
        srcs.join(","),
        mnt.to_str().expect("utf8"),
    );
    std::fs::write(&setup.config, text).expect("config");
    (setup, fs, mnt)
}

#[test]
fn cleanup_deletes_uploaded_files_oldest_first_until_below_the_threshold() {
    let server = Server::start(Kind::S3sFs);
    let (setup, fs, mnt) = disk_setup(
        &server.endpoint(),
        &[("logs", "")],
        r#","keep_uploaded_hours":1000,"cleanup_percent":50,"emergency_percent":99"#,
        "",
    );
    for i in 0..8 {
        let p = mnt.join(format!("logs/f{i}.log"));
        write(&p, &bytes(MIB, i));
        age_file(&p, 3600 * (10 - i)); // f0 oldest
    }
    assert!(fs.percent_used() > 75.0, "filled: {}", fs.percent_used());
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs.percent_used() < 50.0,
        "below the threshold after cleanup: {}",
        fs.percent_used()
    );
    let left: Vec<usize> = (0..8)
        .filter(|i| mnt.join(format!("logs/f{i}.log")).exists())
        .collect();
    assert!(
        !left.is_empty() && left.iter().copied().eq(left[0]..8),
        "the oldest went first; left: {left:?}"
    );
    assert_eq!(
        server.client().list().len(),
        8,
        "only uploaded files were deleted"
    );
    assert!(
        stderr(&out).contains("disk above cleanup_percent"),
        "each deletion says why"
    );
}

#[test]
fn unuploaded_files_are_deleted_only_with_the_flag_and_lowest_priority_first() {
    let server = Server::start(Kind::S3sFs);
    for flag in [false, true] {
        let (setup, fs, mnt) = disk_setup(
            &server.endpoint(),
            &[("low", r#","priority":0"#), ("high", r#","priority":1"#)],
            &format!(
                r#","cleanup_percent":40,"emergency_percent":60,"emergency_delete_unuploaded":{flag}"#
            ),
            NIGHTS,
        );
        for (src, n) in [("low", 4), ("high", 4)] {
            for i in 0..n {
                let p = mnt.join(format!("{src}/{src}{i}.log"));
                write(&p, &bytes(MIB, i));
                age_file(&p, 3600 * (10 - i));
            }
        }
        let before = fs.percent_used();
        assert!(before > 70.0, "filled: {before}");
        // Monday noon: the window is closed, so nothing is uploaded.
        let out = setup
            .command("once", SECRET_KEY)
            .env(
                "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS",
                clock_at(MONDAY + 12 * 3600),
            )
            .output()
            .expect("once");
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert_no_secrets(&err);
        let left = |src: &str| {
            (0..4)
                .filter(|i| mnt.join(format!("{src}/{src}{i}.log")).exists())
                .count()
        };
        if flag {
            assert!(
                fs.percent_used() < 60.0,
                "below emergency_percent: {}",
                fs.percent_used()
            );
            assert_eq!(
                left("high"),
                4,
                "higher priority kept while lower-priority files remain"
            );
            assert!(left("low") < 4);
            assert!(
                !mnt.join("low/low0.log").exists(),
                "the oldest low-priority file went first"
            );
            assert!(
                err.contains("NOT UPLOADED"),
                "each such deletion is logged: {err}"
            );
        } else {
            assert_eq!(
                (left("low"), left("high")),
                (4, 4),
                "nothing un-uploaded deleted without the flag"
            );
        }
        assert!(server.client().list().is_empty());
    }
}

#[test]
fn deferred_deletion_spares_other_sources_changed_files_and_symlinked_dirs() {
    let server = Server::start(Kind::S3sFs);
    let (setup, _fs, mnt) = disk_setup(
        &server.endpoint(),
        &[("own", ""), ("syslog", r#","delete_after_upload":false"#)],
        r#","keep_uploaded_hours":0"#,
        "",
    );
    let files = [
        "own/a.log",
        "own/changed.log",
        "own/dir/b.log",
        "syslog/messages",
    ];
    for f in files {
        write(&mnt.join(f), f.as_bytes());
        age_file(&mnt.join(f), 3600);
    }
    // First run without disk management: everything uploaded, nothing deleted.
    let cfg = std::fs::read_to_string(&setup.config).expect("config");
    let no_disk = cfg.replace(
        r#","keep_uploaded_hours":0"#,
        r#","keep_uploaded_hours":1000"#,
    );
    std::fs::write(&setup.config, &no_disk).expect("config");
    assert!(setup.once().status.success());
    assert!(files.iter().all(|f| mnt.join(f).exists()));
    assert_eq!(server.client().list().len(), 4);

    // changed.log: same size and mtime, other bytes. dir/: now a symlink to elsewhere
    // holding an identical b.log.
    let changed = mnt.join("own/changed.log");
    let mtime = std::fs::metadata(&changed)
        .expect("stat")
        .modified()
        .expect("mtime");
    std::fs::write(&changed, b"own/changed.lgo").expect("rewrite");
    std::fs::File::options()
        .write(true)
        .open(&changed)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime");
    let elsewhere = setup.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::copy(mnt.join("own/dir/b.log"), elsewhere.join("b.log")).expect("copy");
    let b_mtime = std::fs::metadata(mnt.join("own/dir/b.log"))
        .expect("stat")
        .modified()
        .expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(elsewhere.join("b.log"))
        .expect("open")
        .set_modified(b_mtime)
        .expect("mtime");
    std::fs::remove_dir_all(mnt.join("own/dir")).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, mnt.join("own/dir")).expect("symlink");

    std::fs::write(&setup.config, &cfg).expect("config");
    let out = setup.once();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        !mnt.join("own/a.log").exists(),
        "uploaded and kept 0 h: deleted"
    );
    assert!(
        mnt.join("syslog/messages").exists(),
        "delete_after_upload false: kept"
    );
    assert!(changed.exists(), "changed since its upload: kept");
    assert!(
        elsewhere.join("b.log").exists(),
        "never deleted through a symlink"
    );
    assert!(err.contains("kept for keep_uploaded_hours"), "{err}");
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn journal_records(setup: &Setup) -> Vec<serde_json::Value> {
    setup
        .journal()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("damaged line {l:?}: {e}")))
        .collect()
}

fn uploaded_records(setup: &Setup) -> usize {
    journal_records(setup)
        .iter()
        .filter(|r| r["t"] == "uploaded")
        .count()
}

#[test]
fn a_full_state_dir_is_a_clear_error_corrupts_nothing_and_recovers_when_space_returns() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let _fs = Tmpfs::mount(&setup.state, "1m");
    let mut child = setup.spawn_run();
    wait_until(20, "start-up", || {
        setup.run_log().contains("start-up scan done")
    });
    let filler = setup.state.join("filler");
    fill(&filler);
    let src = setup.source("ros");
    for i in 0..20 {
        write(
            &src.join(format!("f{i:02}.log")),
            format!("file {i}").as_bytes(),
        );
    }
    wait_until(30, "the disk-full error", || {
        setup.run_log().contains("No space left on device")
    });
    let log = setup.run_log();
    let line = log
        .lines()
        .find(|l| l.contains("No space left on device"))
        .expect("line");
    assert!(
        line.contains("journal.jsonl"),
        "the error names the file: {line}"
    );
    // Nothing acknowledged that was not written; what is there is whole.
    journal_records(&setup);
    assert_eq!(uploaded_records(&setup), 0);
    std::fs::remove_file(&filler).expect("free space");
    let client = server.client();
    wait_until(60, "recovery", || {
        client.list().len() == 20 && uploaded_records(&setup) == 20
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_eq!(uploaded_records(&setup), 20);
    let out = setup.once();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("stopped: 0 files uploaded"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_fsync_failure_is_never_taken_as_written() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let src = setup.source("ros");
    for i in 0..3 {
        let p = src.join(format!("f{i}.log"));
        write(&p, format!("file {i}").as_bytes());
        age_file(&p, 60);
    }
    let trigger = setup.dir.path().join("fail-fsync");
    std::fs::write(&trigger, b"").expect("trigger");
    let mut child = setup
        .command("run", SECRET_KEY)
        .env("TVM_UPLOAD_TEST_FAIL_FSYNC_WHILE", &trigger)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(setup.dir.path().join("run.log")).expect("log"))
        .spawn()
        .expect("run");
    wait_until(20, "the fsync error", || {
        setup.run_log().contains("injected fsync failure")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(uploaded_records(&setup), 0, "acted on an unsynced record");
    std::fs::remove_file(&trigger).expect("rm trigger");
    let client = server.client();
    wait_until(60, "recovery after fsync works again", || {
        uploaded_records(&setup) == 3
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_eq!(client.list().len(), 3);
    let log = setup.run_log();
    assert!(log.contains("fsync"), "{log}");
}

#[test]
fn an_unwritable_state_dir_is_refused_at_start_with_the_cause() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let p = setup.source("ros").join("a.log");
    write(&p, b"a");
    age_file(&p, 60);
    let fs = Tmpfs::mount(&setup.state, "1m");
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .expect("remount");
    assert!(ok.success());
    let out = setup.once();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        err.contains(setup.state.to_str().expect("utf8")),
        "names the state dir: {err}"
    );
    assert!(server.client().list().is_empty());
}

/// Issue 24 (1): above `cleanup_percent`, a log its writer holds open (O_APPEND, bursts
/// of lines) is uploaded but never deleted while it is open: `status` names it and the
/// process; once closed, its last version is uploaded and only then deleted. Every line
/// written ends up in S3.
#[test]
fn cleanup_never_deletes_a_log_its_writer_holds_open() {
    use std::io::Write;
    let server = Server::start(Kind::S3sFs);
    let (setup, fs, mnt) = disk_setup(
        &server.endpoint(),
        &[("app", ""), ("bulk", r#","delete_after_upload":false"#)],
        r#","keep_uploaded_hours":1000,"cleanup_percent":30,"emergency_percent":99"#,
        "",
    );
    write(&mnt.join("bulk/filler.bin"), &bytes(6 * MIB, 1));
    assert!(fs.percent_used() > 50.0, "filled: {}", fs.percent_used());
    let path = mnt.join("app/app.log");
    let mut log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let mut child = setup.spawn_run();
    let mut written = Vec::new();
    let mut named = false;
    for burst in 0..6 {
        for line in 0..20 {
            let text = format!("burst {burst} line {line} {}\n", "x".repeat(60));
            log.write_all(text.as_bytes()).expect("write");
            written.extend_from_slice(text.as_bytes());
        }
        std::thread::sleep(Duration::from_secs(3));
        let status = setup
            .command("status", SECRET_KEY)
            .arg("--json")
            .output()
            .expect("status");
        let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        let want = format!(
            "app/app.log: open for writing by process {}",
            std::process::id()
        );
        named |= json["disk_kept"].as_array().is_some_and(|k| {
            k.iter()
                .any(|l| l.as_str().is_some_and(|l| l.contains(&want)))
        });
    }
    assert!(path.exists(), "kept while open; log:\n{}", setup.run_log());
    drop(log);
    let client = server.client();
    wait_until(60, "the last version uploaded and then deleted", || {
        !path.exists()
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let run_log = setup.run_log();
    assert!(named, "status named the writer; log:\n{run_log}");
    assert!(run_log.contains("open for writing by process"), "{run_log}");
    let bodies: Vec<Vec<u8>> = client
        .list()
        .keys()
        .filter(|k| k.contains("/app/app.log"))
        .map(|k| client.get(k))
        .collect();
    assert!(
        bodies.contains(&written),
        "every line is in S3 ({} objects of app.log); log:\n{run_log}",
        bodies.len()
    );
}
