//! The `redis_stream` source's settings: the connection keys of [`crate::redis::connection`]
//! plus the streams, the group and its mode, the consumer's name and its timings.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigErrors, join, typed};
use crate::redis::connection::{Connection, parse_connection, without_connection_keys};
use crate::redis::dead_letters::default_dlq;
use crate::redis::signing::{Signer, signing_key};

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
    /// `true` / `"stream"` (STREAMS_HMAC_KEY), `"audit"` (AUDIT_HMAC_KEY) or `{key | keyFile, scheme}`.
    verify: Option<Value>,
    /// ms: how often stream patterns are looked for again.
    scan_interval: Option<u64>,
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
    pub verify: Option<Signer>,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// How often streams matching a pattern are looked for.
    pub scan_interval: Duration,
}

/// Whether a stream name is a pattern (Redis glob: `*`, `?`, `[…]`) to discover streams by.
pub(super) fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '['])
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
        let env = |name: &str| std::env::var(name).ok();
        let connection = parse_connection(settings, &settings_path, &env, errors);
        let raw = typed::parse::<Raw>(&without_connection_keys(settings), &settings_path, errors)?;
        if connection.as_ref().is_some_and(|c| c.cluster) {
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
            scan_interval: Duration::from_millis(raw.scan_interval.unwrap_or(5_000).max(100)),
        })
    }

    pub(super) fn dead_letters(&self, stream: &str) -> String {
        self.dead_letter_stream.clone().unwrap_or_else(|| default_dlq(stream))
    }
}
