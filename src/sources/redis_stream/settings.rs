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
    /// ms.
    retry_delay: Option<u64>,
    max_retry_delay: Option<u64>,
    // Optimizely Agent's `synchronization.pubsub.redis` tuning keys, under Agent's names.
    #[serde(rename = "batch_size")]
    agent_batch_size: Option<Value>,
    #[serde(rename = "retry_delay")]
    agent_retry_delay: Option<Value>,
    #[serde(rename = "max_retry_delay")]
    agent_max_retry_delay: Option<Value>,
    #[serde(rename = "flush_interval")]
    agent_flush_interval: Option<Value>,
    #[serde(rename = "max_retries")]
    agent_max_retries: Option<Value>,
}

/// Agent's tuning keys, checked as Agent reads them (a whole number or a Go duration string;
/// zero or less means Agent's default) but with a named error where Agent silently falls back.
struct AgentTuning {
    batch_size: Option<usize>,
    retry_delay: Option<Duration>,
    max_retry_delay: Option<Duration>,
}

impl AgentTuning {
    fn read(raw: &Raw, path: &str, errors: &mut ConfigErrors) -> AgentTuning {
        let count = |value: &Option<Value>, key: &str, errors: &mut ConfigErrors| -> Option<i64> {
            let value = value.as_ref()?;
            let number = value.as_i64();
            if number.is_none() {
                errors.push(join(path, key), format!("{value} is not a whole number"));
            }
            number
        };
        let duration = |value: &Option<Value>, key: &str, errors: &mut ConfigErrors| {
            crate::redis::connection::go_duration(value.as_ref()?, &join(path, key), errors).filter(|d| !d.is_zero())
        };
        let batch_size = count(&raw.agent_batch_size, "batch_size", errors).filter(|n| *n > 0);
        if count(&raw.agent_max_retries, "max_retries", errors).is_some() {
            errors.warn(
                join(path, "max_retries"),
                "weir retries a lost connection until it is back (retry_delay doubling up to max_retry_delay), so a retry count does not apply",
            );
        }
        if duration(&raw.agent_flush_interval, "flush_interval", errors).is_some() {
            errors.warn(
                join(path, "flush_interval"),
                "weir hands each read on at once, so there is no batch to flush",
            );
        }
        AgentTuning {
            batch_size: batch_size.map(|n| n as usize),
            retry_delay: duration(&raw.agent_retry_delay, "retry_delay", errors),
            max_retry_delay: duration(&raw.agent_max_retry_delay, "max_retry_delay", errors),
        }
    }
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

/// This weir's instance name: `WEIR_INSTANCE`, else the host name. The default consumer name
/// (and so, in broadcast mode, the group's suffix): stable, so a restarted consumer finds its
/// pending entries; `WEIR_INSTANCE` tells two instances on one host apart.
fn instance_name(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("WEIR_INSTANCE")
        .filter(|name| !name.trim().is_empty())
        .or_else(|| env("HOSTNAME"))
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
        let consumer = raw.consumer.clone().unwrap_or_else(|| instance_name(&env));
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
        let agent = AgentTuning::read(&raw, &settings_path, errors);
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
            batch_size: raw.batch_size.or(agent.batch_size).unwrap_or(10).max(1),
            block: Duration::from_millis(raw.block.unwrap_or(1000).max(1)),
            claim_idle: Duration::from_millis(raw.claim_idle.unwrap_or(60_000).max(1)),
            max_deliveries: raw.max_deliveries.unwrap_or(5).max(1),
            dead_letter_stream: raw.dead_letter_stream,
            verify,
            retry_delay: raw
                .retry_delay
                .map(Duration::from_millis)
                .or(agent.retry_delay)
                .unwrap_or(Duration::from_millis(100)),
            max_retry_delay: raw
                .max_retry_delay
                .map(Duration::from_millis)
                .or(agent.max_retry_delay)
                .unwrap_or(Duration::from_millis(5_000)),
            scan_interval: Duration::from_millis(raw.scan_interval.unwrap_or(5_000).max(100)),
        })
    }

    pub(super) fn dead_letters(&self, stream: &str) -> String {
        self.dead_letter_stream.clone().unwrap_or_else(|| default_dlq(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(settings: Value) -> (Option<RedisStreamConfig>, ConfigErrors) {
        let mut errors = ConfigErrors::default();
        let config =
            RedisStreamConfig::from_step("s", &json!({ "settings": settings }), "sources.s.config", &mut errors);
        (config, errors)
    }

    /// Agent's `synchronization.pubsub.redis` block pasted under the source's settings.
    #[test]
    fn optimizely_agent_s_tuning_keys_mean_what_they_mean_in_agent() {
        let (config, errors) = parse(json!({
            "streams": ["stream:optimizely-sync-*"], "mode": "broadcast",
            "host": "localhost:6379", "database": 0, "password": "",
            "batch_size": 25, "flush_interval": "5s", "max_retries": 3,
            "retry_delay": "250ms", "max_retry_delay": "2s", "connection_timeout": "10s"
        }));
        assert!(errors.is_empty(), "{errors}");
        let config = config.unwrap();
        assert_eq!(config.batch_size, 25);
        assert_eq!(config.retry_delay, Duration::from_millis(250));
        assert_eq!(config.max_retry_delay, Duration::from_secs(2));
        let warned: Vec<&str> = errors.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            warned,
            [
                "sources.s.config.settings.max_retries",
                "sources.s.config.settings.flush_interval"
            ]
        );
        // Zero is Agent's "use the default".
        let (config, _) = parse(json!({"stream": "x", "batch_size": 0, "retry_delay": "0s"}));
        let config = config.unwrap();
        assert_eq!(
            (config.batch_size, config.retry_delay),
            (10, Duration::from_millis(100))
        );
        // Where Agent silently falls back, weir names the key.
        let (_, errors) = parse(json!({"stream": "x", "batch_size": "10", "retry_delay": 100}));
        let text = errors.to_string();
        assert!(
            text.contains("settings.batch_size: \"10\" is not a whole number"),
            "{text}"
        );
        assert!(
            text.contains("settings.retry_delay: 100 is not a Go duration"),
            "{text}"
        );
    }

    #[test]
    fn the_instance_name_comes_from_weir_instance_then_the_host() {
        let env = |name: &str| match name {
            "WEIR_INSTANCE" => Some("blue".to_owned()),
            "HOSTNAME" => Some("box".to_owned()),
            _ => None,
        };
        assert_eq!(instance_name(&env), "blue");
        assert_eq!(
            instance_name(&|name| (name == "HOSTNAME").then(|| "box".to_owned())),
            "box"
        );
    }
}
