"""csv2kafka's benchmark (part of `make bench`; `python3 bench/csv2kafka_bench.py` alone).

Rows of about 200 bytes, objects of 100 MiB and 1 GiB in s3s-fs, one tansu broker
(restarted between runs, it keeps messages in memory), checkpoints in moto. Side by
side in one run with the pipeline a user would otherwise write:
`aws s3 cp s3://B/K - | python3 bench/produce.py` (confluent-kafka's idempotent
producer, one message a line, no CSV parsing, no checkpoints, not exactly once).
Writes bench/csv2kafka.json and the csv2kafka section of docs/BENCHMARKS.md.

C2K_BENCH_MIB=100,1024 sets the object sizes; `--report` rewrites the section from
bench/csv2kafka.json without measuring.
"""
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (the shared helpers: s3s-fs, timing, environment)

ROOT = bench.ROOT
SIZES = [int(x) for x in os.environ.get("C2K_BENCH_MIB", "100,1024").split(",")]
VERIFY = "csv2kafka, checkpoint.verify on"
START = "<!-- csv2kafka bench start -->"
END = "<!-- csv2kafka bench end -->"


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_csv(path, mib, seed):
    """Telemetry-like rows of ~200 bytes; returns the row count."""
    rng = random.Random(seed)
    target = mib * 2**20
    rows = 0
    with open(path, "w") as f:
        f.write("ts,vehicle,lat,lon,speed_kph,heading,odometer_km,battery_pct,mode,note\n")
        size = 0
        chunk = []
        while size < target:
            rows += 1
            line = (f"2026-11-22T08:{rows // 60 % 60:02d}:{rows % 60:02d}.{rows % 1000:03d}Z,"
                    f"v{rows % 97:03d},{31.2 + rng.random():.6f},{121.4 + rng.random():.6f},"
                    f"{rng.random() * 120:.2f},{rng.random() * 360:.1f},{rows * 0.013:.3f},"
                    f"{rng.random() * 100:.1f},{'AUTO' if rows % 3 else 'MANUAL'},"
                    f"\"lane keep, segment {rows % 1000}, ok\"\n")
            chunk.append(line)
            size += len(line)
            if len(chunk) == 10000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))
    return rows


class Broker:
    def __init__(self, tools):
        self.port = bench.free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [os.path.join(tools, "bin/tansu"), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        subprocess.run([os.path.join(tools, "bin/tansu"), "topic", "create", "--broker", url,
                        "--partitions", "3", "telemetry"], capture_output=True, check=False)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_c2k(c2k, tools, s3, moto_port, key, work, verify=False):
    broker = Broker(tools)
    try:
        cfg = os.path.join(work, "c2k.json")
        json.dump({
            "kafka": {"bootstrap_servers": broker.bootstrap, "topic": "telemetry"},
            "s3": {"region": "us-east-1", "endpoint": s3.endpoint, "path_style": True},
            "checkpoint": {"endpoint": f"http://127.0.0.1:{moto_port}",
                           "table": f"bench-{time.time_ns()}", "verify": verify},
        }, open(cfg, "w"))
        env = bench.base_env()
        subprocess.run([c2k, "create-table", "--config", cfg], env=env, check=True,
                       capture_output=True)
        r = subprocess.run(["/usr/bin/time", "-v", c2k, "run", "--config", cfg,
                            f"s3://{bench.BUCKET}/{key}"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"csv2kafka failed:\n{r.stderr[-3000:]}")
        wall, cpu, rss = bench.parse_time(r.stderr)
        lat = re.search(r"p50 ([\d.]+) ms, p95 ([\d.]+) ms, p99 ([\d.]+) ms", r.stderr)
        rows = int(re.search(r"COMPLETED: (\d+) rows", r.stderr).group(1))
        back = re.search(r"read back from Kafka in ([\d.]+)s", r.stderr)
        return {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss, "rows": rows,
                "read_back_s": float(back.group(1)) if back else None,
                "latency_ms": [float(x) for x in lat.groups()] if lat else None}
    finally:
        broker.stop()


def run_peer(tools, s3, key):
    broker = Broker(tools)
    try:
        env = bench.base_env()
        py = os.path.join(tools, "venv/bin/python")
        pipeline = (f"/usr/bin/aws --endpoint-url {s3.endpoint} s3 cp s3://{bench.BUCKET}/{key} - "
                    f"| {py} {os.path.join(ROOT, 'bench/produce.py')} {broker.bootstrap} telemetry")
        r = subprocess.run(["/usr/bin/time", "-v", "bash", "-o", "pipefail", "-c", pipeline],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"aws | produce.py failed:\n{r.stderr[-3000:]}")
        wall, cpu, rss = bench.parse_time(r.stderr)
        lines = int(r.stderr.strip().splitlines()[0]) if r.stderr.strip()[:1].isdigit() else None
        return {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss, "rows": lines}
    finally:
        broker.stop()


def report(results):
    lines = [START, "## csv2kafka", "",
             "Rows of ~200 bytes streamed from s3s-fs into one tansu broker (in memory, "
             "restarted for each run), checkpoints in moto; release build. The peer is "
             "`aws s3 cp s3://B/K - | python3 bench/produce.py` (confluent-kafka, idempotent, "
             "a line a message: no CSV parsing, no checkpoints, not exactly once). "
             "`checkpoint.verify on`: the same job with the verification pass.", "",
             "| object | tool | rows | wall | rows/s | CPU | peak RSS | send→ack p50 / p95 / p99 |",
             "|---|---|---|---|---|---|---|---|"]
    for size, r in results.items():
        for tool in ("csv2kafka", VERIFY, "aws | produce.py"):
            if tool not in r:
                continue
            m = r[tool]
            rate = (m["rows"] or r["rows"]) / m["wall_s"]
            lat = (" / ".join(f"{x:.1f} ms" for x in m["latency_ms"])
                   if m.get("latency_ms") else "—")
            label = tool.replace("|", "\\|")
            lines.append(f"| {size} MiB | {label} | {m['rows'] or r['rows']:,} | {m['wall_s']:.1f} s | "
                         f"{rate:,.0f} | {m['cpu_s']:.1f} s | {m['rss_kib'] / 1024:.1f} MiB | {lat} |")
    big = results[max(results, key=int)]
    c, p = big["csv2kafka"], big["aws | produce.py"]
    rate = c["rows"] / c["wall_s"]
    peer = (p["rows"] or big["rows"]) / p["wall_s"]
    rss = [r["csv2kafka"]["rss_kib"] / 1024 for r in results.values()]
    checked = big.get(VERIFY)
    if checked:
        cost = checked["wall_s"] / c["wall_s"] - 1
        lines += ["", f"Reading every row back before COMPLETED (`checkpoint.verify`) took "
                  f"{checked['read_back_s'] or 0:.1f} s for {checked['rows']:,} rows: "
                  f"{cost * 100:+.0f}% of the wall time of the same job without it "
                  f"({'under' if cost < 0.10 else 'over'} the 10% a default may cost; "
                  f"the default is off)."]
    lines += ["", "| target | measured | met |", "|---|---|---|",
              f"| ≥ 100,000 rows/s | {rate:,.0f} rows/s | {'yes' if rate >= 100_000 else 'no'} |",
              f"| ≥ 1.0× the peer's rows/s | {rate / peer:.2f}× | {'yes' if rate >= peer else 'no'} |",
              f"| peak RSS ≤ 64 MiB, the same at every size | "
              f"{', '.join(f'{x:.1f} MiB' for x in rss)} | {'yes' if max(rss) <= 64 else 'no'} |",
              "", END]
    bench.write_section(START, END, lines)


def main():
    if "--report" in sys.argv:
        report(json.load(open(os.path.join(ROOT, "bench/csv2kafka.json"))))
        return
    tools = bench.tools_dir()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "csv2kafka",
                    "--bin", "csv2kafka"], cwd=ROOT, check=True)
    c2k = os.path.join(ROOT, "target/release/csv2kafka")
    work = tempfile.mkdtemp(prefix="c2k-bench-")
    s3 = bench.S3s(tools, work)
    moto_port = bench.free_port()
    moto = subprocess.Popen([os.path.join(tools, "venv/bin/moto_server"), "-H", "127.0.0.1",
                             "-p", str(moto_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=bench.base_env())
    wait_port(moto_port)
    results = {}
    try:
        for mib in SIZES:
            key = f"telemetry-{mib}.csv"
            src = os.path.join(work, key)
            rows = make_csv(src, mib, seed=mib)
            subprocess.run(["/usr/bin/aws", "--endpoint-url", s3.endpoint, "s3", "cp", src,
                            f"s3://{bench.BUCKET}/{key}", "--quiet"], env=bench.base_env(),
                           check=True)
            os.remove(src)
            print(f"csv2kafka bench: {mib} MiB, {rows:,} rows", flush=True)
            c = run_c2k(c2k, tools, s3, moto_port, key, work)
            print(f"  csv2kafka        {c}", flush=True)
            checked = run_c2k(c2k, tools, s3, moto_port, key, work, verify=True)
            print(f"  csv2kafka, verified {checked}", flush=True)
            p = run_peer(tools, s3, key)
            print(f"  aws | produce.py {p}", flush=True)
            results[mib] = {"rows": rows, "csv2kafka": c, VERIFY: checked,
                            "aws | produce.py": p}
    finally:
        moto.kill()
        s3.stop()
        subprocess.run(["rm", "-rf", work])
    json.dump(results, open(os.path.join(ROOT, "bench/csv2kafka.json"), "w"), indent=1)
    report(results)


if __name__ == "__main__":
    sys.exit(main())
