//! A counting TCP proxy between the daemon and the S3 server. It parses the request side
//! of HTTP/1.1 (request line, headers, `content-length` body) so it can record each
//! request, whether its body was forwarded whole, and delay chosen requests; the response
//! side is copied through untouched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
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

type DelayRule = Box<dyn Fn(&Request) -> Option<Duration> + Send + Sync>;

pub struct Proxy {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    delay: Arc<Mutex<Option<DelayRule>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let port = super::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let delay: Arc<Mutex<Option<DelayRule>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, d, s) = (Arc::clone(&requests), Arc::clone(&delay), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let (r, d) = (Arc::clone(&r), Arc::clone(&d));
                std::thread::spawn(move || serve(client, upstream_port, r, d));
            }
        });
        Proxy {
            port,
            requests,
            delay,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Delays each request for which `rule` gives a duration, before forwarding it.
    pub fn set_delay(&self, rule: impl Fn(&Request) -> Option<Duration> + Send + Sync + 'static) {
        *self.delay.lock().expect("delay") = Some(Box::new(rule));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }

    pub fn clear(&self) {
        self.requests.lock().expect("requests").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    delay: Arc<Mutex<Option<DelayRule>>>,
) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Both);
    });
    let mut reader = BufReader::new(client);
    let mut up = upstream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = up.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let content_length: u64 = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut req = Request {
            method,
            target,
            content_length,
            complete: false,
            at: Instant::now(),
        };
        let index = {
            let mut all = requests.lock().expect("requests");
            all.push(req.clone());
            all.len() - 1
        };
        let wait = delay
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|rule| rule(&req)));
        if let Some(w) = wait {
            std::thread::sleep(w);
        }
        if up.write_all(&head).is_err() {
            return;
        }
        let mut left = content_length;
        let mut buf = [0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => {
                    let _ = up.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            }
        }
        req.complete = true;
        requests.lock().expect("requests")[index].complete = true;
    }
}
