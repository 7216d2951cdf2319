//! The Kafka destination's settings, under `settings.kafka` as walkerOS has them (walkerOS
//! `packages/server/destinations/kafka/src/config.ts`), turned into a librdkafka producer configuration.
//!
//! walkerOS hands its settings to kafkajs; weir hands them to librdkafka, so each key is
//! translated to the librdkafka property that does the same job. Where the defaults differ on
//! purpose, weir's are: `clientId` `weir`, `idempotent` **true** (walkerOS: false), a
//! Java-compatible key partitioner (`murmur2_random`) and a 5 ms linger. Options walkerOS
//! accepts that weir cannot honour (`aws` and `oauthbearer` SASL, TLS `servername`) are config
//! errors naming their path, never ignored. `librdkafkaOptions` (weir's) passes further
//! librdkafka properties through for tuning; the ones weir sets from walkerOS's keys cannot be
//! overridden there. The SASL password also comes from `sasl.passwordFile` or
//! `KAFKA_SASL_PASSWORD` / `KAFKA_SASL_PASSWORD_FILE`, and never appears in logs.

use std::time::Duration;

use indexmap::IndexMap;
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::config::typed::{self, Secret};
use crate::config::{ConfigErrors, join};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    brokers: Option<Vec<String>>,
    topic: Option<String>,
    client_id: Option<String>,
    /// A path, or (as walkerOS evaluates it with `getMappingValue`) any value spec.
    key: Option<Value>,
    headers: Option<IndexMap<String, String>>,
    /// Read on its own (an [`Acks`]), so a wrong value does not hide the other problems.
    acks: Option<Value>,
    /// Read on its own (a [`Compression`]).
    compression: Option<Value>,
    idempotent: Option<bool>,
    allow_auto_topic_creation: Option<bool>,
    ssl: Option<Value>,
    sasl: Option<Value>,
    connection_timeout: Option<u64>,
    request_timeout: Option<u64>,
    timeout: Option<u64>,
    retry: Option<RawRetry>,
    librdkafka_options: Option<IndexMap<String, Value>>,
}

/// kafkajs's `retry` block.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRetry {
    max_retry_time: Option<u64>,
    initial_retry_time: Option<u64>,
    retries: Option<u32>,
}

/// kafkajs's `ssl` object (Node's `tls.connect` options): PEM text or, in weir, a file path.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    /// A secret: read as any JSON value so a wrong type is reported without echoing it.
    passphrase: Option<Value>,
    reject_unauthorized: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSasl {
    username: Option<String>,
    /// A secret: read as any JSON value so a wrong type is reported without echoing it.
    password: Option<Value>,
    password_file: Option<String>,
}

/// Per-rule settings: `mapping.<entity>.<action>.settings`. As in walkerOS, a `topic` that is
/// not a string is ignored (the destination's is used), and a `key` that is not a string
/// resolves to nothing (the record is keyed by the event name); both with a warning.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaRuleSettings {
    topic: Option<Value>,
    key: Option<Value>,
}

/// Where a rule says the record's key comes from.
pub enum RuleKey<'a> {
    /// The rule says nothing: the destination's key path.
    Unset,
    /// This path.
    Path(&'a str),
    /// A value that is not a path: nothing (walkerOS then keys by the event name).
    Nothing,
}

impl KafkaRuleSettings {
    /// The rule's topic, when it names one.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_ref().and_then(Value::as_str)
    }

    pub fn key(&self) -> RuleKey<'_> {
        match &self.key {
            None => RuleKey::Unset,
            Some(Value::String(path)) => RuleKey::Path(path),
            Some(_) => RuleKey::Nothing,
        }
    }
}

impl crate::mapping::RuleSettings for KafkaRuleSettings {
    fn check(&self, path: &str, errors: &mut ConfigErrors) {
        match &self.topic {
            Some(Value::String(topic)) if topic.is_empty() => errors.push(
                join(path, "topic"),
                "an empty topic: brokers refuse it, so every event would be dead-lettered (walkerOS sends it anyway); leave it out to use the destination's",
            ),
            None | Some(Value::String(_)) => {}
            Some(other) => errors.warn(
                join(path, "topic"),
                format!(
                    "{} is ignored: only a string names a topic (walkerOS ignores it too); the destination's topic is used",
                    crate::event::JsonKind::of(other)
                ),
            ),
        }
        if let Some(other) = self.key.as_ref().filter(|key| !key.is_string()) {
            errors.warn(
                join(path, "key"),
                format!(
                    "{} is not a key path: records are keyed by the event name, as in walkerOS",
                    crate::event::JsonKind::of(other)
                ),
            );
        }
    }
}

/// Checked settings. Its `Debug` leaves the client configuration out: it may hold a
/// private key.
#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topic: String,
    /// What keys each record: a path or a value spec (else, or when it gives no non-empty
    /// string, the event name).
    pub key: Option<crate::mapping::ValueSpec>,
    /// `content-type: application/json` first, then the static headers (which may override it).
    pub headers: Vec<(String, String)>,
    pub acks: Acks,
    pub compression: Compression,
    /// kafkajs's `timeout`, shown in the record as walkerOS sends it.
    pub timeout: Option<u64>,
    /// How long librdkafka may try to deliver one message, retries included.
    pub message_timeout: Duration,
    /// The librdkafka producer configuration.
    pub client: ClientConfig,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("acks", &self.acks)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// walkerOS's (kafkajs's) `acks`: -1, 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub enum Acks {
    /// -1: every in-sync replica has the record (weir's and walkerOS's default).
    All,
    /// 0: no acknowledgement.
    None,
    /// 1: the partition leader has it.
    Leader,
}

impl TryFrom<i64> for Acks {
    type Error = String;

    fn try_from(value: i64) -> Result<Acks, String> {
        match value {
            -1 => Ok(Acks::All),
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            other => Err(format!("{other} is not -1, 0 or 1")),
        }
    }
}

impl Acks {
    /// The number, as librdkafka's `acks` and walkerOS's record have it.
    pub fn value(self) -> i64 {
        match self {
            Acks::All => -1,
            Acks::None => 0,
            Acks::Leader => 1,
        }
    }
}

/// The record codec (`compression`): walkerOS's default is gzip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl TryFrom<String> for Compression {
    type Error = String;

    fn try_from(name: String) -> Result<Compression, String> {
        Ok(match name.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return Err(format!("\"{name}\" is not one of {}", Compression::NAMES.join(", "))),
        })
    }
}

impl Compression {
    const NAMES: [&'static str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

    /// librdkafka's `compression.codec` name.
    pub fn codec(self) -> &'static str {
        Compression::NAMES[self.code() as usize]
    }

    /// kafkajs's `CompressionTypes` code, as walkerOS puts it in the record.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// `sasl.mechanism`: the ones librdkafka can do with a username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl TryFrom<String> for SaslMechanism {
    type Error = String;

    fn try_from(name: String) -> Result<SaslMechanism, String> {
        match name.as_str() {
            "plain" => Ok(SaslMechanism::Plain),
            "scram-sha-256" => Ok(SaslMechanism::ScramSha256),
            "scram-sha-512" => Ok(SaslMechanism::ScramSha512),
            // kafkajs has these; librdkafka would need a token provider weir does not have.
            "aws" | "oauthbearer" => Err(format!(
                "SASL \"{name}\" is not supported by weir (plain, scram-sha-256 and scram-sha-512 are)"
            )),
            _ => Err(format!("\"{name}\" is not one of plain, scram-sha-256, scram-sha-512")),
        }
    }
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` name.
    pub fn librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How long librdkafka may spend delivering one message (its `message.timeout.ms`): kafkajs's
/// request timeout. The delivery machinery's attempt timeout for Kafka is a little longer, so
/// the producer's own delivery report always decides an attempt.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long librdkafka holds records to batch them.
pub const LINGER_MS: &str = "5";

/// Properties weir sets from walkerOS's keys; `librdkafkaOptions` may not set them.
const OWNED_PROPERTIES: [&str; 16] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "compression.codec",
    "compression.type",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.key.password",
    "ssl.ca.pem",
    "ssl.key.pem",
];

impl KafkaSettings {
    /// Checks `settings` (the destination's `settings` block, at `path`); `env` looks up
    /// environment variables.
    pub fn parse(
        settings: Option<&Value>,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut ConfigErrors,
    ) -> Option<KafkaSettings> {
        if let Some(Value::Object(outer)) = settings {
            for key in outer.keys().filter(|key| *key != "kafka") {
                errors.push(join(path, key), "unknown key");
            }
        }
        let path = join(path, "kafka");
        let Some(kafka) = settings.and_then(|settings| settings.get("kafka")) else {
            errors.push(path, "Config settings kafka missing (it needs brokers and topic)");
            return None;
        };
        let raw = typed::parse::<Raw>(kafka, &path, errors)?;
        let brokers = match raw.brokers.clone() {
            Some(brokers) if !brokers.is_empty() => {
                for (index, broker) in brokers.iter().enumerate() {
                    if !is_host_port(broker) {
                        errors.push(
                            join(&path, &format!("brokers.{index}")),
                            format!("\"{broker}\" is not host:port"),
                        );
                    }
                }
                Some(brokers)
            }
            _ => {
                errors.push(join(&path, "brokers"), "Config settings kafka.brokers missing");
                None
            }
        };
        let topic = match raw.topic.clone() {
            Some(topic) if !topic.is_empty() => Some(topic),
            _ => {
                errors.push(join(&path, "topic"), "Config settings kafka.topic missing");
                None
            }
        };
        let acks = raw
            .acks
            .as_ref()
            .and_then(|value| typed::parse::<Acks>(value, &join(&path, "acks"), errors))
            .unwrap_or(Acks::All);
        // weir's default is idempotent, which needs acks=all: with acks 0 or 1 and no explicit
        // `idempotent`, idempotence is off (as the user asked for weaker acknowledgements).
        let idempotent = raw.idempotent.unwrap_or(acks == Acks::All);
        if idempotent && acks != Acks::All {
            errors.push(
                join(&path, "idempotent"),
                "an idempotent producer needs acks -1 (all in-sync replicas); set idempotent false to use acks 0 or 1",
            );
        }
        // walkerOS's default codec is gzip.
        let compression = raw
            .compression
            .as_ref()
            .and_then(|value| typed::parse::<Compression>(value, &join(&path, "compression"), errors))
            .unwrap_or(Compression::Gzip);

        let mut client = ClientConfig::new();
        client
            .set("client.id", raw.client_id.as_deref().unwrap_or("weir"))
            .set("acks", acks.value().to_string())
            .set("enable.idempotence", idempotent.to_string())
            .set("compression.codec", compression.codec())
            // Java's partitioner, so keys land where Java and Go clients put them.
            .set("partitioner", "murmur2_random")
            // librdkafka's default, said out loud: a client waiting for `ack = "delivered"`
            // waits this long at least, and at analytics rates it still fills batches.
            .set("linger.ms", LINGER_MS)
            .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
            // Queue depth and broker health as metrics (`librdkafkaOptions` may change it).
            .set("statistics.interval.ms", "5000")
            .set(
                "allow.auto.create.topics",
                raw.allow_auto_topic_creation.unwrap_or(false).to_string(),
            );
        if let Some(brokers) = &brokers {
            client.set("bootstrap.servers", brokers.join(","));
        }
        timing(&mut client, &raw, &path, idempotent, errors);

        let tls = tls_settings(&mut client, raw.ssl.as_ref(), &path, errors);
        let sasl = match &raw.sasl {
            None => false,
            Some(value) => {
                let sasl_path = join(&path, "sasl");
                sasl_settings(&mut client, value, &sasl_path, env, errors);
                true
            }
        };
        client.set(
            "security.protocol",
            match (tls, sasl) {
                (false, false) => "plaintext",
                (true, false) => "ssl",
                (false, true) => "sasl_plaintext",
                (true, true) => "sasl_ssl",
            },
        );

        let message_timeout = passthrough(&mut client, raw.librdkafka_options.as_ref(), &path, errors);
        // librdkafka itself checks every property name and value, and creating a producer
        // checks how they fit together (idempotence, TLS files); without brokers to
        // bootstrap from, it connects to nothing.
        let mut offline = client.clone();
        offline.remove("bootstrap.servers");
        if let Err(error) = offline.create::<rdkafka::producer::BaseProducer>() {
            errors.push(&path, format!("librdkafka refuses the configuration: {error}"));
        }

        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        for (name, value) in raw.headers.unwrap_or_default() {
            match headers.iter_mut().find(|(existing, _)| *existing == name) {
                Some(slot) => slot.1 = value,
                None => headers.push((name, value)),
            }
        }
        Some(KafkaSettings {
            brokers: brokers?,
            topic: topic?,
            key: raw
                .key
                .filter(|key| key.as_str() != Some(""))
                .and_then(|key| crate::mapping::ValueSpec::parse(&key, &join(&path, "key"), errors)),
            headers,
            acks,
            compression,
            timeout: raw.timeout,
            message_timeout,
            client,
        })
    }
}

/// kafkajs's timeouts and retry timing, as librdkafka's properties.
fn timing(client: &mut ClientConfig, raw: &Raw, path: &str, idempotent: bool, errors: &mut ConfigErrors) {
    let mut milliseconds = |property: &str, value: Option<u64>, key: &str, min: u64, errors: &mut ConfigErrors| {
        if let Some(ms) = value {
            if ms < min {
                errors.push(join(path, key), format!("must be at least {min} ms"));
            } else {
                client.set(property, ms.to_string());
            }
        }
    };
    milliseconds(
        "socket.connection.setup.timeout.ms",
        raw.connection_timeout,
        "connectionTimeout",
        1000,
        errors,
    );
    milliseconds("socket.timeout.ms", raw.request_timeout, "requestTimeout", 10, errors);
    // kafkajs's `timeout`: how long the broker may take to acknowledge a produce request.
    milliseconds("request.timeout.ms", raw.timeout, "timeout", 1, errors);
    if let Some(retry) = &raw.retry {
        milliseconds(
            "retry.backoff.ms",
            retry.initial_retry_time,
            "retry.initialRetryTime",
            1,
            errors,
        );
        milliseconds(
            "retry.backoff.max.ms",
            retry.max_retry_time,
            "retry.maxRetryTime",
            1,
            errors,
        );
    }
    if let Some(retry) = &raw.retry {
        let retry_path = join(path, "retry");
        if let Some(retries) = retry.retries {
            if retries == 0 && idempotent {
                errors.push(
                    join(&retry_path, "retries"),
                    "an idempotent producer needs retries; set idempotent false to disable them",
                );
            } else {
                client.set("message.send.max.retries", retries.to_string());
            }
        }
    }
}

/// kafkajs's `ssl`: `true`, or Node's TLS options (PEM text or, in weir, file paths).
/// Whether TLS is on.
fn tls_settings(client: &mut ClientConfig, ssl: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> bool {
    match ssl {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(value @ Value::Object(_)) => {
            let ssl_path = join(path, "ssl");
            if let Some(fields) = value.as_object() {
                for key in ["servername", "checkServerIdentity", "ciphers", "secureProtocol"] {
                    if fields.contains_key(key) {
                        errors.push(join(&ssl_path, key), "is not supported by weir's Kafka client");
                    }
                }
            }
            let mut trimmed = value.clone();
            if let Some(fields) = trimmed.as_object_mut() {
                fields.retain(|key, _| {
                    !["servername", "checkServerIdentity", "ciphers", "secureProtocol"].contains(&key.as_str())
                });
            }
            if let Some(options) = typed::parse::<RawTls>(&trimmed, &ssl_path, errors) {
                pem_or_file(client, options.ca.as_deref(), "ssl.ca", &join(&ssl_path, "ca"), errors);
                pem_or_file(
                    client,
                    options.cert.as_deref(),
                    "ssl.certificate",
                    &join(&ssl_path, "cert"),
                    errors,
                );
                pem_or_file(
                    client,
                    options.key.as_deref(),
                    "ssl.key",
                    &join(&ssl_path, "key"),
                    errors,
                );
                if let Some(passphrase) = secret_text(options.passphrase, &join(&ssl_path, "passphrase"), errors) {
                    client.set("ssl.key.password", passphrase);
                }
                if options.reject_unauthorized == Some(false) {
                    // Accepted, as kafkajs does, but never silently: Node itself warns when
                    // certificate checks are off.
                    errors.warn(
                        join(&ssl_path, "rejectUnauthorized"),
                        "false: the broker's certificate is not verified, so anyone between weir and the broker can read and change what weir sends; set `ca` to the broker's CA instead",
                    );
                    client.set("enable.ssl.certificate.verification", "false");
                }
            }
            true
        }
        Some(_) => {
            errors.push(join(path, "ssl"), "must be true, false or an object (ca, cert, key)");
            false
        }
    }
}

/// `librdkafkaOptions`: further producer properties, except those weir sets from walkerOS's
/// keys. The message timeout they set (default [`MESSAGE_TIMEOUT`]).
fn passthrough(
    client: &mut ClientConfig,
    options: Option<&IndexMap<String, Value>>,
    path: &str,
    errors: &mut ConfigErrors,
) -> Duration {
    let mut message_timeout = MESSAGE_TIMEOUT;
    if let Some(options) = options {
        let options_path = join(path, "librdkafkaOptions");
        for (property, value) in options {
            let at = join(&options_path, property);
            if OWNED_PROPERTIES.contains(&property.as_str())
                || property.starts_with("ssl.")
                || property.starts_with("sasl.")
            {
                errors.push(at, "is set from walkerOS's settings; set it there");
                continue;
            }
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => {
                    errors.push(at, "must be a string, number or boolean");
                    continue;
                }
            };
            // The message timeout (and its alias) bounds every attempt: it must be finite.
            if property == "message.timeout.ms" || property == "delivery.timeout.ms" {
                match text.parse::<u64>() {
                    Ok(ms) if ms > 0 => message_timeout = Duration::from_millis(ms),
                    _ => {
                        errors.push(at, "must be a positive number of milliseconds (0, no limit, would let a record outlive weir's retries)");
                        continue;
                    }
                }
            }
            client.set(property, text);
        }
    }
    message_timeout
}

/// A secret given inline: it must be a string; the error never shows the value.
fn secret_text(value: Option<Value>, path: &str, errors: &mut ConfigErrors) -> Option<String> {
    match value? {
        Value::String(text) => Some(text),
        _ => {
            errors.push(path, "must be a string");
            None
        }
    }
}

fn is_host_port(broker: &str) -> bool {
    match broker.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0),
        None => false,
    }
}

/// A TLS item given as PEM text (kafkajs's way) or, in weir, as a file path.
fn pem_or_file(client: &mut ClientConfig, value: Option<&str>, prefix: &str, path: &str, errors: &mut ConfigErrors) {
    let Some(value) = value else { return };
    if value.trim_start().starts_with("-----BEGIN") {
        client.set(format!("{prefix}.pem"), value);
    } else if std::path::Path::new(value).is_file() {
        client.set(format!("{prefix}.location"), value);
    } else if prefix == "ssl.key" {
        // A private key's text is never echoed.
        errors.push(path, "is neither PEM text nor a readable file");
    } else {
        errors.push(path, format!("\"{value}\" is neither PEM text nor a readable file"));
    }
}

fn sasl_settings(
    client: &mut ClientConfig,
    value: &Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) {
    let Some(mechanism) = value.get("mechanism") else {
        errors.push(
            join(path, "mechanism"),
            "SASL needs a mechanism (plain, scram-sha-256, scram-sha-512)",
        );
        return;
    };
    // The mechanism first: the other keys of one weir cannot do are not worth listing.
    let Some(mechanism) = typed::parse::<SaslMechanism>(mechanism, &join(path, "mechanism"), errors) else {
        return;
    };
    let mut rest = value.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("mechanism");
    }
    let Some(raw) = typed::parse::<RawSasl>(&rest, path, errors) else {
        return;
    };
    let inline = secret_text(raw.password, &join(path, "password"), errors);
    let password = Secret::resolve(
        inline.filter(|password| !password.is_empty()),
        raw.password_file.as_deref(),
        path,
        "passwordFile",
        errors,
    )
    .or_else(|| Secret::from_environment(env, "KAFKA_SASL_PASSWORD", path, errors));
    let username = raw.username.filter(|username| !username.is_empty());
    if username.is_none() {
        errors.push(join(path, "username"), "SASL needs a username");
    }
    let Some(password) = password else {
        errors.push(
            join(path, "password"),
            "SASL needs a password (or passwordFile, or KAFKA_SASL_PASSWORD)",
        );
        return;
    };
    client
        .set("sasl.mechanism", mechanism.librdkafka())
        .set("sasl.username", username.unwrap_or_default())
        .set("sasl.password", password.expose());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(kafka: Value, env: &[(&str, &str)]) -> (Option<KafkaSettings>, String) {
        let mut errors = ConfigErrors::default();
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        let settings = json!({ "kafka": kafka });
        let parsed = KafkaSettings::parse(Some(&settings), "d.config.settings", &lookup, &mut errors);
        (parsed, errors.to_string())
    }

    fn property<'a>(settings: &'a KafkaSettings, name: &str) -> Option<&'a str> {
        settings.client.get(name)
    }

    #[test]
    fn defaults_are_walkeros_except_idempotence_and_client_id() {
        let (parsed, errors) = parse(json!({"brokers": ["localhost:9092"], "topic": "walkeros-events"}), &[]);
        assert_eq!(errors, "");
        let settings = parsed.unwrap();
        assert_eq!(settings.acks, Acks::All);
        assert_eq!(settings.compression, Compression::Gzip);
        assert_eq!(
            settings.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        for (name, value) in [
            ("bootstrap.servers", "localhost:9092"),
            ("client.id", "weir"),
            ("acks", "-1"),
            ("enable.idempotence", "true"),
            ("compression.codec", "gzip"),
            ("partitioner", "murmur2_random"),
            ("allow.auto.create.topics", "false"),
            ("security.protocol", "plaintext"),
        ] {
            assert_eq!(property(&settings, name), Some(value), "{name}");
        }
    }

    #[test]
    fn missing_and_wrong_keys_name_their_path() {
        let (parsed, errors) = parse(
            json!({"acks": 2, "compression": "brotli", "brokers": ["nohost"], "extra": 1, "connectionTimeout": 5}),
            &[],
        );
        assert!(parsed.is_none());
        for expected in [
            "d.config.settings.kafka.extra: unknown key",
            "d.config.settings.kafka.topic: Config settings kafka.topic missing",
            "d.config.settings.kafka.brokers.0: \"nohost\" is not host:port",
            "d.config.settings.kafka.acks: 2 is not -1, 0 or 1",
            "d.config.settings.kafka.compression: \"brotli\" is not one of none, gzip, snappy, lz4, zstd",
            "d.config.settings.kafka.connectionTimeout: must be at least 1000 ms",
        ] {
            assert!(errors.contains(expected), "{expected} not in:\n{errors}");
        }
        let (_, errors) = parse(json!({"topic": "t"}), &[]);
        assert!(
            errors.contains("d.config.settings.kafka.brokers: Config settings kafka.brokers missing"),
            "{errors}"
        );
        let mut errors = ConfigErrors::default();
        assert!(KafkaSettings::parse(None, "d.config.settings", &|_| None, &mut errors).is_none());
        assert!(
            errors
                .to_string()
                .contains("d.config.settings.kafka: Config settings kafka missing")
        );
    }

    #[test]
    fn unsupported_options_are_errors_not_ignored() {
        let base = json!({"brokers": ["b:9092"], "topic": "t"});
        let with = |key: &str, value: Value| {
            let mut kafka = base.clone();
            kafka[key] = value;
            parse(kafka, &[]).1
        };
        let errors = with("sasl", json!({"mechanism": "aws", "accessKeyId": "x"}));
        assert!(
            errors.contains("d.config.settings.kafka.sasl.mechanism: SASL \"aws\" is not supported"),
            "{errors}"
        );
        let errors = with("sasl", json!({"mechanism": "oauthbearer"}));
        assert!(errors.contains("SASL \"oauthbearer\" is not supported"), "{errors}");
        let errors = with("ssl", json!({"servername": "kafka.example"}));
        assert!(
            errors.contains("d.config.settings.kafka.ssl.servername: is not supported"),
            "{errors}"
        );
        let errors = with("acks", json!(1));
        assert!(errors.is_empty(), "acks 1 turns idempotence off by itself: {errors}");
        let mut kafka = base.clone();
        kafka["acks"] = json!(0);
        kafka["idempotent"] = json!(true);
        assert!(
            parse(kafka, &[])
                .1
                .contains("kafka.idempotent: an idempotent producer needs acks -1")
        );
        let errors = with("librdkafkaOptions", json!({"client.id": "x", "no.such.property": 1}));
        assert!(
            errors.contains("kafka.librdkafkaOptions.client.id: is set from walkerOS's settings"),
            "{errors}"
        );
        assert!(errors.contains("librdkafka refuses the configuration"), "{errors}");
        // Checks librdkafka makes only when a producer is created: idempotence needs in-flight ≤ 5.
        let errors = with("librdkafkaOptions", json!({"max.in.flight.requests.per.connection": 6}));
        assert!(errors.contains("librdkafka refuses the configuration"), "{errors}");
        for alias in ["message.timeout.ms", "delivery.timeout.ms"] {
            let errors = with("librdkafkaOptions", json!({ alias: 0 }));
            assert!(
                errors.contains("must be a positive number of milliseconds"),
                "{alias}: {errors}"
            );
        }
        let mut kafka = base.clone();
        kafka["librdkafkaOptions"] = json!({"delivery.timeout.ms": 60000});
        let (parsed, errors) = parse(kafka, &[]);
        assert_eq!(errors, "");
        assert_eq!(parsed.unwrap().message_timeout, Duration::from_secs(60));
    }

    #[test]
    fn sasl_password_comes_from_config_file_or_environment() {
        let base = json!({"brokers": ["b:9092"], "topic": "t"});
        let mut kafka = base.clone();
        kafka["sasl"] = json!({"mechanism": "scram-sha-512", "username": "u"});
        let (parsed, errors) = parse(kafka.clone(), &[]);
        assert!(parsed.is_none() || !errors.is_empty());
        assert!(
            errors.contains("kafka.sasl.password: SASL needs a password"),
            "{errors}"
        );
        let (parsed, errors) = parse(kafka.clone(), &[("KAFKA_SASL_PASSWORD", "from-env")]);
        assert_eq!(errors, "");
        let settings = parsed.unwrap();
        assert_eq!(property(&settings, "sasl.password"), Some("from-env"));
        assert_eq!(property(&settings, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(property(&settings, "security.protocol"), Some("sasl_plaintext"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        kafka["sasl"]["passwordFile"] = json!(file.to_str().unwrap());
        kafka["ssl"] = json!(true);
        let (parsed, errors) = parse(kafka, &[]);
        assert_eq!(errors, "");
        let settings = parsed.unwrap();
        assert_eq!(property(&settings, "sasl.password"), Some("from-file"));
        assert_eq!(property(&settings, "security.protocol"), Some("sasl_ssl"));
        // The password is not in the settings' debug form.
        assert!(!format!("{settings:?}").contains("from-file"));
        // A secret of the wrong type, or a private key that is neither PEM nor a file, is an
        // error that does not show it.
        let mut kafka = base.clone();
        kafka["sasl"] = json!({"mechanism": "plain", "username": "u", "password": 987654321});
        kafka["ssl"] = json!({"key": "not-a-key-secret-text", "passphrase": 123456789});
        let (_, errors) = parse(kafka, &[]);
        assert!(errors.contains("kafka.sasl.password: must be a string"), "{errors}");
        assert!(errors.contains("kafka.ssl.passphrase: must be a string"), "{errors}");
        assert!(
            errors.contains("kafka.ssl.key: is neither PEM text nor a readable file"),
            "{errors}"
        );
        for secret in ["987654321", "not-a-key-secret-text", "123456789"] {
            assert!(!errors.contains(secret), "{secret} in {errors}");
        }
    }

    #[test]
    fn static_headers_follow_content_type_and_may_override_it() {
        let (parsed, errors) = parse(
            json!({"brokers": ["b:9092"], "topic": "t", "headers": {"x-source": "weir", "content-type": "text/plain"}}),
            &[],
        );
        assert_eq!(errors, "");
        assert_eq!(
            parsed.unwrap().headers,
            vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("x-source".to_owned(), "weir".to_owned())
            ]
        );
    }
}
