//! Object keys and the dates in them: `{prefix}{vehicle_id}/{YYYY-MM-DD}/{source}/{rel}`,
//! the date from the file's mtime at the schedule's UTC offset. Pure: no IO, no clock.
//!
//! Keys keep the file name's bytes (UTF-8, spaces, `+`, `%`); percent-encoding for the
//! URL is rusty-s3's job, not this module's.

use crate::file::{FileRef, Version};

/// S3's limit on a key's length in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// How this vehicle names its objects: the prefix, the vehicle id and the UTC offset the
/// dates are read at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyScheme {
    pub prefix: String,
    pub vehicle_id: String,
    pub utc_offset_seconds: i32,
}

impl KeyScheme {
    /// Whether `key` is the one [`key_with_suffix`](Self::key_with_suffix) gives for some
    /// suffix, and which (0: none; with [`ZST_FLAG`] for a `.zst` key), checked without
    /// building it (replay asks this of every registry record).
    pub fn derives(&self, key: &str, file: &FileRef, version: &Version) -> Option<u16> {
        let (y, m, d) = crate::calendar::civil_date(
            version.mtime_seconds() + i64::from(self.utc_offset_seconds),
        );
        let mut date = [0u8; 10];
        if !(0..=9999).contains(&y) {
            return self.key(file, version).ok().filter(|k| k == key).map(|_| 0);
        }
        let digits = |out: &mut [u8], mut v: u64| {
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(&mut date[..4], y as u64);
        date[4] = b'-';
        digits(&mut date[5..7], u64::from(m));
        date[7] = b'-';
        digits(&mut date[8..], u64::from(d));
        let parts: [&[u8]; 7] = [
            self.prefix.as_bytes(),
            self.vehicle_id.as_bytes(),
            b"/",
            &date,
            b"/",
            file.as_str().as_bytes(),
            b"",
        ];
        if key.len() > MAX_KEY_BYTES {
            return None;
        }
        let mut rest = key.as_bytes();
        for p in parts {
            rest = rest.strip_prefix(p)?;
        }
        parse_suffix(rest)
    }

    /// The day (days since 1970-01-01 at the UTC offset) a version's key is dated.
    pub fn day(&self, version: &Version) -> i64 {
        (version.mtime_seconds() + i64::from(self.utc_offset_seconds)).div_euclid(86_400)
    }

    /// The key with `~N` appended (N ≥ 2; 0 gives the plain key): a later, different
    /// content of a path whose key is taken on that day; then `.zst` for a compressed
    /// object (`x.log~2.zst`).
    pub fn key_with_suffix(
        &self,
        file: &FileRef,
        version: &Version,
        suffix: u16,
        zst: bool,
    ) -> Result<String, String> {
        let mut key = self.key(file, version)?;
        if suffix >= 2 {
            key.push_str(&format!("~{suffix}"));
        }
        if zst {
            key.push_str(ZST_SUFFIX);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "key is {} bytes, over S3's {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        Ok(key)
    }

    /// The object key of a version of a file, or why it cannot have one.
    pub fn key(&self, file: &FileRef, version: &Version) -> Result<String, String> {
        let (y, m, d) = crate::calendar::civil_date(
            version.mtime_seconds() + i64::from(self.utc_offset_seconds),
        );
        let key = format!(
            "{}{}/{y:04}-{m:02}-{d:02}/{}",
            self.prefix,
            self.vehicle_id,
            file.as_str()
        );
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "key is {} bytes, over S3's {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        Ok(key)
    }
}

/// Set in a suffix [`KeyScheme::derives`] gives when the key is a compressed object's
/// (ends in `.zst`); the `N` is the rest.
pub const ZST_FLAG: u16 = 1 << 15;
/// Appended to a compressed object's key (before a `~N`).
pub const ZST_SUFFIX: &str = ".zst";

/// The `N` of a key's `~N` tail (empty: 0), 2 ≤ N < [`ZST_FLAG`] without leading zeros,
/// with [`ZST_FLAG`] set if a `.zst` follows.
fn parse_suffix(tail: &[u8]) -> Option<u16> {
    let (tail, zst) = match tail.strip_suffix(ZST_SUFFIX.as_bytes()) {
        Some(t) => (t, ZST_FLAG),
        None => (tail, 0),
    };
    if tail.is_empty() {
        return Some(zst);
    }
    let digits = std::str::from_utf8(tail.strip_prefix(b"~")?).ok()?;
    if digits.starts_with('0') {
        return None;
    }
    let n = digits
        .parse::<u16>()
        .ok()
        .filter(|n| (2..ZST_FLAG).contains(n))?;
    Some(n | zst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_key(
        prefix: &str,
        vehicle_id: &str,
        t: i64,
        utc_offset_seconds: i32,
        source: &str,
        rel: &str,
    ) -> Result<String, String> {
        let scheme = KeyScheme {
            prefix: prefix.into(),
            vehicle_id: vehicle_id.into(),
            utc_offset_seconds,
        };
        let version = Version {
            size: 0,
            mtime_ns: t * 1_000_000_000,
            ino: 0,
        };
        scheme.key(&FileRef::new(source, rel), &version)
    }

    #[test]
    fn key_date_follows_the_utc_offset() {
        // 2026-11-22T20:00:00Z is already the 23rd at +08:00, still the 22nd at UTC.
        let t = 1_795_392_000 - 4 * 3600;
        let k = object_key("", "v001", t, 8 * 3600, "ros", "a/b.log").expect("key");
        assert_eq!(k, "v001/2026-11-23/ros/a/b.log");
        let k = object_key("fleet/", "v001", t, 0, "ros", "a/b.log").expect("key");
        assert_eq!(k, "fleet/v001/2026-11-22/ros/a/b.log");
        let k = object_key("", "v001", t, -10 * 3600, "ros", "x").expect("key");
        assert_eq!(k, "v001/2026-11-22/ros/x");
    }

    #[test]
    fn names_keep_their_bytes() {
        let rel = "dir with space/ünï+%20ç.log";
        let k = object_key("", "v1", 0, 0, "terminal", rel).expect("key");
        assert_eq!(k, format!("v1/1970-01-01/terminal/{rel}"));
    }

    #[test]
    fn later_contents_take_numbered_keys_and_are_recognised() {
        let scheme = KeyScheme {
            prefix: String::new(),
            vehicle_id: "v1".into(),
            utc_offset_seconds: 0,
        };
        let f = FileRef::new("syslog", "messages");
        let v = Version::default();
        let k2 = scheme.key_with_suffix(&f, &v, 2, false).expect("key");
        assert_eq!(k2, "v1/1970-01-01/syslog/messages~2");
        assert_eq!(
            scheme.key_with_suffix(&f, &v, 0, false).expect("key"),
            scheme.key(&f, &v).expect("key")
        );
        assert_eq!(scheme.derives(&k2, &f, &v), Some(2));
        let z3 = scheme.key_with_suffix(&f, &v, 3, true).expect("key");
        assert_eq!(z3, "v1/1970-01-01/syslog/messages~3.zst", "~N before .zst");
        assert_eq!(scheme.derives(&z3, &f, &v), Some(3 | ZST_FLAG));
        let z0 = scheme.key_with_suffix(&f, &v, 0, true).expect("key");
        assert_eq!(scheme.derives(&z0, &f, &v), Some(ZST_FLAG));
        assert_eq!(
            scheme.derives("v1/1970-01-01/syslog/messages", &f, &v),
            Some(0)
        );
        for other in [
            "~1",
            "~02",
            "~x",
            "~",
            "~70000",
            "~40000",
            ".1",
            ".zst~2",
            "~2.zst.zst",
        ] {
            let k = format!("v1/1970-01-01/syslog/messages{other}");
            assert_eq!(scheme.derives(&k, &f, &v), None, "{k}");
        }
        assert_eq!(scheme.day(&v), 0);
    }

    #[test]
    fn overlong_keys_are_refused() {
        let rel = "x".repeat(MAX_KEY_BYTES);
        assert!(object_key("", "v1", 0, 0, "s", &rel).is_err());
    }
}
