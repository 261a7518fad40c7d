//! Files that misbehave: changed, truncated, deleted or renamed mid-upload; unreadable;
//! FIFOs, sockets, devices and symlink loops; source directories deleted and recreated;
//! 10,000 files at once with an inotify queue overflow. Real daemon, real s3s-fs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;

const MULTIPART: &str = r#","multipart_threshold":"5MiB","part_size":"5MiB""#;

fn run_until(setup: &Setup, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let mut child = setup.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timed out waiting for {what}; log:\n{}", setup.run_log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_no_secrets(&setup.run_log());
}

#[test]
fn files_changed_truncated_deleted_or_renamed_mid_upload_never_leave_a_mixed_object() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    // A slow link so that every upload is still going when its file is touched.
    proxy.slow_bodies(1_000_000);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("ros", "")],
        &format!("{MULTIPART},\"concurrency\":8"),
        "",
    );
    let src = setup.source("ros");
    let v1: Vec<Vec<u8>> = (0..5).map(|i| bytes(11 << 20, 100 + i)).collect();
    let names = ["grow.mcap", "trunc.mcap", "gone.mcap", "old.mcap"];
    for (name, data) in names.iter().zip(&v1) {
        write(&src.join(name), data);
        age_file(&src.join(name), 60);
    }
    // A single PUT (below the multipart threshold) rewritten in place, same size.
    let small_v1 = bytes(3 << 20, 7);
    write(&src.join("inplace.log"), &small_v1);
    age_file(&src.join("inplace.log"), 60);

    let client = server.client();
    let mut child = setup.spawn_run();
    wait_until(60, "every upload in flight", || {
        let reqs = proxy.requests();
        names.iter().all(|n| {
            reqs.iter()
                .any(|r| r.key().ends_with(n) && r.part_number().is_some())
        }) && reqs
            .iter()
            .any(|r| r.key().ends_with("inplace.log") && r.is_put_object())
    });
    // Mid-upload: append, truncate, delete, rename, rewrite in place.
    let mut grown = v1[0].clone();
    grown.extend_from_slice(&bytes(1 << 20, 55));
    write(&src.join("grow.mcap"), &grown);
    let truncated = v1[1][..(1 << 20)].to_vec();
    write(&src.join("trunc.mcap"), &truncated);
    std::fs::remove_file(src.join("gone.mcap")).expect("rm");
    std::fs::rename(src.join("old.mcap"), src.join("new.mcap")).expect("mv");
    let small_v2 = bytes(3 << 20, 8);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("inplace.log"))
            .expect("open");
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&small_v2).expect("rewrite");
    }
    let expected: BTreeMap<String, String> = [
        ("grow.mcap", sha256_hex(&grown)),
        ("trunc.mcap", sha256_hex(&truncated)),
        ("new.mcap", sha256_hex(&v1[3])),
        ("inplace.log", sha256_hex(&small_v2)),
    ]
    .into_iter()
    .map(|(n, sha)| (key_for("ros", n, &src.join(n)), sha))
    .collect();
    // Every version ever seen in the bucket is one whole version of its file.
    let allowed: Vec<String> = v1
        .iter()
        .chain([&grown, &truncated, &small_v1, &small_v2])
        .map(|d| sha256_hex(d))
        .collect();
    proxy.clear_rule();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = client.list();
        let mut contents = Vec::new();
        for key in listed.keys() {
            let sha = sha256_hex(&client.get(key));
            assert!(allowed.contains(&sha), "{key} mixes two versions");
            contents.push((key.clone(), sha));
        }
        // Keys are write-once: a file's final content is at its key, or at `~N` of it
        // when an earlier version took the key.
        let done = expected.iter().all(|(k, sha)| {
            contents
                .iter()
                .any(|(key, s)| s == sha && (key == k || key.starts_with(&format!("{k}~"))))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled; log:\n{}",
            setup.run_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    assert_no_secrets(&log);
    // Every content is in the bucket once; an earlier whole version (the in-place file
    // before its rewrite, if it was completed first) keeps its own key.
    let mut seen = std::collections::BTreeSet::new();
    for key in client.list().keys() {
        let sha = sha256_hex(&client.get(key));
        assert!(seen.insert(sha), "{key}: a content stored twice");
    }
    // The deleted file's and the renamed-away file's multipart uploads were aborted.
    let aborted = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.query("uploadId").is_some())
        .map(|r| r.key())
        .collect::<Vec<_>>();
    for n in ["gone.mcap", "old.mcap"] {
        assert!(
            aborted.iter().any(|k| k.ends_with(n)),
            "{n}: upload not aborted ({aborted:?}); log:\n{log}"
        );
    }
}

/// `tvm-upload once` as the unprivileged user `nobody` (root reads every file).
fn once_as_nobody(setup: &Setup) -> std::process::Output {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c.arg(env!("CARGO_BIN_EXE_tvm-upload"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tvm-upload"))
    };
    c.arg("once")
        .arg("--config")
        .arg(&setup.config)
        .env_clear()
        .envs(common::passthrough_env())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", setup.dir.path())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let out = c.output().expect("once as nobody");
    assert_no_secrets(&stderr(&out));
    out
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn open_up(dir: &Path) {
    let ok = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(ok.success());
}

#[test]
fn an_unreadable_file_is_logged_and_retried_and_uploaded_once_readable() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let src = setup.source("ros");
    write(&src.join("ok.log"), b"readable");
    write(&src.join("locked.log"), b"not yet readable");
    age_file(&src.join("ok.log"), 60);
    age_file(&src.join("locked.log"), 60);
    std::fs::create_dir_all(&setup.state).expect("state");
    open_up(setup.dir.path());
    let mode = |m: &str| {
        Command::new("chmod")
            .arg(m)
            .arg(src.join("locked.log"))
            .status()
            .expect("chmod");
    };
    mode("000");
    let out = once_as_nobody(&setup);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("stays queued"), "{err}");
    let client = server.client();
    assert_eq!(client.list().len(), 1, "the readable file went");
    mode("644");
    let out = once_as_nobody(&setup);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<_> = client.list().into_keys().collect();
    assert!(keys.iter().any(|k| k.ends_with("locked.log")), "{keys:?}");
    assert_eq!(keys.len(), 2);
}

#[test]
fn fifos_sockets_devices_and_symlink_loops_are_skipped_without_hanging() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let src = setup.source("ros");
    let real = src.join("real.log");
    write(&real, b"the only regular file");
    age_file(&real, 60);
    let mk = |args: &[&str]| {
        let ok = Command::new(args[0]).args(&args[1..]).status().expect("mk");
        assert!(ok.success(), "{args:?}");
    };
    let p = |n: &str| src.join(n).to_str().expect("utf8").to_string();
    mk(&["mkfifo", &p("pipe.log")]);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock.log")).expect("socket");
    if is_root() {
        mk(&["mknod", &p("null.log"), "c", "1", "3"]);
    }
    std::os::unix::fs::symlink(&real, src.join("link.log")).expect("symlink");
    std::os::unix::fs::symlink(src.join("loop-b"), src.join("loop-a")).expect("symlink");
    std::os::unix::fs::symlink(src.join("loop-a"), src.join("loop-b")).expect("symlink");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("..", src.join("sub/up")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", src.join("zero.log")).expect("symlink");

    let started = Instant::now();
    let mut child = setup
        .command("once", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("once");
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "once hangs on a special file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("out");
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<_> = server.client().list().into_keys().collect();
    assert_eq!(keys.len(), 1, "only the regular file: {keys:?}");
    assert!(keys[0].ends_with("/ros/real.log"));

    // Running: a FIFO appearing does not block the watcher; a file after it still goes.
    let client = server.client();
    run_until(&setup, 30, "a file written after a new FIFO", || {
        if !src.join("pipe2.log").exists() {
            mk(&["mkfifo", &p("pipe2.log")]);
            write(&src.join("after.log"), b"after the fifo");
        }
        client.list().keys().any(|k| k.ends_with("after.log"))
    });
    assert_eq!(client.list().len(), 2);
}

#[test]
fn directories_deleted_and_recreated_including_a_source_root_are_watched_again() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let src = setup.source("ros");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    let client = server.client();
    let has = |name: &str| client.list().keys().any(|k| k.ends_with(name));
    let mut child = setup.spawn_run();
    let step = |what: &str, f: &dyn Fn(), name: &str| {
        f();
        let t = Instant::now();
        while !has(name) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{what}: {name} never uploaded; log:\n{}",
                setup.run_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    step(
        "first",
        &|| write(&src.join("sub/a.log"), b"a"),
        "sub/a.log",
    );
    step(
        "subdirectory deleted and recreated",
        &|| {
            std::fs::remove_dir_all(src.join("sub")).expect("rm");
            std::thread::sleep(Duration::from_millis(300));
            write(&src.join("sub/b.log"), b"b");
        },
        "sub/b.log",
    );
    step(
        "source root deleted and recreated",
        &|| {
            std::fs::remove_dir_all(&src).expect("rm root");
            std::thread::sleep(Duration::from_millis(300));
            write(&src.join("c.log"), b"c");
        },
        "/ros/c.log",
    );
    let old = setup.dir.path().join("ros.old");
    step(
        "source root moved away and a new one made",
        &|| {
            std::fs::rename(&src, &old).expect("mv root");
            std::thread::sleep(Duration::from_millis(300));
            write(&src.join("d.log"), b"d");
        },
        "/ros/d.log",
    );
    // The moved-away directory is not the source any more.
    write(&old.join("stray.log"), b"not in the source");
    std::thread::sleep(Duration::from_secs(4));
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    assert!(!has("stray.log"), "a file outside the source was uploaded");
    assert!(log.contains("is there again"), "{log}");
    assert_eq!(client.list().len(), 4);
}

#[test]
fn ten_thousand_files_at_once_through_an_inotify_overflow_are_all_uploaded() {
    const FILES: usize = 10_000;
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(
        &server.endpoint(),
        &[("ros", "")],
        r#","concurrency":8"#,
        "",
    );
    let src = setup.source("ros");
    // A tiny inotify queue for the daemon's instance (the limit is read when it calls
    // inotify_init), so that the burst overflows it for certain.
    let limit = "/proc/sys/fs/inotify/max_queued_events";
    let saved = std::fs::read_to_string(limit).ok();
    let lowered = is_root() && std::fs::write(limit, "64").is_ok();
    let mut child = setup.spawn_run();
    wait_until(20, "the start-up scan", || {
        setup.run_log().contains("start-up scan done")
    });
    if let (true, Some(s)) = (lowered, &saved) {
        std::fs::write(limit, s.trim()).expect("restore max_queued_events");
    }
    let started = Instant::now();
    for i in 0..FILES {
        let dir = src.join(format!("d{:02}", i % 50));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i:05}.log")), format!("file {i}\n")).expect("write");
    }
    let written = started.elapsed();
    let client = server.client();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = client.list().len();
        if n == FILES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {FILES} uploaded; log tail:\n{}",
            setup
                .run_log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let took = started.elapsed();
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    let overflowed = log.contains("inotify queue overflowed");
    println!(
        "10k files: written in {:.1}s, all {FILES} in S3 after {:.1}s; overflow {}",
        written.as_secs_f64(),
        took.as_secs_f64(),
        if overflowed {
            "seen and rescanned"
        } else {
            "not provoked (not root)"
        }
    );
    if lowered {
        assert!(
            overflowed,
            "the queue was 64 events: it must have overflowed"
        );
    }
}
