//! The kill loop: the daemon is SIGKILLed at random moments (a power cut, as far as its
//! files and the server can tell) and restarted, over and over, while files keep
//! arriving (some into a zstd-compressed source, decoded here to be checked), a log is appended to and rotated (logrotate's rename style) and another
//! grows, on a link slowed so that most kills land mid-upload. At the end every file is
//! in S3 exactly once and byte-identical, every rotated and final log content is there
//! once, no key was written twice, nothing hidden or excluded is there, the journal is
//! bounded and no part the server had stored was sent again. Issue 24 added three
//! lifecycles: a directory of uploaded files renamed again and again (each file stored
//! once, under one of its names), a state file rewritten in place every round (each
//! stored content one it had, its last one there), and a log the test holds open and
//! appends to while disk cleanup is on for its source (never deleted while open: its
//! last content, every line, is there).
//!
//! Slow (a few minutes): `make test-chaos`, which CI runs. `TVM_CHAOS_SEED` reproduces
//! a run's workload and kill schedule (the printed seed); `TVM_CHAOS_KILLS` sets the
//! number of kills (default 60).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::proxy::{Action, Proxy, Rng};
use common::*;

/// 5 MiB parts: S3's minimum, and what s3s-fs accepts.
const PART: usize = 5 << 20;

/// The logs that change: `syslog/messages`, appended to every round and rotated
/// (`messages` → `messages.1` → `messages.2` ...) every fourth; `ros/live.log`, appended
/// to every round. Every content they ever had is remembered.
#[derive(Default)]
struct Logs {
    rounds: usize,
    messages: Vec<u8>,
    live: Vec<u8>,
    /// Rotated away: `messages.N` holds the content rotated N rotations ago.
    rotated: Vec<Vec<u8>>,
    /// SHA-256 of every content either file ever had.
    versions: std::collections::BTreeSet<String>,
    /// `state/summary.json`, rewritten in place every round: its contents.
    summary: Vec<u8>,
    summary_versions: std::collections::BTreeSet<String>,
    /// `held/app.log`, held open by the test and appended to every round.
    held: Option<std::fs::File>,
    held_content: Vec<u8>,
    held_versions: std::collections::BTreeSet<String>,
    /// The trip directory in `ros` renamed every third round, and the contents of the
    /// files in it (by name).
    trip: usize,
    trip_files: BTreeMap<String, String>,
}

impl Logs {
    fn round(&mut self, setup: &Setup, rng: &mut Rng) {
        let syslog = setup.source("syslog");
        if self.rounds % 4 == 3 && !self.messages.is_empty() {
            for n in (1..=self.rotated.len()).rev() {
                std::fs::rename(
                    syslog.join(format!("messages.{n}")),
                    syslog.join(format!("messages.{}", n + 1)),
                )
                .expect("rotate");
            }
            std::fs::rename(syslog.join("messages"), syslog.join("messages.1")).expect("rotate");
            self.rotated.insert(0, std::mem::take(&mut self.messages));
        }
        self.rounds += 1;
        let line = bytes(200 + rng.below(2000) as usize, rng.next());
        self.messages.extend_from_slice(&line);
        write(&syslog.join("messages"), &self.messages);
        self.versions.insert(sha256_hex(&self.messages));
        self.live
            .extend_from_slice(&bytes(100 + rng.below(1000) as usize, rng.next()));
        write(&setup.source("ros").join("live.log"), &self.live);
        self.versions.insert(sha256_hex(&self.live));
        self.other_lifecycles(setup, rng);
    }

    /// The issue-24 lifecycles: a rewrite in place, a held-open log, a renamed directory.
    fn other_lifecycles(&mut self, setup: &Setup, rng: &mut Rng) {
        use std::io::Write;
        self.summary = text(500 + rng.below(3000) as usize, rng.next());
        std::fs::write(setup.source("state").join("summary.json"), &self.summary)
            .expect("rewrite in place");
        self.summary_versions.insert(sha256_hex(&self.summary));
        let held = self.held.get_or_insert_with(|| {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(setup.source("held").join("app.log"))
                .expect("open held log")
        });
        let line = text(50 + rng.below(400) as usize, rng.next());
        held.write_all(&line).expect("append held log");
        self.held_content.extend_from_slice(&line);
        self.held_versions.insert(sha256_hex(&self.held_content));
        let ros = setup.source("ros");
        if self.trip_files.is_empty() {
            std::fs::create_dir_all(ros.join("trip0/sub")).expect("mkdir trip");
            for (i, name) in ["a.log", "sub/b.log", "c.log"].iter().enumerate() {
                let data = bytes(1000 + 3000 * i, rng.next());
                write(&ros.join("trip0").join(name), &data);
                self.trip_files.insert(name.to_string(), sha256_hex(&data));
            }
        } else if self.rounds.is_multiple_of(3) {
            let (from, to) = (
                format!("trip{}", self.trip),
                format!("trip{}", self.trip + 1),
            );
            std::fs::rename(ros.join(from), ros.join(to)).expect("rename trip");
            self.trip += 1;
        }
    }

    /// Closes the held-open log (the end of its writer).
    fn close_held(&mut self) {
        self.held.take();
    }

    /// Whether a key is one of these logs' objects.
    fn owns(key: &str) -> bool {
        key.contains("/syslog/messages")
            || key.contains("/ros/live.log")
            || key.contains("/ros/trip")
            || key.contains("/state/summary.json")
            || key.contains("/held/app.log")
    }

    /// Every object of these logs is a content they had, once; every rotated content
    /// and both final contents are there.
    fn check(&self, objects: &BTreeMap<String, String>) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, sha) in objects.iter().filter(|(k, _)| Logs::owns(k)) {
            let had = if key.contains("/ros/trip") {
                self.trip_files
                    .iter()
                    .any(|(name, s)| s == sha && key.ends_with(&format!("/{name}")))
            } else if key.contains("/state/") {
                self.summary_versions.contains(sha)
            } else if key.contains("/held/") {
                self.held_versions.contains(sha)
            } else {
                self.versions.contains(sha)
            };
            assert!(had, "{key}: a content these logs never had");
            if let Some(other) = seen.insert(sha.clone(), key) {
                panic!("{key} and {other}: one content stored twice");
            }
        }
        for (i, content) in self.rotated.iter().enumerate() {
            assert!(
                seen.contains_key(&sha256_hex(content)),
                "rotation {i} is not in S3"
            );
        }
        assert!(
            seen.contains_key(&sha256_hex(&self.messages)),
            "the last messages is not in S3"
        );
        assert!(
            seen.contains_key(&sha256_hex(&self.live)),
            "the last live.log is not in S3"
        );
        for (name, sha) in &self.trip_files {
            assert!(seen.contains_key(sha), "trip file {name} is not in S3");
        }
        assert!(
            seen.contains_key(&sha256_hex(&self.summary)),
            "the last summary.json is not in S3"
        );
        assert!(
            seen.contains_key(&sha256_hex(&self.held_content)),
            "the held-open log's last content (every line) is not in S3"
        );
    }
}

struct Workload {
    rng: Rng,
    logs: Logs,
    setup_files: BTreeMap<String, String>,
    next: usize,
    multipart: usize,
    small: usize,
    /// Files sent zstd-compressed.
    compressed: usize,
    bytes: u64,
}

impl Workload {
    /// Writes one file into `source` (small, or a multipart one of 3-4 parts) and
    /// remembers its key and SHA-256. The `app` source compresses: its files are text,
    /// its multipart ones large enough for 2-4 parts of zstd.
    fn add(&mut self, setup: &Setup, source: &str, multipart: bool) {
        let n = self.next;
        self.next += 1;
        let compressed = source == "app";
        let len = if multipart && compressed {
            self.multipart += 1;
            8 * PART + self.rng.below(4 * PART as u64) as usize
        } else if multipart {
            self.multipart += 1;
            2 * PART + 1 + self.rng.below(2 * PART as u64) as usize
        } else {
            self.small += 1;
            match self.rng.below(10) {
                0 => 0,
                1..=6 => self.rng.below(64 << 10) as usize,
                _ => self.rng.below(1 << 20) as usize,
            }
        };
        // Some in subdirectories, created as needed.
        let rel = if n.is_multiple_of(3) || compressed && multipart {
            format!("run{}/f{n:04}.log", n % 7)
        } else {
            format!("f{n:04}.mcap")
        };
        let path = setup.source(source).join(&rel);
        let data = if compressed {
            text(len, self.rng.next())
        } else {
            bytes(len, self.rng.next())
        };
        write(&path, &data);
        self.bytes += len as u64;
        let key = key_for(source, &rel, &path);
        // `.mcap` is compressed already: sent as it is, even by `app`.
        let key = if compressed && rel.ends_with(".log") {
            self.compressed += 1;
            key + ".zst"
        } else {
            key
        };
        self.setup_files.insert(key, sha256_hex(&data));
    }

    /// Files that must never be uploaded: hidden, in hidden directories, temporary, and
    /// excluded by the `ros` source's pattern.
    fn add_never(&mut self, setup: &Setup) {
        let n = self.next;
        self.next += 1;
        for rel in [
            format!(".hidden{n}.log"),
            format!(".cache/c{n}.log"),
            format!("t{n}.tmp"),
            format!("w{n}.active"),
        ] {
            write(&setup.source("ros").join(rel), b"never upload me");
        }
    }
}

#[test]
#[ignore = "the kill-loop suite (minutes): make test-chaos"]
fn power_cuts_at_random_moments_lose_nothing_and_send_nothing_twice() {
    let seed: u64 = std::env::var("TVM_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let kills: usize = std::env::var("TVM_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    println!("chaos seed {seed} (TVM_CHAOS_SEED={seed} reproduces the workload and kill times)");

    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    // A slow link (~4 MB/s per connection, 20 ms per request) so that uploads span
    // several lifetimes of the daemon.
    proxy.set_rule(|r| {
        if r.content_length > 0 {
            Action::Slow {
                bytes_per_second: 4_000_000,
            }
        } else {
            Action::Delay(Duration::from_millis(20))
        }
    });
    let setup = Setup::new(
        &proxy.endpoint(),
        &[
            ("ros", r#","exclude":["*.active"]"#),
            ("syslog", ""),
            ("app", r#","compress":"zstd""#),
            ("state", ""),
            ("held", ""),
        ],
        r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":3"#,
        "",
    );
    // Disk cleanup on, for the held-open log's source only (every filesystem is above
    // 1.5% here, so it deletes whatever it may of that source as soon as it is uploaded).
    let logs_root = setup.dir.path().join("logs");
    let config = std::fs::read_to_string(&setup.config).expect("config");
    let config = config
        .replace(r#""path":"#, r#""delete_after_upload":false,"path":"#)
        .replace(
            r#"{"name":"held","delete_after_upload":false,"#,
            r#"{"name":"held","#,
        );
    let config = format!(
        r#"{},"disk":{{"paths":[{:?}],"cleanup_percent":1.5,"emergency_percent":2,"keep_uploaded_hours":1000}}}}"#,
        config.trim_end().strip_suffix('}').expect("a JSON object"),
        logs_root.to_str().expect("utf8")
    );
    std::fs::write(&setup.config, &config).expect("config");
    let config = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        config.replace(r#""stability_seconds":2"#, r#""stability_seconds":1"#),
    )
    .expect("config");

    let mut w = Workload {
        rng: Rng::new(seed),
        logs: Logs::default(),
        setup_files: BTreeMap::new(),
        next: 0,
        multipart: 0,
        small: 0,
        compressed: 0,
        bytes: 0,
    };
    for i in 0..80 {
        let source = ["syslog", "ros", "app", "ros"][i % 4];
        w.add(&setup, source, false);
    }
    for _ in 0..5 {
        w.add(&setup, "ros", true);
    }
    for _ in 0..2 {
        w.add(&setup, "app", true);
    }
    w.add_never(&setup);

    let mut kill_rng = Rng::new(seed ^ 0x5EED);
    let started = Instant::now();
    let mut early_kills = 0;
    let mut mid_transfer = 0;
    let mut history = String::new();
    for k in 0..kills {
        let mut child = setup.spawn_run();
        // One kill in ten during start-up (journal replay, compaction, scan); the rest
        // anywhere in 0.2-2.5 s, mostly mid-transfer.
        let life = if kill_rng.chance(0.1) {
            early_kills += 1;
            Duration::from_millis(kill_rng.below(150))
        } else {
            Duration::from_millis(200 + kill_rng.below(2300))
        };
        // Half the time new files arrive while it runs, otherwise while it is down.
        let while_running = kill_rng.chance(0.5);
        std::thread::sleep(life / 2);
        if while_running {
            add_batch(&mut w, &setup, k);
        }
        std::thread::sleep(life / 2);
        // The power cut: the link goes down with the computer (what its kernel had
        // buffered is not sent on after the process dies), then the process.
        if proxy.in_flight() > 0 {
            mid_transfer += 1;
        }
        proxy.cut();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // A vehicle takes longer to boot than the server to finish what had reached it.
        proxy.wait_idle(Duration::from_secs(10));
        let log = setup.run_log();
        assert_no_secrets(&log);
        // Every life's log, for a failure's post-mortem (kept when the test fails).
        history.push_str(&format!("==== life {k}\n{log}"));
        let _ = std::fs::write(setup.dir.path().join("all-runs.log"), &history);
        if !while_running {
            add_batch(&mut w, &setup, k);
        }
    }
    let loop_time = started.elapsed();
    assert!(
        setup.source("held").join("app.log").exists(),
        "the held-open log was deleted while open"
    );
    assert!(
        history.contains("held/app.log: open for writing by process"),
        "cleanup never had the held-open log to keep"
    );
    w.logs.close_held();

    // Power back for good: `once` finishes what is left.
    let drained = Instant::now();
    let out = setup.once();
    assert!(out.status.success(), "final once failed:\n{}", stderr(&out));
    let drain_time = drained.elapsed();

    let client = server.client();
    let listed = client.list();
    let objects: BTreeMap<String, String> = listed
        .keys()
        .map(|k| (k.clone(), sha256_hex(&decoded(k, client.get(k)))))
        .collect();
    w.logs.check(&objects);
    let count = |part: &str| objects.keys().filter(|k| k.contains(part)).count();
    println!(
        "chaos: trip directory renamed {} times, {} objects of its 3 files; summary.json rewritten {} times, {} objects; held-open log: {} objects",
        w.logs.trip,
        count("/ros/trip"),
        w.logs.rounds,
        count("/state/summary.json"),
        count("/held/app.log")
    );
    let files_only: BTreeMap<String, String> = objects
        .into_iter()
        .filter(|(k, _)| !Logs::owns(k))
        .collect();
    assert_eq!(
        files_only.keys().collect::<Vec<_>>(),
        w.setup_files.keys().collect::<Vec<_>>(),
        "the bucket's files"
    );
    let mut bytes = 0;
    for (key, sha) in &w.setup_files {
        assert_eq!(&files_only[key], sha, "{key} is not byte-identical");
        bytes += listed[key];
    }

    // Exactly once, as the server saw it: one successful object-creating request per
    // key, and no part stored twice (by key and number, across upload ids).
    let reqs = proxy.requests();
    let mut creates: HashMap<String, usize> = HashMap::new();
    let mut parts: HashMap<(String, u32), usize> = HashMap::new();
    for r in reqs.iter().filter(|r| r.succeeded()) {
        if r.is_put_object() || r.is_complete() {
            *creates.entry(r.key()).or_default() += 1;
        }
        if let Some(n) = r.part_number() {
            *parts.entry((r.key(), n)).or_default() += 1;
        }
    }
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    let resent: usize = parts.values().map(|n| n - 1).sum();
    let part_total = parts.len();

    let journal = setup.journal();
    let journal_lines = journal.lines().count();
    let files = w.setup_files.len();
    println!(
        "chaos: {kills} SIGKILLs ({early_kills} during start-up, {mid_transfer} with requests in flight) over {:.0}s, then {:.1}s to drain",
        loop_time.as_secs_f64(),
        drain_time.as_secs_f64()
    );
    println!(
        "chaos: {files} files ({} small, {} multipart, {} zstd-compressed, {part_total} parts), {bytes} bytes stored, verified by SHA-256 (decoded)",
        w.small, w.multipart, w.compressed
    );
    println!(
        "chaos: messages appended {} times and rotated {} times, live.log appended {} times; {} versions, each stored at most once, every rotation and last content present",
        w.logs.rounds,
        w.logs.rotated.len(),
        w.logs.rounds,
        w.logs.versions.len()
    );
    println!(
        "chaos: {} requests, {} objects created more than once, {resent} stored parts sent again",
        reqs.len(),
        twice.len()
    );
    println!(
        "chaos: journal {journal_lines} lines, {} bytes",
        journal.len()
    );
    if !twice.is_empty() || resent > 0 {
        // What the server saw for the keys in question, for the failure message.
        for r in &reqs {
            let k = r.key();
            let dup_part = r
                .part_number()
                .is_some_and(|n| parts.get(&(k.clone(), n)).is_some_and(|c| *c > 1));
            if creates.get(&k).is_some_and(|c| *c > 1) || dup_part {
                println!(
                    "  {:>7.3}s {} {k} part={:?} upload={:?} status={:?} fault={:?}",
                    r.at.duration_since(started).as_secs_f64(),
                    r.method,
                    r.query("partNumber"),
                    r.query("uploadId")
                        .map(|u| u.chars().take(8).collect::<String>()),
                    r.status,
                    r.fault
                );
            }
        }
    }
    assert!(
        w.multipart >= 10 && files >= 200 && w.compressed >= 20,
        "workload too small"
    );
    assert!(twice.is_empty(), "uploaded more than once: {twice:?}");
    assert_eq!(resent, 0, "parts the server had stored were sent again");
    // Bounded: what the live state needs (a few records per file, one per part) plus
    // the records of uploads cut short, not a record per restart per file.
    let bound = 4 * files + 2 * part_total + 10 * kills;
    assert!(
        journal_lines <= bound,
        "journal grew to {journal_lines} lines (bound {bound})"
    );
}

/// New files between two kills: three small ones (one compressed), a multipart one every
/// sixth time and a compressed one every twelfth; the logs take a round.
fn add_batch(w: &mut Workload, setup: &Setup, k: usize) {
    w.logs.round(setup, &mut w.rng);
    for source in ["syslog", "ros", "app"] {
        w.add(setup, source, false);
    }
    if k % 6 == 5 {
        w.add(setup, "ros", true);
    }
    if k % 12 == 11 {
        w.add(setup, "app", true);
    }
    if k.is_multiple_of(10) {
        w.add_never(setup);
    }
}
