//! `kafka`: events into Apache Kafka as walkerOS's Kafka destination writes them (walkerOS
//! `packages/server/destinations/kafka/src/push.ts`), but acknowledged by the broker.
//!
//! Record: key = the key path's value when it is a non-empty string, else the event name with
//! whitespace runs as `_`; value = the mapped `data` when it is a non-empty object, else the
//! full event JSON; headers `content-type: application/json` plus the static ones; timestamp =
//! the event's timestamp as whole milliseconds (the millisecond a fraction falls in; the time
//! of producing when there is no usable one). Topic and key path can be overridden per rule.
//!
//! The client is librdkafka (rdkafka's `FutureProducer`): it batches, compresses and retries
//! transient broker errors itself, idempotently by default. An event counts as delivered only
//! when its delivery report says the broker took it; a full producer queue makes `send` wait
//! (backpressure, not an error). What librdkafka gives up on comes back as an error the
//! delivery machinery retries (timeouts) or dead-letters (message too large, unknown topic,
//! authorization) with the reason.

pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use serde_json::{Value, json};

pub use settings::{KafkaRuleSettings, KafkaSettings, RuleKey};

use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::event::{Event, FieldRef, key};
use crate::mapping::ValueSpec;

/// One record, rendered once.
pub struct KafkaRecord {
    topic: String,
    key: String,
    value: Vec<u8>,
    timestamp: i64,
}

/// Why a record did not reach the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    #[error(
        "Kafka topic \"{topic}\" not found on cluster {brokers}. weir does not create topics: create it first (for example `kafka-topics.sh --bootstrap-server {brokers} --create --topic {topic} --partitions N --replication-factor N`)"
    )]
    UnknownTopic { topic: String, brokers: String },
    #[error("Kafka push to topic \"{topic}\" failed: {error}")]
    Produce { topic: String, error: KafkaError },
    #[error("the Kafka producer stopped before reporting on the message")]
    Canceled,
    #[error("Kafka client: {0}")]
    Client(KafkaError),
    #[error("cannot reach the Kafka cluster: {error}; the last broker error: {cause}")]
    Unreachable { error: KafkaError, cause: String },
    #[error("not connected to Kafka yet")]
    NotConnected,
}

/// librdkafka's log lines and errors into weir's log, and its statistics into weir's
/// metrics, labelled with the destination's topic and brokers.
#[derive(Clone)]
struct KafkaContext {
    topic: String,
    brokers: String,
    /// The last broker connection error librdkafka reported (an SSL handshake that failed,
    /// an authentication refused): a failed metadata request says only "timed out", this
    /// says why.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "weir::kafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "weir::kafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "weir::kafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "weir::kafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connection trouble: librdkafka reconnects and retries by itself; the
        // messages it cannot deliver in time come back through their delivery reports.
        tracing::warn!(target: "weir::kafka", error = %error, "{reason}");
        // "1/1 brokers are down" sums up the errors before it; it does not replace them.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_owned());
        }
    }

    /// Every `statistics.interval.ms` (5 s): the producer's queue, and per broker whether it
    /// is up, its round trip and its errors.
    fn stats(&self, statistics: Statistics) {
        let labels = [("topic", self.topic.clone()), ("brokers", self.brokers.clone())];
        metrics::gauge!("weir_kafka_queue_messages", &labels).set(statistics.msg_cnt as f64);
        metrics::gauge!("weir_kafka_queue_bytes", &labels).set(statistics.msg_size as f64);
        for broker in statistics.brokers.values().filter(|broker| broker.nodeid >= 0) {
            let labels = [("topic", self.topic.clone()), ("broker", broker.nodename.clone())];
            metrics::gauge!("weir_kafka_broker_up", &labels).set(if broker.state == "UP" { 1.0 } else { 0.0 });
            if let Some(rtt) = &broker.rtt {
                metrics::gauge!("weir_kafka_broker_rtt_p99_seconds", &labels).set(rtt.p99 as f64 / 1e6);
            }
            metrics::counter!("weir_kafka_broker_request_timeouts_total", &labels).absolute(broker.req_timeouts);
            metrics::counter!("weir_kafka_broker_transmit_errors_total", &labels).absolute(broker.txerrs);
        }
    }
}

type Client = FutureProducer<KafkaContext>;

/// Why a producer was replaced.
#[derive(Debug, thiserror::Error)]
enum Replaced {
    /// librdkafka raised a fatal error (an idempotent producer that lost its sequence): such
    /// a producer refuses everything from then on.
    #[error("fatal error {code:?}: {reason}")]
    Fatal { code: RDKafkaErrorCode, reason: String },
    #[error(
        "records timed out while the broker answers: the producer is stuck (for example on a producer id the broker no longer knows, after it lost its state)"
    )]
    Wedged,
}

pub struct KafkaDestination {
    settings: KafkaSettings,
    /// The static headers, built once and cloned per record.
    headers: OwnedHeaders,
    /// Replaced when it cannot deliver any more (see [`Replaced`]).
    producer: std::sync::RwLock<Option<Arc<Client>>>,
}

impl KafkaDestination {
    pub fn new(settings: KafkaSettings) -> KafkaDestination {
        let mut headers = OwnedHeaders::new_with_capacity(settings.headers.len());
        for (name, value) in &settings.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        KafkaDestination {
            settings,
            headers,
            producer: std::sync::RwLock::new(None),
        }
    }

    fn current(&self) -> Option<Arc<Client>> {
        self.producer
            .read()
            .expect("the producer lock is never poisoned")
            .clone()
    }

    /// Puts a new producer in the place of `failed` (creating it does not block: it connects
    /// in the background); the records that failed are retried by the delivery machinery
    /// through it. `why` says what made `failed` unusable.
    fn replace(&self, failed: &Arc<Client>, why: Replaced) {
        let mut slot = self.producer.write().expect("the producer lock is never poisoned");
        if !slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, failed)) {
            return; // another batch replaced it already
        }
        match self.settings.client.create_with_context::<_, Client>(self.context()) {
            Ok(fresh) => {
                tracing::error!(cause = %why, "the Kafka producer is unusable; a new producer replaces it");
                *slot = Some(Arc::new(fresh));
            }
            Err(error) => {
                tracing::error!(cause = %why, error = %error, "the Kafka producer is unusable and cannot be recreated");
            }
        }
    }

    /// Records timed out in librdkafka. When the broker is down that is the outage, and the
    /// producer delivers once it is back. When the broker answers, the producer is wedged:
    /// librdkafka keeps a producer id the broker no longer knows (a broker that lost its
    /// producer state refuses it, and librdkafka's local epoch bump does not get a new one),
    /// retrying inside without end. Only a new producer asks the broker for a new id.
    async fn check_timed_out(&self, producer: &Arc<Client>) {
        let probe = Arc::clone(producer);
        let topic = self.settings.topic.clone();
        let answers = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if answers {
            self.replace(producer, Replaced::Wedged);
        }
    }

    fn context(&self) -> KafkaContext {
        KafkaContext {
            topic: self.settings.topic.clone(),
            brokers: self.brokers(),
            last_error: Arc::default(),
        }
    }

    fn brokers(&self) -> String {
        self.settings.brokers.join(",")
    }

    fn failure(&self, topic: &str, error: KafkaError) -> KafkaFailure {
        match error.rdkafka_error_code() {
            // librdkafka's own verdict after waiting for the topic to appear. The broker's
            // UNKNOWN_TOPIC_OR_PARTITION is also what a partition without a leader gets
            // during an election: that one stays retryable.
            Some(RDKafkaErrorCode::UnknownTopic) => KafkaFailure::UnknownTopic {
                topic: topic.to_owned(),
                brokers: self.brokers(),
            },
            _ => KafkaFailure::Produce {
                topic: topic.to_owned(),
                error,
            },
        }
    }
}

/// The text of a top-level event field as a JSON value.
fn field_value(field: FieldRef<'_>) -> Option<Value> {
    match field {
        FieldRef::Text(text) => serde_json::from_str(text).ok(),
        FieldRef::Value(value) => Some(value.clone()),
    }
}

/// walkerOS `getMappingValue(event, keyPath)` for a plain path. The first segment names a
/// top-level field, so only that field is parsed, not the whole event. `ingest.*` reads the
/// request's ingest, as a mapping's paths do.
fn key_at(event: &Event, path: &str) -> Option<Value> {
    if let (Some(rest), Some(ingest)) = (crate::mapping::ingest_path(path), event.ingest()) {
        return match rest {
            "" => Some(ingest.value.clone()),
            rest => crate::mapping::path::get_by_path(&ingest.value, rest),
        };
    }
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    match key::of(head) {
        Some(index) => {
            let field = field_value(event.field(index)?)?;
            match rest {
                None => Some(field),
                Some(rest) => crate::mapping::path::get_by_path(&field, rest),
            }
        }
        None => crate::mapping::path::get_by_path(event.tree(), path),
    }
}

/// The event name with each run of whitespace as one `_` (walkerOS: `replace(/\s+/g, '_')`).
fn name_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    let mut in_space = false;
    for c in name.chars() {
        if c.is_whitespace() {
            if !in_space {
                key.push('_');
            }
            in_space = true;
        } else {
            key.push(c);
            in_space = false;
        }
    }
    key
}

/// The latest time a JavaScript `Date` can hold (ms): later ones are not times.
const MAX_TIMESTAMP_MS: f64 = 8.64e15;

fn now_ms() -> i64 {
    crate::event::now_ms() as i64
}

impl Destination for KafkaDestination {
    type RuleSettings = KafkaRuleSettings;
    type Wire = KafkaRecord;
    type Error = KafkaFailure;
    const KIND: &'static str = "kafka";
    const PACKAGE: Option<&'static str> = Some("@walkeros/server-destination-kafka");

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let settings = KafkaSettings::parse(settings, path, &|name| std::env::var(name).ok(), errors)?;
        Some(KafkaDestination::new(settings))
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            // librdkafka batches per partition itself; these bound what is waiting for
            // delivery reports at once (8 × 1 000 records).
            batch_size: 1000,
            concurrency: 8,
            // An attempt ends with librdkafka's own delivery report, which comes within its
            // message timeout: the machinery waits a little longer than that.
            attempt_timeout: Some(self.settings.message_timeout + Duration::from_secs(5)),
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), KafkaFailure> {
        let client = self.settings.client.clone();
        let context = self.context();
        let topic = self.settings.topic.clone();
        let brokers = self.brokers();
        // Creating the client and asking for metadata block: off the async threads.
        let last_error = context.last_error.clone();
        let producer = tokio::task::spawn_blocking(move || -> Result<Client, KafkaFailure> {
            let producer: Client = client.create_with_context(context).map_err(KafkaFailure::Client)?;
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|error| {
                    match last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                        Some(cause) => KafkaFailure::Unreachable { error, cause },
                        None => KafkaFailure::Client(error),
                    }
                })?;
            let known = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if known {
                tracing::info!(brokers = %brokers, topic = %topic, brokers_seen = metadata.brokers().len(), "Kafka connected");
            } else {
                // Not fatal: the topic may be created after weir starts. Records for it are
                // dead-lettered with this advice until it exists.
                tracing::error!(
                    "{}",
                    KafkaFailure::UnknownTopic {
                        topic: topic.clone(),
                        brokers: brokers.clone()
                    }
                );
            }
            Ok(producer)
        })
        .await
        .map_err(|_| KafkaFailure::Canceled)??;
        *self.producer.write().expect("the producer lock is never poisoned") = Some(Arc::new(producer));
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, KafkaRuleSettings>) -> Result<Rendered<KafkaRecord>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let rule = input.rule_settings;
        let topic = rule
            .and_then(|rule| rule.topic())
            .unwrap_or(&self.settings.topic)
            .to_owned();
        // The event already carries a rule's `name`.
        let keyed = match rule.map_or(RuleKey::Unset, KafkaRuleSettings::key) {
            RuleKey::Unset => match &self.settings.key {
                Some(ValueSpec::Key(path)) => key_at(input.event, path),
                // walkerOS evaluates the destination's key as any value spec.
                Some(spec) => spec.value(input.event.tree(), &input.value_context()),
                None => None,
            },
            RuleKey::Path(path) => key_at(input.event, path),
            RuleKey::Nothing => None,
        };
        let key = match keyed {
            Some(Value::String(key)) if !key.is_empty() => key,
            _ => name_key(input.event.name()),
        };
        let value = match input.data {
            Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(data),
            _ => input.event.to_json(),
        };
        // A record's timestamp is whole milliseconds on the wire: the millisecond a fraction
        // falls in; the time of producing for an event without one (or with one outside
        // what Kafka can carry). walkerOS hands kafkajs `String(event.timestamp)` instead.
        let timestamp = match input.event.field(key::TIMESTAMP).and_then(field_value) {
            Some(Value::Number(ms)) => ms
                .as_f64()
                // librdkafka reads 0 as "now" too.
                .filter(|ms| (1.0..=MAX_TIMESTAMP_MS).contains(ms))
                .map_or_else(now_ms, |ms| ms.floor() as i64),
            _ => now_ms(),
        };
        Ok(Rendered::Send(KafkaRecord {
            topic,
            key,
            value,
            timestamp,
        }))
    }

    /// walkerOS's `producer.send` record.
    fn explain(&self, record: &KafkaRecord) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .settings
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
            .collect();
        let mut sent = json!({
            "topic": record.topic,
            "messages": [{
                "key": record.key,
                "value": String::from_utf8_lossy(&record.value),
                "headers": headers,
                "timestamp": record.timestamp.to_string(),
            }],
            "acks": self.settings.acks.value(),
            "compression": self.settings.compression.code(),
        });
        if let Some(timeout) = self.settings.timeout {
            sent["timeout"] = Value::from(timeout);
        }
        sent
    }

    fn wire_size(&self, record: &KafkaRecord) -> usize {
        record.topic.len() + record.key.len() + record.value.len()
    }

    async fn send(&self, batch: &[&KafkaRecord]) -> Result<Vec<Result<(), KafkaFailure>>, KafkaFailure> {
        let producer = self.current().ok_or(KafkaFailure::NotConnected)?;
        let mut reports = Vec::with_capacity(batch.len());
        for record in batch {
            let report = loop {
                let message = FutureRecord::to(&record.topic)
                    .key(&record.key)
                    .payload(&record.value)
                    .timestamp(record.timestamp)
                    .headers(self.headers.clone());
                match producer.send_result(message) {
                    Ok(delivery) => break Ok(delivery),
                    // The producer's queue is full: wait for it to drain (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((error, _)) => break Err(error),
                }
            };
            reports.push(report);
        }
        let outcomes = join_all(reports.into_iter().zip(batch).map(|(report, record)| async move {
            match report {
                Err(error) => Err(self.failure(&record.topic, error)),
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(self.failure(&record.topic, error)),
                    Err(_) => Err(KafkaFailure::Canceled),
                },
            }
        }))
        .await;
        if let Some((code, reason)) = producer.client().fatal_error() {
            self.replace(&producer, Replaced::Fatal { code, reason });
        } else if outcomes.iter().any(|outcome| {
            matches!(outcome, Err(KafkaFailure::Produce { error, .. })
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut))
        }) {
            self.check_timed_out(&producer).await;
        }
        Ok(outcomes)
    }

    fn classify(&self, failure: &KafkaFailure) -> ErrorClass {
        let error = match failure {
            KafkaFailure::UnknownTopic { .. } => return ErrorClass::Fatal,
            KafkaFailure::Canceled | KafkaFailure::NotConnected => return ErrorClass::Retryable,
            KafkaFailure::Produce { error, .. }
            | KafkaFailure::Client(error)
            | KafkaFailure::Unreachable { error, .. } => error,
        };
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::InvalidTimestamp
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::UnsupportedForMessageFormat,
            ) => ErrorClass::Fatal,
            _ => ErrorClass::Retryable,
        }
    }

    async fn shutdown(&self) -> Result<(), KafkaFailure> {
        // Every batch's delivery reports have been awaited; flush whatever librdkafka still
        // holds (nothing, normally) and let it close its connections.
        if let Some(producer) = self.current() {
            let timeout = self.settings.message_timeout;
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|_| KafkaFailure::Canceled)?
                .map_err(KafkaFailure::Client)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_become_one_underscore() {
        assert_eq!(name_key("page view"), "page_view");
        assert_eq!(name_key("order  \t complete"), "order_complete");
        assert_eq!(name_key("purchase"), "purchase");
        assert_eq!(name_key(" lead "), "_lead_");
    }

    #[test]
    fn key_paths_read_one_field_or_the_whole_event() {
        let event = Event::from_tree(serde_json::json!({
            "name": "user signup",
            "user": {"id": "usr-789", "n": 5},
            "data": {"items": [{"id": "a"}]}
        }));
        assert_eq!(key_at(&event, "user.id"), Some(Value::from("usr-789")));
        assert_eq!(key_at(&event, "user.n"), Some(Value::from(5)));
        assert_eq!(key_at(&event, "data.items.0.id"), Some(Value::from("a")));
        assert_eq!(key_at(&event, "user.missing"), None);
        assert_eq!(key_at(&event, "name"), Some(Value::from("user signup")));
    }
}
