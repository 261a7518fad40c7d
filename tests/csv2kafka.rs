//! csv2kafka end to end, against real servers: s3s-fs (the objects), moto (DynamoDB
//! checkpoints, CloudWatch), tansu (Kafka), read back with confluent-kafka. Rows exactly
//! once across SIGKILLs, CSV as it really is, the checkpoint item, and bad input.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{ACCESS_KEY, BUCKET, Kind, SECRET_KEY, Server, TempDir, free_port, tools_dir};

/// (partition, offset, job, line, value, other headers) of one message.
type Message = (i32, i64, String, u64, String, serde_json::Value);

/// A tansu broker on loopback, in memory; stopped on drop.
struct Broker {
    child: Child,
    port: u16,
    /// Read back over mutual TLS at this port with the certificates in this directory.
    tls: Option<(u16, std::path::PathBuf)>,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_on(free_port())
    }

    fn start_on(port: u16) -> Broker {
        Broker::advertising(port, port)
    }

    /// A broker on `port` that tells clients to reach it at `advertised` (a relay).
    fn advertising(port: u16, advertised: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tools_dir().join("bin/tansu"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        common::wait_for_port(port, "tansu");
        Broker {
            child,
            port,
            tls: None,
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Deletes `name` and creates it again: every message in it is gone, as from a
    /// broker that lost what it had acknowledged.
    fn recreate_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tools_dir().join("bin/tansu"))
            .args(["topic", "delete", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg(name)
            .output()
            .expect("tansu topic delete");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.create_topic(name, partitions);
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tools_dir().join("bin/tansu"))
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu topic create");
        // A client asking for a missing topic may have had it created already.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() || said.contains("already exists"),
            "{said}"
        );
    }

    /// Every message of `topic`: (partition, offset, job, line, value).
    fn read(&self, topic: &str) -> Vec<(i32, i64, String, u64, String)> {
        self.read_with(topic, &[])
            .into_iter()
            .map(|(p, o, j, l, v, _)| (p, o, j, l, v))
            .collect()
    }

    /// Every message of `topic` with its other headers (besides `job` and `line`).
    fn read_headers(&self, topic: &str) -> Vec<Message> {
        self.read_with(topic, &["--headers"])
    }

    fn read_with(&self, topic: &str, args: &[&str]) -> Vec<Message> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/kafka_read.py");
        let mut c = Command::new(tools_dir().join("venv/bin/python"));
        c.arg(script);
        match &self.tls {
            Some((port, pki)) => c
                .arg(format!("127.0.0.1:{port}"))
                .env("KAFKA_READ_TLS", pki),
            None => c.arg(self.bootstrap()),
        };
        let out = c.arg(topic).args(args).output().expect("kafka_read.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(6, '\t').collect();
                (
                    f[0].parse().expect("partition"),
                    f[1].parse().expect("offset"),
                    f[2].to_string(),
                    f[3].parse().unwrap_or(0),
                    f[4].to_string(),
                    f.get(5)
                        .and_then(|h| serde_json::from_str(h).ok())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    s3: Server,
    aws: Server,
    kafka: Broker,
    dir: TempDir,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let setup = Setup {
            s3: Server::start(Kind::S3sFs),
            aws: Server::start(Kind::Moto),
            kafka: Broker::start(),
            dir: TempDir::new("c2k"),
        };
        setup.kafka.create_topic("telemetry", 3);
        setup.kafka.create_topic("dead-letters", 1);
        let config = serde_json::json!({
            "kafka": {"bootstrap_servers": setup.kafka.bootstrap(), "topic": "telemetry",
                      "dead_letter_topic": "dead-letters"},
            "s3": {"region": "us-east-1", "endpoint": setup.s3.endpoint(), "path_style": true},
            "checkpoint": {"endpoint": setup.aws.endpoint(), "interval_lines": 2000,
                           "lease_seconds": 5},
            "metrics": {"endpoint": setup.aws.endpoint(), "interval_seconds": 1},
        });
        let mut config = config;
        if !extra.is_empty() {
            let more: serde_json::Value = serde_json::from_str(extra).expect("extra");
            for (k, v) in more.as_object().expect("object") {
                config[k] = v.clone();
            }
        }
        setup.write_config(&config);
        let out = setup.c2k(&["create-table"]).output().expect("create-table");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        setup
    }

    fn write_config(&self, config: &serde_json::Value) {
        std::fs::write(self.config(), config.to_string()).expect("config");
    }

    fn edit(&mut self, f: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let mut c: serde_json::Value = serde_json::from_str(&text).expect("json");
        f(&mut c);
        self.write_config(&c);
    }

    fn metrics_via(&mut self, endpoint: &str) {
        self.edit(|c| c["metrics"]["endpoint"] = endpoint.into());
    }

    fn s3_via(&mut self, endpoint: &str) {
        self.edit(|c| c["s3"]["endpoint"] = endpoint.into());
    }

    fn bootstrap_at(&mut self, servers: &str) {
        self.edit(|c| c["kafka"]["bootstrap_servers"] = servers.into());
    }

    fn table(&mut self, name: &str) {
        self.edit(|c| c["checkpoint"]["table"] = name.into());
    }

    /// The checkpoint item, read with boto3.
    fn item(&self, job: &str) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/dynamo.py");
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .args([&self.aws.endpoint(), "csv2kafka-checkpoints", job])
            .envs(common::passthrough_env())
            .output()
            .expect("dynamo.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("item json")
    }

    fn status_of(&self, job: &str) -> serde_json::Value {
        self.status_json(&["status", "--job-id", job, "--json"])
    }

    /// The JSON a successful `status` prints.
    fn status_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.c2k(args).output().expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("c2k.json")
    }

    fn c2k(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_csv2kafka"));
        c.arg(args[0])
            .arg("--config")
            .arg(self.config())
            .args(&args[1..])
            .env_clear()
            .envs(common::passthrough_env())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, url: &str) -> Output {
        self.c2k(&["run", url]).output().expect("run")
    }

    fn status(&self, url: &str) -> serde_json::Value {
        self.status_json(&["status", url, "--json"])
    }
}

/// `bytes` compressed by Debian's gzip (not the code under test's decoder).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).expect("write"));
    let out = child.wait_with_output().expect("gzip").stdout;
    feeder.join().expect("feeder");
    out
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CSV of `rows` data rows with quoting, unicode and a malformed row every 5,000.
fn telemetry(rows: u64) -> (Vec<u8>, BTreeMap<u64, String>) {
    let mut text = String::from("\u{feff}ts,vehicle,speed,note\r\n");
    let mut want = BTreeMap::new();
    for i in 1..=rows {
        if i % 5000 == 0 {
            text.push_str("broken,row\r\n");
            continue;
        }
        let note = format!("n\"{i}\", ü");
        text.push_str(&format!(
            "{i},v{},{}.5,\"n\"\"{i}\"\", ü\"\r\n",
            i % 7,
            i % 90
        ));
        want.insert(
            i,
            serde_json::json!({"ts": i.to_string(), "vehicle": format!("v{}", i % 7),
                "speed": format!("{}.5", i % 90), "note": note})
            .to_string(),
        );
    }
    (text.into_bytes(), want)
}

/// Every row exactly once, in line order within each partition, values as expected.
fn check_exactly_once(
    messages: &[(i32, i64, String, u64, String)],
    job: &str,
    want: &BTreeMap<u64, String>,
) {
    check_once(messages, job, want, true);
}

/// Every row exactly once with the values expected; in line order within each
/// partition when `ordered` (rows a broker lost and that were sent again land after
/// later ones).
fn check_once(
    messages: &[(i32, i64, String, u64, String)],
    job: &str,
    want: &BTreeMap<u64, String>,
    ordered: bool,
) {
    let mine: Vec<_> = messages.iter().filter(|m| m.2 == job).collect();
    let mut seen = BTreeMap::new();
    let mut last_in_partition: BTreeMap<i32, u64> = BTreeMap::new();
    for (p, _, _, line, value) in &mine {
        assert!(
            seen.insert(*line, value.clone()).is_none(),
            "line {line} twice"
        );
        let last = last_in_partition.entry(*p).or_insert(0);
        assert!(
            !ordered || *line > *last,
            "line {line} after {last} in partition {p}"
        );
        *last = *line;
    }
    assert_eq!(seen.len(), want.len(), "rows in the topic");
    for (line, value) in want {
        let got: serde_json::Value = serde_json::from_str(&seen[line]).expect("json value");
        let expected: serde_json::Value = serde_json::from_str(value).expect("json");
        assert_eq!(got, expected, "line {line}");
    }
}

/// The kill loop: at least 30 SIGKILLs at random moments (seeded; `C2K_CHAOS_SEED`
/// reproduces) over an object of 1,000,000 rows (`C2K_CHAOS_ROWS`), then every row is
/// in the topic exactly once. Should a job finish before the kills are spent, the same
/// object is started again under a new job id, so the count of kills always holds.
#[test]
fn a_million_rows_exactly_once_across_thirty_kills() {
    let setup = Setup::new("");
    let rows: u64 = env_or("C2K_CHAOS_ROWS", 1_000_000);
    let want_kills: u64 = env_or("C2K_CHAOS_KILLS", 30);
    let seed: u64 = env_or("C2K_CHAOS_SEED", std::process::id() as u64);
    println!("csv2kafka chaos seed {seed} (C2K_CHAOS_SEED={seed} reproduces the kill times)");
    let mut rng = common::proxy::Rng::new(seed);
    let (csv, want) = telemetry(rows);
    setup.s3.client().put("fleet/v001/drive.csv", &csv);
    let url = format!("s3://{BUCKET}/fleet/v001/drive.csv");
    let mut kills = 0;
    let mut jobs = vec!["chaos-1".to_string()];
    while kills < want_kills {
        let job = jobs.last().cloned().unwrap_or_default();
        let mut child = setup
            .c2k(&["run", &url, "--job-id", &job])
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(150 + rng.below(650)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            kills += 1;
        } else {
            jobs.push(format!("chaos-{}", jobs.len() + 1));
        }
        let _ = child.wait();
    }
    for job in &jobs {
        let out = setup
            .c2k(&["run", &url, "--job-id", job])
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", err(&out));
    }
    println!("{kills} SIGKILLs over {} jobs of {rows} rows", jobs.len());
    let messages = setup.kafka.read("telemetry");
    let dead = setup.kafka.read("dead-letters");
    for job in &jobs {
        check_exactly_once(&messages, job, &want);
        let dead: Vec<_> = dead.iter().filter(|m| m.2 == *job).collect();
        assert_eq!(
            dead.len() as u64,
            rows / 5000,
            "one dead letter per broken row"
        );
        assert!(dead.iter().all(|m| m.4 == "broken,row"));
        let status = setup.status_of(job);
        assert_eq!(status["status"], "COMPLETED", "{status}");
        assert_eq!(status["last_line"], rows, "{status}");
        assert_eq!(status["total_lines"], rows, "{status}");
        assert_eq!(status["failed_rows"], rows / 5000, "{status}");
        assert_eq!(status["total_sent"], want.len(), "{status}");
    }
    // Run again: a COMPLETED job sends nothing.
    let again = setup
        .c2k(&["run", &url, "--job-id", &jobs[0]])
        .output()
        .expect("run");
    assert!(again.status.success(), "{}", err(&again));
    assert!(err(&again).contains("already COMPLETED"), "{}", err(&again));
    assert_eq!(setup.kafka.read("telemetry").len(), messages.len());
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three workers on one prefix of 12 objects, one killed mid-way: the leases give each
/// object to one worker at a time, the killed worker's object is taken over when its
/// lease expires, and every row of every object is in the topic once.
#[test]
fn three_workers_share_a_prefix_and_survive_one_killed() {
    let setup = Setup::new("");
    let client = setup.s3.client();
    let mut wants = BTreeMap::new();
    for i in 0..12 {
        let (csv, want) = telemetry(20_000 + i * 1000);
        let key = format!("fleet/v{i:03}/can.csv");
        client.put(&key, &csv);
        wants.insert(format!("{BUCKET}/{key}"), want);
    }
    let url = format!("s3://{BUCKET}/fleet/");
    let mut workers: Vec<Child> = (0..3)
        .map(|_| setup.c2k(&["run", &url]).spawn().expect("spawn"))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    workers[0].kill().expect("kill");
    let _ = workers[0].wait();
    for w in workers.into_iter().skip(1) {
        let out = w.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "a surviving worker failed: {}",
            err(&out)
        );
    }
    let messages = setup.kafka.read("telemetry");
    for (job, want) in &wants {
        check_exactly_once(&messages, job, want);
        assert_eq!(setup.status_of(job)["status"], "COMPLETED");
    }
}

/// The checkpoint item and the metrics, read back from moto with boto3: the item's
/// fields as SPEC-csv2kafka.md names them; RecordsProcessed sums to the rows and
/// FailedRecords to the malformed ones, although CloudWatch refused the first publishes.
#[test]
fn checkpoint_item_and_metrics_read_back_from_moto() {
    let mut setup = Setup::new("");
    let proxy = common::proxy::Proxy::start(setup.aws.port);
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = std::sync::Arc::clone(&refused);
    // Only CloudWatch goes through the proxy: its first three publishes fail.
    proxy.set_rule(move |_| {
        if r.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
            common::proxy::Action::Refuse
        } else {
            common::proxy::Action::Forward
        }
    });
    setup.metrics_via(&proxy.endpoint());
    let rows = 30_000;
    let (csv, want) = telemetry(rows);
    setup.s3.client().put("m/one.csv", &csv);
    let url = format!("s3://{BUCKET}/m/one.csv");
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    let job = format!("{BUCKET}/m/one.csv");
    let item = setup.item(&job);
    for (field, value) in [
        ("job_id", serde_json::json!(job)),
        ("source_object", serde_json::json!(url)),
        ("status", serde_json::json!("COMPLETED")),
        ("last_line", serde_json::json!(rows)),
        ("total_sent", serde_json::json!(want.len())),
        ("total_lines", serde_json::json!(rows)),
        ("failed_rows", serde_json::json!(rows / 5000)),
    ] {
        assert_eq!(item[field], value, "{field} in {item}");
    }
    assert!(
        item["updated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{item}"
    );
    let stats = |metric: &str| {
        setup
            .aws
            .cloudwatch(&["stats", "TVM/CsvToKafka", metric, "JobId", &job])
    };
    assert_eq!(stats("RecordsProcessed")["sum"], rows as f64);
    assert_eq!(stats("FailedRecords")["sum"], (rows / 5000) as f64);
    assert!(stats("ProgressPercentage")["count"].as_f64() > Some(0.0));
    assert!(
        refused.load(std::sync::atomic::Ordering::Relaxed) > 3,
        "publishes were refused"
    );
}

/// Faults: a download cut mid-stream carries on with a ranged GET; a broker that is
/// down at the start is waited for; a missing checkpoint table is named; no secret in
/// any output.
#[test]
fn faults_are_survived_or_named() {
    let mut setup = Setup::new("");
    let proxy = common::proxy::Proxy::start(setup.s3.port);
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = std::sync::Arc::clone(&cut);
    proxy.set_rule(move |req| {
        if req.method == "GET"
            && req.key().ends_with(".csv")
            && !c.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            common::proxy::Action::CutAnswer { after: 200_000 }
        } else {
            common::proxy::Action::Forward
        }
    });
    setup.s3_via(&proxy.endpoint());
    let (csv, want) = telemetry(20_000);
    setup.s3.client().put("f/cut.csv", &csv);
    let out = setup.run(&format!("s3://{BUCKET}/f/cut.csv"));
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        err(&out).contains("carrying on with a ranged GET"),
        "{}",
        err(&out)
    );
    let ranged = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.key().ends_with("cut.csv"))
        .count();
    assert_eq!(ranged, 2, "one cut GET and one ranged GET");
    check_exactly_once(
        &setup.kafka.read("telemetry"),
        &format!("{BUCKET}/f/cut.csv"),
        &want,
    );
    common::assert_no_secrets(&err(&out));

    // The broker down at the start: the run waits, retrying, and finishes once it is up.
    let port = free_port();
    setup.bootstrap_at(&format!("127.0.0.1:{port}"));
    setup.s3.client().put("f/late.csv", b"a\n1\n2\n");
    let child = setup
        .c2k(&["run", &format!("s3://{BUCKET}/f/late.csv")])
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(3));
    let late = Broker::start_on(port);
    late.create_topic("telemetry", 3);
    late.create_topic("dead-letters", 1);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", err(&out));
    let got = late.read("telemetry");
    assert_eq!(got.len(), 2, "{got:?}");

    // No checkpoint table: named, exit 1.
    setup.table("no-such-table");
    let out = setup.run(&format!("s3://{BUCKET}/f/late.csv"));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("checkpoint table no-such-table does not exist"),
        "{}",
        err(&out)
    );
}

/// A download cut mid-stream whose object is replaced before the ranged GET that carries
/// on: the job fails naming the change (s3s-fs ignores `If-Match`, so the new ETag in the
/// answer is what tells), rather than mixing two objects' rows.
#[test]
fn an_object_replaced_after_a_cut_fails_the_job_named() {
    let mut setup = Setup::new("");
    let proxy = common::proxy::Proxy::start(setup.s3.port);
    let (csv, _) = telemetry(20_000);
    setup.s3.client().put("f/swap.csv", &csv);
    let direct = setup.s3.client();
    let gets = std::sync::atomic::AtomicUsize::new(0);
    proxy.set_rule(move |req| {
        if req.method != "GET" || !req.key().ends_with("swap.csv") {
            return common::proxy::Action::Forward;
        }
        match gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => common::proxy::Action::CutAnswer { after: 200_000 },
            1 => {
                let (other, _) = telemetry(20_001);
                direct.put("f/swap.csv", &other);
                common::proxy::Action::Forward
            }
            _ => common::proxy::Action::Forward,
        }
    });
    setup.s3_via(&proxy.endpoint());
    let job = format!("{BUCKET}/f/swap.csv");
    let out = setup.run(&format!("s3://{job}"));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("changed while it was read"),
        "{}",
        err(&out)
    );
    assert_eq!(setup.item(&job)["status"], "FAILED");
    common::assert_no_secrets(&err(&out));
}

/// A broker of its own with the job's topics, reached through a relay the test can cut
/// or slow (the broker advertises the relay's port).
fn behind_relay(setup: &mut Setup) -> (Broker, common::relay::Relay) {
    let relay_port = free_port();
    let broker = Broker::advertising(free_port(), relay_port);
    broker.create_topic("telemetry", 3);
    broker.create_topic("dead-letters", 1);
    let relay = common::relay::Relay::start(relay_port, broker.port);
    setup.bootstrap_at(&format!("127.0.0.1:{relay_port}"));
    (broker, relay)
}

/// The broker cut off mid-job for longer than a delivery may take: the failed
/// deliveries send the job back through its resume path (a new producer, the scan of
/// what landed) with a clear message and backoff, and once the broker is back every
/// row is there exactly once.
#[test]
fn a_broker_lost_mid_job_is_waited_for_and_no_row_doubles() {
    let mut setup = Setup::new("");
    let (broker, relay) = behind_relay(&mut setup);
    setup.edit(|c| c["kafka"]["properties"] = serde_json::json!({"message.timeout.ms": "3000"}));
    let (csv, want) = telemetry(400_000);
    setup.s3.client().put("m/cut.csv", &csv);
    let job = format!("{BUCKET}/m/cut.csv");
    let child = setup
        .c2k(&["run", &format!("s3://{job}")])
        .spawn()
        .expect("spawn");
    common::wait_until(60, "a first checkpoint", || {
        setup.item(&job)["last_line"].as_u64().unwrap_or(0) > 0
    });
    relay.cut();
    std::thread::sleep(Duration::from_secs(8));
    let during = setup.item(&job)["last_line"].as_u64().unwrap_or(0);
    relay.restore();
    let out = child.wait_with_output().expect("wait");
    let log = err(&out);
    for line in log
        .lines()
        .filter(|l| !l.contains("malformed") && l.contains("WARN"))
    {
        eprintln!("{line}");
    }
    assert!(out.status.success(), "{log}");
    assert!(during < 400_000, "the cut came too late to test anything");
    assert!(log.contains("carrying on from line"), "{log}");
    // Rows stuck in the producer time out (the delivery bound is a quarter of the
    // lease), or the lease's margin runs out first while sending is blocked: either way
    // the job stops sending and carries on from its checkpoint.
    assert!(
        log.contains("Message timed out") || log.contains("the lease was not confirmed"),
        "{log}"
    );
    check_exactly_once(&broker.read("telemetry"), &job, &want);
    assert_eq!(setup.item(&job)["status"], "COMPLETED");
}

/// A Fargate task's credentials come from the container endpoint, through the same
/// chain as tvm-upload's: no keys in the environment; `check-config` names the source,
/// and a job's S3 reads, DynamoDB and Kafka work on what it fetched.
#[test]
fn a_task_takes_its_credentials_from_the_container_endpoint() {
    let setup = Setup::new("");
    let dir = setup.dir.path().join("provider");
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let mut provider = Command::new(tools_dir().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/creds_server.py"))
        .arg(port.to_string())
        .arg(&dir)
        .args(["--lifetime", "5"])
        .env("CREDS_ACCESS_KEY", ACCESS_KEY)
        .env("CREDS_SECRET_KEY", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("creds_server.py");
    common::wait_for_port(port, "creds_server.py");
    let (csv, want) = telemetry(150_000);
    setup.s3.client().put("task/t.csv", &csv);
    let with_endpoint = |args: &[&str]| {
        let mut c = setup.c2k(args);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://127.0.0.1:{port}/creds"),
            );
        c.output().expect("csv2kafka")
    };
    let out = with_endpoint(&["check-config"]);
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        err(&out).contains("from container endpoint"),
        "{}",
        err(&out)
    );
    let out = with_endpoint(&["run", &format!("s3://{BUCKET}/task/t.csv")]);
    let _ = provider.kill();
    let _ = provider.wait();
    assert!(out.status.success(), "{}", err(&out));
    common::assert_no_secrets(&err(&out));
    check_exactly_once(
        &setup.kafka.read("telemetry"),
        &format!("{BUCKET}/task/t.csv"),
        &want,
    );
    let served = std::fs::read_to_string(dir.join("served")).unwrap_or_default();
    assert!(
        served.lines().count() >= 2,
        "fetched once per run at least: {served}"
    );
}

/// A compressed object stopped mid-way resumes by decompressing from the start and
/// skipping what the checkpoint covers (exactly once); an object replaced under a
/// half-done job fails that job naming the change, not mixing two contents.
#[test]
fn a_compressed_object_resumes_mid_way_and_a_replaced_one_is_named() {
    let setup = Setup::new("");
    let (csv, want) = telemetry(300_000);
    let zst = zstd::encode_all(&csv[..], 3).expect("zstd");
    setup.s3.client().put("z/big.csv.zst", &zst);
    let job = format!("{BUCKET}/z/big.csv.zst");
    let url = format!("s3://{job}");
    let half_done = |job_id: &str| {
        let mut child = setup
            .c2k(&["run", "--job-id", job_id, &url])
            .spawn()
            .expect("spawn");
        common::wait_until(60, "a first checkpoint", || {
            setup.item(job_id)["last_line"].as_u64().unwrap_or(0) > 0
        });
        child.kill().expect("kill");
        let _ = child.wait();
        setup.item(job_id)["last_line"].as_u64().unwrap_or(0)
    };
    let at = half_done(&job);
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    assert!(at < 300_000, "killed after the end: nothing resumed");
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);

    half_done("replaced");
    setup.s3.client().put(
        "z/big.csv.zst",
        &zstd::encode_all(&b"a\n1\n"[..], 3).expect("zstd"),
    );
    let out = setup
        .c2k(&["run", "--job-id", "replaced", &url])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("PreconditionFailed"), "{}", err(&out));
    assert_eq!(setup.item("replaced")["status"], "FAILED");
}

#[test]
fn csv_as_it_really_is_and_compressed_objects() {
    let setup = Setup::new("");
    let text = b"a,b\n1,\"x\ny\"\n2,\"q\"\"\"\n3,\xff\n4,\"open\n5,last";
    // Row 4's quote is never closed: the rest of the object is that one malformed row
    // (a line break inside quotes does not start a row), as Python's csv module reads it.
    let gz = gzip(text);
    let client = setup.s3.client();
    client.put("in/plain.csv", text);
    client.put("in/packed.csv.gz", &gz);
    let zst = zstd::encode_all(&text[..], 3).expect("zstd");
    client.put("in/packed.csv.zst", &zst);
    client.put("in/header-only.csv", b"a,b\r\n");
    client.put("in/empty.csv", b"");
    client.put("in/not-csv.txt", b"x");
    let out = setup.run(&format!("s3://{BUCKET}/in/"));
    assert!(out.status.success(), "{}", err(&out));
    let messages = setup.kafka.read("telemetry");
    for key in ["in/plain.csv", "in/packed.csv.gz", "in/packed.csv.zst"] {
        let job = format!("{BUCKET}/{key}");
        let lines: BTreeMap<u64, String> = messages
            .iter()
            .filter(|m| m.2 == job)
            .map(|m| (m.3, m.4.clone()))
            .collect();
        assert_eq!(lines.keys().copied().collect::<Vec<_>>(), [1, 2], "{key}");
        assert_eq!(lines[&1], r#"{"a":"1","b":"x\ny"}"#);
        assert_eq!(lines[&2], r#"{"a":"2","b":"q\""}"#);
        let status = setup.status(&format!("s3://{job}"));
        assert_eq!(status["failed_rows"], 2, "{status}");
    }
    for key in ["in/header-only.csv", "in/empty.csv"] {
        let status = setup.status(&format!("s3://{BUCKET}/{key}"));
        assert_eq!(status["status"], "COMPLETED", "{key}: {status}");
        assert_eq!(status["total_lines"], 0, "{key}: {status}");
    }
    let human = setup
        .c2k(&["status", &format!("s3://{BUCKET}/in/plain.csv")])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("COMPLETED") && text.contains("line     4 of 4 (100.0%)"),
        "{text}"
    );
    let missing = setup
        .c2k(&["status", &format!("s3://{BUCKET}/in/not-csv.txt")])
        .output();
    assert!(
        !missing.expect("status").status.success(),
        "not a CSV: no job"
    );
}

#[test]
fn bad_input_exits_with_the_cause() {
    let mut setup = Setup::new("");
    let out = setup.run(&format!("s3://{BUCKET}/no/such.csv"));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("NoSuchKey"), "{}", err(&out));
    // Brokers that never answer: the job fails after kafka.connect_timeout_seconds,
    // named, its checkpoint where it was. (A missing topic fails it at once, but tansu
    // creates topics on demand.)
    setup.s3.client().put("k/a.csv", b"a,b\n1,2\n");
    let url = format!("s3://{BUCKET}/k/a.csv");
    setup.edit(|c| {
        c["kafka"]["bootstrap_servers"] = "127.0.0.1:1".into();
        c["kafka"]["connect_timeout_seconds"] = 3.into();
    });
    let started = std::time::Instant::now();
    let out = setup.run(&url);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("kafka.connect_timeout_seconds"),
        "{}",
        err(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(60), "bounded");
    assert_eq!(setup.status(&url)["last_line"], 0);
    let bootstrap = setup.kafka.bootstrap();
    setup.edit(|c| c["kafka"]["bootstrap_servers"] = bootstrap.into());
    let out = setup.run("ftp://x");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    std::fs::write(
        setup.config(),
        r#"{"kafka": {"bootstrap_servers": "x", "topic": "t", "properties": {"acks": "1"}},
            "s3": {"region": "us-east-1"}}"#,
    )
    .expect("config");
    let out = setup.run(&format!("s3://{BUCKET}/a.csv"));
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("`kafka.properties.acks`"),
        "{}",
        err(&out)
    );
    common::assert_no_secrets(&err(&out));
}

/// The whole pipeline: a CSV file on a vehicle, compressed by tvm-upload (a multipart
/// upload of several zstd frames), read by csv2kafka into Kafka, every row once.
#[test]
fn a_vehicle_csv_compressed_by_tvm_upload_reaches_kafka_row_by_row() {
    let setup = Setup::new("");
    let vehicle = common::Setup::new(
        &setup.s3.endpoint(),
        &[("telemetry", r#","compress":"zstd""#)],
        r#","multipart_threshold":"5MiB","part_size":"5MiB""#,
        "",
    );
    // A random id per row keeps the zstd stream near 10 MiB: two parts (frames) at least.
    let mut text = String::from("ts,vehicle,id,speed\n");
    let mut want = BTreeMap::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 1..=700_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (vehicle, id, speed) = (format!("v{}", i % 7), format!("{x:016x}"), i % 90);
        text.push_str(&format!("{i},{vehicle},{id},{speed}\n"));
        want.insert(
            i,
            serde_json::json!({"ts": i.to_string(), "vehicle": vehicle, "id": id,
                "speed": speed.to_string()})
            .to_string(),
        );
    }
    let path = vehicle.source("telemetry").join("drive-0001.csv");
    common::write(&path, text.as_bytes());
    common::age_file(&path, 3600);
    let out = vehicle.once();
    assert!(out.status.success(), "{}", err(&out));
    let key = common::key_for("telemetry", "drive-0001.csv", &path) + ".zst";
    let listed = setup.s3.client().list();
    let stored = listed.get(&key).copied().unwrap_or(0);
    assert!(
        stored > 6 << 20 && stored < text.len() as u64 / 2,
        "{key}: {stored} bytes of zstd for {} of CSV ({listed:?})",
        text.len()
    );

    let job = format!("{BUCKET}/{key}");
    let out = setup.run(&format!("s3://{job}"));
    assert!(out.status.success(), "{}", err(&out));
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{signal}");
}

/// Waits (up to `secs`) for the job's checkpoint item to satisfy `cond`.
fn wait_item(
    setup: &Setup,
    job: &str,
    secs: u64,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let item = setup.item(job);
        if cond(&item) {
            return item;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {item}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One pause: worker A streams `prefix` alone; once its checkpoint passes 40,000 rows it
/// is stopped (SIGSTOP). When `past_lease`, worker B takes the job over after the lease
/// ran out and streams on, and only then is A resumed (SIGCONT); otherwise A is resumed
/// inside its lease and B, started then, finds the job busy. Both run to the end; the
/// topic then holds every row exactly once.
fn pause_once(setup: &Setup, run: usize, past_lease: bool, key_column: bool) {
    let prefix = format!("pause-{run}/");
    let key = format!("{prefix}drive.csv");
    let (csv, want) = telemetry(200_000);
    setup.s3.client().put(&key, &csv);
    let job = format!("{BUCKET}/{key}");
    let url = format!("s3://{BUCKET}/{prefix}");
    let log = |name: &str| {
        std::fs::File::create(setup.dir.path().join(format!("{run}-{name}.log"))).expect("log")
    };
    let worker = |name: &str| {
        setup
            .c2k(&["run", &url])
            .stderr(log(name))
            .spawn()
            .expect("spawn")
    };
    let mut a = worker("a");
    let taken = wait_item(setup, &job, 60, "A's progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 40_000
    });
    signal(&a, "STOP");
    let a_owner = taken["lease_owner"].as_str().unwrap_or("").to_string();
    let mut b;
    if past_lease {
        b = worker("b");
        let line = taken["last_line"].as_u64().unwrap_or(0);
        let lease = env_or("C2K_PAUSE_LEASE", 5);
        wait_item(
            setup,
            &job,
            60 + 2 * lease,
            "B taking over and streaming",
            |i| {
                i["lease_owner"].as_str().is_some_and(|o| o != a_owner)
                    && i["last_line"].as_u64().unwrap_or(0) >= line + 20_000
            },
        );
        signal(&a, "CONT");
    } else {
        std::thread::sleep(Duration::from_millis(1500));
        signal(&a, "CONT");
        b = worker("b");
    }
    for (name, w) in [("A", &mut a), ("B", &mut b)] {
        let status = w.wait().expect("wait");
        let text = std::fs::read_to_string(
            setup
                .dir
                .path()
                .join(format!("{run}-{}.log", name.to_lowercase())),
        )
        .unwrap_or_default();
        assert!(status.success(), "worker {name} failed: {text}");
    }
    let messages = setup.kafka.read("telemetry");
    check_exactly_once(&messages, &job, &want);
    let status = setup.status_of(&job);
    assert_eq!(status["status"], "COMPLETED", "{status}");
    assert_eq!(status["total_sent"], want.len(), "{status}");
    if key_column {
        // Rows keyed by vehicle: seven keys, so the partitions each carry several.
        let partitions: std::collections::BTreeSet<i32> = messages
            .iter()
            .filter(|m| m.2 == job)
            .map(|m| m.0)
            .collect();
        assert!(partitions.len() > 1, "{partitions:?}");
    }
}

/// Exactly once for paused workers (SPEC-csv2kafka.md): a worker stopped past its lease
/// while another takes the job over, then resumed, sends no row its successor sends.
/// Five pauses, lease 5 s: longer and shorter than the lease, with and without
/// `key_column`. `C2K_PAUSE_RUNS` repeats the set; `C2K_PAUSE_LEASE` sets the lease
/// (60, the default, for the long run: pauses of about 75 s).
#[test]
fn a_paused_worker_sends_no_row_its_successor_sends() {
    let mut setup = Setup::new("");
    setup.edit(|c| c["checkpoint"]["lease_seconds"] = env_or("C2K_PAUSE_LEASE", 5).into());
    let repeats = env_or("C2K_PAUSE_RUNS", 1) as usize;
    let cases = [
        (true, false),
        (true, true),
        (false, false),
        (true, false),
        (false, true),
    ];
    for repeat in 0..repeats {
        for (i, (past_lease, key_column)) in cases.iter().enumerate() {
            setup.edit(|c| {
                c["kafka"]["key_column"] = if *key_column {
                    "vehicle".into()
                } else {
                    serde_json::Value::Null
                };
            });
            pause_once(&setup, repeat * cases.len() + i, *past_lease, *key_column);
        }
    }
}

/// The issue's records over the limit and a row the broker refuses: each is one
/// malformed record, dead-lettered by its beginning and marked so, and every later row
/// keeps its line number; headers that cannot name the columns fail the job, named.
#[test]
fn records_too_large_are_dead_lettered_whole_and_numbering_holds() {
    let setup = Setup::new("");
    let client = setup.s3.client();
    let mut quoted = b"a,b\n1,\"".to_vec();
    quoted.extend(b"p,q\n".repeat(300_000));
    quoted.extend(b"\"\n2,z\n");
    let mut unquoted = b"a,b\n1,".to_vec();
    unquoted.extend(std::iter::repeat_n(b'y', 1_500_000));
    unquoted.extend(b"\n2,z\n");
    // Under the record limit, over what the producer sends (message.max.bytes).
    let mut refused = b"a,b\n1,small\n2,".to_vec();
    refused.extend(std::iter::repeat_n(b'r', 1_020_000));
    refused.extend(b"\n3,small\n");
    for (name, body) in [
        ("quoted", &quoted),
        ("unquoted", &unquoted),
        ("refused", &refused),
    ] {
        client.put(&format!("big/{name}.csv"), body);
    }
    let out = setup.run(&format!("s3://{BUCKET}/big/"));
    assert!(out.status.success(), "{}", err(&out));
    let messages = setup.kafka.read("telemetry");
    let dead = setup.kafka.read_headers("dead-letters");
    let lines_of = |job: &str, of: &[(i32, i64, String, u64, String)]| -> Vec<u64> {
        let mut l: Vec<u64> = of.iter().filter(|m| m.2 == job).map(|m| m.3).collect();
        l.sort_unstable();
        l
    };
    for (name, total, good, bad) in [
        ("quoted", quoted.len() - 4 - 4, vec![2], 1),
        ("unquoted", unquoted.len() - 4 - 4, vec![2], 1),
        ("refused", 1_020_002, vec![1, 3], 2),
    ] {
        let job = format!("{BUCKET}/big/{name}.csv");
        assert_eq!(lines_of(&job, &messages), good, "{name}");
        let letters: Vec<_> = dead.iter().filter(|m| m.2 == job).collect();
        assert_eq!(letters.len(), 1, "{name}: one dead letter");
        let (_, _, _, line, value, headers) = letters[0];
        assert_eq!(*line, bad, "{name}");
        let unescaped = value.replace("\\n", "\n").len();
        assert!(
            unescaped < 1_000_000,
            "{name}: {unescaped} bytes, more than Kafka takes"
        );
        assert_eq!(
            headers["truncated_from_bytes"],
            total.to_string(),
            "{name}: {headers}"
        );
        let status = setup.status_of(&job);
        assert_eq!(status["status"], "COMPLETED", "{name}: {status}");
        assert_eq!(status["failed_rows"], 1, "{name}: {status}");
        assert_eq!(
            status["total_lines"],
            good.len() as u64 + 1,
            "{name}: {status}"
        );
    }
    let refused_letter = dead
        .iter()
        .find(|m| m.2.ends_with("refused.csv"))
        .expect("refused");
    assert!(
        refused_letter.5["refused"]
            .as_str()
            .is_some_and(|r| r.contains("more than Kafka takes")),
        "{}",
        refused_letter.5
    );

    for (name, body, why) in [
        ("dup", &b"a,a,b\n1,2,3\n"[..], "appears twice"),
        ("cr", b"a,b\r1,2\r3,4\r", "bare CR"),
    ] {
        client.put(&format!("bad/{name}.csv"), body);
        let out = setup.run(&format!("s3://{BUCKET}/bad/{name}.csv"));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", err(&out));
        assert!(err(&out).contains(why), "{name}: {}", err(&out));
        let status = setup.status(&format!("s3://{BUCKET}/bad/{name}.csv"));
        assert_eq!(status["status"], "FAILED", "{name}: {status}");
    }
}

/// A `.csv` stored gzip-compressed with `Content-Encoding: gzip` (boto3 puts it): killed
/// mid-job, the restart reads it compressed again (a ranged GET of the decompressed
/// offset was refused with 416 and failed the job); every row once.
#[test]
fn a_csv_with_content_encoding_gzip_resumes_after_a_kill() {
    let setup = Setup::new("");
    let (csv, want) = telemetry(300_000);
    let packed = gzip(&csv);
    let file = setup.dir.path().join("encoded.gz");
    std::fs::write(&file, &packed).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/s3.py");
    let put = Command::new(tools_dir().join("venv/bin/python"))
        .arg(script)
        .args([&setup.s3.endpoint(), "put-encoded", BUCKET, "enc/drive.csv"])
        .arg(&file)
        .args(["gzip", ACCESS_KEY, SECRET_KEY])
        .envs(common::passthrough_env())
        .output()
        .expect("s3.py");
    assert!(put.status.success(), "{}", err(&put));
    let job = format!("{BUCKET}/enc/drive.csv");
    let url = format!("s3://{job}");
    let mut child = setup.c2k(&["run", &url]).spawn().expect("spawn");
    wait_item(&setup, &job, 60, "progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 20_000
    });
    child.kill().expect("kill");
    let _ = child.wait();
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
    assert_eq!(setup.item(&job)["codec"], "gzip");
}

/// A job resumed under another layout (here `kafka.key_column` set after a kill) would
/// look for its landed rows in the wrong partitions: it fails, named, and its checkpoint
/// stays; with the layout restored it resumes and every row is there once.
#[test]
fn a_resume_under_another_layout_is_refused_named() {
    let mut setup = Setup::new("");
    let (csv, want) = telemetry(200_000);
    setup.s3.client().put("layout/drive.csv", &csv);
    let job = format!("{BUCKET}/layout/drive.csv");
    let url = format!("s3://{job}");
    let mut child = setup.c2k(&["run", &url]).spawn().expect("spawn");
    let before = wait_item(&setup, &job, 60, "progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 20_000
    });
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(
        before["layout"]
            .as_str()
            .is_some_and(|l| l.contains("telemetry of 3 partitions")),
        "{before}"
    );
    setup.edit(|c| c["kafka"]["key_column"] = "vehicle".into());
    let out = setup.run(&url);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("would resume with"), "{}", err(&out));
    assert_eq!(setup.status(&url)["status"], "FAILED");
    setup.edit(|c| c["kafka"]["key_column"] = serde_json::Value::Null);
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
}

/// SIGTERM gives the lease back (it was kept: the next `run` waited for it to expire):
/// the item's `lease_expires` is 0 and the next worker starts at once, without the
/// takeover wait.
#[test]
fn sigterm_gives_the_lease_back() {
    let setup = Setup::new("");
    let (csv, want) = telemetry(200_000);
    setup.s3.client().put("term/drive.csv", &csv);
    let job = format!("{BUCKET}/term/drive.csv");
    let url = format!("s3://{job}");
    let child = setup.c2k(&["run", &url]).spawn().expect("spawn");
    wait_item(&setup, &job, 60, "progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 20_000
    });
    signal(&child, "TERM");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(setup.item(&job)["lease_expires"], 0);
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    assert!(!err(&out).contains("took over"), "{}", err(&out));
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
}

/// Streams `key` (150,000 rows) and, once 50,000 are checkpointed, makes the broker lose
/// them: the worker is paused (SIGSTOP), the topic deleted and created again, the worker
/// resumed. Returns the job id, the rows wanted, and the worker's log.
fn lose_rows_mid_job(setup: &Setup, key: &str) -> (String, BTreeMap<u64, String>, String) {
    let (csv, want) = telemetry(150_000);
    setup.s3.client().put(key, &csv);
    let job = format!("{BUCKET}/{key}");
    let log = setup
        .dir
        .path()
        .join(format!("{}.log", key.replace('/', "-")));
    let child = setup
        .c2k(&["run", &format!("s3://{job}")])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    wait_item(setup, &job, 60, "progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 50_000
    });
    signal(&child, "STOP");
    setup.kafka.recreate_topic("telemetry", 3);
    signal(&child, "CONT");
    let out = child.wait_with_output().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{text}");
    (job, want, text)
}

/// SPEC-csv2kafka.md: COMPLETED means every row was read back from Kafka. A broker that
/// loses rows it acknowledged (tansu restarted on storage that had not kept them; here,
/// deterministically, the topic deleted and created again under a running job) is caught
/// by the verification pass, which sends the lost rows again. The same loss with
/// `checkpoint.verify` off shows what the pass is for: COMPLETED with rows missing.
#[test]
fn rows_the_broker_lost_are_read_back_missing_and_sent_again() {
    let mut setup = Setup::new("");
    setup.edit(|c| c["checkpoint"]["verify"] = false.into());
    let (blind, want, _) = lose_rows_mid_job(&setup, "lost/unverified.csv");
    let landed = setup
        .kafka
        .read("telemetry")
        .iter()
        .filter(|m| m.2 == blind)
        .count();
    assert!(
        landed < want.len() - 40_000,
        "the loss happened: {landed} rows"
    );
    assert_eq!(setup.status_of(&blind)["status"], "COMPLETED");

    setup.edit(|c| c["checkpoint"]["verify"] = true.into());
    let (job, want, log) = lose_rows_mid_job(&setup, "lost/verified.csv");
    assert!(log.contains("the broker lost them"), "{log}");
    assert!(log.contains("every one read back"), "{log}");
    check_once(&setup.kafka.read("telemetry"), &job, &want, false);
    let item = setup.item(&job);
    assert_eq!(item["status"], "COMPLETED", "{item}");
    assert_eq!(item["repairs"], 1, "{item}");
    assert_eq!(item["total_sent"], want.len(), "{item}");
    assert_eq!(item["last_line"], 150_000, "{item}");
}

/// Point 2 of the issue: a resume scan slower than the lease. Job A is killed early;
/// job B then puts 100,000 rows into the same topic; the broker's answers are slowed
/// (a relay pacing them) so that A's scan over B's rows outlasts A's 5 s lease. Two
/// workers on A's prefix: the scan renews the lease as it goes, so the job is finished
/// by one of them rather than passed back and forth, every row exactly once.
#[test]
fn a_resume_scan_slower_than_the_lease_still_progresses() {
    let mut setup = Setup::new("");
    let (broker, relay) = behind_relay(&mut setup);
    let (csv, want) = telemetry(60_000);
    setup.s3.client().put("slow/a/drive.csv", &csv);
    let job = format!("{BUCKET}/slow/a/drive.csv");
    // A sends slowly (256 KiB/s up, about 10 s for its 60,000 rows), so that it is
    // killed early whatever the machine's speed: at full speed it can finish between two
    // polls of its checkpoint, and pacing only the broker's small answers did not stop
    // that on a fast CI machine.
    relay.throttle_sends(256 << 10);
    let mut a = setup
        .c2k(&["run", &format!("s3://{job}")])
        .spawn()
        .expect("spawn");
    wait_item(&setup, &job, 60, "A's progress", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 4_000
    });
    a.kill().expect("SIGKILL");
    a.wait().expect("wait");
    relay.throttle_sends(0);
    assert_ne!(
        setup.item(&job)["status"],
        "COMPLETED",
        "A was killed mid-job"
    );
    let (other, _) = telemetry(100_000);
    setup.s3.client().put("slow/b.csv", &other);
    let out = setup.run(&format!("s3://{BUCKET}/slow/b.csv"));
    assert!(out.status.success(), "{}", err(&out));

    relay.throttle(1 << 20);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            setup
                .c2k(&["run", &format!("s3://{BUCKET}/slow/a/")])
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut logs = String::new();
    for w in workers {
        let out = w.wait_with_output().expect("wait");
        logs.push_str(&err(&out));
        assert!(out.status.success(), "{}", err(&out));
    }
    relay.throttle(0);
    // The scan really outlasted the lease: from "resuming" to the first row sent.
    let resumed = logs.lines().position(|l| l.contains("resuming after line"));
    let resumed = resumed.unwrap_or_else(|| panic!("no resume: {logs}"));
    let lines: Vec<&str> = logs.lines().collect();
    let sent = lines[resumed..]
        .iter()
        .find(|l| l.contains("%, ") || l.contains("COMPLETED"))
        .unwrap_or_else(|| panic!("nothing sent: {logs}"));
    let took = seconds_of(sent) - seconds_of(lines[resumed]);
    assert!(
        took > 5.0,
        "the scan took {took:.1}s, inside the lease: {logs}"
    );
    assert!(
        logs.matches("lost its lease").count() <= 1,
        "the job went back and forth: {logs}"
    );
    check_exactly_once(&broker.read("telemetry"), &job, &want);
}

/// The seconds within the day of a log line's timestamp (`2026-12-05T19:32:13.06Z ...`).
fn seconds_of(line: &str) -> f64 {
    let time = line
        .get(11..)
        .and_then(|t| t.split('Z').next())
        .unwrap_or("");
    let parts: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    assert_eq!(parts.len(), 3, "no timestamp in {line:?}");
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// Certificates made with Debian's openssl in `dir`: a CA, the broker's (for 127.0.0.1),
/// a client's, a broker certificate for another host, and a CA nobody trusts.
fn make_pki(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("bash")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key 2>/dev/null; }
        ca() { key $1; openssl req -x509 -new -key $1.key -out $1.pem -days 2 -subj /CN=$1; }
        cert() { key $1; openssl req -new -key $1.key -out $1.csr -subj /CN=$1
                 printf '%s' \"$3\" > $1.ext
                 openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial \\
                   -out $1.pem -days ${days:-2} -extfile $1.ext 2>/dev/null; }
        ca ca; ca rogue
        cert broker ca 'subjectAltName=IP:127.0.0.1'
        cert elsewhere ca 'subjectAltName=DNS:kafka.elsewhere.example'
        cert client ca 'extendedKeyUsage=clientAuth'
        days=-1 cert expired ca 'subjectAltName=IP:127.0.0.1'");
}

/// socat's TLS listener on `port` in front of the broker on `upstream`, presenting
/// `cert`; with `clients`, only clients with a certificate of the CA get through.
struct TlsFront(Child);

impl TlsFront {
    fn start(pki: &Path, port: u16, upstream: u16, cert: &str, clients: bool) -> TlsFront {
        let p = |f: &str| pki.join(f).display().to_string();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify={}",
            p(&format!("{cert}.pem")),
            p(&format!("{cert}.key")),
            p("ca.pem"),
            u8::from(clients)
        );
        let child = Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:127.0.0.1:{upstream}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        common::wait_for_port(port, "socat");
        TlsFront(child)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SPEC-csv2kafka.md, `kafka.properties`: TLS the librdkafka way. Mutual TLS in front of
/// the broker (socat, client certificates required): a job streams, is SIGKILLed and
/// resumes (its resume scan over TLS too), every row exactly once. Then each mistake an
/// operator makes fails the job in bounded time, exit 1, the cause named and the
/// checkpoint where it was: no client certificate, a CA that did not sign the broker's,
/// a broker certificate for another host.
#[test]
fn mutual_tls_streams_resumes_and_names_what_is_wrong() {
    let mut setup = Setup::new("");
    let pki = setup.dir.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    make_pki(&pki);
    let tls_port = free_port();
    let mut broker = Broker::advertising(free_port(), tls_port);
    broker.tls = Some((tls_port, pki.clone()));
    broker.create_topic("telemetry", 3);
    broker.create_topic("dead-letters", 1);
    let front = TlsFront::start(&pki, tls_port, broker.port, "broker", true);
    let file = |f: &str| pki.join(f).display().to_string();
    setup.bootstrap_at(&format!("127.0.0.1:{tls_port}"));
    let tls = serde_json::json!({
        "security.protocol": "SSL", "ssl.ca.location": file("ca.pem"),
        "ssl.certificate.location": file("client.pem"), "ssl.key.location": file("client.key")});
    setup.edit(|c| c["kafka"]["properties"] = tls.clone());
    let (csv, want) = telemetry(120_000);
    setup.s3.client().put("tls/drive.csv", &csv);
    let job = format!("{BUCKET}/tls/drive.csv");
    let url = format!("s3://{job}");
    let child = setup.c2k(&["run", &url]).spawn().expect("spawn");
    wait_item(&setup, &job, 60, "progress over TLS", |i| {
        i["last_line"].as_u64().unwrap_or(0) >= 20_000
    });
    let mut child = child;
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    check_exactly_once(&broker.read("telemetry"), &job, &want);

    setup.s3.client().put("tls/other.csv", b"a,b\n1,2\n");
    let other = format!("s3://{BUCKET}/tls/other.csv");
    setup.edit(|c| c["kafka"]["connect_timeout_seconds"] = 5.into());
    let wrong = |why: &str, props: serde_json::Value, named: &[&str]| {
        setup.write_config(&{
            let text = std::fs::read_to_string(setup.config()).expect("config");
            let mut c: serde_json::Value = serde_json::from_str(&text).expect("json");
            c["kafka"]["properties"] = props;
            c
        });
        let started = std::time::Instant::now();
        let out = setup.run(&other);
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{why}: {}", err(&out));
        assert!(took < Duration::from_secs(60), "{why}: took {took:?}");
        let said = err(&out);
        assert!(
            named.iter().any(|n| said.contains(n)),
            "{why}: none of {named:?} in {said}"
        );
        assert_eq!(setup.status(&other)["last_line"], 0, "{why}");
    };
    let mut no_client = tls.clone();
    no_client
        .as_object_mut()
        .expect("object")
        .remove("ssl.certificate.location");
    no_client
        .as_object_mut()
        .expect("object")
        .remove("ssl.key.location");
    wrong(
        "no client certificate",
        no_client,
        &["alert certificate required"],
    );
    let mut rogue = tls.clone();
    rogue["ssl.ca.location"] = file("rogue.pem").into();
    wrong("an unknown CA", rogue, &["(an unknown CA)"]);
    drop(front);
    let front = TlsFront::start(&pki, tls_port, broker.port, "elsewhere", true);
    wrong(
        "another host's certificate",
        tls.clone(),
        &["is not issued for 127.0.0.1 (a name mismatch)"],
    );
    drop(front);
    let _front = TlsFront::start(&pki, tls_port, broker.port, "expired", true);
    wrong("an expired certificate", tls, &["it has expired"]);
}

/// SPEC-csv2kafka.md, `AWS_MSK_IAM`: csv2kafka's token is AWS's, byte for byte. The
/// oracle is AWS's own signer from PyPI (`aws-msk-iam-sasl-signer-python`, pinned in
/// scripts/test-tools.lock) given the same credentials, region and time, with and
/// without a session token.
#[test]
fn the_msk_iam_token_is_the_one_aws_signer_makes() {
    use tvm_upload::credentials::Credentials;
    use tvm_upload::csv2kafka::msk;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/msk_token.py");
    for (session, region, t) in [
        (None, "us-east-1", 1_764_000_000_i64),
        (
            Some("IQoJb3JpZ2luX2VjE/+tok=="),
            "cn-north-1",
            1_780_123_457,
        ),
    ] {
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(&script)
            .args([ACCESS_KEY, SECRET_KEY, session.unwrap_or("-"), region])
            .arg(t.to_string())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("msk_token.py");
        assert!(out.status.success(), "{}", err(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let (theirs, expiry) = (lines.next().expect("token"), lines.next().expect("expiry"));
        let creds = Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: session.map(str::to_string),
            source: "test".into(),
            expires: None,
        };
        let ours = msk::token(&creds, region, t, "aws-msk-iam-sasl-signer-python/1.0.2");
        assert_eq!(ours.value, theirs, "{region} at {t}");
        assert_eq!(ours.expires_ms.to_string(), expiry);
    }
}

/// The token source renews ahead of expiry on its own thread, with the credentials the
/// chain holds then: credentials from a container endpoint that live 20 s give tokens that
/// expire with them, and once the first token has expired the one handed out is a new
/// one, signed with newer credentials (another session token) and still valid.
#[test]
fn msk_iam_tokens_are_renewed_before_they_or_their_credentials_expire() {
    use tvm_upload::credentials::{Provider, Source};
    use tvm_upload::csv2kafka::msk;
    let dir = TempDir::new("msk");
    let port = free_port();
    let mut server = Command::new(tools_dir().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/creds_server.py"))
        .arg(port.to_string())
        .arg(dir.path())
        .args(["--lifetime", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("creds_server.py");
    common::wait_for_port(port, "creds_server.py");
    let url = format!("http://127.0.0.1:{port}/creds");
    let env = |k: &str| match k {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some(url.clone()),
        "AWS_EC2_METADATA_DISABLED" => Some("true".to_string()),
        _ => None,
    };
    let source = Source::choose(None, None, &env).expect("source");
    let provider = Provider::start(source).expect("provider");
    let tokens = msk::Tokens::start(provider, "eu-west-1".into());
    let first = tokens.current(Duration::from_secs(10)).expect("a token");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as i64
    };
    assert!(
        first.expires_ms <= now_ms() + 21_000,
        "outlives its credentials"
    );
    while now_ms() < first.expires_ms + 500 {
        std::thread::sleep(Duration::from_millis(250));
    }
    let later = tokens.current(Duration::from_secs(10)).expect("a token");
    let _ = server.kill();
    let _ = server.wait();
    assert_ne!(later, first);
    assert!(
        later.expires_ms > now_ms(),
        "the token handed out has expired"
    );
}

/// SPEC-csv2kafka.md, `check-config --connect` and `kafka.properties`: every Kafka
/// problem named before a job starts. An unknown or refused librdkafka property is a
/// config error (exit 2, named) for `check-config` and `run` alike, and `run` leaves no
/// checkpoint; `--connect` reaches the brokers and the topics (exit 2 on any FAILED);
/// a password read from the environment (`env:NAME`) appears nowhere.
#[test]
fn check_config_connect_names_every_kafka_problem() {
    let mut setup = Setup::new("");
    let out = setup
        .c2k(&["check-config", "--connect"])
        .output()
        .expect("check");
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        err(&out).contains("ok     kafka.topic: telemetry has 3 partitions"),
        "{}",
        err(&out)
    );
    assert!(
        err(&out).contains("ok     kafka.dead_letter_topic: dead-letters has 1"),
        "{}",
        err(&out)
    );

    setup.s3.client().put("cc/a.csv", b"a,b\n1,2\n");
    let url = format!("s3://{BUCKET}/cc/a.csv");
    for (props, named) in [
        (
            serde_json::json!({"no.such.property": "1"}),
            "no.such.property",
        ),
        (
            serde_json::json!({"compression.type": "sideways"}),
            "compression.type",
        ),
    ] {
        setup.edit(|c| c["kafka"]["properties"] = props.clone());
        for args in [vec!["check-config"], vec!["run", url.as_str()]] {
            let out = setup.c2k(&args).output().expect("csv2kafka");
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", err(&out));
            assert!(err(&out).contains(named), "{args:?}: {}", err(&out));
        }
    }
    assert!(
        setup
            .item(&format!("{BUCKET}/cc/a.csv"))
            .get("status")
            .is_none()
    );

    // (A missing topic is FAILED by name too, but tansu creates topics on demand.)
    setup.edit(|c| c["kafka"]["properties"] = serde_json::json!({}));
    setup.edit(|c| {
        c["kafka"]["topic"] = "telemetry".into();
        c["kafka"]["bootstrap_servers"] = "127.0.0.1:1".into();
        c["kafka"]["connect_timeout_seconds"] = 3.into();
    });
    let out = setup
        .c2k(&["check-config", "--connect"])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("FAILED kafka.topic: Kafka at 127.0.0.1:1"),
        "{}",
        err(&out)
    );

    let secret = "hunter2-do-not-print";
    setup.bootstrap_at(&setup.kafka.bootstrap());
    setup.edit(|c| {
        c["kafka"]["properties"] = serde_json::json!({
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
            "sasl.username": "fleet", "sasl.password": "env:C2K_KAFKA_PASSWORD"});
    });
    let out = setup.c2k(&["check-config"]).output().expect("check");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("C2K_KAFKA_PASSWORD, which is not set"),
        "{}",
        err(&out)
    );
    let out = setup
        .c2k(&["check-config"])
        .env("C2K_KAFKA_PASSWORD", secret)
        .output()
        .expect("check");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), err(&out));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("\"sasl.password\": \"env:C2K_KAFKA_PASSWORD\""),
        "{said}"
    );
    assert!(said.contains("\"sasl.username\": \"<redacted>\""), "{said}");
    assert!(!said.contains(secret), "{said}");
    let out = setup
        .c2k(&["check-config", "--connect"])
        .env("C2K_KAFKA_PASSWORD", secret)
        .output()
        .expect("check");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), err(&out));
    assert_eq!(out.status.code(), Some(2), "tansu takes no SASL: {said}");
    assert!(
        said.contains("SASL PLAIN mechanism handshake failed"),
        "{said}"
    );
    assert!(!said.contains(secret), "{said}");
    let out = setup
        .c2k(&["run", &url])
        .env("C2K_KAFKA_PASSWORD", secret)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(!err(&out).contains(secret), "{}", err(&out));
}

/// SPEC-csv2kafka.md, `csv.columns`: declared columns become JSON numbers and booleans
/// (a number exactly as written, an empty field `null`), the rest stay strings (`007`
/// unchanged); a field that is not of its type makes the row malformed: dead-lettered
/// with its raw bytes, the rows after it unaffected.
#[test]
fn typed_columns_become_numbers_and_booleans_or_the_row_is_malformed() {
    let mut setup = Setup::new("");
    setup.edit(|c| {
        c["csv"] =
            serde_json::json!({"columns": {"speed": "number", "ok": "bool", "vin": "string"}});
    });
    let csv =
        "vin,speed,ok,note\n007,12.50,true,a\n008,fast,false,b\n009,,TRUE,c\n010,-1e3,False,d\n";
    setup.s3.client().put("typed/t.csv", csv.as_bytes());
    let job = format!("{BUCKET}/typed/t.csv");
    let out = setup.run(&format!("s3://{job}"));
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        err(&out).contains(r#"line 2: malformed (column "speed" is a number: "fast" is not one)"#),
        "{}",
        err(&out)
    );
    let rows: BTreeMap<u64, String> = setup
        .kafka
        .read("telemetry")
        .into_iter()
        .filter(|m| m.2 == job)
        .map(|m| (m.3, m.4))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[&1],
        r#"{"vin":"007","speed":12.50,"ok":true,"note":"a"}"#
    );
    assert_eq!(
        rows[&3],
        r#"{"vin":"009","speed":null,"ok":true,"note":"c"}"#
    );
    assert_eq!(
        rows[&4],
        r#"{"vin":"010","speed":-1e3,"ok":false,"note":"d"}"#
    );
    let dead: Vec<_> = setup
        .kafka
        .read("dead-letters")
        .into_iter()
        .filter(|m| m.2 == job)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].3, dead[0].4.as_str()), (2, "008,fast,false,b"));
    setup.edit(|c| c["csv"] = serde_json::json!({"columns": {"speed": "float"}}));
    let out = setup.c2k(&["check-config"]).output().expect("check");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("csv.columns.speed"), "{}", err(&out));
}
