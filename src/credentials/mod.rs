//! Where the AWS credentials come from, in SPEC.md's order: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) at `credentials.profile`,
//! else `AWS_PROFILE`, else `default`, with its keys or its `credential_process`; the
//! container endpoint; the AWS IoT credentials provider (`credentials.iot`); EC2
//! instance metadata (IMDSv2) unless `AWS_EC2_METADATA_DISABLED=true`. The chain picks
//! its source without touching the network ([`Source::choose`]); a [`Provider`] keeps
//! that source's credentials fresh (see `provider.rs`).
//!
//! Secrets never leave this module in a printable form: [`Credentials`]' `Debug` and
//! [`Credentials::describe`] show only the source and a masked key id.

mod provider;
pub mod sources;

use std::fmt;
use std::path::PathBuf;

pub use provider::Provider;
pub use sources::{IotConfig, Token};

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they came from, for messages: "environment" or "file PATH [profile]".
    pub source: String,
    /// When they expire (Unix seconds), for temporary credentials.
    pub expires: Option<i64>,
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
    /// No source in the chain is set up.
    NotFound { tried: String },
    /// A source is set up wrongly (a container endpoint over http to a far host).
    Setup(String),
    /// The source did not give credentials now.
    Fetch { source: String, why: String },
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
            CredentialsError::Setup(why) => f.write_str(why),
            CredentialsError::Fetch { source, why } => {
                write!(f, "no valid credentials from {source}: {why}")
            }
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

/// Where the chain's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The environment's or a profile's keys: fixed, re-read when S3 refuses them.
    Static(StaticSource),
    Process {
        command: String,
        profile: String,
    },
    Container {
        uri: String,
        token: Token,
    },
    Iot(IotConfig),
    Imds {
        endpoint: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticSource {
    Environment,
    File { path: PathBuf, profile: String },
}

/// The process environment, empty values as unset.
pub fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl Source {
    /// The first source of the chain that is set up, without touching the network.
    pub fn choose(
        profile: Option<&str>,
        iot: Option<&IotConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Source, CredentialsError> {
        if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some() {
            return Ok(Source::Static(StaticSource::Environment));
        }
        if let Some(source) = profile_source(profile, env)? {
            return Ok(source);
        }
        if let Some(source) = container_source(env)? {
            return Ok(source);
        }
        if let Some(c) = iot {
            return Ok(Source::Iot(c.clone()));
        }
        if env("AWS_EC2_METADATA_DISABLED").is_none_or(|v| !v.eq_ignore_ascii_case("true")) {
            let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".into());
            return Ok(Source::Imds { endpoint });
        }
        let file = credentials_path(env).map_or_else(
            || "a shared credentials file (HOME is not set)".to_string(),
            |p| format!("a [default] profile in {}", p.display()),
        );
        Err(CredentialsError::NotFound {
            tried: format!(
                "{file}, AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, or \
                 credentials.iot (instance metadata is disabled)"
            ),
        })
    }

    /// The source's name in messages (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Source::Static(StaticSource::Environment) => "environment".into(),
            Source::Static(StaticSource::File { path, profile }) => {
                format!("file {} [{profile}]", path.display())
            }
            Source::Process { profile, .. } => format!("credential_process of [{profile}]"),
            Source::Container { uri, .. } => format!("container endpoint {uri}"),
            Source::Iot(c) => format!(
                "IoT credentials provider {} (role alias {}, thing {})",
                c.endpoint, c.role_alias, c.thing_name
            ),
            Source::Imds { endpoint } => format!("instance metadata {endpoint}"),
        }
    }

    /// Fetches (or reads) credentials now.
    pub fn fetch(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, CredentialsError> {
        let fetched = match self {
            Source::Static(StaticSource::Environment) => environment(env),
            Source::Static(StaticSource::File { path, profile }) => {
                return file_keys(path, profile);
            }
            Source::Process { command, .. } => sources::process(command),
            Source::Container { uri, token } => sources::container(uri, token),
            Source::Iot(c) => sources::iot(c),
            Source::Imds { endpoint } => sources::imds(endpoint),
        };
        let mut c = fetched.map_err(|why| CredentialsError::Fetch {
            source: self.describe(),
            why,
        })?;
        c.source = self.describe();
        Ok(c)
    }
}

fn environment(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, String> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            source: String::new(),
            expires: None,
        }),
        _ => Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are no longer set".into()),
    }
}

/// The shared credentials file's profile, if the file has it: its keys, or its
/// `credential_process`. A profile named by the config or `AWS_PROFILE` must exist.
fn profile_source(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Source>, CredentialsError> {
    let Some(path) = credentials_path(env) else {
        return Ok(None);
    };
    let named = profile.map(str::to_string).or_else(|| env("AWS_PROFILE"));
    let name = named.clone().unwrap_or_else(|| "default".into());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError::NotFound {
                tried: format!("create {} with a [{name}] profile", path.display()),
            });
        }
        Err(source) => return Err(CredentialsError::Read { path, source }),
    };
    let Some(fields) = ini_section(&text, &name) else {
        return match named {
            None => Ok(None),
            Some(_) => Err(CredentialsError::BadProfile {
                path,
                profile: name,
                why: "no such profile".into(),
            }),
        };
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if get("aws_access_key_id").is_none()
        && let Some(command) = get("credential_process")
    {
        return Ok(Some(Source::Process {
            command,
            profile: name,
        }));
    }
    file_keys(&path, &name)?;
    Ok(Some(Source::Static(StaticSource::File {
        path,
        profile: name,
    })))
}

/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
fn credentials_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join("credentials")))
}

/// The keys of `profile` in the file at `path`.
fn file_keys(path: &std::path::Path, profile: &str) -> Result<Credentials, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |why: String| CredentialsError::BadProfile {
        path: path.to_path_buf(),
        profile: profile.to_string(),
        why,
    };
    let fields = ini_section(&text, profile).ok_or_else(|| bad("no such profile".into()))?;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Ok(Credentials {
        access_key_id: get("aws_access_key_id")
            .ok_or_else(|| bad("aws_access_key_id is missing".into()))?,
        secret_access_key: get("aws_secret_access_key")
            .ok_or_else(|| bad("aws_secret_access_key is missing".into()))?,
        session_token: get("aws_session_token"),
        source: format!("file {} [{profile}]", path.display()),
        expires: None,
    })
}

/// The container endpoint, when `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`
/// is set; the token file wins over the token, as in AWS's SDKs.
fn container_source(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Source>, CredentialsError> {
    let uri = match (
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(rel), _) => format!("http://169.254.170.2{rel}"),
        (None, Some(full)) => {
            sources::container_uri(&full).map_err(|e| {
                CredentialsError::Setup(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {e}"))
            })?;
            full
        }
        (None, None) => return Ok(None),
    };
    let token = match (
        env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    ) {
        (Some(file), _) => Token::File(PathBuf::from(file)),
        (None, Some(v)) => Token::Value(v),
        (None, None) => Token::None,
    };
    Ok(Some(Source::Container { uri, token }))
}

/// What `check-config` prints of the chain: the source it would use, and for fixed
/// keys their masked id; never a secret, and no network.
pub fn describe_chain(profile: Option<&str>, iot: Option<&IotConfig>) -> serde_json::Value {
    match Source::choose(profile, iot, &process_env) {
        Ok(source @ Source::Static(_)) => match source.fetch(&process_env) {
            Ok(c) => c.describe(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        Ok(source) => serde_json::json!({ "source": source.describe(), "temporary": true }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

impl Credentials {
    /// What `check-config` prints: the source and the masked key id, never a secret.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source,
            "access_key_id": mask(&self.access_key_id),
            "secret_access_key": "<redacted>",
            "session_token": self.session_token.as_ref().map(|_| "<redacted>"),
            "expires": self.expires.and_then(|e| jiff::Timestamp::from_second(e).ok())
                .map(|t| t.to_string()),
        })
    }

    /// One line for `check-config`: where they came from and the masked key id.
    pub fn summary(&self) -> String {
        let token = if self.session_token.is_some() {
            ", with a session token"
        } else {
            ""
        };
        let until = match self
            .expires
            .and_then(|e| jiff::Timestamp::from_second(e).ok())
        {
            Some(t) => format!(", valid until {t}"),
            None => String::new(),
        };
        format!(
            "from {} (key id {}{token}{until})",
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
            "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some("http://127.0.0.1:1/c".into()),
            _ => None,
        };
        let source = Source::choose(Some("other"), None, &env).expect("source");
        assert_eq!(source, Source::Static(StaticSource::Environment));
        let c = source.fetch(&env).expect("creds");
        assert_eq!(c.source, "environment");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        let shown = format!("{c:?} {}", c.describe());
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok\""),
            "{shown}"
        );
        assert!(shown.contains("AKIA****1234"));
    }

    fn file_env(dir: &std::path::Path, text: &str) -> impl Fn(&str) -> Option<String> + use<> {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join("credentials");
        std::fs::write(&path, text).expect("write");
        let p = path.to_string_lossy().to_string();
        move |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(p.clone()),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            _ => None,
        }
    }

    #[test]
    fn shared_file_profile_is_read() {
        let dir = std::env::temp_dir().join(format!("tvm-creds-{}", std::process::id()));
        let env = file_env(
            &dir,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[fleet]\n\
             aws_access_key_id=F\naws_secret_access_key=FS\naws_session_token = FT\n\n\
             [proc]\ncredential_process = echo hi\n",
        );
        let fetch = |p: Option<&str>| Source::choose(p, None, &env).and_then(|s| s.fetch(&env));
        let c = fetch(Some("fleet")).expect("creds");
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("F", Some("FT"))
        );
        assert_eq!(fetch(None).expect("creds").access_key_id, "D");
        let e = fetch(Some("nope")).expect_err("missing profile");
        assert!(e.to_string().contains("[nope]: no such profile"));
        let source = Source::choose(Some("proc"), None, &env).expect("source");
        assert!(matches!(&source, Source::Process { command, .. } if command == "echo hi"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_chain_goes_on_to_the_container_iot_and_metadata() {
        let dir = std::env::temp_dir().join(format!("tvm-creds-chain-{}", std::process::id()));
        // The file lacks the default profile: not an error unless a profile was named.
        let files = file_env(
            &dir,
            "[other]\naws_access_key_id = O\naws_secret_access_key = OS\n",
        );
        let iot = IotConfig {
            endpoint: "x.credentials.iot.cn-north-1.amazonaws.com.cn".into(),
            role_alias: "tvm-upload".into(),
            thing_name: "v001".into(),
            cert: "c".into(),
            key: "k".into(),
            ca: "a".into(),
        };
        assert_eq!(
            Source::choose(None, Some(&iot), &files).expect("iot"),
            Source::Iot(iot.clone())
        );
        let container = |k: &str| match k {
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => Some("/v2/credentials/x".into()),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN" => Some("t".into()),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" => Some("/run/token".into()),
            other => files(other),
        };
        assert_eq!(
            Source::choose(None, Some(&iot), &container).expect("container"),
            Source::Container {
                uri: "http://169.254.170.2/v2/credentials/x".into(),
                token: Token::File("/run/token".into())
            }
        );
        let far = |k: &str| match k {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some("http://10.1.2.3/creds".into()),
            other => files(other),
        };
        let e = Source::choose(None, None, &far).expect_err("http far away");
        assert!(e.to_string().contains("use https"), "{e}");
        let e = Source::choose(None, None, &files).expect_err("nothing");
        assert!(
            e.to_string().contains("instance metadata is disabled"),
            "{e}"
        );
        let imds = |k: &str| match k {
            "AWS_EC2_METADATA_SERVICE_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "AWS_EC2_METADATA_DISABLED" => None,
            other => files(other),
        };
        assert_eq!(
            Source::choose(None, None, &imds).expect("imds"),
            Source::Imds {
                endpoint: "http://127.0.0.1:9".into()
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
