//! Multipart uploads that a CreateMultipartUpload whose answer was lost (a timeout, a
//! reset, a 5xx after the server created it) may have left on the server, billed until
//! a lifecycle rule removes them.
//!
//! A key whose create had no clear answer is *in doubt*. Before the next create for it,
//! ListMultipartUploads (`?uploads&prefix=key`) finds the uploads the server holds for
//! exactly that key, and each is aborted: none can be reused, since the answer that
//! would say which request made it (and so with which metadata) was lost. Only then is
//! a new upload created. A server without ListMultipartUploads (or a policy without
//! `s3:ListBucketMultipartUploads`) leaves them to the bucket's lifecycle rule; that is
//! said once in the log and in `status` (the note file
//! [`crate::status::UNLISTED_UPLOADS_FILE`] in the state dir).
//!
//! Memory only: a daemon killed between sending a create and journaling its answer
//! leaves that one upload to the lifecycle rule.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::s3::{Attributes, Class, S3, S3Error};

/// Keys in doubt kept at most (each is a file whose create answer was lost; past this
/// the oldest doubts are given up to the lifecycle rule rather than growing memory).
const MAX_DOUBTS: usize = 10_000;

/// The keys in doubt, and whether the server can list uploads at all.
#[derive(Debug)]
pub struct Doubts {
    keys: Mutex<HashSet<String>>,
    unlistable: AtomicBool,
    note: PathBuf,
}

impl Doubts {
    /// `state_dir`: where the note for `status` is written.
    pub fn new(state_dir: &std::path::Path) -> Doubts {
        // A note from an earlier run may be stale (another endpoint, a fixed policy).
        let note = state_dir.join(crate::status::UNLISTED_UPLOADS_FILE);
        let _ = std::fs::remove_file(&note);
        Doubts {
            keys: Mutex::new(HashSet::new()),
            unlistable: AtomicBool::new(false),
            note,
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a multipart upload for `key`, first aborting what an earlier create in
    /// doubt left behind. `known`: upload ids the journal holds (never aborted here).
    pub fn create(
        &self,
        s3: &S3,
        key: &str,
        attrs: &Attributes,
        crc32: bool,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<String, S3Error> {
        if self.keys().contains(key) {
            self.sweep(s3, key, known)?;
        }
        let result = s3.create_multipart(key, attrs, crc32);
        let mut keys = self.keys();
        match &result {
            Err(e) if in_doubt(e) => {
                if keys.len() >= MAX_DOUBTS {
                    keys.clear();
                }
                keys.insert(key.to_string());
            }
            _ => {
                keys.remove(key);
            }
        }
        result
    }

    /// Aborts every upload the server holds for exactly `key` that the journal does not
    /// know. A transient failure to list is returned (the create waits for the retry);
    /// a server that cannot list is noted and the doubt given up.
    fn sweep(&self, s3: &S3, key: &str, known: &dyn Fn(&str) -> bool) -> Result<(), S3Error> {
        if self.unlistable.load(Ordering::Relaxed) {
            return Ok(());
        }
        let ids = match s3.list_multipart_uploads(key) {
            Ok(ids) => ids,
            Err(e) if cannot_list(&e) => {
                self.note_unlistable(&e);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let orphans: Vec<&String> = ids.iter().filter(|id| !known(id)).collect();
        for id in &orphans {
            s3.abort(key, id)?;
        }
        if !orphans.is_empty() {
            log::info!(
                "{key}: aborted {} multipart upload(s) left by a create whose answer was lost",
                orphans.len()
            );
        }
        Ok(())
    }

    fn note_unlistable(&self, e: &S3Error) {
        if self.unlistable.swap(true, Ordering::Relaxed) {
            return;
        }
        let why = format!(
            "the server does not list multipart uploads ({e}): an upload whose \
             CreateMultipartUpload answer was lost is left to the bucket's lifecycle rule \
             (AbortIncompleteMultipartUpload)"
        );
        log::warn!("{why}");
        if let Err(err) = std::fs::write(&self.note, format!("{why}\n")) {
            log::warn!("{}: {err}", self.note.display());
        }
    }
}

/// A create that may have been done although no upload id came back: no answer, an
/// answer that could not be read, or a 5xx (moto 5.2 creates, then fails to answer).
fn in_doubt(e: &S3Error) -> bool {
    match e {
        S3Error::Transport { .. } | S3Error::BadAnswer { .. } => true,
        S3Error::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

/// ListMultipartUploads refused for good: not implemented, or not allowed.
fn cannot_list(e: &S3Error) -> bool {
    match e {
        S3Error::Status { status, code, .. } => {
            matches!(*status, 501 | 405 | 403)
                || code == "NotImplemented"
                || e.class() == Class::Credentials
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> S3Error {
        S3Error::Status {
            op: "CreateMultipartUpload",
            key: "k".into(),
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn what_leaves_a_create_in_doubt() {
        let transport = S3Error::Transport {
            op: "CreateMultipartUpload",
            key: "k".into(),
            message: "timeout".into(),
        };
        assert!(in_doubt(&transport));
        assert!(in_doubt(&status(500, "InternalError")));
        assert!(in_doubt(&status(503, "SlowDown")));
        assert!(!in_doubt(&status(403, "AccessDenied")));
        assert!(!in_doubt(&status(400, "InvalidArgument")));
    }

    #[test]
    fn what_means_the_server_cannot_list() {
        assert!(cannot_list(&status(501, "NotImplemented")));
        assert!(cannot_list(&status(403, "AccessDenied")));
        assert!(cannot_list(&status(405, "MethodNotAllowed")));
        assert!(!cannot_list(&status(500, "InternalError")));
        assert!(!cannot_list(&status(503, "SlowDown")));
    }
}
