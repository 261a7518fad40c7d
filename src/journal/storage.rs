//! The file operations whose failure the journal must survive, behind a trait so that
//! tests can make any of them fail on demand (a real disk cannot be made to).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// What the journal asks of the filesystem besides plain reads and writes.
pub trait Storage: Send {
    /// `fdatasync` of a file.
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// `fsync` of a directory, making the names in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Opens an existing file for writing.
    fn open_existing(&self, path: &Path) -> io::Result<File>;
}

/// The real filesystem.
pub struct Disk;

impl Storage for Disk {
    /// `fdatasync` (or, in test builds, an injected failure while a file named by a
    /// test-only knob exists: the end-to-end tests cannot reach into the process).
    fn sync_file(&self, file: &File) -> io::Result<()> {
        if crate::knobs::fail_fsync_while().is_some_and(Path::exists) {
            return Err(io::Error::other("injected fsync failure"));
        }
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn open_existing(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
    }
}
