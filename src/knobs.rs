//! Test-only environment knobs, for the end-to-end suites that run the real binary and
//! cannot reach into the process: a shifted clock, short stall timeouts, an injected
//! fsync failure. They exist only in builds with the `test-knobs` cargo feature (the
//! `make` test targets); a shipped binary has none of them, nor their names
//! (scripts/check_size.sh checks the aarch64 binary). Each is read once.

#[cfg(feature = "test-knobs")]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    fn read<T>(cell: &'static OnceLock<Option<T>>, var: &str) -> Option<&'static T>
    where
        T: std::str::FromStr + Send + Sync,
    {
        cell.get_or_init(|| std::env::var(var).ok().and_then(|v| v.parse().ok()))
            .as_ref()
    }

    /// `TVM_UPLOAD_TEST_CLOCK_SKEW_SECONDS`: the local clock is this far off (a vehicle
    /// whose clock is wrong).
    pub fn clock_skew_seconds() -> i64 {
        static CELL: OnceLock<Option<i64>> = OnceLock::new();
        read(&CELL, "TVM_UPLOAD_TEST_CLOCK_SKEW_SECONDS").map_or(0, |s| *s)
    }

    /// `TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS`: the schedule stands this far ahead (a test
    /// at a window's edge without waiting for it).
    pub fn schedule_offset_seconds() -> i64 {
        static CELL: OnceLock<Option<i64>> = OnceLock::new();
        read(&CELL, "TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS").map_or(0, |s| *s)
    }

    /// `TVM_UPLOAD_TEST_STALL_SECONDS`: a connection silent this long is dead (the fault
    /// tests blackhole connections and cannot wait minutes for each to time out).
    pub fn stall_seconds() -> Option<f64> {
        static CELL: OnceLock<Option<f64>> = OnceLock::new();
        read(&CELL, "TVM_UPLOAD_TEST_STALL_SECONDS").copied()
    }

    /// `TVM_UPLOAD_TEST_FAIL_FSYNC_WHILE`: journal fsyncs fail while this file exists.
    pub fn fail_fsync_while() -> Option<&'static Path> {
        static CELL: OnceLock<Option<PathBuf>> = OnceLock::new();
        read(&CELL, "TVM_UPLOAD_TEST_FAIL_FSYNC_WHILE").map(PathBuf::as_path)
    }
}

#[cfg(not(feature = "test-knobs"))]
mod imp {
    use std::path::Path;

    pub fn clock_skew_seconds() -> i64 {
        0
    }

    pub fn schedule_offset_seconds() -> i64 {
        0
    }

    pub fn stall_seconds() -> Option<f64> {
        None
    }

    pub fn fail_fsync_while() -> Option<&'static Path> {
        None
    }
}

pub use imp::*;
