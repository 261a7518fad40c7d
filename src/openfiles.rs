//! Which processes hold a file open for writing, read from `/proc/<pid>/fd` and
//! `/proc/<pid>/fdinfo`: the disk manager never deletes such a file (its writer would go
//! on writing into a deleted inode, and those lines would be lost).
//!
//! One scan costs one `stat` per open descriptor on the system, whatever the number of
//! files asked about (they are looked up in a set), plus one small read per descriptor
//! that holds one of them; it runs once per cleanup pass that deletes anything. Without
//! root, processes of other users cannot be read: they are counted, and the caller says so.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A process holding a file open for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub command: String,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Writers {
    /// By the file's (device, inode).
    pub by_file: HashMap<(u64, u64), Writer>,
    /// Processes whose descriptors could not be read (another user's, without root).
    pub unreadable: usize,
    /// Descriptors looked at.
    pub descriptors: usize,
}

/// The processes that hold any of `inodes` open for writing (`/proc` by default).
pub fn scan(proc_root: &Path, inodes: &HashSet<u64>) -> Writers {
    let mut out = Writers::default();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let fds = match std::fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                out.unreadable += 1;
                continue;
            }
            Err(_) => continue, // it ended meanwhile
        };
        for fd in fds.flatten() {
            out.descriptors += 1;
            // Follows the link to the open file itself (deleted or not).
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if !meta.is_file() || !inodes.contains(&meta.ino()) {
                continue;
            }
            let info = dir.join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(info).is_ok_and(|t| writable(&t)) {
                let command = std::fs::read_to_string(dir.join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                out.by_file
                    .insert((meta.dev(), meta.ino()), Writer { pid, command });
            }
        }
    }
    out
}

/// Whether an fdinfo text's `flags:` (octal) open the file for writing.
fn writable(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fdinfo_flags_are_octal_and_only_the_access_mode_counts() {
        assert!(!writable("pos:\t0\nflags:\t0100000\nmnt_id:\t1\n"));
        assert!(writable("pos:\t0\nflags:\t02102001\n"));
        assert!(writable("flags:\t0100002\n"));
        assert!(!writable("pos:\t0\n"));
        assert!(!writable("flags:\tnot-octal\n"));
    }

    #[test]
    fn a_file_open_for_writing_is_found_and_one_open_for_reading_is_not() {
        let dir = std::env::temp_dir().join(format!("tvm-openfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (w, r) = (dir.join("written"), dir.join("read"));
        let mut writer = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&w)
            .expect("open");
        writer.write_all(b"x").expect("write");
        std::fs::write(&r, b"y").expect("write");
        let reader = std::fs::File::open(&r).expect("open");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let dev = std::fs::metadata(&w).expect("stat").dev();
        let found = scan(
            Path::new("/proc"),
            &[ino(&w), ino(&r)].into_iter().collect(),
        );
        assert!(found.descriptors > 0);
        let me = found.by_file.get(&(dev, ino(&w))).expect("the writer");
        assert_eq!(me.pid, std::process::id());
        assert!(!found.by_file.contains_key(&(dev, ino(&r))));
        drop((writer, reader));
        let found = scan(Path::new("/proc"), &[ino(&w)].into_iter().collect());
        assert!(found.by_file.is_empty(), "closed: no writer");
        assert!(
            scan(&dir.join("no-proc"), &HashSet::new())
                .by_file
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
