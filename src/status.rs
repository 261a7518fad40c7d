//! `tvm-upload status`: what the state directory says, read without disturbing a running
//! daemon (the journal is only read; the lock is only tested).
//!
//! Today it reads the journal: pending files and bytes per source, multipart uploads in
//! progress with the share of parts stored, and the registry's totals.

use std::collections::BTreeMap;
use std::fs::OpenOptions;

use serde_json::{Value, json};

use crate::config::Config;
use crate::queue::Journal;

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
    let mut in_flight: Vec<Value> = state
        .multipart
        .iter()
        .map(|(f, m)| {
            let total_parts = m.size.div_ceil(m.part_size).max(1);
            let done_bytes: u64 = m
                .parts
                .keys()
                .map(|&n| m.part_size.min(m.size.saturating_sub(u64::from(n - 1) * m.part_size)))
                .sum();
            json!({
                "source": f.source, "path": f.rel, "key": m.key, "size": m.size,
                "parts_done": m.parts.len(), "parts_total": total_parts,
                "percent": if m.size == 0 { 100.0 } else { (done_bytes as f64 * 1000.0 / m.size as f64).round() / 10.0 },
            })
        })
        .collect();
    in_flight.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let pending_files: u64 = per_source.values().map(|v| v.0).sum();
    let pending_bytes: u64 = per_source.values().map(|v| v.1).sum();
    Ok(json!({
        "vehicle_id": config.vehicle_id,
        "daemon_running": daemon_running(config),
        "pending": {
            "files": pending_files,
            "bytes": pending_bytes,
            "by_source": per_source.iter().map(|(s, (n, b))| (s.to_string(), json!({"files": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        },
        "in_flight": in_flight,
        "uploaded": {
            "files": state.registry.len(),
            "bytes": state.registry.values().map(|u| u.size).sum::<u64>(),
        },
        "journal_damaged_lines": replay.damaged.len(),
        "window": window(config),
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
    let running = if r["daemon_running"].as_bool() == Some(true) {
        "running"
    } else {
        "not running"
    };
    println!("tvm-upload {} — daemon {running}", config.vehicle_id);
    println!(
        "pending:  {} files, {}",
        r["pending"]["files"],
        human(r["pending"]["bytes"].as_u64().unwrap_or(0))
    );
    if let Some(by) = r["pending"]["by_source"].as_object() {
        for (s, v) in by {
            println!(
                "  {s:<20} {:>8} files {:>12}",
                v["files"],
                human(v["bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    if let Some(list) = r["in_flight"].as_array() {
        for m in list {
            let key = m["key"].as_str().unwrap_or("");
            let short: String = if key.chars().count() > 52 {
                format!(
                    "…{}",
                    key.chars()
                        .rev()
                        .take(51)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<String>()
                )
            } else {
                key.to_string()
            };
            println!("  uploading {short:<52} {:>5}%", m["percent"]);
        }
    }
    if r["window"]["open"].as_bool() == Some(false) {
        println!(
            "window:   closed; next opens {}",
            r["window"]["next_open"].as_str().unwrap_or("never")
        );
    }
    println!(
        "uploaded: {} files, {}",
        r["uploaded"]["files"],
        human(r["uploaded"]["bytes"].as_u64().unwrap_or(0))
    );
    Ok(())
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
