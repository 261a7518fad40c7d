//! The same uploads against three independent S3 implementations (s3s-fs, moto, garage),
//! with requests signed as AWS's SDKs sign them (checked against botocore), and no
//! multipart upload left behind when a CreateMultipartUpload's answer is lost.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::proxy::{Action, Proxy, Request};
use common::*;

const MIB: usize = 1 << 20;

/// A source with a 20 MiB file (three 8 MiB parts) and a small one, behind `proxy`.
fn two_files(server: &Server, proxy: &Proxy) -> (Setup, BTreeMap<String, String>) {
    let mut setup = Setup::new(
        &proxy.endpoint(),
        &[("app", "")],
        r#","multipart_threshold":"8MiB","part_size":"8MiB""#,
        "",
    );
    setup.access_key = server.kind.access_key();
    let mut expected = BTreeMap::new();
    for (name, data) in [
        ("big.bin", bytes(20 * MIB, 5)),
        ("small.log", text(3000, 6)),
    ] {
        let path = setup.source("app").join(name);
        write(&path, &data);
        age_file(&path, 600);
        expected.insert(key_for("app", name, &path), sha256_hex(&data));
    }
    (setup, expected)
}

fn is_create(r: &Request) -> bool {
    r.method == "POST" && r.query("uploads").is_some()
}

/// The server creates the first `n` multipart uploads, and their answers are lost.
fn lose_first_creates(proxy: &Proxy, n: usize) {
    let lost = Arc::new(AtomicUsize::new(0));
    proxy.set_rule(move |r| {
        if is_create(r) && lost.fetch_add(1, Ordering::SeqCst) < n {
            Action::LoseAnswer
        } else {
            Action::Forward
        }
    });
}

fn is_list_uploads(r: &Request) -> bool {
    r.method == "GET" && r.query("uploads").is_some()
}

/// Every presigned request of `kinds` that the daemon sent, signed again by botocore
/// at the same time with the same credentials: the signatures must agree.
fn assert_botocore_signs_the_same(server: &Server, requests: &[&Request]) {
    assert!(!requests.is_empty(), "nothing to check");
    let list: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            let headers: BTreeMap<&str, &str> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            serde_json::json!({
                "method": r.method,
                "host": r.header("host").expect("host"),
                "target": r.target,
                "headers": headers,
            })
        })
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/sigv4_oracle.py");
    let mut child = Command::new(tools_dir().join("venv/bin/python"))
        .arg(script)
        .args([server.kind.access_key(), SECRET_KEY])
        .envs(passthrough_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sigv4_oracle.py");
    let input = serde_json::to_vec(&list).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let out = child.wait_with_output().expect("oracle");
    assert!(out.status.success(), "oracle: {}", stderr(&out));
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    for a in answers {
        assert_eq!(
            a["sent"], a["botocore"],
            "botocore signs {} differently",
            a["target"]
        );
    }
}

/// CreateMultipartUpload goes as `POST /key?uploads` (bare, as AWS's SDKs send it, not
/// rusty-s3's `uploads=1`, which moto 5.2 answers with a 500 after creating the upload),
/// signed as botocore signs it, and every server stores the files byte-identical.
fn creates_are_canonical(kind: Kind) {
    let server = Server::start(kind);
    let proxy = Proxy::start(server.port);
    let (setup, expected) = two_files(&server, &proxy);
    let out = setup.once();
    assert!(out.status.success(), "once failed: {}", stderr(&out));
    assert_bucket_is(&server.client(), &expected);
    let requests = proxy.requests();
    let creates: Vec<&Request> = requests.iter().filter(|r| is_create(r)).collect();
    assert_eq!(creates.len(), 1, "one create for the one big file");
    assert!(
        creates[0].target.contains("?uploads&") && !creates[0].target.contains("uploads="),
        "not the SDKs' form: {}",
        creates[0].target.split("X-Amz-").next().unwrap_or("")
    );
    assert!(
        creates.iter().all(|r| r.status == Some(200)),
        "every create answered 200"
    );
    assert_botocore_signs_the_same(&server, &creates);
    if kind != Kind::S3sFs {
        assert!(server.multipart_uploads().is_empty(), "uploads left behind");
    }
}

#[test]
fn multipart_creates_are_sent_as_aws_sdks_send_them_s3sfs() {
    creates_are_canonical(Kind::S3sFs);
}

#[test]
fn multipart_creates_are_sent_as_aws_sdks_send_them_moto() {
    creates_are_canonical(Kind::Moto);
}

#[test]
fn multipart_creates_are_sent_as_aws_sdks_send_them_garage() {
    creates_are_canonical(Kind::Garage);
}

fn is_upload_part(r: &Request) -> bool {
    r.method == "PUT" && r.query("uploadId").is_some()
}

/// Issue 25: a multipart upload's parts carry the CRC-32s taken when the file was hashed
/// (`x-amz-checksum-crc32`, no MD5 pass), and garage, which checks them, refuses a part
/// damaged on the way (a byte flipped by the proxy): it is sent again and the object is
/// whole. Garage's own composite checksum of the object (over the parts' CRC-32s it
/// checked) is read back with boto3.
#[test]
fn parts_carry_crc32s_the_server_checks_and_a_damaged_part_is_sent_again_garage() {
    let server = Server::start(Kind::Garage);
    let proxy = Proxy::start(server.port);
    let damaged = Arc::new(AtomicUsize::new(0));
    let count = damaged.clone();
    proxy.set_rule(move |r| {
        if is_upload_part(r)
            && r.query("partNumber").as_deref() == Some("2")
            && count.fetch_add(1, Ordering::SeqCst) == 0
        {
            Action::Corrupt { at: 1234 }
        } else {
            Action::Forward
        }
    });
    let (setup, expected) = two_files(&server, &proxy);
    let out = setup.once();
    assert!(out.status.success(), "once failed: {}", stderr(&out));
    assert_bucket_is(&server.client(), &expected);
    let requests = proxy.requests();
    let parts: Vec<&Request> = requests.iter().filter(|r| is_upload_part(r)).collect();
    let refused: Vec<&&Request> = parts
        .iter()
        .filter(|r| r.fault.as_deref() == Some("corrupt"))
        .collect();
    assert_eq!(refused.len(), 1, "one part damaged on the way");
    assert_eq!(
        refused[0].status,
        Some(400),
        "garage refused the damaged part"
    );
    let sent: Vec<(Option<String>, Option<u16>)> = parts
        .iter()
        .map(|r| (r.query("partNumber"), r.status))
        .collect();
    assert_eq!(
        parts.len(),
        4,
        "three parts, the damaged one sent again: {sent:?}\n{}",
        stderr(&out)
    );
    for p in &parts {
        assert!(
            p.header("x-amz-checksum-crc32").is_some() && p.header("content-md5").is_none(),
            "a part without its CRC-32: {:?}",
            p.headers
        );
    }
    let big = expected
        .keys()
        .find(|k| k.ends_with("big.bin"))
        .expect("big.bin");
    let checksum = server.object_checksum(big);
    assert_eq!(checksum["type"], "COMPOSITE", "{checksum}");
    assert!(
        checksum["crc32"]
            .as_str()
            .is_some_and(|c| c.ends_with("-3")),
        "garage's checksum of the object, over 3 parts: {checksum}"
    );
}

/// The first two CreateMultipartUploads are done by the server but their answers lost.
/// Before each new create the daemon lists the key's uploads and aborts what the lost
/// ones left: the server ends with the object and no upload in progress.
fn lost_creates_leave_no_orphan(kind: Kind) {
    let server = Server::start(kind);
    let proxy = Proxy::start(server.port);
    lose_first_creates(&proxy, 2);
    let (setup, expected) = two_files(&server, &proxy);
    let out = setup.once();
    assert!(out.status.success(), "once failed: {}", stderr(&out));
    assert_bucket_is(&server.client(), &expected);
    assert_eq!(
        server.multipart_uploads(),
        Vec::<String>::new(),
        "uploads left behind"
    );
    let requests = proxy.requests();
    let lists: Vec<&Request> = requests.iter().filter(|r| is_list_uploads(r)).collect();
    assert_eq!(lists.len(), 2, "a list before each create after a lost one");
    let aborts = requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.query("uploadId").is_some())
        .count();
    assert_eq!(aborts, 2, "each lost create's upload aborted");
    assert_botocore_signs_the_same(&server, &lists);
    let log = stderr(&out);
    assert!(
        log.contains("left by a create whose answer was lost"),
        "{log}"
    );
}

#[test]
fn a_lost_create_answer_leaves_no_orphan_moto() {
    lost_creates_leave_no_orphan(Kind::Moto);
}

#[test]
fn a_lost_create_answer_leaves_no_orphan_garage() {
    lost_creates_leave_no_orphan(Kind::Garage);
}

/// s3s-fs has no ListMultipartUploads: the upload still goes, and `status` says that an
/// upload whose create answer was lost is left to the bucket's lifecycle rule.
#[test]
fn a_server_without_list_uploads_is_named_in_status() {
    let server = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(server.port);
    lose_first_creates(&proxy, 1);
    let (setup, expected) = two_files(&server, &proxy);
    let mut child = setup.spawn_run();
    let client = server.client();
    wait_until(60, "both files in S3", || client.list().len() == 2);
    assert_bucket_is(&client, &expected);
    let status = setup
        .command("status", SECRET_KEY)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let json = setup
        .command("status", SECRET_KEY)
        .arg("--json")
        .output()
        .expect("status --json");
    sigterm_and_wait(&mut child, std::time::Duration::from_secs(15));
    assert!(
        text.contains("does not list multipart uploads") && text.contains("lifecycle rule"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(
        report["multipart_uploads_unlisted"]
            .as_str()
            .is_some_and(|n| n.contains("lifecycle rule")),
        "{report}"
    );
    assert!(setup.run_log().contains("does not list multipart uploads"));
}
