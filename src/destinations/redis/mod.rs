//! `redis`: events into Redis Streams with XADD, as walkerOS's Redis destination writes them
//! (walkerOS `packages/server/destinations/redis/src/push.ts`), but delivered for real: pipelined, acknowledged by Redis's reply,
//! retried, dead-lettered.
//!
//! Wire form: `XADD <streamKey> [MAXLEN [~] n] * event <json>` (json) or the event's fields
//! in key order (flat, values as JavaScript's `String()`), plus `_sig` when signing. Each
//! event's command is built once on the request path; a batch goes to Redis as one pipeline
//! on a multiplexed connection, and several batches are in flight at once. Redis Cluster
//! needs each pipeline within one hash slot, so a batch is split by stream key there.
//!
//! Error classes: connection loss, timeouts, `LOADING`, `READONLY`, `CLUSTERDOWN`,
//! `TRYAGAIN`, `MASTERDOWN`, `BUSY` are retried (the connection reconnects by itself);
//! everything else (`WRONGTYPE`, `NOAUTH`, `WRONGPASS`, `NOPERM`, `OOM`, syntax errors) is
//! fatal for the event and dead-letters it.

pub mod settings;

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError};
use serde_json::Value;

pub use settings::{RedisRuleSettings, RedisSettings, Serialization};

use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::event::FieldRef;
use crate::redis::optimizely;

/// One XADD, built once.
pub struct Xadd {
    pub key: String,
    pub command: Cmd,
    size: usize,
}

/// A live connection: one multiplexed connection that reconnects by itself, or a cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisDestination {
    settings: RedisSettings,
    connection: tokio::sync::OnceCell<Connection>,
}

impl RedisDestination {
    pub fn new(settings: RedisSettings) -> RedisDestination {
        RedisDestination {
            settings,
            connection: tokio::sync::OnceCell::new(),
        }
    }

    /// `serialization = "optimizely"`: the event's SDK key names its stream
    /// (`stream:optimizely-sync-<sdkKey>`); without one, the destination's `streamKey`.
    fn optimizely_stream(&self, input: &RenderInput<'_, RedisRuleSettings>) -> Result<String, RenderError> {
        let sdk_key = self
            .settings
            .sdk_key
            .as_ref()
            .and_then(|spec| spec.value(input.event.tree(), &input.value_context()));
        match (sdk_key, &self.settings.stream_key) {
            (Some(Value::String(key)), _) if !key.is_empty() => Ok(optimizely::stream_for(&key)),
            (_, Some(stream)) => Ok(stream.clone()),
            _ => Err(RenderError::Missing {
                field: "the SDK key (settings.redis.sdkKey; custom.sdkKey by default)",
            }),
        }
    }

    async fn open(&self) -> Result<Connection, RedisError> {
        let connection = &self.settings.connection;
        if connection.tls.is_some() {
            crate::redis::connection::install_crypto_provider();
        }
        if connection.cluster {
            let mut builder = ClusterClientBuilder::new(connection.nodes.clone())
                .connection_timeout(connection.connect_timeout)
                .response_timeout(
                    connection
                        .command_timeout
                        .unwrap_or(crate::delivery::policy::DEFAULT_TIMEOUT),
                );
            if let Some(tls) = &connection.tls {
                builder = builder.tls(if tls.insecure {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                });
            }
            if let Some(certificates) = connection.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            return Ok(Connection::Cluster(client.get_async_connection().await?));
        }
        let client = connection.client(&connection.nodes[0])?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connection.connect_timeout))
            // redis-rs would time replies out after 500 ms; under load a big pipeline takes
            // longer, and a timed-out XADD that went through is a duplicate on retry. The
            // delivery machinery's per-attempt `timeout` bounds the wait instead.
            .set_response_timeout(connection.command_timeout)
            .set_number_of_retries(1);
        Ok(Connection::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }

    /// Start-up checks, each saying why it matters. A forbidden CONFIG (managed Redis,
    /// ACLs) is skipped, never fatal.
    async fn check_server(&self) -> Result<(), RedisError> {
        // One node is enough: cluster nodes are configured alike.
        let mut connection = self.settings.connection.connect_first().await?;
        let (version, (major, minor)) = crate::redis::info::server_version(&mut connection).await?;
        if (major, minor) < (5, 0) {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "Redis Streams need Redis 5.0 or later",
                format!("the server is {version}"),
            )));
        }
        if (major, minor) < (6, 2) {
            tracing::warn!(version = %version, "Redis is older than 6.2: the stream consumer cannot claim stuck entries (XAUTOCLAIM)");
        }
        let config = |name: &'static str| {
            let mut connection = connection.clone();
            async move {
                let reply: Result<Vec<String>, RedisError> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut connection)
                    .await;
                match reply {
                    Ok(pair) => pair.get(1).cloned(),
                    Err(error) => {
                        tracing::debug!(setting = name, error = %error, "CONFIG GET not allowed; check skipped");
                        None
                    }
                }
            }
        };
        if let Some(policy) = config("maxmemory-policy").await
            && !policy.trim().eq_ignore_ascii_case("noeviction")
        {
            tracing::warn!(
                maxmemory_policy = %policy,
                "Redis may evict keys when it runs out of memory, stream entries included, and events are lost silently; set maxmemory-policy noeviction"
            );
        }
        if let Some(appendonly) = config("appendonly").await
            && appendonly.trim() == "no"
        {
            tracing::warn!(
                "Redis appendonly is no: a restart loses every entry written since the last RDB snapshot; set appendonly yes"
            );
        }
        tracing::info!(version = %version, nodes = %self.settings.connection.describe, "Redis checked");
        Ok(())
    }

    fn connected(&self) -> Result<Connection, RedisError> {
        self.connection
            .get()
            .cloned()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::Io, "not connected to Redis yet")))
    }
}

/// An event as one XADD argument, written as JSON directly into the command's buffer.
struct EventJson<'a>(&'a crate::event::Event);

impl redis::ToRedisArgs for EventJson<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        self.0.write_json(&mut out.writer_for_next_arg());
    }
}

impl redis::ToSingleRedisArg for EventJson<'_> {}

/// walkerOS's flat value: JSON for objects and arrays, JavaScript's `String()` for the rest.
fn flat_value(field: FieldRef<'_>) -> Vec<u8> {
    match field {
        // Canonical text is already what String() gives for numbers, booleans and null, and
        // the JSON for objects and arrays; a string needs its quotes and escapes removed.
        FieldRef::Text(text) if text.starts_with('"') => serde_json::from_str::<String>(text)
            .map(String::into_bytes)
            .unwrap_or_else(|_| text.as_bytes().to_vec()),
        FieldRef::Text(text) => text.as_bytes().to_vec(),
        FieldRef::Value(value) => crate::json::js_string(value),
    }
}

async fn run_pipeline<'a>(
    mut connection: Connection,
    commands: impl Iterator<Item = &'a Xadd>,
) -> Result<Vec<Result<(), RedisError>>, RedisError> {
    let mut pipeline = redis::Pipeline::new();
    pipeline.ignore_errors();
    for xadd in commands {
        pipeline.add_command(xadd.command.clone());
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = match &mut connection {
        Connection::Single(manager) => pipeline.query_async(manager).await?,
        Connection::Cluster(cluster) => pipeline.query_async(cluster).await?,
    };
    Ok(replies.into_iter().map(|reply| reply.map(|_| ())).collect())
}

impl Destination for RedisDestination {
    type RuleSettings = RedisRuleSettings;
    type Wire = Xadd;
    type Error = RedisError;
    const KIND: &'static str = "redis";
    const PACKAGE: Option<&'static str> = Some("@walkeros/server-destination-redis");

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let settings = RedisSettings::parse(settings, path, &|name| std::env::var(name).ok(), errors)?;
        Some(RedisDestination::new(settings))
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 500,
            batch_bytes: None,
            // Pipelines in flight on the one multiplexed connection.
            concurrency: 8,
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), RedisError> {
        self.check_server().await?;
        let connection = self.open().await?;
        let _ = self.connection.set(connection);
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, RedisRuleSettings>) -> Result<Rendered<Xadd>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let key = match input.rule_settings.and_then(|rule| rule.stream_key()) {
            Some(key) => key.to_owned(),
            None if self.settings.serialization == Serialization::Optimizely => self.optimizely_stream(input)?,
            None => self
                .settings
                .stream_key
                .clone()
                .expect("settings: json and flat have a streamKey"),
        };
        // A non-empty mapped `data` object replaces the event (weir; walkerOS ignores it).
        let data = match input.data {
            Some(Value::Object(data)) if !data.is_empty() => Some(data),
            _ => None,
        };
        // Sized for the whole command up front: growing the buffer while writing the event
        // copied it several times over.
        let mut command = Cmd::with_capacity(10, key.len() + input.event.approximate_size() + 64);
        command.arg("XADD").arg(&key);
        if let Some(max_len) = self.settings.max_len {
            command.arg("MAXLEN");
            if !self.settings.exact_trimming {
                command.arg("~");
            }
            command.arg(max_len);
        }
        command.arg("*");
        // The hot case — json, no data mapping, no signature — writes the event straight into
        // the command, with no intermediate copy.
        if self.settings.serialization == Serialization::Json && data.is_none() && self.settings.sign.is_none() {
            command.arg("event").arg(EventJson(input.event));
            let size = key.len() + input.event.approximate_size();
            return Ok(Rendered::Send(Xadd { key, command, size }));
        }
        let fields: Vec<(&str, Vec<u8>)> = match (self.settings.serialization, data) {
            (Serialization::Json, Some(data)) => vec![("event", crate::json::to_vec(data))],
            (Serialization::Json, None) => vec![("event", input.event.to_json())],
            (Serialization::Flat, Some(data)) => data
                .iter()
                .map(|(k, v)| (k.as_str(), crate::json::js_string(v)))
                .collect(),
            (Serialization::Flat, None) => input
                .event
                .flat_fields()
                .map(|(name, field)| (name, field.map_or_else(|| b"undefined".to_vec(), flat_value)))
                .collect(),
            (Serialization::Optimizely, data) => {
                let name = input.event.name();
                let kind = optimizely::notification_type(name).ok_or_else(|| RenderError::OutOfRange {
                    field: "name",
                    value: format!("\"{name}\""),
                    allowed: "Optimizely's notification names (`notification decision`, `notification track`, `notification project_config_update`)",
                })?;
                let message = match data {
                    Some(data) => crate::json::to_vec(data),
                    None => input
                        .event
                        .member_json("data")
                        .map_or_else(|| b"{}".to_vec(), |data| data.as_bytes().to_vec()),
                };
                // Agent writes the time of publishing in seconds; weir the event's own time.
                let seconds = input
                    .event
                    .tree()
                    .get("timestamp")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
                    / 1000.0;
                vec![
                    ("data", optimizely::payload(kind, &message)),
                    ("timestamp", (seconds as u64).to_string().into_bytes()),
                ]
            }
        };
        let mut size = key.len();
        for (name, value) in &fields {
            size += name.len() + value.len();
            command.arg(*name).arg(value.as_slice());
        }
        if let Some(signing) = &self.settings.sign {
            let borrowed: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let signature = signing.sign(&key, &borrowed).map_err(|_| RenderError::Missing {
                field: "the entry's `data` field (what audit signing signs)",
            })?;
            command.arg(signing.field()).arg(signature);
        }
        Ok(Rendered::Send(Xadd { key, command, size }))
    }

    fn explain(&self, wire: &Xadd) -> Value {
        let args: Vec<Value> = wire
            .command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => Value::from(String::from_utf8_lossy(bytes).into_owned()),
                _ => Value::from("0"),
            })
            .collect();
        serde_json::json!({ "command": args })
    }

    fn wire_size(&self, wire: &Xadd) -> usize {
        wire.size
    }

    fn stream_targets(&self) -> Vec<String> {
        let mut streams: Vec<String> = self.settings.stream_key.iter().cloned().collect();
        if self.settings.serialization == Serialization::Optimizely {
            // One stream per SDK key.
            streams.push(optimizely::stream_for("*"));
        }
        streams
    }

    async fn send(&self, batch: &[&Xadd]) -> Result<Vec<Result<(), RedisError>>, RedisError> {
        let connection = self.connected()?;
        if !matches!(connection, Connection::Cluster(_)) {
            return run_pipeline(connection, batch.iter().copied()).await;
        }
        // Cluster: one pipeline per stream key (a pipeline must stay in one slot), in parallel.
        let mut keys: Vec<&str> = batch.iter().map(|x| x.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let groups = keys.iter().map(|key| {
            let connection = connection.clone();
            async move {
                let members = batch.iter().copied().filter(|x| x.key == *key);
                run_pipeline(connection, members).await
            }
        });
        let mut per_key = Vec::with_capacity(keys.len());
        for result in join_all(groups).await {
            per_key.push(result.map(Vec::into_iter));
        }
        let mut results = Vec::with_capacity(batch.len());
        for xadd in batch {
            let group = keys.binary_search(&xadd.key.as_str()).expect("every key has a group");
            results.push(match &mut per_key[group] {
                Ok(replies) => replies
                    .next()
                    .unwrap_or_else(|| Err(RedisError::from((redis::ErrorKind::Io, "missing reply")))),
                Err(error) => Err(error.clone()),
            });
        }
        Ok(results)
    }

    fn classify(&self, error: &RedisError) -> ErrorClass {
        if crate::redis::retryable(error) {
            ErrorClass::Retryable
        } else {
            ErrorClass::Fatal
        }
    }

    async fn shutdown(&self) -> Result<(), RedisError> {
        // The worker has waited for every in-flight XADD; say goodbye politely.
        if let Some(Connection::Single(manager)) = self.connection.get() {
            let mut manager = manager.clone();
            let _: Result<(), RedisError> = redis::cmd("QUIT").query_async(&mut manager).await;
        }
        Ok(())
    }
}
