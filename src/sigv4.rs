//! AWS Signature Version 4: in the `Authorization` header (CloudWatch's Query API,
//! DynamoDB), and in the query string ([`Signer::presign`]: the S3 requests whose
//! subresource has no value, which rusty-s3 would send as `?uploads=1`, and any other
//! presigned URL rusty-s3 has no action for). Other S3 requests are presigned by rusty-s3.
//!
//! Pure: the time and the credentials are arguments. Tested against AWS's published
//! test suite (`tests/data/sigv4/`) and S3's documented presigned-URL example; the e2e
//! suite checks presigned URLs against boto3's for the same request and time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::calendar::utc_fields;
use crate::digest::hex;

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

/// What a query-presigned request carries besides its URL: the hash of its body as it
/// goes into the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`, as S3's presigned URLs use.
    Unsigned,
    /// The SHA-256 of an empty body, as other services' presigned URLs use (the MSK IAM
    /// token is one).
    Empty,
}

/// A request to presign: its parameters go into the URL's query, signed.
#[derive(Debug, Clone)]
pub struct Presign<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, exactly as the `Host` header will carry it.
    pub host: &'a str,
    /// The path, already URI-encoded.
    pub path: &'a str,
    /// Query parameters, not encoded. An empty value is a subresource (`uploads`): it
    /// is signed as `uploads=` and sent bare, `?uploads`, as AWS's SDKs send it.
    pub query: &'a [(String, String)],
    /// Headers signed besides `host` (they must then be sent exactly so).
    pub headers: &'a [(String, String)],
    pub payload: Payload,
    /// `X-Amz-Expires`, seconds.
    pub expires_seconds: u64,
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    query.sort();
    query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Header names lower-cased, values trimmed with inner runs of spaces folded, sorted:
/// the canonical headers block and the signed-headers list.
fn canonical_headers(headers: Vec<(String, String)>) -> (String, String) {
    let mut headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let block = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, names)
}

impl Signer<'_> {
    fn scope(&self, date: &str) -> String {
        format!("{date}/{}/{}/aws4_request", self.region, self.service)
    }

    /// The hex signature of `canonical_request` at `date_time` (`YYYYMMDDTHHMMSSZ`).
    fn signature(&self, date_time: &str, canonical_request: &str) -> String {
        let date = &date_time[..8];
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{}\n{}",
            self.scope(date),
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        hex(&hmac(&k_signing, string_to_sign.as_bytes()))
    }

    /// The headers to add to `req` at unix time `t`: `x-amz-date`, the session token if
    /// any (signed, as STS-issued credentials require), and `authorization`.
    pub fn sign(&self, req: &Request, t: i64) -> Vec<(String, String)> {
        let date_time = amz_date(t);
        let mut headers = req.headers.to_vec();
        headers.push(("host".into(), req.host.to_string()));
        headers.push(("x-amz-date".into(), date_time.clone()));
        if let Some(token) = self.session_token {
            headers.push(("x-amz-security-token".into(), token.to_string()));
        }
        let (canonical_headers, signed_headers) = canonical_headers(headers);
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            req.method,
            req.path,
            canonical_query(req.query),
            hex(&Sha256::digest(req.body))
        );
        let signature = self.signature(&date_time, &canonical_request);
        let mut out = vec![("x-amz-date".to_string(), date_time.clone())];
        if let Some(token) = self.session_token {
            out.push(("x-amz-security-token".to_string(), token.to_string()));
        }
        out.push((
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key_id,
                self.scope(&date_time[..8])
            ),
        ));
        out
    }

    /// The query string (without `?`) that presigns `req` at unix time `t`, in the order
    /// botocore writes it: the request's own parameters, then `X-Amz-Algorithm`,
    /// `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders` and
    /// `X-Amz-Security-Token` (when the credentials have one), and `X-Amz-Signature`
    /// last (the MSK IAM token is compared with AWS's signer byte for byte).
    pub fn presign(&self, req: &Presign, t: i64) -> String {
        let date_time = amz_date(t);
        let mut headers = req.headers.to_vec();
        headers.push(("host".into(), req.host.to_string()));
        let (canonical_headers, signed_headers) = canonical_headers(headers);
        let mut auth: Vec<(String, String)> = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
            (
                "X-Amz-Credential",
                format!("{}/{}", self.access_key_id, self.scope(&date_time[..8])),
            ),
            ("X-Amz-Date", date_time.clone()),
            ("X-Amz-Expires", req.expires_seconds.to_string()),
            ("X-Amz-SignedHeaders", signed_headers.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(token) = self.session_token {
            auth.push(("X-Amz-Security-Token".into(), token.to_string()));
        }
        let payload = match req.payload {
            Payload::Unsigned => "UNSIGNED-PAYLOAD".to_string(),
            Payload::Empty => hex(&Sha256::digest(b"")),
        };
        let all: Vec<(String, String)> = req.query.iter().chain(&auth).cloned().collect();
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload}",
            req.method,
            req.path,
            canonical_query(&all)
        );
        let signature = self.signature(&date_time, &canonical_request);
        // As botocore writes it: the request's own parameters, then the signing ones.
        let mut own = req.query.to_vec();
        own.sort_by_key(|(k, _)| uri_encode(k));
        let mut out: Vec<String> = own
            .iter()
            .chain(&auth)
            .map(|(k, v)| match v.is_empty() {
                true => uri_encode(k),
                false => format!("{}={}", uri_encode(k), uri_encode(v)),
            })
            .collect();
        out.push(format!("X-Amz-Signature={signature}"));
        out.join("&")
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

    /// S3's documented presigned URL ("Authenticating Requests: Using Query
    /// Parameters", the GET of examplebucket/test.txt at 2013-05-24T00:00:00Z).
    #[test]
    fn s3_documented_presigned_get() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "s3",
        };
        let req = Presign {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &[],
            payload: Payload::Unsigned,
            expires_seconds: 86_400,
        };
        assert_eq!(
            signer.presign(&req, 1_369_353_600),
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// A value-less subresource is sent bare (`&uploads&`), the session token and the
    /// signed headers encoded. (boto3 is the oracle for the signature itself: tests/cli.rs.)
    #[test]
    fn subresources_are_sent_bare_and_signed_with_an_empty_value() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: Some("tok/en+"),
            region: "us-east-1",
            service: "s3",
        };
        let query = [("uploads".to_string(), String::new())];
        let headers = [("x-amz-meta-a".to_string(), "b".to_string())];
        let req = Presign {
            method: "POST",
            host: "127.0.0.1:9000",
            path: "/bucket/a%20b.log",
            query: &query,
            headers: &headers,
            payload: Payload::Unsigned,
            expires_seconds: 900,
        };
        let url = signer.presign(&req, 1_369_353_600);
        assert!(url.starts_with("uploads&X-Amz-Algorithm="), "{url}");
        // botocore's order: the token after the signed headers, the signature last.
        assert!(
            url.contains(
                "&X-Amz-SignedHeaders=host%3Bx-amz-meta-a&X-Amz-Security-Token=tok%2Fen%2B&\
                 X-Amz-Signature="
            ),
            "{url}"
        );
        // The subresource's value is signed: rusty-s3's `uploads=1` is another request.
        let one = [("uploads".to_string(), "1".to_string())];
        let other = signer.presign(&Presign { query: &one, ..req }, 1_369_353_600);
        assert_ne!(
            url.rsplit_once('=').map(|s| s.1),
            other.rsplit_once('=').map(|s| s.1)
        );
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(uri_encode("a b/c~d*"), "a%20b%2Fc~d%2A");
        assert_eq!(amz_date(SUITE_TIME), "20150830T123600Z");
    }
}
