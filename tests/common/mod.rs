//! The end-to-end harness: real S3 servers (s3s-fs, moto) started on free loopback ports
//! below 32768, a counting proxy of ours in front of them, an S3 client to check what
//! arrived, and the real `tvm-upload` binary run against them.
//!
//! The servers come from the per-machine cache that `scripts/test-tools.sh` fills
//! (`TVM_TOOLS_DIR`, default `~/.cache/tvm-upload-tools`); a missing one is installed
//! on first use.

#![allow(dead_code)]

pub mod proxy;
pub mod relay;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};

pub const ACCESS_KEY: &str = "AKIATESTKEY0000001";
pub const SECRET_KEY: &str = "tEsTsEcReT/kEy+0123456789abcdefGHIJ";
/// Sent with every request of the daemon under test, so the secret scan covers it.
pub const SESSION_TOKEN: &str = "FQoTeStSeSsIoNtOkEn//0123456789+abcdefXYZ=";
pub const BUCKET: &str = "t01logs";
pub const REGION: &str = "us-east-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Checks SigV4 of presigned URLs, x-amz-checksum-sha256 and Content-MD5.
    S3sFs,
    /// Checks multipart semantics (InvalidPart, EntityTooSmall).
    Moto,
    /// Garage, a third independent S3 implementation (its keys are `GK` + 24 hex
    /// digits: [`GARAGE_ACCESS_KEY`]).
    Garage,
}

/// Garage's access key id for the suite (the secret is [`SECRET_KEY`], imported).
pub const GARAGE_ACCESS_KEY: &str = "GK0123456789abcdef01234567";

impl Kind {
    /// The access key id this server knows.
    pub fn access_key(self) -> &'static str {
        match self {
            Kind::Garage => GARAGE_ACCESS_KEY,
            Kind::S3sFs | Kind::Moto => ACCESS_KEY,
        }
    }
}

pub fn tools_dir() -> PathBuf {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let dir = std::env::var_os("TVM_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/tvm-upload-tools")
        });
    let mut done = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    // Once per test process, even when the tools are there: the script checks their
    // versions against scripts/test-tools.lock (about a second) and reinstalls a
    // mismatch, so `cargo test` alone never runs against a stale cache.
    if !*done {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-tools.sh");
        let status = Command::new("bash")
            .arg(script)
            .env("TVM_TOOLS_DIR", &dir)
            .status()
            .expect("run test-tools.sh");
        assert!(status.success(), "scripts/test-tools.sh failed");
    }
    *done = true;
    dir
}

/// The binary under test: `TVM_UPLOAD_BIN` if set (the aarch64 build, say), else the
/// one cargo built; run through `TVM_UPLOAD_RUNNER` if set (`qemu-aarch64-static`).
/// The binary under test (`TVM_UPLOAD_BIN`, else the one cargo built).
pub fn tvm_binary() -> PathBuf {
    std::env::var_os("TVM_UPLOAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tvm-upload")))
}

pub fn tvm_command() -> Command {
    let bin = tvm_binary();
    let mut command = match std::env::var_os("TVM_UPLOAD_RUNNER").filter(|r| !r.is_empty()) {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command.envs(passthrough_env());
    command
}

/// Variables every process the harness starts gets, also after `env_clear()`:
/// - `AWS_EC2_METADATA_DISABLED=true`, so nothing under test ever reaches for the
///   link-local instance metadata address (tests talk to loopback only);
/// - coverage runs' (`make coverage`) profile location, so the binary writes its profile.
pub fn passthrough_env() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LLVM_PROFILE") || k == "CARGO_LLVM_COV")
        .collect();
    vars.push(("AWS_EC2_METADATA_DISABLED".into(), "true".into()));
    vars
}

/// A fresh temporary directory, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tvm-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("tempdir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// moto_server on `port`, with extra arguments (TLS certificate and key).
pub fn spawn_moto(port: u16, extra: &[&std::ffi::OsStr]) -> Child {
    Command::new(tools_dir().join("venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .envs(passthrough_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto")
}

/// A free TCP port on 127.0.0.1 below 32768 (the ephemeral range starts above).
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = 20_000 + (std::process::id() as u64 * 37) % 10_000;
    loop {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 12_000 + 20_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running S3 server, stopped on drop.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    _root: TempDir,
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        Server::start_on(kind, free_port())
    }

    /// Starts a server on a given port (one a test picked earlier, e.g. to have a
    /// client fail against it before it exists).
    pub fn start_on(kind: Kind, port: u16) -> Server {
        let tools = tools_dir();
        let root = TempDir::new("server");
        let child = match kind {
            Kind::S3sFs => Command::new(tools.join("bin/s3s-fs"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root.path())
                .envs(passthrough_env())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs"),
            Kind::Moto => spawn_moto(port, &[]),
            Kind::Garage => spawn_garage(port, root.path()),
        };
        wait_for_port(port, &format!("{kind:?}"));
        if kind == Kind::Garage {
            garage_setup(root.path());
            let server = Server {
                kind,
                port,
                child,
                _root: root,
            };
            return server;
        }
        let server = Server {
            kind,
            port,
            child,
            _root: root,
        };
        server.client().create_bucket();
        server
    }

    /// Runs `tests/common/cloudwatch.py` (boto3, from moto's venv) against this server.
    pub fn cloudwatch(&self, args: &[&str]) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/cloudwatch.py");
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .arg(self.endpoint())
            .args(args)
            .envs(passthrough_env())
            .output()
            .expect("run cloudwatch.py");
        assert!(
            out.status.success(),
            "cloudwatch.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("cloudwatch.py json")
    }

    /// The keys of the multipart uploads in progress (moto lists them; s3s-fs does not).
    pub fn multipart_uploads(&self) -> Vec<String> {
        serde_json::from_value(self.s3_py(&["uploads", BUCKET])).expect("s3.py uploads")
    }

    /// The object's CRC-32 checksum and its type, as boto3 reads them from the server
    /// (`{"crc32": .., "type": ..}`).
    pub fn object_checksum(&self, key: &str) -> serde_json::Value {
        self.s3_py(&["checksum", BUCKET, key])
    }

    /// PutObject of `text` as JSON with boto3, as a fleet's operator would.
    pub fn put_json_with_boto3(&self, key: &str, text: &str) {
        self.s3_py(&["put-json", BUCKET, key, text]);
    }

    /// tests/common/s3.py with these arguments and this server's credentials: its JSON.
    fn s3_py(&self, args: &[&str]) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/s3.py");
        let out = Command::new(tools_dir().join("venv/bin/python"))
            .arg(script)
            .arg(self.endpoint())
            .args(args)
            .args([self.kind.access_key(), SECRET_KEY])
            .envs(passthrough_env())
            .output()
            .expect("run s3.py");
        assert!(
            out.status.success(),
            "s3.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("s3.py json")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        let mut client = Client::new(&self.endpoint());
        client.creds = Credentials::new(self.kind.access_key(), SECRET_KEY);
        client
    }
}

/// `garage server` with one node on loopback, its data under `root`.
fn spawn_garage(port: u16, root: &Path) -> Child {
    let rpc = free_port();
    let config = format!(
        "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
         replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
         [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{port}\"\n\
         root_domain = \".s3.garage.localhost\"\n",
        meta = root.join("meta"),
        data = root.join("data"),
        secret = "00".repeat(31) + "01",
    );
    std::fs::write(root.join("garage.toml"), config).expect("garage.toml");
    Command::new(tools_dir().join("bin/garage"))
        .arg("-c")
        .arg(root.join("garage.toml"))
        .arg("server")
        .envs(passthrough_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start garage")
}

/// One garage admin command against the server configured under `root`.
fn garage_output(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(tools_dir().join("bin/garage"))
        .arg("-c")
        .arg(root.join("garage.toml"))
        .args(args)
        .envs(passthrough_env())
        .output()
        .expect("run garage")
}

/// One garage admin command that must succeed; its stdout.
fn garage(root: &Path, args: &[&str]) -> String {
    let out = garage_output(root, args);
    assert!(
        out.status.success(),
        "garage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new garage node's layout, the suite's key and its bucket.
fn garage_setup(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        let out = garage_output(root, &["node", "id", "-q"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout)
                .split('@')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        assert!(Instant::now() < deadline, "garage did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    garage(root, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
    garage(root, &["layout", "apply", "--version", "1"]);
    garage(
        root,
        &[
            "key",
            "import",
            "--yes",
            "-n",
            "suite",
            GARAGE_ACCESS_KEY,
            SECRET_KEY,
        ],
    );
    garage(root, &["bucket", "create", BUCKET]);
    garage(
        root,
        &[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            GARAGE_ACCESS_KEY,
        ],
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain S3 client for checking results (not the code under test).
pub struct Client {
    bucket: Bucket,
    creds: Credentials,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        Client::with_tls(endpoint, None)
    }

    /// A client that trusts the PEM certificate at `ca` (for a self-signed HTTPS server).
    pub fn with_tls(endpoint: &str, ca: Option<&Path>) -> Client {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("ca");
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let bucket = Bucket::new(
            endpoint.parse().expect("url"),
            UrlStyle::Path,
            BUCKET,
            REGION,
        )
        .expect("bucket");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls.build())
            .build()
            .into();
        Client {
            bucket,
            creds: Credentials::new(ACCESS_KEY, SECRET_KEY),
            agent,
        }
    }

    pub fn create_bucket(&self) {
        let action = rusty_s3::actions::CreateBucket::new(&self.bucket, &self.creds);
        let url = action.sign(Duration::from_secs(600));
        let resp = self
            .agent
            .put(url.as_str())
            .send_empty()
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
    }

    /// Every key in the bucket with its size.
    pub fn list(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            // s3s-fs answers `encoding-type=url` with raw keys while saying they are
            // encoded, and the parser then decodes `+` and `%20`: ask for raw keys.
            action.query_mut().remove("encoding-type");
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(Duration::from_secs(600));
            let mut resp = self.agent.get(url.as_str()).call().expect("list");
            let body = resp.body_mut().read_to_string().expect("list body");
            assert!(resp.status().is_success(), "list: {body}");
            let parsed =
                rusty_s3::actions::ListObjectsV2::parse_response(&body).expect("parse list");
            for o in parsed.contents {
                out.insert(o.key, o.size.unwrap_or(0));
            }
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let action = self.bucket.get_object(Some(&self.creds), key);
        let url = action.sign(Duration::from_secs(600));
        let mut resp = self.agent.get(url.as_str()).call().expect("get");
        assert!(resp.status().is_success(), "get {key}: {}", resp.status());
        let mut v = Vec::new();
        resp.body_mut()
            .with_config()
            .limit(u64::MAX)
            .reader()
            .read_to_end(&mut v)
            .expect("body");
        v
    }

    /// PUTs `body` at `key` (csv2kafka's tests put the objects it reads).
    pub fn put(&self, key: &str, body: &[u8]) {
        let action = self.bucket.put_object(Some(&self.creds), key);
        let url = action.sign(Duration::from_secs(600));
        let resp = self.agent.put(url.as_str()).send(body).expect("put");
        assert!(resp.status().is_success(), "put {key}: {}", resp.status());
    }

    /// The `x-amz-meta-*` headers of an object, or None if absent.
    pub fn metadata(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let headers = self.head(key)?;
        Some(
            headers
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix("x-amz-meta-").map(|m| (m.to_string(), v)))
                .collect(),
        )
    }

    /// Every header of a HEAD of the object (names lower-cased), or None if absent.
    pub fn head(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let action = self.bucket.head_object(Some(&self.creds), key);
        let url = action.sign(Duration::from_secs(600));
        let resp = self.agent.head(url.as_str()).call().expect("head");
        if resp.status().as_u16() == 404 {
            return None;
        }
        assert!(resp.status().is_success(), "head {key}: {}", resp.status());
        Some(
            resp.headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        )
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes, so a failing run can be reproduced.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Deterministic log-like text (a counter, a level, a few random fields per line): it
/// compresses about threefold, like a busy log with ids in it.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 100);
    let mut n = 0u64;
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        n += 1;
        let level = ["INFO", "WARN", "DEBUG"][(s % 3) as usize];
        out.extend_from_slice(
            format!(
                "{n} [{level}] node=/n{} temp={} id={:08x}\n",
                s % 13,
                s % 900,
                s >> 32
            )
            .as_bytes(),
        );
    }
    out.truncate(len);
    out
}

/// The bytes of an object as the file was: zstd-decoded for a `.zst` key.
pub fn decoded(key: &str, body: Vec<u8>) -> Vec<u8> {
    if key.ends_with(".zst") {
        zstd::decode_all(&body[..]).unwrap_or_else(|e| panic!("{key} does not decode: {e}"))
    } else {
        body
    }
}

/// Sets a file's mtime to `secs_ago` seconds in the past, so `once` sees it as stable.
pub fn age_file(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for mtime");
    f.set_modified(t).expect("set mtime");
}

pub fn write(path: &Path, content: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// Year, month, day of a day count since 1970-01-01 (civil-from-days, as the product
/// does; e2e keys check it against the product).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The UTC date of a file's mtime, as keys carry it.
pub fn mtime_date(path: &Path) -> String {
    let m = std::fs::metadata(path)
        .expect("stat")
        .modified()
        .expect("mtime");
    let secs = m.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A test setup: sources under a temp dir, a state dir, a config file.
pub struct Setup {
    pub dir: TempDir,
    pub config: PathBuf,
    pub state: PathBuf,
    /// The access key id the daemon is given ([`ACCESS_KEY`]; garage's differs).
    pub access_key: &'static str,
}

impl Setup {
    /// `extra_s3` and `extra_top` are JSON fragments (starting with a comma) merged in.
    pub fn new(endpoint: &str, sources: &[(&str, &str)], extra_s3: &str, extra_top: &str) -> Setup {
        let dir = TempDir::new("setup");
        let state = dir.path().join("state");
        let mut srcs = Vec::new();
        for (name, extra) in sources {
            let p = dir.path().join("logs").join(name);
            std::fs::create_dir_all(&p).expect("mkdir source");
            srcs.push(format!(
                r#"{{"name":"{name}","path":{:?}{extra}}}"#,
                p.to_str().expect("utf8")
            ));
        }
        let text = format!(
            r#"{{"vehicle_id":"v001","state_dir":{:?},"stability_seconds":2,
                "sources":[{}],
                "s3":{{"bucket":"{BUCKET}","region":"{REGION}","endpoint":"{endpoint}","path_style":true{extra_s3}}},
                "retry":{{"initial_seconds":0.2,"max_seconds":2}}{extra_top}}}"#,
            state.to_str().expect("utf8"),
            srcs.join(",")
        );
        let config = dir.path().join("config.json");
        std::fs::write(&config, text).expect("config");
        Setup {
            dir,
            config,
            state,
            access_key: ACCESS_KEY,
        }
    }

    pub fn source(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    pub fn command(&self, sub: &str, secret: &str) -> Command {
        let mut c = tvm_command();
        c.arg(sub).arg("--config").arg(&self.config);
        c.env_clear()
            .envs(passthrough_env())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN);
        c
    }

    /// Runs `once` to completion with the right secret; asserts no secret leaked.
    pub fn once(&self) -> Output {
        self.once_with(SECRET_KEY)
    }

    pub fn once_with(&self, secret: &str) -> Output {
        let out = self.command("once", secret).output().expect("run once");
        assert_no_secrets(&String::from_utf8_lossy(&out.stderr));
        assert_no_secrets(&String::from_utf8_lossy(&out.stdout));
        out
    }

    /// Starts `run` in the background, stderr to a file.
    pub fn spawn_run(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("run.log")).expect("log");
        self.command("run", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn run")
    }

    /// `status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self
            .command("status", SECRET_KEY)
            .arg("--json")
            .output()
            .expect("status");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)))
    }

    pub fn run_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    pub fn journal(&self) -> String {
        std::fs::read_to_string(self.state.join("journal.jsonl")).unwrap_or_default()
    }
}

impl Drop for Setup {
    /// Every `run` log of the suite is scanned for secrets before it is removed.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_secrets(&self.run_log());
        }
    }
}

/// Secrets must never reach a log: the secret key, the session token, or any presigned
/// signature.
pub fn assert_no_secrets(text: &str) {
    assert!(
        !text.contains(SECRET_KEY),
        "the secret key leaked into the output:\n{text}"
    );
    // Also URL-encoded, as it would appear in a presigned URL.
    assert!(
        !text.contains(SESSION_TOKEN) && !text.contains("FQoTeStSeSsIoNtOkEn%2F"),
        "the session token leaked into the output:\n{text}"
    );
    assert!(
        !text.contains("X-Amz-Signature="),
        "a presigned signature leaked:\n{text}"
    );
    // What the credential providers of tests/credentials.rs hand out: session tokens,
    // the container authorization token, the device's private key.
    for secret in ["tok-", "Bearer ", "PRIVATE KEY"] {
        assert!(
            !text.contains(secret),
            "{secret:?} leaked into the output:\n{text}"
        );
    }
}

/// Sends SIGTERM and waits: the daemon must exit 0 within `within`.
pub fn sigterm_and_wait(child: &mut Child, within: Duration) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            assert!(s.success(), "exit status after SIGTERM: {s}");
            return;
        }
        assert!(
            t.elapsed() < within,
            "did not stop within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `cond` until `deadline_secs`, checking every 50 ms.
pub fn wait_until(deadline_secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(deadline_secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The key the daemon gives `path` (vehicle `v001`, no prefix, UTC).
pub fn key_for(source: &str, rel: &str, path: &Path) -> String {
    format!("v001/{}/{source}/{rel}", mtime_date(path))
}

/// Asserts the bucket holds exactly `expected` (key to SHA-256 of the file), every
/// object byte-identical (a `.zst` one once decoded). Returns the bytes stored.
pub fn assert_bucket_is(client: &Client, expected: &BTreeMap<String, String>) -> u64 {
    let listed = client.list();
    let extra: Vec<_> = listed
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "bucket differs: {} unexpected {extra:?}; {} missing {missing:?}",
        extra.len(),
        missing.len()
    );
    let mut bytes = 0;
    for (key, sha) in expected {
        let body = client.get(key);
        bytes += body.len() as u64;
        assert_eq!(
            &sha256_hex(&decoded(key, body)),
            sha,
            "{key} is not byte-identical"
        );
    }
    bytes
}

/// Peak and current resident memory of a process, in KiB (`VmHWM`, `VmRSS`).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
