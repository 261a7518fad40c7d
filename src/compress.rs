//! zstd compression of a source's files: which files are worth it, and the frames a
//! compressed upload is made of.
//!
//! A compressed object is a sequence of zstd frames, one per multipart part (or one for a
//! single PUT), each over whole [`BLOCK_BYTES`] blocks of the file: a part never needs
//! the compressor state of the parts before it, so an upload resumes after a power cut
//! from the input offset its last stored part ended at, without sending a stored part
//! again. Any zstd decoder reads concatenated frames as one stream; each frame carries
//! zstd's own content checksum, and [`verify`] decompresses every frame before it is
//! sent and compares it with the input that produced it.
//!
//! No IO but the compressor's memory; the caller reads the file and sends the bytes.

use std::io::{self, Read, Seek, SeekFrom};

use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::CParameter;

/// The zstd library's version (e.g. 10507 for 1.5.7), journaled with a compressed
/// multipart upload: the same input, level and version give the same frames.
pub fn library_version() -> u32 {
    zstd::zstd_safe::version_number()
}

use crate::pattern::Pattern;

/// The unit of input a frame is made of: frames end only at block boundaries, so a part's
/// input range is whole blocks (but the file's last) and each block's CRC-32, taken when
/// the file was hashed, is checked as it is compressed. Part of the journal's format:
/// resumed uploads rely on their parts' input offsets being multiples of it.
pub const BLOCK_BYTES: u64 = 1 << 20;
pub const CONTENT_TYPE: &str = "application/zstd";
/// `compress_level`'s default and range: beyond 19, zstd's "ultra" levels need windows
/// of up to 128 MiB, far past a vehicle's memory budget.
pub const DEFAULT_LEVEL: i32 = 3;
pub const MAX_LEVEL: i32 = 19;

/// File name endings that are compressed already (sent as they are), compared without
/// regard to case: compressors and archives, compressed images, audio and video. (An
/// `.mcap` is looked into: [`mcap_is_compressed`].)
pub const COMPRESSED_EXTENSIONS: &[&str] = &[
    ".gz", ".tgz", ".zst", ".zstd", ".xz", ".txz", ".bz2", ".tbz2", ".lz4", ".lzma", ".lz", ".br",
    ".zip", ".7z", ".rar", ".jar", ".apk", ".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic",
    ".avif", ".mp4", ".mkv", ".mov", ".avi", ".webm", ".h264", ".h265", ".hevc", ".mp3", ".aac",
    ".ogg", ".opus", ".flac",
];

/// A source's compression: its level and the names it sends as they are besides
/// [`COMPRESSED_EXTENSIONS`].
#[derive(Debug, Clone)]
pub struct Rule {
    pub level: i32,
    pub skip: Vec<Pattern>,
}

impl Rule {
    /// Whether the file at `rel` (relative to its source root) is compressed: not by
    /// its name's ending, nor a `compress_skip` pattern.
    pub fn applies(&self, rel: &str) -> bool {
        let lower = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
        !COMPRESSED_EXTENSIONS.iter().any(|e| lower.ends_with(e))
            && !self.skip.iter().any(|p| p.matches(rel))
    }
}

/// Whether a file named `rel` is an MCAP file, whose content tells whether it is
/// compressed ([`mcap_is_compressed`]).
pub fn is_mcap(rel: &str) -> bool {
    rel.to_ascii_lowercase().ends_with(".mcap")
}

/// Whether an MCAP file (a ROS 2 bag) is compressed already, by its first chunk's
/// `compression` field: recorded with zstd or lz4 chunks (ros2 bag's usual profiles) it
/// is sent as it is; with uncompressed chunks, or messages outside chunks, it is
/// compressed like a log. What cannot be told (not MCAP, unreadable, no chunk among
/// its first records) is sent as it is.
pub fn mcap_is_compressed(mut r: impl Read + Seek) -> bool {
    const MAGIC: &[u8; 8] = b"\x89MCAP0\r\n";
    const CHUNK: u8 = 0x06;
    const MESSAGE: u8 = 0x05;
    const DATA_END: u8 = 0x0F;
    const FOOTER: u8 = 0x02;
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return true;
    }
    for _ in 0..64 {
        let mut head = [0u8; 9];
        if r.read_exact(&mut head).is_err() {
            return true;
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[1..]);
        let len = u64::from_le_bytes(len);
        match head[0] {
            // Start time, end time, uncompressed size (u64 each), CRC (u32), then the
            // compression's name as a u32 length and bytes: "" for none.
            CHUNK => {
                let mut fields = [0u8; 32];
                if len < 32 || r.read_exact(&mut fields).is_err() {
                    return true;
                }
                return fields[28..32] != [0, 0, 0, 0];
            }
            MESSAGE | DATA_END | FOOTER => return false,
            _ => match i64::try_from(len) {
                Ok(skip) if r.seek(SeekFrom::Current(skip)).is_ok() => {}
                _ => return true,
            },
        }
    }
    true
}

/// One frame: the compressed bytes of `input_len` bytes of the file, whose CRC-32 is
/// `input_crc`.
#[derive(Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub input_len: u64,
    pub input_crc: u32,
}

/// A zstd compressor making one frame at a time, each with zstd's content checksum.
pub struct Compressor {
    encoder: Encoder<'static>,
    level: i32,
}

impl Compressor {
    pub fn new(level: i32) -> io::Result<Compressor> {
        let mut encoder = Encoder::new(level)?;
        encoder.set_parameter(CParameter::ChecksumFlag(true))?;
        Ok(Compressor { encoder, level })
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// Starts a frame whose bytes go to `out` (which keeps the capacity it has: give
    /// it [`frame_capacity`]). `pledge`: the exact input the frame will have, when known
    /// (zstd then sizes its tables to it, and writes it in the frame header).
    pub fn start(&mut self, out: Vec<u8>, pledge: Option<u64>) -> io::Result<FrameWriter<'_>> {
        self.encoder.reinit()?;
        self.encoder.set_pledged_src_size(pledge)?;
        Ok(FrameWriter {
            encoder: &mut self.encoder,
            out,
            input_len: 0,
            crc: crc32fast::Hasher::new(),
        })
    }
}

/// The capacity a frame buffer needs so that compressing blocks into it until it holds
/// `target` bytes never grows it: the target, plus the worst case of one more block, the
/// input zstd holds back (less than one of its 128 KiB blocks) and the frame's end.
pub fn frame_capacity(target: usize) -> usize {
    target + zstd::zstd_safe::compress_bound(BLOCK_BYTES as usize + (128 << 10)) + 1024
}

/// A frame being written.
pub struct FrameWriter<'a> {
    encoder: &'a mut Encoder<'static>,
    out: Vec<u8>,
    input_len: u64,
    crc: crc32fast::Hasher,
}

impl FrameWriter<'_> {
    /// Compresses `block` into the frame.
    pub fn write(&mut self, block: &[u8]) -> io::Result<()> {
        self.crc.update(block);
        self.input_len += block.len() as u64;
        let mut input = InBuffer::around(block);
        while input.pos() < block.len() {
            self.reserve();
            let pos = self.out.len();
            let mut output = OutBuffer::around_pos(&mut self.out, pos);
            self.encoder.run(&mut input, &mut output)?;
        }
        Ok(())
    }

    /// Compressed bytes so far (zstd keeps up to a block's worth inside until the end).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Ends the frame.
    pub fn finish(mut self) -> io::Result<Frame> {
        loop {
            self.reserve();
            let pos = self.out.len();
            let mut output = OutBuffer::around_pos(&mut self.out, pos);
            if self.encoder.finish(&mut output, true)? == 0 {
                break;
            }
        }
        Ok(Frame {
            bytes: self.out,
            input_len: self.input_len,
            input_crc: self.crc.finalize(),
        })
    }

    /// Room for more output (zstd writes what fits, and is asked again): grows only a
    /// full buffer, which one given [`frame_capacity`] never is.
    fn reserve(&mut self) {
        if self.out.capacity() - self.out.len() < 256 {
            self.out.reserve(64 * 1024);
        }
    }
}

/// Decompresses `frame` and checks that it is exactly one zstd frame giving `input_len`
/// bytes with CRC-32 `input_crc`: what the compressor produced decodes to the file's
/// bytes. Memory: the decoder's window and a 64 KiB buffer.
pub fn verify(frame: &Frame) -> Result<(), String> {
    let mut decoder = Decoder::new().map_err(|e| format!("zstd decoder: {e}"))?;
    let mut scratch = vec![0u8; 64 * 1024];
    let mut crc = crc32fast::Hasher::new();
    let mut produced = 0u64;
    let mut input = InBuffer::around(&frame.bytes);
    let mut hint = 1;
    while hint != 0 {
        let mut output = OutBuffer::around(&mut scratch[..]);
        hint = decoder
            .run(&mut input, &mut output)
            .map_err(|e| format!("the frame does not decode: {e}"))?;
        let n = output.pos();
        crc.update(&scratch[..n]);
        produced += n as u64;
        if n == 0 && hint != 0 && input.pos() == frame.bytes.len() {
            return Err("the frame is cut short".into());
        }
    }
    if input.pos() != frame.bytes.len() {
        return Err("bytes after the frame's end".into());
    }
    if produced != frame.input_len || crc.finalize() != frame.input_crc {
        return Err(format!(
            "the frame decodes to {produced} bytes that differ from the {} compressed",
            frame.input_len
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("line {i} temp {} ok\n", i % 97).into_bytes())
            .collect()
    }

    fn compress(level: i32, blocks: &[&[u8]]) -> Frame {
        let mut c = Compressor::new(level).expect("compressor");
        let mut w = c
            .start(Vec::with_capacity(frame_capacity(1 << 20)), None)
            .expect("start");
        for b in blocks {
            w.write(b).expect("write");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn a_frame_decodes_to_its_input_and_is_verified() {
        let input = text(50_000);
        let (a, b) = input.split_at(input.len() / 3);
        let frame = compress(3, &[a, b]);
        assert!(frame.bytes.len() * 5 < input.len(), "text compresses");
        assert_eq!(frame.input_len, input.len() as u64);
        assert_eq!(frame.input_crc, crc32fast::hash(&input));
        assert_eq!(zstd::decode_all(&frame.bytes[..]).expect("decodes"), input);
        verify(&frame).expect("verified");
    }

    #[test]
    fn frames_are_deterministic_and_concatenate_into_one_stream() {
        let input = text(20_000);
        let one = compress(3, &[&input]);
        let again = compress(3, &[&input]);
        assert_eq!(one.bytes, again.bytes, "the same input, the same frame");
        let mut stream = one.bytes.clone();
        stream.extend_from_slice(&compress(3, &[b"tail\n"]).bytes);
        let mut want = input.clone();
        want.extend_from_slice(b"tail\n");
        assert_eq!(zstd::decode_all(&stream[..]).expect("decodes"), want);
    }

    #[test]
    fn verify_refuses_a_damaged_cut_or_padded_frame() {
        let input = text(5_000);
        let frame = compress(1, &[&input]);
        let mut bad = Frame {
            bytes: frame.bytes.clone(),
            input_len: frame.input_len,
            input_crc: frame.input_crc ^ 1,
        };
        assert!(verify(&bad).is_err(), "another input's CRC");
        bad.input_crc = frame.input_crc;
        let mid = bad.bytes.len() / 2;
        bad.bytes[mid] ^= 0x55;
        assert!(verify(&bad).is_err(), "a flipped byte");
        bad.bytes = frame.bytes[..frame.bytes.len() - 3].to_vec();
        assert!(verify(&bad).is_err(), "cut short");
        bad.bytes = frame.bytes.clone();
        bad.bytes.push(0);
        assert!(verify(&bad).is_err(), "trailing bytes");
    }

    #[test]
    fn an_empty_input_is_an_empty_frame() {
        let frame = compress(3, &[]);
        assert_eq!(frame.input_len, 0);
        verify(&frame).expect("verified");
        assert!(
            zstd::decode_all(&frame.bytes[..])
                .expect("decodes")
                .is_empty()
        );
    }

    #[test]
    fn compressed_names_are_sent_as_they_are() {
        let rule = Rule {
            level: 3,
            skip: vec![Pattern::new("*.bag").expect("pattern")],
        };
        // An MCAP's name says nothing: its chunks do (`mcap_is_compressed`).
        for name in [
            "syslog",
            "rosout.log",
            "t.csv",
            "messages.1",
            "gz/x.log",
            "run.mcap",
        ] {
            assert!(rule.applies(name), "{name}");
        }
        for name in ["messages.2.gz", "A.ZST", "d/cam.JPG", "d/r.bag", "x.tar.xz"] {
            assert!(!rule.applies(name), "{name}");
        }
    }

    /// An MCAP file: magic, a header record, then a chunk compressed with `compression`.
    fn mcap(compression: &str) -> Vec<u8> {
        let mut out = b"\x89MCAP0\r\n".to_vec();
        let header = b"\x00\x00\x00\x00\x00\x00\x00\x00";
        out.push(0x01);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header);
        let mut chunk = vec![0u8; 28];
        chunk.extend_from_slice(&(compression.len() as u32).to_le_bytes());
        chunk.extend_from_slice(compression.as_bytes());
        chunk.extend_from_slice(&0u64.to_le_bytes());
        out.push(0x06);
        out.extend_from_slice(&(chunk.len() as u64).to_le_bytes());
        out.extend_from_slice(&chunk);
        out
    }

    #[test]
    fn an_mcap_is_compressed_already_by_its_chunks() {
        use std::io::Cursor;
        assert!(is_mcap("bags/Run.MCAP") && !is_mcap("x.log"));
        assert!(mcap_is_compressed(Cursor::new(mcap("zstd"))));
        assert!(mcap_is_compressed(Cursor::new(mcap("lz4"))));
        assert!(!mcap_is_compressed(Cursor::new(mcap(""))), "plain chunks");
        let mut unchunked = mcap("");
        unchunked.truncate(8 + 9 + 8);
        unchunked.push(0x05);
        unchunked.extend_from_slice(&3u64.to_le_bytes());
        unchunked.extend_from_slice(b"msg");
        assert!(
            !mcap_is_compressed(Cursor::new(unchunked)),
            "messages outside chunks"
        );
        assert!(
            mcap_is_compressed(Cursor::new(b"not an mcap".to_vec())),
            "not MCAP"
        );
        let cut = mcap("zstd")[..20].to_vec();
        assert!(
            mcap_is_compressed(Cursor::new(cut)),
            "cut short: cannot tell"
        );
    }

    #[test]
    fn a_frame_buffer_given_its_capacity_does_not_grow() {
        // Incompressible input: the worst case for the last block past the target.
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..3 * BLOCK_BYTES as usize)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let target = 2 * BLOCK_BYTES as usize;
        let cap = frame_capacity(target);
        let mut c = Compressor::new(3).expect("compressor");
        let mut w = c.start(Vec::with_capacity(cap), None).expect("start");
        for block in noise.chunks(BLOCK_BYTES as usize) {
            if w.len() >= target {
                break;
            }
            w.write(block).expect("write");
        }
        let frame = w.finish().expect("finish");
        assert_eq!(frame.bytes.capacity(), cap, "no reallocation");
        verify(&frame).expect("verified");
    }
}
