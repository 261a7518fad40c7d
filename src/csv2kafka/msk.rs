//! Amazon MSK IAM authentication (`"sasl.mechanisms": "AWS_MSK_IAM"`): SASL/OAUTHBEARER
//! whose token is a SigV4 query-presigned `GET https://kafka.{region}.amazonaws.com/
//! ?Action=kafka-cluster:Connect` (service `kafka-cluster`, 900 s), a `User-Agent`
//! parameter added after signing, base64url without padding: what AWS's own signers
//! (`aws-msk-iam-sasl-signer-python`, the Java `aws-msk-iam-auth`) send. Signed with the
//! project's SigV4 code and credentials chain. librdkafka asks for a token from inside
//! its poll (a synchronous callback), so [`Tokens`] keeps one ready, renewed on a thread
//! of its own well before it or the credentials expire.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::credentials::Credentials;
use crate::credentials::Provider;
use crate::sigv4::{Payload, Presign, Signer, uri_encode};

/// A token's lifetime, as AWS's signers give it.
pub const EXPIRES_SECONDS: i64 = 900;
/// How a token names its maker.
pub const USER_AGENT: &str = concat!("csv2kafka/", env!("CARGO_PKG_VERSION"));
/// A token is renewed once less than this is left of it.
const RENEW_BEFORE: i64 = 300;

/// A signed token and when it expires (Unix milliseconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub expires_ms: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer credential for the cluster: never printed.
        write!(f, "Token(<redacted>, expires_ms {})", self.expires_ms)
    }
}

/// The token for `region` signed with `creds` at Unix time `t`; it expires 900 s after
/// `t`, or with the credentials if they expire sooner.
pub fn token(creds: &Credentials, region: &str, t: i64, user_agent: &str) -> Token {
    let host = format!("kafka.{region}.amazonaws.com");
    let signer = Signer {
        access_key_id: &creds.access_key_id,
        secret_access_key: &creds.secret_access_key,
        session_token: creds.session_token.as_deref(),
        region,
        service: "kafka-cluster",
    };
    let query = [("Action".to_string(), "kafka-cluster:Connect".to_string())];
    let signed = signer.presign(
        &Presign {
            method: "GET",
            host: &host,
            path: "/",
            query: &query,
            headers: &[],
            payload: Payload::Empty,
            expires_seconds: EXPIRES_SECONDS as u64,
        },
        t,
    );
    let url = format!(
        "https://{host}/?{signed}&User-Agent={}",
        uri_encode(user_agent)
    );
    let expires = creds
        .expires
        .map_or(t + EXPIRES_SECONDS, |e| e.min(t + EXPIRES_SECONDS));
    Token {
        value: base64url(url.as_bytes()),
        expires_ms: expires * 1000,
    }
}

/// Base64 with the URL-safe alphabet and no padding (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The process's token source, once [`install`]ed.
static TOKENS: OnceLock<Tokens> = OnceLock::new();

/// Starts signing tokens for `region` with `provider`'s credentials, for every Kafka
/// client of the process (the first call wins).
pub fn install(provider: Arc<Provider>, region: &str) {
    TOKENS.get_or_init(|| Tokens::start(provider, region.to_string()));
}

/// The token a Kafka client presents now (librdkafka's refresh callback).
pub fn oauth_token() -> Result<rdkafka::client::OAuthToken, String> {
    let tokens = TOKENS
        .get()
        .ok_or("OAUTHBEARER is supported through \"sasl.mechanisms\": \"AWS_MSK_IAM\" only")?;
    let t = tokens.current(Duration::from_secs(30))?;
    Ok(rdkafka::client::OAuthToken {
        token: t.value,
        principal_name: "csv2kafka".into(),
        lifetime_ms: t.expires_ms,
    })
}

/// The token held (or why none could be signed) and its change signal.
type Held = (Mutex<Option<Result<Token, String>>>, Condvar);

/// The current token, kept fresh by a thread of its own.
pub struct Tokens {
    state: Arc<Held>,
}

impl Tokens {
    /// Starts the renewing thread for `region` with credentials from `provider`.
    pub fn start(provider: Arc<Provider>, region: String) -> Tokens {
        let state: Arc<Held> = Arc::default();
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("msk-iam-token".into())
            .spawn(move || renew_forever(&shared, &provider, &region))
            .map(drop)
            .unwrap_or_else(|e| log::error!("MSK IAM token thread: {e}"));
        Tokens { state }
    }

    /// The token to present now: waits up to `wait` for one that has not expired (the
    /// first, or the next when the one held ran out with its credentials).
    pub fn current(&self, wait: Duration) -> Result<Token, String> {
        let (lock, ready) = &*self.state;
        let guard = lock.lock().map_err(|_| "MSK IAM token: lock poisoned")?;
        let expired = |t: &Option<Result<Token, String>>| match t {
            None => true,
            Some(Ok(t)) => t.expires_ms <= crate::clock::system_now() * 1000,
            Some(Err(_)) => false,
        };
        let (guard, _) = ready
            .wait_timeout_while(guard, wait, |t| expired(t))
            .map_err(|_| "MSK IAM token: lock poisoned")?;
        if guard.is_some() && expired(&guard) {
            return Err("MSK IAM token: the last one expired and no new one was signed".into());
        }
        guard
            .clone()
            .unwrap_or_else(|| Err("MSK IAM token: none signed yet (no credentials)".into()))
    }
}

/// Signs a token whenever the one held has less than [`RENEW_BEFORE`] left (or none
/// could be signed: then every few seconds).
fn renew_forever(state: &Held, provider: &Provider, region: &str) {
    loop {
        let now = crate::clock::system_now();
        let signed = provider
            .current()
            .map(|c| token(&c, region, now, USER_AGENT))
            .map_err(|e| format!("MSK IAM token: no credentials to sign with: {e}"));
        let next = match &signed {
            // Renewed RENEW_BEFORE ahead; a token that lives less (short-lived
            // credentials) at half its time left, so it never runs out unrenewed.
            Ok(t) => {
                let left = t.expires_ms / 1000 - now;
                let ahead = if left > 2 * RENEW_BEFORE {
                    left - RENEW_BEFORE
                } else {
                    left / 2
                };
                ahead.clamp(1, 600)
            }
            Err(e) => {
                log::warn!("{e}");
                5
            }
        };
        if let Ok(mut held) = state.0.lock() {
            *held = Some(signed);
            state.1.notify_all();
        }
        std::thread::sleep(Duration::from_secs(next as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(expires: Option<i64>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            source: "test".into(),
            expires,
        }
    }

    fn decode(token: &str) -> String {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in token.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                _ => 63,
            };
            bits = bits << 6 | u32::from(v);
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn base64url_has_no_padding_and_the_url_safe_alphabet() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_token_is_the_presigned_connect_url_and_expires_with_its_credentials() {
        let t = token(&creds(None), "us-east-1", 1_700_000_000, "ua/1");
        let url = decode(&t.value);
        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&\
                 X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20231114%2F\
                 us-east-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20231114T221320Z&\
                 X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="
            ),
            "{url}"
        );
        assert!(url.ends_with("&User-Agent=ua%2F1"), "{url}");
        assert_eq!(t.expires_ms, 1_700_000_900_000);
        let short = token(
            &creds(Some(1_700_000_100)),
            "us-east-1",
            1_700_000_000,
            "ua/1",
        );
        assert_eq!(short.expires_ms, 1_700_000_100_000);
        assert!(!format!("{short:?}").contains(&short.value));
    }
}
