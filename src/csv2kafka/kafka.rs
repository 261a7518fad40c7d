//! Kafka, through librdkafka: an idempotent producer with bounded queues whose delivery
//! reports come back as [`Ack`]s, a deterministic partitioner (Kafka's murmur2, as the
//! Java client's default). The resume scan and the verification pass are in
//! [`super::scan`]. See ARCHITECTURE.md, "csv2kafka: exactly once without transactions".

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::config::{FORCED, Kafka};

/// Metadata and scan timeouts.
const META_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a message goes: `Main` (the topic) or `DeadLetter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    Main,
    DeadLetter,
}

/// A partition of one of the job's topics.
pub type Slot = (Dest, i32);

/// One delivery report: the row it carried (its line), and where it landed.
#[derive(Debug, Clone)]
pub struct Ack {
    pub line: u64,
    pub result: Result<(Slot, i64), String>,
    /// The broker refused the message for its size: sending it again cannot help.
    pub too_large: bool,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Larger than the producer or the broker accepts: the row is malformed for Kafka.
    TooLarge(String),
    Other(String),
}

fn is_too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// The delivery reports, collected by librdkafka's callback on our own poll.
#[derive(Default)]
pub struct Reports {
    acks: Mutex<Vec<Ack>>,
    /// The last error librdkafka reported about the brokers (TLS, authentication,
    /// connections): the cause a failure names.
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Reports {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        log::warn!("Kafka: {error}: {reason}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let serious = matches!(level, L::Emerg | L::Alert | L::Critical | L::Error);
        if serious {
            log::error!("librdkafka: {fac}: {message}");
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
        } else {
            log::warn!("librdkafka: {fac}: {message}");
        }
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        Ok(super::msk::oauth_token()?)
    }
}

/// The context of the job's consumers: MSK IAM tokens, nothing else.
#[derive(Default)]
pub struct Reader;

impl ClientContext for Reader {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        Ok(super::msk::oauth_token()?)
    }
}

impl rdkafka::consumer::ConsumerContext for Reader {}

/// Whether a librdkafka property is about reaching the brokers (security, sockets,
/// addresses), so every client of the job gets it, consumers too; the rest are the
/// producer's.
fn connection_property(key: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "security.",
        "ssl.",
        "ssl_",
        "sasl.",
        "enable.ssl.",
        "socket.",
        "broker.",
        "client.dns.",
        "reconnect.",
        "api.version.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
        || [
            "client.rack",
            "debug",
            "connections.max.idle.ms",
            "resolve.canonical.bootstrap.servers.only",
        ]
        .contains(&key)
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (line, dest) = decode(opaque);
        let ack = match result {
            Ok(m) => Ack {
                line,
                result: Ok(((dest, m.partition()), m.offset())),
                too_large: false,
            },
            Err((e, _)) => Ack {
                line,
                result: Err(e.to_string()),
                too_large: is_too_large(e),
            },
        };
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ack);
    }
}

fn encode(line: u64, dest: Dest) -> usize {
    ((line as usize) << 1) | usize::from(dest == Dest::DeadLetter)
}

fn decode(opaque: usize) -> (u64, Dest) {
    let dest = if opaque & 1 == 1 {
        Dest::DeadLetter
    } else {
        Dest::Main
    };
    ((opaque >> 1) as u64, dest)
}

/// Kafka's murmur2 (the Java client's default partitioner), so a row's partition depends
/// only on its key and the partition count.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let seed: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h: u32 = seed ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `count` (as Java's `toPositive(murmur2) % count`).
pub fn partition_of(key: &[u8], count: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % count.max(1) as u32) as i32
}

pub(super) fn client_config(k: &Kafka) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set(
            "client.id",
            concat!("csv2kafka/", env!("CARGO_PKG_VERSION")),
        )
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("log_level", "4");
    for (key, value) in k.properties.iter().filter(|(k, _)| connection_property(k)) {
        c.set(key, value);
    }
    c
}

/// The producer's librdkafka config: ours, then `kafka.properties`, then what exactly
/// once needs (see [`Sink`]).
fn producer_config(k: &Kafka, delivery: Duration) -> ClientConfig {
    let mut c = client_config(k);
    c.set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "8192")
        .set("queue.buffering.max.messages", "20000")
        .set("compression.type", "lz4");
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    for (key, value) in FORCED {
        c.set(key, value);
    }
    let ms = delivery.as_millis().max(1).to_string();
    c.set("message.timeout.ms", &ms);
    // A request outliving the delivery bound would be answered after it.
    let request = delivery.min(Duration::from_secs(30)).as_millis().max(1);
    c.set("request.timeout.ms", request.to_string());
    c
}

/// Checks `kafka.properties` with librdkafka itself, without connecting: an unknown
/// property or a value it refuses is a config error naming it (secrets redacted).
pub fn validate(k: &Kafka, delivery: Duration) -> Result<(), String> {
    producer_config(k, delivery)
        .create_native_config()
        .map(drop)
        .map_err(|e| {
            let mut why = e.to_string();
            for (key, value) in &k.properties {
                if super::config::is_secret(key) || k.shown.get(key) != Some(value) {
                    why = why.replace(value.as_str(), "<redacted>");
                }
            }
            format!("kafka.properties: {why}")
        })
}

/// The producer: idempotent, `acks=all`, queues bounded to 8 MiB / 20,000 messages
/// (librdkafka's defaults buffer up to 1 GiB; 20,000 is several times what is in
/// flight at 500,000 rows/s and 15 ms to an acknowledgement; larger queues measured
/// slower). Defaults that `kafka.properties` may change: batches that linger 20 ms (at
/// 5 ms librdkafka's broker thread spun on its clock: a third more CPU) and LZ4, which
/// costs us little and cut the broker's CPU by more than half (make bench).
pub struct Sink {
    pub producer: BaseProducer<Reports>,
    topic: String,
    dead_letter: Option<String>,
    brokers: String,
    /// Metadata requests wait at most this (`kafka.connect_timeout_seconds`, ≤ 30 s).
    meta_timeout: Duration,
    /// `ssl.ca.location`, to say why a broker's certificate is refused.
    ca: Option<std::path::PathBuf>,
}

impl Sink {
    /// A producer whose every message lands within `delivery` of being handed over, or
    /// never (`message.timeout.ms`; see [`super::lease`]).
    pub fn new(k: &Kafka, delivery: Duration) -> Result<Sink, String> {
        let c = producer_config(k, delivery);
        let producer: BaseProducer<Reports> = c
            .create_with_context(Reports::default())
            .map_err(|e| format!("Kafka producer: {e}"))?;
        // With MSK IAM, librdkafka asks for a token at creation and connects only once a
        // poll has answered.
        producer.poll(Duration::ZERO);
        Ok(Sink {
            producer,
            topic: k.topic.clone(),
            dead_letter: k.dead_letter_topic.clone(),
            brokers: k.bootstrap_servers.clone(),
            meta_timeout: k.connect_timeout.min(META_TIMEOUT),
            ca: k.properties.get("ssl.ca.location").map(Into::into),
        })
    }

    pub fn topic(&self, dest: Dest) -> &str {
        match dest {
            Dest::DeadLetter => self.dead_letter.as_deref().unwrap_or(&self.topic),
            Dest::Main => &self.topic,
        }
    }

    /// The partition count of `dest`'s topic; an error naming it if it does not exist.
    pub fn partitions(&self, dest: Dest) -> Result<i32, String> {
        let topic = self.topic(dest);
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.meta_timeout)
            .map_err(|e| format!("Kafka at {}: {e}{}", self.brokers, self.cause()))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("Kafka topic {topic} does not exist"))?;
        if let Some(e) = t.error() {
            return Err(format!("Kafka topic {topic}: {e:?}"));
        }
        match t.partitions().len() {
            0 => Err(format!("Kafka topic {topic} has no partitions")),
            n => Ok(n as i32),
        }
    }

    /// `; last broker error: ...` when librdkafka reported one (a TLS handshake that
    /// failed and why, an authentication refused), else nothing.
    pub fn cause(&self) -> String {
        // librdkafka's error events wait in its queue for a poll (delivery reports
        // served here are kept for the next `poll`).
        self.producer.poll(Duration::ZERO);
        self.producer
            .context()
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map_or(String::new(), |e| {
                let mut out = format!("; last broker error: {e}");
                // librdkafka says only "certificate verify failed": ask why.
                if e.contains("certificate verify failed")
                    && let Some(ca) = &self.ca
                    && let Some(first) = self.brokers.split(',').next()
                    && let Some(why) = super::tls::diagnose(first.trim(), ca)
                {
                    out.push_str(&format!(" ({why})"));
                }
                out
            })
    }

    /// Queues one message; waits (serving delivery reports) while the queue is full.
    pub fn send(
        &self,
        dest: Dest,
        partition: i32,
        line: u64,
        key: &[u8],
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), SendError> {
        let mut record = BaseRecord::with_opaque_to(self.topic(dest), encode(line, dest))
            .partition(partition)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) if is_too_large(&e) => {
                    return Err(SendError::TooLarge(format!(
                        "{} bytes is more than Kafka takes ({e})",
                        value.len()
                    )));
                }
                Err((e, _)) => return Err(SendError::Other(format!("Kafka: {e}"))),
            }
        }
    }

    /// Serves delivery reports; returns those gathered.
    pub fn poll(&self, wait: Duration) -> Vec<Ack> {
        self.producer.poll(wait);
        std::mem::take(
            &mut *self
                .producer
                .context()
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Drops every message not yet sent, and stops waiting for those in flight: the lease
    /// can no longer cover them. (One already on the wire may still land, within the
    /// delivery bound.)
    pub fn purge(&self) {
        use rdkafka::producer::PurgeConfig;
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }

    /// Messages not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// A fatal producer error (the idempotent producer gave up), if any.
    pub fn fatal(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, why)| format!("Kafka fatal error {code:?}: {why}"))
    }

    /// The high watermarks of `dest`'s partitions now: lower bounds for where this job's
    /// messages will start (a watermark behind the log only makes a scan longer).
    pub fn ends(&self, dest: Dest, partitions: i32) -> Result<BTreeMap<i32, i64>, String> {
        let topic = self.topic(dest).to_string();
        let mut out = BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = self
                .producer
                .client()
                .fetch_watermarks(&topic, p, self.meta_timeout)
                .map_err(|e| format!("Kafka watermarks of {topic}/{p}: {e}"))?;
            out.insert(p, high.max(0));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(
                murmur2(data) as i32,
                want,
                "{:?}",
                std::str::from_utf8(data)
            );
        }
    }

    #[test]
    fn opaques_carry_the_line_and_destination() {
        for (line, dest) in [(1, Dest::Main), (1 << 40, Dest::DeadLetter)] {
            assert_eq!(decode(encode(line, dest)), (line, dest));
        }
        assert!((0..8).all(|p| (0..8).contains(&partition_of(b"k", 8 + p - p))));
    }
}
