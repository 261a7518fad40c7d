//! The one semaphore over requests that carry a body, shared by every uploader, so that
//! whole files and parts together never exceed `s3.concurrency`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A counting semaphore over requests that carry a body, shared by every uploader, so
/// that files and parts together never exceed `s3.concurrency`.
///
/// Small files must not starve behind a multi-gigabyte one: while the planner says
/// small files are about (queued, in flight or still settling), parts may hold at most
/// `concurrency - 1` permits, keeping one for single PUTs. Otherwise parts use them all,
/// so a lone large file gets the whole concurrency.
pub struct Permits {
    state: Mutex<PermitState>,
    freed: Condvar,
    total: usize,
    /// Set by the planner.
    keep_one_for_small: AtomicBool,
}

struct PermitState {
    free: usize,
    parts_in_use: usize,
    /// Threads waiting for a permit: a permit given back wakes them only if any (a
    /// wake-up is a system call, one a file on a run of small ones).
    waiting: usize,
}

impl Permits {
    pub fn new(n: usize) -> Arc<Permits> {
        Arc::new(Permits {
            state: Mutex::new(PermitState {
                free: n,
                parts_in_use: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            total: n,
            keep_one_for_small: AtomicBool::new(false),
        })
    }

    /// The planner's word on whether small files are waiting somewhere.
    pub fn keep_one_for_small(&self, keep: bool) {
        if self.keep_one_for_small.swap(keep, Ordering::Relaxed) != keep && !keep {
            self.freed.notify_all();
        }
    }

    pub fn acquire(self: &Arc<Self>, part: bool) -> Permit {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let reserved = self.total >= 2 && self.keep_one_for_small.load(Ordering::Relaxed);
            let part_limit = if reserved { self.total - 1 } else { self.total };
            if s.free > 0 && (!part || s.parts_in_use < part_limit) {
                break;
            }
            // Bounded wait: the reservation flag can change without a permit freeing.
            s.waiting += 1;
            s = self
                .freed
                .wait_timeout(s, Duration::from_millis(250))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.waiting -= 1;
        }
        s.free -= 1;
        if part {
            s.parts_in_use += 1;
        }
        Permit {
            permits: Arc::clone(self),
            part,
        }
    }
}

/// A permit, given back on drop.
pub struct Permit {
    permits: Arc<Permits>,
    part: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.permits.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free += 1;
        if self.part {
            s.parts_in_use -= 1;
        }
        if s.waiting > 0 {
            self.permits.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_leave_one_permit_for_small_files_only_while_asked() {
        let p = Permits::new(2);
        p.keep_one_for_small(true);
        let a = p.acquire(true);
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = Arc::clone(&p);
        let t = std::thread::spawn(move || {
            let _b = p2.acquire(true);
            tx.send(()).expect("send");
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(400)).is_err(),
            "a second part waits while one permit is kept for small files"
        );
        let small = p.acquire(false);
        drop(small);
        p.keep_one_for_small(false);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the part goes once the reservation is lifted");
        t.join().expect("join");
        drop(a);
        let s = p.state.lock().expect("state");
        assert_eq!((s.free, s.parts_in_use, s.waiting), (2, 0, 0));
    }
}
