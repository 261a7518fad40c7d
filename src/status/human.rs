//! The 80-column `status` view: what an operator reads on a vehicle's console. Long
//! paths and errors are wrapped, never cut.

use super::{Report, Window};
use crate::human::{duration, human};

/// The 80-column view.
pub fn human_view(r: &Report) -> String {
    let mut out = String::new();
    let state = match (&r.daemon_running, &r.status_updated_at) {
        (true, _) => "running".to_string(),
        (false, Some(t)) => format!("not running (last seen {t})"),
        (false, None) => "not running".to_string(),
    };
    out.push_str(&format!("tvm-upload {}: daemon {state}\n", r.vehicle_id));
    out.push_str(&format!(
        "pending    {:>7} files {:>11}",
        r.pending.files,
        human(r.pending.bytes)
    ));
    if let Some(eta) = r.eta_seconds {
        out.push_str(&format!("   ETA {}", duration(eta)));
    }
    if r.throughput_bytes_per_second > 0.0 {
        let rate = r.throughput_bytes_per_second as u64;
        out.push_str(&format!(" at {}/s", human(rate)));
    }
    out.push('\n');
    for (s, c) in &r.pending.by_source {
        let name: String = s.chars().take(20).collect();
        out.push_str(&format!(
            "  {name:<20} {:>7} files {:>11}\n",
            c.files,
            human(c.bytes)
        ));
    }
    if r.settling_files > 0 {
        out.push_str(&format!(
            "settling   {:>7} files (waiting to be unchanged)\n",
            r.settling_files
        ));
    }
    trouble(&mut out, r);
    transfers(&mut out, r);
    waiting(&mut out, r);
    quarantined(&mut out, r);
    requests(&mut out, r);
    link(&mut out, r);
    if let Some(note) = &r.multipart_uploads_unlisted {
        out.push_str(&wrap(&format!("note       {note}"), 11));
    }
    for kept in &r.disk_kept {
        out.push_str(&wrap(&format!("disk kept  {kept}"), 11));
    }
    out.push_str(&format!(
        "uploaded   {:>7} files {:>11} (all time)\n",
        r.uploaded.files,
        human(r.uploaded.bytes)
    ));
    if let Some(t) = &r.totals_since_start {
        out.push_str(&format!(
            "this run   {:>7} files {:>11}, {} already in S3, {} failed attempts\n",
            t.files_uploaded,
            human(t.bytes_uploaded),
            t.files_already_in_s3,
            t.failed_attempts,
        ));
        if t.bytes_sent > 0 && t.bytes_uploaded > 0 {
            out.push_str(&format!(
                "on the wire {:>17} sent ({:.2}× of the bytes uploaded)\n",
                human(t.bytes_sent),
                t.bytes_sent as f64 / t.bytes_uploaded as f64
            ));
        }
    }
    window(&mut out, &r.window);
    if let Some(e) = &r.last_error {
        out.push_str(&format!("last error {}\n", e.at));
        out.push_str(&wrap(&format!("           {}", e.message), 11));
    }
    if let Some(free) = r.state_dir_free_bytes
        && free < STATE_DIR_LOW_BYTES
    {
        out.push_str(&format!(
            "state dir  {} free: the journal may soon fail to grow\n",
            human(free)
        ));
    }
    out
}

/// Below this much free space in the state dir's filesystem, the status warns.
const STATE_DIR_LOW_BYTES: u64 = 16 * 1024 * 1024;

fn window(out: &mut String, w: &Window) {
    if w.open {
        return;
    }
    match (&w.next_open, &w.next_open_local) {
        (Some(utc), Some(local)) if local != utc => {
            out.push_str(&format!("window     closed; next opens {local}\n"));
            out.push_str(&format!("                              ({utc})\n"));
        }
        (Some(utc), _) => out.push_str(&format!("window     closed; next opens {utc}\n")),
        (None, _) => out.push_str("window     closed; no window opens within a week\n"),
    }
}

/// A daemon-wide trouble: what, since when, how often it failed, the next probe.
fn trouble(out: &mut String, r: &Report) {
    let Some(t) = &r.trouble else {
        return;
    };
    out.push_str(&format!(
        "TROUBLE    {} for {} ({} failed)",
        t.what,
        duration(t.seconds as f64),
        t.failures
    ));
    if let Some(next) = &t.next_probe {
        out.push_str(&format!("; next try {next}"));
    }
    out.push('\n');
    out.push_str(&wrap(&format!("           {}", t.last_error), 11));
}

/// The link now, and each link's bytes today and what is left of its budget.
fn link(out: &mut String, r: &Report) {
    let Some(l) = &r.link else {
        return;
    };
    let iface = l.interface.as_deref().unwrap_or("no default route");
    out.push_str(&format!("link       {} ({iface})\n", l.current));
    for u in &l.links {
        let budget = match (u.daily_bytes, u.left_today) {
            (Some(d), Some(0)) => format!(" of {}: budget spent until midnight", human(d)),
            (Some(d), Some(left)) => format!(" of {}, {} left", human(d), human(left)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {:<12} {:>11} today{budget}\n",
            u.name,
            human(u.used_today)
        ));
    }
}

/// Open on-demand requests, each with its slice and how far it has come.
fn requests(out: &mut String, r: &Report) {
    if r.requests.is_empty() {
        return;
    }
    out.push_str(&format!(
        "requests   {:>7} open (their files go first)\n",
        r.requests.len()
    ));
    for q in r.requests.iter().take(WAITING_SHOWN) {
        let sources = match q.sources.is_empty() {
            true => "every source".to_string(),
            false => q.sources.join(", "),
        };
        let progress = match (q.uploaded, q.pending) {
            (Some(u), Some(p)) => format!("{u} uploaded, {p} to go"),
            _ => "taken at the daemon's next start".to_string(),
        };
        let note = q
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        out.push_str(&wrap(
            &format!(
                "  {} [{}] {} .. {} in {sources}: {progress}{note}",
                q.id, q.origin, q.since, q.until
            ),
            4,
        ));
    }
}

fn quarantined(out: &mut String, r: &Report) {
    if r.quarantined.is_empty() {
        return;
    }
    out.push_str(&format!(
        "quarantined {:>6} files (tried again when changed or after a restart):\n",
        r.quarantined.len()
    ));
    for q in r.quarantined.iter().take(WAITING_SHOWN) {
        out.push_str(&wrap(
            &format!("  {}:{} since {}", q.source, q.path, q.since),
            4,
        ));
        out.push_str(&wrap(&format!("    {}", q.reason), 4));
    }
    if r.quarantined.len() > WAITING_SHOWN {
        out.push_str(&format!(
            "  and {} more (status --json lists them)\n",
            r.quarantined.len() - WAITING_SHOWN
        ));
    }
}

/// Waiting files shown in the human view; `status --json` lists up to
/// [`MAX_WAITING_LISTED`].
const WAITING_SHOWN: usize = 10;

/// The oldest waiting files, a line each (the path on lines of its own when long).
fn waiting(out: &mut String, r: &Report) {
    if r.waiting.is_empty() {
        return;
    }
    out.push_str(&format!(
        "waiting    {:>7} files, oldest first:\n",
        r.waiting_total
    ));
    for w in r.waiting.iter().take(WAITING_SHOWN) {
        let mut line = format!("  {} for {}", w.reason, duration(w.seconds as f64));
        if let Some(until) = &w.until {
            line.push_str(&format!(" (until {until})"));
        }
        out.push_str(&wrap(&format!("{line}: {}:{}", w.source, w.path), 4));
        if let Some(detail) = &w.detail {
            out.push_str(&wrap(&format!("    {detail}"), 4));
        }
    }
    let more = (r.waiting_total as usize).saturating_sub(WAITING_SHOWN.min(r.waiting.len()));
    if more > 0 {
        out.push_str(&format!("  and {more} more (status --json lists them)\n"));
    }
}

/// `text` in lines of at most 80 columns, continuation lines indented by `indent`:
/// long paths and messages are wrapped, never cut.
pub fn wrap(text: &str, indent: usize) -> String {
    const WIDTH: usize = 80;
    let mut out = String::new();
    let mut line = String::new();
    let mut width = 0;
    for c in text.chars() {
        if width == WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
            width = indent;
        }
        line.push(c);
        width += 1;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// In-flight uploads (daemon running) or paused multipart uploads (not running).
fn transfers(out: &mut String, r: &Report) {
    let (list, label) = if r.daemon_running {
        (&r.in_flight, "uploading")
    } else {
        (&r.incomplete_multipart, "paused")
    };
    for m in list {
        out.push_str(&format!(
            "{label:<10} {:>5.1}% of {:>10}  ",
            m.percent,
            human(m.size)
        ));
        // The whole path, wrapped: its source and its start matter as much as its end.
        let line = format!("{}:{}", m.source, m.path);
        let room = 80 - 31;
        if line.chars().count() <= room {
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push('\n');
            out.push_str(&wrap(&format!("    {line}"), 4));
        }
    }
}
