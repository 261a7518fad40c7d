//! A signed POST to an AWS service other than S3 (CloudWatch's Query API, DynamoDB's
//! JSON API): one ureq agent with short explicit timeouts, SigV4 header signing, the
//! answer's `Date` fed to the signing clock, the answer's body read within a limit.
//! Shared by tvm-upload's metrics and csv2kafka's checkpoints.

use std::time::Duration;

use std::sync::Arc;

use crate::credentials::Provider;

/// Connect (and DNS) and whole-call timeouts. Short: nothing waits on these calls.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest answer read.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

pub struct Client {
    agent: ureq::Agent,
    /// `scheme://host[:port]/`.
    endpoint: String,
    host: String,
    region: String,
    service: &'static str,
    credentials: Arc<Provider>,
}

impl Client {
    /// A client of `service` (SigV4's name: `monitoring`, `dynamodb`) at `endpoint`.
    pub fn new(
        endpoint: &str,
        region: &str,
        service: &'static str,
        user_agent: &str,
        credentials: Arc<Provider>,
    ) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(ureq::Proxy::try_from_env())
            .max_redirects(0)
            .user_agent(user_agent)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .into();
        let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        Client {
            agent,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            host,
            region: region.to_string(),
            service,
            credentials,
        }
    }

    /// POSTs `body` with `headers` (signed, and sent); the status and body of the
    /// answer, or the transport error (redacted). An answer refusing the session token
    /// as expired has the provider fetch new credentials, and is sent once more.
    pub fn post(&self, headers: &[(String, String)], body: &[u8]) -> Result<(u16, String), String> {
        let (status, text) = self.post_once(headers, body)?;
        let refused = ["ExpiredToken", "InvalidToken", "ExpiredTokenException"]
            .iter()
            .any(|code| text.contains(code));
        if (400..500).contains(&status) && refused && self.credentials.is_temporary() {
            self.credentials.refresh_now();
            return self.post_once(headers, body);
        }
        Ok((status, text))
    }

    fn post_once(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(u16, String), String> {
        let credentials = self.credentials.current().map_err(|e| e.to_string())?;
        let signed = crate::sigv4::sign_post(
            &credentials,
            (&self.region, self.service),
            &self.host,
            headers,
            body,
            crate::clock::signing_now(),
        );
        let mut call = self.agent.post(&self.endpoint);
        for (k, v) in headers.iter().chain(&signed) {
            call = call.header(k, v);
        }
        let mut resp = call
            .send(body)
            .map_err(|e| crate::redact::redact(&e.to_string()))?;
        if let Some(date) = resp.headers().get("date").and_then(|v| v.to_str().ok()) {
            crate::clock::observe_server_date(date);
        }
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .unwrap_or_default();
        Ok((status, text))
    }
}
