//! Where the AWS credentials come from, in SPEC.md's order: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, then the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) at `credentials.profile`,
//! else `AWS_PROFILE`, else `default`.
//!
//! Secrets never leave this module in a printable form: [`Credentials`]' `Debug` and
//! [`Credentials::describe`] show only the source and a masked key id.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from, for messages: "environment" or "file PATH [profile]".
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials({}, {})",
            mask(&self.access_key_id),
            self.source
        )
    }
}

/// `AKIA****WXYZ`: enough for an operator to tell keys apart, useless to anyone else.
pub fn mask(key_id: &str) -> String {
    if key_id.len() <= 8 {
        "****".to_string()
    } else {
        format!("{}****{}", &key_id[..4], &key_id[key_id.len() - 4..])
    }
}

#[derive(Debug)]
pub enum CredentialsError {
    /// Neither the environment nor the file had any.
    NotFound { tried: String },
    /// The file exists but the profile is missing or incomplete.
    BadProfile {
        path: PathBuf,
        profile: String,
        why: String,
    },
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::NotFound { tried } => write!(
                f,
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or {tried}"
            ),
            CredentialsError::BadProfile { path, profile, why } => {
                write!(
                    f,
                    "credentials file {} profile [{profile}]: {why}",
                    path.display()
                )
            }
            CredentialsError::Read { path, source } => {
                write!(
                    f,
                    "cannot read credentials file {}: {source}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for CredentialsError {}

impl Credentials {
    /// Resolves credentials with the process environment.
    pub fn resolve(profile: Option<&str>) -> Result<Credentials, CredentialsError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Credentials::resolve_with(profile, &env)
    }

    pub fn resolve_with(
        profile: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, CredentialsError> {
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
                source: "environment".to_string(),
            });
        }
        let path = match env("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => PathBuf::from(p),
            None => match env("HOME") {
                Some(home) => PathBuf::from(home).join(".aws").join("credentials"),
                None => {
                    return Err(CredentialsError::NotFound {
                        tried: "set HOME or AWS_SHARED_CREDENTIALS_FILE for a credentials file"
                            .into(),
                    });
                }
            },
        };
        let profile = profile
            .map(str::to_string)
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CredentialsError::NotFound {
                    tried: format!("create {} with a [{profile}] profile", path.display()),
                });
            }
            Err(source) => return Err(CredentialsError::Read { path, source }),
        };
        let fields = ini_section(&text, &profile).ok_or_else(|| CredentialsError::BadProfile {
            path: path.clone(),
            profile: profile.clone(),
            why: "no such profile".into(),
        })?;
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let missing = |what: &str| CredentialsError::BadProfile {
            path: path.clone(),
            profile: profile.clone(),
            why: format!("{what} is missing"),
        };
        Ok(Credentials {
            access_key_id: get("aws_access_key_id").ok_or_else(|| missing("aws_access_key_id"))?,
            secret_access_key: get("aws_secret_access_key")
                .ok_or_else(|| missing("aws_secret_access_key"))?,
            session_token: get("aws_session_token"),
            source: format!("file {} [{profile}]", path.display()),
        })
    }

    /// What `check-config` prints: the source and the masked key id, never a secret.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source,
            "access_key_id": mask(&self.access_key_id),
            "secret_access_key": "<redacted>",
            "session_token": self.session_token.as_ref().map(|_| "<redacted>"),
        })
    }

    /// One line for `check-config`: where they came from and the masked key id.
    pub fn summary(&self) -> String {
        let token = if self.session_token.is_some() {
            ", with a session token"
        } else {
            ""
        };
        format!(
            "from {} (key id {}{token})",
            self.source,
            mask(&self.access_key_id)
        )
    }

    pub fn to_rusty(&self) -> rusty_s3::Credentials {
        match &self.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(
                &self.access_key_id,
                &self.secret_access_key,
                t,
            ),
            None => rusty_s3::Credentials::new(&self.access_key_id, &self.secret_access_key),
        }
    }
}

/// The `key = value` pairs of `[section]` in INI text, keys lower-cased.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<String> = None;
    let mut found = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            // The config file's style `[profile x]` is accepted too.
            let name = name
                .strip_prefix("profile ")
                .unwrap_or(name)
                .trim()
                .to_string();
            if name == section {
                found.get_or_insert_with(Vec::new);
            }
            current = Some(name);
            continue;
        }
        if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
            && let Some(list) = found.as_mut()
        {
            list.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_comes_first_with_its_session_token() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIAEXAMPLE1234".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("s3cr3t".into()),
            "AWS_SESSION_TOKEN" => Some("tok".into()),
            _ => None,
        };
        let c = Credentials::resolve_with(Some("other"), &env).expect("creds");
        assert_eq!(c.source, "environment");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        let shown = format!("{c:?} {}", c.describe());
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok\""),
            "{shown}"
        );
        assert!(shown.contains("AKIA****1234"));
    }

    #[test]
    fn shared_file_profile_is_read() {
        let dir = std::env::temp_dir().join(format!("tvm-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[fleet]\n\
             aws_access_key_id=F\naws_secret_access_key=FS\naws_session_token = FT\n",
        )
        .expect("write");
        let p = path.to_string_lossy().to_string();
        let env = move |k: &str| (k == "AWS_SHARED_CREDENTIALS_FILE").then(|| p.clone());
        let c = Credentials::resolve_with(Some("fleet"), &env).expect("creds");
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("F", Some("FT"))
        );
        let c = Credentials::resolve_with(None, &env).expect("creds");
        assert_eq!(c.access_key_id, "D");
        let e = Credentials::resolve_with(Some("nope"), &env).expect_err("missing profile");
        assert!(e.to_string().contains("[nope]: no such profile"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
