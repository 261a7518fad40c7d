//! What a file is on disk now: the one `stat` the daemon makes of a file (no symlink
//! followed) as a [`Version`], and the CRC-32s of its content's ends ([`Ends`]). It
//! decides nothing about stability, uploads or deletion.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::file::Version;

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
