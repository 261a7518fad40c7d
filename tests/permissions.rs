//! The least-privilege policy of docs/GUIDE.md ("Permissions"), proved against moto
//! with IAM enforced: the daemon's key is bound to exactly that policy (read from the
//! guide), and every feature runs (single PUTs, a copy made on the server, a multipart
//! upload resumed after a SIGKILL whose CreateMultipartUpload answer was lost (so the
//! orphan is listed and aborted), a wiped state dir answered by the conditional write,
//! metrics, and a fleet request listed, read and answered). Then each permission is
//! taken out in turn, and some feature fails with an error naming it: none is extra.
//!
//! Three things of moto's are worked around here. It checks only header signatures, and
//! the daemon presigns its S3 requests:
//! tests/common/iam_proxy.py checks each presigned signature with botocore and passes
//! the request on signed in the header with the same key, so moto decides on it. It
//! evaluates no IAM condition but `sts:ExternalId` (a statement with another one
//! denies), so the policy's two conditions (`s3:prefix`, `cloudwatch:namespace`) are
//! taken out here; their keys are AWS's documented ones. And moto 5.2 checks some
//! requests against the API operation's name rather than the IAM action AWS documents
//! for it (`s3:CreateMultipartUpload`, `s3:UploadPart`, `s3:ListObjectsV2`,
//! `monitoring:PutMetricData` where IAM has `s3:PutObject`, `s3:ListBucket`,
//! `cloudwatch:PutMetricData`): [`moto_names`] translates each action of the policy into
//! the operations AWS's "Actions, resources, and condition keys" pages say it allows.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

/// The policy as the guide gives it, for this test's bucket and namespace, without its
/// conditions (see the module's documentation).
fn guide_policy() -> serde_json::Value {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/GUIDE.md"))
        .expect("docs/GUIDE.md");
    let section = guide
        .split("## Permissions (least privilege)")
        .nth(1)
        .expect("the guide's Permissions section");
    let json = section
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its policy");
    let json = json
        .replace("arn:aws-cn:", "arn:aws:")
        .replace(":::t01logs", &format!(":::{BUCKET}"));
    let mut policy: serde_json::Value = serde_json::from_str(&json).expect("the policy parses");
    for s in policy["Statement"].as_array_mut().expect("statements") {
        s.as_object_mut().expect("statement").remove("Condition");
    }
    policy
}

/// The names moto checks the requests an IAM action allows under (see the module's
/// documentation): the action itself and the API operations AWS documents it for.
fn moto_names(action: &str) -> Vec<&str> {
    let ops: &[&str] = match action {
        "s3:PutObject" => &[
            "s3:CreateMultipartUpload",
            "s3:UploadPart",
            "s3:CompleteMultipartUpload",
            "s3:CopyObject",
        ],
        "s3:GetObject" => &["s3:HeadObject"],
        "s3:ListMultipartUploadParts" => &["s3:ListParts"],
        "s3:ListBucketMultipartUploads" => &["s3:ListMultipartUploads"],
        "s3:ListBucket" => &["s3:ListObjectsV2", "s3:ListObjects"],
        "cloudwatch:PutMetricData" => return vec!["monitoring:PutMetricData"],
        _ => &[],
    };
    std::iter::once(action).chain(ops.iter().copied()).collect()
}

/// The policy as moto must be given it to decide as IAM does.
fn for_moto(policy: &serde_json::Value) -> serde_json::Value {
    let mut p = policy.clone();
    for s in p["Statement"].as_array_mut().expect("statements") {
        let names: Vec<&str> = match &s["Action"] {
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            serde_json::Value::String(a) => vec![a.as_str()],
            _ => Vec::new(),
        };
        let moto: Vec<&str> = names.into_iter().flat_map(moto_names).collect();
        s["Action"] = serde_json::json!(moto);
    }
    p
}

/// Every action the policy grants.
fn actions(policy: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().expect("statements") {
        match &s["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(a) => {
                out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)))
            }
            _ => {}
        }
    }
    out
}

/// The policy without `action` (a statement left with none is dropped).
fn without(policy: &serde_json::Value, action: &str) -> serde_json::Value {
    let mut p = policy.clone();
    let statements = p["Statement"].as_array_mut().expect("statements");
    for s in statements.iter_mut() {
        match &mut s["Action"] {
            serde_json::Value::Array(a) => a.retain(|x| x != action),
            serde_json::Value::String(a) if a == action => s["Action"] = serde_json::json!([]),
            _ => {}
        }
    }
    statements.retain(|s| s["Action"] != serde_json::json!([]));
    p
}

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new(tools_dir().join("venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(passthrough_env())
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto");
        wait_for_port(port, "moto");
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// tests/common/iam.py's answer.
    fn py(&self, args: &[&str]) -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/iam.py");
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .arg(self.endpoint())
            .args(args)
            .envs(passthrough_env())
            .output()
            .expect("iam.py");
        assert!(
            out.status.success(),
            "iam.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("iam.py json")
    }
}

/// The presign-to-header proxy in front of moto for one key.
struct IamProxy {
    child: Child,
    port: u16,
}

impl Drop for IamProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IamProxy {
    fn start(moto: &Moto, key: &[String; 2]) -> IamProxy {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/iam_proxy.py");
        let mut child = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .args([&port.to_string(), &moto.endpoint(), &key[0], &key[1]])
            .arg("lose-first-create")
            .envs(passthrough_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iam_proxy.py");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("ready");
        assert_eq!(line.trim(), "ready");
        IamProxy { child, port }
    }
}

/// What one run of every feature left: the logs, and what the admin reads back.
struct Outcome {
    log: String,
    keys: Vec<String>,
    metrics: Vec<String>,
}

/// Runs every feature as `vehicle`, whose key is `key`: a request object waiting, two
/// files with one content and a 12 MiB one sent in parts; SIGKILL once the first part
/// is stored, a restart that resumes it; then the state dir wiped and `once` again.
/// Each wait ends early once `enough` holds of the logs so far (the failure a missing
/// permission must cause).
fn exercise(
    moto: &Moto,
    (admin, vehicle, key): (&[String; 2], &str, &[String; 2]),
    enough: &dyn Fn(&str) -> bool,
) -> Outcome {
    let proxy = IamProxy::start(moto, key);
    let top = format!(
        r#","metrics":{{"endpoint":"{}","interval_seconds":1}},"requests":{{"poll_seconds":1}},
           "schedule":{{"windows":[{{"start":"00:00","end":"24:00","max_bytes_per_second":"4MiB"}}]}}"#,
        moto.endpoint()
    );
    let s3 = r#","multipart_threshold":"5MiB","part_size":"5MiB","concurrency":1"#;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let setup = Setup::new(&endpoint, &[("logs", "")], s3, &top);
    let config = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        config.replace("\"v001\"", &format!("{vehicle:?}")),
    )
    .expect("config");
    let request = r#"{"since": "-1d", "until": "now"}"#;
    let object = format!("{vehicle}/.requests/r1.json");
    moto.py(&["put", BUCKET, &object, request, &admin[0], &admin[1]]);
    let src = setup.source("logs");
    let same = bytes(3000, 7);
    write(&src.join("a.log"), &same);
    write(&src.join("b.log"), &same);
    write(&src.join("big.bin"), &bytes(12 * MIB, 9));
    for f in ["a.log", "b.log", "big.bin"] {
        age_file(&src.join(f), 600);
    }
    let run = |log: &str| {
        let file = std::fs::File::create(setup.dir.path().join(log)).expect("log");
        let mut c = setup.command("run", SECRET_KEY);
        c.env("AWS_ACCESS_KEY_ID", &key[0])
            .env("AWS_SECRET_ACCESS_KEY", &key[1])
            .env_remove("AWS_SESSION_TOKEN");
        c.stdout(Stdio::null()).stderr(file).spawn().expect("run")
    };
    let read = |f: &str| std::fs::read_to_string(setup.dir.path().join(f)).unwrap_or_default();
    let logs = || format!("{}{}", read("run.log"), read("run2.log"));
    let mut first = run("run.log");
    let _ = wait_quietly(20, || {
        setup.journal().contains(r#""t":"part""#) || enough(&logs())
    });
    let _ = first.kill();
    let _ = first.wait();
    let mut second = run("run2.log");
    let done = format!("{vehicle}/.requests/r1.done.json");
    let _ = wait_quietly(40, || {
        if enough(&logs()) {
            return true;
        }
        let keys = moto.py(&["keys", BUCKET, vehicle, &admin[0], &admin[1]]);
        let keys: Vec<String> = serde_json::from_value(keys).unwrap_or_default();
        keys.iter().filter(|k| !k.contains(".requests")).count() == 3 && keys.contains(&done)
    });
    std::thread::sleep(Duration::from_secs(2));
    sigterm_and_wait(&mut second, Duration::from_secs(15));
    // A wiped state dir: the conditional writes find every file in S3 already.
    std::fs::remove_dir_all(&setup.state).expect("wipe");
    let mut c = setup.command("once", SECRET_KEY);
    c.env("AWS_ACCESS_KEY_ID", &key[0])
        .env("AWS_SECRET_ACCESS_KEY", &key[1])
        .env_remove("AWS_SESSION_TOKEN");
    let once = c.output().expect("once");
    let log = format!(
        "{}\n--- restart ---\n{}\n--- once ---\n{}",
        read("run.log"),
        read("run2.log"),
        String::from_utf8_lossy(&once.stderr)
    );
    assert_no_secrets(&log);
    assert!(!log.contains(&key[1]), "the secret key is in the log");
    let keys = moto.py(&["keys", BUCKET, vehicle, &admin[0], &admin[1]]);
    let metrics = moto.py(&["metrics", vehicle, &admin[0], &admin[1]]);
    Outcome {
        log,
        keys: serde_json::from_value(keys).expect("keys"),
        metrics: serde_json::from_value(metrics).expect("metrics"),
    }
}

/// Like `wait_until`, but returns false at the deadline instead of failing.
fn wait_quietly(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// What taking `action` out must break, as the log says it.
fn breaks(action: &str) -> &'static [&'static str] {
    match action {
        "s3:PutObject" => &["PutObject", "AccessDenied"],
        "s3:GetObject" => &["requests: reading", "AccessDenied"],
        "s3:ListMultipartUploadParts" => &["ListParts", "AccessDenied"],
        "s3:AbortMultipartUpload" => &["AbortMultipartUpload", "AccessDenied"],
        "s3:ListBucketMultipartUploads" => &["does not list multipart uploads", "AccessDenied"],
        "s3:ListBucket" => &["requests: listing", "AccessDenied"],
        "cloudwatch:PutMetricData" => &["metrics: publishing failed", "AccessDenied"],
        other => panic!("the guide grants {other}: say here what it is for"),
    }
}

#[test]
fn the_guide_s_policy_is_enough_and_every_permission_in_it_is_needed() {
    let policy = guide_policy();
    let granted = actions(&policy);
    assert!(granted.len() >= 7, "{granted:?}");
    let admin_policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "monitoring:*"], "Resource": "*"}]});
    let mut users = serde_json::Map::new();
    users.insert("admin".into(), admin_policy);
    users.insert("full".into(), for_moto(&policy));
    for (i, a) in granted.iter().enumerate() {
        users.insert(format!("without-{i}"), for_moto(&without(&policy, a)));
    }
    let moto = Moto::start();
    let keys = moto.py(&[
        "setup",
        BUCKET,
        &serde_json::Value::Object(users).to_string(),
    ]);
    let key = |name: &str| -> [String; 2] {
        serde_json::from_value(keys[name].clone()).expect("a key pair")
    };
    let admin = key("admin");

    let full = exercise(&moto, (&admin, "vfull", &key("full")), &|_| false);
    assert!(!full.log.contains("AccessDenied"), "{}", full.log);
    for name in ["a.log", "b.log", "big.bin"] {
        assert!(
            full.keys
                .iter()
                .any(|k| k.ends_with(&format!("/logs/{name}"))),
            "{name} in {:?}",
            full.keys
        );
    }
    assert!(
        full.keys
            .contains(&"vfull/.requests/r1.done.json".to_string())
    );
    let answer = moto.py(&[
        "get",
        BUCKET,
        "vfull/.requests/r1.done.json",
        &admin[0],
        &admin[1],
    ]);
    assert!(
        answer.as_str().unwrap_or("").contains("\"uploaded\": 3"),
        "{answer}"
    );
    assert!(
        full.metrics.contains(&"FilesUploaded".to_string()),
        "{:?}",
        full.metrics
    );
    for seen in [
        "copied on the server",
        "aborted 1 multipart upload(s) left by a create whose answer was lost",
        "resuming upload",
        "already in S3",
    ] {
        assert!(full.log.contains(seen), "{seen}: {}", full.log);
    }
    let uploads = moto.py(&["uploads", BUCKET, &admin[0], &admin[1]]);
    assert_eq!(uploads, serde_json::json!([]), "no upload left behind");

    // Each permission out in turn (side by side: each run is a vehicle of its own).
    let unneeded: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = granted
            .iter()
            .enumerate()
            .map(|(i, action)| {
                let (moto, admin, key) = (&moto, &admin, key(&format!("without-{i}")));
                scope.spawn(move || {
                    let fails = |log: &str| breaks(action).iter().all(|s| log.contains(s));
                    let out = exercise(moto, (admin, &format!("v{i}"), &key), &fails);
                    (!fails(&out.log)).then(|| format!("{action}: {}", out.log))
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("a run"))
            .collect()
    });
    assert!(unneeded.is_empty(), "{}", unneeded.join("\n\n"));
}
