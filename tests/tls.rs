//! TLS certificate verification is on by default: a local HTTPS S3 server (moto) with a
//! self-signed certificate is refused unless `s3.ca_bundle` or `AWS_CA_BUNDLE` trusts it.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

struct Tls {
    child: Child,
    port: u16,
    cert: std::path::PathBuf,
    _dir: TempDir,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto over HTTPS with a fresh self-signed certificate for 127.0.0.1.
fn https_server() -> Tls {
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A server certificate, not a CA (webpki refuses a CA as the end entity).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=digitalSignature,keyEncipherment"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (installed by scripts/test-tools.sh)");
    assert!(ok.success(), "openssl req failed");
    let port = free_port();
    let child = spawn_moto(
        port,
        &[
            "-c".as_ref(),
            cert.as_os_str(),
            "-k".as_ref(),
            key.as_os_str(),
        ],
    );
    wait_for_port(port, "moto over TLS");
    let tls = Tls {
        child,
        port,
        cert,
        _dir: dir,
    };
    tls.client().create_bucket();
    tls
}

impl Tls {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> Client {
        Client::with_tls(&self.endpoint(), Some(&self.cert))
    }
}

#[test]
fn a_self_signed_server_is_refused_unless_the_ca_bundle_trusts_it() {
    let server = https_server();
    let file = |setup: &Setup, name: &str| {
        let p = setup.source("ros").join(name);
        write(&p, name.as_bytes());
        age_file(&p, 60);
    };

    // Default: the web PKI roots only. Refused, with the reason.
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    file(&setup, "a.log");
    let out = setup.once();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "the TLS failure is named: {err}"
    );
    assert!(server.client().list().is_empty());
    if let Some(line) = err.lines().find(|l| l.contains("ertificate")) {
        println!("untrusted: {line}");
    }

    // s3.ca_bundle trusts it.
    let with_bundle = format!(r#","ca_bundle":{:?}"#, server.cert.to_str().expect("utf8"));
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], &with_bundle, "");
    file(&setup, "b.log");
    let out = setup.once();
    assert!(out.status.success(), "{}", stderr(&out));

    // So does AWS_CA_BUNDLE.
    let setup = Setup::new(&server.endpoint(), &[("ros", "")], "", "");
    file(&setup, "c.log");
    let out = setup
        .command("once", SECRET_KEY)
        .env("AWS_CA_BUNDLE", &server.cert)
        .output()
        .expect("once");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secrets(&stderr(&out));

    let keys: Vec<_> = server.client().list().into_keys().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("b.log")) && keys.iter().any(|k| k.ends_with("c.log")));
}
