//! The gate every upload passes: whether the schedule allows uploading now, and the
//! bandwidth cap of the open window, enforced by one token bucket shared by all uploaders.
//!
//! The planner sets the gate; uploaders read it before each request (a closed gate
//! pauses a multipart upload at the next part boundary) and charge every body byte to
//! the bucket. [`TokenBucket`] is pure: time comes in as an argument.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Burst allowed by the bucket, as a share of one second's rate: small, so the achieved
/// rate stays within a few percent of the cap over any window of a second or more.
const BURST_SECONDS: f64 = 0.1;
/// Longest single sleep while throttled, so a stop request is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// A token bucket in debt form: taking more than is available is allowed and answered
/// with the wait that pays the debt back, so the long-run rate is exact.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(bytes_per_second: u64, now: Instant) -> TokenBucket {
        let rate = bytes_per_second.max(1) as f64;
        let capacity = (rate * BURST_SECONDS).max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long to wait before sending them.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A read size that keeps each wait short at this rate.
    pub fn chunk(&self) -> usize {
        ((self.rate / 20.0) as usize).clamp(1024, 256 * 1024)
    }
}

/// Shared by the planner (writer) and the uploaders (readers).
#[derive(Debug)]
pub struct Gate {
    open: AtomicBool,
    /// 0: no cap.
    cap_bytes_per_second: AtomicU64,
    bucket: Mutex<Option<TokenBucket>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: AtomicBool::new(true),
            cap_bytes_per_second: AtomicU64::new(0),
            bucket: Mutex::new(None),
        }
    }
}

impl Gate {
    pub fn set(&self, open: bool, cap: Option<u64>) {
        self.open.store(open, Ordering::Relaxed);
        let cap = cap.unwrap_or(0);
        if self.cap_bytes_per_second.swap(cap, Ordering::Relaxed) != cap {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            *b = (cap > 0).then(|| TokenBucket::new(cap, Instant::now()));
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The largest read to make before charging it, given the cap.
    pub fn chunk(&self, default: usize) -> usize {
        let b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.as_ref().map_or(default, |b| b.chunk().min(default))
    }

    /// Charges `n` bytes to the shared budget, sleeping as the cap requires. Returns
    /// early (false) if `stop` is raised while waiting.
    pub fn charge(&self, n: usize, stop: &AtomicBool) -> bool {
        let mut wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            match b.as_mut() {
                None => return true,
                Some(bucket) => bucket.take(n as u64, Instant::now()),
            }
        };
        while !wait.is_zero() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let step = wait.min(MAX_SLEEP);
            std::thread::sleep(step);
            wait -= step;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends as fast as the bucket allows for `seconds` of simulated time, in `chunk`s,
    /// and returns the bytes sent.
    fn simulate(rate: u64, chunk: u64, seconds: f64) -> u64 {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        let end = t0 + Duration::from_secs_f64(seconds);
        let mut sent = 0;
        loop {
            let wait = b.take(chunk, now);
            now += wait;
            if now > end {
                return sent;
            }
            sent += chunk;
        }
    }

    #[test]
    fn achieved_rate_is_within_one_percent_of_the_cap_over_ten_seconds() {
        for (rate, chunk) in [
            (100_000, 4096),
            (1_000_000, 50_000),
            (5_000, 1024),
            (10_000_000, 262_144),
        ] {
            let sent = simulate(rate, chunk, 10.0) as f64;
            let want = rate as f64 * 10.0;
            assert!(
                (sent - want).abs() / want < 0.01 + chunk as f64 / want,
                "rate {rate} chunk {chunk}: {sent}"
            );
        }
    }

    #[test]
    fn idle_time_earns_only_a_small_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        // An hour idle does not allow an hour's worth at once.
        let wait = b.take(1000, t0 + Duration::from_secs(3600));
        assert!(wait >= Duration::from_millis(899), "{wait:?}");
    }

    #[test]
    fn gate_without_a_cap_never_waits_and_a_stop_ends_a_wait() {
        let g = Gate::default();
        let stop = AtomicBool::new(false);
        assert!(g.charge(1 << 30, &stop));
        g.set(true, Some(10));
        stop.store(true, Ordering::Relaxed);
        assert!(!g.charge(1000, &stop), "stopped instead of sleeping 100 s");
        g.set(false, None);
        assert!(!g.is_open());
    }

    #[test]
    fn a_capped_gate_reads_in_short_chunks_and_pays_its_debt_by_waiting() {
        let g = Gate::default();
        assert_eq!(g.chunk(1 << 20), 1 << 20, "no cap: the caller's size");
        g.set(true, Some(1_000_000));
        assert_eq!(g.chunk(1 << 20), 50_000, "a twentieth of a second's worth");
        assert_eq!(g.chunk(4096), 4096, "never more than asked");
        g.set(true, Some(100));
        assert_eq!(g.chunk(1 << 20), 1024, "at least 1 KiB");
        g.set(true, Some(100_000_000));
        assert_eq!(g.chunk(1 << 20), 256 * 1024, "at most 256 KiB");
        // 10 MB of burst, then 1 MB of debt: paid back in 10 ms of sleep.
        let stop = AtomicBool::new(false);
        assert!(g.charge(11_000_000, &stop), "waited, then allowed");
        g.set(true, Some(100_000_000));
        assert!(g.is_open());
    }
}
