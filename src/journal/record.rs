//! One journal line: a [`Record`], and its JSON form.
//!
//! On disk every record is one flat JSON object, `{"t":"queued","src":…,"rel":…,…}`.
//! It is read through [`Wire`], a flat struct whose strings borrow from the line, so
//! replaying 100,000 lines allocates only what the state keeps; then checked (every
//! field the kind needs, sane values) before anything is applied. Records are checked
//! before writing too.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::digest::{from_hex, hex};
use crate::file::{FileRef, Version};

pub use crate::limits::MAX_PARTS;

/// What a stored part of a compressed upload holds: the file's bytes `start..end`,
/// compressed into `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInput {
    pub start: u64,
    pub end: u64,
    pub len: u64,
}

/// A fact the daemon must not forget.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A stable file waits for upload. `origin`: the name it had when queued before a
    /// crash under that name (its upload may have reached S3 unrecorded there).
    Queued {
        file: FileRef,
        version: Version,
        prio: i32,
        queued_at: i64,
        origin: Option<String>,
    },
    /// A file left the queue without an upload (deleted before it went).
    Dropped { file: FileRef, reason: String },
    /// A multipart upload was created for this version of the file.
    MpStarted {
        file: FileRef,
        key: String,
        upload_id: String,
        version: Version,
        sha256: [u8; 32],
        part_size: u64,
        /// The zstd level of a compressed upload (`None`: the file's bytes as they are).
        zstd: Option<i32>,
        /// The zstd library's version that compressed it: the same input, level and
        /// version give the same frames, so a part the server lists without an ETag is
        /// known by its size only then (`None`: written before it was kept).
        zstd_lib: Option<u32>,
        /// Created with the `CRC32` checksum algorithm: each part carries its CRC-32
        /// (false: `Content-MD5`, as compressed uploads and those begun by older
        /// versions do). Wire field `checksum: "crc32"`.
        crc32: bool,
    },
    /// One part of a multipart upload is stored on the server; of a compressed upload,
    /// with the input it holds.
    Part {
        file: FileRef,
        upload_id: String,
        n: u32,
        etag: String,
        input: Option<PartInput>,
    },
    /// A multipart upload was abandoned (aborted, or the server lost it).
    MpAborted { file: FileRef, upload_id: String },
    /// This version of the file is in S3: the registry.
    Uploaded {
        file: FileRef,
        version: Version,
        sha256: [u8; 32],
        key: String,
        etag: String,
        at: i64,
    },
    /// The disk manager deleted the file: the registry forgets it.
    Deleted { file: FileRef, reason: String },
    /// An uploaded file was renamed (or moved) within its source to `file`: its
    /// registry entry moves with it, keeping the key of its first name. `ino` is the
    /// file's inode: the entry moves only if it is still that file's.
    Renamed {
        file: FileRef,
        from: String,
        ino: u64,
    },
    /// Written by compaction only: the path's entry was renamed away, and its key's day
    /// and `~N` stay taken there (see `State::next_suffix`).
    Vacated {
        file: FileRef,
        day: i64,
        suffix: u16,
    },
    /// Written by compaction only: an entry another file's upload replaced at its path,
    /// kept by inode for a rename seen late (a rotation seen out of order).
    Displaced {
        file: FileRef,
        version: Version,
        sha256: [u8; 32],
        key: String,
        at: i64,
    },
    /// A file of a source with `max_wait_seconds` began to wait (changing) at `since`
    /// (Unix seconds), as inode `ino`: a restart counts its wait from then, not from its
    /// own start. Ended by the file's next `queued` (or `dropped`, `deleted`).
    Waiting { file: FileRef, ino: u64, since: i64 },
    /// This queued version failed for a reason of its own too often (`reason`, since
    /// `at`): set aside until it changes or the daemon restarts.
    Quarantined {
        file: FileRef,
        version: Version,
        reason: String,
        at: i64,
    },
}

impl Record {
    pub fn file(&self) -> &FileRef {
        match self {
            Record::Queued { file, .. }
            | Record::Dropped { file, .. }
            | Record::MpStarted { file, .. }
            | Record::Part { file, .. }
            | Record::MpAborted { file, .. }
            | Record::Uploaded { file, .. }
            | Record::Deleted { file, .. }
            | Record::Renamed { file, .. }
            | Record::Vacated { file, .. }
            | Record::Displaced { file, .. }
            | Record::Waiting { file, .. }
            | Record::Quarantined { file, .. } => file,
        }
    }

    /// Checks what the types cannot: run before writing and after reading.
    pub fn check(&self) -> Result<(), String> {
        let file = self.file();
        if file.source().is_empty() || file.rel().is_empty() {
            return Err("empty source or path".to_string());
        }
        match self {
            Record::MpStarted {
                upload_id,
                part_size,
                key,
                ..
            } => {
                nonempty("upload_id", upload_id)?;
                nonempty("key", key)?;
                if *part_size == 0 {
                    return Err("part_size 0".to_string());
                }
            }
            Record::Part {
                upload_id,
                n,
                etag,
                input,
                ..
            } => {
                nonempty("upload_id", upload_id)?;
                nonempty("etag", etag)?;
                if !(1..=MAX_PARTS).contains(n) {
                    return Err(format!("part number {n} outside 1..={MAX_PARTS}"));
                }
                if let Some(i) = input
                    && i.start >= i.end
                {
                    return Err(format!("part input {}..{} is empty", i.start, i.end));
                }
            }
            Record::MpAborted { upload_id, .. } => nonempty("upload_id", upload_id)?,
            Record::Uploaded { key, .. } | Record::Displaced { key, .. } => nonempty("key", key)?,
            Record::Renamed { from, .. } => nonempty("from", from)?,
            Record::Quarantined { reason, .. } => nonempty("reason", reason)?,
            Record::Queued { .. }
            | Record::Dropped { .. }
            | Record::Deleted { .. }
            | Record::Waiting { .. }
            | Record::Vacated { .. } => {}
        }
        Ok(())
    }

    /// Appends the record's line (JSON and a newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Serialising a struct of strings and numbers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &self.wire()).is_ok() {
            out.push(b'\n');
        }
    }

    fn wire(&self) -> Wire<'_> {
        let mut w = Wire::new(self.kind(), self.file());
        match self {
            Record::Queued {
                version,
                prio,
                queued_at,
                origin,
                ..
            } => {
                w.version(version);
                w.prio = Some(*prio);
                w.queued_at = Some(*queued_at);
                w.from = origin.as_deref().map(Cow::Borrowed);
            }
            Record::Dropped { reason, .. } | Record::Deleted { reason, .. } => {
                w.reason = Some(Cow::Borrowed(reason));
            }
            Record::MpStarted {
                key,
                upload_id,
                version,
                sha256,
                part_size,
                zstd,
                zstd_lib,
                crc32,
                ..
            } => {
                w.key = Some(Cow::Borrowed(key));
                w.upload_id = Some(Cow::Borrowed(upload_id));
                w.version(version);
                w.sha256 = Some(Cow::Owned(hex(sha256)));
                w.part_size = Some(*part_size);
                w.zstd = *zstd;
                w.zstd_lib = *zstd_lib;
                w.checksum = crc32.then_some(Cow::Borrowed(CRC32));
            }
            Record::Part {
                upload_id,
                n,
                etag,
                input,
                ..
            } => {
                w.upload_id = Some(Cow::Borrowed(upload_id));
                w.n = Some(*n);
                w.etag = Some(Cow::Borrowed(etag));
                if let Some(i) = input {
                    (w.in_start, w.in_end, w.len) = (Some(i.start), Some(i.end), Some(i.len));
                }
            }
            Record::MpAborted { upload_id, .. } => w.upload_id = Some(Cow::Borrowed(upload_id)),
            Record::Renamed { from, ino, .. } => {
                w.from = Some(Cow::Borrowed(from));
                w.ino = Some(*ino);
            }
            Record::Vacated { day, suffix, .. } => {
                w.at = Some(*day);
                w.n = Some(u32::from(*suffix));
            }
            Record::Waiting { ino, since, .. } => {
                w.ino = Some(*ino);
                w.at = Some(*since);
            }
            Record::Displaced {
                version,
                sha256,
                key,
                at,
                ..
            } => {
                w.version(version);
                w.sha256 = Some(Cow::Owned(hex(sha256)));
                w.key = Some(Cow::Borrowed(key));
                w.at = Some(*at);
            }
            Record::Quarantined {
                version,
                reason,
                at,
                ..
            } => {
                w.version(version);
                w.reason = Some(Cow::Borrowed(reason));
                w.at = Some(*at);
            }
            Record::Uploaded {
                version,
                sha256,
                key,
                etag,
                at,
                ..
            } => {
                w.version(version);
                w.sha256 = Some(Cow::Owned(hex(sha256)));
                w.key = Some(Cow::Borrowed(key));
                w.etag = Some(Cow::Borrowed(etag));
                w.at = Some(*at);
            }
        }
        w
    }

    fn kind(&self) -> Kind {
        match self {
            Record::Queued { .. } => Kind::Queued,
            Record::Dropped { .. } => Kind::Dropped,
            Record::MpStarted { .. } => Kind::MpStarted,
            Record::Part { .. } => Kind::Part,
            Record::MpAborted { .. } => Kind::MpAborted,
            Record::Uploaded { .. } => Kind::Uploaded,
            Record::Deleted { .. } => Kind::Deleted,
            Record::Renamed { .. } => Kind::Renamed,
            Record::Vacated { .. } => Kind::Vacated,
            Record::Displaced { .. } => Kind::Displaced,
            Record::Waiting { .. } => Kind::Waiting,
            Record::Quarantined { .. } => Kind::Quarantined,
        }
    }
}

/// The wire name of the CRC-32 part checksum (`mp_started`'s `checksum`).
const CRC32: &str = "crc32";

/// Parses and checks one line (without its newline).
pub fn parse(line: &[u8]) -> Result<Record, String> {
    let w: Wire = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let r = w.into_record()?;
    r.check()?;
    Ok(r)
}

fn nonempty(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        Err(format!("empty {what}"))
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Queued,
    Dropped,
    MpStarted,
    Part,
    MpAborted,
    Uploaded,
    Deleted,
    Renamed,
    Quarantined,
    Vacated,
    Displaced,
    Waiting,
}

/// A record as it is on disk: one flat object; which fields are present depends on `t`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    t: Kind,
    #[serde(borrow)]
    src: Cow<'a, str>,
    #[serde(borrow)]
    rel: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    /// Absent in records written before inodes were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prio: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queued_at: Option<i64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    upload_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    sha256: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    etag: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    from: Option<Cow<'a, str>>,
    /// Compressed uploads only (absent in older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zstd: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zstd_lib: Option<u32>,
    /// A multipart upload's part checksum when not `Content-MD5` (absent in older journals).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    checksum: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    len: Option<u64>,
}

impl<'a> Wire<'a> {
    fn new(t: Kind, file: &'a FileRef) -> Wire<'a> {
        Wire {
            t,
            src: Cow::Borrowed(file.source()),
            rel: Cow::Borrowed(file.rel()),
            size: None,
            mtime_ns: None,
            prio: None,
            queued_at: None,
            reason: None,
            key: None,
            upload_id: None,
            sha256: None,
            part_size: None,
            n: None,
            etag: None,
            at: None,
            from: None,
            ino: None,
            zstd: None,
            zstd_lib: None,
            checksum: None,
            in_start: None,
            in_end: None,
            len: None,
        }
    }

    fn version(&mut self, v: &Version) {
        self.size = Some(v.size);
        self.mtime_ns = Some(v.mtime_ns);
        self.ino = (v.ino != 0).then_some(v.ino);
    }

    fn into_record(self) -> Result<Record, String> {
        if self.src.is_empty() || self.src.contains('/') {
            return Err(format!("source {:?} is not a source name", self.src));
        }
        let file = FileRef::new(&self.src, &self.rel);
        let version = || -> Result<Version, String> {
            Ok(Version {
                size: need("size", self.size)?,
                mtime_ns: need("mtime_ns", self.mtime_ns)?,
                ino: self.ino.unwrap_or(0),
            })
        };
        let text = |name: &str, v: &Option<Cow<str>>| -> Result<String, String> {
            v.as_deref()
                .map(str::to_string)
                .ok_or_else(|| format!("no {name}"))
        };
        let sha = |v: &Option<Cow<str>>| -> Result<[u8; 32], String> {
            let s = v.as_deref().ok_or("no sha256")?;
            from_hex::<32>(s).ok_or_else(|| format!("sha256 {s:?} is not 64 hex digits"))
        };
        Ok(match self.t {
            Kind::Queued => Record::Queued {
                version: version()?,
                prio: need("prio", self.prio)?,
                queued_at: need("queued_at", self.queued_at)?,
                origin: self.from.as_deref().map(str::to_string),
                file,
            },
            Kind::Dropped => Record::Dropped {
                reason: text("reason", &self.reason)?,
                file,
            },
            Kind::Deleted => Record::Deleted {
                reason: text("reason", &self.reason)?,
                file,
            },
            Kind::Quarantined => Record::Quarantined {
                version: version()?,
                reason: text("reason", &self.reason)?,
                at: need("at", self.at)?,
                file,
            },
            Kind::Renamed => Record::Renamed {
                from: text("from", &self.from)?,
                ino: need("ino", self.ino)?,
                file,
            },
            Kind::MpStarted => Record::MpStarted {
                key: text("key", &self.key)?,
                upload_id: text("upload_id", &self.upload_id)?,
                version: version()?,
                sha256: sha(&self.sha256)?,
                part_size: need("part_size", self.part_size)?,
                zstd: self.zstd,
                zstd_lib: self.zstd_lib,
                crc32: match self.checksum.as_deref() {
                    None => false,
                    Some(CRC32) => true,
                    Some(other) => return Err(format!("unknown part checksum {other:?}")),
                },
                file,
            },
            Kind::Part => Record::Part {
                upload_id: text("upload_id", &self.upload_id)?,
                n: need("n", self.n)?,
                etag: text("etag", &self.etag)?,
                input: match (self.in_start, self.in_end, self.len) {
                    (None, None, None) => None,
                    (Some(start), Some(end), Some(len)) => Some(PartInput { start, end, len }),
                    _ => return Err("a part's input needs in_start, in_end and len".into()),
                },
                file,
            },
            Kind::MpAborted => Record::MpAborted {
                upload_id: text("upload_id", &self.upload_id)?,
                file,
            },
            Kind::Uploaded => Record::Uploaded {
                version: version()?,
                sha256: sha(&self.sha256)?,
                key: text("key", &self.key)?,
                etag: text("etag", &self.etag)?,
                at: need("at", self.at)?,
                file,
            },
            Kind::Vacated => Record::Vacated {
                day: need("at", self.at)?,
                suffix: u16::try_from(need("n", self.n)?).map_err(|e| format!("n: {e}"))?,
                file,
            },
            Kind::Displaced => Record::Displaced {
                version: version()?,
                sha256: sha(&self.sha256)?,
                key: text("key", &self.key)?,
                at: need("at", self.at)?,
                file,
            },
            Kind::Waiting => Record::Waiting {
                ino: need("ino", self.ino)?,
                since: need("at", self.at)?,
                file,
            },
        })
    }
}

fn need<T>(name: &str, v: Option<T>) -> Result<T, String> {
    v.ok_or_else(|| format!("no {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> FileRef {
        FileRef::new("s", "a/b \"c\".log")
    }

    fn every_kind() -> Vec<Record> {
        let version = Version {
            size: 100,
            mtime_ns: -5,
            ino: 77,
        };
        vec![
            Record::Queued {
                file: f(),
                version,
                prio: -2,
                queued_at: 1,
                origin: Some("a/b.log.1".into()),
            },
            Record::Dropped {
                file: f(),
                reason: "gone".into(),
            },
            Record::MpStarted {
                file: f(),
                key: "v/k".into(),
                upload_id: "u1".into(),
                version,
                sha256: [7; 32],
                part_size: 8,
                zstd: None,
                zstd_lib: None,
                crc32: true,
            },
            Record::Part {
                file: f(),
                upload_id: "u1".into(),
                n: 3,
                etag: "\"e\"".into(),
                input: None,
            },
            Record::MpStarted {
                file: f(),
                key: "v/k.zst".into(),
                upload_id: "u2".into(),
                version,
                sha256: [7; 32],
                part_size: 8,
                zstd: Some(3),
                zstd_lib: Some(10507),
                crc32: false,
            },
            Record::Part {
                file: f(),
                upload_id: "u2".into(),
                n: 2,
                etag: "\"e\"".into(),
                input: Some(PartInput {
                    start: 1 << 20,
                    end: 2 << 20,
                    len: 9,
                }),
            },
            Record::MpAborted {
                file: f(),
                upload_id: "u1".into(),
            },
            Record::Uploaded {
                file: f(),
                version,
                sha256: [9; 32],
                key: "v/k".into(),
                etag: "\"e-2\"".into(),
                at: 3,
            },
            Record::Deleted {
                file: f(),
                reason: "keep_expired".into(),
            },
            Record::Renamed {
                file: f(),
                from: "a/b.log.0".into(),
                ino: 12,
            },
            Record::Vacated {
                file: f(),
                day: 20_000,
                suffix: 3,
            },
            Record::Displaced {
                file: f(),
                version,
                sha256: [7; 32],
                key: "v/k~2".into(),
                at: 4,
            },
            Record::Waiting {
                file: f(),
                ino: 12,
                since: 1_700_000_000,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_its_line() {
        for r in every_kind() {
            let mut line = Vec::new();
            r.write_line(&mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            let back = parse(&line[..line.len() - 1]).expect("parse");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn the_format_written_before_this_parser_still_reads() {
        // Lines as the first journal format wrote them (field order of the old enum).
        let old = br#"{"t":"uploaded","src":"w","rel":"d/f.log","size":0,"mtime_ns":7,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","key":"daemon/2026-01-01/w/d/f.log","etag":"\"e\"","at":5}"#;
        assert!(matches!(parse(old), Ok(Record::Uploaded { at: 5, .. })));
        let q =
            br#"{"t":"queued","src":"w","rel":"x","size":1,"mtime_ns":2,"prio":0,"queued_at":3}"#;
        assert!(matches!(parse(q), Ok(Record::Queued { prio: 0, .. })));
    }

    #[test]
    fn records_are_checked_after_reading() {
        for (line, why) in [
            (&br#"{"t":"queued","src":"w","rel":"x","size":1}"#[..], "no mtime_ns"),
            (br#"{"t":"part","src":"w","rel":"x","upload_id":"u","n":0,"etag":"e"}"#, "part number 0"),
            (br#"{"t":"part","src":"w","rel":"x","upload_id":"","n":1,"etag":"e"}"#, "empty upload_id"),
            (br#"{"t":"part","src":"w","rel":"x","upload_id":"u","n":1,"etag":"e","in_start":0,"len":3}"#, "needs in_start, in_end and len"),
            (br#"{"t":"part","src":"w","rel":"x","upload_id":"u","n":1,"etag":"e","in_start":5,"in_end":5,"len":3}"#, "is empty"),
            (br#"{"t":"uploaded","src":"w","rel":"x","size":1,"mtime_ns":1,"sha256":"nothex","key":"k","etag":"","at":1}"#, "sha256"),
            (br#"{"t":"queued","src":"a/b","rel":"x","size":1,"mtime_ns":2,"prio":0,"queued_at":3}"#, "not a source name"),
            (br#"{"t":"queued","src":"w","rel":"","size":1,"mtime_ns":2,"prio":0,"queued_at":3}"#, "empty source or path"),
            (br#"{"t":"queued","src":"w","rel":"x","bogus":1}"#, "unknown field"),
            (br#"{"t":"nope","src":"w","rel":"x"}"#, "unknown variant"),
        ] {
            let e = parse(line).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
