//! The destinations weir ships, and the wiring of a flow-file destination entry into the
//! delivery machinery.
//!
//! A destination entry is walkerOS's: `type` (or `package`), and a `config` block with
//! walkerOS's keys — `settings` (the destination's own), `consent`, `mapping`, `policy`,
//! `data`, `include`, `batch`, `timeout`, `queueMax` — plus weir's delivery keys `retry`,
//! `concurrency` and `dlq`. [`build`] checks all of it, reporting every problem with its
//! path, and returns the destination as a [`Route`] plus the worker that delivers for it.

pub mod blackhole;
pub mod file;
pub mod kafka;
pub mod redis;
pub mod redis_pubsub;
pub mod rudderstack;
pub mod sse;
pub mod stdout;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::flow::Step;
use crate::config::{ConfigErrors, join, typed};
use crate::delivery::Destination;
use crate::delivery::dead_letter::DeadLetterSink;
use crate::delivery::pipeline::{self, PipelineConfig, Route};
use crate::delivery::policy::{
    BatchPolicy, DEFAULT_QUEUE_MAX, DEFAULT_TIMEOUT, DeliveryPolicy, RetryPolicy, WALKEROS_BATCH_AGE,
    WALKEROS_BATCH_SIZE, WALKEROS_BATCH_WAIT,
};
use crate::mapping::{BatchSpec, DestinationMapping};
use crate::runtime::WorkerTask;

/// The destination types weir knows, for error messages.
pub const KINDS: [&str; 8] = [
    "file",
    "stdout",
    "blackhole",
    "redis",
    "kafka",
    "redis_pubsub",
    "rudderstack",
    "sse",
];

/// Default dead-letter file.
pub const DEFAULT_DLQ_PATH: &str = "weir-data/dlq.jsonl";

/// A destination ready to run.
pub struct BuiltDestination {
    pub route: Arc<dyn Route>,
    pub worker: WorkerTask,
    /// The path and routes it serves on weir's HTTP listeners.
    pub endpoint: Option<(String, axum::Router)>,
}

/// Builds the destination of a flow-file entry; `None` (with errors recorded) when the
/// entry is invalid or `disabled`.
pub fn build(step: &Step, errors: &mut ConfigErrors) -> Option<BuiltDestination> {
    let config = match &step.config {
        Value::Null => serde_json::Map::new(),
        Value::Object(config) => config.clone(),
        _ => {
            errors.push(join(&step.path, "config"), "must be an object");
            return None;
        }
    };
    let disabled = match config.get("disabled") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            errors.push(join(&step.path, "config.disabled"), "must be true or false");
            false
        }
    };
    let path = join(&step.path, "config");
    let settings = config.get("settings");
    let settings_path = join(&path, "settings");
    // A disabled entry is still checked, so a mistake in it shows before it is enabled.
    let built = match step.kind.as_str() {
        "file" => {
            let destination = file::FileDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "stdout" => {
            let destination = stdout::StdoutDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "redis" => {
            let destination = redis::RedisDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "kafka" => {
            let destination = kafka::KafkaDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "rudderstack" => {
            let destination = rudderstack::RudderStackDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "redis_pubsub" => {
            let destination = redis_pubsub::RedisPubsubDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "sse" => {
            let destination = sse::SseDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        "blackhole" => {
            let destination = blackhole::BlackholeDestination::from_settings(settings, &settings_path, errors);
            wire(destination, step, &config, &path, errors)
        }
        other => {
            errors.push(
                join(&step.path, "type"),
                format!("unknown destination type \"{other}\"; weir has {}", KINDS.join(", ")),
            );
            None
        }
    };
    if disabled {
        tracing::info!(destination = %step.id, "destination disabled in the flow file");
        return None;
    }
    built
}

/// For destinations without settings: every key given is an error.
fn no_settings(kind: &str, settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) {
    match settings {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for key in map.keys() {
                errors.push(join(path, key), format!("unknown key ({kind} has no settings)"));
            }
        }
        Some(_) => errors.push(path, format!("{kind} has no settings")),
    }
}

/// `retry` block.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryConfig {
    max_retries: Option<u32>,
    retry_delay: Option<u64>,
    max_retry_delay: Option<u64>,
}

/// `dlq = { type = "file", path = "..." }` (the type defaults to `file`).
#[derive(Debug, Deserialize)]
struct FileDlqConfig {
    path: PathBuf,
}

fn dead_letter_sink(value: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> DeadLetterSink {
    let default = || DeadLetterSink::file(&PathBuf::from(DEFAULT_DLQ_PATH));
    let Some(value) = value else { return default() };
    let Value::Object(fields) = value else {
        errors.push(path, "must be {type = \"file\", path = \"...\"}");
        return default();
    };
    let mut fields = fields.clone();
    match fields.remove("type") {
        None => {}
        Some(Value::String(kind)) if kind == "file" => {}
        Some(other) => {
            errors.push(
                join(path, "type"),
                format!("{other} is not a dead-letter sink weir has (\"file\")"),
            );
            return default();
        }
    }
    match typed::parse::<FileDlqConfig>(&Value::Object(fields), path, errors) {
        Some(config) => DeadLetterSink::file(&config.path),
        None => default(),
    }
}

fn wire<D: Destination>(
    destination: Option<D>,
    step: &Step,
    config: &serde_json::Map<String, Value>,
    path: &str,
    errors: &mut ConfigErrors,
) -> Option<BuiltDestination> {
    let defaults = destination
        .as_ref()
        .map(Destination::delivery_defaults)
        .unwrap_or_default();
    let config_batch = config
        .get("batch")
        .and_then(|value| BatchSpec::parse(value, &join(path, "batch"), errors));
    let mut batch = match (&config_batch, defaults.batch_age) {
        (Some(spec), _) => spec.policy(None),
        (None, None) => BatchPolicy::immediate(defaults.batch_size),
        // Full at the size, or sent when its first event is this old.
        (None, Some(age)) => BatchPolicy {
            size: defaults.batch_size,
            max_bytes: None,
            wait: age,
            age,
        },
    };
    batch.max_bytes = defaults.batch_bytes;
    let mut rule_batches = Vec::new();
    let mapping = DestinationMapping::<D::RuleSettings>::from_config(config, path, errors, &mut |rule_batch| {
        let mut policy = rule_batch.policy(config_batch.as_ref());
        policy.max_bytes = defaults.batch_bytes;
        rule_batches.push(policy);
        rule_batches.len()
    });

    let mut retry = RetryPolicy::default();
    retry.max_retries = defaults.max_retries.unwrap_or(retry.max_retries);
    if let Some(value) = config.get("retry")
        && let Some(parsed) = typed::parse::<RetryConfig>(value, &join(path, "retry"), errors)
    {
        retry.max_retries = parsed.max_retries.unwrap_or(retry.max_retries);
        retry.retry_delay = parsed.retry_delay.map_or(retry.retry_delay, Duration::from_millis);
        retry.max_retry_delay = parsed
            .max_retry_delay
            .map_or(retry.max_retry_delay, Duration::from_millis);
    }
    let default_timeout = defaults.attempt_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let timeout = match config.get("timeout") {
        None => default_timeout,
        // walkerOS: 0 or unset means the default.
        Some(value) => match value.as_u64() {
            Some(0) => default_timeout,
            Some(ms)
                if defaults
                    .attempt_timeout
                    .is_some_and(|least| Duration::from_millis(ms) < least) =>
            {
                errors.push(
                    join(path, "timeout"),
                    format!(
                        "must be at least {} ms: the client reports each record within its own timeout",
                        default_timeout.as_millis()
                    ),
                );
                default_timeout
            }
            Some(ms) => Duration::from_millis(ms),
            None => {
                errors.push(join(path, "timeout"), "must be a number of milliseconds");
                default_timeout
            }
        },
    };
    let queue_max = positive(config, "queueMax", path, errors)
        .or(defaults.queue_max)
        .unwrap_or(DEFAULT_QUEUE_MAX);
    let concurrency = positive(config, "concurrency", path, errors).unwrap_or(defaults.concurrency);
    let dead_letters = dead_letter_sink(config.get("dlq"), &join(path, "dlq"), errors);

    for key in config.keys() {
        let at = join(path, key);
        match key.as_str() {
            "settings" | "consent" | "mapping" | "policy" | "data" | "include" | "batch" | "retry" | "timeout"
            | "queueMax" | "concurrency" | "dlq" | "disabled" => {}
            // walkerOS keys with no effect in a server-side router: the instance id is the
            // entry's key, weir connects every destination at start, there is no
            // runtime-added destination to replay to, and weir's durable dead-letter sink
            // and retrier replace the in-memory DLQ cap and the circuit breaker.
            "id" | "init" | "loadScript" | "queue" | "logger" | "dlqMax" | "breaker" => {
                tracing::debug!(destination = %step.id, key = %key, "walkerOS key has no effect in weir");
            }
            "env" | "before" | "next" | "cache" | "state" | "mock" | "require" | "setup" => {
                errors.push(at, format!("`{key}` is not supported by weir"));
            }
            _ => errors.push(at, "unknown key"),
        }
    }

    let destination = destination?;
    let mapping = mapping?;
    let endpoint = destination.http_endpoint();
    let (pipeline, worker) = pipeline::build(
        destination,
        PipelineConfig {
            id: step.id.clone(),
            mapping,
            sources: step.sources.clone(),
            rule_batches,
            delivery: DeliveryPolicy {
                batch,
                retry,
                timeout,
                queue_max,
                concurrency,
            },
            dead_letters,
        },
    );
    Some(BuiltDestination {
        route: Arc::new(pipeline),
        worker: Box::new(move |lifecycle| Box::pin(worker.run(lifecycle))),
        endpoint,
    })
}

fn positive(
    config: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut ConfigErrors,
) -> Option<usize> {
    let value = config.get(key)?;
    match value.as_u64() {
        Some(n) if n > 0 => Some(n as usize),
        _ => {
            errors.push(join(path, key), "must be a positive whole number");
            None
        }
    }
}

impl BatchSpec {
    /// Resolves this spec (a rule's or the destination's) into a policy: per field, this
    /// spec, then `fallback` (the destination's spec, for a rule), then walkerOS's defaults.
    pub fn policy(&self, fallback: Option<&BatchSpec>) -> BatchPolicy {
        let pick = |own: Option<u64>, other: Option<u64>| own.or(other);
        let size = pick(self.size, fallback.and_then(|f| f.size)).map_or(WALKEROS_BATCH_SIZE, |n| n as usize);
        let wait = pick(self.wait, fallback.and_then(|f| f.wait)).map_or(WALKEROS_BATCH_WAIT, Duration::from_millis);
        let age = pick(self.age, fallback.and_then(|f| f.age)).map_or(WALKEROS_BATCH_AGE, Duration::from_millis);
        BatchPolicy {
            size: size.max(1),
            max_bytes: None,
            wait,
            age,
        }
    }
}
