//! On-demand requests, end to end against s3s-fs (SPEC.md, "Links, byte budgets and
//! on-demand requests"): `tvm-upload request` and the fleet's request objects pull a
//! time slice of files through a closed upload window, each answered once, across
//! restarts and a SIGKILL.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::proxy::{Proxy, unix_now};
use common::*;

/// A schedule whose one window (a minute, every day) is twelve hours away: closed for
/// the whole test, whatever the time it runs.
fn closed_window() -> String {
    let minute = (unix_now().rem_euclid(86_400) / 60 + 720) % 1440;
    let hhmm = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
    format!(
        r#","schedule":{{"utc_offset":"+00:00","windows":[{{"start":"{}","end":"{}"}}]}}"#,
        hhmm(minute),
        hhmm(minute + 1)
    )
}

/// Files in `bags` and `logs`, with mtimes hours ago: (source, name, hours ago).
const FILES: [(&str, &str, u64); 6] = [
    ("bags", "before.mcap", 5),
    ("bags", "in-1.mcap", 3),
    ("bags", "in-2.mcap", 2),
    ("bags", "after.mcap", 0),
    ("logs", "in-3.log", 2),
    ("logs", "before.log", 6),
];

fn make_files(setup: &Setup) {
    for (i, (src, name, hours)) in FILES.iter().enumerate() {
        let path = setup.source(src).join(name);
        write(&path, &bytes(4096 + i, i as u64));
        age_file(&path, hours * 3600 + 60);
    }
}

/// The objects in the bucket under the vehicle's dated keys: `source/name`.
fn uploaded(server: &Server) -> Vec<String> {
    let mut v: Vec<String> = server
        .client()
        .list()
        .into_keys()
        .filter(|k| !k.contains("/.requests/"))
        .filter_map(|k| {
            let parts: Vec<&str> = k.splitn(3, '/').collect();
            parts.get(2).map(|s| s.to_string())
        })
        .collect();
    v.sort();
    v
}

fn request(setup: &Setup, args: &[&str]) -> std::process::Output {
    setup
        .command("request", SECRET_KEY)
        .args(args)
        .output()
        .expect("request")
}

fn answers(setup: &Setup) -> Vec<serde_json::Value> {
    let dir = setup.state.join("requests/answered");
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|v| v["id"].as_str().unwrap_or("").to_string());
    out
}

fn spawn(setup: &Setup, log: &str) -> Child {
    let log = std::fs::File::create(setup.dir.path().join(log)).expect("log");
    setup
        .command("run", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn run")
}

fn read(setup: &Setup, log: &str) -> String {
    std::fs::read_to_string(setup.dir.path().join(log)).unwrap_or_default()
}

/// A request from the command line: with the window closed, exactly the slice's files
/// (its time span, its source) go; the rest stay queued. Bad requests are refused
/// with their cause and leave nothing behind.
#[test]
fn a_request_sends_exactly_its_slice_through_a_closed_window() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", ""), ("logs", "")],
        "",
        &closed_window(),
    );
    make_files(&setup);
    for (args, says) in [
        (&["--since", "-4h"][..], "request needs --since and --until"),
        (&["--since", "-1h", "--until", "-4h"], "is before since"),
        (
            &["--since", "yesterday", "--until", "now"],
            "\"yesterday\" is not a time",
        ),
        (
            &["--since", "-4h", "--until", "now", "--source", "video"],
            "no source named \"video\"",
        ),
    ] {
        let out = request(&setup, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(!setup.state.join("requests").exists() || answers(&setup).is_empty());

    let mut child = spawn(&setup, "run.log");
    wait_until(30, "six files queued", || {
        setup.journal().matches(r#""t":"queued""#).count() >= 6
    });
    std::thread::sleep(Duration::from_secs(1));
    let puts = || {
        proxy
            .requests()
            .iter()
            .filter(|r| r.is_put_object())
            .count()
    };
    assert_eq!(puts(), 0, "the window is closed");

    let out = request(
        &setup,
        &[
            "--since",
            "-4h",
            "--until",
            "-90m",
            "--source",
            "bags",
            "--note",
            "hard brake",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("in bags"));
    wait_until(30, "the request answered", || !answers(&setup).is_empty());
    let a = &answers(&setup)[0];
    assert_eq!(
        (a["matched"].as_u64(), a["uploaded"].as_u64()),
        (Some(2), Some(2)),
        "{a}"
    );
    assert_eq!(a["pending"], 0, "{a}");
    assert_eq!(a["note"], "hard brake");
    assert_eq!(uploaded(&server), ["bags/in-1.mcap", "bags/in-2.mcap"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(uploaded(&server).len(), 2, "the rest waits for the window");
    assert_eq!(puts(), 2);
    let s = setup.status_json();
    assert_eq!(s["requests"], serde_json::json!([]), "{s}");
    assert_eq!(s["pending"]["files"], 4, "{s}");
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    let log = setup.run_log();
    assert!(log.contains("goes first (hard brake)"), "{log}");
    assert!(log.contains("done, 2 of its 2 files in S3"), "{log}");
}

/// A request made while the daemon is down is kept and taken at its start; a SIGKILL
/// mid-request loses nothing: after the restart every file of the slice is in S3 once
/// and the request is answered once.
#[test]
fn a_request_made_while_down_survives_a_kill_mid_way() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let s3 = r#","concurrency":1"#;
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("bags", ""), ("logs", "")],
        s3,
        &closed_window(),
    );
    make_files(&setup);
    let out = request(&setup, &["--since", "-4h", "--until", "-1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = setup.status_json();
    assert_eq!(s["requests"][0]["origin"], "local", "{s}");
    assert!(s["requests"][0].get("pending").is_none(), "{s}");
    let human = setup
        .command("status", SECRET_KEY)
        .output()
        .expect("status");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("taken at the daemon's next start"),
        "{human}"
    );

    proxy.set_delay(|r| r.is_put_object().then_some(Duration::from_millis(1500)));
    let mut child = spawn(&setup, "run.log");
    wait_until(30, "a first file of the slice", || {
        uploaded(&server).len() == 1
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(answers(&setup).is_empty(), "not done yet");

    proxy.set_delay(|_| None);
    let mut child = spawn(&setup, "run2.log");
    wait_until(30, "the request answered", || !answers(&setup).is_empty());
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    assert_eq!(
        uploaded(&server),
        ["bags/in-1.mcap", "bags/in-2.mcap", "logs/in-3.log"]
    );
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.is_put_object())
        .count();
    assert!(puts <= 4, "{puts} PUTs for 3 files and one cut short");
    let a = answers(&setup);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["uploaded"], 3, "{a:?}");
    assert!(read(&setup, "run2.log").contains("done, 3 of its 3 files"));
}

/// The fleet's request objects (put with boto3): each is acted on and answered with
/// `{id}.done.json` beside it, a malformed one with its error, and neither again after
/// a restart.
#[test]
fn a_fleet_request_is_answered_once_and_a_malformed_one_named() {
    let server = Server::start(Kind::S3sFs);
    let top = format!(r#"{},"requests":{{"poll_seconds":1}}"#, closed_window());
    let setup = Setup::new(&server.endpoint(), &[("bags", ""), ("logs", "")], "", &top);
    make_files(&setup);
    let t = |hours: i64| rfc3339(unix_now() - hours * 3600);
    let body = format!(
        r#"{{"since": "{}", "until": "{}", "sources": ["logs"], "note": "disengagement 42"}}"#,
        t(4),
        t(1)
    );
    server.put_json_with_boto3("v001/.requests/inc-42.json", &body);
    server.put_json_with_boto3(
        "v001/.requests/bad.json",
        r#"{"since": "yesterday", "until": "now"}"#,
    );
    let mut child = spawn(&setup, "run.log");
    let done = |id: &str| format!("v001/.requests/{id}.done.json");
    wait_until(30, "both answered", || {
        let keys = server.client().list();
        keys.contains_key(&done("inc-42")) && keys.contains_key(&done("bad"))
    });
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    let answer: serde_json::Value =
        serde_json::from_slice(&server.client().get(&done("inc-42"))).expect("answer json");
    assert_eq!(answer["id"], "inc-42");
    assert_eq!(answer["origin"], "fleet");
    assert_eq!(
        (answer["matched"].as_u64(), answer["uploaded"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(answer["note"], "disengagement 42");
    let bad: serde_json::Value =
        serde_json::from_slice(&server.client().get(&done("bad"))).expect("bad json");
    let error = bad["error"].as_str().unwrap_or("");
    assert!(
        error.contains("since") && error.contains("\"yesterday\""),
        "{bad}"
    );
    assert_eq!(uploaded(&server), ["logs/in-3.log"]);

    // A restart: the answers are listed, nothing is taken again.
    let mut child = spawn(&setup, "run2.log");
    std::thread::sleep(Duration::from_secs(4));
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    let log2 = read(&setup, "run2.log");
    assert!(!log2.contains("request inc-42"), "{log2}");
    assert!(!log2.contains("request bad"), "{log2}");
    let log = setup.run_log();
    assert_eq!(
        log.matches("request inc-42 from the fleet").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("request bad from the fleet is malformed"),
        "{log}"
    );
    assert_no_secrets(&log2);
}

fn rfc3339(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}
