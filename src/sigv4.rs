//! AWS Signature Version 4 in the `Authorization` header, for services other than S3
//! (CloudWatch's Query API). S3 requests are presigned by rusty-s3 instead.
//!
//! Pure: the time and the credentials are arguments. Tested against AWS's published
//! test suite (`tests/data/sigv4/`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::key::utc_fields;

/// A request to sign. Header names may be in any case; values are trimmed and their
/// inner runs of spaces folded, as SigV4 requires.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path, already URI-encoded (`/` for the Query API).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Headers besides `host`, `x-amz-date` and `x-amz-security-token`, which signing adds.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// What signing needs to know about who signs.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers signing a POST to `/` of `host` (the Query and JSON APIs of CloudWatch
/// and DynamoDB) with `credentials` at unix time `t`: `headers` are signed as given.
pub fn sign_post(
    credentials: &crate::credentials::Credentials,
    scope: (&str, &str),
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
    t: i64,
) -> Vec<(String, String)> {
    let (region, service) = scope;
    let signer = Signer {
        access_key_id: &credentials.access_key_id,
        secret_access_key: &credentials.secret_access_key,
        session_token: credentials.session_token.as_deref(),
        region,
        service,
    };
    let req = Request {
        method: "POST",
        host,
        path: "/",
        query: &[],
        headers,
        body,
    };
    signer.sign(&req, t)
}

/// `YYYYMMDDTHHMMSSZ` for unix time `t`.
pub fn amz_date(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = utc_fields(t);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// RFC 3986 encoding of everything but unreserved characters, as SigV4 wants.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Signer<'_> {
    /// The headers to add to `req` at unix time `t`: `x-amz-date`, the session token if
    /// any (signed, as STS-issued credentials require), and `authorization`.
    pub fn sign(&self, req: &Request, t: i64) -> Vec<(String, String)> {
        let date_time = amz_date(t);
        let date = &date_time[..8];
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        headers.push(("host".into(), req.host.to_string()));
        headers.push(("x-amz-date".into(), date_time.clone()));
        if let Some(token) = self.session_token {
            headers.push(("x-amz-security-token".into(), token.to_string()));
        }
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut query: Vec<(String, String)> = req
            .query
            .iter()
            .map(|(k, v)| (uri_encode(k), uri_encode(v)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_request = format!(
            "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
            req.method,
            req.path,
            hex(&Sha256::digest(req.body))
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
        let mut out = vec![("x-amz-date".to_string(), date_time)];
        if let Some(token) = self.session_token {
            out.push(("x-amz-security-token".to_string(), token.to_string()));
        }
        out.push((
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key_id
            ),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2015-08-30T12:36:00Z, the test suite's time.
    const SUITE_TIME: i64 = 1_440_938_160;

    /// Parses a test-suite `.sreq` into its parts and the expected Authorization value.
    fn check_vector(name: &str) {
        let path = format!(
            "{}/tests/data/sigv4/{name}.sreq",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("vector");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let first = lines.next().expect("request line");
        let mut parts = first.split(' ');
        let method = parts.next().expect("method");
        let target = parts.next().expect("target");
        let (path_part, query_part) = target.split_once('?').unwrap_or((target, ""));
        let query: Vec<(String, String)> = query_part
            .split('&')
            .filter(|q| !q.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let mut host = String::new();
        let mut token = None;
        let mut expected = String::new();
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line.split_once(':').expect("header");
            match k.to_ascii_lowercase().as_str() {
                "host" => host = v.trim().to_string(),
                "x-amz-date" => assert_eq!(v, amz_date(SUITE_TIME)),
                "x-amz-security-token" => token = Some(v.trim().to_string()),
                "authorization" => expected = v.trim().to_string(),
                _ => headers.push((k.to_string(), v.to_string())),
            }
        }
        let signer = Signer {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: token.as_deref(),
            region: "us-east-1",
            service: "service",
        };
        let req = Request {
            method,
            host: &host,
            path: path_part,
            query: &query,
            headers: &headers,
            body: body.as_bytes(),
        };
        let signed = signer.sign(&req, SUITE_TIME);
        let auth = signed
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone());
        assert_eq!(auth.as_deref(), Some(expected.as_str()), "vector {name}");
    }

    #[test]
    fn aws_test_suite_get_vanilla_query_order_key_case() {
        check_vector("get-vanilla-query-order-key-case");
    }

    #[test]
    fn aws_test_suite_post_x_www_form_urlencoded() {
        check_vector("post-x-www-form-urlencoded");
    }

    #[test]
    fn aws_test_suite_post_sts_header_before() {
        check_vector("post-sts-header-before");
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(uri_encode("a b/c~d*"), "a%20b%2Fc~d%2A");
        assert_eq!(amz_date(SUITE_TIME), "20150830T123600Z");
    }
}
