//! `redis_stream`: events read from Redis Streams through a consumer group, reliably — what
//! Optimizely Agent's and Caracal's docs promise and their code does not (Optimizely Agent's
//! `pkg/syncer/redis_streams.go`, Caracal's Go consumers).
//!
//! Per stream: `XGROUP CREATE … MKSTREAM` (BUSYGROUP is fine); first this consumer's own
//! pending entries (id `0`: a restarted consumer with its stable name finds what it held),
//! then new ones (`>`). An entry is XACKed only once every destination delivered it or
//! dead-lettered it into its own sink; one that failed stays pending. A reaper claims entries
//! idle longer than `claimIdle` (XAUTOCLAIM, paging to `0-0`) — another instance's after a
//! crash, or this one's after a failure — and an entry delivered more than `maxDeliveries`
//! times goes to the dead-letter stream (streams::dlq's format), XACKed only after that XADD
//! succeeded. With verification keys, an entry with a bad or missing `_sig` is dead-lettered
//! as `bad_signature`, never dropped.
//!
//! `mode = "shared"`: one group, competing consumers (work is split). `mode = "broadcast"`:
//! one group per instance, `<group>:<consumer>`, so every instance sees every entry.
//!
//! Two connections per stream. Blocking reads have their own, whose reply timeout outlasts
//! `BLOCK`: Redis answers a read the client has given up on, handing it the entries that
//! arrived meanwhile, so a read that timed out (or failed) means a new connection and the
//! pending list read again, never another read on the old one. Everything else (XACK,
//! claims, dead letters) goes over a connection that reconnects by itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashSet;
use std::sync::Mutex;

use redis::aio::ConnectionManager;
use redis::{RedisError, RedisResult, Value as Reply};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigErrors, join, typed};
use crate::delivery::ack::AckSet;
use crate::destinations::redis::settings::{Connection, parse_connection, signing_key};
use crate::event::Event;
use crate::runtime::Runtime;
use crate::streams::dlq;
use crate::streams::provision::as_text;
use crate::streams::signing::{SIGNATURE_FIELD, SigningKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    Shared,
    Broadcast,
    /// SUBSCRIBE to channels named like the streams: fire-and-forget, as Redis before 5.0
    /// forces (chosen by itself then).
    Pubsub,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    // Connection keys: read by the Redis destination's code (`parse_connection`), listed
    // here so that they are not reported as unknown.
    #[allow(dead_code)]
    url: Option<Value>,
    #[allow(dead_code)]
    options: Option<Value>,
    #[allow(dead_code)]
    password_file: Option<String>,
    cluster: Option<bool>,
    stream: Option<String>,
    streams: Option<Vec<String>>,
    group: Option<String>,
    mode: Option<GroupMode>,
    consumer: Option<String>,
    start_id: Option<String>,
    batch_size: Option<usize>,
    /// ms
    block: Option<u64>,
    /// ms
    claim_idle: Option<u64>,
    max_deliveries: Option<u64>,
    dead_letter_stream: Option<String>,
    /// `true` (STREAMS_HMAC_KEY) or `{key | keyFile}`.
    verify: Option<Value>,
    /// ms, Optimizely Agent's names.
    retry_delay: Option<u64>,
    max_retry_delay: Option<u64>,
}

/// A checked `redis_stream` source.
#[derive(Debug, Clone)]
pub struct RedisStreamConfig {
    pub id: String,
    pub mode: GroupMode,
    pub connection: Connection,
    pub streams: Vec<String>,
    /// The group as created in Redis (with the instance suffix in broadcast mode).
    pub group: String,
    pub consumer: String,
    pub start_id: String,
    pub batch_size: usize,
    pub block: Duration,
    pub claim_idle: Duration,
    pub max_deliveries: u64,
    /// `None`: `<stream>.dlq`.
    pub dead_letter_stream: Option<String>,
    pub verify: Option<SigningKey>,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

/// The host name: a stable consumer name, so a restarted consumer finds its pending entries.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "weir".to_owned())
}

impl RedisStreamConfig {
    pub fn from_step(id: &str, config: &Value, path: &str, errors: &mut ConfigErrors) -> Option<RedisStreamConfig> {
        let settings_path = join(path, "settings");
        let Some(settings) = config.get("settings") else {
            errors.push(
                settings_path,
                "the redis_stream source needs settings with a url and streams",
            );
            return None;
        };
        let raw = typed::parse::<Raw>(settings, &settings_path, errors)?;
        let env = |name: &str| std::env::var(name).ok();
        // The connection keys alone: the rest are this source's, unknown to the connection code.
        let connection_keys: serde_json::Map<String, Value> = settings
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| matches!(key.as_str(), "url" | "options" | "passwordFile" | "cluster"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let connection = parse_connection(&Value::Object(connection_keys), &settings_path, &env, errors);
        if raw.cluster == Some(true) || connection.as_ref().is_some_and(|c| c.cluster) {
            errors.push(
                join(&settings_path, "url"),
                "the stream consumer reads from one Redis node; Redis Cluster is not supported here yet",
            );
        }
        let streams: Vec<String> = match (raw.stream.clone(), raw.streams.clone()) {
            (Some(stream), None) => vec![stream],
            (None, Some(streams)) if !streams.is_empty() => streams,
            _ => {
                errors.push(
                    join(&settings_path, "streams"),
                    "set `stream` or a non-empty `streams` list",
                );
                Vec::new()
            }
        };
        let consumer = raw.consumer.clone().unwrap_or_else(host_name);
        let base_group = raw.group.clone().unwrap_or_else(|| "weir".to_owned());
        let mode = raw.mode.unwrap_or(GroupMode::Shared);
        let group = match mode {
            GroupMode::Shared | GroupMode::Pubsub => base_group,
            GroupMode::Broadcast => format!("{base_group}:{consumer}"),
        };
        let verify = raw
            .verify
            .as_ref()
            .and_then(|value| signing_key(value, &join(&settings_path, "verify"), &env, errors));
        if streams.is_empty() {
            return None;
        }
        Some(RedisStreamConfig {
            id: id.to_owned(),
            mode,
            connection: connection?,
            streams,
            group,
            consumer,
            start_id: raw.start_id.unwrap_or_else(|| "$".to_owned()),
            batch_size: raw.batch_size.unwrap_or(10).max(1),
            block: Duration::from_millis(raw.block.unwrap_or(1000).max(1)),
            claim_idle: Duration::from_millis(raw.claim_idle.unwrap_or(60_000).max(1)),
            max_deliveries: raw.max_deliveries.unwrap_or(5).max(1),
            dead_letter_stream: raw.dead_letter_stream,
            verify,
            retry_delay: Duration::from_millis(raw.retry_delay.unwrap_or(100)),
            max_retry_delay: Duration::from_millis(raw.max_retry_delay.unwrap_or(5_000)),
        })
    }

    fn dead_letters(&self, stream: &str) -> String {
        self.dead_letter_stream
            .clone()
            .unwrap_or_else(|| dlq::default_dlq(stream))
    }
}

/// One stream entry as read.
struct Entry {
    id: String,
    fields: Vec<(String, Vec<u8>)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Entries of an XREADGROUP / XAUTOCLAIM reply list `[[id, [f, v, …]], …]`; entries
/// deleted meanwhile come back with nil fields and are skipped.
fn entries(list: &Reply) -> Vec<Entry> {
    let Reply::Array(items) = list else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Reply::Array(parts) = item else { return None };
            let id = as_text(parts.first()?)?;
            let Reply::Array(flat) = parts.get(1)? else { return None };
            let fields = flat
                .chunks(2)
                .filter_map(|pair| {
                    let name = as_text(pair.first()?)?;
                    let value = match pair.get(1)? {
                        Reply::BulkString(bytes) => bytes.clone(),
                        other => as_text(other)?.into_bytes(),
                    };
                    Some((name, value))
                })
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// The ids of the entries of a reply list that were deleted from the stream while pending
/// (nil fields): they can never be delivered.
fn deleted_ids(list: &Reply) -> Vec<String> {
    let Reply::Array(items) = list else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            Reply::Array(parts) if matches!(parts.get(1), Some(Reply::Nil) | None) => as_text(parts.first()?),
            _ => None,
        })
        .collect()
}

/// The id of the last entry of a reply list, deleted ones (nil fields) included.
fn last_id(list: &Reply) -> Option<String> {
    let Reply::Array(items) = list else { return None };
    let Reply::Array(parts) = items.last()? else {
        return None;
    };
    as_text(parts.first()?)
}

/// The event an entry carries: weir's and walkerOS's `event` field (JSON), walkerOS's flat
/// fields (objects and arrays as JSON, scalars as text), or Optimizely Agent's `data` field.
fn decode(entry: &Entry, runtime: &Runtime) -> Result<Event, String> {
    let field = |name: &str| entry.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| "a field is not UTF-8".to_owned());
    let json = |bytes: &[u8]| -> Result<Event, String> {
        let json = text(bytes)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| format!("not JSON: {e}"))?;
        runtime.collector.enrich_json(&json).map_err(|e| e.to_string())
    };
    if let Some(event) = field("event") {
        return json(event);
    }
    // walkerOS's flat form has a `name` (and a `data` field of its own); Optimizely's only `data`.
    if field("name").is_some() {
        let mut object = serde_json::Map::new();
        for (name, value) in &entry.fields {
            // `undefined` is walkerOS's flat form of a field with no value (a policy set it
            // to nothing): as if absent.
            if name == SIGNATURE_FIELD || value == b"undefined" {
                continue;
            }
            let value = text(value)?;
            let parsed = match name.as_str() {
                // Text fields as walkerOS's String() wrote them.
                "name" | "id" | "trigger" | "entity" | "action" => Value::String(value),
                _ => serde_json::from_str(&value).unwrap_or(Value::String(value)),
            };
            object.insert(name.clone(), parsed);
        }
        return runtime
            .collector
            .enrich(Value::Object(object))
            .map_err(|e| e.to_string());
    }
    if let Some(data) = field("data") {
        return json(data);
    }
    Err("no `event`, `data` or walkerOS flat fields".to_owned())
}

/// Reads one source until `stop`; a task per stream.
pub async fn run(config: RedisStreamConfig, runtime: Arc<Runtime>, stop: CancellationToken) -> std::io::Result<()> {
    let config = Arc::new(config);
    if config.mode == GroupMode::Pubsub || !streams_supported(&config, &stop).await {
        pubsub(config, runtime, stop).await;
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for stream in config.streams.clone() {
        tasks.spawn(consume(config.clone(), stream, runtime.clone(), stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Whether the server has streams (Redis 5.0): `INFO server`, as Optimizely Agent decides.
async fn streams_supported(config: &RedisStreamConfig, stop: &CancellationToken) -> bool {
    let info = with_retries(config, stop, "reading INFO server", || async {
        let mut connection = config.connection.connect_first().await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut connection)
            .await
    })
    .await;
    let Some(info) = info else { return true };
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim()
        .to_owned();
    let supported = crate::destinations::redis::parse_version(&version) >= (5, 0);
    if !supported {
        tracing::warn!(
            source = %config.id, version = %version,
            "Redis before 5.0 has no streams: subscribing with Pub/Sub instead, which is fire-and-forget (what is published while weir is not listening is lost)"
        );
    }
    supported
}

/// Pub/Sub: SUBSCRIBE to channels named like the streams and hand each message on, with no
/// acknowledgement to wait for (there is no one to tell). Resubscribes after a lost connection.
async fn pubsub(config: Arc<RedisStreamConfig>, runtime: Arc<Runtime>, stop: CancellationToken) {
    use futures_util::StreamExt;
    tracing::info!(source = %config.id, channels = ?config.streams, "subscribing (Pub/Sub: fire-and-forget)");
    while !stop.is_cancelled() {
        let subscribed = with_retries(&config, &stop, "subscribing", || async {
            let client = config.connection.client(&config.connection.nodes[0])?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in &config.streams {
                pubsub.subscribe(channel).await?;
            }
            Ok(pubsub)
        })
        .await;
        let Some(pubsub) = subscribed else { return };
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = stop.cancelled() => return,
            };
            let Some(message) = message else {
                tracing::warn!(source = %config.id, "Pub/Sub connection lost; subscribing again");
                break;
            };
            let entry = Entry {
                id: String::new(),
                fields: vec![("event".to_owned(), message.get_payload_bytes().to_vec())],
            };
            match decode(&entry, &runtime) {
                Ok(event) => {
                    let events = [(0, Arc::new(event))];
                    if runtime.dispatch(&config.id, &events, None).is_err() {
                        metrics::counter!("weir_pubsub_dropped_total", "source" => config.id.clone()).increment(1);
                        tracing::warn!(source = %config.id, "queues full: a Pub/Sub message is dropped (Pub/Sub cannot wait)");
                    }
                }
                Err(reason) => {
                    metrics::counter!("weir_pubsub_dropped_total", "source" => config.id.clone()).increment(1);
                    tracing::warn!(source = %config.id, channel = %message.get_channel_name(), reason, "undecodable Pub/Sub message dropped");
                }
            }
        }
    }
}

/// Errors worth retrying, as Optimizely Agent lists them (`pkg/syncer/redis_streams.go`): connection
/// refused or reset, timeouts, unreachable networks, broken pipes, EOF, exhausted pools,
/// unknown hosts, and Redis's `LOADING`, `READONLY`, `CLUSTERDOWN`. Everything else
/// (`WRONGTYPE`, `NOAUTH`, syntax errors, `OOM`) will not pass by waiting.
pub fn retryable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("LOADING" | "READONLY" | "CLUSTERDOWN"))
        || retryable_message(&error.to_string())
}

fn retryable_message(text: &str) -> bool {
    const MARKERS: [&str; 10] = [
        "connection refused",
        "connection reset",
        "timeout",
        "timed out",
        "network is unreachable",
        "broken pipe",
        "eof",
        "connection pool exhausted",
        "no such host",
        "failed to lookup address",
    ];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().any(|marker| lower.contains(marker))
        || ["LOADING", "READONLY", "CLUSTERDOWN"]
            .iter()
            .any(|code| text.contains(code))
}

/// Retries `attempt` with backoff until it succeeds or `stop`; `None` when stopped.
async fn with_retries<T, F, Fut>(
    config: &RedisStreamConfig,
    stop: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    let mut delay = config.retry_delay;
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                if retryable(&error) {
                    tracing::warn!(source = %config.id, error = %error, retry_in = ?delay, "{what} failed");
                } else {
                    // Waiting will not fix it; an operator will. Keep trying, slowly, loudly.
                    delay = config.max_retry_delay;
                    tracing::error!(source = %config.id, error = %error, retry_in = ?delay, "{what} failed and needs fixing");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return None,
                }
                delay = (delay * 2).min(config.max_retry_delay);
            }
        }
    }
}

struct Consumer {
    config: Arc<RedisStreamConfig>,
    stream: String,
    runtime: Arc<Runtime>,
    /// For XACK, XADD to the dead-letter stream, XAUTOCLAIM, XPENDING: never blocked by a
    /// read, and reconnecting by itself after Redis restarts.
    commands: ConnectionManager,
    /// Entries handed to the destinations and not yet acknowledged. Reading the pending list
    /// again (after a reconnect) or claiming skips them: an entry is never delivered twice at
    /// once by this consumer.
    in_flight: Mutex<HashSet<String>>,
}

async fn consume(config: Arc<RedisStreamConfig>, stream: String, runtime: Arc<Runtime>, stop: CancellationToken) {
    let connect = || config.connection.connect_managed();
    let Some(commands) = with_retries(&config, &stop, "connecting to Redis", connect).await else {
        return;
    };
    let create = || {
        let mut connection = commands.clone();
        let (stream, group, start) = (stream.clone(), config.group.clone(), config.start_id.clone());
        async move {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(&group)
                .arg(&start)
                .arg("MKSTREAM")
                .query_async(&mut connection)
                .await;
            match created {
                Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        }
    };
    if with_retries(&config, &stop, "creating the consumer group", create)
        .await
        .is_none()
    {
        return;
    }
    tracing::info!(source = %config.id, stream = %stream, group = %config.group, consumer = %config.consumer, "reading the stream");
    let consumer = Arc::new(Consumer {
        config: config.clone(),
        stream: stream.clone(),
        runtime,
        commands: commands.clone(),
        in_flight: Mutex::new(HashSet::new()),
    });

    // This consumer's own pending entries first, then new ones; the reaper alongside.
    let reaper = {
        let (consumer, stop) = (consumer.clone(), stop.clone());
        tokio::spawn(async move { consumer.reap(stop).await })
    };
    // The next batch is read while earlier ones are delivered: a few batches in flight keep
    // the round trips to Redis and the wait for acknowledgements from adding up.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut delivering = tokio::task::JoinSet::new();
    // Blocking reads have a connection of their own, opened here and dropped after any
    // failed read (see `connect_for_blocking_reads`). Each new connection starts by reading
    // this consumer's own pending entries (cursor `0`; those still being delivered are
    // skipped): a read Redis answered after the old connection stopped listening left its
    // entries there.
    let mut reads = None;
    let mut cursor = "0".to_owned();
    while !stop.is_cancelled() {
        let connection = match reads.as_mut() {
            Some(connection) => connection,
            None => {
                let connect = || config.connection.connect_for_blocking_reads(config.block);
                let Some(connection) = with_retries(&config, &stop, "connecting to Redis", connect).await else {
                    break;
                };
                cursor = "0".to_owned();
                reads.insert(connection)
            }
        };
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&config.group)
            .arg(&config.consumer)
            .arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(config.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&cursor);
        let read = command.query_async::<Reply>(connection);
        let reply = tokio::select! {
            reply = read => reply,
            () = stop.cancelled() => break,
        };
        let (batch, last_id, deleted) = match reply {
            // [[stream, [entries]]], or nil on timeout.
            Ok(Reply::Array(streams)) => match streams.first() {
                Some(Reply::Array(pair)) => pair
                    .get(1)
                    .map(|list| (entries(list), last_id(list), deleted_ids(list)))
                    .unwrap_or_default(),
                _ => Default::default(),
            },
            Ok(_) => Default::default(),
            // The group is gone: Redis lost its data (restarted without persistence), or
            // someone deleted it. Created again as at start (at `startId`), read on.
            Err(error) if error.code() == Some("NOGROUP") => {
                tracing::warn!(
                    source = %config.id, stream = %stream, group = %config.group, start = %config.start_id,
                    "the consumer group is gone (Redis lost its data, or it was deleted); creating it again"
                );
                if with_retries(&config, &stop, "creating the consumer group", create)
                    .await
                    .is_none()
                {
                    break;
                }
                cursor = "0".to_owned();
                continue;
            }
            Err(error) => {
                let delay = if retryable(&error) {
                    config.retry_delay
                } else {
                    config.max_retry_delay
                };
                tracing::warn!(source = %config.id, error = %error, retry_in = ?delay, "reading the stream failed; reconnecting");
                reads = None;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };
        if cursor != ">" {
            // Own pending entries are read by id: continue after the last one (one deleted
            // since counts too: a page of those is not the end of the list). A deleted one
            // (trimmed while pending) can never be delivered: acknowledged, so it goes.
            cursor = last_id.unwrap_or_else(|| ">".to_owned());
            if !deleted.is_empty() {
                let ids: Vec<&String> = deleted.iter().collect();
                consumer.ack(&ids).await;
            }
        }
        if !batch.is_empty() {
            // Queued here, in stream order; only the wait for delivery runs alongside.
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if let Some(dispatched) = consumer.dispatch(batch).await {
                let consumer = consumer.clone();
                delivering.spawn(async move {
                    consumer.acknowledge(dispatched).await;
                    drop(permit);
                });
            }
            while delivering.try_join_next().is_some() {}
        }
    }
    // Stopped reading, and no read left open for Redis to hand entries to; what was read is
    // still delivered and acknowledged.
    drop(reads.take());
    while delivering.join_next().await.is_some() {}
    reaper.abort();
}

/// Batches read ahead of their delivery.
const BATCHES_IN_FLIGHT: usize = 4;

/// Tries of one XACK before its entries are left to the reaper.
const ACK_ATTEMPTS: u32 = 5;

impl Consumer {
    /// Verifies, decodes and delivers a batch, then XACKs what every destination accounted
    /// for; dead-letters what cannot be an event.
    async fn handle(&self, batch: Vec<Entry>) {
        if let Some(dispatched) = self.dispatch(batch).await {
            self.acknowledge(dispatched).await;
        }
    }

    /// Verifies and decodes a batch and queues its events at the destinations, in stream
    /// order; dead-letters what cannot be an event. The acknowledgements are still to come.
    async fn dispatch(&self, mut batch: Vec<Entry>) -> Option<(Vec<String>, crate::delivery::ack::AckWait)> {
        // Taken for this delivery, unless already being delivered (checked and taken at once:
        // the read loop and the reaper both come here).
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.retain(|entry| in_flight.insert(entry.id.clone()));
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut settled = Vec::new();
        for entry in batch {
            if let Some(key) = &self.config.verify {
                let signature = entry.fields.iter().find(|(n, _)| n == SIGNATURE_FIELD);
                let unsigned: Vec<(&str, &[u8])> = entry
                    .fields
                    .iter()
                    .filter(|(n, _)| n != SIGNATURE_FIELD)
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                let valid = signature.is_some_and(|(_, sig)| {
                    std::str::from_utf8(sig).is_ok_and(|sig| key.verify(&self.stream, &unsigned, sig))
                });
                if !valid {
                    self.dead_letter(&entry, "bad_signature", 1).await;
                    settled.push(entry.id);
                    continue;
                }
            }
            match decode(&entry, &self.runtime) {
                Ok(mut event) => {
                    event.set_origin(crate::event::StreamOrigin {
                        stream: self.stream.clone(),
                        id: entry.id.clone(),
                    });
                    events.push((events.len(), Arc::new(event)));
                    ids.push(entry.id);
                }
                Err(reason) => {
                    self.dead_letter(&entry, &format!("undecodable: {reason}"), 1).await;
                    settled.push(entry.id);
                }
            }
        }
        self.release(&settled);
        if events.is_empty() {
            return None;
        }
        let (acks, wait) = AckSet::new(events.len());
        let mut delay = self.config.retry_delay;
        // A full queue is backpressure: wait and try again, the entries stay pending meanwhile.
        while self.runtime.dispatch(&self.config.id, &events, Some(&acks)).is_err() {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
        acks.seal();
        Some((ids, wait))
    }

    /// Waits for a dispatched batch's outcomes and XACKs what every destination accounted for.
    async fn acknowledge(&self, (ids, wait): (Vec<String>, crate::delivery::ack::AckWait)) {
        let outcomes = wait.outcomes().await;
        let done: Vec<&String> = ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_accounted())
            .map(|(id, _)| id)
            .collect();
        if done.len() < ids.len() {
            tracing::warn!(
                source = %self.config.id, stream = %self.stream, failed = ids.len() - done.len(),
                "entries not delivered stay pending; they are claimed again after claimIdle"
            );
        }
        if !done.is_empty() {
            self.ack(&done).await;
        }
        self.release(&ids);
    }

    /// No longer being delivered (acknowledged, dead-lettered, or left pending).
    fn release(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in ids {
            in_flight.remove(id);
        }
    }

    /// XACK, tried again while the error is one that passes (XACK is idempotent; the
    /// connection reconnects by itself).
    async fn ack(&self, ids: &[&String]) {
        let mut delay = self.config.retry_delay;
        for attempt in 1..=ACK_ATTEMPTS {
            let mut connection = self.commands.clone();
            let result: RedisResult<u64> = redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.config.group)
                .arg(ids)
                .query_async(&mut connection)
                .await;
            match result {
                Ok(_) => return,
                Err(error) if attempt < ACK_ATTEMPTS && retryable(&error) => {
                    tracing::debug!(source = %self.config.id, error = %error, "XACK failed; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.max_retry_delay);
                }
                Err(error) => {
                    // Not lost: the entries stay pending and are delivered again after claimIdle.
                    tracing::warn!(source = %self.config.id, error = %error, entries = ids.len(), "XACK failed");
                    return;
                }
            }
        }
    }

    /// Moves an entry to the dead-letter stream, then XACKs it; if the XADD fails it stays
    /// pending (and is tried again after claimIdle).
    async fn dead_letter(&self, entry: &Entry, reason: &str, attempts: u64) {
        let target = self.config.dead_letters(&self.stream);
        let fields = dlq::entry_fields(
            reason,
            &entry.id,
            attempts,
            &self.config.consumer,
            now_ms(),
            &entry.fields,
        );
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&target).arg("*");
        for (name, value) in &fields {
            xadd.arg(name).arg(value.as_slice());
        }
        let mut connection = self.commands.clone();
        match xadd.query_async::<String>(&mut connection).await {
            Ok(_) => {
                metrics::counter!("weir_stream_dead_lettered_total", "source" => self.config.id.clone(), "reason" => reason_label(reason)).increment(1);
                tracing::warn!(source = %self.config.id, stream = %self.stream, entry = %entry.id, reason, dead_letters = %target, "entry dead-lettered");
                self.ack(&[&entry.id]).await;
            }
            Err(error) => tracing::error!(
                source = %self.config.id, entry = %entry.id, error = %error,
                "cannot write the dead letter; the entry stays pending"
            ),
        }
    }

    /// Every `claimIdle`: claims entries idle that long (XAUTOCLAIM, paging to `0-0`);
    /// dead-letters those delivered more than `maxDeliveries` times, delivers the rest.
    async fn reap(&self, stop: CancellationToken) {
        let idle = self.config.claim_idle.as_millis() as u64;
        let period = self
            .config
            .claim_idle
            .min(Duration::from_secs(30))
            .max(Duration::from_millis(50));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = stop.cancelled() => return,
            }
            let mut start = "0-0".to_owned();
            loop {
                let mut connection = self.commands.clone();
                let reply: RedisResult<Reply> = redis::cmd("XAUTOCLAIM")
                    .arg(&self.stream)
                    .arg(&self.config.group)
                    .arg(&self.config.consumer)
                    .arg(idle)
                    .arg(&start)
                    .arg("COUNT")
                    .arg(100)
                    .query_async(&mut connection)
                    .await;
                let (next, claimed) = match reply {
                    Ok(Reply::Array(parts)) if parts.len() >= 2 => (
                        parts.first().and_then(as_text).unwrap_or_else(|| "0-0".into()),
                        entries(&parts[1]),
                    ),
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(source = %self.config.id, error = %error, "XAUTOCLAIM failed");
                        break;
                    }
                };
                if !claimed.is_empty() {
                    self.handle_claimed(claimed).await;
                }
                if next == "0-0" || stop.is_cancelled() {
                    break;
                }
                start = next;
            }
        }
    }

    async fn handle_claimed(&self, mut claimed: Vec<Entry>) {
        // This consumer's own entries still being delivered are claimed too once idle that
        // long: they are not handed out again (nor dead-lettered) meanwhile.
        {
            let in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            claimed.retain(|entry| !in_flight.contains(&entry.id));
        }
        if claimed.is_empty() {
            return;
        }
        let counts = self.delivery_counts(&claimed).await.unwrap_or_default();
        let mut again = Vec::new();
        for entry in claimed {
            let delivered = counts.iter().find(|(id, _)| *id == entry.id).map_or(1, |(_, n)| *n);
            if delivered > self.config.max_deliveries {
                self.dead_letter(&entry, "max_deliveries", delivered).await;
            } else {
                again.push(entry);
            }
        }
        if !again.is_empty() {
            tracing::info!(source = %self.config.id, stream = %self.stream, entries = again.len(), "claimed idle entries");
            self.handle(again).await;
        }
    }

    /// Times each entry was delivered (XPENDING's extended form).
    async fn delivery_counts(&self, entries: &[Entry]) -> Result<Vec<(String, u64)>, RedisError> {
        let mut counts = Vec::with_capacity(entries.len());
        let mut connection = self.commands.clone();
        for entry in entries {
            let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.config.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query_async(&mut connection)
                .await?;
            if let Some((id, _, _, delivered)) = reply.into_iter().next() {
                counts.push((id, delivered));
            }
        }
        Ok(counts)
    }
}

/// A bounded metric label: the reason up to its first `:` (details vary per entry).
fn reason_label(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Optimizely Agent's table (redis_streams_error_test.go).
    #[test]
    fn retryable_errors_are_optimizely_agents() {
        for text in [
            "dial tcp: connection refused",
            "read: connection reset by peer",
            "i/o timeout",
            "network is unreachable",
            "write: broken pipe",
            "EOF",
            "connection pool exhausted",
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "CLUSTERDOWN The cluster is down",
        ] {
            assert!(retryable_message(text), "{text}");
        }
        for text in [
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOAUTH Authentication required.",
        ] {
            assert!(!retryable_message(text), "{text}");
        }
    }
}
