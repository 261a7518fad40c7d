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

#[test]
fn each_invalid_config_exits_2_and_names_the_field() {
    let dir = TempDir::new("cli");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").expect("write");
    type Mutate = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("`surprise`", Box::new(|c| c["surprise"] = 1.into())),
        (
            "`s3.bucket_name`",
            Box::new(|c| c["s3"]["bucket_name"] = "x".into()),
        ),
        (
            "`sources[0].recursiv`",
            Box::new(|c| c["sources"][0]["recursiv"] = true.into()),
        ),
        (
            "`vehicle_id`",
            Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("vehicle_id")))),
        ),
        (
            "`vehicle_id`",
            Box::new(|c| c["vehicle_id"] = "v/001".into()),
        ),
        (
            "`s3.bucket`",
            Box::new(|c| drop(c["s3"].as_object_mut().map(|o| o.remove("bucket")))),
        ),
        (
            "`s3.region`",
            Box::new(|c| drop(c["s3"].as_object_mut().map(|o| o.remove("region")))),
        ),
        (
            "`sources`",
            Box::new(|c| c["sources"] = serde_json::json!([])),
        ),
        (
            "`sources[1].name`",
            Box::new(|c| {
                let s = c["sources"][0].clone();
                if let Some(a) = c["sources"].as_array_mut() {
                    a.push(s)
                }
            }),
        ),
        (
            "`sources[0].name`",
            Box::new(|c| c["sources"][0]["name"] = "../up".into()),
        ),
        ("`sources[0].path`", {
            let p = not_a_dir.clone();
            Box::new(move |c| c["sources"][0]["path"] = p.to_str().expect("utf8").into())
        }),
        (
            "`sources[0].path`",
            Box::new(|c| c["sources"][0]["path"] = "/no/such/dir".into()),
        ),
        (
            "`sources[0].include[0]`",
            Box::new(|c| c["sources"][0]["include"] = serde_json::json!(["[oops"])),
        ),
        (
            "`s3.part_size`",
            Box::new(|c| c["s3"]["part_size"] = "4MiB".into()),
        ),
        (
            "`s3.part_size`",
            Box::new(|c| c["s3"]["part_size"] = "6GiB".into()),
        ),
        (
            "`s3.part_size`",
            Box::new(|c| c["s3"]["part_size"] = "eight megs".into()),
        ),
        (
            "`s3.multipart_threshold`",
            Box::new(|c| c["s3"]["multipart_threshold"] = (-1).into()),
        ),
        (
            "`s3.concurrency`",
            Box::new(|c| c["s3"]["concurrency"] = 0.into()),
        ),
        (
            "`s3.endpoint`",
            Box::new(|c| c["s3"]["endpoint"] = "ftp://x".into()),
        ),
        (
            "`stability_seconds`",
            Box::new(|c| c["stability_seconds"] = "a while".into()),
        ),
        (
            "`retry.max_seconds`",
            Box::new(|c| c["retry"] = serde_json::json!({"initial_seconds": 10, "max_seconds": 1})),
        ),
        (
            "`schedule.windows[0].start`",
            Box::new(|c| {
                c["schedule"] = serde_json::json!({"windows": [{"start": "25:00", "end": "06:00"}]})
            }),
        ),
        (
            "`schedule.windows[0].end`",
            Box::new(|c| {
                c["schedule"] = serde_json::json!({"windows": [{"start": "20:00", "end": "6pm"}]})
            }),
        ),
        (
            "`schedule.windows[0].days`",
            Box::new(
                |c| c["schedule"] = serde_json::json!({"windows": [{"days": ["someday"], "start": "20:00", "end": "06:00"}]}),
            ),
        ),
        (
            "`schedule.utc_offset`",
            Box::new(|c| c["schedule"] = serde_json::json!({"utc_offset": "8", "windows": []})),
        ),
        (
            "`disk.emergency_percent`",
            Box::new(|c| {
                c["disk"] = serde_json::json!({"cleanup_percent": 90, "emergency_percent": 80})
            }),
        ),
        (
            "`metrics.alarms[0].comparison`",
            Box::new(
                |c| c["metrics"] = serde_json::json!({"alarms": [{"name": "a", "metric": "FailedUploads", "comparison": "=>", "threshold": 1}]}),
            ),
        ),
        (
            "`log.level`",
            Box::new(|c| c["log"] = serde_json::json!({"level": "loud"})),
        ),
    ];
    let path = dir.path().join("config.json");
    for (field, mutate) in cases {
        let mut c = valid(&dir);
        mutate(&mut c);
        std::fs::write(&path, c.to_string()).expect("write config");
        for sub in ["check-config", "once"] {
            let out = tvm(&[sub, "--config", path.to_str().expect("utf8")], &dir);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {field}: {err}");
            assert!(err.contains(field), "{sub}: expected {field} in: {err}");
        }
    }
    std::fs::write(&path, "{ not json").expect("write");
    let out = tvm(
        &["check-config", "--config", path.to_str().expect("utf8")],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
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
