//! A TCP relay on loopback in front of a server that speaks something other than HTTP
//! (a Kafka broker): bytes pass as they are until the test cuts the link, which closes
//! every open connection and refuses new ones until it is restored, or slows what either
//! side sends to a rate.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Relay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    /// Bytes per second from the server to clients (0: as fast as they come).
    rate: Arc<AtomicU64>,
    /// Bytes per second from clients to the server (0: as fast as they come).
    up: Arc<AtomicU64>,
}

impl Relay {
    /// Listens on `port` and relays each connection to `upstream` on loopback.
    pub fn start(port: u16, upstream: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("relay bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let relay = Relay {
            port,
            cut: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
            rate: Arc::default(),
            up: Arc::default(),
        };
        let (cut, open, stop) = (
            Arc::clone(&relay.cut),
            Arc::clone(&relay.open),
            Arc::clone(&relay.stop),
        );
        let rates = [Arc::clone(&relay.up), Arc::clone(&relay.rate)];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if cut.load(Ordering::Relaxed) => drop(client),
                    Ok((client, _)) => connect(client, upstream, &open, &rates),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        relay
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }

    /// Paces what the server sends, on every connection, to `bytes_per_second` each
    /// (0: no pacing).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Paces what clients send, on every connection, to `bytes_per_second` each
    /// (0: no pacing): a producer behind it goes no faster than that.
    pub fn throttle_sends(&self, bytes_per_second: u64) {
        self.up.store(bytes_per_second, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn connect(
    client: TcpStream,
    upstream: u16,
    open: &Mutex<Vec<TcpStream>>,
    rates: &[Arc<AtomicU64>; 2],
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = open.lock().expect("lock");
        open.retain(|s| s.peer_addr().is_ok());
        open.push(c2);
        open.push(s2);
    }
    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let [up, down] = [Arc::clone(&rates[0]), Arc::clone(&rates[1])];
    std::thread::spawn(move || pipe(client, server, Some(up)));
    std::thread::spawn(move || pipe(s3, c3, Some(down)));
}

/// Copies `from` to `to` until either end closes, then closes both; at most `rate`
/// bytes a second when one is set.
fn pipe(mut from: TcpStream, mut to: TcpStream, rate: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        let per_second = rate.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
        if per_second > 0 {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / per_second as f64));
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
