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
