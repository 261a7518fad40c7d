//! Secrets out of text that may quote them: an HTTP library's error message can carry a
//! presigned URL, whose signature, credential scope and session token must never reach a
//! log or an error shown to an operator.

/// Removes presigned-URL secrets from text that might quote a URL (an HTTP library's
/// error message): the signature, credential scope and session token values.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for marker in [
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
    ] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(marker) {
            let start = from + pos + marker.len();
            let end = out[start..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_signature_credential_and_token() {
        let url = "http://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026&\
                   X-Amz-Security-Token=tok&X-Amz-Signature=abcdef0123 rest";
        let r = redact(url);
        assert!(
            !r.contains("abcdef0123") && !r.contains("AKIA") && !r.contains("tok&"),
            "{r}"
        );
        assert!(r.contains("X-Amz-Signature=***") && r.ends_with(" rest"));
    }
}
