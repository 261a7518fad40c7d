//! The S3 protocol: SigV4-presigned requests (rusty-s3) sent over one shared ureq
//! [`Agent`] whose every timeout is set here, and the classification of what comes back
//! into retryable and fatal errors.
//!
//! This module knows requests and answers, not files or the journal. It never logs or
//! returns a presigned URL: error messages carry the operation and the key only.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rusty_s3::{Bucket, S3Action, UrlStyle};
use ureq::Agent;
use ureq::http::Response;

use crate::config::S3Config;
use crate::credentials::Provider;

/// How long a presigned URL is valid. Each request is signed just before it is sent, so
/// this only has to cover one request's wait for a connection and its transfer.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// TCP connect, and DNS resolution, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending the request line and headers.
const SEND_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Any single read or write stalling this long fails the request: a blackholed link is
/// noticed without capping how long a large part may take on a slow one.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Waiting for the status line after the body; CompleteMultipartUpload can take S3
/// minutes on large objects.
const RECV_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest response body read (ListParts of 1,000 parts is ~200 KiB).
const MAX_RESPONSE_BYTES: u64 = 2 * 1024 * 1024;
/// ListParts pages; 1,000 is S3's maximum.
const LIST_PARTS_PAGE: u16 = 1000;
/// The most pages of ListMultipartUploads read for one key.
const LIST_UPLOADS_PAGES: usize = 10;

/// What kind of failure, deciding what the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Network trouble, 5xx, RequestTimeout: back off and retry.
    Transient,
    /// 503 SlowDown or 429: back off harder, and everyone else too.
    SlowDown,
    /// The credentials are wrong or lack permission: nothing works until an operator
    /// fixes them.
    Credentials,
    /// The bucket, region or endpoint is wrong: also an operator's fix.
    Configuration,
    /// The bytes sent did not match the checksum: the file changed under us.
    ContentChanged,
    /// The server no longer knows the multipart upload, or refused its parts: start
    /// that upload over.
    UploadLost,
    /// The server refused this request for this object: retry on the slow schedule.
    Rejected,
}

/// A failed S3 request.
#[derive(Debug, Clone)]
pub enum S3Error {
    /// No answer: connect, DNS, reset, timeout, TLS. Always transient.
    Transport {
        op: &'static str,
        key: String,
        message: String,
    },
    /// An error status, or an `<Error>` body on a 200.
    Status {
        op: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    /// Refused for its signing time, which the answer's `Date` has now corrected: sent
    /// again, it is signed with the server's time.
    Skewed { op: &'static str, key: String },
    /// The session token was refused as expired or invalid: the provider fetches new
    /// credentials at once, and a retry signs with them.
    TokenRefused { op: &'static str, key: String },
    /// No valid credentials to sign with: the provider is failing and the last ones
    /// expired. Uploads wait (files stay queued) until it answers.
    NoCredentials { why: String },
    /// An answer that is not what S3 sends: unparseable XML, a missing ETag.
    BadAnswer {
        op: &'static str,
        key: String,
        why: String,
    },
}

impl S3Error {
    pub fn class(&self) -> Class {
        match self {
            S3Error::Transport { .. }
            | S3Error::Skewed { .. }
            | S3Error::TokenRefused { .. }
            | S3Error::BadAnswer { .. } => Class::Transient,
            S3Error::NoCredentials { .. } => Class::Credentials,
            // A presigned URL refused for its time ("Request has expired", "Request is
            // not yet valid"): the clock, corrected from the answer's Date, not the keys.
            S3Error::Status { code, message, .. }
                if code == "AccessDenied"
                    && ["expired", "not yet valid", "not valid yet"]
                        .iter()
                        .any(|m| message.to_ascii_lowercase().contains(m)) =>
            {
                Class::Transient
            }
            S3Error::Status { status, code, .. } => classify(*status, code),
        }
    }

    /// No answer at all (connect, DNS, reset, timeout): the link, not the request.
    pub fn unreachable(&self) -> bool {
        matches!(self, S3Error::Transport { .. })
    }

    /// The server refused a conditional write: the key is taken (412).
    pub fn key_taken(&self) -> bool {
        matches!(self, S3Error::Status { status: 412, .. })
            || self.code() == Some("PreconditionFailed")
    }

    /// The connection was closed under a request still being sent, or before any answer
    /// (a broken pipe, a reset, or ureq's "Peer disconnected" when the close reaches it
    /// only as it reads the answer): a server that refuses a conditional PUT may answer
    /// 412 before reading the body and close, and the client sees only this. Which of
    /// them it sees depends on timing alone.
    pub fn cut_while_sending(&self) -> bool {
        const CLOSED: [&str; 5] = [
            "Broken pipe",
            "Connection reset",
            "os error 32",
            "os error 104",
            "Peer disconnected",
        ];
        matches!(self, S3Error::Transport { message, .. }
            if CLOSED.iter().any(|m| message.contains(m)))
    }

    /// The S3 error code, if the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Status { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// What an operator should do about it, for fatal classes.
    pub fn advice(&self) -> &'static str {
        if let S3Error::NoCredentials { .. } = self {
            return "uploads wait until the credentials provider answers";
        }
        match (self.class(), self.code().unwrap_or("")) {
            (Class::Credentials, "SignatureDoesNotMatch") => {
                "the secret access key is wrong: fix AWS_SECRET_ACCESS_KEY or the credentials file"
            }
            (Class::Credentials, "InvalidAccessKeyId") => {
                "the access key id is unknown: fix AWS_ACCESS_KEY_ID or the credentials file"
            }
            (Class::Credentials, "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired") => {
                "the session token is expired or invalid: renew AWS_SESSION_TOKEN"
            }
            (Class::Credentials, _) => {
                "the credentials lack permission: grant s3:PutObject, s3:GetObject, \
                 s3:AbortMultipartUpload and s3:ListMultipartUploadParts on the bucket"
            }
            (Class::Configuration, "NoSuchBucket") => "the bucket does not exist: fix s3.bucket",
            (Class::Configuration, _) => {
                "the region or endpoint is wrong: fix s3.region / s3.endpoint"
            }
            _ => "",
        }
    }
}

fn classify(status: u16, code: &str) -> Class {
    match code {
        "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "AccessDenied"
        | "ExpiredToken"
        | "InvalidToken"
        | "TokenRefreshRequired"
        | "InvalidSecurity"
        | "AccountProblem"
        | "AllAccessDisabled" => return Class::Credentials,
        "NoSuchBucket"
        | "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException"
        | "InvalidBucketName" => return Class::Configuration,
        "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "IncompleteBody" => {
            return Class::ContentChanged;
        }
        "NoSuchUpload" | "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" => {
            return Class::UploadLost;
        }
        "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            return Class::SlowDown;
        }
        "RequestTimeout"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeTooSkewed"
        | "RequestExpired" => {
            return Class::Transient;
        }
        _ => {}
    }
    match status {
        429 | 503 => Class::SlowDown,
        500..=599 | 408 => Class::Transient,
        401 | 403 => Class::Credentials,
        301 | 307 | 400 if code.contains("Redirect") => Class::Configuration,
        301 | 307 => Class::Configuration,
        _ => Class::Rejected,
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Error::Transport { op, key, message } => write!(f, "{op} {key}: {message}"),
            S3Error::Skewed { op, key } => write!(
                f,
                "{op} {key}: signed with a clock the server disagrees with; retrying with the \
                 server's time"
            ),
            S3Error::Status {
                op,
                key,
                status,
                code,
                message,
            } => {
                write!(f, "{op} {key}: HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            S3Error::BadAnswer { op, key, why } => {
                write!(f, "{op} {key}: unexpected answer: {why}")
            }
            S3Error::TokenRefused { op, key } => write!(
                f,
                "{op} {key}: the session token was refused as expired; fetching new credentials"
            ),
            S3Error::NoCredentials { why } => f.write_str(why),
        }
    }
}

impl std::error::Error for S3Error {}

/// A part as the server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerPart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
    /// `ChecksumCRC32`, base64, when the server lists it (AWS and garage do).
    pub crc32: Option<String>,
}

/// What a new object carries besides its bytes: its `x-amz-meta-*` (names without the
/// prefix) and its Content-Type (none: the server's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    pub meta: Vec<(String, String)>,
    pub content_type: Option<&'static str>,
}

/// One UploadPart request.
#[derive(Debug, Clone, Copy)]
pub struct PartUpload<'a> {
    pub key: &'a str,
    pub upload_id: &'a str,
    /// 1-based.
    pub number: u32,
    pub len: u64,
    /// The checksum the server checks the bytes against.
    pub checksum: PartChecksum<'a>,
}

/// A part's checksum, base64, as its upload was created to carry (see
/// [`S3::create_multipart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartChecksum<'a> {
    /// `Content-MD5` (uploads created without a checksum algorithm).
    Md5(&'a str),
    /// `x-amz-checksum-crc32`, big-endian (uploads created with `CRC32`).
    Crc32(&'a str),
}

/// What a HEAD on the bucket answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketAnswer {
    pub status: u16,
    /// `x-amz-bucket-region`: where S3 says the bucket is.
    pub region: Option<String>,
    /// The answer's `Date`, Unix seconds.
    pub date: Option<i64>,
}

/// An object being read by [`S3::get`].
pub struct Object {
    pub etag: String,
    pub encoding: Option<String>,
    /// The whole object's size, when the server said.
    pub total: Option<u64>,
    /// `x-amz-meta-*`, without the prefix.
    pub meta: HashMap<String, String>,
    pub body: Box<dyn Read + Send>,
}

/// The S3 client: one bucket, one agent, refreshable credentials.
pub struct S3 {
    agent: Agent,
    bucket: Bucket,
    credentials: Arc<Provider>,
    storage_class: Option<String>,
}

/// How big a connection's buffers are: [`Buffers::SENDING`] for the daemon, whose
/// connections carry bodies out and small answers back, [`Buffers::READING`] for a
/// client that streams objects in (csv2kafka).
#[derive(Debug, Clone, Copy)]
pub struct Buffers {
    /// Answers' heads and bodies are read through it.
    pub input: usize,
    /// Request bodies are copied through it, a write call each.
    pub output: usize,
}

impl Buffers {
    /// 16 + 32 KiB: at concurrency 16 these were 2.5 MiB of a multipart upload's peak
    /// RSS at ureq's 128 + 128 KiB, and 1.7 MiB at 32 + 128 KiB. 32 KiB write calls
    /// send as fast on loopback as 128 KiB ones (docs/BENCHMARKS.md).
    pub const SENDING: Buffers = Buffers {
        input: 16 * 1024,
        output: 32 * 1024,
    };
    /// 32 KiB reads for GETs of whole objects (what csv2kafka's figures were measured
    /// with); its requests carry no large bodies.
    pub const READING: Buffers = Buffers {
        input: 32 * 1024,
        output: 16 * 1024,
    };
}

impl S3 {
    /// The daemon's client: connections sized for sending ([`Buffers::SENDING`]).
    pub fn new(cfg: &S3Config, credentials: Arc<Provider>) -> Result<S3, String> {
        S3::with_buffers(cfg, credentials, Buffers::SENDING)
    }

    pub fn with_buffers(
        cfg: &S3Config,
        credentials: Arc<Provider>,
        buffers: Buffers,
    ) -> Result<S3, String> {
        let endpoint = cfg
            .endpoint
            .parse()
            .map_err(|e| format!("s3.endpoint {:?}: {e}", cfg.endpoint))?;
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket =
            Bucket::new(endpoint, style, cfg.bucket.clone(), cfg.region.clone()).map_err(|e| {
                format!(
                    "s3.endpoint {:?} with bucket {:?}: {e}",
                    cfg.endpoint, cfg.bucket
                )
            })?;
        let agent = build_agent(cfg.ca_bundle.as_deref(), cfg.concurrency, buffers)?;
        Ok(S3 {
            agent,
            bucket,
            credentials,
            storage_class: cfg.storage_class.clone(),
        })
    }

    /// After a credentials error: temporary credentials are fetched again, static ones
    /// re-read (an operator may have fixed the file); see [`Provider::refresh_now`].
    pub fn reload_credentials(&self) {
        self.credentials.refresh_now();
    }

    fn creds(&self) -> Result<rusty_s3::Credentials, S3Error> {
        self.credentials
            .current()
            .map(|c| c.to_rusty())
            .map_err(|e| S3Error::NoCredentials { why: e.to_string() })
    }

    /// Reads the body, and turns an error status or an `<Error>` body into an
    /// [`S3Error`]; a refused session token has the provider fetch new credentials.
    fn check(
        &self,
        op: &'static str,
        key: &str,
        resp: Response<ureq::Body>,
    ) -> Result<(Response<ureq::Body>, String), S3Error> {
        check(op, key, resp).map_err(|e| {
            if token_refused(&e) && self.credentials.is_temporary() {
                self.credentials.refresh_now();
                return S3Error::TokenRefused {
                    op,
                    key: key.to_string(),
                };
            }
            e
        })
    }

    fn sign<'a>(&self, action: &impl S3Action<'a>) -> String {
        match jiff::Timestamp::from_second(crate::clock::signing_now()) {
            Ok(t) => action.sign_with_time(PRESIGN_EXPIRY, &t).to_string(),
            Err(_) => action.sign(PRESIGN_EXPIRY).to_string(),
        }
    }

    /// The headers a new object is made with (PUT, copy, multipart): its metadata,
    /// Content-Type and storage class.
    fn object_headers(&self, attrs: &Attributes) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = attrs
            .meta
            .iter()
            .map(|(k, v)| (format!("x-amz-meta-{k}"), v.clone()))
            .collect();
        if let Some(t) = attrs.content_type {
            h.push(("content-type".into(), t.into()));
        }
        if let Some(class) = &self.storage_class {
            h.push(("x-amz-storage-class".into(), class.clone()));
        }
        h
    }

    /// The presigned URL of `action` with `headers` signed too (they must then be sent
    /// exactly so).
    fn sign_with<'a>(
        &self,
        action: &mut impl S3Action<'a>,
        headers: &[(String, String)],
    ) -> String {
        for (k, v) in headers {
            action.headers_mut().insert(k.clone(), v.clone());
        }
        self.sign(action)
    }

    /// The metadata of an object, or `None` if there is none at `key`. A 403 is taken as
    /// "unknown" (`None` too): without s3:GetObject a HEAD is refused although uploads work.
    pub fn head(&self, key: &str) -> Result<Option<HashMap<String, String>>, S3Error> {
        let creds = self.creds()?;
        let action = self.bucket.head_object(Some(&creds), key);
        let url = self.sign(&action);
        let resp = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| transport("HeadObject", key, e))?;
        let corrected = observe_date(&resp);
        match resp.status().as_u16() {
            200 => {
                let mut meta = HashMap::new();
                for (name, value) in resp.headers() {
                    if let Some(m) = name.as_str().strip_prefix("x-amz-meta-") {
                        meta.insert(m.to_string(), value.to_str().unwrap_or("").to_string());
                    }
                    if name.as_str() == "etag" {
                        meta.insert("etag".into(), value.to_str().unwrap_or("").to_string());
                    }
                }
                Ok(Some(meta))
            }
            404 => Ok(None),
            // Signed with a clock the server disagrees with: ask again with its time.
            403 if corrected => Err(skewed("HeadObject", key)),
            403 => Ok(None),
            status => Err(S3Error::Status {
                op: "HeadObject",
                key: key.to_string(),
                status,
                code: String::new(),
                message: String::new(),
            }),
        }
    }

    /// One PUT of `len` bytes from `body`, the server verifying `sha256_b64`, only if
    /// nothing is at `key` yet (`If-None-Match: *`; a server that honours it answers 412
    /// otherwise, see [`S3Error::key_taken`]).
    pub fn put(
        &self,
        key: &str,
        body: &mut dyn Read,
        len: u64,
        sha256_b64: &str,
        attrs: &Attributes,
    ) -> Result<String, S3Error> {
        let creds = self.creds()?;
        let mut action = self.bucket.put_object(Some(&creds), key);
        let mut headers = self.object_headers(attrs);
        headers.push(("if-none-match".into(), "*".into()));
        headers.push(("x-amz-checksum-sha256".into(), sha256_b64.into()));
        let url = self.sign_with(&mut action, &headers);
        let mut req = self
            .agent
            .put(&url)
            .header("content-length", len.to_string());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = req
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| transport("PutObject", key, e))?;
        let (resp, _) = self.check("PutObject", key, resp)?;
        etag("PutObject", key, &resp)
    }

    /// CopyObject: the object at `source_key` (in this bucket) copied to `key` with new
    /// metadata, no body sent. (S3 ignores `If-None-Match` on a copy: the caller makes
    /// sure `key` is free.) At most 5 GiB.
    pub fn copy(&self, key: &str, source_key: &str, attrs: &Attributes) -> Result<String, S3Error> {
        let creds = self.creds()?;
        let mut action = self.bucket.put_object(Some(&creds), key);
        let source_path: Vec<String> = source_key
            .split('/')
            .map(crate::sigv4::uri_encode)
            .collect();
        let source = format!("/{}/{}", self.bucket.name(), source_path.join("/"));
        let mut headers = self.object_headers(attrs);
        headers.push(("x-amz-copy-source".into(), source));
        headers.push(("x-amz-metadata-directive".into(), "REPLACE".into()));
        let url = self.sign_with(&mut action, &headers);
        let mut req = self.agent.put(&url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = req
            .send_empty()
            .map_err(|e| transport("CopyObject", key, e))?;
        let (_, body) = self.check("CopyObject", key, resp)?;
        xml_tag(&body, "ETag")
            .map(|e| e.replace("&quot;", "\"").replace("&#34;", "\""))
            .ok_or_else(|| bad("CopyObject", key, format!("no ETag: {}", excerpt(&body))))
    }

    /// A presigned URL for `method` on `url` (the bucket's or an object's, from rusty-s3)
    /// with `query` and `headers` signed, by our own presigner: for the requests with a
    /// value-less subresource, which AWS's SDKs send as `?uploads` and rusty-s3 as
    /// `?uploads=1` (moto 5.2 answers that with a 500 after creating the upload).
    fn presign(
        &self,
        method: &str,
        url: &url::Url,
        query: &[(String, String)],
        headers: &[(String, String)],
    ) -> Result<String, S3Error> {
        let creds = self
            .credentials
            .current()
            .map_err(|e| S3Error::NoCredentials { why: e.to_string() })?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        let signer = crate::sigv4::Signer {
            access_key_id: &creds.access_key_id,
            secret_access_key: &creds.secret_access_key,
            session_token: creds.session_token.as_deref(),
            region: self.bucket.region(),
            service: "s3",
        };
        let req = crate::sigv4::Presign {
            method,
            host: &host,
            path: url.path(),
            query,
            headers,
            payload: crate::sigv4::Payload::Unsigned,
            expires_seconds: PRESIGN_EXPIRY.as_secs(),
        };
        let signed = signer.presign(&req, crate::clock::signing_now());
        Ok(format!("{}://{host}{}?{signed}", url.scheme(), url.path()))
    }

    /// CreateMultipartUpload, sent as `POST /key?uploads` the way AWS's SDKs send it.
    pub fn create_multipart(
        &self,
        key: &str,
        attrs: &Attributes,
        crc32: bool,
    ) -> Result<String, S3Error> {
        let mut headers = self.object_headers(attrs);
        if crc32 {
            // Each part then carries its CRC-32, which the server checks, and the
            // completion lists them (a composite checksum of the object).
            headers.push(("x-amz-checksum-algorithm".into(), "CRC32".into()));
        }
        let query = [("uploads".to_string(), String::new())];
        let url = self.presign("POST", &self.bucket.object_url(key), &query, &headers)?;
        let mut req = self.agent.post(&url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = req
            .send_empty()
            .map_err(|e| transport("CreateMultipartUpload", key, e))?;
        let (_, body) = self.check("CreateMultipartUpload", key, resp)?;
        let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| bad("CreateMultipartUpload", key, e.to_string()))?;
        let id = parsed.upload_id().to_string();
        if id.is_empty() {
            return Err(bad("CreateMultipartUpload", key, "empty UploadId".into()));
        }
        Ok(id)
    }

    /// The multipart uploads in progress whose key is exactly `key`
    /// (ListMultipartUploads `?uploads&prefix=key`, following pagination): what a
    /// CreateMultipartUpload whose answer was lost left behind.
    pub fn list_multipart_uploads(&self, key: &str) -> Result<Vec<String>, S3Error> {
        const OP: &str = "ListMultipartUploads";
        let mut ids = Vec::new();
        let mut marker: Option<(String, String)> = None;
        // Bounded: a key has a handful of uploads; a server that keeps paginating past
        // this many pages of 1,000 is misbehaving.
        for _ in 0..LIST_UPLOADS_PAGES {
            let mut query = vec![
                ("uploads".to_string(), String::new()),
                ("prefix".to_string(), key.to_string()),
            ];
            if let Some((k, u)) = &marker {
                query.push(("key-marker".into(), k.clone()));
                query.push(("upload-id-marker".into(), u.clone()));
            }
            let url = self.presign("GET", self.bucket.base_url(), &query, &[])?;
            let resp = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| transport(OP, key, e))?;
            let (_, body) = self.check(OP, key, resp)?;
            let page = parse_list_uploads(&body)
                .map_err(|why| bad(OP, key, format!("{why}: {}", excerpt(&body))))?;
            ids.extend(
                page.uploads
                    .into_iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, id)| id),
            );
            match page.next {
                Some(next) if page.truncated && Some(&next) != marker.as_ref() => {
                    marker = Some(next);
                }
                _ => return Ok(ids),
            }
        }
        Err(bad(OP, key, "pagination did not end".into()))
    }

    /// One part of `len` bytes from `body`, the server verifying `md5_b64`
    /// (Content-MD5).
    pub fn upload_part(&self, part: &PartUpload, body: &mut dyn Read) -> Result<String, S3Error> {
        let PartUpload {
            key,
            upload_id,
            number,
            len,
            checksum,
        } = *part;
        let creds = self.creds()?;
        let n =
            u16::try_from(number).map_err(|_| bad("UploadPart", key, format!("part {number}")))?;
        let mut action = self.bucket.upload_part(Some(&creds), key, n, upload_id);
        let header = match checksum {
            PartChecksum::Md5(b64) => ("content-md5".to_string(), b64.to_string()),
            PartChecksum::Crc32(b64) => ("x-amz-checksum-crc32".to_string(), b64.to_string()),
        };
        let url = self.sign_with(&mut action, std::slice::from_ref(&header));
        let resp = self
            .agent
            .put(&url)
            .header("content-length", len.to_string())
            .header(&header.0, &header.1)
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| transport("UploadPart", key, e))?;
        let (resp, _) = self.check("UploadPart", key, resp)?;
        etag("UploadPart", key, &resp)
    }

    /// Every part the server has for the upload, following pagination.
    pub fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ServerPart>, S3Error> {
        let creds = self.creds()?;
        let mut out = Vec::new();
        let mut marker: Option<u16> = None;
        // Bounded: 10,000 parts at 1,000 a page is 10 pages; a server that keeps
        // returning a marker past that is misbehaving.
        for _ in 0..=(crate::limits::MAX_PARTS as usize / LIST_PARTS_PAGE as usize + 1) {
            let mut action = self.bucket.list_parts(Some(&creds), key, upload_id);
            action.set_max_parts(LIST_PARTS_PAGE);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = self.sign(&action);
            let resp = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| transport("ListParts", key, e))?;
            let (_, body) = self.check("ListParts", key, resp)?;
            let page = parse_list_parts(&body)
                .map_err(|why| bad("ListParts", key, format!("{why}: {}", excerpt(&body))))?;
            out.extend(page.parts);
            match page.next_marker {
                Some(next) if page.truncated && Some(next) != marker => marker = Some(next),
                _ => {
                    out.sort_by_key(|p| p.number);
                    return Ok(out);
                }
            }
        }
        Err(bad("ListParts", key, "pagination did not end".into()))
    }

    /// Completes the upload with parts 1..=n in order, only if nothing is at `key` yet
    /// (`If-None-Match: *`). A 200 whose body is an `<Error>` is an error, as S3
    /// documents.
    pub fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
        crc32s: Option<&[String]>,
    ) -> Result<String, S3Error> {
        let creds = self.creds()?;
        let mut action = self.bucket.complete_multipart_upload(
            Some(&creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        action
            .headers_mut()
            .insert("if-none-match", "*".to_string());
        let url = self.sign(&action);
        let body = match crc32s {
            Some(crcs) => complete_body(etags, crcs),
            None => action.body(),
        };
        let resp = self
            .agent
            .post(&url)
            .header("if-none-match", "*")
            .send(body.as_str())
            .map_err(|e| transport("CompleteMultipartUpload", key, e))?;
        let (_, text) = self.check("CompleteMultipartUpload", key, resp)?;
        match rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text) {
            Ok(parsed) => Ok(parsed.etag().to_string()),
            Err(e) => Err(bad(
                "CompleteMultipartUpload",
                key,
                format!("{e}: {}", excerpt(&text)),
            )),
        }
    }

    /// HEAD on the bucket, for `check-config --connect`: what S3 answered, whatever the
    /// status (a 403 only means this identity may not list the bucket).
    pub fn head_bucket(&self) -> Result<BucketAnswer, S3Error> {
        let creds = self.creds()?;
        let action = self.bucket.head_bucket(Some(&creds));
        let url = self.sign(&action);
        let resp = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| transport("HeadBucket", "", e))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(BucketAnswer {
            status: resp.status().as_u16(),
            region: header("x-amz-bucket-region"),
            date: header("date").and_then(|d| crate::clock::parse_http_date(&d)),
        })
    }

    /// GET of `key` from byte `from` on, streamed; with `if_match`, only while the object
    /// still has that ETag (412 otherwise). Used by csv2kafka.
    pub fn get(&self, key: &str, from: u64, if_match: Option<&str>) -> Result<Object, S3Error> {
        let creds = self.creds()?;
        let action = self.bucket.get_object(Some(&creds), key);
        let url = self.sign(&action);
        let mut call = self.agent.get(&url);
        if from > 0 {
            call = call.header("range", format!("bytes={from}-"));
        }
        if let Some(etag) = if_match {
            call = call.header("if-match", etag);
        }
        let resp = call.call().map_err(|e| transport("GetObject", key, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self
                .check("GetObject", key, resp)
                .err()
                .unwrap_or_else(|| bad("GetObject", key, format!("HTTP {status}"))));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut meta = HashMap::new();
        for (name, value) in resp.headers() {
            if let Some(m) = name.as_str().strip_prefix("x-amz-meta-") {
                meta.insert(m.to_string(), value.to_str().unwrap_or("").to_string());
            }
        }
        let length = header("content-length").and_then(|v| v.parse().ok());
        let total = header("content-range")
            .and_then(|r| r.rsplit('/').next().and_then(|t| t.parse().ok()))
            .or(length.map(|l: u64| l + from));
        Ok(Object {
            etag: header("etag").unwrap_or_default(),
            encoding: header("content-encoding"),
            total,
            meta,
            body: Box::new(resp.into_body().into_reader()),
        })
    }

    /// Every key under `prefix` (ListObjectsV2, page by page). Used by csv2kafka.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let creds = self.creds()?;
            let mut action = self.bucket.list_objects_v2(Some(&creds));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = self.sign(&action);
            let resp = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| transport("ListObjectsV2", prefix, e))?;
            let (_, text) = self.check("ListObjectsV2", prefix, resp)?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
                .map_err(|e| bad("ListObjectsV2", prefix, e.to_string()))?;
            out.extend(
                page.contents
                    .into_iter()
                    .map(|c| (c.key, c.size.unwrap_or(0))),
            );
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// DeleteObject (only `check-config --connect --write` deletes: its own test object).
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let creds = self.creds()?;
        let action = self.bucket.delete_object(Some(&creds), key);
        let url = self.sign(&action);
        let resp = self
            .agent
            .delete(&url)
            .call()
            .map_err(|e| transport("DeleteObject", key, e))?;
        self.check("DeleteObject", key, resp).map(|_| ())
    }

    pub fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let creds = self.creds()?;
        let action = self
            .bucket
            .abort_multipart_upload(Some(&creds), key, upload_id);
        let url = self.sign(&action);
        let resp = self
            .agent
            .delete(&url)
            .call()
            .map_err(|e| transport("AbortMultipartUpload", key, e))?;
        match self.check("AbortMultipartUpload", key, resp) {
            Ok(_) => Ok(()),
            // Already gone is what we wanted.
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn build_agent(
    ca_bundle: Option<&std::path::Path>,
    concurrency: usize,
    buffers: Buffers,
) -> Result<Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_bundle {
        let certs = crate::tls::pem_certificates("s3.ca_bundle", path)?;
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    // Shorter in test builds only: the fault tests blackhole connections (crate::knobs).
    let short = crate::knobs::stall_seconds().map(Duration::from_secs_f64);
    let config = with_timeouts(Agent::config_builder(), short)
        .input_buffer_size(buffers.input)
        .output_buffer_size(buffers.output)
        .http_status_as_error(false)
        .tls_config(tls.build())
        .proxy(ureq::Proxy::try_from_env())
        // A redirect of a PUT cannot be followed without resending the body; S3 only
        // redirects to say the region is wrong, which is reported instead.
        .max_redirects(0)
        .user_agent(concat!("tvm-upload/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(concurrency + 4)
        .max_idle_connections_per_host(concurrency + 4)
        .max_idle_age(Duration::from_secs(30))
        .build();
    Ok(Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        crate::resolver::Cached::default(),
    ))
}

/// The agent's timeouts (`short`: the fault tests' stall). A body, sent or received, may
/// take as long as it takes while bytes move: only a read or write that stalls for
/// [`STALL_TIMEOUT`] ends it (a 5 GiB GET or a slow CompleteMultipartUpload answer is
/// never cut at a fixed total).
fn with_timeouts(
    b: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    short: Option<Duration>,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let stall = short.unwrap_or(STALL_TIMEOUT);
    b.timeout_global(None)
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_send_request(Some(short.unwrap_or(SEND_REQUEST_TIMEOUT)))
        .timeout_per_write(Some(stall))
        .timeout_per_read(Some(stall))
        .timeout_recv_response(Some(short.unwrap_or(RECV_RESPONSE_TIMEOUT)))
        .timeout_recv_body(None)
}

fn transport(op: &'static str, key: &str, e: ureq::Error) -> S3Error {
    S3Error::Transport {
        op,
        key: key.to_string(),
        message: crate::redact::redact(&e.to_string()),
    }
}

fn bad(op: &'static str, key: &str, why: String) -> S3Error {
    S3Error::BadAnswer {
        op,
        key: key.to_string(),
        why: crate::redact::redact(&why),
    }
}

/// An answer saying the session token expired or is not valid.
fn token_refused(e: &S3Error) -> bool {
    matches!(
        e.code(),
        Some("ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" | "ExpiredTokenException")
    )
}

/// Reads the body, and turns an error status or an `<Error>` body into an [`S3Error`].
fn check(
    op: &'static str,
    key: &str,
    mut resp: Response<ureq::Body>,
) -> Result<(Response<ureq::Body>, String), S3Error> {
    let status = resp.status().as_u16();
    let corrected = observe_date(&resp);
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_string()
        .map_err(|e| transport(op, key, e))?;
    match answer_error(op, key, status, &body) {
        None => Ok((resp, body)),
        // Refused because it was signed with the local clock, now corrected: a retry
        // signs with the server's time.
        Some(_) if corrected && (400..500).contains(&status) => Err(skewed(op, key)),
        Some(e) => Err(e),
    }
}

/// Compares the answer's `Date` with the signing clock (see [`crate::clock`]); true when
/// that changed the clock offset.
fn observe_date(resp: &Response<ureq::Body>) -> bool {
    resp.headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::clock::observe_server_date)
}

fn skewed(op: &'static str, key: &str) -> S3Error {
    S3Error::Skewed {
        op,
        key: key.to_string(),
    }
}

/// The error an answer carries, if any: an error status, or a 2xx whose body is an
/// `<Error>` (S3 documents this for CompleteMultipartUpload and CopyObject).
fn answer_error(op: &'static str, key: &str, status: u16, body: &str) -> Option<S3Error> {
    let root = body.find('<').map(|i| &body[i..]).unwrap_or("");
    let root = if root.starts_with("<?") {
        root.find("?>").map_or("", |e| root[e + 2..].trim_start())
    } else {
        root
    };
    let is_error_body = root.starts_with("<Error>") || root.starts_with("<Error ");
    if (200..300).contains(&status) && !is_error_body {
        return None;
    }
    let code = xml_tag(body, "Code").unwrap_or_default();
    let message = xml_tag(body, "Message").unwrap_or_default();
    if (200..300).contains(&status) && code.is_empty() {
        return Some(bad(
            op,
            key,
            format!("error body without a code: {}", excerpt(body)),
        ));
    }
    Some(S3Error::Status {
        op,
        key: key.to_string(),
        status,
        code,
        message: crate::redact::redact(&message),
    })
}

fn etag(op: &'static str, key: &str, resp: &Response<ureq::Body>) -> Result<String, S3Error> {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad(op, key, "no ETag header".into()))
}

/// One page of a ListParts answer.
#[derive(Debug, PartialEq)]
struct PartsPage {
    parts: Vec<ServerPart>,
    truncated: bool,
    next_marker: Option<u16>,
}

/// Parses ListPartsResult leniently: some S3-compatible servers (s3s-fs) leave out the
/// parts' `ETag` and list them out of order, which rusty-s3's parser rejects. A part
/// without an ETag gets an empty one; the caller then trusts only its own journal.
fn parse_list_parts(body: &str) -> Result<PartsPage, String> {
    // AWS says ListPartsResult; moto says ListPartsResponse.
    if !body.contains("<ListPartsResult") && !body.contains("<ListPartsResponse") {
        return Err("not a ListPartsResult".into());
    }
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<Part>") {
        let after = &rest[start + "<Part>".len()..];
        let end = after.find("</Part>").ok_or("unclosed <Part>")?;
        let block = &after[..end];
        let number: u32 = xml_tag(block, "PartNumber")
            .and_then(|n| n.parse().ok())
            .ok_or("a part without a PartNumber")?;
        let size: u64 = xml_tag(block, "Size")
            .and_then(|n| n.parse().ok())
            .ok_or("a part without a Size")?;
        let etag = xml_tag(block, "ETag")
            .map(|e| e.replace("&quot;", "\"").replace("&#34;", "\""))
            .unwrap_or_default();
        let crc32 = xml_tag(block, "ChecksumCRC32");
        parts.push(ServerPart {
            number,
            etag,
            size,
            crc32,
        });
        rest = &after[end..];
    }
    let truncated = xml_tag(body, "IsTruncated").is_some_and(|t| t == "true");
    let next_marker = xml_tag(body, "NextPartNumberMarker").and_then(|n| n.parse().ok());
    Ok(PartsPage {
        parts,
        truncated,
        next_marker,
    })
}

/// A CompleteMultipartUpload body listing each part's ETag and CRC-32 (an upload created
/// with `CRC32` must name each part's checksum).
fn complete_body(etags: &[String], crc32s: &[String]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, (etag, crc)) in etags.iter().zip(crc32s).enumerate() {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><ChecksumCRC32>{}</ChecksumCRC32></Part>",
            i + 1,
            xml_escape(etag),
            xml_escape(crc)
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The text of the first `<tag>...</tag>`, for error codes and messages.
/// One page of ListMultipartUploads: (key, upload id) of each upload, and where the
/// next page starts.
struct UploadsPage {
    uploads: Vec<(String, String)>,
    truncated: bool,
    next: Option<(String, String)>,
}

fn parse_list_uploads(body: &str) -> Result<UploadsPage, String> {
    if !body.contains("<ListMultipartUploadsResult") {
        return Err("not a ListMultipartUploadsResult".into());
    }
    let mut uploads = Vec::new();
    for block in body.split("<Upload>").skip(1) {
        let block = block.split("</Upload>").next().unwrap_or("");
        let key = xml_tag(block, "Key").ok_or("an upload without a Key")?;
        let id = xml_tag(block, "UploadId").ok_or("an upload without an UploadId")?;
        uploads.push((xml_unescape(&key), xml_unescape(&id)));
    }
    let truncated = xml_tag(body, "IsTruncated").is_some_and(|t| t == "true");
    let next = match (
        xml_tag(body, "NextKeyMarker"),
        xml_tag(body, "NextUploadIdMarker"),
    ) {
        (Some(k), Some(u)) => Some((xml_unescape(&k), xml_unescape(&u))),
        _ => None,
    };
    Ok(UploadsPage {
        uploads,
        truncated,
        next,
    })
}

/// XML character data as text: the five predefined entities and numeric references.
/// An unknown entity is kept as it is (then the key does not match, and nothing of it
/// is touched).
pub fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim().to_string())
}

fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(600).collect();
    if body.len() > s.len() {
        s.push('…');
    }
    s
}

/// The bare hex of an ETag (`"abc"` → `abc`), for comparing with a local MD5.
pub fn etag_hex(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

#[cfg(test)]
mod timeout_tests {
    use super::*;
    use std::io::{Read, Write};

    /// A body that keeps coming, slowly, for longer than the stall timeout is read
    /// whole; one that stops for longer is cut.
    #[test]
    fn a_slow_body_is_read_whole_and_a_stalled_one_is_cut() {
        for (gap_ms, whole) in [(150, true), (1500, false)] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let server = std::thread::spawn(move || {
                let (mut c, _) = listener.accept().expect("accept");
                let _ = c.read(&mut [0u8; 4096]);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
                for _ in 0..12 {
                    std::thread::sleep(Duration::from_millis(gap_ms));
                    if c.write_all(b"x").is_err() {
                        return;
                    }
                }
            });
            let agent: Agent =
                with_timeouts(Agent::config_builder(), Some(Duration::from_millis(1000)))
                    .build()
                    .into();
            let body = agent
                .get(format!("http://127.0.0.1:{port}/"))
                .call()
                .and_then(|mut r| r.body_mut().read_to_vec());
            assert_eq!(body.is_ok(), whole, "gap {gap_ms} ms: {body:?}");
            let _ = server.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_closed_under_a_request_is_told_from_a_link_down() {
        let transport = |message: &str| S3Error::Transport {
            op: "PutObject",
            key: "k".into(),
            message: message.into(),
        };
        for cut in [
            "io: Broken pipe (os error 32)",
            "io: Connection reset by peer (os error 104)",
            "io: Peer disconnected",
        ] {
            assert!(transport(cut).cut_while_sending(), "{cut}");
        }
        for down in ["io: Connection refused (os error 111)", "timeout: global"] {
            assert!(!transport(down).cut_while_sending(), "{down}");
        }
    }

    #[test]
    fn status_and_code_classify() {
        assert_eq!(classify(403, "SignatureDoesNotMatch"), Class::Credentials);
        assert_eq!(classify(403, "InvalidAccessKeyId"), Class::Credentials);
        assert_eq!(classify(403, ""), Class::Credentials);
        assert_eq!(classify(404, "NoSuchBucket"), Class::Configuration);
        assert_eq!(classify(301, ""), Class::Configuration);
        assert_eq!(classify(503, "SlowDown"), Class::SlowDown);
        assert_eq!(classify(503, ""), Class::SlowDown);
        assert_eq!(classify(500, "InternalError"), Class::Transient);
        assert_eq!(classify(502, ""), Class::Transient);
        assert_eq!(classify(400, "RequestTimeout"), Class::Transient);
        assert_eq!(classify(400, "BadDigest"), Class::ContentChanged);
        assert_eq!(classify(404, "NoSuchUpload"), Class::UploadLost);
        assert_eq!(classify(400, "EntityTooSmall"), Class::UploadLost);
        assert_eq!(classify(400, "KeyTooLongError"), Class::Rejected);
    }

    #[test]
    fn list_parts_tolerates_missing_etags_and_any_order() {
        let body = r#"<?xml version="1.0"?><ListPartsResult xmlns="x"><Part><PartNumber>2</PartNumber>
            <Size>5</Size></Part><Part><PartNumber>1</PartNumber><ETag>&quot;ab&quot;</ETag><Size>5</Size>
            <ChecksumCRC32>ShexVg==</ChecksumCRC32></Part><IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker></ListPartsResult>"#;
        let page = parse_list_parts(body).expect("parse");
        assert_eq!(
            page.parts[0],
            ServerPart {
                number: 2,
                etag: String::new(),
                size: 5,
                crc32: None,
            }
        );
        assert_eq!(
            page.parts[1],
            ServerPart {
                number: 1,
                etag: "\"ab\"".into(),
                size: 5,
                crc32: Some("ShexVg==".into()),
            }
        );
        assert!(page.truncated && page.next_marker == Some(2));
        assert!(parse_list_parts("<Error/>").is_err());
        assert!(parse_list_parts("<ListPartsResult><Part><Size>1</Size></Part>").is_err());
    }

    #[test]
    fn a_completion_with_crcs_names_each_part_its_etag_and_checksum() {
        let body = complete_body(
            &["\"e1\"".into(), "\"e&2\"".into()],
            &["AAAAAA==".into(), "ShexVg==".into()],
        );
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag>\
             <ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber>\
             <ETag>&quot;e&amp;2&quot;</ETag><ChecksumCRC32>ShexVg==</ChecksumCRC32></Part>\
             </CompleteMultipartUpload>"
        );
    }

    #[test]
    fn a_200_with_an_error_body_is_an_error() {
        let body = "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>retry</Message></Error>";
        let e = answer_error("CompleteMultipartUpload", "k", 200, body).expect("error");
        assert_eq!(e.code(), Some("InternalError"));
        assert_eq!(e.class(), Class::Transient);
        let ok = "<?xml version=\"1.0\"?><CompleteMultipartUploadResult><ETag>\"x\"</ETag></CompleteMultipartUploadResult>";
        assert!(answer_error("CompleteMultipartUpload", "k", 200, ok).is_none());
        assert!(answer_error("PutObject", "k", 200, "").is_none());
        let e = answer_error("PutObject", "k", 503, "").expect("error");
        assert_eq!(e.class(), Class::SlowDown);
        let e = answer_error("X", "k", 200, "<Error></Error>").expect("error");
        assert!(matches!(e, S3Error::BadAnswer { .. }));
    }

    #[test]
    fn error_xml_fields_are_read() {
        let body =
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce</Message></Error>";
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(xml_tag(body, "Message").as_deref(), Some("Reduce"));
        assert_eq!(xml_tag("<x/>", "Code"), None);
        assert_eq!(etag_hex("\"d41d8cd9\""), "d41d8cd9");
    }
}
