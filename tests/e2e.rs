//! End-to-end: the real binary against real S3 servers (s3s-fs checks SigV4, checksums
//! and Content-MD5; moto checks multipart semantics), through our counting proxy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::proxy::{Action, Proxy};
use common::*;

const MIB: usize = 1024 * 1024;
const MULTIPART: &str = r#","multipart_threshold":"5MiB","part_size":"5MiB""#;

fn key_of(setup: &Setup, src: &str, rel: &str) -> String {
    format!(
        "v001/{}/{src}/{rel}",
        mtime_date(&setup.source(src).join(rel))
    )
}

fn tree_uploads_exact_keys_bytes_and_metadata(kind: Kind) {
    let server = Server::start(kind);
    let setup = Setup::new(
        &server.endpoint(),
        &[("ros", r#","exclude":["*.active"]"#), ("terminal", "")],
        MULTIPART,
        "",
    );
    let ros = setup.source("ros");
    let wanted: Vec<(&str, &str, Vec<u8>)> = vec![
        ("ros", "a/b/deep.log", bytes(100, 1)),
        ("ros", "dir with space/ünïcödé +%20.log", bytes(777, 2)),
        ("ros", "empty.log", Vec::new()),
        ("ros", "bags/big.mcap", bytes(12 * MIB + 123, 3)),
        ("terminal", "session 1.log", bytes(4096, 4)),
    ];
    for (src, rel, data) in &wanted {
        write(&setup.source(src).join(rel), data);
        age_file(&setup.source(src).join(rel), 3600);
    }
    write(&ros.join(".hidden"), b"hidden");
    write(&ros.join(".cache/inside.log"), b"under a hidden dir");
    write(&ros.join("run.active"), b"excluded");
    write(&ros.join("x.tmp"), b"temporary");

    let out = setup.once();
    assert!(out.status.success(), "once failed: {}", stderr(&out));

    let client = server.client();
    let expected: BTreeMap<String, u64> = wanted
        .iter()
        .map(|(src, rel, data)| (key_of(&setup, src, rel), data.len() as u64))
        .collect();
    assert_eq!(
        client.list(),
        expected,
        "exactly the expected keys: nothing hidden, excluded or temporary"
    );
    for (src, rel, data) in &wanted {
        let key = key_of(&setup, src, rel);
        assert_eq!(
            sha256_hex(&client.get(&key)),
            sha256_hex(data),
            "bytes of {key}"
        );
        let meta = client.metadata(&key).expect("metadata");
        assert_eq!(
            meta.get("sha256"),
            Some(&sha256_hex(data)),
            "{key}: {meta:?}"
        );
        assert_eq!(meta.get("vehicle-id").map(String::as_str), Some("v001"));
        assert_eq!(meta.get("source").map(String::as_str), Some(*src));
        assert!(
            meta.get("mtime")
                .is_some_and(|m| m.ends_with('Z') && m.contains('T')),
            "{meta:?}"
        );
    }
}

#[test]
fn tree_uploads_exact_keys_bytes_and_metadata_s3s() {
    tree_uploads_exact_keys_bytes_and_metadata(Kind::S3sFs);
}

#[test]
fn tree_uploads_exact_keys_bytes_and_metadata_moto() {
    tree_uploads_exact_keys_bytes_and_metadata(Kind::Moto);
}

#[test]
fn growing_file_waits_until_quiet_for_the_stability_period() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", "");
    let path = setup.source("ros").join("growing.log");
    let mut run = setup.spawn_run();
    let mut last_append = Instant::now();
    for i in 0..12 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, format!("line {i}\n").as_bytes()).expect("append");
        last_append = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
    }
    let puts = || {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.is_put_object())
            .collect::<Vec<_>>()
    };
    wait_until(30, "the upload of the quiet file", || !puts().is_empty());
    let first = puts()[0].clone();
    let quiet_for = first.at.duration_since(last_append);
    // stability_seconds is 2; allow for mtime granularity a little under it.
    assert!(
        quiet_for >= Duration::from_millis(1900),
        "uploaded only {quiet_for:?} after the last append"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(puts().len(), 1, "uploaded once");
    assert_eq!(
        sha256_hex(&server.client().get(&first.key())),
        sha256_hex(&std::fs::read(&path).expect("read"))
    );

    // A clean SIGTERM stop exits 0 within a few seconds.
    sigterm_and_wait(&mut run, Duration::from_secs(5));
    assert_no_secrets(&setup.run_log());
}

fn kill9(child: &mut std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[test]
fn kill_9_midway_then_restart_uploads_nothing_twice_and_misses_nothing() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], r#","concurrency":1"#, "");
    let files = 40;
    for i in 0..files {
        let p = setup.source("ros").join(format!("d{}/f{i:02}.log", i % 3));
        write(&p, &bytes(1000 + i * 37, i as u64));
        age_file(&p, 3600);
    }
    // The 11th PUT is held in the proxy, so the kill lands with 10 acknowledged uploads
    // and one request in flight whose body never reaches the server.
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    proxy.set_delay(move |r| {
        (r.is_put_object() && s.fetch_add(1, Ordering::SeqCst) >= 10)
            .then(|| Duration::from_secs(30))
    });
    let mut run = setup.spawn_run();
    wait_until(60, "10 uploads and an 11th in flight", || {
        seen.load(Ordering::SeqCst) >= 11
    });
    kill9(&mut run);
    proxy.set_delay(|_| None);

    let out = setup.once();
    assert!(out.status.success(), "restart failed: {}", stderr(&out));

    let mut complete_puts: BTreeMap<String, usize> = BTreeMap::new();
    for r in proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object() && r.complete)
    {
        *complete_puts.entry(r.key()).or_default() += 1;
    }
    let twice: Vec<_> = complete_puts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "uploaded twice: {twice:?}");
    assert_eq!(server.client().list().len(), files, "every file is in S3");
    assert_eq!(complete_puts.len(), files);
}

/// `new_part_size`: the config's `part_size` changed before the restart (the upload
/// resumes at the size it began with: issue 24, point 6).
/// What changes between the kill and the restart.
enum Meanwhile<'a> {
    Nothing,
    /// The config's part size.
    PartSize(&'a str),
    /// The journal is as a version before CRC-32 parts wrote it (no `checksum` on
    /// `mp_started`): the upload goes on with `Content-MD5` parts.
    OlderJournal,
}

fn kill_9_mid_multipart_resumes_without_resending_done_parts(kind: Kind, meanwhile: Meanwhile) {
    let server = Server::start(kind);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", "")],
        &format!("{MULTIPART},\"concurrency\":1"),
        "",
    );
    let path = setup.source("bags").join("drive.mcap");
    let data = bytes(26 * MIB, 42); // 6 parts of 5 MiB, the last 1 MiB
    write(&path, &data);
    age_file(&path, 3600);
    proxy.set_delay(|r| {
        r.part_number()
            .is_some_and(|n| n >= 4)
            .then(|| Duration::from_secs(60))
    });
    let mut run = setup.spawn_run();
    let journaled_parts = || {
        setup
            .journal()
            .lines()
            .filter(|l| l.contains(r#""t":"part""#))
            .count()
    };
    wait_until(60, "three parts journaled and the fourth in flight", || {
        journaled_parts() >= 3 && proxy.requests().iter().any(|r| r.part_number() == Some(4))
    });
    kill9(&mut run);
    let done_before: BTreeSet<u32> = setup
        .journal()
        .lines()
        .filter(|l| l.contains(r#""t":"part""#))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["n"].as_u64().map(|n| n as u32))
        .collect();
    assert_eq!(done_before, BTreeSet::from([1, 2, 3]));
    proxy.set_delay(|_| None);
    proxy.clear();
    match meanwhile {
        Meanwhile::Nothing => {}
        Meanwhile::PartSize(size) => {
            let text = std::fs::read_to_string(&setup.config).expect("config");
            let changed =
                text.replace(r#""part_size":"5MiB""#, &format!(r#""part_size":"{size}""#));
            assert_ne!(text, changed);
            std::fs::write(&setup.config, changed).expect("config");
        }
        Meanwhile::OlderJournal => {
            let journal = setup.state.join("journal.jsonl");
            let text = setup.journal();
            let older = text.replace(r#","checksum":"crc32""#, "");
            assert_ne!(text, older, "a CRC-32 upload journaled");
            std::fs::write(&journal, older).expect("journal");
        }
    }

    let out = setup.once();
    assert!(out.status.success(), "restart failed: {}", stderr(&out));
    let resent: BTreeSet<u32> = proxy
        .requests()
        .iter()
        .filter(|r| r.complete)
        .filter_map(|r| r.part_number())
        .collect();
    assert_eq!(
        resent,
        BTreeSet::from([4, 5, 6]),
        "only the parts not journaled are sent"
    );
    let md5 = matches!(meanwhile, Meanwhile::OlderJournal);
    for r in proxy
        .requests()
        .iter()
        .filter(|r| r.part_number().is_some())
    {
        assert_eq!(
            (
                r.header("content-md5").is_some(),
                r.header("x-amz-checksum-crc32").is_some()
            ),
            (md5, !md5),
            "part {:?}: the checksum the upload was begun with",
            r.part_number()
        );
    }
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.query("uploadId").is_some()),
        "ListParts"
    );
    let key = key_of(&setup, "bags", "drive.mcap");
    assert_eq!(
        sha256_hex(&server.client().get(&key)),
        sha256_hex(&data),
        "byte-identical"
    );
}

/// A multipart upload cut by kill -9, and the file rewritten while the daemon was down:
/// the journaled upload is of a content that is gone. It is aborted on the server, not
/// resumed, and the new content goes whole under the key.
#[test]
fn kill_9_mid_multipart_then_a_rewrite_aborts_the_old_upload() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", "")],
        &format!("{MULTIPART},\"concurrency\":1"),
        "",
    );
    let path = setup.source("bags").join("drive.mcap");
    write(&path, &bytes(16 * MIB, 42));
    age_file(&path, 3600);
    proxy.set_delay(|r| {
        r.part_number()
            .is_some_and(|n| n >= 2)
            .then(|| Duration::from_secs(60))
    });
    let mut run = setup.spawn_run();
    wait_until(60, "a part journaled and the second in flight", || {
        setup.journal().contains(r#""t":"part""#)
            && proxy.requests().iter().any(|r| r.part_number() == Some(2))
    });
    kill9(&mut run);
    proxy.set_delay(|_| None);
    proxy.clear();
    let rewritten = bytes(16 * MIB, 43);
    write(&path, &rewritten);
    age_file(&path, 3600);
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    let aborted = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.query("uploadId").is_some())
        .count();
    assert_eq!(aborted, 1, "the old upload aborted: {}", stderr(&out));
    let key = key_of(&setup, "bags", "drive.mcap");
    assert_eq!(
        sha256_hex(&server.client().get(&key)),
        sha256_hex(&rewritten)
    );
}

/// The answer to CompleteMultipartUpload lost on the way: the upload is done on the
/// server. The daemon finds the key holding this very content and journals it as
/// uploaded; no part is sent again and no second object is made.
#[test]
fn a_lost_complete_answer_is_found_done_and_no_part_is_sent_again_moto() {
    let server = Server::start(Kind::Moto);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("bags", "")], MULTIPART, "");
    let path = setup.source("bags").join("drive.mcap");
    let data = bytes(12 * MIB, 7);
    write(&path, &data);
    age_file(&path, 3600);
    let lost = std::sync::atomic::AtomicBool::new(false);
    proxy.set_rule(move |r| {
        if r.is_complete() && !lost.swap(true, std::sync::atomic::Ordering::Relaxed) {
            Action::LoseAnswer
        } else {
            Action::Forward
        }
    });
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = proxy.requests();
    let parts: Vec<u32> = requests
        .iter()
        .filter(|r| r.complete)
        .filter_map(|r| r.part_number())
        .collect();
    assert_eq!(parts.len(), 3, "each part once: {parts:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.fault.as_deref() == Some("lost-answer"))
    );
    let key = key_of(&setup, "bags", "drive.mcap");
    assert_eq!(sha256_hex(&server.client().get(&key)), sha256_hex(&data));
    assert!(setup.journal().contains(r#""t":"uploaded""#));
    let listed: Vec<String> = server
        .client()
        .list()
        .into_keys()
        .filter(|k| k.starts_with(&key))
        .collect();
    assert_eq!(listed, std::slice::from_ref(&key), "one object, no ~2");
}

#[test]
fn kill_9_mid_multipart_resumes_without_resending_done_parts_s3s() {
    kill_9_mid_multipart_resumes_without_resending_done_parts(Kind::S3sFs, Meanwhile::Nothing);
}

#[test]
fn kill_9_mid_multipart_resumes_at_its_part_size_after_the_config_changed_it() {
    kill_9_mid_multipart_resumes_without_resending_done_parts(
        Kind::S3sFs,
        Meanwhile::PartSize("8MiB"),
    );
}

#[test]
fn kill_9_mid_multipart_resumes_without_resending_done_parts_moto() {
    kill_9_mid_multipart_resumes_without_resending_done_parts(Kind::Moto, Meanwhile::Nothing);
}

/// An upload begun by a version that sent `Content-MD5` parts goes on with them (its
/// journal has no `checksum`), each part's MD5 taken as it is sent.
#[test]
fn kill_9_mid_multipart_of_an_older_version_resumes_with_content_md5_parts() {
    kill_9_mid_multipart_resumes_without_resending_done_parts(Kind::Moto, Meanwhile::OlderJournal);
}

#[test]
fn wrong_secret_is_named_and_the_file_uploads_once_fixed() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let path = setup.source("ros").join("a.log");
    write(&path, b"payload");
    age_file(&path, 3600);

    let out = setup.once_with("not-the-secret");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY"),
        "says what to fix: {err}"
    );
    assert!(
        !err.contains("not-the-secret"),
        "the wrong secret is not logged either"
    );
    assert_eq!(
        err.matches("SignatureDoesNotMatch").count(),
        1,
        "logged once, not a storm: {err}"
    );
    assert!(
        setup.journal().contains(r#""t":"queued""#),
        "the file stays queued"
    );
    assert!(server.client().list().is_empty());

    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        server.client().get(&key_of(&setup, "ros", "a.log")),
        b"payload"
    );
}

#[test]
fn torn_journal_line_is_recovered_with_a_warning() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", "");
    for name in ["a.log", "b.log"] {
        write(&setup.source("ros").join(name), name.as_bytes());
        age_file(&setup.source("ros").join(name), 3600);
    }
    assert!(setup.once().status.success());
    let journal = setup.state.join("journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).expect("journal");
    text.push_str(r#"{"t":"queued","src":"ros","rel":"c.l"#);
    std::fs::write(&journal, text).expect("tear");
    write(&setup.source("ros").join("c.log"), b"c");
    age_file(&setup.source("ros").join("c.log"), 3600);
    proxy.clear();

    let out = setup.once();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("damaged") && err.contains("WARN"),
        "warns about the torn line: {err}"
    );
    let puts: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object())
        .map(|r| r.key())
        .collect();
    assert_eq!(puts.len(), 1, "only the new file is sent: {puts:?}");
    assert!(puts[0].ends_with("/ros/c.log"));
    for line in std::fs::read_to_string(&journal).expect("journal").lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every journal line is whole again");
    }
}

#[test]
fn wiped_state_dir_finds_objects_already_in_s3_by_sha256() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    for (name, len) in [("small.log", 300), ("big.bag", 6 * MIB)] {
        write(&setup.source("ros").join(name), &bytes(len, len as u64));
        age_file(&setup.source("ros").join(name), 3600);
    }
    assert!(setup.once().status.success());
    std::fs::remove_dir_all(&setup.state).expect("wipe state");
    // A third file appears; the first two are in S3 already.
    write(&setup.source("ros").join("new.log"), b"new");
    age_file(&setup.source("ros").join("new.log"), 3600);
    proxy.clear();

    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    // Only the new file is stored. A small file is sent as a conditional PUT (one
    // request where HEAD and PUT were two), which the server refuses for a key it has
    // (412) and a HEAD then finds the same content; a multipart one is looked at
    // first, so its parts never go.
    let stored: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" || r.method == "POST")
        .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| format!("{} {}", r.method, r.key()))
        .collect();
    assert_eq!(stored.len(), 1, "only the new file is stored: {stored:?}");
    assert!(stored[0].ends_with("/ros/new.log"));
    let refused: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.status == Some(412))
        .map(|r| r.key())
        .collect();
    assert!(
        refused.len() == 1 && refused[0].ends_with("/ros/small.log"),
        "{refused:?}"
    );
    assert!(
        !proxy
            .requests()
            .iter()
            .any(|r| r.target.contains("partNumber")),
        "no part of the big file is sent again"
    );
    assert!(stderr(&out).contains("already in S3"));
}

#[test]
fn new_subdirectories_and_moved_in_files_are_uploaded_while_running() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    let mut run = setup.spawn_run();
    let client = server.client();
    // Wait for the start-up scan to be over: a first file goes through.
    write(&setup.source("ros").join("first.log"), b"first");
    wait_until(30, "the first upload", || client.list().len() == 1);

    // A nested directory created in one go, its file written at once.
    write(&setup.source("ros").join("run_7/bags/deep/x.log"), b"deep");
    // A file written elsewhere, then moved in.
    let outside = setup.dir.path().join("outside.log");
    write(&outside, b"moved");
    std::fs::rename(&outside, setup.source("ros").join("run_7/moved.log")).expect("move in");
    wait_until(30, "the nested and moved-in files", || {
        client.list().len() == 3
    });
    let keys: Vec<String> = client.list().into_keys().collect();
    assert!(
        keys.iter()
            .any(|k| k.ends_with("/ros/run_7/bags/deep/x.log")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("/ros/run_7/moved.log")),
        "{keys:?}"
    );
    run.kill().expect("kill");
    run.wait().expect("reap");
    assert_no_secrets(&setup.run_log());
}

#[test]
fn file_deleted_before_its_upload_leaves_the_queue_with_a_log_line() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], r#","concurrency":1"#, "");
    for name in ["a.log", "b.log"] {
        write(&setup.source("ros").join(name), name.as_bytes());
        age_file(&setup.source("ros").join(name), 3600);
    }
    // Hold the first PUT so the second file is still queued when it is deleted.
    let first = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&first);
    proxy.set_delay(move |r| {
        (r.is_put_object() && f.fetch_add(1, Ordering::SeqCst) == 0).then(|| Duration::from_secs(3))
    });
    let mut run = setup.spawn_run();
    wait_until(30, "the first PUT", || first.load(Ordering::SeqCst) >= 1);
    let held = proxy
        .requests()
        .iter()
        .find(|r| r.is_put_object())
        .map(|r| r.key())
        .expect("a PUT");
    let other = if held.ends_with("a.log") {
        "b.log"
    } else {
        "a.log"
    };
    std::fs::remove_file(setup.source("ros").join(other)).expect("delete");
    wait_until(30, "the deletion to be logged", || {
        setup.run_log().contains("deleted before its upload")
    });
    run.kill().expect("kill");
    run.wait().expect("reap");
    assert_eq!(server.client().list().len(), 1);
    assert!(setup.journal().contains(r#""t":"dropped""#) || !setup.journal().contains(other));
}

#[test]
fn file_rewritten_mid_multipart_is_aborted_and_sent_again_whole() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", "")],
        &format!("{MULTIPART},\"concurrency\":1"),
        "",
    );
    let path = setup.source("bags").join("drive.mcap");
    let old = bytes(16 * MIB + 1, 7); // 4 parts
    write(&path, &old);
    age_file(&path, 3600);
    // Hold part 2 of the first upload while the file is rewritten in part 3's range.
    let held = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&held);
    proxy.set_delay(move |r| {
        (r.part_number() == Some(2) && h.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| Duration::from_secs(2))
    });
    let mut run = setup.spawn_run();
    wait_until(60, "part 2 in flight", || held.load(Ordering::SeqCst) >= 1);
    let mut new = old.clone();
    new[11 * MIB..11 * MIB + 4096].fill(0xAB);
    std::fs::write(&path, &new).expect("rewrite");

    let key = key_of(&setup, "bags", "drive.mcap");
    let client = server.client();
    wait_until(90, "the new version in S3", || {
        client
            .metadata(&key)
            .is_some_and(|m| m.get("sha256") == Some(&sha256_hex(&new)))
    });
    assert_eq!(
        sha256_hex(&client.get(&key)),
        sha256_hex(&new),
        "the object is the new version, whole"
    );
    let aborts = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.query("uploadId").is_some())
        .count();
    assert!(aborts >= 1, "the first upload was aborted");
    run.kill().expect("kill");
    run.wait().expect("reap");
    let log = setup.run_log();
    assert!(log.contains("changed during its upload"), "{log}");
    assert_no_secrets(&log);
}
