//! Periodic checkpoints written on a thread of their own: a DynamoDB write takes
//! milliseconds (12 ms against moto), and written in the streaming loop every 10,000
//! rows they were a third of a job's time. A checkpoint records only rows acknowledged by
//! Kafka, so writing it a little later loses nothing; one write is in flight at a time
//! and its answer (a lost lease above all) is read back by the loop, which counts the
//! lease it extended from when the write was handed over ([`InFlight::at`]).

use std::thread::Scope;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::checkpoint::{Checkpoint, Manager};
use super::dynamo::DynamoError;
use super::lease::Now;

/// A write in flight: the line it records and when it was handed over (before the
/// write began, so the lease it extends is never overestimated).
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub line: u64,
    pub at: Now,
}

/// The loop's end of the writer thread, which ends when this is dropped (after the
/// write it may be doing) and is joined by its scope.
pub struct Saver {
    to: Sender<Checkpoint>,
    from: Receiver<Result<(), DynamoError>>,
    busy: Option<InFlight>,
}

impl Saver {
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        manager: &'env Manager,
    ) -> Saver {
        let (to, jobs) = bounded::<Checkpoint>(1);
        let (answers, from) = bounded(1);
        scope.spawn(move || {
            for cp in jobs {
                if answers.send(manager.save(&cp, false)).is_err() {
                    return;
                }
            }
        });
        Saver {
            to,
            from,
            busy: None,
        }
    }

    pub fn busy(&self) -> bool {
        self.busy.is_some()
    }

    /// Hands `cp` over unless a write is in flight; whether it did.
    pub fn offer(&mut self, cp: &Checkpoint) -> bool {
        if self.busy.is_some() {
            return false;
        }
        let at = Now::read();
        if self.to.send(cp.clone()).is_err() {
            return false;
        }
        self.busy = Some(InFlight {
            line: cp.last_line,
            at,
        });
        true
    }

    /// The answer to the write in flight, once it came.
    pub fn answer(&mut self) -> Option<(InFlight, Result<(), DynamoError>)> {
        let busy = self.busy?;
        let answer = self.from.try_recv().ok()?;
        self.busy = None;
        Some((busy, answer))
    }

    /// Waits for the write in flight, if any.
    pub fn wait(&mut self) -> Option<(InFlight, Result<(), DynamoError>)> {
        let busy = self.busy.take()?;
        let answer = self.from.recv().unwrap_or_else(|_| {
            Err(DynamoError::Transport(
                "the checkpoint writer stopped".into(),
            ))
        });
        Some((busy, answer))
    }
}
