//! The temporary-credential providers, each written from AWS's documentation of its
//! protocol: a profile's `credential_process`, the container endpoint (ECS, Fargate,
//! Greengrass's token exchange service), the AWS IoT credentials provider (mutual TLS),
//! and EC2 instance metadata (IMDSv2). Each fetch gives [`Credentials`] with their
//! expiry, or an error that names the cause and never carries a secret.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Credentials;

/// Connect and whole-call timeouts of a provider: they answer locally or close by.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// IMDS answers within a millisecond where it exists; elsewhere it must not hold a start.
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a `credential_process` may run.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read from a provider.
const MAX_ANSWER: u64 = 64 * 1024;

pub use crate::config::IotConfig;

/// The container endpoint's authorization: none, a value, or a file re-read at every
/// fetch (ECS and EKS rotate it).
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    None,
    Value(String),
    File(PathBuf),
}

impl std::fmt::Debug for Token {
    /// The token is a credential: a `{:?}` of a source never shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::None => write!(f, "None"),
            Token::Value(_) => write!(f, "Value(<redacted>)"),
            Token::File(p) => write!(f, "File({p:?})"),
        }
    }
}

/// Runs `command` (with `sh -c`, as a profile writes it) and reads the credentials it
/// prints (`Version` 1, `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`).
pub fn process(command: &str) -> Result<Credentials, String> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("credential_process could not start: {e}"))?;
    // Both pipes are read while it runs: a process that writes more than a pipe holds
    // (64 KiB) would otherwise block until it is killed.
    let stdout = child.stdout.take().map(|s| drain(s, MAX_ANSWER));
    let stderr = child.stderr.take().map(|s| drain(s, 400));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > PROCESS_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("credential_process ran over 60 s and was killed".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("credential_process: {e}")),
        }
    };
    let joined = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (out, err) = (joined(stdout), joined(stderr));
    if !status.success() {
        let said = err.lines().next().unwrap_or("").trim();
        return Err(format!("credential_process failed ({status}): {said}"));
    }
    let v: Value = serde_json::from_str(&out)
        .map_err(|_| "credential_process printed something that is not JSON".to_string())?;
    if v.get("Version").and_then(Value::as_u64) != Some(1) {
        return Err("credential_process printed JSON without \"Version\": 1".into());
    }
    from_json(
        &v,
        [
            "AccessKeyId",
            "SecretAccessKey",
            "SessionToken",
            "Expiration",
        ],
    )
    .map_err(|e| format!("credential_process: {e}"))
}

/// Reads the first `limit` bytes of a child's pipe on a thread, and the rest into the
/// void, until it closes (a background process holding it open keeps the thread, not us).
fn drain(mut pipe: impl Read + Send + 'static, limit: u64) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut pipe).take(limit).read_to_string(&mut text);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        text
    })
}

/// Checks a container endpoint: http only to loopback (`localhost` included, for
/// Greengrass) or the ECS and EKS link-local addresses; https anywhere.
pub fn container_uri(uri: &str) -> Result<(), String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("{uri:?} is not a URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    match scheme {
        "https" if !host.is_empty() => Ok(()),
        "http" if allowed_http_host(host) => Ok(()),
        "http" => Err(format!(
            "{uri}: http is allowed only to loopback or 169.254.170.2 / 169.254.170.23; use https"
        )),
        _ => Err(format!("{uri}: not an http or https URL")),
    }
}

fn allowed_http_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => true,
        Ok(ip) => ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
            .iter()
            .any(|a| a.parse::<std::net::IpAddr>().is_ok_and(|x| x == ip)),
        Err(_) => false,
    }
}

/// GETs the container endpoint's credentials (`AccessKeyId`, `SecretAccessKey`,
/// `Token`, `Expiration`).
pub fn container(uri: &str, token: &Token) -> Result<Credentials, String> {
    let mut call = plain_agent(CALL_TIMEOUT).get(uri);
    let value = match token {
        Token::None => None,
        Token::Value(v) => Some(v.clone()),
        Token::File(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
    };
    if let Some(v) = value {
        if v.contains(['\r', '\n']) {
            return Err("the container authorization token holds a line break".into());
        }
        call = call.header("Authorization", v);
    }
    let answer = call.call().map_err(|e| redact(&e))?;
    let v = json_answer(answer, "it")?;
    from_json(
        &v,
        ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"],
    )
}

/// GETs `/role-aliases/{alias}/credentials` from the AWS IoT credentials provider with
/// the device certificate, the server checked against `ca`.
pub fn iot(c: &IotConfig) -> Result<Credentials, String> {
    let agent = iot_agent(c)?;
    let base = if c.endpoint.contains("://") {
        c.endpoint.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", c.endpoint.trim_end_matches('/'))
    };
    let url = format!("{base}/role-aliases/{}/credentials", c.role_alias);
    let answer = agent
        .get(&url)
        .header("x-amzn-iot-thingname", &c.thing_name)
        .call()
        .map_err(|e| tls_hint(&redact(&e)))?;
    let status = answer.status().as_u16();
    let what = "it";
    match status {
        403 => Err(format!(
            "{what} refused the device certificate (403): is it registered, active, attached \
             to thing {} and allowed iot:AssumeRoleWithCertificate on role alias {}?",
            c.thing_name, c.role_alias
        )),
        404 => Err(format!("role alias {} not found (404)", c.role_alias)),
        _ => {
            let v = json_answer(answer, what)?;
            let inner = v.get("credentials").cloned().unwrap_or(Value::Null);
            from_json(
                &inner,
                [
                    "accessKeyId",
                    "secretAccessKey",
                    "sessionToken",
                    "expiration",
                ],
            )
        }
    }
}

/// What a TLS failure with the IoT provider most likely means.
fn tls_hint(said: &str) -> String {
    if said.contains("invalid peer certificate") {
        format!("{said}: the provider's certificate does not chain to credentials.iot.ca")
    } else if said.contains("fatal alert") {
        format!("{said}: the provider refused the device certificate (credentials.iot.cert)")
    } else {
        said.to_string()
    }
}

/// An agent that presents the device certificate and trusts only `ca`: any of the
/// three unreadable is named.
fn iot_agent(c: &IotConfig) -> Result<ureq::Agent, String> {
    use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, parse_pem};
    let certs = crate::tls::pem_certificates("credentials.iot.cert", &c.cert)?;
    let key_pem = std::fs::read(&c.key)
        .map_err(|e| format!("credentials.iot.key {}: {e}", c.key.display()))?;
    let key = parse_pem(&key_pem)
        .find_map(|i| match i {
            Ok(PemItem::PrivateKey(k)) => Some(k),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "credentials.iot.key {}: no private key in it",
                c.key.display()
            )
        })?;
    let roots = crate::tls::pem_certificates("credentials.iot.ca", &c.ca)?;
    let tls = TlsConfig::builder()
        .client_cert(Some(ClientCert::new_with_certs(&certs, key)))
        .root_certs(RootCerts::new_with_certs(&roots))
        .build();
    Ok(agent_builder(CALL_TIMEOUT).tls_config(tls).build().into())
}

/// IMDSv2: a session token (PUT), the role's name, then its credentials.
pub fn imds(endpoint: &str) -> Result<Credentials, String> {
    let base = endpoint.trim_end_matches('/');
    let agent = plain_agent(IMDS_TIMEOUT);
    let what = "it";
    let fail = |e: ureq::Error| redact(&e);
    let token = agent
        .put(&format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send_empty()
        .map_err(fail)
        .and_then(|a| text_answer(a, what))?;
    let path = format!("{base}/latest/meta-data/iam/security-credentials/");
    let role = agent
        .get(&path)
        .header("X-aws-ec2-metadata-token", token.trim())
        .call()
        .map_err(fail)
        .and_then(|a| text_answer(a, what))?;
    let role = role.lines().next().unwrap_or("").trim().to_string();
    if role.is_empty() {
        return Err("no IAM role attached to this instance".to_string());
    }
    let answer = agent
        .get(&format!("{path}{role}"))
        .header("X-aws-ec2-metadata-token", token.trim())
        .call()
        .map_err(fail)?;
    let v = json_answer(answer, what)?;
    if let Some(code) = v.get("Code").and_then(Value::as_str)
        && code != "Success"
    {
        return Err(format!("role {role}: {code}"));
    }
    from_json(
        &v,
        ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"],
    )
}

fn agent_builder(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("tvm-upload/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT)))
        .timeout_resolve(Some(timeout.min(CONNECT_TIMEOUT)))
        .timeout_global(Some(timeout))
}

/// Providers are local (or link-local): no proxy, whatever `HTTPS_PROXY` says.
fn plain_agent(timeout: Duration) -> ureq::Agent {
    agent_builder(timeout).build().into()
}

fn text_answer(mut answer: ureq::http::Response<ureq::Body>, what: &str) -> Result<String, String> {
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| redact(&e))?;
    if !(200..300).contains(&status) {
        // Error bodies of these providers carry no secret; keep them short.
        let said: String = body.chars().take(200).collect();
        return Err(format!("{what} answered {status}: {}", said.trim()));
    }
    Ok(body)
}

fn json_answer(answer: ureq::http::Response<ureq::Body>, what: &str) -> Result<Value, String> {
    let body = text_answer(answer, what)?;
    serde_json::from_str(&body).map_err(|_| format!("{what} answered something that is not JSON"))
}

/// A transport error's text with anything after `?` in a URL cut (none of ours carry
/// secrets there, but a proxy's URL might carry a password).
fn redact(e: &ureq::Error) -> String {
    crate::redact::redact(&e.to_string())
}

/// Credentials from the named fields of `v`: key id, secret, token and expiry (RFC 3339).
pub fn from_json(v: &Value, [id, secret, token, expiry]: [&str; 4]) -> Result<Credentials, String> {
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let expires = match field(expiry) {
        Some(text) => Some(
            text.parse::<jiff::Timestamp>()
                .map_err(|_| format!("{expiry} {text:?} is not an RFC 3339 time"))?
                .as_second(),
        ),
        None => None,
    };
    Ok(Credentials {
        access_key_id: field(id).ok_or_else(|| format!("no {id} in the answer"))?,
        secret_access_key: field(secret).ok_or_else(|| format!("no {secret} in the answer"))?,
        session_token: field(token),
        source: String::new(),
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_token_is_never_printed() {
        let shown = format!("{:?}", Token::Value("secret-auth-token".into()));
        assert!(!shown.contains("secret-auth-token"), "{shown}");
        assert_eq!(format!("{:?}", Token::File("/t".into())), "File(\"/t\")");
    }

    #[test]
    fn answers_are_read_with_their_expiry() {
        let v = serde_json::json!({"AccessKeyId": "ASIA1", "SecretAccessKey": "s",
            "Token": "t", "Expiration": "2026-11-22T16:30:00Z"});
        let c = from_json(
            &v,
            ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"],
        )
        .expect("credentials");
        assert_eq!(c.expires, Some(1_795_365_000));
        assert_eq!(c.session_token.as_deref(), Some("t"));
        let bad = serde_json::json!({"AccessKeyId": "A", "SecretAccessKey": "s",
            "Expiration": "tomorrow"});
        let e = from_json(
            &bad,
            ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"],
        )
        .expect_err("bad time");
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        let e = from_json(&serde_json::json!({}), ["a", "b", "c", "d"]).expect_err("empty");
        assert_eq!(e, "no a in the answer");
    }

    #[test]
    fn container_endpoints_allow_http_only_close_by() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://localhost:8090/2016-11-01/credentialprovider/",
            "http://169.254.170.2/v2/credentials/x",
            "http://169.254.170.23/v1/credentials",
            "http://[::1]:80/c",
            "https://creds.example.com/c",
        ] {
            assert_eq!(container_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/c",
            "http://example.com/c",
            "ftp://x/y",
            "nope",
        ] {
            assert!(container_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_credential_process_is_run_and_checked() {
        let c = process(
            r#"echo '{"Version": 1, "AccessKeyId": "AK", "SecretAccessKey": "SK", "SessionToken": "T", "Expiration": "2030-01-01T00:00:00Z"}'"#,
        )
        .expect("credentials");
        assert_eq!(
            (c.access_key_id.as_str(), c.expires),
            ("AK", Some(1_893_456_000))
        );
        let e = process("echo oops; echo 'bad thing' >&2; exit 3").expect_err("fails");
        assert!(e.contains("failed") && e.contains("bad thing"), "{e}");
        // More than a pipe holds on stderr (and on stdout) does not block it.
        let started = Instant::now();
        let c = process(
            r#"head -c 300000 /dev/zero >&2; head -c 100000 /dev/zero | tr '\0' ' '; echo '{"Version": 1, "AccessKeyId": "AK", "SecretAccessKey": "SK"}'"#,
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            c.is_err_and(|e| e.contains("not JSON")),
            "the answer was cut at its limit"
        );
        let e = process("head -c 300000 /dev/zero >&2; exit 4").expect_err("fails");
        assert!(e.contains("failed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let e = process("echo garbage").expect_err("garbage");
        assert!(e.contains("not JSON"), "{e}");
        let e = process(r#"echo '{"AccessKeyId": "A"}'"#).expect_err("no version");
        assert!(e.contains("Version"), "{e}");
    }
}
