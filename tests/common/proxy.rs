//! Our fault-injecting HTTP/1.1 proxy, between the daemon and a real server.
//!
//! It parses both sides of each exchange (request line, headers and `content-length`
//! body; status line, headers and a `content-length`, chunked or to-close body), so it
//! can record every request with the status the server gave it, and a rule chosen by the
//! test decides per request what happens: forwarded, delayed, forwarded over a slow link,
//! reset mid-body, answered by the proxy itself (5xx, SlowDown, garbage, redirects), or
//! blackholed (read and never answered).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub target: String,
    pub content_length: u64,
    /// The whole body reached the server.
    pub complete: bool,
    pub at: Instant,
    /// The status the client was given (by the server or the proxy), if any.
    pub status: Option<u16>,
    /// The fault injected, if any: "reset", "reply-500", "blackhole", "slow", "latency"...
    pub fault: Option<String>,
    /// The request's headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The decoded object key (path-style: after `/{bucket}/`).
    pub fn key(&self) -> String {
        let path = self.target.split('?').next().unwrap_or("");
        let rest = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, k)| k);
        percent_decode(rest)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session token it was signed with, from the presigned query or the headers.
    pub fn session_token(&self) -> Option<String> {
        self.query("X-Amz-Security-Token")
            .or_else(|| self.header("x-amz-security-token").map(str::to_string))
    }

    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// The listing of the fleet's on-demand requests (`{vehicle}/.requests/`), which goes
    /// on outside the upload windows.
    pub fn is_requests_listing(&self) -> bool {
        self.method == "GET"
            && self
                .query("prefix")
                .is_some_and(|p| p.ends_with("/.requests/"))
    }

    /// A PUT of a whole object (not a part).
    pub fn is_put_object(&self) -> bool {
        self.method == "PUT" && self.query("partNumber").is_none() && !self.key().is_empty()
    }

    pub fn part_number(&self) -> Option<u32> {
        if self.method != "PUT" {
            return None;
        }
        self.query("partNumber")?.parse().ok()
    }

    /// The server did it: a 2xx answer from upstream (not one the proxy made up).
    pub fn succeeded(&self) -> bool {
        let from_server = matches!(self.fault.as_deref(), None | Some("latency" | "slow"));
        from_server && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// CompleteMultipartUpload.
    pub fn is_complete(&self) -> bool {
        self.method == "POST" && self.query("uploadId").is_some()
    }

    /// The signing time (`X-Amz-Date` of a presigned URL, or the header), as Unix
    /// seconds.
    pub fn amz_date(&self) -> Option<i64> {
        let d = self
            .query("X-Amz-Date")
            .or_else(|| self.header("x-amz-date").map(str::to_string))?;
        let num = |r: std::ops::Range<usize>| d.get(r)?.parse::<i64>().ok();
        let (y, m, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
        Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = if b[i] == b'%' && i + 2 < b.len() {
            u8::from_str_radix(&s[i + 1..i + 3], 16).ok()
        } else {
            None
        };
        if let Some(v) = hex {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Action {
    Forward,
    /// Wait, then forward.
    Delay(Duration),
    /// Forward the head and this many body bytes, then reset both connections.
    Reset {
        after: u64,
    },
    /// Read the request and answer it here; the server never sees it.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request and never answer; the connection stays open until the client
    /// gives up (or two minutes pass).
    Blackhole,
    /// Reset the connection at once, the request unread: the link is down. The server
    /// never sees it.
    Refuse,
    /// Forward the body at this many bytes per second.
    Slow {
        bytes_per_second: u64,
    },
    /// Forward the request, then the answer's head and this many bytes of its body,
    /// then reset: a download cut mid-stream.
    CutAnswer {
        after: u64,
    },
    /// Forward the request, let the server answer, and reset the client's connection
    /// instead of passing the answer on: done on the server, unknown to the client.
    LoseAnswer,
    /// Forward the request with the body byte at this offset flipped: bytes damaged on
    /// the way, which only a checksum the server checks can tell.
    Corrupt {
        at: u64,
    },
    /// Read the request whole and close the connection without an answer (a clean
    /// close, not a reset): the server never sees it.
    Hangup,
}

impl Action {
    /// An S3 `<Error>` answer.
    pub fn s3_error(status: u16, code: &str) -> Action {
        Action::s3_error_message(status, code, "injected by the test proxy")
    }

    pub fn s3_error_message(status: u16, code: &str, message: &str) -> Action {
        Action::Reply {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>t</RequestId></Error>"
            ),
        }
    }

    /// A 200 with this body.
    pub fn ok_body(body: &str) -> Action {
        Action::Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: body.to_string(),
        }
    }

    fn name(&self) -> Option<String> {
        match self {
            Action::Forward => None,
            Action::Delay(_) => Some("latency".into()),
            Action::Reset { .. } => Some("reset".into()),
            Action::Reply { status, .. } => Some(format!("reply-{status}")),
            Action::Blackhole => Some("blackhole".into()),
            Action::Refuse => Some("refused".into()),
            Action::Slow { .. } => Some("slow".into()),
            Action::CutAnswer { .. } => Some("cut-answer".into()),
            Action::LoseAnswer => Some("lost-answer".into()),
            Action::Corrupt { .. } => Some("corrupt".into()),
            Action::Hangup => Some("hangup".into()),
        }
    }

    /// Whether the request still reaches the server (latency and a slow link do).
    fn forwards(&self) -> bool {
        matches!(
            self,
            Action::Forward
                | Action::Delay(_)
                | Action::Slow { .. }
                | Action::CutAnswer { .. }
                | Action::LoseAnswer
                | Action::Corrupt { .. }
        )
    }
}

type Rule = Box<dyn Fn(&Request) -> Action + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Request>>,
    /// The client side of every open connection, so that [`Proxy::cut`] can reset them
    /// all at once.
    open: Mutex<std::collections::HashMap<u64, Vec<TcpStream>>>,
    next_conn: std::sync::atomic::AtomicU64,
    rule: Mutex<Option<Rule>>,
    stop: AtomicBool,
    /// Requests forwarded and not yet answered (or abandoned).
    in_flight: std::sync::atomic::AtomicUsize,
}

struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl InFlight<'_> {
    fn enter(n: &std::sync::atomic::AtomicUsize) -> InFlight<'_> {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        // Port 0: the kernel picks a free one as it binds (a port found free and bound
        // later can be taken in between by a server another test starts).
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            open: Mutex::new(std::collections::HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            rule: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                // Relayed writes are small and many: without this, delayed ACKs add
                // ~40 ms to each request (a proxy artefact, not the daemon's).
                let _ = client.set_nodelay(true);
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(client, upstream_port, &s));
            }
        });
        Proxy { port, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Decides what happens to each request from now on.
    pub fn set_rule(&self, rule: impl Fn(&Request) -> Action + Send + Sync + 'static) {
        *self.shared.rule.lock().expect("rule") = Some(Box::new(rule));
    }

    /// Forwards everything again.
    /// Request bodies over a link of `bytes_per_second`; everything else forwarded.
    pub fn slow_bodies(&self, bytes_per_second: u64) {
        self.set_rule(move |r| {
            if r.content_length > 0 {
                Action::Slow { bytes_per_second }
            } else {
                Action::Forward
            }
        });
    }

    pub fn clear_rule(&self) {
        *self.shared.rule.lock().expect("rule") = None;
    }

    /// Delays each request for which `rule` gives a duration, before forwarding it.
    pub fn set_delay(&self, rule: impl Fn(&Request) -> Option<Duration> + Send + Sync + 'static) {
        self.set_rule(move |r| rule(r).map_or(Action::Forward, Action::Delay));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Resets every client connection at once, as a power cut takes the link down with
    /// the computer: what the client's kernel still had buffered never arrives, and a
    /// body cut short is dropped by the server. A request whose body had all arrived is
    /// still carried out by the server, as S3 would.
    pub fn cut(&self) {
        let open = std::mem::take(&mut *self.shared.open.lock().expect("open"));
        for s in open.values().flatten() {
            reset(s);
        }
    }

    /// Requests forwarded to the server and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Waits (up to `limit`) until the server has answered every request it was given:
    /// a restart after a power cut comes later than that.
    pub fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn clear(&self) {
        self.shared.requests.lock().expect("requests").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A parsed message head.
struct Head {
    raw: Vec<u8>,
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head(r: &mut impl BufRead) -> Option<Head> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let end = line == b"\r\n" || line == b"\n";
        raw.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Head {
        raw,
        first,
        headers,
    })
}

/// Copies exactly `n` bytes (or fewer if the reader ends), at most `rate` bytes/s.
/// Returns the bytes copied; `to` may be a sink.
fn copy_n(from: &mut impl Read, to: &mut dyn Write, n: u64, rate: Option<u64>) -> u64 {
    let mut left = n;
    let chunk = rate.map_or(64 * 1024, |r| (r / 10).clamp(1, 64 * 1024) as usize);
    let mut buf = vec![0u8; chunk];
    let mut done = 0;
    while left > 0 {
        let want = buf.len().min(left as usize);
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return done,
            Ok(k) => {
                if to.write_all(&buf[..k]).is_err() {
                    return done;
                }
                left -= k as u64;
                done += k as u64;
                if let Some(r) = rate {
                    std::thread::sleep(Duration::from_secs_f64(k as f64 / r as f64));
                }
            }
        }
    }
    done
}

/// A writer that remembers whether a write failed.
struct CountingWriter<'a> {
    inner: &'a mut TcpStream,
    failed: bool,
    /// The body offset of a byte to flip ([`Action::Corrupt`]), and how far it is.
    flip: Option<u64>,
    written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = match self.flip {
            Some(at) if at >= self.written && at < self.written + buf.len() as u64 => {
                let mut copy = buf.to_vec();
                copy[(at - self.written) as usize] ^= 0x55;
                self.inner.write(&copy)
            }
            _ => self.inner.write(buf),
        };
        self.failed |= r.is_err();
        if let Ok(n) = r {
            self.written += n as u64;
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Closes with a TCP RST (SO_LINGER 0) instead of a FIN.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized, initialised option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Removes a connection's sockets from the open set when it ends.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Registered<'_> {
    fn add(&self, s: &TcpStream) -> bool {
        let Ok(clone) = s.try_clone() else {
            return false;
        };
        match self.shared.open.lock() {
            Ok(mut open) => {
                open.entry(self.id).or_default().push(clone);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.shared.open.lock() {
            open.remove(&self.id);
        }
    }
}

fn serve(client: TcpStream, upstream_port: u16, shared: &Shared) {
    let registered = Registered {
        shared,
        id: shared.next_conn.fetch_add(1, Ordering::Relaxed),
    };
    if !registered.add(&client) {
        return;
    }
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut from_client = BufReader::new(read_half);
    let mut to_client = client;
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        let Some(head) = read_head(&mut from_client) else {
            return;
        };
        let mut parts = head.first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let content_length: u64 = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let req = Request {
            method: method.clone(),
            target,
            content_length,
            complete: false,
            at: Instant::now(),
            status: None,
            fault: None,
            headers: head
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        };
        let action = shared
            .rule
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|rule| rule(&req)))
            .unwrap_or(Action::Forward);
        let index = {
            let mut all = shared.requests.lock().expect("requests");
            let mut r = req;
            r.fault = action.name();
            all.push(r);
            all.len() - 1
        };
        let record = |f: &dyn Fn(&mut Request)| {
            if let Ok(mut all) = shared.requests.lock()
                && let Some(r) = all.get_mut(index)
            {
                f(r);
            }
        };

        if matches!(action, Action::Refuse) {
            reset(&to_client);
            return;
        }
        if !action.forwards() && !matches!(action, Action::Reset { .. }) {
            // Answered (or not) here: the body is read and dropped.
            let got = copy_n(&mut from_client, &mut std::io::sink(), content_length, None);
            if got < content_length {
                return;
            }
            match action {
                Action::Reply {
                    status,
                    headers,
                    body,
                } => {
                    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                    out.push_str(&format!("date: {}\r\n", http_date(unix_now())));
                    for (k, v) in &headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    let body = if method == "HEAD" { "" } else { body.as_str() };
                    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
                    record(&|r| r.status = Some(status));
                    if to_client.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                    continue;
                }
                Action::Hangup => {
                    let _ = to_client.shutdown(Shutdown::Both);
                    return;
                }
                _ => {
                    // Blackhole: wait for the client to give up.
                    let _ = to_client.set_read_timeout(Some(Duration::from_secs(120)));
                    let mut sink = [0u8; 1024];
                    while matches!(from_client.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                }
            }
        }

        if upstream.is_none() {
            let Ok(s) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                return;
            };
            let _ = s.set_nodelay(true);
            let Ok(r) = s.try_clone() else { return };
            upstream = Some((BufReader::new(r), s));
        }
        let Some((up_read, up_write)) = upstream.as_mut() else {
            return;
        };
        let _busy = InFlight::enter(&shared.in_flight);
        if let Action::Delay(d) = action {
            std::thread::sleep(d);
        }
        if up_write.write_all(&head.raw).is_err() {
            return;
        }
        if let Action::Reset { after } = action {
            copy_n(&mut from_client, up_write, after.min(content_length), None);
            reset(&to_client);
            reset(up_write);
            return;
        }
        let rate = match action {
            Action::Slow { bytes_per_second } => Some(bytes_per_second),
            _ => None,
        };
        let mut counted = CountingWriter {
            inner: up_write,
            failed: false,
            flip: match action {
                Action::Corrupt { at } => Some(at),
                _ => None,
            },
            written: 0,
        };
        if copy_n(&mut from_client, &mut counted, content_length, rate) < content_length {
            if !counted.failed {
                // The client went away mid-body.
                let _ = up_write.shutdown(Shutdown::Both);
                return;
            }
            // The server stopped reading: it may have answered early (an error before
            // the body); that answer is passed on below.
        } else {
            record(&|r| r.complete = true);
        }
        let counted_failed = counted.failed;

        // The answer: interim 1xx heads are passed on, then the final one.
        let answer = loop {
            let Some(h) = read_head(up_read) else {
                let _ = to_client.shutdown(Shutdown::Both);
                return;
            };
            let status: u16 = h
                .first
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let last = !(100..200).contains(&status);
            if last {
                // Recorded before the client gets it: a client killed now still had
                // its request done by the server.
                record(&|r| r.status = Some(status));
            }
            if last && matches!(action, Action::LoseAnswer) {
                reset(&to_client);
                reset(up_write);
                return;
            }
            if to_client.write_all(&h.raw).is_err() {
                return;
            }
            if last {
                break (h, status);
            }
        };
        let (h, status) = answer;
        let no_body = method == "HEAD" || status == 204 || status == 304;
        let close = h
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !no_body {
            if h.header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
            {
                if !copy_chunked(up_read, &mut to_client) {
                    return;
                }
            } else if let Some(n) = h.header("content-length").and_then(|v| v.parse().ok()) {
                if let Action::CutAnswer { after } = action {
                    copy_n(up_read, &mut to_client, after.min(n), None);
                    reset(&to_client);
                    reset(up_write);
                    return;
                }
                if copy_n(up_read, &mut to_client, n, None) < n {
                    return;
                }
            } else {
                let _ = std::io::copy(up_read, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
                return;
            }
        }
        if close || counted_failed {
            let _ = to_client.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn copy_chunked(from: &mut BufReader<TcpStream>, to: &mut TcpStream) -> bool {
    loop {
        let mut line = Vec::new();
        if from.read_until(b'\n', &mut line).unwrap_or(0) == 0 || to.write_all(&line).is_err() {
            return false;
        }
        let text = String::from_utf8_lossy(&line);
        let size_hex = text.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(size_hex, 16) else {
            return false;
        };
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = Vec::new();
                if from.read_until(b'\n', &mut t).unwrap_or(0) == 0 || to.write_all(&t).is_err() {
                    return false;
                }
                if t == b"\r\n" || t == b"\n" {
                    return true;
                }
            }
        }
        if copy_n(from, to, size + 2, None) < size + 2 {
            return false;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = super::civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A seeded PRNG (splitmix64) for fault schedules that a seed reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}
