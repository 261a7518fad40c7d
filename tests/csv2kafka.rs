//! csv2kafka end to end, against real servers: s3s-fs (the objects), moto (DynamoDB
//! checkpoints, CloudWatch), tansu (Kafka), read back with confluent-kafka. Rows exactly
//! once across SIGKILLs, CSV as it really is, the checkpoint item, and bad input.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{ACCESS_KEY, BUCKET, Kind, SECRET_KEY, Server, TempDir, free_port, tools_dir};

/// A tansu broker on loopback, in memory; stopped on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tools_dir().join("bin/tansu"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        common::wait_for_port(port, "tansu");
        Broker { child, port }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tools_dir().join("bin/tansu"))
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every message of `topic`: (partition, offset, job, line, value).
    fn read(&self, topic: &str) -> Vec<(i32, i64, String, u64, String)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/kafka_read.py");
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .args([&self.bootstrap(), topic])
            .output()
            .expect("kafka_read.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(5, '\t').collect();
                (
                    f[0].parse().expect("partition"),
                    f[1].parse().expect("offset"),
                    f[2].to_string(),
                    f[3].parse().unwrap_or(0),
                    f[4].to_string(),
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
        let config = format!(
            r#"{{"kafka": {{"bootstrap_servers": "{}", "topic": "telemetry",
                 "dead_letter_topic": "dead-letters"}},
               "s3": {{"region": "us-east-1", "endpoint": "{}", "path_style": true}},
               "checkpoint": {{"endpoint": "{}", "interval_lines": 2000, "lease_seconds": 5}},
               "metrics": {{"endpoint": "{}", "interval_seconds": 1}}{extra}}}"#,
            setup.kafka.bootstrap(),
            setup.s3.endpoint(),
            setup.aws.endpoint(),
            setup.aws.endpoint()
        );
        std::fs::write(setup.config(), config).expect("config");
        let out = setup.c2k(&["create-table"]).output().expect("create-table");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        setup
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
        let out = self
            .c2k(&["status", url, "--json"])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }
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
    let mine: Vec<_> = messages.iter().filter(|m| m.2 == job).collect();
    let mut seen = BTreeMap::new();
    let mut last_in_partition: BTreeMap<i32, u64> = BTreeMap::new();
    for (p, _, _, line, value) in &mine {
        assert!(
            seen.insert(*line, value.clone()).is_none(),
            "line {line} twice"
        );
        let last = last_in_partition.entry(*p).or_insert(0);
        assert!(*line > *last, "line {line} after {last} in partition {p}");
        *last = *line;
    }
    assert_eq!(seen.len(), want.len(), "rows in the topic");
    for (line, value) in want {
        let got: serde_json::Value = serde_json::from_str(&seen[line]).expect("json value");
        let expected: serde_json::Value = serde_json::from_str(value).expect("json");
        assert_eq!(got, expected, "line {line}");
    }
}

#[test]
fn rows_land_exactly_once_across_kills() {
    let setup = Setup::new("");
    let rows = 60_000;
    let (csv, want) = telemetry(rows);
    setup.s3.client().put("fleet/v001/drive.csv", &csv);
    let url = format!("s3://{BUCKET}/fleet/v001/drive.csv");
    let mut kills = 0;
    for delay_ms in [300u64, 700, 450, 900, 350, 600] {
        let mut child = setup.c2k(&["run", &url]).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            kills += 1;
        }
        let _ = child.wait();
    }
    let out = setup.run(&url);
    assert!(out.status.success(), "{}", err(&out));
    println!("{kills} SIGKILLs before the last run");
    let job = format!("{BUCKET}/fleet/v001/drive.csv");
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
    let dead: Vec<_> = setup
        .kafka
        .read("dead-letters")
        .into_iter()
        .filter(|m| m.2 == job)
        .collect();
    assert_eq!(
        dead.len() as u64,
        rows / 5000,
        "one dead letter per broken row"
    );
    assert!(dead.iter().all(|m| m.4 == "broken,row"));
    let status = setup.status(&url);
    assert_eq!(status["status"], "COMPLETED", "{status}");
    assert_eq!(status["last_line"], rows, "{status}");
    assert_eq!(status["total_lines"], rows, "{status}");
    assert_eq!(status["failed_rows"], rows / 5000, "{status}");
    // Run again: COMPLETED is not sent twice.
    let again = setup.run(&url);
    assert!(again.status.success(), "{}", err(&again));
    assert!(err(&again).contains("already COMPLETED"), "{}", err(&again));
    check_exactly_once(&setup.kafka.read("telemetry"), &job, &want);
}

#[test]
fn csv_as_it_really_is_and_compressed_objects() {
    let setup = Setup::new("");
    let text = b"a,b\n1,\"x\ny\"\n2,\"q\"\"\"\n3,\xff\n4,\"open\n5,last";
    let gz = {
        use std::io::Write;
        let mut child = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text)
            .expect("write");
        child.wait_with_output().expect("gzip").stdout
    };
    let client = setup.s3.client();
    client.put("in/plain.csv", text);
    client.put("in/packed.csv.gz", &gz);
    client.put("in/header-only.csv", b"a,b\r\n");
    client.put("in/empty.csv", b"");
    client.put("in/not-csv.txt", b"x");
    let out = setup.run(&format!("s3://{BUCKET}/in/"));
    assert!(out.status.success(), "{}", err(&out));
    let messages = setup.kafka.read("telemetry");
    for key in ["in/plain.csv", "in/packed.csv.gz"] {
        let job = format!("{BUCKET}/{key}");
        let lines: BTreeMap<u64, String> = messages
            .iter()
            .filter(|m| m.2 == job)
            .map(|m| (m.3, m.4.clone()))
            .collect();
        assert_eq!(
            lines.keys().copied().collect::<Vec<_>>(),
            [1, 2, 5],
            "{key}"
        );
        assert_eq!(lines[&1], r#"{"a":"1","b":"x\ny"}"#);
        assert_eq!(lines[&2], r#"{"a":"2","b":"q\""}"#);
        assert_eq!(lines[&5], r#"{"a":"5","b":"last"}"#);
        let status = setup.status(&format!("s3://{job}"));
        assert_eq!(status["failed_rows"], 2, "{status}");
    }
    for key in ["in/header-only.csv", "in/empty.csv"] {
        let status = setup.status(&format!("s3://{BUCKET}/{key}"));
        assert_eq!(status["status"], "COMPLETED", "{key}: {status}");
        assert_eq!(status["total_lines"], 0, "{key}: {status}");
    }
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
    let setup = Setup::new("");
    let out = setup.run(&format!("s3://{BUCKET}/no/such.csv"));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("NoSuchKey"), "{}", err(&out));
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
