//! The commands behind the CLI: `run` over one object or a prefix (many workers may
//! share a prefix: leases decide who works what), `status`, `check-config` and
//! `create-table`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::checkpoint::{Checkpoint, Manager, Status};
use super::config::Config;
use super::dynamo::Dynamo;
use super::emitter::Emitter;
use super::job::{self, Context, Outcome};
use super::kafka::{Dest, Sink};
use super::source;
use crate::credentials::Provider;
use crate::s3::S3;

/// How often a worker looks again at objects others hold.
const BUSY_POLL: Duration = Duration::from_secs(2);

/// The credentials chain, as tvm-upload's (a Fargate task's come from the container
/// endpoint).
pub fn credentials() -> Result<Arc<Provider>, String> {
    Provider::resolve(None, None).map_err(|e| e.to_string())
}

pub fn s3_client(config: &Config, bucket: &str, creds: &Arc<Provider>) -> Result<S3, String> {
    let cfg = crate::config::S3Config {
        bucket: bucket.to_string(),
        region: config.s3.region.clone(),
        endpoint: config.s3.endpoint.clone(),
        path_style: config.s3.path_style,
        prefix: String::new(),
        multipart_threshold_bytes: crate::config::MIN_PART_SIZE_BYTES,
        part_size_bytes: crate::config::MIN_PART_SIZE_BYTES,
        concurrency: 2,
        storage_class: None,
        ca_bundle: config.s3.ca_bundle.clone(),
    };
    S3::with_buffers(&cfg, Arc::clone(creds), crate::s3::Buffers::READING)
}

/// A worker's name in the lease: host, process and a random part.
pub fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

pub fn manager(config: &Config, creds: &Arc<Provider>) -> Manager {
    Manager {
        db: Dynamo::new(
            &config.checkpoint.endpoint,
            &config.checkpoint.region,
            creds.clone(),
        ),
        table: config.checkpoint.table.clone(),
        owner: owner(),
        lease: config.checkpoint.lease,
    }
}

/// `run`: every job of `target` (one object, or every CSV object under a prefix). Ok
/// with whether all are COMPLETED (false: stopped by a signal first).
pub fn run(
    config: &Config,
    target: &str,
    job_id: Option<&str>,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let (bucket, key) = source::parse_url(target)
        .ok_or_else(|| format!("{target:?} is not s3://BUCKET/KEY or s3://BUCKET/PREFIX/"))?;
    let creds = credentials()?;
    if let Some(region) = &config.kafka.msk_iam {
        super::msk::install(Arc::clone(&creds), region);
    }
    let s3 = Arc::new(s3_client(config, &bucket, &creds)?);
    let checkpoints = manager(config, &creds);
    checkpoints
        .db
        .describe(&checkpoints.table)
        .map_err(|e| missing_table(config, &e))?;
    let emitter = config
        .metrics
        .as_ref()
        .map(|m| Emitter::start(m, creds.clone()));
    let ctx = Context {
        config,
        checkpoints: &checkpoints,
        emitter: emitter.as_ref(),
        stop,
    };
    let keys = if key.is_empty() || key.ends_with('/') {
        if job_id.is_some() {
            return Err("--job-id names one object's job; not with a prefix".into());
        }
        let keys: Vec<String> = s3
            .list(&key)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| source::is_csv(k))
            .collect();
        log::info!("{} CSV objects under s3://{bucket}/{key}", keys.len());
        keys
    } else {
        vec![key]
    };
    work(&ctx, &s3, &bucket, &keys, job_id)
}

fn missing_table(config: &Config, e: &super::dynamo::DynamoError) -> String {
    if e.is("ResourceNotFoundException") {
        format!(
            "checkpoint table {} does not exist in {} (create it: csv2kafka create-table --config ...)",
            config.checkpoint.table, config.checkpoint.region
        )
    } else {
        format!("checkpoint table {}: {e}", config.checkpoint.table)
    }
}

/// Works the jobs until each is COMPLETED; objects others hold are looked at again
/// until their worker finishes or its lease expires. Workers start at different
/// objects, so several on one prefix rarely contend.
fn work(
    ctx: &Context,
    s3: &Arc<S3>,
    bucket: &str,
    keys: &[String],
    job_id: Option<&str>,
) -> Result<bool, String> {
    let mut left: Vec<&String> = keys.iter().collect();
    if !left.is_empty() {
        let start = (std::process::id() as usize) % left.len();
        left.rotate_left(start);
    }
    let mut failures = Vec::new();
    while !left.is_empty() {
        let mut busy = Vec::new();
        for key in left {
            if ctx.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            let id = job_id.map_or_else(|| format!("{bucket}/{key}"), str::to_string);
            match job::run(ctx, s3, bucket, key, &id) {
                Ok(Outcome::Completed) => {}
                Ok(Outcome::Stopped) => return Ok(false),
                Ok(Outcome::Busy) => busy.push(key),
                Err(e) => {
                    log::error!("{e}");
                    failures.push(e);
                }
            }
        }
        left = busy;
        if !left.is_empty() {
            std::thread::sleep(BUSY_POLL);
        }
    }
    match failures.len() {
        0 => Ok(true),
        n => Err(format!("{n} jobs failed; the first: {}", failures[0])),
    }
}

/// `status`: the checkpoint of a job, human or JSON.
pub fn status(config: &Config, job_id: &str, json: bool) -> Result<String, String> {
    let creds = credentials()?;
    let m = manager(config, &creds);
    let cp = m
        .get(job_id)
        .map_err(|e| missing_table(config, &e))?
        .ok_or_else(|| format!("no checkpoint for job {job_id}"))?;
    Ok(if json {
        format!("{:#}\n", status_json(&cp))
    } else {
        status_text(&cp)
    })
}

pub fn status_json(cp: &Checkpoint) -> serde_json::Value {
    let rate = if cp.status == Status::InProgress {
        cp.rate
    } else {
        0.0
    };
    serde_json::json!({
        "job_id": cp.job_id,
        "source_object": cp.source_object,
        "status": cp.status.as_str(),
        "last_line": cp.last_line,
        "total_sent": cp.total_sent,
        "total_lines": cp.total_lines,
        "failed_rows": cp.failed_rows,
        "percent": (cp.percent() * 10.0).round() / 10.0,
        "records_per_second": rate,
        "remaining": cp.remaining(),
        // Unknown (null) until a rate has been measured, rather than a made-up 0.
        "eta_seconds": (rate > 0.0 || cp.status != Status::InProgress).then(|| cp.eta(rate).round()),
        "updated_at": cp.updated_at,
        "lease_owner": cp.lease_owner,
        "error": cp.error,
    })
}

fn status_text(cp: &Checkpoint) -> String {
    let v = status_json(cp);
    // The total once known; before, an estimate from the bytes read (never below the
    // line reached), or "unknown" while nothing has been read.
    let total = match (cp.total_lines, cp.remaining()) {
        (Some(t), _) => t.to_string(),
        (None, 0) if cp.status == Status::InProgress => "unknown".to_string(),
        (None, left) => format!("~{}", cp.last_line + left),
    };
    let rate = v["records_per_second"].as_f64().unwrap_or(0.0);
    let rate_text = match v["eta_seconds"].as_f64() {
        Some(eta) => format!("{rate:.0} rows/s, ETA {}", crate::status::duration(eta)),
        None => "not measured yet, ETA unknown".to_string(),
    };
    let mut out = format!(
        "job {}: {}\n  source   {}\n  line     {} of {total} ({:.1}%)\n  sent     {} rows, {} failed\n  rate     {rate_text}\n  updated  {}\n",
        cp.job_id,
        cp.status.as_str(),
        cp.source_object,
        cp.last_line,
        cp.percent(),
        cp.total_sent,
        cp.failed_rows,
        cp.updated_at,
    );
    if let Some(e) = &cp.error {
        out.push_str(&format!("  error    {e}\n"));
    }
    out
}

/// `check-config`: the credentials' source and the table; the effective config.
pub fn check(config: &Config, connect: bool) -> Result<String, String> {
    let creds = credentials()?;
    let now = creds.current().map_err(|e| e.to_string())?;
    eprintln!("ok     credentials: {}", now.summary());
    let m = manager(config, &creds);
    match m.db.describe(&m.table) {
        Ok(s) => eprintln!("ok     checkpoint.table: {} is {s}", m.table),
        Err(e) => return Err(missing_table(config, &e)),
    }
    if connect {
        if let Some(region) = &config.kafka.msk_iam {
            super::msk::install(Arc::clone(&creds), region);
        }
        let failed = check_kafka(config);
        if failed > 0 {
            return Err(format!("usage: {failed} Kafka check(s) FAILED"));
        }
    }
    Ok(format!("{:#}\n", config.describe()))
}

/// `check-config --connect`'s Kafka lines: the brokers with the configured security
/// (TLS, authentication), the topic and its partitions, the dead-letter topic. Returns
/// how many FAILED.
fn check_kafka(config: &Config) -> usize {
    let k = &config.kafka;
    let sink = match Sink::new(k, config.delivery()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("FAILED kafka: {e}");
            return 1;
        }
    };
    let mut failed = 0;
    let mut dests = vec![(Dest::Main, "kafka.topic")];
    if k.dead_letter_topic.is_some() {
        dests.push((Dest::DeadLetter, "kafka.dead_letter_topic"));
    }
    for (dest, name) in dests {
        match sink.partitions(dest) {
            Ok(n) => eprintln!(
                "ok     {name}: {} has {n} partitions (reached {} with {})",
                sink.topic(dest),
                k.bootstrap_servers,
                security(k)
            ),
            Err(e) => {
                eprintln!("FAILED {name}: {e}");
                failed += 1;
            }
        }
    }
    failed
}

/// How the brokers are reached, in words (nothing secret).
fn security(k: &super::config::Kafka) -> String {
    let protocol = k
        .properties
        .get("security.protocol")
        .map_or("PLAINTEXT", String::as_str);
    match (&k.msk_iam, k.properties.get("sasl.mechanisms")) {
        (Some(region), _) => format!("{protocol}, MSK IAM tokens for {region}"),
        (None, Some(m)) => format!("{protocol}, SASL {m}"),
        (None, None) => protocol.to_string(),
    }
}

/// `create-table`: the checkpoint table, if missing.
pub fn create_table(config: &Config) -> Result<String, String> {
    let creds = credentials()?;
    let m = manager(config, &creds);
    match m.db.describe(&m.table) {
        Ok(_) => Ok(format!("checkpoint table {} exists\n", m.table)),
        Err(e) if e.is("ResourceNotFoundException") => {
            m.db.create_table(&m.table).map_err(|e| e.to_string())?;
            Ok(format!("checkpoint table {} created\n", m.table))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 22.5): "line 1546539 of ~1472074 left" and "rate 0 rows/s, ETA
    /// 0s" before the first sample. The total is the line reached plus the estimate of
    /// what is left, or "unknown"; without a measured rate the ETA is unknown.
    #[test]
    fn status_shows_an_honest_total_rate_and_eta() {
        let mut cp = Checkpoint::new("j", "s3://b/k.csv");
        let text = status_text(&cp);
        assert!(text.contains("line     0 of unknown"), "{text}");
        assert!(text.contains("not measured yet, ETA unknown"), "{text}");
        assert!(status_json(&cp)["eta_seconds"].is_null());
        cp.last_line = 1_546_539;
        cp.bytes_done = 1_000;
        cp.object_bytes = Some(1_100);
        cp.rate = 1000.0;
        let text = status_text(&cp);
        assert!(text.contains("of ~1701193 ("), "{text}");
        assert!(text.contains("1000 rows/s, ETA 2m35s"), "{text}");
        cp.status = Status::Completed;
        cp.total_lines = Some(1_546_539);
        assert!(status_text(&cp).contains("of 1546539 (100.0%)"));
    }
}
