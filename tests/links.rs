//! Links and daily byte budgets, end to end (SPEC.md, "Links, byte budgets and
//! on-demand requests"), in network namespaces the tests create: the daemon runs in a
//! "vehicle" namespace with interfaces `wlan0` and `wwan0` (veth pairs), s3s-fs in a
//! "server" namespace reachable through either; the test switches the vehicle's default
//! route while uploads run and counts, on the server's side of each pair, the bytes
//! that came over it. Nothing leaves the test's own namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use common::proxy::unix_now;
use common::*;

const MIB: u64 = 1 << 20;
/// The server's address, on the server namespace's loopback.
const SERVER_IP: &str = "10.77.9.1";
const SERVER_PORT: u16 = 9000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `ip` with these words (none has a space).
fn ip(words: &str) {
    let args: Vec<&str> = words.split_whitespace().collect();
    let out = Command::new("ip")
        .args(&args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {words}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by `wlan0`↔`wl-s` (10.77.1.0/24) and `wwan0`↔`ww-s`
/// (10.77.2.0/24); the server's address is routed through whichever the vehicle's
/// default route names. Removed on drop.
struct Net {
    veh: String,
    srv: String,
}

impl Net {
    fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let net = Net {
            veh: format!("tvm-veh-{id}"),
            srv: format!("tvm-srv-{id}"),
        };
        let (veh, srv) = (&net.veh, &net.srv);
        ip(&format!("netns add {veh}"));
        ip(&format!("netns add {srv}"));
        for (dev, peer, subnet) in [("wlan0", "wl-s", 1), ("wwan0", "ww-s", 2)] {
            ip(&format!(
                "-n {veh} link add {dev} type veth peer name {peer} netns {srv}"
            ));
            ip(&format!("-n {veh} addr add 10.77.{subnet}.2/24 dev {dev}"));
            ip(&format!("-n {srv} addr add 10.77.{subnet}.1/24 dev {peer}"));
            ip(&format!("-n {veh} link set {dev} up"));
            ip(&format!("-n {srv} link set {peer} up"));
        }
        ip(&format!("-n {veh} link set lo up"));
        ip(&format!("-n {srv} link set lo up"));
        ip(&format!("-n {srv} addr add {SERVER_IP}/32 dev lo"));
        // A connection keeps its source address when the route moves to the other
        // pair: the server must take its packets from either (no reverse-path filter).
        let rp = "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done";
        let out = Command::new("ip")
            .args(["netns", "exec", &net.srv, "sh", "-c", rp])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        net.route_via("wlan0");
        net
    }

    /// Points the vehicle's default route at `dev` (`wlan0` or `wwan0`).
    fn route_via(&self, dev: &str) {
        let gw = if dev == "wlan0" {
            "10.77.1.1"
        } else {
            "10.77.2.1"
        };
        ip(&format!(
            "-n {} route replace default via {gw} dev {dev}",
            self.veh
        ));
    }

    /// Bytes the server's end of a pair received (`wl-s`, `ww-s`): what came over it.
    fn rx_bytes(&self, peer: &str) -> u64 {
        let out = Command::new("ip")
            .args(["-n", &self.srv, "-j", "-s", "link", "show", "dev", peer])
            .output()
            .expect("ip");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        v[0]["stats64"]["rx"]["bytes"].as_u64().expect("rx bytes")
    }

    /// `cmd` run in namespace `ns` (`ip netns exec` execs it: its pid is the child's).
    fn exec(&self, ns: &str, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(cmd.get_program());
        c.args(cmd.get_args()).env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.veh, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// s3s-fs in the server namespace, its bucket a directory under `root`.
struct S3Server {
    child: Child,
    root: TempDir,
}

impl S3Server {
    fn start(net: &Net) -> S3Server {
        let root = TempDir::new("netns-s3");
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("bucket dir");
        let mut cmd = Command::new(tools_dir().join("bin/s3s-fs"));
        cmd.args(["--host", SERVER_IP, "--port", &SERVER_PORT.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .envs(passthrough_env());
        let child = net
            .exec(&net.srv, &cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs");
        wait_until(20, "s3s-fs listening", || {
            let out = Command::new("ip")
                .args(["netns", "exec", &net.srv, "ss", "-Hltn"])
                .output()
                .expect("ss");
            String::from_utf8_lossy(&out.stdout).contains(&format!(":{SERVER_PORT}"))
        });
        S3Server { child, root }
    }

    /// The objects stored, `source/name` (the key's vehicle and date left out), with
    /// their bytes.
    fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        walk(&self.root.path().join(BUCKET), &mut out);
        let mut v: Vec<(String, Vec<u8>)> = out
            .into_iter()
            .filter_map(|p| {
                let rel = p.strip_prefix(self.root.path().join(BUCKET)).ok()?;
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.len() < 4 || parts.iter().any(|p| p.starts_with('.')) {
                    return None;
                }
                Some((parts[2..].join("/"), std::fs::read(&p).ok()?))
            })
            .collect();
        v.sort();
        v
    }

    fn names(&self) -> Vec<String> {
        self.objects().into_iter().map(|(n, _)| n).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn endpoint() -> String {
    format!("http://{SERVER_IP}:{SERVER_PORT}")
}

/// The daemon in the vehicle namespace; killed if the test fails before it stops it
/// (its namespaces go with the test).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(net: &Net, setup: &Setup, log: &str, extra_env: &[(&str, String)]) -> Daemon {
    let mut inner = setup.command("run", SECRET_KEY);
    for (k, v) in extra_env {
        inner.env(k, v);
    }
    let log = std::fs::File::create(setup.dir.path().join(log)).expect("log");
    let child = net
        .exec(&net.veh, &inner)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the daemon in the vehicle namespace");
    Daemon(child)
}

fn usage<'a>(s: &'a serde_json::Value, link: &str) -> &'a serde_json::Value {
    s["link"]["links"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == link))
        .unwrap_or_else(|| panic!("no link {link} in {s}"))
}

/// Files `name-00` … of `size` bytes each, oldest first, minutes apart.
fn make(setup: &Setup, src: &str, name: &str, n: usize, size: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = setup.source(src).join(format!("{name}-{i:02}"));
            write(&p, &bytes(size, 2 * i as u64 + 1));
            age_file(&p, 3600 - 60 * i as u64);
            p
        })
        .collect()
}

/// Waits until the count stops changing for `quiet` seconds; returns it.
fn settled(what: &str, quiet: u64, mut count: impl FnMut() -> usize) -> usize {
    let mut last = (count(), std::time::Instant::now());
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let n = count();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(quiet) {
            return n;
        }
        assert!(std::time::Instant::now() < deadline, "{what} never settled");
    }
}

/// The budget holds on the wire: over `cellular` (3 MiB a day, min_priority 1) three
/// 1 MiB files go and no more, counted at the server; the budget is kept across a
/// SIGKILL; a request still goes (its bytes counted past the budget); a priority-0
/// source never uses cellular; back on depot Wi-Fi everything goes.
#[test]
fn a_daily_budget_holds_on_the_wire_across_a_kill_and_depot_wifi_takes_the_rest() {
    let net = Net::new();
    let server = S3Server::start(&net);
    let links = r#","links":[{"name":"depot","interfaces":["wlan*","eth0"]},
        {"name":"cellular","interfaces":["wwan*"],"daily_bytes":"3MiB","min_priority":1}]"#;
    let setup = Setup::new(
        &endpoint(),
        &[("logs", r#","priority":1"#), ("video", "")],
        r#","concurrency":1"#,
        links,
    );
    let logs = make(&setup, "logs", "log", 10, MIB as usize);
    make(&setup, "video", "cam", 1, MIB as usize);
    net.route_via("wwan0");
    let mut daemon = spawn_daemon(&net, &setup, "run.log", &[]);
    let sent = settled("uploads over cellular", 4, || server.names().len());
    assert_eq!(sent, 3, "3 MiB a day: {:?}", server.names());
    assert!(server.names().iter().all(|n| n.starts_with("logs/")));
    let over_cellular = net.rx_bytes("ww-s");
    assert!(
        (3 * MIB..3 * MIB + 3 * MIB / 10).contains(&over_cellular),
        "{over_cellular} bytes came over wwan0"
    );
    let s = setup.status_json();
    assert_eq!(s["link"]["current"], "cellular", "{s}");
    assert_eq!(s["link"]["interface"], "wwan0", "{s}");
    assert_eq!(usage(&s, "cellular")["used_today"], 3 * MIB, "{s}");
    assert_eq!(usage(&s, "cellular")["left_today"], 0, "{s}");
    let reasons: Vec<&str> = s["waiting"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x["reason"].as_str()).collect())
        .unwrap_or_default();
    assert!(reasons.contains(&"link budget spent"), "{s}");

    // Power cut: the ledger keeps the day's bytes.
    daemon.0.kill().expect("SIGKILL");
    daemon.0.wait().expect("wait");
    let mut daemon = spawn_daemon(&net, &setup, "run2.log", &[]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(server.names().len(), 3, "nothing more after the restart");
    assert!(net.rx_bytes("ww-s") < over_cellular + 64 * 1024);

    // A request goes over a spent link; its bytes count.
    let mtime = |p: &Path| {
        let t = std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime");
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("epoch")
            .as_secs() as i64
    };
    let at = mtime(&logs[7]);
    let since = format!("-{}s", unix_now() - at + 1);
    let until = format!("-{}s", (unix_now() - at - 1).max(0));
    let out = setup
        .command("request", SECRET_KEY)
        .args(["--since", &since, "--until", &until, "--source", "logs"])
        .output()
        .expect("request");
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(30, "the requested file", || {
        server.names().contains(&"logs/log-07".to_string())
    });
    assert_eq!(server.names().len(), 4);
    wait_until(10, "the status to count it", || {
        usage(&setup.status_json(), "cellular")["used_today"] == 4 * MIB
    });

    // Depot Wi-Fi: the rest, video included.
    let before = net.rx_bytes("wl-s");
    net.route_via("wlan0");
    wait_until(60, "every file over depot", || server.names().len() == 11);
    assert!(net.rx_bytes("wl-s") - before >= 7 * MIB);
    let s = setup.status_json();
    assert_eq!(s["link"]["current"], "depot", "{s}");
    sigterm_and_wait(&mut daemon.0, Duration::from_secs(10));
    for (name, body) in server.objects() {
        let src = setup.source(name.split('/').next().unwrap_or(""));
        let path = src.join(name.split('/').nth(1).unwrap_or(""));
        assert_eq!(body, std::fs::read(&path).expect("source file"), "{name}");
    }
    let log = std::fs::read_to_string(setup.dir.path().join("run.log")).unwrap_or_default();
    assert!(
        log.contains("links: uploading over cellular (wwan0)"),
        "{log}"
    );
    assert!(log.contains("daily budget of cellular is spent"), "{log}");
}

/// A multipart upload of a source that may use only depot Wi-Fi pauses when the route
/// moves to cellular (at a part boundary, its stored parts kept) and resumes when the
/// route comes back: no part is sent twice (the server received the file's bytes once).
#[test]
fn a_multipart_upload_pauses_off_its_link_and_resumes_without_resending_a_part() {
    let net = Net::new();
    let server = S3Server::start(&net);
    let links = r#","links":[{"name":"depot","interfaces":["wlan*"]},
        {"name":"cellular","interfaces":["wwan*"]}]"#;
    let s3 = r#","concurrency":1,"multipart_threshold":"5MiB","part_size":"5MiB""#;
    let setup = Setup::new(&endpoint(), &[("bags", r#","links":["depot"]"#)], s3, links);
    let file = make(&setup, "bags", "drive.mcap", 1, 20 * MIB as usize).remove(0);
    // 2 MB/s on Wi-Fi, so the switch lands mid-upload.
    let tc = |dev: &str| {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &net.veh, "tc", "qdisc", "replace", "dev", dev,
            ])
            .args([
                "root", "tbf", "rate", "16mbit", "burst", "64kb", "latency", "200ms",
            ])
            .output()
            .expect("tc");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tc("wlan0");
    tc("wwan0");
    let mut daemon = spawn_daemon(&net, &setup, "run.log", &[]);
    wait_until(60, "a first part stored", || {
        setup.journal().contains(r#""t":"part""#)
    });
    net.route_via("wwan0");
    wait_until(30, "the pause", || {
        setup.run_log().contains("the link now may not carry it")
    });
    let parked = net.rx_bytes("ww-s");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        net.rx_bytes("ww-s") - parked < 64 * 1024,
        "nothing more over cellular"
    );
    let s = setup.status_json();
    assert_eq!(s["link"]["current"], "cellular", "{s}");
    assert_eq!(
        s["incomplete_multipart"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    net.route_via("wlan0");
    wait_until(90, "the upload completed", || !server.names().is_empty());
    sigterm_and_wait(&mut daemon.0, Duration::from_secs(10));
    let total = net.rx_bytes("wl-s") + net.rx_bytes("ww-s");
    assert!(
        total < 20 * MIB + 2 * MIB,
        "{total} bytes received for a 20 MiB file: a part went twice"
    );
    assert_eq!(server.objects()[0].1, std::fs::read(&file).expect("file"));
    let log = setup.run_log();
    assert!(log.contains("resuming upload"), "{log}");
}

/// The budget starts again at local midnight (`schedule.utc_offset`), the clock
/// injected just before it: one 700 KiB file of three fits a 1 MiB day; after midnight
/// one more does.
#[test]
fn the_budget_starts_again_at_local_midnight() {
    let net = Net::new();
    let server = S3Server::start(&net);
    let top = r#","links":[{"name":"cellular","interfaces":["wwan*"],"daily_bytes":"1MiB"}],
        "schedule":{"utc_offset":"+02:00","windows":[{"start":"00:00","end":"24:00"}]}"#;
    let setup = Setup::new(&endpoint(), &[("logs", "")], r#","concurrency":1"#, top);
    make(&setup, "logs", "log", 3, 700 * 1024);
    net.route_via("wwan0");
    // Local 23:59:45 at +02:00 today: 21:59:45 UTC.
    let day = unix_now().div_euclid(86_400) * 86_400;
    let offset = (day + 22 * 3600 - 15 - unix_now()).to_string();
    let knob = [("TVM_UPLOAD_TEST_CLOCK_OFFSET_SECONDS", offset)];
    let mut daemon = spawn_daemon(&net, &setup, "run.log", &knob);
    wait_until(20, "a first file", || server.names().len() == 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.names().len(), 1, "1 MiB holds one 700 KiB file");
    wait_until(30, "a second file after midnight", || {
        server.names().len() == 2
    });
    let n = settled("after midnight", 4, || server.names().len());
    assert_eq!(n, 2, "one more fits the new day");
    sigterm_and_wait(&mut daemon.0, Duration::from_secs(10));
    let log = setup.run_log();
    assert!(
        log.contains("links: a new day: budgets start again"),
        "{log}"
    );
}
