//! On-demand requests: a time slice of files that goes first (SPEC.md, "Links, byte
//! budgets and on-demand requests"). A request is a file in `{state_dir}/requests/`,
//! put there by `tvm-upload request` or by the fleet poller ([`fleet`]), so it is kept
//! across restarts and works whether the daemon runs or not:
//!
//! - `{id}.json`: open; the daemon reads the open ones every second and hands their
//!   slices to the planner.
//! - `{id}.done.json`: a fleet request's answer, not yet delivered to S3.
//! - `answered/{id}.done.json`: the answer, delivered (or local); the latest
//!   [`KEEP_ANSWERED`] are kept.
//!
//! Each step is a file written whole (temporary name, fsync, rename, fsync of the
//! directory), so a power cut leaves a request open or answered, never half of either.

pub mod fleet;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::calendar::rfc3339_utc;
use crate::slice::Slice;

/// Answers kept in `answered/`; older ones are deleted.
pub const KEEP_ANSWERED: usize = 200;
/// The largest request object read from S3 (a request is a few hundred bytes).
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `tvm-upload request` on the vehicle.
    Local,
    /// An object under `{prefix}{vehicle_id}/.requests/`.
    Fleet,
}

/// One request, as kept in the state dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub since_ns: i64,
    pub until_ns: i64,
    /// Empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
    pub origin: Origin,
    /// Unix seconds.
    pub received: i64,
}

impl Request {
    pub fn slice(&self) -> Slice {
        Slice {
            since_ns: self.since_ns,
            until_ns: self.until_ns,
            sources: self.sources.clone(),
        }
    }

    /// The answer once none of its files is pending.
    pub fn answer(&self, matched: usize, uploaded: usize, pending: usize, at: i64) -> Value {
        json!({
            "id": self.id,
            "since": rfc3339_utc(self.since_ns.div_euclid(1_000_000_000)),
            "until": rfc3339_utc(self.until_ns.div_euclid(1_000_000_000)),
            "sources": self.sources,
            "note": self.note,
            "origin": self.origin,
            "received": rfc3339_utc(self.received),
            "done": rfc3339_utc(at),
            "matched": matched,
            "uploaded": uploaded,
            "pending": pending,
        })
    }
}

/// Whether `id` is safe as a file name and an object key part, and not an answer's.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && !id.ends_with(".done")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("requests")
}

fn answered_dir(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("answered")
}

/// Writes `bytes` to `path` whole: a temporary file, fsync, rename, fsync of the dir.
fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(parent)?.sync_all()
}

fn pretty(v: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Hands a request to the daemon (running or not): `{id}.json` in the requests dir.
pub fn submit(state_dir: &Path, request: &Request) -> io::Result<PathBuf> {
    let path = dir(state_dir).join(format!("{}.json", request.id));
    write_whole(&path, &pretty(request))?;
    Ok(path)
}

/// Whether a request `id` is open or answered here.
pub fn known(state_dir: &Path, id: &str) -> bool {
    let d = dir(state_dir);
    d.join(format!("{id}.json")).exists()
        || d.join(format!("{id}.done.json")).exists()
        || answered_dir(state_dir)
            .join(format!("{id}.done.json"))
            .exists()
}

/// The open requests, oldest first. One that cannot be read is set aside into
/// `answered/` with its error, and named in the log.
pub fn open(state_dir: &Path) -> Vec<Request> {
    let (good, bad) = read_open(state_dir);
    for (id, error) in bad {
        set_aside(state_dir, &id, &error);
    }
    good
}

/// The open requests, oldest first, and the ids of those that cannot be read, with why.
/// Reads only.
pub fn read_open(state_dir: &Path) -> (Vec<Request>, Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return (Vec::new(), Vec::new());
    };
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if id.ends_with(".done") {
            continue;
        }
        let parsed = fs::read(entry.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) if r.id == id => good.push(r),
            Ok(r) => bad.push((id.to_string(), format!("its id {:?} is not its name", r.id))),
            Err(e) => bad.push((id.to_string(), e)),
        }
    }
    good.sort_by(|a, b| (a.received, &a.id).cmp(&(b.received, &b.id)));
    (good, bad)
}

fn set_aside(state_dir: &Path, id: &str, error: &str) {
    log::warn!("request {id}: unreadable ({error}); set aside");
    let answer = json!({"id": id, "error": format!("unreadable: {error}")});
    finish_id(state_dir, id, Origin::Local, &answer);
}

/// Answers `request`: a local one's answer goes to `answered/`, a fleet one's waits in
/// the requests dir for the poller to deliver it. The open file goes last, so a crash
/// between leaves both, and the next start finishes the job (the answer is the same).
pub fn finish(state_dir: &Path, request: &Request, answer: &Value) {
    finish_id(state_dir, &request.id, request.origin, answer);
}

fn finish_id(state_dir: &Path, id: &str, origin: Origin, answer: &Value) {
    let done = match origin {
        Origin::Local => answered_dir(state_dir),
        Origin::Fleet => dir(state_dir),
    }
    .join(format!("{id}.done.json"));
    if let Err(e) = write_whole(&done, &pretty(answer)) {
        log::warn!("request {id}: writing its answer {}: {e}", done.display());
        return;
    }
    let open = dir(state_dir).join(format!("{id}.json"));
    if let Err(e) = fs::remove_file(&open)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("request {id}: removing {}: {e}", open.display());
    }
    prune(&answered_dir(state_dir));
}

/// A fleet request's answer was delivered: into `answered/`.
pub fn delivered(state_dir: &Path, id: &str) -> io::Result<()> {
    let from = dir(state_dir).join(format!("{id}.done.json"));
    let to = answered_dir(state_dir).join(format!("{id}.done.json"));
    fs::create_dir_all(answered_dir(state_dir))?;
    fs::rename(from, to)?;
    File::open(dir(state_dir))?.sync_all()
}

/// Answers waiting for delivery: (id, body).
pub fn undelivered(state_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".done.json")?.to_string();
            Some((id, fs::read(e.path()).ok()?))
        })
        .collect()
}

/// Keeps the latest [`KEEP_ANSWERED`] answers.
fn prune(answered: &Path) {
    let Ok(entries) = fs::read_dir(answered) else {
        return;
    };
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if all.len() <= KEEP_ANSWERED {
        return;
    }
    all.sort();
    for (_, path) in &all[..all.len() - KEEP_ANSWERED] {
        let _ = fs::remove_file(path);
    }
}

/// A request's body as the fleet writes it:
/// `{"since": T, "until": T, "sources": [...], "note": "..."}`, times as
/// [`crate::slice::parse_time`] reads them (relative ones from `now_ns`, when it is
/// read). `sources` must name configured sources.
pub fn parse_body(
    id: &str,
    body: &[u8],
    known_sources: &[String],
    now_ns: i64,
) -> Result<Request, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        since: String,
        until: String,
        #[serde(default)]
        sources: Vec<String>,
        #[serde(default)]
        note: Option<String>,
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| format!("not a request: {e}"))?;
    new_request(
        id.to_string(),
        (&b.since, &b.until),
        b.sources,
        b.note,
        Origin::Fleet,
        known_sources,
        now_ns,
    )
}

/// A request checked: times read, `until` not before `since`, sources configured.
pub fn new_request(
    id: String,
    (since, until): (&str, &str),
    sources: Vec<String>,
    note: Option<String>,
    origin: Origin,
    known_sources: &[String],
    now_ns: i64,
) -> Result<Request, String> {
    let since_ns = crate::slice::parse_time(since, now_ns).map_err(|e| format!("since: {e}"))?;
    let until_ns = crate::slice::parse_time(until, now_ns).map_err(|e| format!("until: {e}"))?;
    if until_ns < since_ns {
        return Err(format!("until ({until}) is before since ({since})"));
    }
    if let Some(s) = sources.iter().find(|s| !known_sources.contains(s)) {
        return Err(format!(
            "no source named {s:?} (the config has {})",
            known_sources.join(", ")
        ));
    }
    Ok(Request {
        id,
        since_ns,
        until_ns,
        sources,
        note,
        origin,
        received: now_ns.div_euclid(1_000_000_000),
    })
}

#[cfg(test)]
mod tests;
