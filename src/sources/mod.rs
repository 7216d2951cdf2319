//! Sources: where events come from — the HTTP source (walkerOS's express source,
//! wire-compatible) and the Redis Streams consumer.

pub mod cors;
pub mod http;
pub mod query;
pub mod redis_stream;

use crate::config::ConfigErrors;
use crate::config::flow::Step;

/// The source types weir knows, for error messages.
pub const KINDS: [&str; 2] = ["http", "redis_stream"];

/// A checked source entry.
#[derive(Debug)]
pub enum SourceConfig {
    Http(http::HttpSourceConfig),
    RedisStream(redis_stream::RedisStreamConfig),
}

impl SourceConfig {
    pub fn id(&self) -> &str {
        match self {
            SourceConfig::Http(http) => &http.id,
            SourceConfig::RedisStream(stream) => &stream.id,
        }
    }
}

/// Checks a flow-file source entry; `None` (errors recorded) when invalid or `disabled`.
pub fn build(step: &Step, errors: &mut ConfigErrors) -> Option<SourceConfig> {
    let config_path = crate::config::join(&step.path, "config");
    // A disabled entry is still checked, so a mistake in it shows before it is enabled.
    let built = match step.kind.as_str() {
        "http" => {
            http::HttpSourceConfig::from_step(&step.id, &step.config, &config_path, errors).map(SourceConfig::Http)
        }
        "redis_stream" => redis_stream::RedisStreamConfig::from_step(&step.id, &step.config, &config_path, errors)
            .map(SourceConfig::RedisStream),
        other => {
            errors.push(
                crate::config::join(&step.path, "type"),
                format!("unknown source type \"{other}\"; weir has {}", KINDS.join(", ")),
            );
            None
        }
    };
    if step.config.get("disabled") == Some(&serde_json::Value::Bool(true)) {
        tracing::info!(source = %step.id, "source disabled in the flow file");
        return None;
    }
    built
}
