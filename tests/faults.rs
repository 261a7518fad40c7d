//! Network faults, clock skew and server misbehaviour, injected by our proxy
//! (tests/common/proxy.rs) between the real daemon and a real server (s3s-fs).

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::{Action, Proxy, Rng, unix_now};
use common::*;

const MULTIPART: &str = r#","multipart_threshold":"5MiB","part_size":"5MiB""#;

/// Aged files (stable at once): `small` of up to 200 KiB and `multi` of three parts.
fn workload(setup: &Setup, small: usize, multi: usize, seed: u64) -> BTreeMap<String, String> {
    let mut rng = Rng::new(seed);
    let mut expected = BTreeMap::new();
    for i in 0..small + multi {
        let len = if i < small {
            rng.below(200 << 10) as usize
        } else {
            (10 << 20) + 1 + rng.below(5 << 20) as usize
        };
        let rel = format!("d{}/f{i:03}.log", i % 3);
        let path = setup.source("ros").join(&rel);
        let data = bytes(len, rng.next());
        write(&path, &data);
        age_file(&path, 60);
        expected.insert(key_for("ros", &rel, &path), sha256_hex(&data));
    }
    expected
}

fn count_by_fault(reqs: &[proxy::Request]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in reqs {
        *by.entry(r.fault.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    by
}

use common::proxy;

#[test]
fn forty_percent_of_requests_faulted_still_delivers_every_file_intact_without_a_hot_loop() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("ros", "")],
        &format!("{MULTIPART},\"concurrency\":3"),
        "",
    );
    let expected = workload(&setup, 40, 3, 7);
    // The fault-free cost: HEAD + PUT per small file; HEAD, create, 3 parts and
    // complete per multipart one.
    let needed = 40 * 2 + 3 * 6;
    let rng = Arc::new(Mutex::new(Rng::new(11)));
    proxy.set_rule(move |r| {
        let mut rng = rng.lock().expect("rng");
        if !rng.chance(0.4) {
            return Action::Forward;
        }
        match rng.below(6) {
            0 => Action::Reset {
                after: r.content_length / 2,
            },
            1 => Action::s3_error(500, "InternalError"),
            2 => Action::s3_error(503, "SlowDown"),
            3 => Action::Blackhole,
            4 => Action::Delay(Duration::from_millis(300)),
            _ => Action::Slow {
                bytes_per_second: 2_000_000,
            },
        }
    });
    let mut child = setup
        .command("run", SECRET_KEY)
        .env("TVM_UPLOAD_TEST_STALL_SECONDS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(setup.dir.path().join("run.log")).expect("log"))
        .spawn()
        .expect("spawn");
    let client = server.client();
    let started = Instant::now();
    let mut rss = Vec::new();
    while client.list().len() < expected.len() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not delivered in 240 s: {} of {}",
            client.list().len(),
            expected.len()
        );
        if let Some((_, now)) = rss_kib(child.id()) {
            rss.push(now);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = started.elapsed();
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    assert_no_secrets(&log);
    let bytes = assert_bucket_is(&client, &expected);

    let reqs = proxy.requests();
    let by = count_by_fault(&reqs);
    let faulted = reqs.iter().filter(|r| r.fault.is_some()).count();
    let failing = reqs
        .iter()
        .filter(|r| {
            matches!(
                r.fault.as_deref(),
                Some("reset" | "reply-500" | "reply-503" | "blackhole")
            )
        })
        .count();
    // The stated bound: at most three times the fault-free requests per success,
    // i.e. 3 * needed / (1 - failing share). A hot loop blows through it.
    let share = failing as f64 / reqs.len() as f64;
    let bound = (3.0 * needed as f64 / (1.0 - share)).ceil() as usize;
    let half = rss.len() / 2;
    let first = rss[..half.max(1)].iter().max().copied().unwrap_or(0);
    let second = rss[half..].iter().max().copied().unwrap_or(0);
    println!(
        "faults: {} requests, {faulted} faulted ({:.0}%), {failing} failing ({:.0}%); by kind {by:?}",
        reqs.len(),
        100.0 * faulted as f64 / reqs.len() as f64,
        100.0 * share
    );
    println!(
        "faults: {} files, {bytes} bytes verified in {:.1}s; requests {} <= bound {bound} (fault-free {needed}); RSS max {first} KiB first half, {second} KiB second half",
        expected.len(),
        took.as_secs_f64(),
        reqs.len()
    );
    assert!(faulted * 5 >= reqs.len(), "fewer than 20% faulted");
    assert!(reqs.len() <= bound, "{} requests: a hot loop", reqs.len());
    assert!(
        log.contains("S3 asks to slow down"),
        "SlowDown not honoured"
    );
    assert!(
        second <= first + first / 4 + 1024,
        "memory grew: {first} KiB then {second} KiB"
    );
}

#[test]
fn slowdown_pauses_all_requests_with_growing_waits() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], r#","concurrency":4"#, "");
    let expected = workload(&setup, 12, 0, 3);
    let first: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let f = Arc::clone(&first);
    proxy.set_rule(move |_| {
        let start = *f.lock().expect("first").get_or_insert_with(Instant::now);
        if start.elapsed() < Duration::from_secs(6) {
            Action::s3_error(503, "SlowDown")
        } else {
            Action::Forward
        }
    });
    let mut child = setup.spawn_run();
    let client = server.client();
    wait_until(60, "delivery after the SlowDown period", || {
        client.list().len() == expected.len()
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    assert_bucket_is(&client, &expected);
    let reqs = proxy.requests();
    let slowed: Vec<_> = reqs
        .iter()
        .filter(|r| r.fault.as_deref() == Some("reply-503"))
        .collect();
    // Gaps between successive SlowDown answers: a client that honours it waits longer
    // each time instead of hammering.
    let gaps: Vec<f64> = slowed
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .filter(|g| *g > 0.05)
        .collect();
    println!(
        "slowdown: {} requests answered SlowDown in 6 s; pauses between them {gaps:.2?}",
        slowed.len()
    );
    // Without pausing, 12 files at concurrency 4 retrying at 0.2 s would send ~300.
    assert!(
        slowed.len() <= 40,
        "{} requests during SlowDown",
        slowed.len()
    );
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    assert!(longest >= 0.8, "the pause never grew: {gaps:?}");
    assert!(setup.run_log().contains("S3 asks to slow down"));
}

/// A server that refuses requests signed more than 15 minutes off its clock, as S3 does:
/// expired presigned URLs with AccessDenied "Request has expired", future ones with
/// RequestTimeTooSkewed.
fn reject_skewed(r: &proxy::Request) -> Action {
    let Some(t) = r.amz_date() else {
        return Action::Forward;
    };
    let now = unix_now();
    if t < now - 900 {
        Action::s3_error_message(403, "AccessDenied", "Request has expired")
    } else if t > now + 900 {
        Action::s3_error(403, "RequestTimeTooSkewed")
    } else {
        Action::Forward
    }
}

fn skewed_run(skew: i64) {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    proxy.set_rule(reject_skewed);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    let expected = workload(&setup, 3, 1, skew.unsigned_abs());
    let out = setup
        .command("once", SECRET_KEY)
        .env("TVM_UPLOAD_TEST_CLOCK_SKEW_SECONDS", skew.to_string())
        .output()
        .expect("once");
    let err = stderr(&out);
    assert_no_secrets(&err);
    assert!(out.status.success(), "skew {skew}:\n{err}");
    assert_bucket_is(&server.client(), &expected);
    let refused = proxy
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    let noted = err.matches("the local clock is").count();
    println!(
        "skew {skew:+} s: {refused} requests refused before the correction; logged {noted} time(s)"
    );
    assert!(
        refused >= 1,
        "the server never refused: the test proves nothing"
    );
    assert_eq!(noted, 1, "the offset must be logged once:\n{err}");
    assert!(
        err.contains(&format!("{} s", skew.abs()))
            || err.contains(&format!("{} s", skew.abs() - 1)),
        "{err}"
    );
    assert!(
        !err.contains("S3 refused"),
        "taken for a credentials error:\n{err}"
    );
}

#[test]
fn a_clock_three_hours_ahead_is_corrected_from_the_server_date() {
    skewed_run(3 * 3600);
}

#[test]
fn a_clock_three_hours_behind_is_corrected_from_the_server_date() {
    skewed_run(-3 * 3600);
}

/// One `once` run through a proxy following `rule`; returns the output and the proxy.
fn once_through(
    rule: impl Fn(&proxy::Request) -> Action + Send + Sync + 'static,
    small: usize,
    multi: usize,
) -> (
    std::process::Output,
    Proxy,
    Server,
    BTreeMap<String, String>,
) {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    proxy.set_rule(rule);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    let expected = workload(&setup, small, multi, 5);
    let out = setup.once();
    (out, proxy, server, expected)
}

/// The first request matching `pred` gets `action`; the rest are forwarded.
fn first_only(
    pred: impl Fn(&proxy::Request) -> bool + Send + Sync + 'static,
    action: Action,
) -> impl Fn(&proxy::Request) -> Action + Send + Sync + 'static {
    let done = Mutex::new(false);
    move |r| {
        let mut d = done.lock().expect("done");
        if !*d && pred(r) {
            *d = true;
            return action.clone();
        }
        Action::Forward
    }
}

#[test]
fn complete_answered_200_with_an_error_body_is_retried_not_taken_as_done() {
    let (out, proxy, server, expected) = once_through(
        first_only(
            |r| r.is_complete(),
            Action::ok_body(
                "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error</Message></Error>",
            ),
        ),
        0,
        1,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("InternalError"), "{}", stderr(&out));
    assert_bucket_is(&server.client(), &expected);
    assert_eq!(
        proxy.requests().iter().filter(|r| r.is_complete()).count(),
        2
    );
}

#[test]
fn truncated_and_garbage_xml_answers_are_errors_that_retry() {
    // A create answer cut off mid-tag, and a complete answer that is not XML.
    let n = Mutex::new(0);
    let (out, _proxy, server, expected) = once_through(
        move |r| {
            let mut n = n.lock().expect("n");
            let create = r.method == "POST" && r.query("uploads").is_some();
            if create && *n == 0 {
                *n += 1;
                return Action::ok_body(
                    "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>t01lo",
                );
            }
            if r.is_complete() && *n == 1 {
                *n += 1;
                return Action::ok_body("\u{1}\u{2}garbage>>><<");
            }
            Action::Forward
        },
        2,
        1,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("unexpected answer"), "{err}");
    assert_bucket_is(&server.client(), &expected);
}

#[test]
fn no_such_upload_for_a_journaled_upload_starts_that_file_over_cleanly() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], MULTIPART, "");
    let expected = workload(&setup, 0, 1, 9);
    // First run: the parts go, every complete fails; `once` gives up with the upload
    // journaled.
    proxy.set_rule(|r| {
        if r.is_complete() {
            Action::s3_error(500, "InternalError")
        } else {
            Action::Forward
        }
    });
    let out = setup.once();
    assert!(!out.status.success());
    assert!(setup.journal().contains("mp_started"));
    // The server "expired" it: NoSuchUpload from now on for that upload id.
    let old_id = proxy
        .requests()
        .iter()
        .find_map(|r| r.query("uploadId"))
        .expect("an upload id");
    let id = old_id.clone();
    proxy.set_rule(move |r| {
        if r.query("uploadId").as_deref() == Some(id.as_str()) {
            Action::s3_error(404, "NoSuchUpload")
        } else {
            Action::Forward
        }
    });
    proxy.clear();
    let out = setup.once();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("starting it over"), "{err}");
    assert_bucket_is(&server.client(), &expected);
    let new_creates = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.query("uploads").is_some())
        .count();
    assert_eq!(new_creates, 1);
}

#[test]
fn no_such_bucket_and_redirects_stop_with_the_fix_named_not_a_retry_storm() {
    for (action, says) in [
        (Action::s3_error(404, "NoSuchBucket"), "fix s3.bucket"),
        (
            Action::Reply {
                status: 301,
                headers: vec![
                    ("x-amz-bucket-region".into(), "eu-west-1".into()),
                    ("content-type".into(), "application/xml".into()),
                ],
                body: "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>".into(),
            },
            "fix s3.region",
        ),
        (
            Action::Reply {
                status: 307,
                headers: vec![("location".into(), "http://127.0.0.1:1/elsewhere".into())],
                body: "<Error><Code>TemporaryRedirect</Code><Message>Please re-send this request to the specified temporary endpoint.</Message></Error>".into(),
            },
            "fix s3.region",
        ),
    ] {
        let a = action.clone();
        let (out, proxy, server, _) = once_through(move |_| a.clone(), 5, 0);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(says), "{action:?}: {err}");
        let n = proxy.requests().len();
        println!("{action:?}: stopped after {n} requests");
        assert!(n <= 6, "{n} requests: a retry storm");
        assert!(server.client().list().is_empty());
    }
}

#[test]
fn a_server_that_accepts_and_never_answers_times_out_and_shuts_down_promptly() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&held);
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            h.lock().expect("held").push(c);
        }
    });
    let setup = Setup::new(&format!("http://127.0.0.1:{port}"), &[("ros", "")], "", "");
    workload(&setup, 2, 0, 1);
    let started = Instant::now();
    let out = setup
        .command("once", SECRET_KEY)
        .env("TVM_UPLOAD_TEST_STALL_SECONDS", "1")
        .output()
        .expect("once");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );
    assert!(err.contains("stays queued"), "{err}");
    println!(
        "never-answering server: once gave up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // `run` stuck on it still stops on SIGTERM within the grace period.
    let mut child = setup.spawn_run();
    std::thread::sleep(Duration::from_secs(2));
    sigterm_and_wait(&mut child, Duration::from_secs(10));
    assert!(setup.journal().contains("queued"));
}

/// Issue 24 (5): a server that refuses a conditional PUT may answer before reading the
/// body and close the connection; the daemon sees a broken pipe, a reset, or (when the
/// close reaches it only as it reads the answer) ureq's "Peer disconnected". It asks the
/// key: taken by another content, so the next `~N` at once, not "S3 unreachable" and a
/// pause. The proxy resets the first PUT of that key mid-body, or reads it whole and
/// closes without an answer; the key holds another content, put there as after a wiped
/// state dir.
#[test]
fn a_put_cut_off_on_a_taken_key_takes_the_next_suffix_not_an_outage() {
    let server = Server::start(Kind::S3sFs);
    for (i, fault) in [Action::Reset { after: 64 << 10 }, Action::Hangup]
        .into_iter()
        .enumerate()
    {
        let proxy = Proxy::start(server.port);
        let setup = Setup::new(&proxy.endpoint(), &[("bags", "")], "", "");
        let path = setup.source("bags").join(format!("big{i}.bin"));
        let data = bytes(3 << 20, 5 + i as u64);
        write(&path, &data);
        age_file(&path, 3600);
        let k = key_for("bags", &format!("big{i}.bin"), &path);
        let client = server.client();
        client.put(&k, b"another content, from before the state dir was wiped");
        let fault = std::sync::Mutex::new(Some(fault));
        proxy.set_rule(move |r| {
            let once = fault.lock().ok().and_then(|mut f| f.take());
            match once {
                Some(action) if r.is_put_object() => action,
                other => {
                    if let (Some(a), Ok(mut f)) = (other, fault.lock()) {
                        *f = Some(a);
                    }
                    Action::Forward
                }
            }
        });
        let started = Instant::now();
        let out = setup.once();
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("unreachable"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert_eq!(
            sha256_hex(&client.get(&format!("{k}~2"))),
            sha256_hex(&data)
        );
        let faulted = proxy
            .requests()
            .iter()
            .filter(|r| r.fault.is_some())
            .count();
        assert_eq!(faulted, 1, "the fault was made once");
    }
}
