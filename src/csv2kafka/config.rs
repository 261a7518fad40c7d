//! csv2kafka's JSON config (SPEC-csv2kafka.md, "Config"), read with tvm-upload's strict
//! reader: unknown keys, duplicate keys and type errors are errors naming the field.
//! Endpoints and regions follow the AWS conventions, the environment filling what the
//! file leaves out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::json;
use crate::config::{ConfigError, aws_endpoint, check_endpoint, host_is_address, plain_name};

#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: Kafka,
    pub s3: S3,
    pub checkpoint: Checkpoint,
    pub csv: Csv,
    pub metrics: Option<Metrics>,
    pub log_level: log::LevelFilter,
}

#[derive(Debug, Clone)]
pub struct Kafka {
    pub bootstrap_servers: String,
    pub topic: String,
    pub key_column: Option<String>,
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties, passed as they are (after ours, so they win, except the
    /// ones exactly-once needs: see [`FORCED`]).
    pub properties: BTreeMap<String, String>,
    /// How long the brokers may stay unreachable before the job fails (default 120 s).
    pub connect_timeout: Duration,
    /// The properties as `check-config` shows them: secrets redacted, values read from
    /// the environment shown as `env:NAME`.
    pub shown: BTreeMap<String, String>,
    /// Amazon MSK IAM authentication (`"sasl.mechanisms": "AWS_MSK_IAM"`): the region
    /// its tokens are signed for.
    pub msk_iam: Option<String>,
}

/// Whether a librdkafka property holds a secret (never shown, logged or echoed).
pub fn is_secret(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.starts_with("sasl.oauthbearer.")
        || key == "ssl.key.pem"
        || key == "ssl_key"
        || key == "sasl.username"
}

/// Properties exactly-once depends on; setting them otherwise is refused.
/// Whether `checkpoint.verify` is on unless configured: off, because reading every row
/// back roughly doubled the wall time of a job (docs/BENCHMARKS.md), far above the 10%
/// it was allowed to cost as a default.
pub const VERIFY_DEFAULT: bool = false;

pub const FORCED: [(&str, &str); 2] = [("enable.idempotence", "true"), ("acks", "all")];

#[derive(Debug, Clone)]
pub struct S3 {
    pub region: String,
    pub endpoint: String,
    pub path_style: bool,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub table: String,
    pub region: String,
    pub endpoint: String,
    pub interval_lines: u64,
    pub lease: Duration,
    /// Read the job's rows back from Kafka before COMPLETED, sending again any the
    /// broker lost ([`super::job`]).
    pub verify: bool,
}

#[derive(Debug, Clone)]
pub struct Csv {
    pub delimiter: u8,
    pub header: bool,
    /// The longest record read as a row (default 1 MiB, at most 64 MiB); a longer one is
    /// malformed, dead-lettered by its first this many bytes.
    pub max_record_bytes: usize,
    /// Columns whose values are JSON numbers or booleans (`csv.columns`).
    pub columns: BTreeMap<String, super::values::Kind>,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub namespace: String,
    pub region: String,
    pub endpoint: String,
    pub interval: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kafka: RawKafka,
    #[serde(default)]
    s3: Option<RawS3>,
    #[serde(default)]
    checkpoint: Option<RawCheckpoint>,
    #[serde(default)]
    csv: Option<RawCsv>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    log: Option<RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    bootstrap_servers: String,
    topic: String,
    key_column: Option<String>,
    dead_letter_topic: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, serde_json::Value>,
    connect_timeout_seconds: Option<u64>,
    region: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    table: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    interval_lines: Option<u64>,
    lease_seconds: Option<u64>,
    verify: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    delimiter: Option<String>,
    header: Option<bool>,
    max_record_bytes: Option<serde_json::Value>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<bool>,
    namespace: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    interval_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

fn field(name: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::field(name, why)
}

impl Config {
    /// How long the producer may take to land a row: a quarter of the lease, or
    /// `message.timeout.ms` from `kafka.properties` when that is shorter
    /// ([`super::lease`]).
    pub fn delivery(&self) -> Duration {
        let configured = self
            .kafka
            .properties
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        super::lease::Lease::delivery_bound(self.checkpoint.lease, configured)
    }

    /// Reads and validates the config at `path`, with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        crate::config::load_with(path, Config::parse)
    }

    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let value = json::parse(text).map_err(|message| ConfigError::Syntax {
            path: PathBuf::new(),
            message,
        })?;
        let raw: Raw = json::typed("", value)?;
        let s3 = s3_config(raw.s3.unwrap_or_default(), env)?;
        let checkpoint = checkpoint_config(raw.checkpoint.unwrap_or_default(), &s3.region, env)?;
        let metrics = metrics_config(raw.metrics, &s3.region, env)?;
        Ok(Config {
            kafka: kafka_config(raw.kafka, &s3.region, env)?,
            csv: csv_config(raw.csv.unwrap_or_default())?,
            log_level: level(raw.log.unwrap_or_default().level.as_deref())?,
            s3,
            checkpoint,
            metrics,
        })
    }

    /// The effective config, for `check-config` (nothing secret is in it).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kafka": {
                "bootstrap_servers": self.kafka.bootstrap_servers,
                "topic": self.kafka.topic,
                "key_column": self.kafka.key_column,
                "dead_letter_topic": self.kafka.dead_letter_topic,
                "connect_timeout_seconds": self.kafka.connect_timeout.as_secs(),
                "properties": self.kafka.shown,
                "msk_iam_region": self.kafka.msk_iam,
            },
            "s3": {"region": self.s3.region, "endpoint": self.s3.endpoint, "path_style": self.s3.path_style},
            "checkpoint": {"table": self.checkpoint.table, "region": self.checkpoint.region,
                "endpoint": self.checkpoint.endpoint, "interval_lines": self.checkpoint.interval_lines,
                "lease_seconds": self.checkpoint.lease.as_secs(), "verify": self.checkpoint.verify},
            "csv": {"delimiter": (self.csv.delimiter as char).to_string(), "header": self.csv.header,
                    "max_record_bytes": self.csv.max_record_bytes,
                    "columns": self.csv.columns.iter().map(|(k, v)| (k.clone(), format!("{v:?}").to_lowercase())).collect::<BTreeMap<_, _>>()},
            "metrics": self.metrics.as_ref().map(|m| serde_json::json!({
                "namespace": m.namespace, "region": m.region, "endpoint": m.endpoint,
                "interval_seconds": m.interval.as_secs()})),
        })
    }
}

fn kafka_config(
    raw: RawKafka,
    s3_region: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Kafka, ConfigError> {
    if raw.bootstrap_servers.trim().is_empty() {
        return Err(field("kafka.bootstrap_servers", "is empty"));
    }
    check_topic("kafka.topic", &raw.topic)?;
    if let Some(t) = &raw.dead_letter_topic {
        check_topic("kafka.dead_letter_topic", t)?;
        if *t == raw.topic {
            return Err(field(
                "kafka.dead_letter_topic",
                "is the same topic as kafka.topic: malformed rows would mix with good ones",
            ));
        }
    }
    if raw.key_column.as_deref() == Some("") {
        return Err(field("kafka.key_column", "is empty (leave it out or null)"));
    }
    let mut properties = BTreeMap::new();
    let mut shown = BTreeMap::new();
    for (k, v) in raw.properties {
        let at = format!("kafka.properties.{k}");
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(field(&at, "must be a string, number or boolean")),
        };
        // `env:NAME`: how ECS injects a secret from Secrets Manager.
        let (text, show) = match text.strip_prefix("env:") {
            Some(name) => match env(name) {
                Some(value) => (value, format!("env:{name}")),
                None => {
                    return Err(field(
                        &at,
                        format!("reads the environment variable {name}, which is not set"),
                    ));
                }
            },
            None if is_secret(&k) => (text, "<redacted>".to_string()),
            None => (text.clone(), text),
        };
        if let Some((_, want)) = FORCED.iter().find(|(name, _)| *name == k)
            && text != *want
        {
            return Err(field(
                &at,
                format!("must be {want}: exactly-once delivery depends on it"),
            ));
        }
        if k == "bootstrap.servers" || k == "transactional.id" {
            return Err(field(&at, "is set by csv2kafka itself"));
        }
        shown.insert(k.clone(), show);
        properties.insert(k, text);
    }
    let msk_iam = msk_iam(&mut properties, raw.region, s3_region)?;
    let connect = raw.connect_timeout_seconds.unwrap_or(120);
    if !(1..=86_400).contains(&connect) {
        return Err(field(
            "kafka.connect_timeout_seconds",
            format!("{connect} is outside 1 to 86400"),
        ));
    }
    Ok(Kafka {
        bootstrap_servers: raw.bootstrap_servers,
        topic: raw.topic,
        key_column: raw.key_column,
        dead_letter_topic: raw.dead_letter_topic,
        properties,
        connect_timeout: Duration::from_secs(connect),
        shown,
        msk_iam,
    })
}

/// `"sasl.mechanisms": "AWS_MSK_IAM"` becomes librdkafka's OAUTHBEARER over TLS with
/// csv2kafka's own token (see [`super::msk`]); the region its tokens are signed for.
fn msk_iam(
    properties: &mut BTreeMap<String, String>,
    region: Option<String>,
    s3_region: &str,
) -> Result<Option<String>, ConfigError> {
    let mechanism = properties
        .get("sasl.mechanisms")
        .or_else(|| properties.get("sasl.mechanism"));
    if mechanism.map(String::as_str) != Some("AWS_MSK_IAM") {
        if region.is_some() {
            return Err(field(
                "kafka.region",
                "is only for \"sasl.mechanisms\": \"AWS_MSK_IAM\"",
            ));
        }
        return Ok(None);
    }
    match properties.get("security.protocol").map(String::as_str) {
        None | Some("SASL_SSL") | Some("sasl_ssl") => {}
        Some(other) => {
            return Err(field(
                "kafka.properties.security.protocol",
                format!("is {other}, but AWS_MSK_IAM needs SASL_SSL (MSK's IAM port, 9098)"),
            ));
        }
    }
    properties.remove("sasl.mechanism");
    properties.insert("sasl.mechanisms".into(), "OAUTHBEARER".into());
    properties.insert("security.protocol".into(), "SASL_SSL".into());
    Ok(Some(region.unwrap_or_else(|| s3_region.to_string())))
}

fn check_topic(name: &str, topic: &str) -> Result<(), ConfigError> {
    if plain_name(topic, 1, 249) {
        Ok(())
    } else {
        Err(field(
            name,
            format!("{topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
        ))
    }
}

fn region(
    name: &str,
    given: Option<String>,
    fallback: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    given
        .or_else(|| fallback.map(str::to_string))
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or_else(|| field(name, "missing (set it, or AWS_REGION)"))
}

fn endpoint(
    name: &str,
    given: Option<String>,
    service_env: &str,
    service: &str,
    region: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let e = given
        .or_else(|| env(service_env))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| aws_endpoint(service, region));
    let e = e.trim_end_matches('/').to_string();
    check_endpoint(name, &e)?;
    Ok(e)
}

fn s3_config(raw: RawS3, env: &dyn Fn(&str) -> Option<String>) -> Result<S3, ConfigError> {
    let region = region("s3.region", raw.region, None, env)?;
    let endpoint = endpoint(
        "s3.endpoint",
        raw.endpoint,
        "AWS_ENDPOINT_URL_S3",
        "s3",
        &region,
        env,
    )?;
    let path_style = raw.path_style.unwrap_or(false);
    if !path_style && host_is_address(&endpoint) {
        return Err(field(
            "s3.path_style",
            format!("must be true with the endpoint {endpoint:?}"),
        ));
    }
    Ok(S3 {
        region,
        endpoint,
        path_style,
        ca_bundle: env("AWS_CA_BUNDLE").map(PathBuf::from),
    })
}

fn checkpoint_config(
    raw: RawCheckpoint,
    s3_region: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Checkpoint, ConfigError> {
    let table = raw.table.unwrap_or_else(|| "csv2kafka-checkpoints".into());
    if !plain_name(&table, 3, 255) {
        return Err(field(
            "checkpoint.table",
            format!("{table:?} is not a DynamoDB table name (3-255 of a-z A-Z 0-9 . _ -)"),
        ));
    }
    let region = region("checkpoint.region", raw.region, Some(s3_region), env)?;
    let endpoint = endpoint(
        "checkpoint.endpoint",
        raw.endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB",
        "dynamodb",
        &region,
        env,
    )?;
    let interval_lines = raw.interval_lines.unwrap_or(10_000);
    if !(1..=10_000_000).contains(&interval_lines) {
        return Err(field(
            "checkpoint.interval_lines",
            format!("{interval_lines} is outside 1 to 10000000"),
        ));
    }
    let lease = raw.lease_seconds.unwrap_or(60);
    if !(5..=3600).contains(&lease) {
        return Err(field(
            "checkpoint.lease_seconds",
            format!("{lease} is outside 5 to 3600"),
        ));
    }
    Ok(Checkpoint {
        table,
        region,
        endpoint,
        interval_lines,
        lease: Duration::from_secs(lease),
        verify: raw.verify.unwrap_or(VERIFY_DEFAULT),
    })
}

fn csv_config(raw: RawCsv) -> Result<Csv, ConfigError> {
    let delimiter = match raw.delimiter.as_deref() {
        None => b',',
        Some("\\t") | Some("\t") => b'\t',
        Some(d) if d.len() == 1 && d != "\"" && d != "\n" && d != "\r" => d.as_bytes()[0],
        Some(d) => {
            return Err(field(
                "csv.delimiter",
                format!("{d:?} must be one ASCII character other than a quote or line break"),
            ));
        }
    };
    let max_record_bytes = match &raw.max_record_bytes {
        None => super::csv::MAX_RECORD_BYTES as u64,
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(t)) => crate::config::parse_size(t).unwrap_or(0),
        Some(_) => 0,
    };
    if !(1024..=64 << 20).contains(&max_record_bytes) {
        return Err(field(
            "csv.max_record_bytes",
            format!(
                "{} must be a size from 1KiB to 64MiB (bytes, or text such as \"4MiB\")",
                raw.max_record_bytes
                    .as_ref()
                    .map_or(String::new(), ToString::to_string)
            ),
        ));
    }
    let mut columns = BTreeMap::new();
    for (name, kind) in raw.columns {
        let parsed = super::values::Kind::parse(&kind).ok_or_else(|| {
            field(
                &format!("csv.columns.{name}"),
                format!("{kind:?} is not a type (number, bool or string)"),
            )
        })?;
        columns.insert(name, parsed);
    }
    Ok(Csv {
        delimiter,
        header: raw.header.unwrap_or(true),
        max_record_bytes: max_record_bytes as usize,
        columns,
    })
}

fn metrics_config(
    raw: Option<RawMetrics>,
    s3_region: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Metrics>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let region = region("metrics.region", raw.region, Some(s3_region), env)?;
    let endpoint = endpoint(
        "metrics.endpoint",
        raw.endpoint,
        "AWS_ENDPOINT_URL_CLOUDWATCH",
        "monitoring",
        &region,
        env,
    )?;
    let namespace = raw.namespace.unwrap_or_else(|| "TVM/CsvToKafka".into());
    if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
        return Err(field(
            "metrics.namespace",
            format!("{namespace:?} must be 1-255 characters, not starting with AWS/"),
        ));
    }
    let interval = raw.interval_seconds.unwrap_or(10);
    if !(1..=3600).contains(&interval) {
        return Err(field(
            "metrics.interval_seconds",
            format!("{interval} is outside 1 to 3600"),
        ));
    }
    Ok(Some(Metrics {
        namespace,
        region,
        endpoint,
        interval: Duration::from_secs(interval),
    }))
}

fn level(text: Option<&str>) -> Result<log::LevelFilter, ConfigError> {
    Ok(match text.unwrap_or("info") {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(field(
                "log.level",
                format!("{other:?} is not one of off, error, warn, info, debug, trace"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let env = |k: &str| (k == "AWS_REGION").then(|| "eu-west-1".to_string());
        Config::parse(text, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn the_spec_example_is_accepted_with_its_defaults() {
        let c = parse(
            r#"{"kafka": {"bootstrap_servers": "b:9092", "topic": "t",
                "properties": {"compression.type": "zstd", "linger.ms": 5}}}"#,
        )
        .expect("valid");
        assert_eq!(c.checkpoint.table, "csv2kafka-checkpoints");
        assert_eq!(c.checkpoint.interval_lines, 10_000);
        assert_eq!(c.s3.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(c.kafka.properties["linger.ms"], "5");
        assert!(c.metrics.is_none());
        assert_eq!(c.csv.delimiter, b',');
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "a b"}}"#,
                "`kafka.topic`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t", "x": 1}}"#,
                "`kafka.x`: unknown key",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t",
                "properties": {"enable.idempotence": false}}}"#,
                "`kafka.properties.enable.idempotence`: must be true",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t", "dead_letter_topic": "t"}}"#,
                "`kafka.dead_letter_topic`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t"}, "checkpoint": {"interval_lines": 0}}"#,
                "`checkpoint.interval_lines`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t"}, "checkpoint": {"lease_seconds": "60"}}"#,
                "`checkpoint.lease_seconds`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t"}, "csv": {"delimiter": ",,"}}"#,
                "`csv.delimiter`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t"}, "s3": {"endpoint": "http://127.0.0.1:9"}}"#,
                "`s3.path_style`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "b", "topic": "t"}, "metrics": {"namespace": "AWS/x"}}"#,
                "`metrics.namespace`",
            ),
            (
                r#"{"kafka": {"bootstrap_servers": "", "topic": "t"}}"#,
                "`kafka.bootstrap_servers`",
            ),
            (
                r#"{"kafka": {"topic": "t"}}"#,
                "`kafka.bootstrap_servers`: missing",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    /// `{"kafka": {...kafka}, ...rest}`.
    fn with(kafka: &str, rest: &str) -> String {
        format!(r#"{{"kafka": {{"bootstrap_servers": "b:9092", "topic": "t"{kafka}}}{rest}}}"#)
    }

    #[test]
    fn more_bad_configs_name_the_field() {
        let cases = [
            (with(r#", "key_column": """#, ""), "`kafka.key_column`"),
            (
                with(r#", "properties": {"a": [1]}"#, ""),
                "`kafka.properties.a`: must be a string",
            ),
            (
                with(r#", "properties": {"acks": "1"}"#, ""),
                "`kafka.properties.acks`: must be all",
            ),
            (
                with(r#", "properties": {"bootstrap.servers": "x"}"#, ""),
                "is set by csv2kafka",
            ),
            (
                with(r#", "properties": {"transactional.id": "x"}"#, ""),
                "is set by csv2kafka",
            ),
            (
                with(r#", "properties": {"sasl.password": "env:NOPE"}"#, ""),
                "NOPE, which is not set",
            ),
            (
                with(r#", "connect_timeout_seconds": 0"#, ""),
                "`kafka.connect_timeout_seconds`",
            ),
            (
                with(r#", "region": "eu-west-1""#, ""),
                "`kafka.region`: is only for",
            ),
            (
                with(
                    r#", "properties": {"sasl.mechanisms": "AWS_MSK_IAM", "security.protocol": "SSL"}"#,
                    "",
                ),
                "`kafka.properties.security.protocol`: is SSL",
            ),
            (
                with(r#", "dead_letter_topic": "a/b""#, ""),
                "`kafka.dead_letter_topic`",
            ),
            (
                with("", r#", "checkpoint": {"table": "x"}"#),
                "`checkpoint.table`",
            ),
            (
                with("", r#", "checkpoint": {"lease_seconds": 4}"#),
                "`checkpoint.lease_seconds`",
            ),
            (
                with("", r#", "checkpoint": {"endpoint": "ftp://x"}"#),
                "`checkpoint.endpoint`",
            ),
            (
                with("", r#", "csv": {"max_record_bytes": 0}"#),
                "`csv.max_record_bytes`",
            ),
            (
                with("", r#", "csv": {"columns": {"speed": "float"}}"#),
                "`csv.columns.speed`",
            ),
            (
                with("", r#", "metrics": {"interval_seconds": 0}"#),
                "`metrics.interval_seconds`",
            ),
            (
                with("", r#", "metrics": {"endpoint": "x"}"#),
                "`metrics.endpoint`",
            ),
            (with("", r#", "log": {"level": "loud"}"#), "`log.level`"),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "{text}: {err}");
        }
        let env = |_: &str| None;
        let e = Config::parse(&with("", ""), &env).expect_err("no region anywhere");
        assert!(e.to_string().contains("`s3.region`: missing"), "{e}");
    }

    #[test]
    fn secrets_are_read_from_the_environment_and_never_shown() {
        let env = |k: &str| match k {
            "AWS_REGION" => Some("eu-west-1".to_string()),
            "C2K_PASSWORD" => Some("hunter2-secret".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:4566/".to_string()),
            _ => None,
        };
        let text = with(
            r#", "properties": {"sasl.password": "env:C2K_PASSWORD", "sasl.username": "fleet",
                "ssl.key.password": "plain-secret", "linger.ms": 5, "enable.idempotence": true}"#,
            r#", "s3": {"path_style": true}, "metrics": {"namespace": "N"},
               "csv": {"delimiter": "\t", "columns": {"speed": "number"}}, "log": {"level": "debug"}"#,
        );
        let c = Config::parse(&text, &env).expect("valid");
        assert_eq!(c.kafka.properties["sasl.password"], "hunter2-secret");
        assert_eq!(c.s3.endpoint, "http://127.0.0.1:4566", "trailing / dropped");
        assert_eq!(c.csv.delimiter, b'\t');
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        let shown = c.describe().to_string();
        for secret in ["hunter2-secret", "plain-secret", "fleet"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("env:C2K_PASSWORD") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(shown.contains(r#""namespace":"N""#), "{shown}");
        assert!(is_secret("sasl.oauthbearer.client.secret") && !is_secret("linger.ms"));
    }

    #[test]
    fn msk_iam_becomes_oauthbearer_over_tls_signed_for_its_region() {
        let c = parse(&with(
            r#", "region": "us-east-1", "properties": {"sasl.mechanism": "AWS_MSK_IAM"}"#,
            "",
        ))
        .expect("valid");
        assert_eq!(c.kafka.msk_iam.as_deref(), Some("us-east-1"));
        assert_eq!(c.kafka.properties["sasl.mechanisms"], "OAUTHBEARER");
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
        assert!(!c.kafka.properties.contains_key("sasl.mechanism"));
        let c = parse(&with(
            r#", "properties": {"sasl.mechanisms": "AWS_MSK_IAM"}"#,
            "",
        ))
        .expect("valid");
        assert_eq!(
            c.kafka.msk_iam.as_deref(),
            Some("eu-west-1"),
            "the S3 region"
        );
        let off = parse(&with("", r#", "metrics": {"enabled": false}"#)).expect("valid");
        assert!(off.metrics.is_none() && off.kafka.msk_iam.is_none());
        let short =
            parse(&with(r#", "properties": {"message.timeout.ms": 1000}"#, "")).expect("valid");
        assert_eq!(short.delivery(), Duration::from_secs(1));
    }
}
