//! Real log lifecycles against real servers: logrotate (rename and copytruncate, dateext
//! with compression), files that never stop growing (with and without
//! `max_wait_seconds`), a bag written as `.active` then renamed, a file replaced with
//! the same size and mtime, a file rewritten in place or deleted during its multipart
//! upload, and a wiped state dir. Each checks, by content: every distinct content that
//! existed long enough to settle is in S3 exactly once, every object's `sha256`
//! metadata is its body's, and nothing was overwritten.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;

const MIB: usize = 1024 * 1024;
const MULTIPART: &str = r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":1"#;

/// Every object in the bucket: key → body.
fn objects(client: &Client) -> BTreeMap<String, Vec<u8>> {
    client
        .list()
        .keys()
        .map(|k| (k.clone(), client.get(k)))
        .collect()
}

/// Every object's `sha256` metadata is the SHA-256 of its body.
fn assert_sound(client: &Client) {
    for (key, body) in objects(client) {
        let meta = client.metadata(&key).expect("metadata");
        assert_eq!(
            meta.get("sha256").map(String::as_str),
            Some(sha256_hex(&body).as_str()),
            "{key}: metadata and body disagree"
        );
    }
}

/// The bucket holds exactly these contents (by key), each once.
fn assert_holds(client: &Client, expected: &[(&str, &[u8])]) {
    let got: BTreeMap<String, String> = objects(client)
        .into_iter()
        .map(|(k, b)| (k, sha256_hex(&b)))
        .collect();
    let want: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, b)| (k.to_string(), sha256_hex(b)))
        .collect();
    assert_eq!(got, want, "the bucket");
    assert_sound(client);
}

/// No key was created twice (a successful PUT or Complete on a key that had one).
fn assert_nothing_overwritten(proxy: &Proxy) {
    let mut created = BTreeMap::new();
    for r in proxy.requests() {
        let creates = (r.is_put_object() || (r.method == "POST" && r.query("uploadId").is_some()))
            && r.succeeded();
        if creates {
            *created.entry(r.key()).or_insert(0) += 1;
        }
    }
    for (key, n) in created {
        assert_eq!(n, 1, "{key} was written {n} times");
    }
}

/// A key of the vehicle's layout for a file of source `src` written today (the tests'
/// files are all written now, at UTC).
fn key(src: &str, rel: &str, path: &Path) -> String {
    key_for(src, rel, path)
}

fn wait_for(client: &Client, key: &str, body: &[u8], setup: &Setup) {
    let want = sha256_hex(body);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.list().contains_key(key) && sha256_hex(&client.get(key)) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never held the expected content; log:\n{}",
            setup.run_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn syslog_setup(proxy: &Proxy, extra_source: &str) -> Setup {
    let source = format!(r#","include":["messages*"]{extra_source}"#);
    Setup::new(&proxy.endpoint(), &[("syslog", &source)], "", "")
}

#[test]
fn logrotate_renames_send_each_content_once_and_never_overwrite() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let dir = setup.source("syslog");
    let client = server.client();
    let mut child = setup.spawn_run();
    let msg = |i: usize| format!("rotation {i} line\n").repeat(200 + i).into_bytes();
    write(&dir.join("messages"), &msg(0));
    let base = key("syslog", "messages", &dir.join("messages"));
    wait_for(&client, &base, &msg(0), &setup);
    // Size-based rotation, several times the same day, keeping three (rotate 3).
    for round in 1..=4 {
        let _ = std::fs::remove_file(dir.join("messages.3"));
        for i in (1..=2).rev() {
            let from = dir.join(format!("messages.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("messages.{}", i + 1))).expect("mv");
            }
        }
        std::fs::rename(dir.join("messages"), dir.join("messages.1")).expect("mv");
        write(&dir.join("messages"), &msg(round));
        wait_for(
            &client,
            &format!("{base}~{}", round + 1),
            &msg(round),
            &setup,
        );
    }
    std::thread::sleep(Duration::from_secs(3)); // anything further would show now
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let expected: Vec<(String, Vec<u8>)> = (0..=4)
        .map(|r| {
            let k = if r == 0 {
                base.clone()
            } else {
                format!("{base}~{}", r + 1)
            };
            (k, msg(r))
        })
        .collect();
    let expected: Vec<(&str, &[u8])> = expected.iter().map(|(k, b)| (k.as_str(), &b[..])).collect();
    assert_holds(&client, &expected);
    assert_nothing_overwritten(&proxy);
    let renamed_sent: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object() && r.key().contains("messages."))
        .map(|r| r.key())
        .collect();
    assert!(
        renamed_sent.is_empty(),
        "rotated files sent again: {renamed_sent:?}"
    );
    assert!(
        setup.run_log().contains("renamed from messages"),
        "{}",
        setup.run_log()
    );
}

#[test]
fn copytruncate_copies_on_the_server_and_keeps_both_contents() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let dir = setup.source("syslog");
    let client = server.client();
    let mut child = setup.spawn_run();
    let first = b"before the rotation\n".repeat(500);
    write(&dir.join("messages"), &first);
    let base = key("syslog", "messages", &dir.join("messages"));
    wait_for(&client, &base, &first, &setup);
    // copytruncate: copy (a new file), then truncate the original and keep writing.
    std::fs::copy(dir.join("messages"), dir.join("messages.1")).expect("cp");
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("messages"))
        .expect("open")
        .set_len(0)
        .expect("truncate");
    let second = b"after the rotation\n".repeat(300);
    write(&dir.join("messages"), &second);
    let copy_key = key("syslog", "messages.1", &dir.join("messages.1"));
    wait_for(&client, &copy_key, &first, &setup);
    wait_for(&client, &format!("{base}~2"), &second, &setup);
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let k2 = format!("{base}~2");
    assert_holds(
        &client,
        &[(&base, &first), (&copy_key, &first), (&k2, &second)],
    );
    assert_nothing_overwritten(&proxy);
    // The copy went by CopyObject: a PUT without a body.
    let copy_put = proxy
        .requests()
        .into_iter()
        .find(|r| r.is_put_object() && r.key() == copy_key && r.succeeded())
        .expect("the copy's request");
    assert_eq!(copy_put.content_length, 0, "the copy's bytes were sent");
    assert!(setup.run_log().contains("copied on the server"));
}

#[test]
fn dateext_rotation_with_compression_sends_the_gz_and_not_the_renamed_file() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let dir = setup.source("syslog");
    let client = server.client();
    let mut child = setup.spawn_run();
    let day = b"a day of logs\n".repeat(800);
    write(&dir.join("messages"), &day);
    let base = key("syslog", "messages", &dir.join("messages"));
    wait_for(&client, &base, &day, &setup);
    std::fs::rename(dir.join("messages"), dir.join("messages-20261122")).expect("mv");
    let next = b"the next day\n".repeat(100);
    write(&dir.join("messages"), &next);
    // compress (delaycompress off): gzip writes the .gz, then removes the original.
    let gz = bytes(4000, 77); // stands for the compressed bytes
    write(&dir.join("messages-20261122.gz"), &gz);
    std::fs::remove_file(dir.join("messages-20261122")).expect("rm");
    let gz_key = key(
        "syslog",
        "messages-20261122.gz",
        &dir.join("messages-20261122.gz"),
    );
    wait_for(&client, &gz_key, &gz, &setup);
    wait_for(&client, &format!("{base}~2"), &next, &setup);
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let k2 = format!("{base}~2");
    assert_holds(&client, &[(&base, &day), (&k2, &next), (&gz_key, &gz)]);
    assert_nothing_overwritten(&proxy);
}

/// Appends to `path` every `every` until `until`.
fn append_until(path: &Path, every: Duration, until: Instant) -> Vec<u8> {
    use std::io::Write;
    let mut all = std::fs::read(path).unwrap_or_default();
    let mut n = 0;
    while Instant::now() < until {
        let line = format!("line {n} at {:?}\n", Instant::now()).into_bytes();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open");
        f.write_all(&line).expect("append");
        all.extend_from_slice(&line);
        n += 1;
        std::thread::sleep(every);
    }
    all
}

#[test]
fn a_file_appended_forever_waits_and_status_says_why_then_goes_once() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let path = setup.source("syslog").join("messages");
    let mut child = setup.spawn_run();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            append_until(
                &path,
                Duration::from_millis(500),
                Instant::now() + Duration::from_secs(10),
            )
        })
    };
    std::thread::sleep(Duration::from_secs(7));
    let out = setup
        .command("status", SECRET_KEY)
        .arg("--json")
        .output()
        .expect("status");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let waiting = &report["waiting"][0];
    assert_eq!(waiting["path"], "messages", "{report}");
    assert_eq!(waiting["reason"], "growing", "{report}");
    assert!(
        waiting["seconds"].as_u64().is_some_and(|s| s >= 5),
        "{report}"
    );
    let human = setup
        .command("status", SECRET_KEY)
        .output()
        .expect("status");
    assert!(String::from_utf8_lossy(&human.stdout).contains("growing for"));
    assert!(
        proxy.requests().iter().all(|r| !r.is_put_object()),
        "sent while growing"
    );
    let all = writer.join().expect("writer");
    let client = server.client();
    wait_for(&client, &key("syslog", "messages", &path), &all, &setup);
    std::thread::sleep(Duration::from_secs(3));
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let k = key("syslog", "messages", &path);
    assert_holds(&client, &[(&k, &all)]);
}

#[test]
fn a_file_appended_every_few_seconds_is_not_sent_again_after_each_append() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let path = setup.source("syslog").join("messages");
    let mut child = setup.spawn_run();
    // Every 3 s, stability 2 s: each version alone looks stable.
    let all = append_until(
        &path,
        Duration::from_secs(3),
        Instant::now() + Duration::from_secs(15),
    );
    let client = server.client();
    let final_key = |client: &Client| {
        client
            .list()
            .keys()
            .find(|k| sha256_hex(&client.get(k)) == sha256_hex(&all))
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while final_key(&client).is_none() {
        assert!(Instant::now() < deadline, "{}", setup.run_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object())
        .count();
    assert!(
        puts <= 2,
        "{puts} PUTs: the first version and the last at most"
    );
    assert_sound(&client);
    assert_nothing_overwritten(&proxy);
}

#[test]
fn max_wait_seconds_sends_snapshots_of_a_growing_file_at_most_once_per_period() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, r#","max_wait_seconds":4"#);
    let path = setup.source("syslog").join("messages");
    let mut child = setup.spawn_run();
    let started = Instant::now();
    let all = append_until(
        &path,
        Duration::from_millis(400),
        Instant::now() + Duration::from_secs(14),
    );
    let client = server.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let bodies = || -> Vec<Vec<u8>> { objects(&client).into_values().collect() };
    while !bodies().contains(&all) {
        assert!(Instant::now() < deadline, "{}", setup.run_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let bodies = bodies();
    let snapshots: Vec<&Vec<u8>> = bodies.iter().filter(|b| **b != all).collect();
    assert!(
        !snapshots.is_empty(),
        "no snapshot in 14 s with max_wait_seconds 4"
    );
    // At most one per period while it grew, each a prefix of what followed.
    let periods = started.elapsed().as_secs() / 4 + 1;
    assert!(
        snapshots.len() as u64 <= periods,
        "{} snapshots",
        snapshots.len()
    );
    for s in &snapshots {
        assert!(
            all.starts_with(s),
            "a snapshot is the file's first bytes as they were"
        );
    }
    assert_sound(&client);
    assert_nothing_overwritten(&proxy);
}

/// Issue 24 (5): the `max_wait_seconds` clock is kept across restarts. A file growing
/// while the daemon is killed every 2.5 s (each run shorter than max_wait 4) still gets
/// its snapshot: a run counts the time from when the file started waiting in an earlier
/// run, not from its own start (0 snapshots before).
#[test]
fn max_wait_seconds_counts_from_when_the_file_started_waiting_across_restarts() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, r#","max_wait_seconds":4"#);
    let path = setup.source("syslog").join("messages");
    let until = Instant::now() + Duration::from_secs(13);
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || append_until(&path, Duration::from_millis(300), until))
    };
    let mut runs = 0;
    while Instant::now() + Duration::from_millis(500) < until {
        let mut child = setup.spawn_run();
        std::thread::sleep(Duration::from_millis(2500));
        let _ = child.kill();
        let _ = child.wait();
        runs += 1;
    }
    let all = writer.join().expect("writer");
    let client = server.client();
    let snapshots: Vec<Vec<u8>> = objects(&client).into_values().collect();
    assert!(
        !snapshots.is_empty(),
        "no snapshot of a file growing for 13 s over {runs} runs with max_wait_seconds 4:\n{}",
        setup.run_log()
    );
    for s in &snapshots {
        assert!(
            all.starts_with(s) && s.len() < all.len(),
            "a snapshot is a prefix"
        );
    }
    // A last run sends the file as it ended, and the state is sound.
    let mut child = setup.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !objects(&client).into_values().any(|b| b == all) {
        assert!(Instant::now() < deadline, "{}", setup.run_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_sound(&client);
    assert_nothing_overwritten(&proxy);
}

#[test]
fn a_bag_written_as_active_then_renamed_is_sent_once() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("ros", r#","exclude":["*.active"]"#)],
        "",
        "",
    );
    let dir = setup.source("ros");
    let mut child = setup.spawn_run();
    let bag = bytes(300_000, 9);
    write(&dir.join("run1.mcap.active"), &bag[..100_000]);
    std::thread::sleep(Duration::from_secs(1));
    write(&dir.join("run1.mcap.active"), &bag);
    std::fs::rename(dir.join("run1.mcap.active"), dir.join("run1.mcap")).expect("mv");
    let client = server.client();
    let k = key("ros", "run1.mcap", &dir.join("run1.mcap"));
    wait_for(&client, &k, &bag, &setup);
    std::thread::sleep(Duration::from_secs(3));
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_holds(&client, &[(&k, &bag)]);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.key().ends_with(".active"))
    );
}

#[test]
fn a_file_replaced_with_the_same_size_and_mtime_is_sent_under_a_new_key() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let dir = setup.source("syslog");
    let first = bytes(5000, 1);
    write(&dir.join("messages"), &first);
    age_file(&dir.join("messages"), 3600);
    assert!(setup.once().status.success());
    // A tool writes a temporary file and renames it over, keeping size and mtime.
    let mtime = std::fs::metadata(dir.join("messages"))
        .expect("stat")
        .modified()
        .expect("mtime");
    let second = bytes(5000, 2);
    write(&dir.join("messages.tmp"), &second);
    std::fs::File::options()
        .write(true)
        .open(dir.join("messages.tmp"))
        .expect("open")
        .set_modified(mtime)
        .expect("mtime");
    std::fs::rename(dir.join("messages.tmp"), dir.join("messages")).expect("mv");
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    let client = server.client();
    let k = key("syslog", "messages", &dir.join("messages"));
    let k2 = format!("{k}~2");
    assert_holds(&client, &[(&k, &first), (&k2, &second)]);
    assert_nothing_overwritten(&proxy);
}

#[test]
fn a_file_rewritten_in_place_with_its_mtime_put_back_mid_multipart_is_never_stored_mixed() {
    // s3s-fs does not check a part's Content-MD5: only the daemon's own check stands.
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    let path = setup.source("ros").join("drive.mcap");
    let v1 = bytes(15 * MIB, 3);
    write(&path, &v1);
    age_file(&path, 3600);
    let meta = std::fs::metadata(&path).expect("stat");
    proxy.set_delay(|r| r.part_number().map(|_| Duration::from_secs(1)));
    let mut child = setup.spawn_run();
    wait_until(60, "the first part on its way", || {
        proxy.requests().iter().any(|r| r.part_number() == Some(1))
    });
    // Rewrite the third part's bytes in place; put size and mtime back.
    let mut v2 = v1.clone();
    v2[11 * MIB..12 * MIB].copy_from_slice(&bytes(MIB, 4));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.seek(SeekFrom::Start(11 * MIB as u64)).expect("seek");
        f.write_all(&v2[11 * MIB..12 * MIB]).expect("rewrite");
        f.set_modified(meta.modified().expect("mtime"))
            .expect("mtime back");
    }
    proxy.set_delay(|_| None);
    let client = server.client();
    let k = key("ros", "drive.mcap", &path);
    wait_for(&client, &k, &v2, &setup);
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_holds(&client, &[(&k, &v2)]);
    assert!(
        setup
            .run_log()
            .contains("rewritten while its parts were sent"),
        "{}",
        setup.run_log()
    );
}

#[test]
fn a_file_deleted_during_its_multipart_upload_has_the_upload_aborted() {
    // moto lists multipart uploads in progress.
    let server = Server::start(Kind::Moto);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    let path = setup.source("ros").join("drive.mcap");
    write(&path, &bytes(15 * MIB, 5));
    age_file(&path, 3600);
    proxy.set_delay(|r| r.part_number().map(|_| Duration::from_secs(1)));
    let mut child = setup.spawn_run();
    wait_until(60, "the first part on its way", || {
        proxy.requests().iter().any(|r| r.part_number() == Some(1))
    });
    assert_eq!(server.multipart_uploads().len(), 1);
    std::fs::remove_file(&path).expect("rm");
    wait_until(60, "the deletion noticed", || {
        setup.run_log().contains("deleted before its upload")
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert!(
        server.multipart_uploads().is_empty(),
        "parts left on the server"
    );
    assert!(server.client().list().is_empty());
}

#[test]
fn a_wiped_state_dir_never_overwrites_and_sends_only_what_changed() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = syslog_setup(&proxy, "");
    let dir = setup.source("syslog");
    let (a, b1, b2) = (bytes(3000, 1), bytes(4000, 2), bytes(4500, 3));
    write(&dir.join("messages.a"), &a);
    write(&dir.join("messages.b"), &b1);
    for n in ["messages.a", "messages.b"] {
        age_file(&dir.join(n), 3600);
    }
    assert!(setup.once().status.success());
    std::fs::remove_dir_all(&setup.state).expect("wipe");
    write(&dir.join("messages.b"), &b2);
    age_file(&dir.join("messages.b"), 3600);
    proxy.clear();
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    let client = server.client();
    let ka = key("syslog", "messages.a", &dir.join("messages.a"));
    let kb = key("syslog", "messages.b", &dir.join("messages.b"));
    let kb2 = format!("{kb}~2");
    assert_holds(&client, &[(&ka, &a), (&kb, &b1), (&kb2, &b2)]);
    assert_nothing_overwritten(&proxy);
    let stored: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object() && r.succeeded())
        .map(|r| r.key())
        .collect();
    assert_eq!(stored, vec![kb2], "only the changed file is stored");
}

/// Issue 24 (2): a directory renamed inside a source while the daemon runs is a rename
/// of every file under it: nothing is sent or copied again, however often it moves, and
/// a file written in it afterwards goes under its new name.
#[test]
fn a_directory_renamed_inside_a_source_is_not_sent_again() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("ros", r#","recursive":true"#)],
        "",
        "",
    );
    let dir = setup.source("ros");
    std::fs::create_dir_all(dir.join("d1/deeper")).expect("mkdir");
    let (a, b) = (bytes(3000, 1), bytes(4000, 2));
    write(&dir.join("d1/a.log"), &a);
    write(&dir.join("d1/deeper/b.log"), &b);
    let ka = key("ros", "d1/a.log", &dir.join("d1/a.log"));
    let kb = key("ros", "d1/deeper/b.log", &dir.join("d1/deeper/b.log"));
    let mut child = setup.spawn_run();
    let client = server.client();
    wait_for(&client, &ka, &a, &setup);
    wait_for(&client, &kb, &b, &setup);
    for (from, to) in [("d1", "d2"), ("d2", "d3")] {
        std::fs::rename(dir.join(from), dir.join(to)).expect("mv");
        std::thread::sleep(Duration::from_secs(4));
    }
    // Events in the moved directory are its new name's.
    let c = bytes(2000, 3);
    write(&dir.join("d3/deeper/c.log"), &c);
    let kc = key("ros", "d3/deeper/c.log", &dir.join("d3/deeper/c.log"));
    wait_for(&client, &kc, &c, &setup);
    std::thread::sleep(Duration::from_secs(3));
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_holds(&client, &[(&ka, &a), (&kb, &b), (&kc, &c)]);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.header("x-amz-copy-source").is_none()),
        "nothing was copied on the server; log:\n{}",
        setup.run_log()
    );
    assert!(
        setup.run_log().contains("renamed from d2/a.log"),
        "{}",
        setup.run_log()
    );
}

/// Issue 24 (3): a file rewritten in place (`open("wb")`, one write) is a new version
/// each time, even when it is longer than the last: each settles on its own and goes
/// under the next `~N`, none is taken for growth and left waiting.
#[test]
fn a_file_rewritten_in_place_sends_every_version() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("state", "")], "", "");
    let dir = setup.source("state");
    let path = dir.join("summary.json");
    let versions: Vec<Vec<u8>> = (0..6)
        .map(|i| text(1000 * (i + 1), 10 + 2 * i as u64))
        .collect();
    let mut child = setup.spawn_run();
    for v in &versions {
        std::fs::write(&path, v).expect("rewrite");
        std::thread::sleep(Duration::from_secs(5));
    }
    std::thread::sleep(Duration::from_secs(2));
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let k = key("state", "summary.json", &path);
    let keys: Vec<String> = (0..versions.len())
        .map(|i| {
            if i == 0 {
                k.clone()
            } else {
                format!("{k}~{}", i + 1)
            }
        })
        .collect();
    let expected: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(&versions)
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_holds(&server.client(), &expected);
    assert_nothing_overwritten(&proxy);
}

/// Issue 24 (4): `once` while a log is appended 20 times a second, its mtimes an hour
/// behind the daemon's clock (written by another host, or before a clock jump), and a
/// slow upload keeping `once` busy: the log's age is trusted at first sight only; after
/// that it goes when the daemon has seen it unchanged, so it is sent at most twice (that
/// first look, and its last content), not once per upload slot.
#[test]
fn once_with_a_clock_ahead_of_the_mtimes_does_not_send_a_growing_log_again_and_again() {
    use std::io::Write;
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("app", "")], "", "");
    let dir = setup.source("app");
    write(&dir.join("big.bin"), &bytes(3 * MIB, 7));
    age_file(&dir.join("big.bin"), 3600);
    let live = dir.join("live.log");
    write(&live, b"start\n");
    age_file(&live, 3600);
    proxy.slow_bodies(512 * 1024);
    let writer = {
        let live = live.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::options()
                .append(true)
                .open(&live)
                .expect("open");
            let mut all = b"start\n".to_vec();
            for i in 0..120 {
                let line = format!("line {i}\n");
                f.write_all(line.as_bytes()).expect("append");
                all.extend_from_slice(line.as_bytes());
                let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
                f.set_modified(an_hour_ago).expect("mtime");
                std::thread::sleep(Duration::from_millis(50));
            }
            all
        })
    };
    let out = setup.once();
    let all = writer.join().expect("writer");
    assert!(out.status.success(), "{}", stderr(&out));
    let client = server.client();
    let bodies: Vec<Vec<u8>> = client
        .list()
        .keys()
        .filter(|k| k.contains("/app/live.log"))
        .map(|k| client.get(k))
        .collect();
    assert!(
        bodies.len() <= 2 && bodies.contains(&all),
        "{} objects of live.log, the last content among them: {}; log:\n{}",
        bodies.len(),
        bodies.contains(&all),
        stderr(&out)
    );
}

/// Issue 24 (6): `once` while a log never stops changing ends all the same, after
/// GROWING_FACTOR × `stability_seconds` (20 s here), naming the file left for the next
/// run; with `max_wait_seconds` it ends after a snapshot of it went.
#[test]
fn once_leaves_a_file_that_never_settles_for_the_next_run() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = Server::start(Kind::S3sFs);
    for (max_wait, snapshots) in [("", 0), (r#","max_wait_seconds":3"#, 1)] {
        let setup = Setup::new(&server.endpoint(), &[("app", max_wait)], "", "");
        let live = setup.source("app").join("live.log");
        write(&live, b"start\n");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::File::options()
                    .append(true)
                    .open(&live)
                    .expect("open");
                // At most a minute: without the bound `once` would wait for it.
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    f.write_all(b"a line\n").expect("append");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let started = Instant::now();
        let out = setup.once();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            took < Duration::from_secs(40),
            "once ended after {took:?}: {err}"
        );
        assert!(
            snapshots > 0
                || err.contains(
                    "1 files still changing after 20s are left for the next run: app:live.log"
                ),
            "{err}"
        );
        let client = server.client();
        let sent = client
            .list()
            .keys()
            .filter(|k| k.contains("/app/live.log"))
            .count();
        assert!(
            sent >= snapshots && (snapshots > 0 || sent == 0),
            "{sent} objects; {err}"
        );
    }
}

/// Issue 24 (5): a hard link is another name, a file of its own (as `cp` would make):
/// each name gets its object, whether the link was made before the upload or after it
/// (then, or when the content went this run, the second is a server-side copy).
#[test]
fn a_hard_link_is_a_file_of_its_own_made_before_or_after_the_upload() {
    let server = Server::start(Kind::S3sFs);
    let setup = Setup::new(
        &server.endpoint(),
        &[("app", "")],
        r#","concurrency":1"#,
        "",
    );
    let dir = setup.source("app");
    let (a, b) = (bytes(5000, 1), bytes(6000, 2));
    write(&dir.join("a.log"), &a);
    std::fs::hard_link(dir.join("a.log"), dir.join("z-link.log")).expect("ln");
    write(&dir.join("b.log"), &b);
    age_file(&dir.join("a.log"), 3600);
    age_file(&dir.join("b.log"), 3600);
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::hard_link(dir.join("b.log"), dir.join("b-link.log")).expect("ln");
    let out2 = setup.once();
    assert!(out2.status.success(), "{}", stderr(&out2));
    let k = |rel: &str| key("app", rel, &dir.join(rel));
    assert_holds(
        &server.client(),
        &[
            (&k("a.log"), &a),
            (&k("z-link.log"), &a),
            (&k("b.log"), &b),
            (&k("b-link.log"), &b),
        ],
    );
    let log = stderr(&out) + &stderr(&out2);
    assert!(!log.contains("before a restart"), "{log}");
}
