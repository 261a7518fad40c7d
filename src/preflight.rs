//! What `check-config` verifies beyond the config's own validity: that `run` could work
//! with it on this machine (the state dir, the log file, the sources, the credentials)
//! and, with `--connect`, that S3 and CloudWatch accept it. Each check is one line of the
//! report, naming the config field it is about.
//!
//! Checks leave nothing behind: a state dir or log file created to prove it can be is
//! removed again, and the `--write` test object is deleted (or named, if it cannot be).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, MetricsConfig};
use crate::credentials::{Provider, Source, process_env};
use crate::s3::{BucketAnswer, S3, S3Error};

/// A clock this far off S3's is reported (the daemon corrects its signing clock, but
/// the dates in keys and the upload windows use the local one).
const CLOCK_NOTE_SECONDS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, with something an operator should know.
    Note,
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The config field (or `s3`, `clock`, `metrics`) it is about.
    pub field: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    fn new(field: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            field: field.into(),
            verdict,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = match self.verdict {
            Verdict::Ok => "ok",
            Verdict::Note => "note",
            Verdict::Failed => "FAILED",
        };
        write!(f, "{v:<6} {}: {}", self.field, self.detail)
    }
}

/// The checks that need no network.
pub fn local(config: &Config) -> Vec<Check> {
    let mut out = vec![
        state_dir(&config.state_dir),
        log_file(config.log.file.as_deref()),
    ];
    for (i, s) in config.sources.iter().enumerate() {
        out.push(source(&format!("sources[{i}].path"), &s.path));
    }
    out.push(credentials_source(config));
    out
}

/// Which source the chain would use; fixed keys are read, temporary ones are fetched
/// only with `--connect`.
fn credentials_source(config: &Config) -> Check {
    let chosen = Source::choose(
        config.credentials_profile.as_deref(),
        config.credentials_iot.as_ref(),
        &process_env,
    );
    match chosen {
        Ok(source @ Source::Static(_)) => match source.fetch(&process_env) {
            Ok(c) => Check::new("credentials", Verdict::Ok, c.summary()),
            Err(e) => Check::new("credentials", Verdict::Failed, e.to_string()),
        },
        Ok(source) => Check::new(
            "credentials",
            Verdict::Ok,
            format!(
                "from {} (temporary; fetched with --connect)",
                source.describe()
            ),
        ),
        Err(e) => Check::new("credentials", Verdict::Failed, e.to_string()),
    }
}

/// The state dir exists or can be made, takes a file and its fsync, and its lock is free
/// or held by a running daemon.
pub fn state_dir(dir: &Path) -> Check {
    let check = |v, d: String| Check::new("state_dir", v, format!("{}: {d}", dir.display()));
    if dir.exists() && !dir.is_dir() {
        return check(Verdict::Failed, "is not a directory".into());
    }
    let created = match create_dirs(dir) {
        Ok(c) => c,
        Err(e) => return check(Verdict::Failed, format!("cannot be created: {e}")),
    };
    let verdict = probe_state_dir(dir);
    remove_created(&created);
    match verdict {
        Ok(what) => check(Verdict::Ok, what),
        Err(e) => check(Verdict::Failed, e),
    }
}

fn probe_state_dir(dir: &Path) -> Result<String, String> {
    let probe = dir.join(format!(".check-config.{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()));
    let _ = fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write a file in it: {e}"))?;
    let lock_path = dir.join("lock");
    let existed = lock_path.exists();
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open its lock file: {e}"))?;
    let held = match lock.try_lock() {
        Ok(()) => false,
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", lock_path.display()));
        }
    };
    drop(lock);
    if !existed {
        let _ = fs::remove_file(&lock_path);
    }
    Ok(if held {
        "writable; in use by a running daemon".to_string()
    } else {
        "writable, lockable".to_string()
    })
}

/// Creates `dir` and its missing parents; returns those it created, deepest last.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir)?;
    Ok(missing.into_iter().rev().collect())
}

fn remove_created(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// The log file can be appended to (made, if missing, in an existing directory).
pub fn log_file(file: Option<&Path>) -> Check {
    let Some(path) = file else {
        return Check::new("log.file", Verdict::Ok, "none: the log goes to stderr");
    };
    let check = |v, d: &str| Check::new("log.file", v, format!("{}: {d}", path.display()));
    if path.is_dir() {
        return check(Verdict::Failed, "is a directory");
    }
    let existed = path.exists();
    if !existed {
        match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) if !parent.is_dir() => {
                return check(
                    Verdict::Failed,
                    &format!("its directory {} does not exist", parent.display()),
                );
            }
            _ => {}
        }
    }
    let opened = OpenOptions::new().append(true).create(true).open(path);
    if !existed {
        let _ = fs::remove_file(path);
    }
    match opened {
        Ok(_) => check(Verdict::Ok, "writable"),
        Err(e) => check(Verdict::Failed, &format!("cannot be appended to: {e}")),
    }
}

/// A source's directory can be listed (`run` would otherwise only warn).
pub fn source(field: &str, path: &Path) -> Check {
    match fs::read_dir(path) {
        Ok(_) => Check::new(field, Verdict::Ok, format!("{}: readable", path.display())),
        Err(e) => Check::new(
            field,
            Verdict::Failed,
            format!("{}: cannot be listed: {e}", path.display()),
        ),
    }
}

/// `--connect`: S3 (the bucket, the clock, and with `write` a test object) and, with
/// metrics on, CloudWatch.
pub fn connect(config: &Config, write: bool) -> Vec<Check> {
    let provider = Provider::resolve(
        config.credentials_profile.as_deref(),
        config.credentials_iot.as_ref(),
    );
    let fetched = provider
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|p| {
            p.current().map_err(|e| e.to_string())?;
            Ok(Arc::clone(p))
        });
    let credentials = match fetched {
        Ok(p) => p,
        Err(e) => return vec![Check::new("credentials", Verdict::Failed, e)],
    };
    let mut out = Vec::new();
    match S3::new(&config.s3, Arc::clone(&credentials)) {
        Ok(s3) => {
            out.extend(bucket(&s3, config));
            if write {
                out.push(write_test(&s3, config));
            }
        }
        Err(e) => out.push(Check::new("s3.endpoint", Verdict::Failed, e)),
    }
    if let Some(m) = &config.metrics {
        out.push(cloudwatch(m, &config.vehicle_id, credentials));
    }
    out
}

/// HEAD on the bucket, and the clock against the answer's `Date`.
fn bucket(s3: &S3, config: &Config) -> Vec<Check> {
    let b = &config.s3.bucket;
    let answer = match s3.head_bucket() {
        Ok(a) => a,
        Err(e) => {
            let why = format!("cannot reach {}: {e}", config.s3.endpoint);
            return vec![Check::new("s3", Verdict::Failed, why)];
        }
    };
    let mut out = vec![bucket_verdict(&answer, b, &config.s3.region)];
    if let Some(date) = answer.date {
        out.push(clock(date - crate::clock::local_now()));
    }
    out
}

/// What a bucket's HEAD status means for the daemon.
pub fn bucket_verdict(a: &BucketAnswer, bucket: &str, region: &str) -> Check {
    let (verdict, detail) = match a.status {
        200 => (Verdict::Ok, format!("bucket {bucket} answers")),
        404 => (
            Verdict::Failed,
            format!("bucket {bucket} does not exist (NoSuchBucket)"),
        ),
        301 | 307 | 400 if a.region.as_deref().is_some_and(|r| r != region) => (
            Verdict::Failed,
            format!(
                "bucket {bucket} is in region {}, not {region}: fix s3.region",
                a.region.as_deref().unwrap_or("?")
            ),
        ),
        403 => (
            Verdict::Note,
            format!(
                "bucket {bucket} answers 403 to HEAD: either the credentials are refused, or they \
                 lack s3:ListBucket (which the daemon does not need); --write tells which"
            ),
        ),
        other => (Verdict::Failed, format!("bucket {bucket}: HTTP {other}")),
    };
    Check::new("s3", verdict, detail)
}

/// The local clock against S3's (`skew` = server − local, seconds).
pub fn clock(skew: i64) -> Check {
    if skew.abs() < CLOCK_NOTE_SECONDS {
        return Check::new(
            "clock",
            Verdict::Ok,
            format!("within {}s of S3's", skew.abs()),
        );
    }
    let side = if skew > 0 { "behind" } else { "ahead of" };
    Check::new(
        "clock",
        Verdict::Note,
        format!(
            "{}s {side} S3's: requests are signed with S3's time, but the dates in keys and \
             the upload windows use this clock; fix its time source (NTP)",
            skew.abs()
        ),
    )
}

/// A small object written under the vehicle's prefix, then deleted.
fn write_test(s3: &S3, config: &Config) -> Check {
    let key = format!(
        "{}{}/.tvm-upload-check/{}-{}",
        config.s3.prefix,
        config.vehicle_id,
        crate::clock::local_now(),
        std::process::id()
    );
    let body = b"tvm-upload check-config --connect --write\n";
    let sha = crate::digest::base64(&sha2_of(body));
    if let Err(e) = s3.put(
        &key,
        &mut &body[..],
        body.len() as u64,
        &sha,
        &Default::default(),
    ) {
        return Check::new("s3.write", Verdict::Failed, refusal(&e));
    }
    match s3.delete(&key) {
        Ok(()) => Check::new("s3.write", Verdict::Ok, format!("wrote and deleted {key}")),
        Err(e) => Check::new(
            "s3.write",
            Verdict::Note,
            format!(
                "wrote {key} but could not delete it ({e}); the daemon never deletes, so its \
                 policy need not allow it: remove the object by hand"
            ),
        ),
    }
}

fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn refusal(e: &S3Error) -> String {
    let advice = e.advice();
    if advice.is_empty() {
        format!("PUT refused: {e}")
    } else {
        format!("PUT refused: {e}. {advice}")
    }
}

/// One PutMetricData of a zero `FailedUploads` (it changes no Sum, so no alarm).
fn cloudwatch(m: &MetricsConfig, vehicle_id: &str, credentials: Arc<Provider>) -> Check {
    let client = crate::metrics::CloudWatch::new(m, credentials);
    let datum = crate::metrics::Datum {
        name: "FailedUploads",
        unit: "Count",
        value: crate::metrics::Value::Single(0.0),
        link: None,
    };
    let Some(body) = crate::metrics::bodies(&m.namespace, vehicle_id, &[datum]).pop() else {
        return Check::new("metrics", Verdict::Failed, "no request to send");
    };
    match client.call(&body) {
        Ok(_) => Check::new(
            "metrics",
            Verdict::Ok,
            format!("CloudWatch at {} accepts {}", m.endpoint, m.namespace),
        ),
        Err(e) => Check::new(
            "metrics",
            Verdict::Failed,
            format!("CloudWatch at {}: {e}", m.endpoint),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tvm-preflight-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_missing_state_dir_is_proven_creatable_and_left_absent() {
        let base = temp("state");
        let dir = base.join("a/b");
        let c = state_dir(&dir);
        assert_eq!(c.verdict, Verdict::Ok, "{c}");
        assert!(!base.exists(), "created dirs removed");
        assert_eq!(
            state_dir(Path::new("/proc/tvm-upload")).verdict,
            Verdict::Failed
        );
        fs::create_dir_all(&base).expect("mkdir");
        let file = base.join("f");
        fs::write(&file, "x").expect("write");
        assert!(state_dir(&file).detail.contains("is not a directory"));
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_held_lock_means_a_running_daemon() {
        let dir = temp("lock");
        fs::create_dir_all(&dir).expect("mkdir");
        let lock = fs::File::create(dir.join("lock")).expect("lock");
        lock.try_lock().expect("take");
        let c = state_dir(&dir);
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(c.detail.contains("in use by a running daemon"), "{c}");
        drop(lock);
        assert!(state_dir(&dir).detail.contains("lockable"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_file_must_be_appendable_in_an_existing_directory() {
        let dir = temp("log");
        fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(log_file(None).verdict, Verdict::Ok);
        let missing_dir = dir.join("nope/x.log");
        assert!(
            log_file(Some(&missing_dir))
                .detail
                .contains("does not exist")
        );
        assert!(log_file(Some(&dir)).detail.contains("is a directory"));
        let new = dir.join("new.log");
        assert_eq!(log_file(Some(&new)).verdict, Verdict::Ok);
        assert!(!new.exists(), "the probe leaves no file");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bucket_answers_and_clocks_read_as_an_operator_needs() {
        let a = |status, region: Option<&str>| BucketAnswer {
            status,
            region: region.map(str::to_string),
            date: None,
        };
        assert_eq!(bucket_verdict(&a(200, None), "b", "r").verdict, Verdict::Ok);
        assert!(
            bucket_verdict(&a(404, None), "b", "r")
                .detail
                .contains("does not exist")
        );
        let moved = bucket_verdict(&a(301, Some("eu-west-1")), "b", "cn-north-1");
        assert!(
            moved
                .detail
                .contains("is in region eu-west-1, not cn-north-1"),
            "{moved}"
        );
        assert_eq!(
            bucket_verdict(&a(403, None), "b", "r").verdict,
            Verdict::Note
        );
        assert_eq!(
            bucket_verdict(&a(500, None), "b", "r").verdict,
            Verdict::Failed
        );
        assert_eq!(clock(3).verdict, Verdict::Ok);
        assert!(clock(-7200).detail.starts_with("7200s ahead of S3's"));
        assert!(clock(7200).detail.starts_with("7200s behind S3's"));
    }
}
