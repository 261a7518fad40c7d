//! Digests of a file's bytes and their text forms: the whole file's SHA-256 (metadata,
//! `x-amz-checksum-sha256`, the registry) and each body's CRC-32 (a multipart part's,
//! a compressed upload's input block's, or the whole file's for a single PUT). A part's
//! CRC-32 is its `x-amz-checksum-crc32`, which the server checks, and every body is
//! checked against its CRC again as it is sent (the danger there is a file rewritten,
//! not an adversary). One pass, SHA-256 and CRC-32 only: a per-part MD5 cost 2.5 times
//! the SHA-256 and held back the first byte sent (docs/BENCHMARKS.md). MD5s are taken
//! only where a server needs them: a compressed part's `Content-MD5`, or a part of an
//! upload begun before parts carried CRC-32s ([`md5_span`]).
//!
//! Reads files; writes nothing and talks to no one.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// Read buffer for hashing: large enough for few syscalls, small enough that
/// `concurrency` of them cost nothing on a vehicle computer.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How a file's bytes are cut into bodies for their CRC-32s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    /// One body, the whole file (a single PUT).
    Whole,
    /// Bodies of this size: multipart parts, or the input blocks of a compressed upload
    /// (checked block by block as it is compressed).
    Parts(u64),
}

/// The digests of one version of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Digests {
    pub sha256: [u8; 32],
    /// CRC-32 of each body: each part or block, or the whole file.
    pub body_crc: Vec<u32>,
}

impl Digests {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Why hashing stopped short.
#[derive(Debug)]
pub enum HashError {
    /// The file ended before `size` bytes or ran past them: it changed.
    Changed,
    /// Shutdown was asked for.
    Stopped,
    Io(io::Error),
}

/// Reads exactly `size` bytes of `path`, computing the SHA-256 and the digests of its
/// `bodies`. A file longer than `size` has changed, unless `prefix`: then
/// only its first `size` bytes are read (a snapshot of a growing file).
pub fn hash_file(
    path: &Path,
    size: u64,
    bodies: Bodies,
    prefix: bool,
    stop: &AtomicBool,
) -> Result<Digests, HashError> {
    let file = File::open(path).map_err(HashError::Io)?;
    hash_open(&file, size, bodies, prefix, stop)
}

/// [`hash_file`] of a file already open (read from where its offset is): what is
/// hashed is the inode that descriptor holds, whatever its path names meanwhile.
pub fn hash_open(
    file: &File,
    size: u64,
    bodies: Bodies,
    prefix: bool,
    stop: &AtomicBool,
) -> Result<Digests, HashError> {
    let mut file = file.take(if prefix { size } else { u64::MAX });
    let mut sha = Sha256::new();
    let mut parts = PartHasher::new(bodies);
    // No bigger than the file (and one byte to see it grew): a 4 KiB log must not cost
    // a 256 KiB allocation, which the allocator maps and unmaps each time.
    let len = size.saturating_add(1).min(READ_BUFFER_BYTES as u64) as usize;
    let mut buf = vec![0u8; len];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(HashError::Stopped);
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Io(e)),
        };
        total += n as u64;
        if total > size {
            return Err(HashError::Changed);
        }
        sha.update(&buf[..n]);
        parts.update(&buf[..n]);
    }
    if total != size {
        return Err(HashError::Changed);
    }
    Ok(Digests {
        sha256: sha.finalize().into(),
        body_crc: parts.finish(size),
    })
}

/// Files up to this size are read once, whole, into memory ([`read_small`]): hashed, then
/// sent from there, one open and one pass where a larger file takes two. The buffer is
/// what [`hash_open`] would have taken for them anyway.
pub const SMALL_FILE_BYTES: u64 = READ_BUFFER_BYTES as u64 - 1;

/// Reads a file of `size` bytes (at most [`SMALL_FILE_BYTES`]) whole, with its digests as
/// one body: the bytes a single PUT then sends are exactly the bytes hashed. A file of
/// another length has changed, unless `prefix` and it is longer (a growing file's
/// snapshot: its first `size` bytes).
pub fn read_small(
    path: &Path,
    size: u64,
    prefix: bool,
    stop: &AtomicBool,
) -> Result<(Digests, Vec<u8>), HashError> {
    debug_assert!(size <= SMALL_FILE_BYTES);
    let file = File::open(path).map_err(HashError::Io)?;
    if stop.load(Ordering::Relaxed) {
        return Err(HashError::Stopped);
    }
    // One byte more than expected, to see that it grew.
    let limit = if prefix { size } else { size + 1 };
    let mut bytes = Vec::with_capacity(limit as usize);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(HashError::Io)?;
    if bytes.len() as u64 != size {
        return Err(HashError::Changed);
    }
    let digests = Digests {
        sha256: Sha256::digest(&bytes).into(),
        body_crc: vec![crc32fast::hash(&bytes)],
    };
    Ok((digests, bytes))
}

/// CRC-32s of consecutive fixed-size bodies of a stream; one body, the whole stream,
/// for [`Bodies::Whole`].
struct PartHasher {
    part_size: u64,
    in_part: u64,
    crc: crc32fast::Hasher,
    crcs: Vec<u32>,
}

impl PartHasher {
    fn new(bodies: Bodies) -> PartHasher {
        let part_size = match bodies {
            Bodies::Whole => u64::MAX,
            Bodies::Parts(n) => n,
        };
        assert!(part_size != 0, "a part size of 0");
        PartHasher {
            part_size,
            in_part: 0,
            crc: crc32fast::Hasher::new(),
            crcs: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = bytes.len().min((self.part_size - self.in_part) as usize);
            self.crc.update(&bytes[..take]);
            self.in_part += take as u64;
            bytes = &bytes[take..];
            if self.in_part == self.part_size {
                self.end_part();
            }
        }
    }

    fn end_part(&mut self) {
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new());
        self.crcs.push(crc.finalize());
        self.in_part = 0;
    }

    /// The bodies' CRCs; an empty file is one empty body.
    fn finish(mut self, size: u64) -> Vec<u32> {
        if self.in_part > 0 || size == 0 {
            self.end_part();
        }
        self.crcs
    }
}

/// The MD5 of `len` bytes of `file` from `offset` (a part of an upload that carries
/// `Content-MD5`s); an error if the file is shorter.
pub fn md5_span(file: &File, offset: u64, len: u64) -> io::Result<[u8; 16]> {
    use std::os::unix::fs::FileExt;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; len.min(READ_BUFFER_BYTES as u64) as usize];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], offset + done)?;
        md5.update(&buf[..n]);
        done += n as u64;
    }
    Ok(md5.finalize().into())
}

/// A CRC-32 as `x-amz-checksum-crc32` has it: its four bytes big-endian, base64.
pub fn crc32_b64(crc: u32) -> String {
    base64(&crc.to_be_bytes())
}

/// The MD5 of bytes, for checking what was sent against what was hashed.
pub fn md5(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Exactly `N` bytes from `2N` hex digits (either case), or `None`.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let t = text.as_bytes();
    if t.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(t[2 * i])? << 4 | digit(t[2 * i + 1])?;
    }
    Some(out)
}

/// Standard base64 with padding, for `Content-MD5` and `x-amz-checksum-sha256`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_file_bytes(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn a_span_md5_and_a_crc_header_are_as_rfc1321_and_aws_have_them() {
        let dir = std::env::temp_dir().join(format!("tvm-md5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = File::open(&path).expect("open");
        let span = md5_span(&file, 100, 600_000).expect("md5");
        assert_eq!(span, md5(&bytes[100..600_100]));
        assert_eq!(hex(&md5(b"c")), "4a8a08f09d37b73795649038408b5f33");
        assert!(md5_span(&file, 600_000, 200_000).is_err(), "past the end");
        // AWS's example: CRC-32 of "Hello World" is 0x4a17b156, header "ShexVg==".
        assert_eq!(crc32_b64(crc32fast::hash(b"Hello World")), "ShexVg==");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_input() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(from_hex::<4>("0001ABff"), Some(bytes));
        assert_eq!(from_hex::<4>("0001abf"), None);
        assert_eq!(from_hex::<4>("0001abfg"), None);
    }

    #[test]
    fn hashing_gives_sha256_and_part_crcs_and_notices_a_size_change() {
        let dir = std::env::temp_dir().join(format!("tvm-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").expect("write");
        let stop = AtomicBool::new(false);
        let d = hash_file(&path, 3, Bodies::Parts(2), false, &stop).expect("hash");
        assert_eq!(
            d.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.body_crc,
            vec![crc32fast::hash(b"ab"), crc32fast::hash(b"c")]
        );
        assert!(matches!(
            hash_file(&path, 2, Bodies::Whole, false, &stop),
            Err(HashError::Changed)
        ));
        let first_two = hash_file(&path, 2, Bodies::Whole, true, &stop).expect("a prefix");
        assert_eq!(first_two.sha256, hash_file_bytes(b"ab"));
        assert!(matches!(
            hash_file(&path, 4, Bodies::Whole, false, &stop),
            Err(HashError::Changed)
        ));
        let whole = hash_file(&path, 3, Bodies::Whole, false, &stop).expect("hash");
        assert_eq!(whole.body_crc, vec![crc32fast::hash(b"abc")]);
        std::fs::write(&path, b"").expect("write");
        let empty = hash_file(&path, 0, Bodies::Parts(5), false, &stop).expect("hash");
        assert_eq!(
            empty.body_crc,
            vec![crc32fast::hash(b"")],
            "an empty file is one empty part"
        );
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            hash_file(&path, 0, Bodies::Whole, false, &stop),
            Err(HashError::Stopped)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_small_file_read_whole_has_the_digests_of_the_hashing_pass_and_its_bytes() {
        let dir = std::env::temp_dir().join(format!("tvm-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        let stop = AtomicBool::new(false);
        for len in [0, 1, 4096, SMALL_FILE_BYTES as usize] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            std::fs::write(&path, &bytes).expect("write");
            let (d, read) = read_small(&path, len as u64, false, &stop).expect("read");
            let hashed = hash_file(&path, len as u64, Bodies::Whole, false, &stop).expect("hash");
            assert_eq!((d, read), (hashed, bytes), "{len} bytes");
        }
        std::fs::write(&path, b"abcd").expect("write");
        for (size, prefix) in [(3, false), (5, false), (5, true)] {
            assert!(
                matches!(
                    read_small(&path, size, prefix, &stop),
                    Err(HashError::Changed)
                ),
                "{size} bytes expected of 4, prefix {prefix}"
            );
        }
        let (d, read) = read_small(&path, 3, true, &stop).expect("a prefix");
        assert_eq!((d.sha256, read), (hash_file_bytes(b"abc"), b"abc".to_vec()));
        assert!(matches!(
            read_small(&dir.join("gone"), 1, false, &stop),
            Err(HashError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            read_small(&path, 4, false, &stop),
            Err(HashError::Stopped)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
