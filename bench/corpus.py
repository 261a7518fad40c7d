#!/usr/bin/env python3
"""A realistic vehicle text-log corpus, the same bytes for the same seed.

Three kinds of file, as a vehicle writes them: syslog (`messages`), ROS rosout logs and
CSV telemetry. Lines come from templates with counters, timestamps that advance, a few
hundred hostnames/nodes/topics and slowly varying sensor values at sensor precision, so
they compress the way real logs do (neither random noise nor one line repeated).

    python3 bench/corpus.py DIR TOTAL_MIB [SEED]   # files of 64 MiB at most under DIR
"""
import os
import random
import sys

MIB = 1024 * 1024

DAEMONS = ["kernel", "systemd", "NetworkManager", "sshd", "chronyd", "dhclient", "can0d",
           "gpsd", "modem-manager", "tvm-upload", "rsyslogd", "dbus-daemon"]
SYSLOG = [
    "{d}[{pid}]: Started Session {n} of user ros.",
    "{d}[{pid}]: wlan0: link quality {q}/70 signal -{s} dBm",
    "{d}[{pid}]: CAN bus can0: {n} frames, {e} errors, load {q}%",
    "{d}[{pid}]: gps fix mode 3 sats {e} hdop 0.{q}",
    "{d}[{pid}]: Accepted publickey for ops from 10.{a}.{b}.{c} port {port} ssh2",
    "{d}[{pid}]: usb 1-1.{e}: new high-speed USB device number {n} using xhci_hcd",
    "{d}[{pid}]: temperature zone{e} {t} mC, fan {q}%",
    "{d}[{pid}]: modem: registered on cell {cell} rsrp -{s} dBm",
]
NODES = ["/planning/planner", "/perception/lidar_front", "/perception/camera_left",
         "/control/mpc", "/localization/ekf", "/sensing/imu", "/system/monitor",
         "/vehicle/can_bridge", "/map/loader", "/diagnostics/aggregator"]
ROSOUT = [
    "[INFO] [{ts}] [{node}]: published {n} msgs on {topic} ({hz} Hz)",
    "[WARN] [{ts}] [{node}]: late message on {topic}: {e}.{q} ms behind",
    "[INFO] [{ts}] [{node}]: pose x={x:.3f} y={y:.3f} yaw={yaw:.4f} cov=0.0{e}",
    "[DEBUG] [{ts}] [{node}]: trajectory with {e} points, horizon 8.0 s",
    "[ERROR] [{ts}] [{node}]: timeout waiting for {topic} ({e} retries)",
    "[INFO] [{ts}] [{node}]: cpu {cpu}% mem {mem} KiB threads 24",
]
TOPICS = ["/points_raw", "/image_raw", "/tf", "/odom", "/imu/data", "/can/frames",
          "/cmd_vel", "/diagnostics", "/gnss/fix", "/trajectory"]
CSV_HEADER = "timestamp_ms,speed_kph,steer_deg,accel_mps2,lat,lon,battery_v,motor_temp_c,mode\n"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def syslog_lines(rng, t):
    host = f"tvm-{rng.randrange(100):02d}"
    n = 0
    while True:
        t += rng.random() * 0.2
        n += 1
        day, rest = divmod(int(t), 86400)
        stamp = f"{MONTHS[(day // 30) % 12]} {day % 28 + 1:2d} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        d = rng.choice(DAEMONS)
        body = rng.choice(SYSLOG).format(
            d=d, pid=1000 + DAEMONS.index(d) * 37, n=n, q=rng.randrange(100), s=rng.randrange(40, 110),
            e=rng.randrange(12), a=rng.randrange(4), b=rng.randrange(8), c=rng.randrange(250),
            port=rng.randrange(40000, 60000), t=rng.randrange(38000, 72000),
            cell=f"{rng.randrange(16):x}{rng.randrange(4096):03x}")
        yield f"{stamp} {host} {body}\n"


def rosout_lines(rng, t):
    n, x, y, yaw, cpu = 0, 0.0, 0.0, 0.0, 30
    while True:
        t += rng.random() * 0.01
        n += 1
        x += rng.random() * 0.5
        y += rng.random() * 0.1 - 0.05
        yaw = (yaw + rng.random() * 0.01 - 0.005) % 6.2832
        cpu = min(99, max(1, cpu + rng.randrange(-1, 2)))
        topic = rng.choice(TOPICS)
        yield rng.choice(ROSOUT).format(
            ts=f"{t:.6f}", node=rng.choice(NODES), topic=topic, n=n, hz=10 * (1 + TOPICS.index(topic) % 3),
            q=rng.randrange(10), e=rng.randrange(10), x=x, y=y, yaw=yaw, cpu=cpu,
            mem=181000 + cpu * 64) + "\n"


def csv_lines(rng, t):
    yield CSV_HEADER
    ms = int(t * 1000)
    speed, steer, accel, lat, lon, volt, temp = 30.0, 0.0, 0.0, 39.9042, 116.4074, 52.0, 40.0
    while True:
        ms += 20
        speed = min(120.0, max(0.0, speed + rng.random() - 0.5))
        steer = max(-35.0, min(35.0, steer + rng.random() * 0.4 - 0.2))
        lat += rng.random() * 2e-6
        lon += rng.random() * 2e-6
        volt -= rng.random() * 1e-4
        temp += rng.random() * 0.02 - 0.01
        accel = max(-3.0, min(3.0, accel + rng.random() * 0.04 - 0.02))
        yield (f"{ms},{speed:.2f},{steer:.2f},{accel:.2f},{lat:.6f},{lon:.6f},"
               f"{volt:.2f},{temp:.1f},{'auto' if speed > 5 else 'manual'}\n")


def write_file(path, lines, size):
    out, done = [], 0
    with open(path, "w") as f:
        for line in lines:
            out.append(line)
            done += len(line)
            if done >= size:
                break
            if len(out) >= 4096:
                f.write("".join(out))
                out = []
        f.write("".join(out))


def generate(directory, total_mib, seed=1, file_mib=64):
    """Writes files of at most file_mib under directory, total_mib in all, in turn a
    syslog, a rosout and a CSV file. Returns their paths."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    kinds = [("messages", syslog_lines, "log"), ("rosout", rosout_lines, "log"),
             ("telemetry", csv_lines, "csv")]
    paths, left, i = [], total_mib * MIB, 0
    t0 = 1_760_000_000.0
    while left > 0:
        name, gen, ext = kinds[i % len(kinds)]
        size = min(left, file_mib * MIB)
        path = os.path.join(directory, f"{name}-{i:03d}.{ext}")
        write_file(path, gen(rng, t0 + i * 3600), size)
        paths.append(path)
        left -= size
        i += 1
    return paths


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    for p in generate(sys.argv[1], int(sys.argv[2]), seed):
        print(p)
