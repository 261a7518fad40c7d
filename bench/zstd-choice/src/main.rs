//! `zstd-choice FILE LEVEL`: compresses FILE in memory with the encoder chosen at build
//! time (feature `zstd` or `ruzstd`, none: a copy, for the binary's baseline size) and
//! prints `ratio MiB/s` (the best of three runs).
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(level)) = (args.get(1), args.get(2).and_then(|l| l.parse().ok())) else {
        eprintln!("usage: zstd-choice FILE LEVEL");
        std::process::exit(2);
    };
    let mut input = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut input)) {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    }
    let mut best = f64::MAX;
    let mut len = 0;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        len = compress(&input, level).len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mib = input.len() as f64 / 1048576.0;
    println!("{:.4} {:.1}", len as f64 / input.len() as f64, mib / best);
}

#[cfg(feature = "zstd")]
fn compress(input: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(input, level).unwrap_or_default()
}

/// ruzstd encodes only `Fastest` (about level 1); `Default` and better are not
/// implemented in 0.9 (they panic), so every level asks for `Fastest`.
#[cfg(feature = "ruzstd")]
fn compress(input: &[u8], _level: i32) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(input, ruzstd::encoding::CompressionLevel::Fastest)
}

#[cfg(not(any(feature = "zstd", feature = "ruzstd")))]
fn compress(input: &[u8], _level: i32) -> Vec<u8> {
    input.to_vec()
}
