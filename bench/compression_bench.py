#!/usr/bin/env python3
"""Compression's benchmark (part of `make bench`; `python3 bench/compression_bench.py` alone).

A generated text-log corpus (bench/corpus.py: syslog, rosout and CSV lines, fixed seed) in
s3s-fs on loopback, side by side in one run:
- tvm-upload `once`, plain, and with `compress: "zstd"` (level 3);
- the pipelines a user would otherwise script, for each file:
  `zstd -3 -c FILE | s5cmd pipe s3://B/P/FILE.zst` (s5cmd 2.3, the fastest uploader) and
  `zstd -3 -c FILE | aws s3 cp - s3://B/P/FILE.zst`.
Bytes on the wire are the stored objects' sizes; every compressed object of a sample is
decoded and compared with its file. Then: plain against compressed under a 4 MiB/s cap
(on a part of the corpus: the plain run takes a second per 4 MiB), peak RSS of one 1 GiB
file compressed in 8 MiB parts at concurrency 2, CPU per MiB of the aarch64 binary under
qemu-aarch64, and the encoder choice (bench/zstd-choice: libzstd against ruzstd, ratio,
MiB/s on x86 and under qemu, size added to the static aarch64 binary).

Writes bench/compression.json and the compression section of docs/BENCHMARKS.md.
Environment: BENCH_QUICK=1 (smaller), COMPRESS_BENCH_MIB (corpus, default 1024),
COMPRESS_CAP_MIB (capped part, default 256), COMPRESS_ONLY=compare (only the side-by-side
runs; the other figures of bench/compression.json are kept); `--report` rewrites the
section only.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (s3s-fs, timing, environment)
import corpus  # noqa: E402

ROOT = bench.ROOT
MIB = bench.MIB
QUICK = bench.QUICK
CORPUS_MIB = int(os.environ.get("COMPRESS_BENCH_MIB", "128" if QUICK else "1024"))
CAP_MIB = int(os.environ.get("COMPRESS_CAP_MIB", "32" if QUICK else "256"))
CAP = 4 * MIB
# A vehicle's settings for compressed sources (every file compressed at once holds its
# compressor and up to `concurrency` parts in memory); the peers get the same.
CONCURRENCY = 4
PART_MIB = 8
START = "<!-- compression bench start -->"
END = "<!-- compression bench end -->"
AARCH64 = os.path.join(ROOT, "target/aarch64-unknown-linux-musl/release/tvm-upload")
CROSS_ENV = {"CC_aarch64_unknown_linux_musl": "aarch64-linux-gnu-gcc",
             "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER": "aarch64-linux-gnu-gcc"}


def tvm_config(work, name, src, s3, prefix, compress, extra_s3=None, schedule=None):
    c = {"vehicle_id": prefix, "state_dir": os.path.join(work, f"state-{name}"),
         "stability_seconds": 1, "sources": [{"name": "w", "path": src}],
         "s3": {"bucket": bench.BUCKET, "region": "us-east-1", "endpoint": s3.endpoint,
                "path_style": True, "multipart_threshold": f"{PART_MIB}MiB",
                "part_size": f"{PART_MIB}MiB", "concurrency": CONCURRENCY},
         "log": {"level": "warn"}}
    if compress:
        c["sources"][0]["compress"] = "zstd"
    c["s3"].update(extra_s3 or {})
    if schedule:
        c["schedule"] = schedule
    shutil.rmtree(c["state_dir"], ignore_errors=True)
    path = os.path.join(work, f"{name}.json")
    json.dump(c, open(path, "w"))
    return path


def run_tvm(bin_, work, name, src, s3, prefix, compress, runner=None, **kw):
    cfg = tvm_config(work, name, src, s3, prefix, compress, **kw)
    wall, cpu, rss = bench.timed([*(runner or []), bin_, "once", "--config", cfg], bench.base_env())
    return {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss, "wire_bytes": stored_bytes(s3, prefix)}


def run_peer(files, s3, prefix, work):
    script = os.path.join(work, "peer.sh")
    with open(script, "w") as f:
        f.write("set -eo pipefail\n")
        for p in files:
            f.write(f"zstd -3 -q -c '{p}' | /usr/bin/aws --endpoint-url {s3.endpoint} s3 cp - "
                    f"s3://{bench.BUCKET}/{prefix}/{os.path.basename(p)}.zst --only-show-errors\n")
    wall, cpu, rss = bench.timed(["bash", script], bench.base_env())
    return {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss, "wire_bytes": stored_bytes(s3, prefix)}


def run_s5cmd_pipe(files, s3, prefix, work, venv):
    """`zstd -3 -c FILE | s5cmd pipe s3://B/P/FILE.zst`, one file after another: s5cmd
    uploads its stdin in parts (concurrency and part size as tvm-upload's)."""
    script = os.path.join(work, "peer-s5cmd.sh")
    s5 = os.path.join(venv, "bin/s5cmd")
    with open(script, "w") as f:
        f.write("set -eo pipefail\n")
        for p in files:
            f.write(f"zstd -3 -q -c '{p}' | {s5} --endpoint-url {s3.endpoint} pipe "
                    f"--concurrency {CONCURRENCY} --part-size {PART_MIB} "
                    f"s3://{bench.BUCKET}/{prefix}/{os.path.basename(p)}.zst\n")
    wall, cpu, rss = bench.timed(["bash", script], bench.base_env())
    return {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss, "wire_bytes": stored_bytes(s3, prefix)}


def stored_bytes(s3, prefix):
    return sum(os.path.getsize(p) for p in s3.stored(prefix + "/").values())


def verify(s3, prefix, files, compressed):
    """Every object's count, and a sample decoded (zstd -d) against its file."""
    stored = s3.stored(prefix + "/")
    if len(stored) != len(files):
        raise SystemExit(f"verify {prefix}: {len(stored)} objects for {len(files)} files")
    by_name = {os.path.basename(k): p for k, p in stored.items()}
    for f in files[:: max(1, len(files) // 4)]:
        name = os.path.basename(f) + (".zst" if compressed else "")
        obj = by_name[name]
        data = (subprocess.run(["zstd", "-d", "-q", "-c", obj], check=True, capture_output=True).stdout
                if compressed else open(obj, "rb").read())
        if hashlib.sha256(data).digest() != hashlib.sha256(open(f, "rb").read()).digest():
            raise SystemExit(f"verify {prefix}: {name} does not decode to its file")


def encoder_choice(sample):
    """libzstd against ruzstd: ratio and MiB/s at level 3 (ruzstd: its only level),
    x86 and qemu-aarch64, and each one's size in a static aarch64 binary."""
    crate = os.path.join(ROOT, "bench/zstd-choice")
    target = os.path.join(ROOT, "target/zstd-choice")
    env = dict(os.environ, CARGO_TARGET_DIR=target, **CROSS_ENV)
    out = {}
    for feature in ("none", "zstd", "ruzstd"):
        flags = [] if feature == "none" else ["--features", feature]
        for triple in (None, "aarch64-unknown-linux-musl"):
            t = ["--target", triple] if triple else []
            subprocess.run(["cargo", "build", "--release", "--quiet", *flags, *t], cwd=crate, env=env,
                           check=True)
            bin_dir = os.path.join(target, triple or "", "release")
            # Each build overwrites the binary: take the figures before the next one.
            exe = os.path.join(bin_dir, "zstd-choice")
            row = out.setdefault(feature, {})
            if triple:
                row["aarch64_bytes"] = os.path.getsize(exe)
                if feature != "none":
                    r = subprocess.run(["qemu-aarch64-static", exe, sample, "3"], capture_output=True,
                                       text=True, check=True).stdout.split()
                    row["qemu_mib_s"] = float(r[1])
            elif feature != "none":
                r = subprocess.run([exe, sample, "3"], capture_output=True, text=True, check=True).stdout.split()
                row["ratio"], row["x86_mib_s"] = float(r[0]), float(r[1])
    return out


def aarch64_cpu(work, s3, files):
    """CPU per MiB of the static aarch64 binary under qemu-aarch64, plain and compressed."""
    subprocess.run(["bash", "cross/build.sh"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    src = os.path.join(work, "qemu-src")
    os.makedirs(src, exist_ok=True)
    for f in files:
        os.link(f, os.path.join(src, os.path.basename(f)))
    mib = sum(os.path.getsize(f) for f in files) / MIB
    out = {"mib": mib}
    for name, compress in (("plain", False), ("zstd", True)):
        r = run_tvm(AARCH64, work, f"qemu-{name}", src, s3, f"qemu-{name}", compress,
                    runner=["qemu-aarch64-static"])
        out[name] = {"cpu_s_per_mib": r["cpu_s"] / mib, "wall_s": r["wall_s"]}
        s3.clear(f"qemu-{name}/")
    return out


def one_big_file(bin_, work, s3, files):
    """Peak RSS of one file of the corpus's size (up to 1 GiB) compressed in 8 MiB parts
    at concurrency 2."""
    src = os.path.join(work, "big-src")
    os.makedirs(src)
    big = os.path.join(src, "one.log")
    with open(big, "wb") as out:
        for f in files:
            with open(f, "rb") as i:
                shutil.copyfileobj(i, out, 4 * MIB)
    old = time.time() - 3600
    os.utime(big, (old, old))
    r = run_tvm(bin_, work, "big", src, s3, "big", True, extra_s3={"concurrency": 2})
    r["mib"] = os.path.getsize(big) / MIB
    s3.clear("big/")
    os.remove(big)
    return r


def main():
    if "--report" in sys.argv:
        report(json.load(open(os.path.join(ROOT, "bench/compression.json"))))
        return
    bench.ensure_peers()
    tools = bench.tools_dir()
    # The binary as it ships (static, musl), the server storing into a tmpfs when it has
    # room: as bench.py measures (see its build_static and server_storage).
    bin_ = bench.build_static()
    work = tempfile.mkdtemp(prefix="tvm-zstd-bench-")
    s3 = bench.S3s(tools, work, root=bench.server_storage())
    results = {"corpus_mib": CORPUS_MIB, "cap_mib": CAP_MIB, "cap_bytes_per_second": CAP,
               "server_storage": "tmpfs" if s3.root.startswith("/dev/shm") else "disk"}
    try:
        src = os.path.join(work, "corpus")
        files = corpus.generate(src, CORPUS_MIB, seed=1)
        old = time.time() - 3600
        for f in files:
            os.utime(f, (old, old))
        total = sum(os.path.getsize(f) for f in files)
        results["corpus_bytes"] = total
        print(f"compression bench: corpus {total / MIB:.0f} MiB in {len(files)} files", flush=True)
        runs = {}
        venv = bench.bench_venv()
        for name, fn in (("tvm-upload", lambda: run_tvm(bin_, work, "plain", src, s3, "plain", False)),
                         ("tvm-upload zstd", lambda: run_tvm(bin_, work, "zstd", src, s3, "zstd", True)),
                         ("zstd -3 | s5cmd pipe", lambda: run_s5cmd_pipe(files, s3, "peer-s5", work, venv)),
                         ("zstd -3 | aws s3 cp", lambda: run_peer(files, s3, "peer", work))):
            runs[name] = fn()
            print(f"  {name:<20} {runs[name]}", flush=True)
        verify(s3, "plain", files, False)
        verify(s3, "zstd", files, True)
        verify(s3, "peer-s5", files, True)
        verify(s3, "peer", files, True)
        for p in ("plain", "zstd", "peer-s5", "peer"):
            s3.clear(p + "/")
        results["runs"] = runs
        if os.environ.get("COMPRESS_ONLY") == "compare":
            kept = json.load(open(os.path.join(ROOT, "bench/compression.json")))
            for k in ("capped", "capped_mib", "big", "qemu", "encoders"):
                results[k] = kept[k]
            results["date"] = time.strftime("%Y-%m-%d")
            results["versions"] = {"zstd": bench.version(["zstd", "--version"]).strip("* "),
                                   "aws": bench.version(["/usr/bin/aws", "--version"]),
                                   "s5cmd": bench.version([os.path.join(venv, "bin/s5cmd"), "version"])}
            return finish(results, s3, work)

        cap_files = files[: max(1, CAP_MIB * MIB // (64 * MIB))]
        cap_src = os.path.join(work, "cap-src")
        os.makedirs(cap_src)
        for f in cap_files:
            os.link(f, os.path.join(cap_src, os.path.basename(f)))
        window = {"windows": [{"start": "00:00", "end": "24:00", "max_bytes_per_second": CAP}]}
        capped = {}
        for name, compress in (("tvm-upload", False), ("tvm-upload zstd", True)):
            prefix = "cap-zstd" if compress else "cap-plain"
            capped[name] = run_tvm(bin_, work, prefix, cap_src, s3, prefix, compress, schedule=window)
            print(f"  capped {name:<13} {capped[name]}", flush=True)
            s3.clear(prefix + "/")
        results["capped"] = capped
        results["capped_mib"] = sum(os.path.getsize(f) for f in cap_files) / MIB

        results["big"] = one_big_file(bin_, work, s3, files)
        print(f"  one big file {results['big']}", flush=True)
        results["qemu"] = aarch64_cpu(work, s3, files[:2])
        print(f"  qemu-aarch64 {results['qemu']}", flush=True)
        results["encoders"] = encoder_choice(files[0])
        print(f"  encoders {results['encoders']}", flush=True)
        results["date"] = time.strftime("%Y-%m-%d")
        results["versions"] = {"zstd": bench.version(["zstd", "--version"]).strip("* "),
                               "aws": bench.version(["/usr/bin/aws", "--version"]),
                               "s5cmd": bench.version([os.path.join(venv, "bin/s5cmd"), "version"])}
    except BaseException:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(s3.root, ignore_errors=True)
        raise
    return finish(results, s3, work)


def finish(results, s3, work):
    s3.stop()
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(s3.root, ignore_errors=True)
    json.dump(results, open(os.path.join(ROOT, "bench/compression.json"), "w"), indent=1)
    report(results)


def report(r):
    runs, capped, big, q, enc = r["runs"], r["capped"], r["big"], r["qemu"], r["encoders"]
    plain, z = runs["tvm-upload"], runs["tvm-upload zstd"]
    # The best peer: the faster pipeline (s5cmd's, where it was run).
    peer = min((m for n, m in runs.items() if n.startswith("zstd -3")), key=lambda m: m["wall_s"])
    mib = r["corpus_bytes"] / MIB
    lines = [START, "## Compression", "",
             f"{r['date']}. A generated text-log corpus (`bench/corpus.py`, seed 1: syslog, rosout and "
             f"CSV lines, files of 64 MiB) of {mib:.0f} MiB, uploaded by the static musl build to s3s-fs on "
             f"loopback (storing into {r.get('server_storage', 'disk')}); "
             f"concurrency {CONCURRENCY}, {PART_MIB} MiB parts. The peers are the scripts a user "
             "would otherwise write, one file after another: `zstd -3 -c FILE | s5cmd pipe "
             "s3://B/P/FILE.zst` (s5cmd " + r['versions'].get('s5cmd', '') + ", same concurrency and part "
             "size) and `zstd -3 -c FILE | aws s3 cp - "
             f"s3://B/P/FILE.zst` ({r['versions']['zstd']}; {r['versions']['aws']}). Every compressed "
             "object of a sample is decoded and compared with its file. \"Against the peer\" is against "
             "the faster pipeline.", "",
             "| tool | wall | CPU | CPU per MiB | peak RSS | bytes on the wire | × uncompressed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in runs.items():
        lines.append(f"| {name.replace('|', chr(92) + '|')} | {m['wall_s']:.1f} s | {m['cpu_s']:.1f} s | "
                     f"{m['cpu_s'] * 1000 / mib:.1f} ms | {m['rss_kib'] / 1024:.1f} MiB | "
                     f"{m['wire_bytes'] / MIB:.1f} MiB | {m['wire_bytes'] / r['corpus_bytes']:.3f} |")
    lines += ["", "tvm-upload zstd's memory here is that of four files compressed at once: each uploader "
              "has its zstd compressor (about 3 MiB at level 3) and the decoder that checks each frame "
              "(about 2 MiB), and compressed parts (9 MiB buffers for 8 MiB parts) never outnumber the "
              "request permits (`s3.concurrency`)."]
    cp, cz = capped["tvm-upload"], capped["tvm-upload zstd"]
    lines += ["", f"Under a {r['cap_bytes_per_second'] // MIB} MiB/s cap (`max_bytes_per_second`), "
              f"the first {r['capped_mib']:.0f} MiB of the corpus: plain {cp['wall_s']:.1f} s, "
              f"compressed {cz['wall_s']:.1f} s ({cz['wall_s'] / cp['wall_s']:.2f}×). "
              f"One {big['mib']:.0f} MiB file compressed in 8 MiB parts at concurrency 2: peak RSS "
              f"{big['rss_kib'] / 1024:.1f} MiB, {big['wall_s']:.1f} s.", "",
              f"The static aarch64 binary under qemu-aarch64 (an emulator: for comparing, not a vehicle's "
              f"speed), {q['mib']:.0f} MiB: {q['plain']['cpu_s_per_mib'] * 1000:.0f} ms of CPU per MiB "
              f"plain, {q['zstd']['cpu_s_per_mib'] * 1000:.0f} ms compressed "
              f"(x86: {plain['cpu_s'] * 1000 / mib:.1f} and {z['cpu_s'] * 1000 / mib:.1f}).", "",
              "| target | measured | met |", "|---|---|---|"]
    wire = z["wire_bytes"] / plain["wire_bytes"]
    capr = cz["wall_s"] / cp["wall_s"]
    rss = big["rss_kib"] / 1024
    lines += [f"| bytes on the wire ≤ 0.2× uncompressed | {wire:.3f}× | {'yes' if wire <= 0.2 else 'no'} |",
              f"| wall time under a 4 MiB/s cap ≤ 0.3× uncompressed | {capr:.2f}× | "
              f"{'yes' if capr <= 0.3 else 'no'} |",
              f"| peak RSS, 1 GiB in 8 MiB parts at concurrency 2, ≤ 48 MiB | {rss:.1f} MiB "
              f"({big['mib']:.0f} MiB file) | {'yes' if rss <= 48 and big['mib'] >= 1024 else 'no'} |",
              f"| against the peer | wire {z['wire_bytes'] / peer['wire_bytes']:.2f}×, wall "
              f"{z['wall_s'] / peer['wall_s']:.2f}×, CPU {z['cpu_s'] / peer['cpu_s']:.2f}× | — |",
              "", "### The encoder", "",
              "`bench/zstd-choice` compresses the first corpus file in memory, built like the daemon "
              "(opt-level s, LTO, static aarch64 musl); best of three. ruzstd 0.9 encodes only its "
              "`Fastest` level (`Default` and above panic \"not implemented\"), so it runs at that.", "",
              "| encoder | ratio | x86 MiB/s | qemu-aarch64 MiB/s | added to the aarch64 binary |",
              "|---|---:|---:|---:|---:|"]
    base = enc["none"]["aarch64_bytes"]
    for name, label in (("zstd", "libzstd 1.5 (`zstd` crate), level 3"), ("ruzstd", "ruzstd 0.9, Fastest")):
        e = enc[name]
        lines.append(f"| {label} | {e['ratio']:.3f} | {e['x86_mib_s']:.0f} | {e['qemu_mib_s']:.0f} | "
                     f"{(e['aarch64_bytes'] - base) / 1024:.0f} KiB |")
    lines += ["", "libzstd: a better ratio at three times the speed, for about 250 KiB more; the "
              "static aarch64 daemon with it stays under its 4 MiB budget (`make size`).", "", END]
    bench.write_section(START, END, lines)


if __name__ == "__main__":
    sys.exit(main())
