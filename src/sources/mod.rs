//! Sources: where events come from — the HTTP source (walkerOS's express source,
//! wire-compatible) and the Redis Streams consumer.

pub mod cors;
pub mod http;
pub mod query;
pub mod redis_stream;

use crate::config::ConfigErrors;
use crate::config::flow::{Step, find_kind};

/// One source type: its `type` name, walkerOS's package for it, and how its entry is read.
pub struct Kind {
    pub name: &'static str,
    pub package: Option<&'static str>,
    build: fn(&Step, &str, &mut ConfigErrors) -> Option<SourceConfig>,
}

/// Every source weir ships.
pub const REGISTRY: [Kind; 2] = [
    Kind {
        name: "http",
        package: Some("@walkeros/server-source-express"),
        build: |step, path, errors| {
            http::HttpSourceConfig::from_step(&step.id, &step.config, path, errors).map(SourceConfig::Http)
        },
    },
    Kind {
        name: "redis_stream",
        package: None,
        build: |step, path, errors| {
            redis_stream::RedisStreamConfig::from_step(&step.id, &step.config, path, errors)
                .map(SourceConfig::RedisStream)
        },
    },
];

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

    /// Its `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Http(_) => "http",
            SourceConfig::RedisStream(_) => "redis_stream",
        }
    }

    /// The most events one dispatch from this source can carry: every destination taking
    /// it must have room for that many.
    pub fn largest_batch(&self) -> usize {
        match self {
            SourceConfig::Http(http) => http.max_batch_size,
            SourceConfig::RedisStream(stream) => stream.batch_size,
        }
    }

    /// The Redis streams it reads (a destination writing into one would loop).
    pub fn streams_read(&self) -> &[String] {
        match self {
            SourceConfig::Http(_) => &[],
            SourceConfig::RedisStream(stream) => &stream.streams,
        }
    }
}

/// Checks a flow-file source entry; `None` (errors recorded) when invalid or `disabled`.
pub fn build(step: &Step, errors: &mut ConfigErrors) -> Option<SourceConfig> {
    let config_path = crate::config::join(&step.path, "config");
    let kind = find_kind(&REGISTRY, |kind| kind.name, |kind| kind.package, step, "source", errors);
    // A disabled entry is still checked, so a mistake in it shows before it is enabled.
    let built = kind.and_then(|kind| (kind.build)(step, &config_path, errors));
    if step.config.get("disabled") == Some(&serde_json::Value::Bool(true)) {
        tracing::info!(source = %step.id, "source disabled in the flow file");
        return None;
    }
    built
}
