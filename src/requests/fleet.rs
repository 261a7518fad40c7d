//! Requests from the fleet: objects `{prefix}{vehicle_id}/.requests/{id}.json`, listed
//! every `requests.poll_seconds` (one ListObjectsV2 while the prefix holds fewer than
//! 1,000 keys). A new one is read (GET), checked and handed to the daemon as a local
//! request file; its answer, `{id}.done.json` beside it, is put once every file of the
//! slice is in S3, or at once, with the error, if it is malformed.
//!
//! Acted on once whatever restarts happen: a request is new only while neither its
//! answer is listed nor the state dir knows its id, and the answer is put with
//! `If-None-Match: *` (one already there is taken as delivered).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use sha2::{Digest, Sha256};

use super::{MAX_REQUEST_BYTES, Origin};
use crate::s3::{Attributes, S3};

/// How often answers waiting for delivery are looked for, between polls.
const ANSWER_CHECK: Duration = Duration::from_secs(2);

/// What the poller needs.
pub struct Settings {
    /// `{prefix}{vehicle_id}/.requests/`.
    pub prefix: String,
    pub state_dir: PathBuf,
    pub poll: Duration,
    pub sources: Vec<String>,
}

/// How long shutdown waits for the poller to finish what it is doing: a request to a
/// server that does not answer cannot be interrupted, and must not hold up the exit.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The poller's thread; dropping it stops it.
pub struct Fleet {
    stop: Option<Sender<()>>,
    /// Closed when the thread ends.
    ended: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    pub fn spawn(s3: Arc<S3>, settings: Settings) -> std::io::Result<Fleet> {
        let (tx, rx) = bounded::<()>(1);
        let (ended_tx, ended) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("requests".into())
            .spawn(move || {
                let _ended = ended_tx;
                let mut poller = Poller {
                    s3,
                    settings,
                    last_error: None,
                };
                let mut next_poll = Instant::now();
                loop {
                    poller.deliver();
                    if Instant::now() >= next_poll {
                        poller.poll();
                        next_poll = Instant::now() + poller.settings.poll;
                    }
                    let wait =
                        ANSWER_CHECK.min(next_poll.saturating_duration_since(Instant::now()));
                    if !matches!(rx.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            })?;
        Ok(Fleet {
            stop: Some(tx),
            ended,
            thread: Some(thread),
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        drop(self.stop.take());
        match self.ended.recv_timeout(STOP_GRACE) {
            Err(RecvTimeoutError::Timeout) => log::warn!(
                "requests: still waiting on S3 after {STOP_GRACE:?}; exiting without it \
                 (a request taken is kept in the state dir)"
            ),
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

struct Poller {
    s3: Arc<S3>,
    settings: Settings,
    /// The last failure logged, so an outage is one line, not one per poll.
    last_error: Option<String>,
}

impl Poller {
    fn trouble(&mut self, what: String) {
        if self.last_error.as_deref() != Some(what.as_str()) {
            log::warn!("requests: {what}");
            self.last_error = Some(what);
        }
    }

    /// Lists the requests prefix and takes in each new request.
    fn poll(&mut self) {
        let keys = match self.s3.list(&self.settings.prefix) {
            Ok(keys) => keys,
            Err(e) => return self.trouble(format!("listing {}: {e}", self.settings.prefix)),
        };
        self.last_error = None;
        let names: std::collections::HashSet<&str> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(self.settings.prefix.as_str()))
            .collect();
        for name in &names {
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.ends_with(".done") || names.contains(format!("{id}.done.json").as_str()) {
                continue;
            }
            if !super::valid_id(id) {
                self.trouble(format!(
                    "{name:?}: not a request name ([A-Za-z0-9._-], at most 128 characters); left alone"
                ));
                continue;
            }
            if super::known(&self.settings.state_dir, id) {
                continue;
            }
            self.take(id);
        }
    }

    /// Reads request `id` and hands it on, or answers it with its error.
    fn take(&mut self, id: &str) {
        let key = format!("{}{id}.json", self.settings.prefix);
        let body = match self.read(&key) {
            Ok(b) => b,
            Err(e) => return self.trouble(format!("reading {key}: {e}")),
        };
        let now_ns = crate::clock::wall_ns();
        let dir = &self.settings.state_dir;
        let parsed = if body.len() as u64 > MAX_REQUEST_BYTES {
            Err(format!(
                "larger than {MAX_REQUEST_BYTES} bytes: not a request"
            ))
        } else {
            super::parse_body(id, &body, &self.settings.sources, now_ns)
        };
        match parsed {
            Ok(request) => match super::submit(dir, &request) {
                Ok(_) => log::info!(
                    "request {id} from the fleet: {}{}",
                    describe(&request),
                    request
                        .note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ),
                Err(e) => self.trouble(format!("request {id}: keeping it in the state dir: {e}")),
            },
            Err(error) => {
                log::warn!("request {id} from the fleet is malformed: {error}");
                let answer = serde_json::json!({"id": id, "error": error});
                super::finish_id(dir, id, Origin::Fleet, &answer);
            }
        }
    }

    fn read(&self, key: &str) -> Result<Vec<u8>, String> {
        let obj = self.s3.get(key, 0, None).map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(obj.body, MAX_REQUEST_BYTES + 1),
            &mut body,
        )
        .map_err(|e| e.to_string())?;
        Ok(body)
    }

    /// Puts each answer waiting in the state dir.
    fn deliver(&mut self) {
        let dir = self.settings.state_dir.clone();
        for (id, body) in super::undelivered(&dir) {
            let key = format!("{}{id}.done.json", self.settings.prefix);
            let sha = crate::digest::base64(&Sha256::digest(&body));
            let attrs = Attributes {
                meta: Vec::new(),
                content_type: Some("application/json"),
            };
            let put = self
                .s3
                .put(&key, &mut body.as_slice(), body.len() as u64, &sha, &attrs);
            match put {
                Ok(_) => log::info!("request {id}: answered ({key})"),
                Err(e) if e.key_taken() => log::info!("request {id}: its answer was already in S3"),
                Err(e) => {
                    self.trouble(format!("putting {key}: {e}"));
                    continue;
                }
            }
            if let Err(e) = super::delivered(&dir, &id) {
                self.trouble(format!("request {id}: {e}"));
            }
        }
    }
}

/// `since .. until in sources` for the log.
pub fn describe(r: &super::Request) -> String {
    let t = |ns: i64| crate::calendar::rfc3339_utc(ns.div_euclid(1_000_000_000));
    let sources = if r.sources.is_empty() {
        "every source".to_string()
    } else {
        r.sources.join(", ")
    };
    format!("{} .. {} in {sources}", t(r.since_ns), t(r.until_ns))
}
