//! The Redis destination's settings, under `settings.redis` as walkerOS has them
//! (`streamKey`, the connection keys of [`crate::redis::connection`], `maxLen`,
//! `exactTrimming`, `serialization`), plus weir's `sign` for Caracal-compatible message
//! signing, `serialization = "optimizely"` for Optimizely Agent's notification entries, and
//! `sdkKey`, where such an entry's SDK key (and so its stream) comes from.

use serde::Deserialize;
use serde_json::Value;

use crate::config::typed;
use crate::config::{ConfigErrors, join};
use crate::redis::connection::{Connection, parse_connection, without_connection_keys};
use crate::redis::signing::{Signer, signing_key};

/// How an event is laid out in the stream entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Serialization {
    /// One field, `event`, holding the event JSON.
    #[default]
    Json,
    /// One field per event key; objects and arrays as JSON, scalars as JavaScript's String().
    Flat,
    /// Optimizely Agent's entry: `data` = `{"type","message"}`, `timestamp` = unix seconds,
    /// on `stream:optimizely-sync-<sdkKey>`.
    Optimizely,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    stream_key: Option<String>,
    max_len: Option<u64>,
    exact_trimming: Option<bool>,
    serialization: Option<Serialization>,
    sign: Option<Value>,
    sdk_key: Option<Value>,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Required except with `serialization = "optimizely"`, where the SDK key names the stream.
    pub stream_key: Option<String>,
    pub connection: Connection,
    pub max_len: Option<u64>,
    pub exact_trimming: bool,
    pub serialization: Serialization,
    pub sign: Option<Signer>,
    /// `optimizely` only: the SDK key of an event (a path or value spec; `custom.sdkKey`).
    pub sdk_key: Option<crate::mapping::ValueSpec>,
}

/// Per-rule settings: `mapping.<entity>.<action>.settings.streamKey`. As in walkerOS, only a
/// string overrides the destination's stream; anything else is ignored (with a warning).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisRuleSettings {
    stream_key: Option<Value>,
}

impl RedisRuleSettings {
    /// The rule's stream, when it names one.
    pub fn stream_key(&self) -> Option<&str> {
        self.stream_key.as_ref().and_then(Value::as_str)
    }
}

impl crate::mapping::RuleSettings for RedisRuleSettings {
    fn check(&self, path: &str, errors: &mut ConfigErrors) {
        let at = join(path, "streamKey");
        match &self.stream_key {
            None => {}
            Some(Value::String(key)) if key.is_empty() => errors.warn(
                at,
                "an empty streamKey writes to the stream named \"\" (as walkerOS does); leave it out to use the destination's",
            ),
            Some(Value::String(_)) => {}
            Some(other) => errors.warn(
                at,
                format!(
                    "{} is ignored: only a string names a stream (walkerOS ignores it too); the destination's streamKey is used",
                    crate::event::JsonKind::of(other)
                ),
            ),
        }
    }
}

impl RedisSettings {
    /// Checks `settings` (the destination's `settings` block, at `path`); `env` looks up
    /// environment variables.
    pub fn parse(
        settings: Option<&Value>,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut ConfigErrors,
    ) -> Option<RedisSettings> {
        let Some(Value::Object(outer)) = settings else {
            errors.push(
                path,
                "the redis destination needs settings.redis with at least a streamKey",
            );
            return None;
        };
        for key in outer.keys().filter(|key| *key != "redis") {
            errors.push(
                join(path, key),
                "unknown key (Redis settings live under settings.redis)",
            );
        }
        let path = join(path, "redis");
        let Some(redis) = outer.get("redis") else {
            errors.push(path, "missing: settings.redis with at least a streamKey");
            return None;
        };
        let connection = parse_connection(redis, &path, env, errors);
        let raw = typed::parse::<Raw>(&without_connection_keys(redis), &path, errors)?;
        let serialization = raw.serialization.unwrap_or_default();
        let stream_key = raw.stream_key.clone().filter(|key| !key.is_empty());
        let missing_stream = stream_key.is_none() && serialization != Serialization::Optimizely;
        if missing_stream {
            // walkerOS's message.
            errors.push(join(&path, "streamKey"), "Config settings redis.streamKey missing");
        }
        let sdk_key = match (&raw.sdk_key, serialization) {
            (Some(_), Serialization::Json | Serialization::Flat) => {
                errors.push(
                    join(&path, "sdkKey"),
                    "only serialization = \"optimizely\" takes an SDK key",
                );
                None
            }
            (given, Serialization::Optimizely) => {
                let spec = given
                    .clone()
                    .unwrap_or_else(|| Value::from(crate::redis::optimizely::SDK_KEY_PATH));
                crate::mapping::ValueSpec::parse(&spec, &join(&path, "sdkKey"), errors)
            }
            (None, _) => None,
        };
        if raw.max_len == Some(0) {
            // walkerOS reads 0 as "not set".
            errors.warn(
                join(&path, "maxLen"),
                "0 means no trimming, as in walkerOS (leave it out to say so)",
            );
        }
        let sign = raw
            .sign
            .as_ref()
            .and_then(|sign| signing_key(sign, &join(&path, "sign"), env, errors));
        if missing_stream {
            return None;
        }
        Some(RedisSettings {
            stream_key,
            connection: connection?,
            max_len: raw.max_len.filter(|n| *n > 0),
            exact_trimming: raw.exact_trimming.unwrap_or(false),
            serialization,
            sign,
            sdk_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ConnectionAddr;
    use serde_json::json;

    fn parse(settings: Value, env: &[(&str, &str)]) -> (Option<RedisSettings>, String) {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut errors = ConfigErrors::default();
        let parsed = RedisSettings::parse(Some(&settings), "destinations.r.config.settings", &lookup, &mut errors);
        (parsed, errors.to_string())
    }

    #[test]
    fn walkeros_settings_with_url_and_env_password() {
        let (parsed, errors) = parse(
            json!({"redis": {"streamKey": "walkeros:events", "url": "redis://127.0.0.1:6390/2", "maxLen": 1000}}),
            &[("REDIS_PASSWORD", "from-env")],
        );
        assert_eq!(errors, "");
        let parsed = parsed.unwrap();
        assert_eq!(parsed.stream_key.as_deref(), Some("walkeros:events"));
        assert_eq!(parsed.max_len, Some(1000));
        assert!(!parsed.exact_trimming);
        assert_eq!(parsed.serialization, Serialization::Json);
        let node = &parsed.connection.nodes[0];
        assert_eq!(node.redis_settings().db(), 2);
        assert_eq!(node.redis_settings().password(), Some("from-env"));
        assert!(!parsed.connection.cluster);
        assert!(parsed.connection.tls.is_none());
    }

    #[test]
    fn options_a_url_list_and_tls() {
        let (parsed, errors) = parse(
            json!({"redis": {"streamKey": "s", "options": {"host": "10.0.0.1", "port": 6380, "username": "weir", "password": "p", "db": 1, "tls": true}}}),
            &[],
        );
        assert_eq!(errors, "");
        let parsed = parsed.unwrap();
        let node = &parsed.connection.nodes[0];
        assert!(matches!(node.addr(), ConnectionAddr::TcpTls { .. }));
        assert_eq!(node.redis_settings().username(), Some("weir"));
        assert_eq!(parsed.connection.describe, "rediss://10.0.0.1:6380");

        let (parsed, errors) = parse(
            json!({"redis": {"streamKey": "s", "url": ["redis://:pw@127.0.0.1:7001", "redis://127.0.0.1:7002"]}}),
            &[],
        );
        assert_eq!(errors, "");
        let parsed = parsed.unwrap();
        assert!(parsed.connection.cluster);
        assert_eq!(
            parsed.connection.describe,
            "redis://:***@127.0.0.1:7001, redis://127.0.0.1:7002"
        );
    }

    #[test]
    fn problems_are_named_without_leaking_secrets() {
        let (_, errors) = parse(
            json!({"redis": {"url": "http://user:hunter2@x", "maxlen": 5, "sign": {"key": "00ff"}}, "extra": 1}),
            &[],
        );
        for expected in [
            "destinations.r.config.settings.extra: unknown key",
            "destinations.r.config.settings.redis.streamKey: Config settings redis.streamKey missing",
            "destinations.r.config.settings.redis.maxlen: unknown key",
            "destinations.r.config.settings.redis.url: \"http://user:***@x\" is not a valid",
            "destinations.r.config.settings.redis.sign: the signing key is 2 bytes; at least 32 are required",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
        }
        assert!(!errors.contains("hunter2"));
    }
}
