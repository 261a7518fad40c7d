//! Reading one S3 object as a stream of (decompressed) bytes: a GET that, cut
//! mid-stream, carries on with a ranged GET from the byte it stopped at (only while the
//! object keeps its ETag), and `.gz` / `.zst` decompressed on the fly. Memory: the
//! decompressor's window and one read buffer, whatever the object's size.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::Duration;

use crate::s3::{Object, S3, S3Error};

/// Ranged GETs after a cut before the read fails.
const RESUMES: u32 = 8;

/// `s3://bucket/key` split.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "plain",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    pub fn parse(name: &str) -> Option<Codec> {
        match name {
            "plain" => Some(Codec::Plain),
            "gzip" => Some(Codec::Gzip),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// By the key's suffix, else the `Content-Encoding`.
    pub fn of(key: &str, encoding: Option<&str>) -> Codec {
        let lower = key.to_ascii_lowercase();
        if lower.ends_with(".gz") || encoding == Some("gzip") {
            Codec::Gzip
        } else if lower.ends_with(".zst") || encoding == Some("zstd") {
            Codec::Zstd
        } else {
            Codec::Plain
        }
    }
}

/// Whether a key is a CSV object `run s3://bucket/prefix/` takes.
pub fn is_csv(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    [".csv", ".csv.gz", ".csv.zst"]
        .iter()
        .any(|s| lower.ends_with(s))
}

/// The raw (possibly compressed) bytes of an object, carrying on after a cut.
pub struct Raw {
    s3: Arc<S3>,
    key: String,
    etag: String,
    body: Box<dyn Read + Send>,
    /// Bytes of the object read so far (position in the stored object).
    pos: Arc<AtomicU64>,
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut resumes = 0;
        loop {
            match self.body.read(buf) {
                Ok(n) => {
                    self.pos.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if resumes < RESUMES => {
                    resumes += 1;
                    let at = self.pos.load(Ordering::Relaxed);
                    log::warn!(
                        "reading {} cut at byte {at} ({e}); carrying on with a ranged GET",
                        self.key
                    );
                    sleep(Duration::from_millis(200 << resumes.min(5)));
                    match self.s3.get(&self.key, at, Some(&self.etag)) {
                        Ok(o) if o.etag != self.etag => {
                            return Err(io::Error::other(format!(
                                "{} changed while it was read (its ETag is {}, not {})",
                                self.key, o.etag, self.etag
                            )));
                        }
                        Ok(o) => self.body = o.body,
                        Err(e) if e.code() == Some("PreconditionFailed") => {
                            return Err(io::Error::other(format!(
                                "{} changed while it was read (its ETag is not {})",
                                self.key, self.etag
                            )));
                        }
                        Err(e) => log::warn!("{e}"),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An opened object: its metadata, and its rows' bytes from a decompressed offset on.
pub struct Opened {
    pub etag: String,
    pub total: Option<u64>,
    pub meta: std::collections::HashMap<String, String>,
    pub codec: Codec,
    /// Bytes of the stored object read so far.
    pub stored_pos: Arc<AtomicU64>,
    pub reader: Box<dyn BufRead + Send>,
}

/// What a checkpoint knows of the object a job reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The ETag it was taken on.
    pub etag: Option<&'a str>,
    /// How it was stored (a `.csv` with `Content-Encoding: gzip` is compressed too).
    pub codec: Option<Codec>,
    /// Its stored size.
    pub size: Option<u64>,
}

/// Opens `key` for reading from decompressed byte `from`, requiring the ETag `known`
/// gives (the object a checkpoint was taken on). Plain objects start with a ranged GET;
/// compressed ones are decompressed from the start and the first `from` bytes skipped.
pub fn open(
    s3: Arc<S3>,
    key: &str,
    from: u64,
    known: Known,
    keep: &mut dyn FnMut() -> bool,
) -> Result<Opened, S3Error> {
    let codec_guess = known.codec.unwrap_or_else(|| Codec::of(key, None));
    let start = if codec_guess == Codec::Plain { from } else { 0 };
    if codec_guess == Codec::Plain && known.size.is_some_and(|size| from >= size) {
        // Read to its end already: a ranged GET there is refused (416), not empty.
        return Ok(Opened {
            etag: known.etag.unwrap_or_default().to_string(),
            total: known.size,
            meta: Default::default(),
            codec: Codec::Plain,
            stored_pos: Arc::new(AtomicU64::new(from)),
            reader: Box::new(io::empty()),
        });
    }
    let etag = known.etag;
    let Object {
        etag: got,
        encoding,
        total,
        meta,
        body,
    } = s3.get(key, start, etag)?;
    // A server that ignores If-Match (s3s-fs does) still answers with the ETag it has.
    if let Some(want) = etag
        && want != got
    {
        return Err(changed(key, &format!("its ETag is {got}, not {want}")));
    }
    let codec = known
        .codec
        .unwrap_or_else(|| Codec::of(key, encoding.as_deref()));
    let pos = Arc::new(AtomicU64::new(start));
    let raw = Raw {
        s3,
        key: key.to_string(),
        etag: got.clone(),
        body,
        pos: Arc::clone(&pos),
    };
    let mut reader: Box<dyn BufRead + Send> = match codec {
        Codec::Plain => Box::new(BufReader::with_capacity(256 * 1024, raw)),
        Codec::Gzip => Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::read::MultiGzDecoder::new(BufReader::new(raw)),
        )),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::new(raw).map_err(|e| S3Error::BadAnswer {
                op: "GetObject",
                key: key.to_string(),
                why: format!("zstd: {e}"),
            })?;
            Box::new(BufReader::with_capacity(256 * 1024, d))
        }
    };
    if codec != Codec::Plain && from > 0 {
        let skipped = skip(&mut reader, from, keep).map_err(|e| S3Error::BadAnswer {
            op: "GetObject",
            key: key.to_string(),
            why: format!("skipping to byte {from}: {e}"),
        })?;
        if skipped < from {
            return Err(changed(
                key,
                &format!("it ends at byte {skipped}, before the checkpoint's {from}"),
            ));
        }
    }
    Ok(Opened {
        etag: got,
        total,
        meta,
        codec,
        stored_pos: pos,
        reader,
    })
}

/// Reads and drops `n` bytes in pieces, asking `keep` between them (the job renews its
/// lease there); the count skipped, less at the end of the stream.
fn skip(reader: &mut impl BufRead, n: u64, keep: &mut dyn FnMut() -> bool) -> io::Result<u64> {
    const PIECE: u64 = 16 << 20;
    let mut done = 0;
    while done < n {
        if !keep() {
            return Err(io::Error::other("stopped"));
        }
        let got = io::copy(&mut reader.take(PIECE.min(n - done)), &mut io::sink())?;
        if got == 0 {
            break;
        }
        done += got;
    }
    Ok(done)
}

/// The object is not the one the checkpoint was taken on: as S3's answer to a failed
/// `If-Match`, which no retry fixes.
fn changed(key: &str, why: &str) -> S3Error {
    S3Error::Status {
        op: "GetObject",
        key: key.to_string(),
        status: 412,
        code: "PreconditionFailed".into(),
        message: format!("the object changed since the job's checkpoint: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_codecs_and_csv_keys() {
        assert_eq!(
            parse_url("s3://b/p/k.csv"),
            Some(("b".into(), "p/k.csv".into()))
        );
        assert_eq!(parse_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_url("http://b/k"), None);
        assert_eq!(Codec::of("a.csv.gz", None), Codec::Gzip);
        assert_eq!(Codec::of("a.csv.ZST", None), Codec::Zstd);
        assert_eq!(Codec::of("a.csv", Some("gzip")), Codec::Gzip);
        assert_eq!(Codec::of("a.csv", None), Codec::Plain);
        assert!(is_csv("x/y.CSV") && is_csv("a.csv.zst") && !is_csv("a.csv.bak"));
    }

    #[test]
    fn codec_names_read_back() {
        for c in [Codec::Plain, Codec::Gzip, Codec::Zstd] {
            assert_eq!(Codec::parse(c.name()), Some(c));
        }
        assert_eq!(Codec::parse("lz4"), None);
        assert_eq!(Codec::of("a.csv", Some("zstd")), Codec::Zstd);
    }

    #[test]
    fn skipping_asks_between_pieces_and_stops_or_ends_short() {
        let bytes = vec![7u8; (40 << 20) + 5];
        let mut asked = 0;
        let mut keep = || {
            asked += 1;
            true
        };
        let mut r = io::BufReader::new(&bytes[..]);
        assert_eq!(skip(&mut r, 40 << 20, &mut keep).expect("skip"), 40 << 20);
        assert_eq!(asked, 3, "16 MiB pieces, the lease renewed before each");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("read");
        assert_eq!(rest.len(), 5, "exactly the bytes asked were dropped");
        let mut r = io::BufReader::new(&bytes[..10]);
        assert_eq!(skip(&mut r, 100, &mut || true).expect("short"), 10);
        let mut r = io::BufReader::new(&bytes[..]);
        let e = skip(&mut r, 100, &mut || false).expect_err("stopped");
        assert_eq!(e.to_string(), "stopped");
        let e = changed("k.csv", "its ETag is \"b\", not \"a\"");
        assert_eq!(e.code(), Some("PreconditionFailed"));
    }
}
