//! `redis_pubsub`: events PUBLISHed to a Redis channel as JSON — the producer side of the
//! stream source's Pub/Sub mode, for Redis before 5.0 or for live-only fan-out. Pub/Sub is
//! fire-and-forget: Redis's reply counts the subscribers that heard it, and an event nobody
//! was subscribed to is gone; the event counts as delivered once Redis accepted the PUBLISH.

use redis::RedisError;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigErrors, join};
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::redis::connection::report_unknown_keys;
use crate::redis::{Connection, parse_connection};

/// Per-rule settings: `mapping.<entity>.<action>.settings.channel`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PubsubRuleSettings {
    pub channel: Option<String>,
}

impl crate::mapping::RuleSettings for PubsubRuleSettings {}

/// One PUBLISH.
pub struct Publish {
    channel: String,
    payload: Vec<u8>,
}

pub struct RedisPubsubDestination {
    connection: Connection,
    channel: String,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl Destination for RedisPubsubDestination {
    type RuleSettings = PubsubRuleSettings;
    type Wire = Publish;
    type Error = RedisError;
    const KIND: &'static str = "redis_pubsub";

    /// `settings.redis`: the Redis destination's connection keys plus `channel`.
    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let redis_path = join(path, "redis");
        let Some(block) = settings
            .and_then(|settings| settings.get("redis"))
            .and_then(Value::as_object)
        else {
            errors.push(redis_path, "missing: settings.redis with a url and a channel");
            return None;
        };
        let channel = match block.get("channel") {
            Some(Value::String(channel)) if !channel.is_empty() => Some(channel.clone()),
            _ => {
                errors.push(join(&redis_path, "channel"), "the channel to publish to");
                None
            }
        };
        let block = Value::Object(block.clone());
        report_unknown_keys(&block, &["channel"], &redis_path, errors);
        let connection = parse_connection(&block, &redis_path, &|name| std::env::var(name).ok(), errors)?;
        if connection.cluster {
            errors.push(
                join(&redis_path, "url"),
                "Pub/Sub publishing to Redis Cluster is not supported",
            );
        }
        Some(RedisPubsubDestination {
            connection,
            channel: channel?,
            manager: tokio::sync::OnceCell::new(),
        })
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 500,
            concurrency: 4,
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), RedisError> {
        let manager = self.connection.connect_managed().await?;
        let _ = self.manager.set(manager);
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, PubsubRuleSettings>) -> Result<Rendered<Publish>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let channel = input
            .rule_settings
            .and_then(|rule| rule.channel.clone())
            .unwrap_or_else(|| self.channel.clone());
        let payload = match input.data {
            Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(&Value::Object(data.clone())),
            _ => input.event.to_json(),
        };
        Ok(Rendered::Send(Publish { channel, payload }))
    }

    fn explain(&self, wire: &Publish) -> Value {
        serde_json::json!({"command": ["PUBLISH", wire.channel, String::from_utf8_lossy(&wire.payload)]})
    }

    fn wire_size(&self, wire: &Publish) -> usize {
        wire.channel.len() + wire.payload.len()
    }

    async fn send(&self, batch: &[&Publish]) -> Result<Vec<Result<(), RedisError>>, RedisError> {
        let mut manager = self
            .manager
            .get()
            .cloned()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::Io, "not connected to Redis yet")))?;
        let mut pipeline = redis::Pipeline::with_capacity(batch.len());
        for publish in batch {
            pipeline
                .cmd("PUBLISH")
                .arg(&publish.channel)
                .arg(publish.payload.as_slice());
        }
        // The replies are subscriber counts; zero is not an error for fire-and-forget.
        let _: Vec<i64> = pipeline.query_async(&mut manager).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &RedisError) -> ErrorClass {
        if crate::redis::retryable(error) {
            ErrorClass::Retryable
        } else {
            ErrorClass::Fatal
        }
    }

    async fn shutdown(&self) -> Result<(), RedisError> {
        Ok(())
    }
}
