//! Monitoring, end to end: metrics published to moto's CloudWatch and read back with
//! boto3, alarms, and `status --json` during a slowed upload.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;

const MIB: usize = 1024 * 1024;

fn metrics(endpoint: &str, extra: &str) -> String {
    format!(r#","metrics":{{"endpoint":"{endpoint}","interval_seconds":1{extra}}}"#)
}

fn set_vehicle(setup: &Setup, vehicle: &str) {
    let text = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        text.replace(
            r#""vehicle_id":"v001""#,
            &format!(r#""vehicle_id":"{vehicle}""#),
        ),
    )
    .expect("config");
}

fn files(setup: &Setup, n: usize, len: usize) -> u64 {
    for i in 0..n {
        let p = setup.source("logs").join(format!("f{i}.log"));
        write(&p, &bytes(len + i, i as u64));
        age_file(&p, 3600);
    }
    (0..n).map(|i| (len + i) as u64).sum()
}

fn sum(cw: &Server, metric: &str, vehicle: &str) -> f64 {
    cw.cloudwatch(&["sum", "TVM/Upload", metric, vehicle])
        .as_f64()
        .expect("number")
}

#[test]
fn metric_sums_match_the_uploads_and_two_vehicles_stay_apart() {
    let s3 = Server::start(Kind::S3sFs);
    let cw = Server::start(Kind::Moto);
    let mut expected = Vec::new();
    for (vehicle, n) in [("v001", 3), ("v002", 5)] {
        let setup = Setup::new(
            &s3.endpoint(),
            &[("logs", "")],
            "",
            &metrics(&cw.endpoint(), ""),
        );
        set_vehicle(&setup, vehicle);
        let bytes = files(&setup, n, 1000);
        let out = setup.once();
        assert!(out.status.success(), "{}", stderr(&out));
        expected.push((vehicle, n as f64, bytes as f64));
    }
    for (vehicle, n, bytes) in expected {
        assert_eq!(sum(&cw, "FilesUploaded", vehicle), n, "{vehicle}");
        assert_eq!(sum(&cw, "BytesUploaded", vehicle), bytes, "{vehicle}");
        // Not compressed, nothing resumed: every byte uploaded went on the wire once.
        assert_eq!(sum(&cw, "BytesSent", vehicle), bytes, "{vehicle}");
        assert_eq!(sum(&cw, "FailedUploads", vehicle), 0.0, "{vehicle}");
    }
}

#[test]
fn disabled_metrics_send_no_request_at_all() {
    let s3 = Server::start(Kind::S3sFs);
    let cw = Server::start(Kind::Moto);
    let proxy = Proxy::start(cw.port);
    for (enabled, extra) in [(false, r#","enabled":false"#), (true, "")] {
        proxy.clear();
        let setup = Setup::new(
            &s3.endpoint(),
            &[("logs", "")],
            "",
            &metrics(&proxy.endpoint(), extra),
        );
        files(&setup, 2, 100);
        assert!(setup.once().status.success());
        let sent = proxy.requests().len();
        if enabled {
            assert!(
                sent > 0,
                "the same setup with metrics on does publish (the proxy sees it)"
            );
        } else {
            assert_eq!(sent, 0, "metrics disabled: no request");
        }
    }
}

#[test]
fn counts_held_while_the_endpoint_is_down_arrive_exactly_once_it_is_back() {
    let s3 = Server::start(Kind::S3sFs);
    let cw_port = free_port();
    let setup = Setup::new(
        &s3.endpoint(),
        &[("logs", "")],
        "",
        &metrics(&format!("http://127.0.0.1:{cw_port}"), ""),
    );
    files(&setup, 2, 500);
    let mut run = setup.spawn_run();
    wait_until(30, "a failed publish", || {
        setup.run_log().contains("publishing failed")
    });
    let cw = Server::start_on(Kind::Moto, cw_port);
    wait_until(30, "the held counts", || {
        sum(&cw, "FilesUploaded", "v001") >= 2.0
    });
    // One more file after recovery: the total is exact, nothing lost or doubled.
    let p = setup.source("logs").join("late.log");
    write(&p, b"late");
    wait_until(30, "the late upload's count", || {
        sum(&cw, "FilesUploaded", "v001") >= 3.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sum(&cw, "FilesUploaded", "v001"), 3.0);
    assert_eq!(sum(&cw, "BytesUploaded", "v001"), (500 + 501 + 4) as f64);
    sigterm_and_wait(&mut run, Duration::from_secs(10));
    assert!(setup.run_log().contains("publishing works again"));
    assert_no_secrets(&setup.run_log());
}

#[test]
fn alarms_are_created_once_with_their_threshold_operator_period_and_dimension() {
    let cw = Server::start(Kind::Moto);
    let alarms = r#","alarms":[
        {"name":"upload-failures","metric":"FailedUploads","statistic":"Sum","comparison":">=","threshold":5,"period_seconds":300,"evaluation_periods":2},
        {"name":"queue-stuck","metric":"QueueDepth","statistic":"Maximum","comparison":"<","threshold":1.5,"period_seconds":60}]"#;
    let setup = Setup::new(
        &cw.endpoint(),
        &[("logs", "")],
        "",
        &metrics(&cw.endpoint(), alarms),
    );
    for _ in 0..2 {
        let out = setup
            .command("alarms", SECRET_KEY)
            .output()
            .expect("alarms");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let listed = cw.cloudwatch(&["alarms"]);
    let list = listed.as_array().expect("list");
    assert_eq!(list.len(), 2, "running twice changes nothing: {listed}");
    let a = list
        .iter()
        .find(|a| a["AlarmName"] == "v001-upload-failures")
        .expect("alarm");
    assert_eq!(a["MetricName"], "FailedUploads");
    assert_eq!(a["Namespace"], "TVM/Upload");
    assert_eq!(a["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(a["Threshold"], 5.0);
    assert_eq!(a["Period"], 300);
    assert_eq!(a["EvaluationPeriods"], 2);
    assert_eq!(
        a["Dimensions"],
        serde_json::json!([{"Name": "VehicleId", "Value": "v001"}])
    );
    let b = list
        .iter()
        .find(|a| a["AlarmName"] == "v001-queue-stuck")
        .expect("alarm");
    assert_eq!(b["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(b["Statistic"], "Maximum");
    assert_eq!(b["Threshold"], 1.5);

    let bad = Setup::new(
        &cw.endpoint(),
        &[("logs", "")],
        "",
        &metrics(
            &cw.endpoint(),
            r#","alarms":[{"name":"x","metric":"FilesUploaded","comparison":"~","threshold":1}]"#,
        ),
    );
    let out = bad.command("alarms", SECRET_KEY).output().expect("alarms");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("metrics.alarms[0].comparison"));
}

/// The fleet dashboard, read back with boto3: every metric each graph draws for a
/// vehicle that published exists in CloudWatch; another vehicle named gets its lines;
/// running it again updates the one dashboard; a bad vehicle id is refused.
#[test]
fn the_dashboard_draws_metrics_that_exist_for_each_vehicle() {
    let s3 = Server::start(Kind::S3sFs);
    let cw = Server::start(Kind::Moto);
    let alarm = r#","alarms":[{"name":"failing","metric":"FailedUploads","comparison":">=","threshold":3}]"#;
    // A link every interface is (and `other` when there is no default route).
    let links = r#","links":[{"name":"any","interfaces":["*"],"daily_bytes":"1GiB"}]"#;
    let setup = Setup::new(
        &s3.endpoint(),
        &[("logs", "")],
        "",
        &format!("{}{links}", metrics(&cw.endpoint(), alarm)),
    );
    files(&setup, 2, 1000);
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));
    for vehicles in [None, Some("v001,v002")] {
        let mut cmd = setup.command("dashboard", SECRET_KEY);
        if let Some(v) = vehicles {
            cmd.args(["--vehicles", v]);
        }
        let out = cmd.output().expect("dashboard");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let got = cw.cloudwatch(&["dashboard", "TVM-Upload"]);
    let listed: Vec<String> = got["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m.to_string())
        .collect();
    let widgets = got["body"]["widgets"].as_array().expect("widgets");
    assert_eq!(
        widgets.len(),
        11,
        "eight graphs, the link's, the spent budgets' and the alarm's: {got}"
    );
    let mut v002 = 0;
    for w in widgets {
        for line in w["properties"]["metrics"].as_array().expect("lines") {
            // Namespace, name and dimensions: all but the drawing options.
            let parts = line.as_array().expect("line");
            let id = serde_json::json!(parts[..parts.len() - 1]).to_string();
            match line[3].as_str() {
                Some("v001") => assert!(listed.contains(&id), "{id} is not in CloudWatch"),
                Some("v002") => v002 += 1,
                other => panic!("a line for {other:?}"),
            }
        }
    }
    assert_eq!(v002, 14, "v002 has a line wherever v001 has one");
    let link = &widgets[8]["properties"];
    assert_eq!(link["metrics"][0][5], "any", "{link}");
    let alarm = &widgets[10]["properties"];
    assert_eq!(alarm["metrics"][0][1], "FailedUploads");
    assert_eq!(alarm["annotations"]["horizontal"][0]["value"], 3.0);

    let out = setup
        .command("dashboard", SECRET_KEY)
        .args(["--vehicles", "v001,../x"])
        .output()
        .expect("dashboard");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--vehicles: \"../x\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_json_shows_progress_rising_and_a_finite_eta_during_a_slow_upload() {
    let s3 = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(s3.port);
    let setup = Setup::new(
        &proxy.endpoint(),
        &[("logs", "")],
        r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":1"#,
        "",
    );
    let p = setup.source("logs").join("slow.mcap");
    write(&p, &bytes(30 * MIB, 5)); // 6 parts, each held 700 ms
    age_file(&p, 3600);
    proxy.set_delay(|r| r.part_number().map(|_| Duration::from_millis(700)));
    let mut run = setup.spawn_run();
    wait_until(20, "the upload to start", || {
        proxy.requests().iter().any(|r| r.part_number().is_some())
    });
    let mut percents: Vec<f64> = Vec::new();
    let mut etas: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = setup
            .command("status", SECRET_KEY)
            .arg("--json")
            .stdout(Stdio::piped())
            .output()
            .expect("status");
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["daemon_running"], true);
        if let Some(pct) = v["in_flight"][0]["percent"].as_f64() {
            percents.push(pct);
        }
        if let Some(eta) = v["eta_seconds"].as_f64() {
            etas.push(eta);
        }
        if v["uploaded"]["files"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    sigterm_and_wait(&mut run, Duration::from_secs(10));
    let rising: Vec<f64> = percents
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| w[1])
        .collect();
    assert!(
        rising.len() >= 3,
        "progress rose step by step: {percents:?}"
    );
    assert!(
        percents.windows(2).all(|w| w[1] >= w[0]),
        "never went back: {percents:?}"
    );
    assert!(
        etas.iter().any(|e| e.is_finite() && *e > 0.0 && *e < 600.0),
        "a finite ETA: {etas:?}"
    );

    // Stopped: status says so and still reads the journal.
    let out = setup
        .command("status", SECRET_KEY)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not running"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
}
