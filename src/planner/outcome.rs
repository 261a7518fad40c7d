//! How an upload ended, in the planner's own words. The upload side maps its results
//! (S3's answers, read and journal errors) into an [`Outcome`]; the planner reads
//! nothing else of it, so it imports no IO module.

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent now; `bytes` went over the network this time.
    Sent { bytes: u64 },
    /// Made by a server-side copy of an object with the same content: nothing sent.
    Copied,
    /// S3 had it already (a crash before journaling, a wiped state dir).
    AlreadyThere,
    /// The file is gone (or is no longer a regular file).
    Gone,
    /// The file changed since it was queued or during the upload.
    Changed,
    /// Stopped by shutdown; the journal keeps what was done.
    Interrupted,
    /// The upload window closed: stopped at a part boundary.
    Paused,
    /// The link now carrying uploads may not take it: stopped before a body (its parts
    /// stored so far kept).
    Held(Hold),
    /// Ended without the file in S3, for a reason to act on.
    Failed(Failure),
}

/// Why a link may not take a file's next body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The link is not one the file's source may use (`links`, `min_priority`).
    Link,
    /// The body would take the link past its daily budget.
    Budget,
}

/// Why a job failed, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened, for the log and the status (never a secret).
    pub message: String,
    /// What an operator can do about it; may be empty.
    pub advice: &'static str,
}

/// The failures the planner tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer from S3 (connection refused, reset, timed out): every upload shares it.
    Unreachable,
    /// No valid credentials to sign with: nothing was sent.
    NoCredentials,
    /// S3 refused the credentials or the configuration (403, a wrong region): every
    /// upload shares it, unless others keep succeeding.
    Refused,
    /// S3 asks to slow down.
    SlowDown,
    /// S3 refused this request for good (a 4xx it will give again).
    Rejected,
    /// A failure that may pass (a 5xx, the content changed under a part, an upload lost).
    Transient,
    /// The journal could not be written: nothing is acknowledged.
    StateDir,
    /// The file cannot have an object (its key would be too long, or taken).
    Unkeyable,
    /// The file could not be read (permission denied, an IO error).
    Read,
}

impl Outcome {
    /// Whether the job ended with the file in S3.
    pub fn succeeded(&self) -> bool {
        matches!(
            self,
            Outcome::Sent { .. } | Outcome::Copied | Outcome::AlreadyThere
        )
    }

    /// A failure of this kind with this message and no advice.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Outcome {
        Outcome::Failed(Failure {
            kind,
            message: message.into(),
            advice: "",
        })
    }
}
