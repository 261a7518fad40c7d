//! The daemon's own log file (`log.file`), rotated by size so that the uploader never
//! fills the disk it protects: past `log.max_bytes` the file becomes `<file>.1`, older
//! ones move up to `<file>.<log.keep>` and the oldest is removed. SIGHUP makes it
//! reopen the file at the next line, for an external logrotate that moved it away.
//!
//! Rotation happens only between lines, so a line is never split across two files. A
//! log file that cannot be written (a full disk) loses lines, never the daemon.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGHUP (see [`request_reopen`]); the writer reopens its file at the next line.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Asks the log file to be reopened at the next line (SIGHUP).
pub fn request_reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// Rotate once the file reaches this many bytes.
    max_bytes: u64,
    /// Rotated files kept: `<file>.1` (newest) to `<file>.<keep>`.
    keep: u32,
    file: Option<File>,
    /// The file's length as far as we know.
    len: u64,
    at_line_start: bool,
}

impl LogFile {
    /// Opens `path` for appending (creating it). Fails if it cannot be opened, so that
    /// the daemon does not start with a log it cannot write.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<LogFile> {
        let file = append(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: Some(file),
            len,
            at_line_start: true,
        })
    }

    /// Between lines: rotates a full file, reopens after SIGHUP.
    fn between_lines(&mut self) {
        if REOPEN.swap(false, Ordering::Relaxed) {
            self.reopen();
        }
        if self.len >= self.max_bytes {
            self.rotate();
        }
    }

    fn reopen(&mut self) {
        self.file = None;
        match append(&self.path) {
            Ok(f) => {
                self.len = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => eprintln!("tvm-upload: reopening {}: {e}", self.path.display()),
        }
    }

    /// `<file>.<keep-1>` → `<file>.<keep>` … `<file>` → `<file>.1`, then a new file.
    fn rotate(&mut self) {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            eprintln!("tvm-upload: rotating {}: {e}", self.path.display());
        }
        self.reopen();
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.at_line_start {
            self.between_lines();
        }
        if let Some(f) = self.file.as_mut() {
            // A full disk loses this line; the next one tries again.
            if f.write_all(buf).is_ok() {
                self.len += buf.len() as u64;
            }
        }
        if let Some(last) = buf.last() {
            self.at_line_start = *last == b'\n';
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tvm-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn rotates_by_size_between_lines_keeping_the_newest() {
        let d = dir("rotate");
        let path = d.join("daemon.log");
        let mut log = LogFile::open(&path, 100, 2).expect("open");
        for i in 0..40 {
            // A line written in two pieces, as a logger does.
            write!(log, "line {i:03} ").expect("write");
            writeln!(log, "{}", "x".repeat(20)).expect("write");
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let one = read(&d.join("daemon.log.1"));
        let two = read(&d.join("daemon.log.2"));
        assert!(
            !d.join("daemon.log.3").exists(),
            "only `keep` rotated files"
        );
        for text in [&current, &one, &two] {
            assert!(text.len() <= 100 + 30, "{}", text.len());
            assert!(
                text.lines()
                    .all(|l| l.starts_with("line ") && l.len() == 29),
                "{text}"
            );
        }
        assert!(current.contains("line 039"));
        assert!(one.ends_with('\n') && two.ends_with('\n'));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reopens_after_sighup_when_logrotate_moved_the_file() {
        let d = dir("reopen");
        let path = d.join("daemon.log");
        let mut log = LogFile::open(&path, 1 << 20, 3).expect("open");
        writeln!(log, "before").expect("write");
        std::fs::rename(&path, d.join("moved.log")).expect("mv");
        request_reopen();
        writeln!(log, "after").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("new"), "after\n");
        assert_eq!(
            std::fs::read_to_string(d.join("moved.log")).expect("old"),
            "before\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
