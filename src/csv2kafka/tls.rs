//! Why a broker's TLS certificate is refused. librdkafka reports every failed
//! verification as "certificate verify failed"; an operator needs to know whether the
//! CA is not the one that signed it, the name does not match or it has expired. So when
//! that is the error, csv2kafka verifies the broker's certificate itself (rustls, with the
//! CA of `ssl.ca.location`) and names what it finds.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, Error, RootCertStore};

/// What is wrong with the certificate `broker` (`host:port`) presents, checked against
/// the CA certificates in `ca` (PEM); `None` when nothing can be said (it verifies, or
/// the broker cannot be reached).
pub fn diagnose(broker: &str, ca: &Path) -> Option<String> {
    let (host, _) = broker.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).ok()?;
    let mut conn = ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = broker.to_socket_addrs().ok()?.next()?;
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) => {
                return e
                    .into_inner()
                    .and_then(|e| why(&e.to_string(), broker, host));
            }
        }
    }
    let _ = conn.writer().flush();
    let _ = sock.read(&mut [0u8; 1]);
    None
}

/// rustls's verdict in an operator's words.
fn why(error: &str, broker: &str, host: &str) -> Option<String> {
    let said = |e: CertificateError| Error::InvalidCertificate(e).to_string();
    let cause = if error.contains(&said(CertificateError::Expired)) || error.contains("expired") {
        "it has expired (or is not valid yet: check the clocks)".to_string()
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        format!("it is not issued for {host} (a name mismatch)")
    } else if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        "it is not signed by the CA in ssl.ca.location (an unknown CA)".to_string()
    } else if error.contains("certificate") {
        error.to_string()
    } else {
        return None;
    };
    Some(format!(
        "the certificate {broker} presents is refused: {cause}"
    ))
}
