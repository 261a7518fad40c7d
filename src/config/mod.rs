//! The JSON config of SPEC.md, in two stages: serde `Raw*` structs that reject unknown
//! keys, then a validated [`Config`] whose every default and limit is written next to its
//! field. Every error names the field (`s3.part_size`, `sources[1].name`) and the reason.
//!
//! This module reads the config file and the environment variables that stand in for
//! config keys; it does no other IO except checking that source paths are directories.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::pattern::Pattern;
use crate::schedule::{Schedule, Window};

pub(crate) mod json;
mod links;
mod units;

use json::typed;
pub use links::{LinkConfig, OTHER_LINK};
use units::{duration, opt_duration, opt_size, parse_clock, size};
pub use units::{parse_duration, parse_size, parse_utc_offset};

/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// The longest one request body (a part, or a whole file under the multipart threshold)
/// may take at a window's bandwidth cap. Slower, a part may never finish within a window
/// (it starts over in the next), and a request that slow meets the idle timeouts of
/// servers and proxies.
pub const MAX_BODY_SEND: Duration = Duration::from_secs(3600);
/// Uploads in flight at once; each holds one connection and a small read buffer.
pub const MAX_CONCURRENCY: usize = 64;

/// What went wrong with the config, naming the field.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not JSON.
    Syntax { path: PathBuf, message: String },
    /// A field is missing, unknown or has a bad value.
    Field { field: String, reason: String },
}

impl ConfigError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "config {} is not valid JSON: {message}", path.display())
            }
            ConfigError::Field { field, reason } => write!(f, "config field `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The AWS IoT credentials provider's settings (`credentials.iot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotConfig {
    /// `host` (https) or `https://host[:port]`.
    pub endpoint: String,
    pub role_alias: String,
    pub thing_name: String,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// The validated configuration. Defaults are those of SPEC.md.
#[derive(Debug, Clone)]
pub struct Config {
    /// Safe as a key part: `[A-Za-z0-9._-]`, 1 to 64 characters, not `.` or `..`.
    pub vehicle_id: String,
    /// Default `/var/lib/tvm-upload`. Journal, lock and status files live here.
    pub state_dir: PathBuf,
    /// Default 60 s. How long size and mtime must stay unchanged before upload.
    pub stability: Duration,
    /// At least one; names unique and safe as key parts.
    pub sources: Vec<Source>,
    pub s3: S3Config,
    /// `credentials.profile`, else `AWS_PROFILE`, else `default`.
    pub credentials_profile: Option<String>,
    /// `credentials.iot`: the AWS IoT credentials provider, after the container endpoint
    /// in the chain.
    pub credentials_iot: Option<IotConfig>,
    pub retry: RetryConfig,
    /// `None`: always allowed.
    pub schedule: Option<Schedule>,
    /// `None`: no deletion at all.
    pub disk: Option<DiskConfig>,
    /// `None`: absent or `enabled: false`; then no metrics request ever goes out.
    pub metrics: Option<MetricsConfig>,
    pub log: LogConfig,
    /// `links`: the networks uploads go over (none: no link is told apart).
    pub links: Vec<LinkConfig>,
    /// `requests.poll_seconds` (default 300): how often the fleet's request objects are
    /// listed. `None`: 0, never.
    pub requests_poll: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub path: PathBuf,
    /// Default true: subdirectories are watched and their files keyed by relative path.
    pub recursive: bool,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// Default 0; higher goes first.
    pub priority: i32,
    /// Default true; only acted on when `disk` is configured.
    pub delete_after_upload: bool,
    /// Default none. A file still changing after this long is uploaded as a snapshot of
    /// its first bytes (at most once per this long while it keeps changing).
    pub max_wait: Option<Duration>,
    /// `compress: "zstd"` (with `compress_level`, `compress_skip`); default none.
    pub compress: Option<crate::compress::Rule>,
    /// `links`: the only links the source may use (`None`: every link).
    pub links: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `s3.region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: String,
    /// `s3.endpoint`, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS's.
    pub endpoint: String,
    /// Default false (virtual-host style).
    pub path_style: bool,
    /// Default empty. A non-empty prefix without a trailing `/` gets one, so that
    /// `"fleet"` gives `fleet/v001/...` rather than `fleetv001/...`.
    pub prefix: String,
    /// Default 8 MiB. Files of this size or larger go multipart.
    pub multipart_threshold_bytes: u64,
    /// Default 8 MiB, 5 MiB to 5 GiB. Grown for files that would need over 10,000 parts.
    pub part_size_bytes: u64,
    /// Default 2, 1 to [`MAX_CONCURRENCY`]: requests with a body in flight at once.
    pub concurrency: usize,
    pub storage_class: Option<String>,
    /// `s3.ca_bundle`, else `AWS_CA_BUNDLE`; else the built-in web PKI roots.
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// Default 1 s: the first backoff.
    pub initial: Duration,
    /// Default 300 s: the cap, and the slow schedule after a fatal error.
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// Default: the source paths. Filesystems whose usage is measured.
    pub paths: Vec<PathBuf>,
    /// Default 24 h: how long an uploaded file is kept before deferred deletion.
    pub keep_uploaded: Duration,
    /// Default none: uploaded files older than this are deleted.
    pub max_age: Option<Duration>,
    /// Default 85.
    pub cleanup_percent: f64,
    /// Default 95; above `cleanup_percent`.
    pub emergency_percent: f64,
    /// Default false.
    pub emergency_delete_unuploaded: bool,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Default `TVM/Upload`.
    pub namespace: String,
    /// Default: the S3 region.
    pub region: String,
    /// `metrics.endpoint`, else `AWS_ENDPOINT_URL_CLOUDWATCH`, else `AWS_ENDPOINT_URL`,
    /// else AWS's.
    pub endpoint: String,
    /// Default 60 s, at least 1 s.
    pub interval: Duration,
    pub alarms: Vec<Alarm>,
}

#[derive(Debug, Clone)]
pub struct Alarm {
    pub name: String,
    pub metric: String,
    pub statistic: String,
    /// CloudWatch's name: `GreaterThanOrEqualToThreshold` and so on.
    pub comparison: String,
    pub threshold: f64,
    pub period_seconds: u64,
    pub evaluation_periods: u64,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Default info.
    pub level: log::LevelFilter,
    /// Default: stderr.
    pub file: Option<PathBuf>,
    /// Default 10 MiB, at least 64 KiB: `file` is rotated past this size.
    pub max_bytes: u64,
    /// Default 5, 1 to 100: rotated files kept (`<file>.1` to `<file>.<keep>`).
    pub keep: u32,
}

/// `log.max_bytes` by default: with `log.keep` 5, the daemon's log takes at most 60 MiB.
pub const LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The smallest `log.max_bytes`: a few hundred lines.
const LOG_MIN_BYTES: u64 = 64 * 1024;

/// Metric names of SPEC.md, the only ones an alarm may name.
pub const METRIC_NAMES: [&str; 11] = [
    "BytesUploaded",
    "BytesSent",
    "FilesUploaded",
    "FailedUploads",
    "DiskUsagePercent",
    "QueueDepth",
    "QueueBytes",
    "OldestPendingSeconds",
    "FilesDeleted",
    "UnuploadedFilesDeleted",
    "QuarantinedFiles",
];

// ---------------------------------------------------------------------------------------
// Raw stage: what serde reads. Sizes and durations accept a number or a string.

#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    path: PathBuf,
    recursive: Option<bool>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    priority: Option<i32>,
    delete_after_upload: Option<bool>,
    max_wait_seconds: Option<Quantity>,
    compress: Option<String>,
    compress_level: Option<i64>,
    compress_skip: Option<Vec<String>>,
    links: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    prefix: Option<String>,
    multipart_threshold: Option<Quantity>,
    part_size: Option<Quantity>,
    concurrency: Option<i64>,
    storage_class: Option<String>,
    ca_bundle: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    profile: Option<String>,
    iot: Option<RawIot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIot {
    endpoint: String,
    role_alias: String,
    thing_name: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// `credentials.iot`: every field set, the endpoint a host or an https URL.
fn iot_config(raw: RawIot) -> Result<IotConfig, ConfigError> {
    for (name, value) in [
        ("endpoint", &raw.endpoint),
        ("role_alias", &raw.role_alias),
        ("thing_name", &raw.thing_name),
    ] {
        if value.trim().is_empty() {
            return Err(ConfigError::field(
                format!("credentials.iot.{name}"),
                "empty",
            ));
        }
    }
    if raw.endpoint.contains("://") && !raw.endpoint.starts_with("https://") {
        return Err(ConfigError::field(
            "credentials.iot.endpoint",
            "must be a host name or an https:// URL",
        ));
    }
    if raw.role_alias.contains('/') || raw.thing_name.contains(['\r', '\n']) {
        return Err(ConfigError::field(
            "credentials.iot",
            "role_alias without '/', thing_name on one line",
        ));
    }
    Ok(IotConfig {
        endpoint: raw.endpoint,
        role_alias: raw.role_alias,
        thing_name: raw.thing_name,
        cert: raw.cert,
        key: raw.key,
        ca: raw.ca,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_seconds: Option<Quantity>,
    max_seconds: Option<Quantity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    utc_offset: Option<String>,
    windows: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Vec<String>>,
    start: String,
    end: String,
    max_bytes_per_second: Option<Quantity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    paths: Option<Vec<PathBuf>>,
    keep_uploaded_hours: Option<f64>,
    max_age_days: Option<f64>,
    cleanup_percent: Option<f64>,
    emergency_percent: Option<f64>,
    emergency_delete_unuploaded: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<bool>,
    namespace: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    interval_seconds: Option<Quantity>,
    alarms: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarm {
    name: String,
    metric: String,
    statistic: Option<String>,
    comparison: String,
    threshold: f64,
    period_seconds: Option<u64>,
    evaluation_periods: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    poll_seconds: Option<Quantity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    file: Option<PathBuf>,
    max_bytes: Option<Quantity>,
    keep: Option<u32>,
}

const TOP_LEVEL_KEYS: [&str; 13] = [
    "vehicle_id",
    "state_dir",
    "stability_seconds",
    "sources",
    "s3",
    "credentials",
    "retry",
    "schedule",
    "disk",
    "metrics",
    "log",
    "requests",
    "links",
];

fn section<T: DeserializeOwned>(
    top: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    match top.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => typed(name, v).map(Some),
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Reads the file at `path` and hands its text to `parse` with the process environment;
/// a syntax error names the file. Shared with csv2kafka's config.
pub(crate) fn load_with<T>(
    path: &Path,
    parse: impl Fn(&str, &dyn Fn(&str) -> Option<String>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    parse(&text, &env).map_err(|e| match e {
        ConfigError::Syntax { message, .. } => ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    })
}

impl Config {
    /// How this config names objects, so the journal can leave derivable keys out.
    pub fn key_scheme(&self) -> crate::key::KeyScheme {
        crate::key::KeyScheme {
            prefix: self.s3.prefix.clone(),
            vehicle_id: self.vehicle_id.clone(),
            utc_offset_seconds: self.schedule.as_ref().map_or(0, |s| s.utc_offset_seconds),
        }
    }

    /// The compressed sources' rules, by source name.
    pub fn compress_rules(&self) -> std::collections::HashMap<String, crate::compress::Rule> {
        self.sources
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.compress.clone()?)))
            .collect()
    }

    /// Reads and validates the config at `path`, with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load_with(path, Config::parse)
    }

    /// Validates config text; `env` stands in for the process environment.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let value = json::parse(text).map_err(|message| ConfigError::Syntax {
            path: PathBuf::new(),
            message,
        })?;
        let Value::Object(mut top) = value else {
            return Err(ConfigError::field("(top level)", "must be a JSON object"));
        };
        for key in top.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::field(key.clone(), "unknown key"));
            }
        }

        let vehicle_id: String = section(&mut top, "vehicle_id")?
            .ok_or_else(|| ConfigError::field("vehicle_id", "missing"))?;
        check_key_part("vehicle_id", &vehicle_id)?;
        let state_dir: PathBuf =
            section(&mut top, "state_dir")?.unwrap_or_else(|| PathBuf::from("/var/lib/tvm-upload"));
        if !state_dir.is_absolute() {
            return Err(ConfigError::field(
                "state_dir",
                format!(
                    "{:?} is relative: give an absolute path (a daemon's working directory is not \
                     its to choose)",
                    state_dir.display().to_string()
                ),
            ));
        }
        let stability = match section::<Quantity>(&mut top, "stability_seconds")? {
            None => Duration::from_secs(60),
            Some(q) => duration("stability_seconds", q)?,
        };

        let raw_sources: Vec<Value> = section(&mut top, "sources")?
            .ok_or_else(|| ConfigError::field("sources", "missing"))?;
        let sources = sources_config(raw_sources)?;
        check_overlap(&sources)?;
        check_apart(&state_dir, &sources)?;

        let raw_s3: RawS3 =
            section(&mut top, "s3")?.ok_or_else(|| ConfigError::field("s3", "missing"))?;
        let s3 = s3_config(raw_s3, env)?;

        let raw_credentials = section::<RawCredentials>(&mut top, "credentials")?;
        let (credentials_profile, credentials_iot) = match raw_credentials {
            Some(c) => (
                c.profile.filter(|p| !p.is_empty()),
                c.iot.map(iot_config).transpose()?,
            ),
            None => (None, None),
        };

        let retry = retry_config(section::<RawRetry>(&mut top, "retry")?)?;

        let schedule = match section::<RawSchedule>(&mut top, "schedule")? {
            None => None,
            Some(raw) => Some(schedule_config(raw)?),
        };
        if let Some(s) = &schedule {
            check_caps(s, &s3)?;
        }

        let disk = match section::<RawDisk>(&mut top, "disk")? {
            None => None,
            Some(raw) => Some(disk_config(raw, &sources)?),
        };

        let metrics = match section::<RawMetrics>(&mut top, "metrics")? {
            None => None,
            Some(raw) => metrics_config(raw, &s3.region, env)?,
        };

        let log = log_config(section::<RawLog>(&mut top, "log")?)?;
        let requests = section::<RawRequests>(&mut top, "requests")?;
        let poll = opt_duration(
            "requests.poll_seconds",
            requests.and_then(|r| r.poll_seconds),
            300,
        )?;
        let requests_poll = (!poll.is_zero()).then_some(poll);
        let links =
            links::links_config(section::<Vec<Value>>(&mut top, "links")?.unwrap_or_default())?;
        links::check_source_links(&sources, &links)?;

        Ok(Config {
            vehicle_id,
            state_dir,
            stability,
            sources,
            s3,
            credentials_profile,
            credentials_iot,
            retry,
            schedule,
            disk,
            metrics,
            log,
            links,
            requests_poll,
        })
    }

    /// The effective config as JSON, for `check-config`. The config holds no secrets;
    /// the credentials section says only where they come from.
    pub fn to_json(&self, credentials_note: Value) -> Value {
        let secs = |d: Duration| serde_json::json!(d.as_secs_f64());
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "path": s.path, "recursive": s.recursive,
                    "include": s.include.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    "exclude": s.exclude.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    "priority": s.priority, "delete_after_upload": s.delete_after_upload,
                    "max_wait_seconds": s.max_wait.map(secs),
                    "compress": s.compress.as_ref().map(|_| "zstd"),
                    "compress_level": s.compress.as_ref().map(|r| r.level),
                    "compress_skip": s.compress.as_ref().map(|r| r.skip.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                    "links": s.links,
                })
            })
            .collect();
        serde_json::json!({
            "vehicle_id": self.vehicle_id,
            "state_dir": self.state_dir,
            "stability_seconds": secs(self.stability),
            "sources": sources,
            "s3": {
                "bucket": self.s3.bucket, "region": self.s3.region,
                "endpoint": self.s3.endpoint, "path_style": self.s3.path_style,
                "prefix": self.s3.prefix,
                "multipart_threshold": self.s3.multipart_threshold_bytes,
                "part_size": self.s3.part_size_bytes, "concurrency": self.s3.concurrency,
                "storage_class": self.s3.storage_class, "ca_bundle": self.s3.ca_bundle,
            },
            "credentials": credentials_note,
            "retry": { "initial_seconds": secs(self.retry.initial), "max_seconds": secs(self.retry.max) },
            "schedule": self.schedule.as_ref().map(|s| s.to_json()),
            "disk": self.disk.as_ref().map(|d| serde_json::json!({
                "paths": d.paths, "keep_uploaded_hours": d.keep_uploaded.as_secs_f64() / 3600.0,
                "max_age_days": d.max_age.map(|a| a.as_secs_f64() / 86400.0),
                "cleanup_percent": d.cleanup_percent, "emergency_percent": d.emergency_percent,
                "emergency_delete_unuploaded": d.emergency_delete_unuploaded,
            })),
            "metrics": match &self.metrics {
                None => serde_json::json!({ "enabled": false }),
                Some(m) => serde_json::json!({
                    "enabled": true, "namespace": m.namespace, "region": m.region,
                    "endpoint": m.endpoint, "interval_seconds": secs(m.interval),
                    "alarms": m.alarms.iter().map(|a| serde_json::json!({
                        "name": a.name, "metric": a.metric, "statistic": a.statistic,
                        "comparison": a.comparison, "threshold": a.threshold,
                        "period_seconds": a.period_seconds, "evaluation_periods": a.evaluation_periods,
                    })).collect::<Vec<_>>(),
                }),
            },
            "log": {
                "level": self.log.level.to_string().to_lowercase(),
                "file": self.log.file,
                "max_bytes": self.log.max_bytes,
                "keep": self.log.keep,
            },
            "requests": {
                "poll_seconds": self.requests_poll.map_or(0.0, |d| d.as_secs_f64()),
            },
            "links": self.links.iter().map(|l| serde_json::json!({
                "name": l.name,
                "interfaces": l.interfaces.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "daily_bytes": l.daily_bytes, "min_priority": l.min_priority,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Whether `value` is `min` to `max` of `A-Z a-z 0-9 . _ -`, and not `.` or `..`: the
/// alphabet of key parts here, and of Kafka topics and DynamoDB tables in csv2kafka.
pub(crate) fn plain_name(value: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&value.len())
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Vehicle ids, source and alarm names become key parts: keep them to a safe alphabet.
fn check_key_part(field: &str, value: &str) -> Result<(), ConfigError> {
    if plain_name(value, 1, 64) {
        Ok(())
    } else {
        Err(ConfigError::field(
            field,
            format!("{value:?} is not safe as a key part: use 1 to 64 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

fn patterns(field: &str, raw: Option<Vec<String>>) -> Result<Vec<Pattern>, ConfigError> {
    raw.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Pattern::new(&p).map_err(|why| ConfigError::field(format!("{field}[{i}]"), why))
        })
        .collect()
}

/// A source's `compress`, `compress_level` and `compress_skip`: zstd or nothing, a level
/// zstd can keep within a vehicle's memory, and the level and patterns only with zstd.
fn compression(
    field: &str,
    compress: Option<String>,
    level: Option<i64>,
    skip: Option<Vec<String>>,
) -> Result<Option<crate::compress::Rule>, ConfigError> {
    use crate::compress::{DEFAULT_LEVEL, MAX_LEVEL, Rule};
    match compress.as_deref() {
        Some("zstd") => {}
        None | Some("none") => {
            for (name, given) in [
                ("compress_level", level.is_some()),
                ("compress_skip", skip.is_some()),
            ] {
                if given {
                    return Err(ConfigError::field(
                        format!("{field}.{name}"),
                        "only applies with \"compress\": \"zstd\"",
                    ));
                }
            }
            return Ok(None);
        }
        Some(other) => {
            return Err(ConfigError::field(
                format!("{field}.compress"),
                format!("{other:?} is not supported: \"zstd\" or \"none\""),
            ));
        }
    }
    let level = match level {
        None => DEFAULT_LEVEL,
        Some(l) if (1..=i64::from(MAX_LEVEL)).contains(&l) => l as i32,
        Some(l) => {
            return Err(ConfigError::field(
                format!("{field}.compress_level"),
                format!(
                    "{l} is outside 1..={MAX_LEVEL} (3 is zstd's default; above 19 needs too much memory)"
                ),
            ));
        }
    };
    Ok(Some(Rule {
        level,
        skip: patterns(&format!("{field}.compress_skip"), skip)?,
    }))
}

/// Validates `sources`: at least one, names unique and safe as key parts, each path a
/// directory, patterns that parse.
fn sources_config(raw_sources: Vec<Value>) -> Result<Vec<Source>, ConfigError> {
    if raw_sources.is_empty() {
        return Err(ConfigError::field("sources", "needs at least one source"));
    }
    let mut sources = Vec::with_capacity(raw_sources.len());
    let mut names = HashSet::new();
    for (i, raw) in raw_sources.into_iter().enumerate() {
        let field = format!("sources[{i}]");
        let raw: RawSource = typed(&field, raw)?;
        check_key_part(&format!("{field}.name"), &raw.name)?;
        if !names.insert(raw.name.clone()) {
            return Err(ConfigError::field(
                format!("{field}.name"),
                format!("duplicate source name {:?}", raw.name),
            ));
        }
        match std::fs::metadata(&raw.path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConfigError::field(
                    format!("{field}.path"),
                    format!("{} is not a directory", raw.path.display()),
                ));
            }
            Err(e) => {
                return Err(ConfigError::field(
                    format!("{field}.path"),
                    format!("{}: {e}", raw.path.display()),
                ));
            }
        }
        let include = patterns(&format!("{field}.include"), raw.include)?;
        let exclude = patterns(&format!("{field}.exclude"), raw.exclude)?;
        let compress = compression(&field, raw.compress, raw.compress_level, raw.compress_skip)?;
        sources.push(Source {
            compress,
            links: raw.links,
            name: raw.name,
            path: raw.path,
            recursive: raw.recursive.unwrap_or(true),
            include,
            exclude,
            priority: raw.priority.unwrap_or(0),
            delete_after_upload: raw.delete_after_upload.unwrap_or(true),
            max_wait: match raw.max_wait_seconds {
                None => None,
                Some(q) => {
                    let d = duration(&format!("{field}.max_wait_seconds"), q)?;
                    if d.is_zero() {
                        return Err(ConfigError::field(
                            format!("{field}.max_wait_seconds"),
                            "must be above 0 (leave it out for no limit)",
                        ));
                    }
                    Some(d)
                }
            },
        });
    }
    Ok(sources)
}

/// Two sources that see the same file would upload it twice, under two keys: the same
/// directory twice, or one inside a recursive other.
fn check_overlap(sources: &[Source]) -> Result<(), ConfigError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let paths: Vec<PathBuf> = sources.iter().map(|s| canon(&s.path)).collect();
    for (j, inner) in paths.iter().enumerate() {
        for (i, outer) in paths.iter().enumerate().take(j) {
            let (a, b) = (&sources[i], &sources[j]);
            let why = if inner == outer {
                "is the same directory as"
            } else if inner.starts_with(outer) && a.recursive {
                "is inside"
            } else if outer.starts_with(inner) && b.recursive {
                "contains"
            } else {
                continue;
            };
            return Err(ConfigError::field(
                format!("sources[{j}].path"),
                format!(
                    "{} ({:?}) {why} sources[{i}].path {} ({:?}): its files would be uploaded \
                     twice, under two keys; keep sources apart (or use exclude)",
                    b.path.display(),
                    b.name,
                    a.path.display(),
                    a.name
                ),
            ));
        }
    }
    Ok(())
}

/// The state dir inside a source would upload the journal as a log, and a source inside
/// the state dir would upload the daemon's own files.
fn check_apart(state_dir: &Path, sources: &[Source]) -> Result<(), ConfigError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let state_canon = canon(state_dir);
    for (i, s) in sources.iter().enumerate() {
        let src = canon(&s.path);
        if state_canon.starts_with(&src) || src.starts_with(&state_canon) {
            return Err(ConfigError::field(
                "state_dir",
                format!(
                    "{} overlaps sources[{i}].path {}: keep them apart",
                    state_dir.display(),
                    s.path.display()
                ),
            ));
        }
    }
    Ok(())
}

fn retry_config(raw: Option<RawRetry>) -> Result<RetryConfig, ConfigError> {
    Ok(match raw {
        None => RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        },
        Some(r) => {
            let initial = opt_duration("retry.initial_seconds", r.initial_seconds, 1)?;
            let max = opt_duration("retry.max_seconds", r.max_seconds, 300)?;
            if initial.is_zero() {
                return Err(ConfigError::field(
                    "retry.initial_seconds",
                    "must be above 0",
                ));
            }
            if max < initial {
                return Err(ConfigError::field(
                    "retry.max_seconds",
                    "must not be below retry.initial_seconds",
                ));
            }
            RetryConfig { initial, max }
        }
    })
}

fn log_config(raw: Option<RawLog>) -> Result<LogConfig, ConfigError> {
    let raw = raw.unwrap_or(RawLog {
        level: None,
        file: None,
        max_bytes: None,
        keep: None,
    });
    let level = match raw.level.as_deref().unwrap_or("info") {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(ConfigError::field(
                "log.level",
                format!("{other:?} is not one of off, error, warn, info, debug, trace"),
            ));
        }
    };
    let max_bytes = opt_size("log.max_bytes", raw.max_bytes, LOG_MAX_BYTES)?;
    if max_bytes < LOG_MIN_BYTES {
        return Err(ConfigError::field(
            "log.max_bytes",
            format!("{max_bytes} bytes is below the smallest, {LOG_MIN_BYTES} (64KiB)"),
        ));
    }
    let keep = raw.keep.unwrap_or(5);
    if !(1..=100).contains(&keep) {
        return Err(ConfigError::field(
            "log.keep",
            format!("{keep} is outside 1 to 100"),
        ));
    }
    if let Some(f) = &raw.file
        && (f.as_os_str().is_empty() || f.to_string_lossy().ends_with('/'))
    {
        return Err(ConfigError::field(
            "log.file",
            format!("{:?} is not a file path", f.display().to_string()),
        ));
    }
    Ok(LogConfig {
        level,
        file: raw.file,
        max_bytes,
        keep,
    })
}

fn s3_config(raw: RawS3, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Config, ConfigError> {
    let bucket = raw
        .bucket
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ConfigError::field("s3.bucket", "missing"))?;
    check_bucket(&bucket)?;
    let region = raw
        .region
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or_else(|| ConfigError::field("s3.region", "missing (set it, or AWS_REGION)"))?;
    if !region
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ConfigError::field(
            "s3.region",
            format!("{region:?} is not a region name"),
        ));
    }
    let endpoint = raw
        .endpoint
        .filter(|e| !e.is_empty())
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| aws_endpoint("s3", &region));
    check_endpoint("s3.endpoint", &endpoint)?;
    let mut prefix = raw.prefix.unwrap_or_default();
    check_prefix(&prefix)?;
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let (multipart_threshold_bytes, part_size_bytes) =
        part_sizes(raw.multipart_threshold, raw.part_size)?;
    let concurrency = raw.concurrency.unwrap_or(2);
    if concurrency < 1 || concurrency > MAX_CONCURRENCY as i64 {
        return Err(ConfigError::field(
            "s3.concurrency",
            format!("{concurrency} is outside 1 to {MAX_CONCURRENCY}"),
        ));
    }
    let storage_class = raw.storage_class.filter(|s| !s.is_empty());
    if let Some(class) = &storage_class
        && !STORAGE_CLASSES.contains(&class.as_str())
    {
        return Err(ConfigError::field(
            "s3.storage_class",
            format!("{class:?} is not one of {}", STORAGE_CLASSES.join(", ")),
        ));
    }
    let ca_bundle = raw
        .ca_bundle
        .or_else(|| env("AWS_CA_BUNDLE").map(PathBuf::from));
    if let Some(ca) = &ca_bundle
        && !ca.is_file()
    {
        return Err(ConfigError::field(
            "s3.ca_bundle",
            format!("{} is not a readable file", ca.display()),
        ));
    }
    let path_style = raw.path_style.unwrap_or(false);
    if !path_style && host_is_address(&endpoint) {
        return Err(ConfigError::field(
            "s3.path_style",
            format!(
                "must be true with the endpoint {endpoint:?}: an IP address cannot carry \
                 the bucket as a subdomain"
            ),
        ));
    }
    Ok(S3Config {
        bucket,
        region,
        endpoint,
        path_style,
        prefix,
        multipart_threshold_bytes,
        part_size_bytes,
        concurrency: concurrency as usize,
        storage_class,
        ca_bundle,
    })
}

/// Each window's cap must let the largest body (a part, or a file just under the
/// multipart threshold) go within [`MAX_BODY_SEND`].
fn check_caps(schedule: &Schedule, s3: &S3Config) -> Result<(), ConfigError> {
    let body = s3.part_size_bytes.max(s3.multipart_threshold_bytes);
    let least = body.div_ceil(MAX_BODY_SEND.as_secs());
    for (i, w) in schedule.windows.iter().enumerate() {
        if let Some(cap) = w.max_bytes_per_second
            && cap < least
        {
            return Err(ConfigError::field(
                format!("schedule.windows[{i}].max_bytes_per_second"),
                format!(
                    "{cap} bytes/s would take over {} s to send one {body}-byte part: give at \
                     least {least} (or a smaller s3.part_size and s3.multipart_threshold)",
                    MAX_BODY_SEND.as_secs()
                ),
            ));
        }
    }
    Ok(())
}

/// The storage classes S3 accepts on PutObject and CreateMultipartUpload.
pub const STORAGE_CLASSES: [&str; 9] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

/// A prefix is the start of every key: no leading `/`, no empty or `..` segment.
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let why = if prefix.starts_with('/') {
        "must not start with /"
    } else if prefix.contains("//") {
        "contains // (an empty path segment in every key)"
    } else if prefix.split('/').any(|seg| seg == ".." || seg == ".") {
        "contains a . or .. segment (keys are not paths to resolve)"
    } else {
        return Ok(());
    };
    Err(ConfigError::field("s3.prefix", format!("{prefix:?} {why}")))
}

fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::field(
            "s3.bucket",
            format!("{bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)"),
        ))
    }
}

/// `s3.multipart_threshold` and `s3.part_size`, both default 8 MiB, within S3's limits.
fn part_sizes(
    threshold: Option<Quantity>,
    part_size: Option<Quantity>,
) -> Result<(u64, u64), ConfigError> {
    let threshold = opt_size("s3.multipart_threshold", threshold, 8 * 1024 * 1024)?;
    let part_size = opt_size("s3.part_size", part_size, 8 * 1024 * 1024)?;
    if !(MIN_PART_SIZE_BYTES..=MAX_PART_SIZE_BYTES).contains(&part_size) {
        return Err(ConfigError::field(
            "s3.part_size",
            format!("{part_size} bytes is outside S3's 5 MiB to 5 GiB"),
        ));
    }
    if threshold < MIN_PART_SIZE_BYTES {
        return Err(ConfigError::field(
            "s3.multipart_threshold",
            "must be at least 5 MiB (S3's smallest part)",
        ));
    }
    if threshold > MAX_PART_SIZE_BYTES {
        return Err(ConfigError::field(
            "s3.multipart_threshold",
            format!("{threshold} bytes is above 5 GiB, the largest single PUT S3 accepts"),
        ));
    }
    Ok((threshold, part_size))
}

/// AWS's own endpoint for `service` in `region`; China regions live under `.com.cn`.
pub fn aws_endpoint(service: &str, region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://{service}.{region}.amazonaws.com.cn")
    } else {
        format!("https://{service}.{region}.amazonaws.com")
    }
}

pub(crate) fn check_endpoint(field: &str, endpoint: &str) -> Result<(), ConfigError> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::field(
                field,
                format!("{endpoint:?} must start with http:// or https://"),
            )
        })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let bad = |why: &str| Err(ConfigError::field(field, format!("{endpoint:?} {why}")));
    if authority.is_empty() {
        return bad("has no host");
    }
    if !path.is_empty() {
        return bad(
            "has a path: give only scheme, host and port (the bucket comes from s3.bucket; \
             path_style puts it in the path)",
        );
    }
    if authority.contains(['@', '?', '#']) {
        return bad("may hold only a host and a port");
    }
    // The port follows the last `:` unless that is inside an IPv6 address's brackets.
    if let Some((host, port)) = authority.rsplit_once(':')
        && !port.contains(']')
    {
        if host.is_empty() {
            return bad("has no host");
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return bad(&format!("has port {port:?}: a port is 1 to 65535"));
        }
    }
    Ok(())
}

/// Whether an endpoint's host is an IP address (checked by [`check_endpoint`] first).
pub(crate) fn host_is_address(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.starts_with('[') {
        return true;
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

fn schedule_config(raw: RawSchedule) -> Result<Schedule, ConfigError> {
    let utc_offset_seconds = match raw.utc_offset.as_deref() {
        None => 0,
        Some(text) => parse_utc_offset(text).ok_or_else(|| {
            ConfigError::field(
                "schedule.utc_offset",
                format!("{text:?} is not like +08:00 or -05:30"),
            )
        })?,
    };
    let Some(raw_windows) = raw.windows else {
        // Only the offset given (for the dates in keys): always allowed.
        return Ok(Schedule {
            utc_offset_seconds,
            windows: vec![Window {
                days: [true; 7],
                start_minute: 0,
                end_minute: 24 * 60,
                max_bytes_per_second: None,
            }],
        });
    };
    let mut windows = Vec::new();
    for (i, value) in raw_windows.into_iter().enumerate() {
        let field = format!("schedule.windows[{i}]");
        let w: RawWindow = typed(&field, value)?;
        let mut days = [false; 7];
        match w.days {
            None => days = [true; 7],
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::field(format!("{field}.days"), "is empty"));
                }
                for d in list {
                    let idx = crate::schedule::weekday_index(&d).ok_or_else(|| {
                        ConfigError::field(
                            format!("{field}.days"),
                            format!("{d:?} is not one of mon..sun"),
                        )
                    })?;
                    days[idx] = true;
                }
            }
        }
        let start = parse_clock(&w.start)
            .filter(|m| *m < 24 * 60)
            .ok_or_else(|| {
                ConfigError::field(
                    format!("{field}.start"),
                    format!("{:?} is not a time HH:MM", w.start),
                )
            })?;
        let end = parse_clock(&w.end).ok_or_else(|| {
            ConfigError::field(
                format!("{field}.end"),
                format!("{:?} is not a time HH:MM", w.end),
            )
        })?;
        if start == end {
            return Err(ConfigError::field(
                format!("{field}.end"),
                "equals start: an empty window (use 00:00 to 24:00 for all day)",
            ));
        }
        let max_bytes_per_second = match w.max_bytes_per_second {
            None => None,
            Some(q) => {
                let v = size(&format!("{field}.max_bytes_per_second"), q)?;
                if v == 0 {
                    return Err(ConfigError::field(
                        format!("{field}.max_bytes_per_second"),
                        "must be above 0",
                    ));
                }
                Some(v)
            }
        };
        windows.push(Window {
            days,
            start_minute: start,
            end_minute: end,
            max_bytes_per_second,
        });
    }
    if windows.is_empty() {
        return Err(ConfigError::field(
            "schedule.windows",
            "is empty: nothing would ever upload (leave `windows` out to always upload)",
        ));
    }
    Ok(Schedule {
        utc_offset_seconds,
        windows,
    })
}

fn disk_config(raw: RawDisk, sources: &[Source]) -> Result<DiskConfig, ConfigError> {
    let paths = raw
        .paths
        .unwrap_or_else(|| sources.iter().map(|s| s.path.clone()).collect());
    let hours = raw.keep_uploaded_hours.unwrap_or(24.0);
    if !(hours.is_finite() && hours >= 0.0) {
        return Err(ConfigError::field(
            "disk.keep_uploaded_hours",
            "must be 0 or more",
        ));
    }
    let max_age = match raw.max_age_days {
        None => None,
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d * 86400.0)),
        Some(_) => return Err(ConfigError::field("disk.max_age_days", "must be above 0")),
    };
    let cleanup_percent = percent("disk.cleanup_percent", raw.cleanup_percent, 85.0)?;
    let emergency_percent = percent("disk.emergency_percent", raw.emergency_percent, 95.0)?;
    if emergency_percent <= cleanup_percent {
        return Err(ConfigError::field(
            "disk.emergency_percent",
            format!(
                "{emergency_percent} must be above disk.cleanup_percent ({cleanup_percent}): \
                 emergency deletion starts where cleanup could not help"
            ),
        ));
    }
    Ok(DiskConfig {
        paths,
        keep_uploaded: Duration::from_secs_f64(hours * 3600.0),
        max_age,
        cleanup_percent,
        emergency_percent,
        emergency_delete_unuploaded: raw.emergency_delete_unuploaded.unwrap_or(false),
    })
}

/// A percent of disk usage: above 1 and at most 100. A fraction such as 0.85 would mean
/// "over 0.85% full", which deletes on almost any disk: it is refused, naming the fix.
fn percent(field: &str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if v > 1.0 && v <= 100.0 {
        return Ok(v);
    }
    let hint = if v > 0.0 && v <= 1.0 {
        let pct = (v * 10_000.0).round() / 100.0;
        format!(": percents are written 1 to 100, not as a fraction (for {pct}% write {pct})")
    } else {
        " (for example 85)".to_string()
    };
    Err(ConfigError::field(
        field,
        format!("{v} is not a percent above 1 and at most 100{hint}"),
    ))
}

fn metrics_config(
    raw: RawMetrics,
    s3_region: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let namespace = raw.namespace.unwrap_or_else(|| "TVM/Upload".to_string());
    if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
        return Err(ConfigError::field(
            "metrics.namespace",
            "must be 1-255 characters and not start with AWS/",
        ));
    }
    let region = raw
        .region
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| s3_region.to_string());
    let endpoint = raw
        .endpoint
        .filter(|e| !e.is_empty())
        .or_else(|| env("AWS_ENDPOINT_URL_CLOUDWATCH"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| aws_endpoint("monitoring", &region));
    check_endpoint("metrics.endpoint", &endpoint)?;
    let interval = opt_duration("metrics.interval_seconds", raw.interval_seconds, 60)?;
    if interval < Duration::from_secs(1) {
        return Err(ConfigError::field(
            "metrics.interval_seconds",
            "must be at least 1",
        ));
    }
    let alarms = alarms_config(raw.alarms.unwrap_or_default())?;
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(MetricsConfig {
        namespace,
        region,
        endpoint,
        interval,
        alarms,
    }))
}

/// `metrics.alarms`: names unique and safe, each alarm valid.
fn alarms_config(raw: Vec<Value>) -> Result<Vec<Alarm>, ConfigError> {
    let mut alarms: Vec<Alarm> = Vec::new();
    for (i, value) in raw.into_iter().enumerate() {
        let field = format!("metrics.alarms[{i}]");
        let a: RawAlarm = typed(&field, value)?;
        if alarms.iter().any(|x| x.name == a.name) {
            return Err(ConfigError::field(
                format!("{field}.name"),
                format!("duplicate alarm name {:?}", a.name),
            ));
        }
        alarms.push(alarm_config(&field, a)?);
    }
    Ok(alarms)
}

/// One alarm, at `field` (`metrics.alarms[i]`).
fn alarm_config(field: &str, a: RawAlarm) -> Result<Alarm, ConfigError> {
    check_key_part(&format!("{field}.name"), &a.name)?;
    if !METRIC_NAMES.contains(&a.metric.as_str()) {
        return Err(ConfigError::field(
            format!("{field}.metric"),
            format!("{:?} is not one of {}", a.metric, METRIC_NAMES.join(", ")),
        ));
    }
    let statistic = a.statistic.unwrap_or_else(|| "Sum".to_string());
    if !["Sum", "Average", "Minimum", "Maximum", "SampleCount"].contains(&statistic.as_str()) {
        return Err(ConfigError::field(
            format!("{field}.statistic"),
            format!("{statistic:?} is not one of Sum, Average, Minimum, Maximum, SampleCount"),
        ));
    }
    let comparison = match a.comparison.as_str() {
        ">=" => "GreaterThanOrEqualToThreshold",
        ">" => "GreaterThanThreshold",
        "<" => "LessThanThreshold",
        "<=" => "LessThanOrEqualToThreshold",
        other => {
            return Err(ConfigError::field(
                format!("{field}.comparison"),
                format!("{other:?} is not one of >=, >, <, <="),
            ));
        }
    };
    if !a.threshold.is_finite() {
        return Err(ConfigError::field(
            format!("{field}.threshold"),
            "must be a finite number",
        ));
    }
    let period_seconds = a.period_seconds.unwrap_or(300);
    if !(period_seconds == 10
        || period_seconds == 30
        || (period_seconds >= 60 && period_seconds.is_multiple_of(60)))
    {
        return Err(ConfigError::field(
            format!("{field}.period_seconds"),
            format!("{period_seconds} is not 10, 30 or a multiple of 60"),
        ));
    }
    let evaluation_periods = a.evaluation_periods.unwrap_or(1);
    if evaluation_periods == 0 {
        return Err(ConfigError::field(
            format!("{field}.evaluation_periods"),
            "must be at least 1",
        ));
    }
    Ok(Alarm {
        name: a.name,
        metric: a.metric,
        statistic,
        comparison: comparison.to_string(),
        threshold: a.threshold,
        period_seconds,
        evaluation_periods,
    })
}

#[cfg(test)]
mod tests;
