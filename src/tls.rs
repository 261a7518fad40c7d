//! PEM files of certificates (an S3 CA bundle, the AWS IoT provider's client certificate
//! and CA), read with the errors an operator can act on: which config field, which file,
//! what is wrong with it.

/// The certificates of a PEM file named by config field `field`: at least one, or an
/// error naming the field, the file and the cause.
pub fn pem_certificates(
    field: &str,
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{field} {}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{field} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 certificate (CN=tvm-test), made with openssl for this test.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUIPE98HeZj/86bles8Eh5JJVlU0owCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIdHZtLXRlc3QwIBcNMjYxMjA2MDQ0MjQ1WhgPMjEyNjExMTIw
NDQyNDVaMBMxETAPBgNVBAMMCHR2bS10ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEdOu1GVPUBN4t1kzs0Pq/bQYy3Uw6U+vOlM1U4QkkPV1aZ2vyPL1xy5Rs
MdNUJi3v5zUKUedU18lQMkBcG1BVy6NTMFEwHQYDVR0OBBYEFNNT0QnOhGrREcLm
OnQyGcbGeLFnMB8GA1UdIwQYMBaAFNNT0QnOhGrREcLmOnQyGcbGeLFnMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAI8I7Da0tGkfbgmDziSTRSom
xy/dM7QtzjSidC3f/5hbAiB/DRb6u3yJ0CKDOpyTHtpUqQu/f98ZaXOsx6Etx3Wn
0Q==
-----END CERTIFICATE-----
";

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tvm-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn a_bundle_gives_its_certificates() {
        let two = format!("# a comment\n{CERT}\n{CERT}");
        let certs = pem_certificates("s3.ca_bundle", &file("two.pem", &two)).expect("certs");
        assert_eq!(certs.len(), 2);
    }

    #[test]
    fn each_bad_file_is_named_with_its_field_and_cause() {
        let missing = std::env::temp_dir().join("tvm-tls-no-such-file.pem");
        let e = pem_certificates("s3.ca_bundle", &missing).expect_err("missing");
        assert!(
            e.starts_with("s3.ca_bundle ") && e.contains("tvm-tls-no-such-file.pem"),
            "{e}"
        );
        let key_only =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let e = pem_certificates("credentials.iot.ca", &file("key.pem", key_only))
            .expect_err("no cert");
        assert!(
            e.starts_with("credentials.iot.ca ") && e.ends_with("no certificate in it"),
            "{e}"
        );
        let e = pem_certificates("credentials.iot.ca", &file("empty.pem", "")).expect_err("empty");
        assert!(e.ends_with("no certificate in it"), "{e}");
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e =
            pem_certificates("credentials.iot.cert", &file("broken.pem", broken)).expect_err("bad");
        assert!(
            e.starts_with("credentials.iot.cert ") && e.contains("broken.pem"),
            "{e}"
        );
    }
}
