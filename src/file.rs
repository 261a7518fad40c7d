//! A file as the daemon knows it: its name within a source ([`FileRef`]) and what one
//! `stat` says of it ([`Version`]).
//!
//! This module owns the one `stat` the daemon makes of a file (no symlink followed) and
//! nothing else: it decides nothing about stability, uploads or deletion.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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

/// Bytes read at each end of a file's content by [`Ends`].
const END_BYTES: u64 = 128;

/// CRC-32s of a file's first bytes and of its last bytes before `size`. Read again at
/// the same `size` once the file is longer, a difference says it was rewritten (a new
/// content), not appended to. Two small reads: cheap enough for every change the
/// watcher reports. A rewrite that leaves both ends of the old content as they were is
/// taken for growth (its bytes are still checked when they are hashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    head: u32,
    tail: u32,
}

impl Ends {
    /// The ends of the first `size` bytes of `path`; an error if it is shorter.
    pub fn read(path: &Path, size: u64) -> io::Result<Ends> {
        Ends::read_open(&std::fs::File::open(path)?, size)
    }

    /// The ends of the first `size` bytes of an open file.
    pub fn read_open(file: &std::fs::File, size: u64) -> io::Result<Ends> {
        use std::os::unix::fs::FileExt;
        let n = size.min(END_BYTES);
        let mut buf = [0u8; END_BYTES as usize];
        let head = &mut buf[..n as usize];
        file.read_exact_at(head, 0)?;
        let head = crc32fast::hash(head);
        let tail = &mut buf[..n as usize];
        file.read_exact_at(tail, size - n)?;
        Ok(Ends {
            head,
            tail: crc32fast::hash(tail),
        })
    }
}

/// The file's current version, or `None` if it is gone or not a regular file (a
/// symlink is never followed).
pub fn stat(path: &Path) -> io::Result<Option<Version>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some(Version {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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

    #[test]
    fn ends_tell_an_append_from_a_rewrite() {
        let dir = std::env::temp_dir().join(format!("tvm-ends-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("f");
        let first: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &first).expect("write");
        let before = Ends::read(&p, 1000).expect("ends");
        let mut grown = first.clone();
        grown.extend_from_slice(b"appended");
        std::fs::write(&p, &grown).expect("append");
        assert_eq!(Ends::read(&p, 1000).expect("ends"), before);
        let mut middle = grown.clone();
        middle[500] ^= 1;
        std::fs::write(&p, &middle).expect("rewrite");
        assert_eq!(
            Ends::read(&p, 1000).expect("ends"),
            before,
            "the middle is not read"
        );
        for at in [0, 999] {
            let mut other = grown.clone();
            other[at] ^= 1;
            std::fs::write(&p, &other).expect("rewrite");
            assert_ne!(Ends::read(&p, 1000).expect("ends"), before, "byte {at}");
        }
        assert!(Ends::read(&p, 5000).is_err(), "shorter than asked");
        std::fs::write(&p, b"ab").expect("small");
        assert!(Ends::read(&p, 2).is_ok() && Ends::read(&p, 0).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stat_sees_regular_files_only() {
        let dir = std::env::temp_dir().join(format!("tvm-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("f");
        std::fs::write(&f, b"abc").expect("write");
        let v = stat(&f).expect("stat").expect("a file");
        assert_eq!(v.size, 3);
        assert!(v.ino > 0);
        assert!(v.mtime_seconds() > 1_600_000_000);
        assert_eq!(stat(&dir).expect("stat"), None, "a directory");
        assert_eq!(stat(&dir.join("missing")).expect("stat"), None);
        let link = dir.join("l");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert_eq!(
            stat(&link).expect("stat"),
            None,
            "a symlink is not followed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
