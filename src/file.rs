//! A file as the daemon knows it: its name within a source ([`FileRef`]) and what one
//! `stat` says of it ([`Version`]). Data only: the `stat` itself and the reads of a
//! file's ends are [`crate::probe`]'s, so the planner can take these types without
//! taking any IO.

use std::fmt;
use std::sync::Arc;

/// A file named by its source and its `/`-separated path relative to the source root,
/// held as one shared string `source/rel` (source names never contain `/`), so a clone
/// is a reference count and the registry can be looked up by `as_str` without building
/// a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileRef(Arc<str>);

impl FileRef {
    /// The file `rel` of source `source`. A source name with `/` is a programmer error
    /// (config validation refuses it).
    pub fn new(source: &str, rel: &str) -> FileRef {
        debug_assert!(!source.contains('/') && !source.is_empty(), "{source:?}");
        let mut joined = String::with_capacity(source.len() + 1 + rel.len());
        joined.push_str(source);
        joined.push('/');
        joined.push_str(rel);
        FileRef(Arc::from(joined))
    }

    /// `source/rel`: the registry's key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn source(&self) -> &str {
        split(&self.0).0
    }

    pub fn rel(&self) -> &str {
        split(&self.0).1
    }
}

/// Splits `source/rel` at its first `/`.
pub fn split(joined: &str) -> (&str, &str) {
    joined.split_once('/').unwrap_or((joined, ""))
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source(), self.rel())
    }
}

impl fmt::Debug for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// One version of a file: what `stat` said of it. Two observations with the same
/// version are taken as the same content: the same file (inode), size and mtime. A file
/// replaced by another (a rename over it) is a new version even with the same size and
/// mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Version {
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The inode; 0 when not known (records written before it was kept).
    pub ino: u64,
}

impl Version {
    /// The mtime in whole seconds (for keys and ages).
    pub fn mtime_seconds(&self) -> i64 {
        self.mtime_ns.div_euclid(1_000_000_000)
    }

    /// Whether a recorded version and an observed one are the same: equal, or equal but
    /// for an inode the record does not know.
    pub fn matches(&self, observed: &Version) -> bool {
        self.size == observed.size
            && self.mtime_ns == observed.mtime_ns
            && (self.ino == 0 || observed.ino == 0 || self.ino == observed.ino)
    }

    /// Whether `later` is this version grown by appending: the same file, no shorter,
    /// not older. (The watcher tells a rewrite in place from growth by the content's
    /// [`Ends`]; the bytes themselves are checked when they are hashed.)
    pub fn grown_into(&self, later: &Version) -> bool {
        self.ino == later.ino && later.size >= self.size && later.mtime_ns >= self.mtime_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_ref_is_source_and_rel_joined_at_the_first_slash() {
        let f = FileRef::new("ros", "2026/11/a b+c.mcap");
        assert_eq!(f.source(), "ros");
        assert_eq!(f.rel(), "2026/11/a b+c.mcap");
        assert_eq!(f.as_str(), "ros/2026/11/a b+c.mcap");
        assert_eq!(f.to_string(), "ros:2026/11/a b+c.mcap");
        assert_eq!(split("x"), ("x", ""));
    }

    #[test]
    fn a_recorded_version_without_an_inode_matches_any_inode() {
        let v = |size, mtime_ns, ino| Version {
            size,
            mtime_ns,
            ino,
        };
        assert!(v(1, 2, 0).matches(&v(1, 2, 9)));
        assert!(v(1, 2, 9).matches(&v(1, 2, 9)));
        assert!(!v(1, 2, 8).matches(&v(1, 2, 9)), "replaced by another file");
        assert!(!v(1, 3, 9).matches(&v(1, 2, 9)));
        assert!(v(1, 2, 9).grown_into(&v(5, 4, 9)));
        assert!(!v(1, 2, 9).grown_into(&v(5, 4, 8)));
        assert!(!v(5, 2, 9).grown_into(&v(1, 4, 9)));
    }
}
