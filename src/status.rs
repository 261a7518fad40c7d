//! `tvm-upload status`: what is left to upload and how it is going, read without
//! disturbing a running daemon. Two sources, both under `state_dir`:
//! - `status.json`, which the daemon rewrites atomically about once a second while busy:
//!   the live queue, in-flight uploads with progress, totals, throughput, ETA, last error;
//! - the journal (read, never written; the lock only tested): what is queued and
//!   uploaded for certain, also when no daemon runs.
//!
//! This module also writes `status.json` for the daemon ([`write`]).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::config::Config;
use crate::queue::Journal;

pub const STATUS_FILE: &str = "status.json";

/// Replaces `status.json` atomically (temp file and rename), so a reader never sees half
/// of one. Not fsynced: it is advice, rewritten every second, never state.
pub fn write(state_dir: &Path, doc: &Value) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{STATUS_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string_pretty(doc)
            .map_err(std::io::Error::other)?
            .as_bytes(),
    )?;
    drop(f);
    std::fs::rename(&tmp, state_dir.join(STATUS_FILE))
}

/// Whether a daemon holds the state dir's lock right now.
fn daemon_running(config: &Config) -> bool {
    let path = config.state_dir.join("lock");
    match OpenOptions::new().write(true).open(&path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

pub fn report(config: &Config) -> Result<Value, String> {
    let replay = Journal::read_only(&config.state_dir).map_err(|e| e.to_string())?;
    let state = &replay.state;
    let mut per_source: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (f, p) in &state.pending {
        let e = per_source.entry(f.source.as_str()).or_default();
        e.0 += 1;
        e.1 += p.size;
    }
    let mut incomplete: Vec<Value> = state
        .multipart
        .iter()
        .map(|(f, m)| {
            let done: u64 = m
                .parts
                .keys()
                .map(|&n| m.part_size.min(m.size.saturating_sub(u64::from(n - 1) * m.part_size)))
                .sum();
            json!({
                "source": f.source, "path": f.rel, "size": m.size, "done_bytes": done,
                "percent": if m.size == 0 { 100.0 } else { (done as f64 * 1000.0 / m.size as f64).round() / 10.0 },
            })
        })
        .collect();
    incomplete.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    let running = daemon_running(config);
    let live: Option<Value> = std::fs::read(config.state_dir.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let live_field = |k: &str| live.as_ref().map_or(Value::Null, |v| v[k].clone());
    Ok(json!({
        "vehicle_id": config.vehicle_id,
        "daemon_running": running,
        "status_updated_at": live_field("updated_at"),
        "pending": {
            "files": per_source.values().map(|v| v.0).sum::<u64>(),
            "bytes": per_source.values().map(|v| v.1).sum::<u64>(),
            "by_source": per_source.iter().map(|(s, (n, b))| (s.to_string(), json!({"files": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        },
        "in_flight": if running { live_field("in_flight") } else { json!([]) },
        "incomplete_multipart": incomplete,
        "uploaded": {
            "files": state.registry.len(),
            "bytes": state.registry.values().map(|u| u.size).sum::<u64>(),
        },
        "totals_since_start": live_field("totals"),
        "throughput_bytes_per_second": if running { live_field("throughput_bytes_per_second") } else { json!(0) },
        "eta_seconds": if running { live_field("eta_seconds") } else { Value::Null },
        "settling_files": if running { live_field("queue")["settling_files"].clone() } else { json!(0) },
        "last_error": live_field("last_error"),
        "window": window(config),
        "journal_damaged_lines": replay.damaged.len(),
    }))
}

/// Whether uploads are allowed now, and if not when they next are.
fn window(config: &Config) -> Value {
    let Some(schedule) = &config.schedule else {
        return json!({ "open": true, "always": true });
    };
    let now = crate::schedule::schedule_now();
    match schedule.open_at(now) {
        Some(open) => json!({ "open": true, "max_bytes_per_second": open.max_bytes_per_second }),
        None => json!({
            "open": false,
            "next_open": schedule.next_open(now).map(crate::key::rfc3339_utc),
        }),
    }
}

pub fn show(config: &Config, as_json: bool) -> Result<(), String> {
    let r = report(config)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print!("{}", human_view(&r));
    Ok(())
}

/// The 80-column view.
pub fn human_view(r: &Value) -> String {
    let mut out = String::new();
    let running = r["daemon_running"].as_bool() == Some(true);
    let state = if running {
        "running".to_string()
    } else {
        match r["status_updated_at"].as_str() {
            Some(t) => format!("not running (last seen {t})"),
            None => "not running".to_string(),
        }
    };
    out.push_str(&format!(
        "tvm-upload {}: daemon {state}\n",
        r["vehicle_id"].as_str().unwrap_or("")
    ));
    let pending_bytes = r["pending"]["bytes"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "pending    {:>7} files {:>11}",
        r["pending"]["files"],
        human(pending_bytes)
    ));
    if let Some(eta) = r["eta_seconds"].as_f64() {
        out.push_str(&format!("   ETA {}", duration(eta)));
    }
    if let Some(rate) = r["throughput_bytes_per_second"]
        .as_f64()
        .filter(|r| *r > 0.0)
    {
        out.push_str(&format!(" at {}/s", human(rate as u64)));
    }
    out.push('\n');
    if let Some(by) = r["pending"]["by_source"].as_object() {
        for (s, v) in by {
            let name: String = s.chars().take(20).collect();
            out.push_str(&format!(
                "  {name:<20} {:>7} files {:>11}\n",
                v["files"],
                human(v["bytes"].as_u64().unwrap_or(0))
            ));
        }
    }
    if let Some(n) = r["settling_files"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!(
            "settling   {n:>7} files (waiting to be unchanged)\n"
        ));
    }
    let list = if running {
        &r["in_flight"]
    } else {
        &r["incomplete_multipart"]
    };
    let label = if running { "uploading" } else { "paused" };
    for m in list.as_array().into_iter().flatten() {
        let path = format!(
            "{}:{}",
            m["source"].as_str().unwrap_or(""),
            m["path"].as_str().unwrap_or("")
        );
        let short: String = if path.chars().count() > 48 {
            let tail: Vec<char> = path.chars().rev().take(47).collect();
            format!("…{}", tail.into_iter().rev().collect::<String>())
        } else {
            path
        };
        out.push_str(&format!(
            "{label:<10} {short:<48} {:>5.1}% of {}\n",
            m["percent"].as_f64().unwrap_or(0.0),
            human(m["size"].as_u64().unwrap_or(0))
        ));
    }
    out.push_str(&format!(
        "uploaded   {:>7} files {:>11} (all time)\n",
        r["uploaded"]["files"],
        human(r["uploaded"]["bytes"].as_u64().unwrap_or(0))
    ));
    if let Some(t) = r["totals_since_start"].as_object() {
        out.push_str(&format!(
            "this run   {:>7} files {:>11}, {} already in S3, {} failed attempts\n",
            t.get("files_uploaded").cloned().unwrap_or(json!(0)),
            human(t.get("bytes_uploaded").and_then(Value::as_u64).unwrap_or(0)),
            t.get("files_already_in_s3").cloned().unwrap_or(json!(0)),
            t.get("failed_attempts").cloned().unwrap_or(json!(0)),
        ));
    }
    if r["window"]["open"].as_bool() == Some(false) {
        out.push_str(&format!(
            "window     closed; next opens {}\n",
            r["window"]["next_open"].as_str().unwrap_or("never")
        ));
    }
    if let Some(e) = r["last_error"].as_object() {
        let msg: String = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        out.push_str(&format!(
            "last error {}\n           {msg}\n",
            e.get("at").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_view_fits_eighty_columns() {
        let r = json!({
            "vehicle_id": "v001-with-a-rather-long-vehicle-identifier-0000000001",
            "daemon_running": true,
            "pending": { "files": 1234567, "bytes": 987654321987u64,
                         "by_source": { "a-source-name-longer-than-twenty-chars": {"files": 1, "bytes": 2} } },
            "settling_files": 12,
            "eta_seconds": 123456.0,
            "throughput_bytes_per_second": 123456789.0,
            "in_flight": [{ "source": "ros", "path": "a/very/deep/directory/tree/with/a/very/long/file-name.mcap",
                            "percent": 42.5, "size": 123456789 }],
            "uploaded": { "files": 99999999, "bytes": 1234567890123456u64 },
            "totals_since_start": { "files_uploaded": 10, "bytes_uploaded": 100, "files_already_in_s3": 1, "failed_attempts": 2 },
            "window": { "open": false, "next_open": "2026-11-23T20:00:00Z" },
            "last_error": { "at": "2026-11-22T10:00:00Z", "message": "x".repeat(300) },
        });
        let text = human_view(&r);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(
            text.contains("ETA 34h17m") && text.contains("42.5%"),
            "{text}"
        );
    }
}
