//! The command line and config validation, through the real binary: every invalid config
//! exits 2 naming the field; `check-config` prints the effective config without secrets.

mod common;

use common::{ACCESS_KEY, SECRET_KEY, TempDir, tvm_command};

fn tvm(args: &[&str], dir: &TempDir) -> std::process::Output {
    tvm_command()
        .args(args)
        .env_clear()
        .envs(common::passthrough_env())
        .env("HOME", dir.path())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("run tvm-upload")
}

fn valid(dir: &TempDir) -> serde_json::Value {
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    serde_json::json!({
        "vehicle_id": "v001",
        "state_dir": dir.path().join("state"),
        "sources": [{ "name": "ros", "path": logs }],
        "s3": { "bucket": "t01logs", "region": "cn-north-1" }
    })
}

type Mutate = Box<dyn Fn(&mut serde_json::Value)>;

fn set(pointer: &'static str, value: serde_json::Value) -> Mutate {
    Box::new(move |c| {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        let at = if parent.is_empty() {
            Some(&mut *c)
        } else {
            c.pointer_mut(parent)
        };
        match at.expect("parent exists") {
            serde_json::Value::Object(o) => drop(o.insert(key.to_string(), value.clone())),
            serde_json::Value::Array(a) => a[key.parse::<usize>().expect("index")] = value.clone(),
            other => panic!("{pointer}: parent is {other}"),
        }
    })
}

fn remove(pointer: &'static str) -> Mutate {
    Box::new(move |c| {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        let at = if parent.is_empty() {
            Some(&mut *c)
        } else {
            c.pointer_mut(parent)
        };
        if let Some(o) = at.and_then(|v| v.as_object_mut()) {
            o.remove(key);
        }
    })
}

/// A second source, `extra`, at `path` (relative paths are under the test's logs dir).
fn second_source(path: &'static str) -> Mutate {
    Box::new(move |c| {
        let logs = std::path::PathBuf::from(c["sources"][0]["path"].as_str().expect("path"));
        let p = if path.is_empty() {
            logs
        } else {
            logs.join(path)
        };
        std::fs::create_dir_all(&p).expect("mkdir");
        let s = serde_json::json!({"name": "extra", "path": p});
        c["sources"].as_array_mut().expect("sources").push(s);
    })
}

/// Every config mistake an operator was seen to make, with the message it must print:
/// exit 2 from both `check-config` and `once`, naming the field and the reason.
#[test]
fn each_invalid_config_exits_2_and_names_the_field() {
    use serde_json::json;
    let dir = TempDir::new("cli");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").expect("write");
    let not_a_dir: &'static str = Box::leak(not_a_dir.display().to_string().into_boxed_str());
    let cases: Vec<(&str, Mutate)> = vec![
        ("`surprise`: unknown key", set("/surprise", json!(1))),
        (
            "`s3.bucket_name`: unknown key",
            set("/s3/bucket_name", json!("x")),
        ),
        (
            "`sources[0].recursiv`: unknown key",
            set("/sources/0/recursiv", json!(true)),
        ),
        ("`vehicle_id`: missing", remove("/vehicle_id")),
        (
            "`vehicle_id`: \"v/001\" is not safe as a key part",
            set("/vehicle_id", json!("v/001")),
        ),
        ("`s3.bucket`: missing", remove("/s3/bucket")),
        (
            "`s3.region`: missing (set it, or AWS_REGION)",
            remove("/s3/region"),
        ),
        (
            "`sources`: needs at least one source",
            set("/sources", json!([])),
        ),
        (
            "`sources[1].name`: duplicate source name \"ros\"",
            Box::new(|c| {
                let s = c["sources"][0].clone();
                c["sources"].as_array_mut().expect("sources").push(s);
            }),
        ),
        (
            "`sources[0].name`: \"../up\" is not safe",
            set("/sources/0/name", json!("../up")),
        ),
        (
            "is not a directory",
            set("/sources/0/path", json!(not_a_dir)),
        ),
        (
            "`sources[0].path`: /no/such/dir: No such file",
            set("/sources/0/path", json!("/no/such/dir")),
        ),
        (
            "`sources[0].include[0]`",
            set("/sources/0/include", json!(["[oops"])),
        ),
        (
            "`s3.part_size`: 4194304 bytes is outside S3's 5 MiB to 5 GiB",
            set("/s3/part_size", json!("4MiB")),
        ),
        (
            "`s3.part_size`: 6442450944 bytes is outside",
            set("/s3/part_size", json!("6GiB")),
        ),
        (
            "`s3.part_size`: \"eight megs\" is not a size",
            set("/s3/part_size", json!("eight megs")),
        ),
        (
            "`s3.multipart_threshold`: -1 is not a whole number",
            set("/s3/multipart_threshold", json!(-1)),
        ),
        (
            "`s3.concurrency`: 0 is outside 1 to 64",
            set("/s3/concurrency", json!(0)),
        ),
        (
            "`s3.endpoint`: \"ftp://x\" must start with http:// or https://",
            set("/s3/endpoint", json!("ftp://x")),
        ),
        (
            "`stability_seconds`: \"a while\" is not a duration",
            set("/stability_seconds", json!("a while")),
        ),
        (
            "`retry.max_seconds`: must not be below",
            set("/retry", json!({"initial_seconds": 10, "max_seconds": 1})),
        ),
        (
            "`schedule.windows[0].start`: \"25:00\" is not a time",
            set(
                "/schedule",
                json!({"windows": [{"start": "25:00", "end": "06:00"}]}),
            ),
        ),
        (
            "`schedule.windows[0].end`: \"6pm\" is not a time",
            set(
                "/schedule",
                json!({"windows": [{"start": "20:00", "end": "6pm"}]}),
            ),
        ),
        (
            "`schedule.windows[0].days`: \"someday\" is not one of mon..sun",
            set(
                "/schedule",
                json!({"windows": [{"days": ["someday"], "start": "20:00", "end": "06:00"}]}),
            ),
        ),
        (
            "`schedule.utc_offset`: \"8\" is not like +08:00",
            set("/schedule", json!({"utc_offset": "8"})),
        ),
        (
            "`schedule.windows`: is empty: nothing would ever upload",
            set("/schedule", json!({"windows": []})),
        ),
        (
            "`metrics.alarms[0].comparison`: \"=>\" is not one of",
            set(
                "/metrics",
                json!({"alarms": [{"name": "a", "metric": "FailedUploads", "comparison": "=>", "threshold": 1}]}),
            ),
        ),
        (
            "`log.level`: \"loud\" is not one of",
            set("/log", json!({"level": "loud"})),
        ),
        // Percents written as fractions deleted un-uploaded files on an 18% full disk.
        (
            "`disk.cleanup_percent`: 0.85 is not a percent above 1 and at most 100: percents are written 1 to 100, not as a fraction (for 85% write 85)",
            set(
                "/disk",
                json!({"cleanup_percent": 0.85, "emergency_percent": 0.95, "emergency_delete_unuploaded": true}),
            ),
        ),
        (
            "`disk.emergency_percent`: 0.95 is not a percent",
            set("/disk", json!({"emergency_percent": 0.95})),
        ),
        (
            "`disk.cleanup_percent`: 0 is not a percent above 1 and at most 100 (for example 85)",
            set("/disk", json!({"cleanup_percent": 0})),
        ),
        (
            "`disk.emergency_percent`: 101 is not a percent",
            set("/disk", json!({"emergency_percent": 101})),
        ),
        (
            "`disk.emergency_percent`: 80 must be above disk.cleanup_percent (90)",
            set(
                "/disk",
                json!({"cleanup_percent": 90, "emergency_percent": 80}),
            ),
        ),
        (
            "`disk.emergency_percent`: 85 must be above disk.cleanup_percent (85)",
            set(
                "/disk",
                json!({"cleanup_percent": 85, "emergency_percent": 85}),
            ),
        ),
        // Overlapping sources uploaded every file twice.
        ("`sources[1].path`: ", second_source("")),
        (
            "(\"extra\") is the same directory as sources[0].path",
            second_source(""),
        ),
        (
            "(\"extra\") is inside sources[0].path",
            second_source("sub/dir"),
        ),
        // An endpoint's path silently became the bucket.
        (
            "`s3.endpoint`: \"http://127.0.0.1:9000/somepath\" has a path",
            set("/s3/endpoint", json!("http://127.0.0.1:9000/somepath")),
        ),
        (
            "`s3.endpoint`: \"http://127.0.0.1:99999\" has port \"99999\": a port is 1 to 65535",
            set("/s3/endpoint", json!("http://127.0.0.1:99999")),
        ),
        // An address cannot carry the bucket as a subdomain ("invalid IPv4 address").
        (
            "`s3.path_style`: must be true with the endpoint \"http://10.0.0.5:9000\"",
            set("/s3/endpoint", json!("http://10.0.0.5:9000")),
        ),
        (
            "`metrics.endpoint`: \"https://monitoring:x\" has port",
            set("/metrics", json!({"endpoint": "https://monitoring:x"})),
        ),
        // Type errors named the section, not the field.
        (
            "`s3.concurrency`: invalid type: string \"2\", expected a whole number",
            set("/s3/concurrency", json!("2")),
        ),
        (
            "`sources[0].priority`: invalid type: floating point `1.5`, expected a whole number",
            set("/sources/0/priority", json!(1.5)),
        ),
        (
            "`disk.cleanup_percent`: invalid type: string \"85%\", expected a number",
            set("/disk", json!({"cleanup_percent": "85%"})),
        ),
        (
            "`sources[0].recursive`: invalid type: string \"yes\", expected true or false",
            set("/sources/0/recursive", json!("yes")),
        ),
        (
            "`s3.part_size`: expected a number, or a string with a unit such as \"8MiB\"",
            set("/s3/part_size", json!(true)),
        ),
        // Limits S3 or the daemon cannot work with.
        (
            "`s3.multipart_threshold`: 6442450944 bytes is above 5 GiB, the largest single PUT",
            set("/s3/multipart_threshold", json!("6GiB")),
        ),
        (
            "`s3.storage_class`: \"CHEAP\" is not one of STANDARD, REDUCED_REDUNDANCY",
            set("/s3/storage_class", json!("CHEAP")),
        ),
        (
            "`schedule.windows[0].max_bytes_per_second`: 1000 bytes/s would take over 3600 s to send one 8388608-byte part: give at least 2331",
            set(
                "/schedule",
                json!({"windows": [{"start": "20:00", "end": "06:00", "max_bytes_per_second": 1000}]}),
            ),
        ),
        (
            "`state_dir`: \"state\" is relative: give an absolute path",
            set("/state_dir", json!("state")),
        ),
        (
            "`s3.prefix`: \"fleet/../other\" contains a . or .. segment",
            set("/s3/prefix", json!("fleet/../other")),
        ),
        (
            "`s3.prefix`: \"fleet//a\" contains //",
            set("/s3/prefix", json!("fleet//a")),
        ),
        (
            "`s3.prefix`: \"/fleet\" must not start with /",
            set("/s3/prefix", json!("/fleet")),
        ),
    ];
    let path = dir.path().join("config.json");
    let path_str = path.to_str().expect("utf8");
    for (message, mutate) in cases {
        let mut c = valid(&dir);
        mutate(&mut c);
        std::fs::write(&path, c.to_string()).expect("write config");
        for sub in ["check-config", "once"] {
            let out = tvm(&[sub, "--config", path_str], &dir);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {message}: {err}");
            assert!(
                err.contains(message),
                "{sub}: expected {message:?} in: {err}"
            );
        }
    }
    // Mistakes in the JSON text itself.
    let text = valid(&dir).to_string();
    let texts = [
        (
            "{ not json".to_string(),
            "is not valid JSON: key must be a string at line 1 column 3",
        ),
        (
            text.replacen("\"bucket\":", "\"bucket\":\"a\",\"bucket\":", 1),
            "is not valid JSON: `s3.bucket` is given twice (JSON keeps only one: remove the other)",
        ),
        (
            format!("{text} {{}}"),
            "is not valid JSON: trailing characters",
        ),
    ];
    for (text, message) in texts {
        std::fs::write(&path, text).expect("write");
        let out = tvm(&["check-config", "--config", path_str], &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{message}: {err}");
        assert!(err.contains(message), "expected {message:?} in: {err}");
    }
}

/// What the README promises is accepted: a schedule with only an offset (always open), a
/// byte-order mark, sources side by side or nested under a non-recursive one.
#[test]
fn configs_the_readme_allows_are_accepted() {
    use serde_json::json;
    let dir = TempDir::new("cli-accept");
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "offset only",
            set("/schedule", json!({"utc_offset": "+08:00"})),
        ),
        (
            "nested under a non-recursive source",
            Box::new(|c| {
                c["sources"][0]["recursive"] = json!(false);
                second_source("nested")(c);
            }),
        ),
        (
            "percents as percents",
            set(
                "/disk",
                json!({"cleanup_percent": 85.5, "emergency_percent": 100}),
            ),
        ),
        (
            "endpoint with a trailing slash",
            set("/s3/endpoint", json!("http://minio.depot.lan:9000/")),
        ),
        (
            "IPv6 endpoint, path style",
            Box::new(|c| {
                c["s3"]["endpoint"] = json!("http://[::1]:9000");
                c["s3"]["path_style"] = json!(true);
            }),
        ),
        (
            "storage class",
            set("/s3/storage_class", json!("STANDARD_IA")),
        ),
    ];
    let path = dir.path().join("config.json");
    let path_str = path.to_str().expect("utf8");
    for (what, mutate) in cases {
        let mut c = valid(&dir);
        mutate(&mut c);
        std::fs::write(&path, c.to_string()).expect("write config");
        let out = tvm(&["check-config", "--config", path_str], &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {err}");
    }
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend(valid(&dir).to_string().bytes());
    std::fs::write(&path, bom).expect("write");
    let out = tvm(&["check-config", "--config", path_str], &dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "BOM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Offset only: always allowed, and the offset still dates the keys.
    std::fs::write(&path, {
        let mut c = valid(&dir);
        c["schedule"] = json!({"utc_offset": "+08:00"});
        c.to_string()
    })
    .expect("write");
    let out = tvm(&["check-config", "--config", path_str], &dir);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["schedule"]["utc_offset"], "+08:00");
    assert_eq!(v["schedule"]["windows"][0]["start"], "00:00");
    assert_eq!(v["schedule"]["windows"][0]["end"], "24:00");
}

/// `check-config | head -1` panicked ("failed printing to stdout: Broken pipe", exit
/// 134) two runs out of three.
#[test]
fn a_closed_stdout_never_panics() {
    use std::process::Stdio;
    let dir = TempDir::new("cli-pipe");
    let path = dir.path().join("config.json");
    std::fs::write(&path, valid(&dir).to_string()).expect("write");
    for args in [
        vec!["check-config", "--config", path.to_str().expect("utf8")],
        vec!["status", "--config", path.to_str().expect("utf8")],
        vec!["status", "--json", "--config", path.to_str().expect("utf8")],
        vec!["--help"],
    ] {
        for _ in 0..5 {
            let mut child = tvm_command()
                .args(&args)
                .env_clear()
                .envs(common::passthrough_env())
                .env("HOME", dir.path())
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            // Close the read end before the child writes: every write gets EPIPE.
            drop(child.stdout.take());
            let out = child.wait_with_output().expect("wait");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        }
    }
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = TempDir::new("cli-ok");
    let path = dir.path().join("config.json");
    std::fs::write(&path, valid(&dir).to_string()).expect("write");
    let out = tvm(
        &["check-config", "--config", path.to_str().expect("utf8")],
        &dir,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["s3"]["part_size"], 8 * 1024 * 1024);
    assert_eq!(
        v["s3"]["endpoint"],
        "https://s3.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(v["credentials"]["source"], "environment");
    assert!(
        !text.contains(SECRET_KEY) && !text.contains(ACCESS_KEY),
        "secrets redacted: {text}"
    );
}

#[test]
fn usage_errors_exit_2_and_config_comes_from_the_environment() {
    let dir = TempDir::new("cli-usage");
    assert_eq!(tvm(&[], &dir).status.code(), Some(2));
    assert_eq!(tvm(&["fly"], &dir).status.code(), Some(2));
    assert_eq!(tvm(&["run", "--config"], &dir).status.code(), Some(2));
    assert_eq!(tvm(&["--version"], &dir).status.code(), Some(0));
    assert_eq!(tvm(&["--help"], &dir).status.code(), Some(0));
    let path = dir.path().join("c.json");
    std::fs::write(&path, valid(&dir).to_string()).expect("write");
    let out = tvm_command()
        .arg("check-config")
        .env_clear()
        .envs(common::passthrough_env())
        .env("TVM_UPLOAD_CONFIG", &path)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_config(dir: &TempDir, c: &serde_json::Value, args: &[&str]) -> (Option<i32>, String) {
    let path = dir.path().join("check.json");
    std::fs::write(&path, c.to_string()).expect("write");
    let mut all = vec!["check-config", "--config", path.to_str().expect("utf8")];
    all.extend_from_slice(args);
    let out = tvm(&all, dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check-config` said "config OK" for configs `run` then refused or could not serve:
/// it now checks the state dir, the log file, the sources and the credentials too,
/// a line each, and exits 2 naming the field when one fails.
#[test]
fn check_config_checks_what_run_needs_on_this_machine() {
    use serde_json::json;
    let dir = TempDir::new("cli-check");
    let (code, err) = check_config(&dir, &valid(&dir), &[]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "ok     state_dir: ",
        "writable, lockable",
        "ok     log.file: none: the log goes to stderr",
        "ok     sources[0].path: ",
        "ok     credentials: from environment (key id AKIA",
    ] {
        assert!(err.contains(line), "{line:?} in {err}");
    }
    assert!(
        !dir.path().join("state").exists(),
        "the check leaves nothing behind"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (
            "`state_dir`: /proc/tvm-upload-state: cannot be created",
            json!({"state_dir": "/proc/tvm-upload-state"}),
        ),
        ("is not a directory", json!({"state_dir": file})),
        (
            "`log.file`: /no/such/dir/tvm.log: its directory /no/such/dir does not exist",
            json!({"log": {"file": "/no/such/dir/tvm.log"}}),
        ),
        (
            "`log.file`: /tmp: is a directory",
            json!({"log": {"file": "/tmp"}}),
        ),
    ];
    for (message, patch) in cases {
        let mut c = valid(&dir);
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        let (code, err) = check_config(&dir, &c, &[]);
        assert_eq!(code, Some(2), "{message}: {err}");
        assert!(err.contains(message), "{message:?} in {err}");
        assert!(!err.contains("config OK"), "{err}");
    }
    // No credentials at all: named, not hidden in the JSON.
    let path = dir.path().join("check.json");
    std::fs::write(&path, valid(&dir).to_string()).expect("write");
    let out = tvm_command()
        .args(["check-config", "--config", path.to_str().expect("utf8")])
        .env_clear()
        .envs(common::passthrough_env())
        .env("HOME", dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tvm-upload: config field `credentials`: "),
        "{err}"
    );
    assert!(
        err.contains(".aws/credentials"),
        "says where it looked: {err}"
    );
}

/// A source the daemon's user cannot list was only a WARN at run time.
#[test]
fn check_config_names_a_source_the_daemon_cannot_read() {
    // Root reads everything: the check runs as `nobody` (setpriv, as in the busybox
    // tests), in a tree nobody may enter but for the unreadable source.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let runner = std::env::var_os("TVM_UPLOAD_RUNNER").is_some_and(|r| !r.is_empty());
    if !is_root
        || runner
        || std::process::Command::new("setpriv")
            .arg("--help")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs root and setpriv, and a native binary");
        return;
    }
    let dir = TempDir::new("cli-unreadable");
    let mut c = valid(&dir);
    let logs = dir.path().join("logs");
    let locked = logs.join("locked");
    std::fs::create_dir_all(&locked).expect("mkdir");
    let chmod = |p: &std::path::Path, mode: &str| {
        let ok = std::process::Command::new("chmod")
            .arg(mode)
            .arg(p)
            .status()
            .expect("chmod");
        assert!(ok.success());
    };
    chmod(dir.path(), "755");
    chmod(&logs, "755");
    chmod(&locked, "700");
    c["sources"][0]["path"] = locked.to_str().expect("utf8").into();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    chmod(&state, "777");
    let path = dir.path().join("check.json");
    std::fs::write(&path, c.to_string()).expect("write");
    chmod(&path, "644");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::tvm_binary())
        .args(["check-config", "--config", path.to_str().expect("utf8")])
        .env_clear()
        .envs(common::passthrough_env())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`sources[0].path`: ") && err.contains("cannot be listed: Permission denied"),
        "{err}"
    );
}

/// `--connect` asks S3 (and CloudWatch): the bucket, the clock, and with `--write` a
/// small object put and deleted; each ok or failed with the server's reason.
#[test]
fn check_config_connect_asks_the_servers() {
    let server = common::Server::start(common::Kind::S3sFs);
    let dir = TempDir::new("cli-connect");
    let mut c = valid(&dir);
    c["s3"]["endpoint"] = server.endpoint().into();
    c["s3"]["path_style"] = true.into();
    c["s3"]["region"] = common::REGION.into();
    c["s3"]["bucket"] = common::BUCKET.into();
    let (code, err) = check_config(&dir, &c, &["--connect", "--write"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("ok     s3: bucket t01logs answers"), "{err}");
    assert!(err.contains("ok     clock: within"), "{err}");
    assert!(
        err.contains("ok     s3.write: wrote and deleted v001/.tvm-upload-check/"),
        "{err}"
    );
    assert!(server.client().list().is_empty(), "the test object is gone");
    let mut wrong = c.clone();
    wrong["s3"]["bucket"] = "no-such-bucket".into();
    let (code, err) = check_config(&dir, &wrong, &["--connect"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    let mut closed = c.clone();
    closed["s3"]["endpoint"] = format!("http://127.0.0.1:{}", common::free_port()).into();
    let (code, err) = check_config(&dir, &closed, &["--connect"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("FAILED s3: cannot reach http://127.0.0.1:"),
        "{err}"
    );
    // Without --connect nothing is contacted.
    let (code, err) = check_config(&dir, &closed, &[]);
    assert_eq!(code, Some(0), "{err}");
    let out = tvm(&["check-config", "--write"], &dir);
    assert_eq!(out.status.code(), Some(2), "--write needs --connect");
}

/// With metrics on, `--connect` sends CloudWatch one harmless datum.
#[test]
fn check_config_connect_asks_cloudwatch_when_metrics_are_on() {
    let server = common::Server::start(common::Kind::Moto);
    let dir = TempDir::new("cli-connect-cw");
    let mut c = valid(&dir);
    c["s3"]["endpoint"] = server.endpoint().into();
    c["s3"]["path_style"] = true.into();
    c["s3"]["region"] = common::REGION.into();
    c["s3"]["bucket"] = common::BUCKET.into();
    c["metrics"] = serde_json::json!({"endpoint": server.endpoint()});
    let (code, err) = check_config(&dir, &c, &["--connect"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("ok     metrics: CloudWatch at"), "{err}");
    c["metrics"]["endpoint"] = format!("http://127.0.0.1:{}", common::free_port()).into();
    let (code, err) = check_config(&dir, &c, &["--connect"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("FAILED metrics: CloudWatch at"), "{err}");
}
