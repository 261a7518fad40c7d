//! The credentials chain against local providers written from AWS's documentation
//! (tests/common/creds_server.py): the container endpoint with a rotating token file,
//! IMDSv2, the AWS IoT credentials provider over mutual TLS (a test CA made by openssl),
//! and a profile's `credential_process`. Their credentials expire after seconds; every
//! request the proxy sees must carry a session token valid when it was signed.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{Proxy, Request};
use common::{
    ACCESS_KEY, Kind, SECRET_KEY, Server, Setup, age_file, assert_no_secrets, free_port,
    passthrough_env, sigterm_and_wait, stderr, tools_dir, tvm_command, wait_until, write,
};

/// A credentials provider on loopback; killed on drop.
struct Provider {
    child: Child,
    port: u16,
    dir: PathBuf,
    lifetime: u64,
    tls: Option<[PathBuf; 3]>,
}

impl Provider {
    fn start(dir: &Path, lifetime: u64, tls: Option<[PathBuf; 3]>) -> Provider {
        Provider::start_on(free_port(), dir, lifetime, tls)
    }

    fn start_on(port: u16, dir: &Path, lifetime: u64, tls: Option<[PathBuf; 3]>) -> Provider {
        std::fs::create_dir_all(dir).expect("provider dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/creds_server.py");
        let mut c = Command::new(tools_dir().join("venv/bin/python"));
        c.arg(script)
            .arg(port.to_string())
            .arg(dir)
            .args(["--lifetime", &lifetime.to_string()])
            .env("CREDS_ACCESS_KEY", ACCESS_KEY)
            .env("CREDS_SECRET_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(files) = &tls {
            c.arg("--tls").args(files);
        }
        let child = c.spawn().expect("creds_server.py");
        common::wait_for_port(port, "creds_server.py");
        Provider {
            child,
            port,
            dir: dir.to_path_buf(),
            lifetime,
            tls,
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = Provider::start_on(self.port, &self.dir, self.lifetime, self.tls.clone());
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// How many credentials it handed out.
    fn served(&self) -> usize {
        std::fs::read_to_string(self.dir.join("served"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tvm-upload command with no keys in its environment: the chain must find them.
fn command(setup: &Setup, sub: &str, env: &[(&str, String)]) -> Command {
    let mut c = tvm_command();
    c.arg(sub).arg("--config").arg(&setup.config);
    c.env_clear()
        .envs(passthrough_env())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", setup.dir.path());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn spawn_run(setup: &Setup, env: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(setup.dir.path().join("run.log")).expect("log");
    command(setup, "run", env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn run")
}

/// Every request carries a provider's token that had not expired when it was signed;
/// returns the distinct tokens seen.
fn assert_signed_with_valid_tokens(requests: &[Request]) -> BTreeSet<String> {
    let mut tokens = BTreeSet::new();
    for r in requests {
        let (Some(token), Some(signed)) = (r.session_token(), r.amz_date()) else {
            panic!("{} {} carries no session token", r.method, r.target);
        };
        let expiry: i64 = token
            .rsplit('-')
            .next()
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("{token:?} is not a provider's token"));
        assert!(
            signed < expiry,
            "{} {} signed at {signed} with a token that expired at {expiry}",
            r.method,
            r.target
        );
        tokens.insert(token);
    }
    tokens
}

fn uploaded(s3: &Server) -> usize {
    s3.client().list().len()
}

/// A long run on the container endpoint (FULL_URI on loopback, the token in a file that
/// is rotated half-way): S3 and CloudWatch requests all signed with tokens valid at the
/// time, refreshed ahead of expiry without a pause. `TVM_CREDS_TEST_SECONDS` sets the
/// length (default 3 minutes with 10-second credentials).
#[test]
fn a_long_run_signs_every_request_with_a_token_valid_at_the_time() {
    let s3 = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(s3.port);
    let moto = Server::start(Kind::Moto);
    let cw = Proxy::start(moto.port);
    let metrics = format!(
        r#","metrics":{{"endpoint":"{}","interval_seconds":1}}"#,
        cw.endpoint()
    );
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", &metrics);
    let provider = Provider::start(&setup.dir.path().join("provider"), 10, None);
    let token_file = setup.dir.path().join("token");
    let rotate = |value: &str| {
        std::fs::write(&token_file, value).expect("token file");
        std::fs::write(provider.dir.join("auth"), value).expect("auth");
    };
    rotate("Bearer first-token");
    let env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", provider.url("/creds")),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_string_lossy().into_owned(),
        ),
    ];
    let mut child = spawn_run(&setup, &env);
    let seconds = std::env::var("TVM_CREDS_TEST_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180u64);
    let started = Instant::now();
    let mut files = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        files += 1;
        let p = setup.source("ros").join(format!("f{files:04}.log"));
        write(&p, format!("line {files}\n").as_bytes());
        age_file(&p, 3600);
        if files == seconds as usize {
            rotate("Bearer second-token");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_until(30, "every file uploaded", || uploaded(&s3) == files);
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    assert_no_secrets(&log);
    let s3_tokens = assert_signed_with_valid_tokens(&proxy.requests());
    let cw_requests = cw.requests();
    assert!(
        cw_requests.len() >= seconds as usize / 2,
        "metrics published"
    );
    let cw_tokens = assert_signed_with_valid_tokens(&cw_requests);
    let refreshes = provider.served();
    eprintln!(
        "{seconds} s with 10 s credentials: {refreshes} fetched, {} tokens used by S3, {} by \
         CloudWatch, {} requests",
        s3_tokens.len(),
        cw_tokens.len(),
        proxy.requests().len() + cw_requests.len()
    );
    assert!(
        refreshes as u64 >= seconds / 10,
        "refreshed ahead of expiry: {refreshes}"
    );
    assert!(s3_tokens.len() >= 3, "{s3_tokens:?}");
    for trouble in [
        "trying again with backoff",
        "no valid credentials",
        "expired at",
    ] {
        assert!(!log.contains(trouble), "{log}");
    }
}

/// IMDSv2 down for longer than a lifetime: the last credentials serve until they
/// expire, then uploads pause (files stay queued, the status says why) with one line
/// in the log, and all goes on once it answers again.
#[test]
fn a_provider_down_past_expiry_pauses_uploads_and_they_resume() {
    let s3 = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(s3.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", "");
    let mut provider = Provider::start(&setup.dir.path().join("imds"), 6, None);
    let env = [
        ("AWS_EC2_METADATA_DISABLED", "false".to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", provider.url("")),
    ];
    let mut child = spawn_run(&setup, &env);
    let put = |name: &str| {
        let p = setup.source("ros").join(name);
        write(&p, name.as_bytes());
        age_file(&p, 3600);
    };
    put("before.log");
    wait_until(30, "the first upload", || uploaded(&s3) == 1);
    provider.stop();
    std::thread::sleep(Duration::from_secs(8));
    for i in 0..5 {
        put(&format!("during-{i}.log"));
    }
    wait_until(30, "the pause in the status", || {
        let out = command(&setup, "status", &[])
            .arg("--json")
            .output()
            .expect("status");
        assert_no_secrets(&String::from_utf8_lossy(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["trouble"]["what"] == "no valid credentials"
    });
    assert_eq!(uploaded(&s3), 1, "nothing signed without valid credentials");
    provider.restart();
    wait_until(40, "the queued files after the provider came back", || {
        uploaded(&s3) == 6
    });
    sigterm_and_wait(&mut child, Duration::from_secs(15));
    let log = setup.run_log();
    assert_no_secrets(&log);
    assert_signed_with_valid_tokens(&proxy.requests());
    let failing = log.matches("trying again with backoff").count();
    assert_eq!(failing, 1, "one line when the provider fails:\n{log}");
    assert!(log.contains("again, valid until"), "{log}");
    assert!(log.contains("no valid credentials"), "{log}");
}

/// S3 refusing the session token as expired, while it is valid by our clock (revoked,
/// or a clock off): the credentials are dropped and fetched again at once, and the
/// upload goes on without waiting for the next scheduled refresh.
#[test]
fn a_token_refused_as_expired_is_replaced_at_once() {
    let s3 = Server::start(Kind::S3sFs);
    let proxy = Proxy::start(s3.port);
    let setup = Setup::new(&proxy.endpoint(), &[("ros", "")], "", "");
    let provider = Provider::start(&setup.dir.path().join("provider"), 3600, None);
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = std::sync::Arc::clone(&refused);
    proxy.set_rule(move |r| {
        if r.is_put_object() && !once.swap(true, std::sync::atomic::Ordering::Relaxed) {
            common::proxy::Action::Reply {
                status: 400,
                headers: vec![("content-type".into(), "application/xml".into())],
                body: "<Error><Code>ExpiredToken</Code><Message>The provided token has \
                       expired.</Message></Error>"
                    .into(),
            }
        } else {
            common::proxy::Action::Forward
        }
    });
    let env = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", provider.url("/creds"))];
    let p = setup.source("ros").join("a.log");
    write(&p, b"refused once");
    age_file(&p, 3600);
    let out = command(&setup, "once", &env).output().expect("once");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(uploaded(&s3), 1);
    assert_eq!(
        provider.served(),
        2,
        "fetched at the start and once more at the refusal"
    );
    let tokens = assert_signed_with_valid_tokens(&proxy.requests());
    assert_eq!(
        tokens.len(),
        2,
        "the refused token was not used again: {tokens:?}"
    );
    let puts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(Request::is_put_object)
        .collect();
    assert_eq!(puts.len(), 2);
    assert_ne!(puts[0].session_token(), puts[1].session_token());
    assert_no_secrets(&stderr(&out));
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with it,
/// plus a second, unrelated CA with its own client certificate.
fn test_pki(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("pki dir");
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "rogue"] {
        sh(&format!(
            "openssl req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN={ca}"
        ));
    }
    sh(&format!(
        "openssl req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1 && \
         printf 'subjectAltName=IP:127.0.0.1' > san.ext && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -out server.pem -days 2 -extfile san.ext"
    ));
    // X.509 v3 (an extension makes it so): rustls refuses v1 certificates.
    sh("printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth' > client.ext");
    for (name, ca) in [("device", "ca"), ("stranger", "rogue")] {
        sh(&format!(
            "openssl req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name} && \
             openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
               -out {name}.pem -days 2 -extfile client.ext"
        ));
    }
    // A v1 certificate, which the TLS library cannot use: named, not a crash.
    sh(
        "openssl req {ec} -keyout old.key -out old.csr -subj /CN=old && \
        openssl x509 -req -in old.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
          -out old.pem -days 2"
            .replace("{ec}", ec)
            .as_str(),
    );
    dir.to_path_buf()
}

fn iot_config(setup: &Setup, url: &str, pki: &Path, alias: &str, cert: &str, ca: &str) {
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["credentials"] = serde_json::json!({"iot": {
        "endpoint": url, "role_alias": alias, "thing_name": "v001",
        "cert": pki.join(format!("{cert}.pem")), "key": pki.join(format!("{cert}.key")),
        "ca": pki.join(format!("{ca}.pem"))}});
    std::fs::write(&setup.config, v.to_string()).expect("config");
}

/// The AWS IoT credentials provider over mutual TLS: the device certificate gets
/// credentials; a certificate the provider does not trust, an unknown role alias and an
/// untrusted server are each named by `check-config --connect` (exit 2).
#[test]
fn iot_credentials_over_mutual_tls_and_their_failures_named() {
    let s3 = Server::start(Kind::S3sFs);
    let setup = Setup::new(&s3.endpoint(), &[("can", "")], "", "");
    let pki = test_pki(&setup.dir.path().join("pki"));
    let tls = [
        pki.join("server.pem"),
        pki.join("server.key"),
        pki.join("ca.pem"),
    ];
    let provider = Provider::start(&setup.dir.path().join("iot"), 60, Some(tls));
    let url = provider.url("");
    let p = setup.source("can").join("a.log");
    write(&p, b"from the device");
    age_file(&p, 3600);

    iot_config(&setup, &url, &pki, "tvm-upload", "device", "ca");
    let out = command(&setup, "once", &[]).output().expect("once");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(uploaded(&s3), 1);
    assert_no_secrets(&stderr(&out));
    let out = command(&setup, "check-config", &[])
        .output()
        .expect("check");
    assert!(
        stderr(&out).contains("IoT credentials provider"),
        "{}",
        stderr(&out)
    );

    let connect = |alias: &str, cert: &str, ca: &str| -> Output {
        iot_config(&setup, &url, &pki, alias, cert, ca);
        command(&setup, "check-config", &[])
            .arg("--connect")
            .output()
            .expect("check-config")
    };
    for (alias, cert, ca, want) in [
        (
            "tvm-upload",
            "stranger",
            "ca",
            // TLS 1.3 reports a refused client certificate after the handshake: an
            // alert most times, a reset connection at worst.
            "refused the device certificate|onnection",
        ),
        ("nope", "device", "ca", "role alias nope not found"),
        (
            "tvm-upload",
            "device",
            "rogue",
            "does not chain to credentials.iot.ca",
        ),
        ("tvm-upload", "old", "ca", "could not be set up"),
    ] {
        let out = connect(alias, cert, ca);
        let said = stderr(&out);
        eprintln!("{alias} {cert} {ca}: {}", said.trim());
        assert_eq!(out.status.code(), Some(2), "{alias} {cert} {ca}: {said}");
        assert!(
            want.split('|').any(|w| said.contains(w)),
            "{alias} {cert} {ca}: {said}"
        );
        assert_no_secrets(&said);
    }
}

/// A profile's `credential_process`: its credentials are used; a command that fails or
/// prints garbage is named, and nothing is uploaded with made-up keys.
#[test]
fn credential_process_is_run_and_its_failures_named() {
    let s3 = Server::start(Kind::S3sFs);
    let setup = Setup::new(&s3.endpoint(), &[("app", "")], "", "");
    let p = setup.source("app").join("a.log");
    write(&p, b"process");
    age_file(&p, 3600);
    let aws = setup.dir.path().join(".aws");
    std::fs::create_dir_all(&aws).expect(".aws");
    let script = setup.dir.path().join("creds.sh");
    let profile = |command: &str| {
        std::fs::write(
            aws.join("credentials"),
            format!("[fleet]\ncredential_process = {command}\n"),
        )
        .expect("credentials");
    };
    let env = [("AWS_PROFILE", "fleet".to_string())];

    profile("sh -c 'echo no such thing >&2; exit 4'");
    let out = command(&setup, "once", &env).output().expect("once");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("credential_process failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("no such thing"), "{}", stderr(&out));

    profile("echo garbage");
    let out = command(&setup, "check-config", &env)
        .arg("--connect")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
    assert_eq!(uploaded(&s3), 0);

    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexp=$(date -u -d @$(( $(date +%s) + 900 )) +%Y-%m-%dT%H:%M:%SZ)\n\
             echo '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \
             \"{SECRET_KEY}\", \"SessionToken\": \"tok-1-'$(( $(date +%s) + 900 ))'\", \
             \"Expiration\": \"'$exp'\"}}'\n"
        ),
    )
    .expect("script");
    profile(&format!("sh {}", script.display()));
    let out = command(&setup, "once", &env).output().expect("once");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(uploaded(&s3), 1);
    assert_no_secrets(&stderr(&out));
}
