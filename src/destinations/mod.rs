//! The destinations weir ships, and the wiring of a flow-file destination entry into the
//! delivery machinery.
//!
//! A destination entry is walkerOS's: `type` (or `package`), and a `config` block with
//! walkerOS's keys — `settings` (the destination's own), `consent`, `mapping`, `policy`,
//! `data`, `include`, `batch`, `timeout`, `queueMax` — plus weir's delivery keys `retry`,
//! `concurrency` and `dlq`. [`build`] checks all of it, reporting every problem with its
//! path, and returns the destination as a [`Route`] plus the worker that delivers for it.

pub mod api;
pub mod blackhole;
pub mod demo;
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

use crate::config::flow::{Step, find_kind};
use crate::config::{ConfigErrors, join, typed};
use crate::delivery::dead_letter::DeadLetterSink;
use crate::delivery::feed::{self, FeedTask};
use crate::delivery::policy::{
    BatchPolicy, DEFAULT_QUEUE_MAX, DEFAULT_TIMEOUT, DeliveryPolicy, RetryPolicy, WALKEROS_BATCH_AGE,
    WALKEROS_BATCH_SIZE, WALKEROS_BATCH_WAIT,
};
use crate::delivery::route::{self, PipelineConfig, Route};
use crate::delivery::worker::WorkerTask;
use crate::delivery::{Destination, Endpoint};
use crate::mapping::{BatchSpec, DestinationMapping};

/// One destination type: its `type` name, walkerOS's package for it, and its constructor.
pub struct Kind {
    pub name: &'static str,
    pub package: Option<&'static str>,
    build: fn(&Step, Wrapper, &mut ConfigErrors) -> Option<BuiltDestination>,
}

const fn kind<D: Destination>() -> Kind {
    Kind {
        name: D::KIND,
        package: D::PACKAGE,
        build: build_kind::<D>,
    }
}

/// Every destination weir ships. Adding one is its folder and its line here.
pub const REGISTRY: [Kind; 10] = [
    kind::<file::FileDestination>(),
    kind::<stdout::StdoutDestination>(),
    kind::<blackhole::BlackholeDestination>(),
    kind::<redis::RedisDestination>(),
    kind::<kafka::KafkaDestination>(),
    kind::<redis_pubsub::RedisPubsubDestination>(),
    kind::<rudderstack::RudderStackDestination>(),
    kind::<sse::SseDestination>(),
    kind::<demo::DemoDestination>(),
    kind::<api::ApiDestination>(),
];

/// Default dead-letter file.
pub const DEFAULT_DLQ_PATH: &str = "weir-data/dlq.jsonl";

/// A destination ready to run.
pub struct BuiltDestination {
    pub route: Arc<dyn Route>,
    pub worker: WorkerTask,
    /// Its journal feed, if it takes journaled events from the journal.
    pub feed: Option<FeedTask>,
    /// The routes it serves over HTTP (the SSE hub).
    pub endpoint: Option<Endpoint>,
    /// Files it writes: its data files, then its dead-letter file.
    pub files: Vec<PathBuf>,
    pub dead_letter_file: Option<PathBuf>,
}

/// Builds the destination of a flow-file entry; `None` (with errors recorded) when the
/// entry is invalid or `disabled`.
pub fn build(step: &Step, errors: &mut ConfigErrors) -> Option<BuiltDestination> {
    let path = join(&step.path, "config");
    let config = match &step.config {
        Value::Null => serde_json::Map::new(),
        Value::Object(config) => config.clone(),
        _ => {
            errors.push(path, "must be an object");
            return None;
        }
    };
    // A disabled entry is still checked, so a mistake in it shows before it is enabled.
    // Every value is kept as given, so this reads any object; unknown keys are reported.
    let wrapper = typed::parse::<Wrapper>(&Value::Object(config), &path, errors).unwrap_or_default();
    let disabled = match &wrapper.disabled {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            errors.push(join(&path, "disabled"), "must be true or false");
            false
        }
    };
    let kind = find_kind(
        &REGISTRY,
        |kind| kind.name,
        |kind| kind.package,
        step,
        "destination",
        errors,
    );
    let built = kind.and_then(|kind| (kind.build)(step, wrapper, errors));
    if disabled {
        tracing::info!(destination = %step.id, "destination disabled in the flow file");
        return None;
    }
    built
}

fn build_kind<D: Destination>(step: &Step, wrapper: Wrapper, errors: &mut ConfigErrors) -> Option<BuiltDestination> {
    let path = join(&step.path, "config");
    let destination = D::from_settings(wrapper.settings.as_ref(), &join(&path, "settings"), errors);
    wire(destination, step, wrapper, &path, errors)
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

/// The walkerOS destination `config` block around a destination's own `settings`: every key
/// it may hold, so that an unknown one is reported by the code that reads the known ones.
/// Each value is kept as given (a `null` too) and checked on its own, so that one wrong
/// value does not hide the problems of the others.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wrapper {
    // Read by their owners: the destination (`settings`) and the mapping (the rest).
    #[serde(default, deserialize_with = "given")]
    settings: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    consent: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    mapping: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    policy: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    data: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    include: Option<Value>,
    // The delivery machinery's.
    #[serde(default, deserialize_with = "given")]
    batch: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    retry: Option<Value>,
    /// Per attempt, ms; 0 means the default (walkerOS).
    #[serde(default, deserialize_with = "given")]
    timeout: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    queue_max: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    concurrency: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    dlq: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    disabled: Option<Value>,
    // walkerOS keys with no effect in a server-side router: the instance id is the entry's
    // key, weir connects every destination at start, there is no runtime-added destination
    // to replay to, and weir's durable dead-letter sink and retrier replace the in-memory
    // DLQ cap and the circuit breaker.
    #[serde(default, deserialize_with = "given")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    init: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    load_script: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    queue: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    logger: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    dlq_max: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    breaker: Option<Value>,
    // walkerOS keys that need JavaScript or a browser at run time.
    #[serde(default, deserialize_with = "given")]
    env: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    before: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    next: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    cache: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    state: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    mock: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    require: Option<Value>,
    #[serde(default, deserialize_with = "given")]
    setup: Option<Value>,
}

/// A key that is present holds its value, `null` included (serde reads `null` as absent).
fn given<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Wrapper {
    /// Reports the keys weir cannot honour and logs the ones it ignores.
    fn check(&self, id: &str, path: &str, errors: &mut ConfigErrors) {
        let unsupported = [
            ("env", &self.env),
            ("before", &self.before),
            ("next", &self.next),
            ("cache", &self.cache),
            ("state", &self.state),
            ("mock", &self.mock),
            ("require", &self.require),
            ("setup", &self.setup),
        ];
        for (key, value) in unsupported {
            if value.is_some() {
                errors.push(join(path, key), format!("`{key}` is not supported by weir"));
            }
        }
        let ignored = [
            ("id", &self.id),
            ("init", &self.init),
            ("loadScript", &self.load_script),
            ("queue", &self.queue),
            ("logger", &self.logger),
            ("dlqMax", &self.dlq_max),
            ("breaker", &self.breaker),
        ];
        for (key, value) in ignored {
            if value.is_some() {
                tracing::debug!(destination = %id, key = %key, "walkerOS key has no effect in weir");
            }
        }
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
    wrapper: Wrapper,
    path: &str,
    errors: &mut ConfigErrors,
) -> Option<BuiltDestination> {
    let defaults = destination
        .as_ref()
        .map(Destination::delivery_defaults)
        .unwrap_or_default();
    wrapper.check(&step.id, path, errors);
    let config_batch = wrapper
        .batch
        .as_ref()
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
    let mapping_block: serde_json::Map<String, Value> = [
        ("consent", &wrapper.consent),
        ("mapping", &wrapper.mapping),
        ("policy", &wrapper.policy),
        ("data", &wrapper.data),
        ("include", &wrapper.include),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value.clone()?)))
    .collect();
    let mapping = DestinationMapping::<D::RuleSettings>::from_config(&mapping_block, path, errors, &mut |rule_batch| {
        let mut policy = rule_batch.policy(config_batch.as_ref());
        policy.max_bytes = defaults.batch_bytes;
        rule_batches.push(policy);
        rule_batches.len()
    })
    .map(|mapping| mapping.owned_by(&step.id));

    let mut retry = RetryPolicy::default();
    retry.max_retries = defaults.max_retries.unwrap_or(retry.max_retries);
    if let Some(value) = &wrapper.retry
        && let Some(parsed) = typed::parse::<RetryConfig>(value, &join(path, "retry"), errors)
    {
        retry.max_retries = parsed.max_retries.unwrap_or(retry.max_retries);
        retry.retry_delay = parsed.retry_delay.map_or(retry.retry_delay, Duration::from_millis);
        retry.max_retry_delay = parsed
            .max_retry_delay
            .map_or(retry.max_retry_delay, Duration::from_millis);
    }
    let default_timeout = defaults.attempt_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let timeout = match &wrapper.timeout {
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
    let queue_max = positive(wrapper.queue_max.as_ref(), "queueMax", path, errors)
        .or(defaults.queue_max)
        .unwrap_or(DEFAULT_QUEUE_MAX);
    let concurrency =
        positive(wrapper.concurrency.as_ref(), "concurrency", path, errors).unwrap_or(defaults.concurrency);
    let dead_letters = dead_letter_sink(wrapper.dlq.as_ref(), &join(path, "dlq"), errors);

    let mut destination = destination?;
    destination.use_batches(config_batch.is_some() || !rule_batches.is_empty());
    let mapping = mapping?;
    let endpoint = destination.http_endpoint();
    let files = destination.written_files();
    let dead_letter_file = dead_letters.file_path().map(std::path::Path::to_path_buf);
    let (pipeline, worker) = route::build(
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
    let pipeline = Arc::new(pipeline);
    let feed = pipeline.journaled().then(|| feed::task(pipeline.clone()));
    Some(BuiltDestination {
        route: pipeline,
        worker: Box::new(move |lifecycle| Box::pin(worker.run(lifecycle))),
        feed,
        endpoint,
        files,
        dead_letter_file,
    })
}

/// A count that must be at least 1.
fn positive(value: Option<&Value>, key: &str, path: &str, errors: &mut ConfigErrors) -> Option<usize> {
    match value?.as_u64() {
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
