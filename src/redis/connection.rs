//! Where and how to reach Redis, as every part of weir that talks to Redis configures it: the
//! keys walkerOS's Redis destination takes (`url`, or ioredis-style `options`), plus weir's
//! list of URLs (or `cluster = true`) for Redis Cluster, `passwordFile` and TLS files. The
//! password is taken, first found, from the URL, `options.password`, `passwordFile`, then the
//! environment (`REDIS_PASSWORD`, `REDIS_PASSWORD_FILE`); it never appears in logs or errors.
//! Optimizely Agent's `synchronization.pubsub.redis` keys (`host`, `database`, `auth_token` /
//! `redis_secret` / `password` in Agent's order, `connection_timeout` as a Go duration) are
//! accepted too, so an Agent operator's block pastes unchanged.
//!
//! Three ways to connect, for three uses: [`Connection::connect_first`] (a plain multiplexed
//! connection: the CLI, start-up checks), [`Connection::connect_managed`] (reconnects by
//! itself: acknowledgements, publishing) and [`Connection::connect_for_blocking_reads`] (a
//! connection of its own whose reply timeout outlasts `BLOCK`).

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::typed::{self, Secret};
use crate::config::{ConfigErrors, join};

/// weir's own connection keys of a Redis settings block.
const WEIR_KEYS: [&str; 4] = ["url", "options", "cluster", "passwordFile"];

/// Whether `key` of a Redis settings block is a connection key (weir's or Optimizely
/// Agent's); the other keys belong to its user.
pub fn is_connection_key(key: &str) -> bool {
    WEIR_KEYS.contains(&key) || AGENT_KEYS.contains(&key)
}

/// Optimizely Agent's connection keys (`synchronization.pubsub.redis`).
const AGENT_KEYS: [&str; 6] = [
    "host",
    "database",
    "auth_token",
    "redis_secret",
    "password",
    "connection_timeout",
];

/// A Go duration string (`"100ms"`, `"5s"`, `"1m30s"`), as Agent's duration keys take, at
/// `path`; anything else is an error naming it (Agent silently uses its default instead).
pub fn go_duration(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Duration> {
    match value.as_str().map(humantime::parse_duration) {
        Some(Ok(duration)) => Some(duration),
        _ => {
            errors.push(
                path,
                format!("{value} is not a Go duration string such as \"100ms\", \"5s\" or \"1m30s\""),
            );
            None
        }
    }
}

/// Agent's keys as the ioredis-style `options` weir reads: `host` ("host:port"), `database`
/// (a whole number, as int or float), the first non-empty of `auth_token`, `redis_secret`,
/// `password`, and `connection_timeout` (connect and command timeout). `None` when the block
/// has none of them.
fn agent_options(block: &Map<String, Value>, path: &str, errors: &mut ConfigErrors) -> Option<Value> {
    if !AGENT_KEYS.iter().any(|key| block.contains_key(*key)) {
        return None;
    }
    if block.contains_key("url") || block.contains_key("options") {
        errors.push(
            path,
            "set either Optimizely Agent's keys (host, database, password…) or url/options, not both",
        );
        return None;
    }
    let mut options = Map::new();
    if let Some(host) = block.get("host") {
        let at = join(path, "host");
        match host.as_str() {
            Some(address) => {
                let (name, port) = match address.rsplit_once(':') {
                    Some((name, port)) => (name, port.parse::<u16>().ok()),
                    None => (address, Some(6379)),
                };
                match port {
                    Some(port) if !name.is_empty() => {
                        options.insert("host".into(), Value::from(name));
                        options.insert("port".into(), Value::from(port));
                    }
                    _ => errors.push(at, format!("\"{address}\" is not host:port")),
                }
            }
            None => errors.push(at, "must be \"host:port\""),
        }
    }
    if let Some(database) = block.get("database") {
        match database.as_f64().filter(|db| db.fract() == 0.0 && *db >= 0.0) {
            Some(db) => {
                options.insert("db".into(), Value::from(db as i64));
            }
            None => errors.push(join(path, "database"), "must be a database number (0, 1, …)"),
        }
    }
    let password = ["auth_token", "redis_secret", "password"]
        .iter()
        .find_map(|key| block.get(*key).and_then(Value::as_str).filter(|p| !p.is_empty()));
    if let Some(password) = password {
        options.insert("password".into(), Value::from(password));
    }
    if let Some(timeout) = block.get("connection_timeout")
        && let Some(timeout) = go_duration(timeout, &join(path, "connection_timeout"), errors)
    {
        let ms = Value::from(timeout.as_millis() as u64);
        options.insert("connectTimeout".into(), ms.clone());
        options.insert("commandTimeout".into(), ms);
    }
    Some(Value::Object(options))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    url: Option<Value>,
    options: Option<Value>,
    cluster: Option<bool>,
    password_file: Option<String>,
}

/// ioredis connection options weir understands.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    db: Option<i64>,
    tls: Option<Value>,
    /// ms
    connect_timeout: Option<u64>,
    /// ms
    command_timeout: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TlsOptions {
    /// PEM text of the CA certificate(s) to trust (instead of the system's).
    ca: Option<String>,
    ca_file: Option<String>,
    /// Client certificate and key (PEM) for mutual TLS.
    cert: Option<String>,
    cert_file: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
    /// Skip certificate verification (testing only).
    #[serde(default)]
    insecure: bool,
}

/// TLS material, PEM.
#[derive(Clone, Default)]
pub struct Tls {
    pub ca: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    pub insecure: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    /// One node, or the start-up nodes of a cluster.
    pub nodes: Vec<ConnectionInfo>,
    pub cluster: bool,
    /// `Some` when the connection uses TLS.
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
    /// For log lines: the nodes without credentials.
    pub describe: String,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a command of the stream source, the CLI, the start-up checks and the SSE replay
/// waits for its reply unless `options.commandTimeout` says otherwise. redis-rs's own
/// default, 500 ms, is shorter than a busy server or a large XAUTOCLAIM can take, and a
/// reply given up on may still have changed the server (claimed entries, say). (The Redis
/// destination's XADDs are bounded by the delivery `timeout` instead.)
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A settings block without its connection keys: what its user parses as its own. Anything
/// but an object is returned as it is, for its user's parser to say what is wrong with it.
pub fn without_connection_keys(settings: &Value) -> Value {
    let Some(settings) = settings.as_object() else {
        return settings.clone();
    };
    let rest: Map<String, Value> = settings
        .iter()
        .filter(|(key, _)| !is_connection_key(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Value::Object(rest)
}

/// Reports every key of `block` (at `path`) that is neither a connection key nor one of
/// `own`: for users whose own keys are too few to be worth a typed struct.
pub fn report_unknown_keys(block: &Value, own: &[&str], path: &str, errors: &mut ConfigErrors) {
    for key in block.as_object().into_iter().flatten().map(|(key, _)| key) {
        if !is_connection_key(key) && !own.contains(&key.as_str()) {
            errors.push(join(path, key), "unknown key");
        }
    }
}

/// Parses the connection keys of a Redis settings block at `path` ([`is_connection_key`]; the
/// others are left to the block's user); `env` looks up environment variables.
pub fn parse_connection(
    value: &Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<Connection> {
    let mut keys: Map<String, Value> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| is_connection_key(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(options) = agent_options(&keys, path, errors) {
        keys.retain(|key, _| !AGENT_KEYS.contains(&key.as_str()));
        keys.insert("options".into(), options);
    }
    let raw = typed::parse::<Raw>(&Value::Object(keys), path, errors)?;
    connection(&raw, path, env, errors)
}

impl Connection {
    /// TLS certificates to give redis-rs, when the settings name any.
    pub fn certificates(&self) -> Option<redis::TlsCertificates> {
        let tls = self.tls.as_ref()?;
        if tls.ca.is_none() && tls.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: tls.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: tls.ca.clone(),
        })
    }

    /// A client for one node (the first of a cluster's, unless `node` says otherwise).
    pub fn client(&self, node: &ConnectionInfo) -> redis::RedisResult<redis::Client> {
        if self.tls.is_some() {
            install_crypto_provider();
        }
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(node.clone(), certificates),
            None => redis::Client::open(node.clone()),
        }
    }

    /// One multiplexed connection to the first node, within the connect timeout; a reply
    /// may take `commandTimeout` (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub async fn connect_first(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.connect_first_waiting(self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT))
            .await
    }

    /// A connection to the first node that reconnects by itself after a failure (the
    /// command that met the failure returns its error), within the connect timeout; a reply
    /// may take `commandTimeout` (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub async fn connect_managed(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let client = self.client(&self.nodes[0])?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)))
            .set_number_of_retries(1);
        client.get_connection_manager_with_config(config).await
    }

    /// A connection of its own for blocking reads (`XREADGROUP … BLOCK block`), whose reply
    /// may take `block` plus the command timeout. It must not carry anything else, and a
    /// read that timed out must not be followed by another on it: Redis still answers a read
    /// the client gave up on, and hands it the entries that arrive meanwhile — entries then
    /// read by nobody (they stay pending until a claim), while every later command on the
    /// connection queues behind the blocked one and times out in turn. The caller drops the
    /// connection after any error.
    pub async fn connect_for_blocking_reads(
        &self,
        block: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.connect_first_waiting(block + self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT))
            .await
    }

    async fn connect_first_waiting(
        &self,
        reply_timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = self.client(&self.nodes[0])?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(reply_timeout));
        client.get_multiplexed_async_connection_with_config(&config).await
    }
}

/// rustls needs a process-wide crypto provider before the first TLS connection.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn connection(
    raw: &Raw,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<Connection> {
    let options = match &raw.options {
        Some(value) => Some(typed::parse::<Options>(value, &join(path, "options"), errors)?),
        None => None,
    };
    let mut tls = match options.as_ref().and_then(|o| o.tls.as_ref()) {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(Tls::default()),
        Some(value @ Value::Object(_)) => tls_material(value, &join(path, "options.tls"), errors),
        Some(_) => {
            errors.push(
                join(path, "options.tls"),
                "must be true, false or {ca, caFile, cert, certFile, key, keyFile}",
            );
            None
        }
    };
    let urls: Vec<String> = match &raw.url {
        None => Vec::new(),
        Some(Value::String(url)) => vec![url.clone()],
        Some(Value::Array(list)) if !list.is_empty() && list.iter().all(Value::is_string) => {
            list.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect()
        }
        Some(_) => {
            errors.push(
                join(path, "url"),
                "must be a redis:// or rediss:// URL, or a list of them (a cluster)",
            );
            return None;
        }
    };
    if !urls.is_empty() && options.as_ref().is_some_and(|o| o.host.is_some() || o.port.is_some()) {
        errors.push(join(path, "options"), "set either url or options.host/port, not both");
    }
    let cluster = raw.cluster.unwrap_or(urls.len() > 1);

    let mut nodes = Vec::new();
    let mut shown = Vec::new();
    if urls.is_empty() {
        let options_ref = options.as_ref();
        let host = options_ref
            .and_then(|o| o.host.clone())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = options_ref.and_then(|o| o.port).unwrap_or(6379);
        shown.push(format!(
            "{}://{host}:{port}",
            if tls.is_some() { "rediss" } else { "redis" }
        ));
        let addr = match &tls {
            Some(tls) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: tls.insecure,
                tls_params: None,
            },
            None => ConnectionAddr::Tcp(host, port),
        };
        match addr.into_connection_info() {
            Ok(info) => nodes.push(info),
            Err(error) => errors.push(join(path, "options"), error.to_string()),
        }
    } else {
        for (index, url) in urls.iter().enumerate() {
            let at = if urls.len() == 1 {
                join(path, "url")
            } else {
                join(path, &format!("url.{index}"))
            };
            match url.as_str().into_connection_info() {
                Ok(info) => {
                    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) && tls.is_none() {
                        tls = Some(Tls::default());
                    }
                    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr()
                        && let Some(tls) = tls.as_mut()
                    {
                        tls.insecure = true;
                    }
                    shown.push(redact(url));
                    nodes.push(info);
                }
                // The error may quote the URL; do not echo a password.
                Err(_) => errors.push(
                    at,
                    format!("\"{}\" is not a valid redis:// or rediss:// URL", redact(url)),
                ),
            }
        }
    }

    // Credentials and database from options, then the password's other sources.
    let password = Secret::resolve(
        options.as_ref().and_then(|o| o.password.clone()),
        raw.password_file.as_deref(),
        path,
        "passwordFile",
        errors,
    )
    .or_else(|| Secret::from_environment(env, "REDIS_PASSWORD", path, errors));
    let nodes = nodes
        .into_iter()
        .map(|info| {
            let mut redis: RedisConnectionInfo = info.redis_settings().clone();
            if redis.password().is_none()
                && let Some(password) = &password
            {
                redis = redis.set_password(password.expose());
            }
            if let Some(options) = &options {
                if let Some(username) = &options.username {
                    redis = redis.set_username(username);
                }
                if let Some(db) = options.db {
                    redis = redis.set_db(db);
                }
            }
            info.set_redis_settings(redis)
        })
        .collect::<Vec<_>>();
    if cluster && nodes.iter().any(|info| info.redis_settings().db() != 0) {
        errors.push(path, "Redis Cluster has only database 0");
    }
    let options_ref = options.as_ref();
    Some(Connection {
        nodes,
        cluster,
        tls,
        connect_timeout: options_ref
            .and_then(|o| o.connect_timeout)
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
        command_timeout: options_ref.and_then(|o| o.command_timeout).map(Duration::from_millis),
        describe: shown.join(", "),
    })
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn read_pem(
    inline: Option<&String>,
    file: Option<&String>,
    path: &str,
    key: &str,
    errors: &mut ConfigErrors,
) -> Option<Vec<u8>> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            errors.push(join(path, key), format!("set {key} or {key}File, not both"));
            None
        }
        (Some(text), None) => Some(text.clone().into_bytes()),
        (None, Some(file)) => match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                errors.push(
                    join(path, &format!("{key}File")),
                    format!("cannot read {file}: {error}"),
                );
                None
            }
        },
        (None, None) => None,
    }
}

fn tls_material(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Tls> {
    let options = typed::parse::<TlsOptions>(value, path, errors)?;
    let ca = read_pem(options.ca.as_ref(), options.ca_file.as_ref(), path, "ca", errors);
    let cert = read_pem(options.cert.as_ref(), options.cert_file.as_ref(), path, "cert", errors);
    let key = read_pem(options.key.as_ref(), options.key_file.as_ref(), path, "key", errors);
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            errors.push(path, "a client certificate needs both cert and key");
            None
        }
    };
    Some(Tls {
        ca,
        client,
        insecure: options.insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_keys_are_split_from_their_users_keys() {
        let block = json!({"url": "redis://127.0.0.1:6390", "passwordFile": "/p", "stream": "s", "channel": "c"});
        assert_eq!(without_connection_keys(&block), json!({"stream": "s", "channel": "c"}));
        // Not an object: left for the user's parser to name what is wrong.
        assert_eq!(without_connection_keys(&json!("redis://x")), json!("redis://x"));
        let mut errors = ConfigErrors::default();
        report_unknown_keys(&block, &["stream"], "s.replay", &mut errors);
        assert_eq!(errors.to_string(), "s.replay.channel: unknown key");
        let mut errors = ConfigErrors::default();
        let block = json!({"url": "redis://127.0.0.1:6390", "stream": "s"});
        let connection = parse_connection(&block, "s.replay", &|_| None, &mut errors);
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(connection.unwrap().describe, "redis://127.0.0.1:6390");
    }

    /// Agent's `synchronization.pubsub.redis` block, pasted as it is.
    #[test]
    fn optimizely_agent_s_keys_connect_as_agent_does() {
        let parse = |block: Value, env: &dyn Fn(&str) -> Option<String>| {
            let mut errors = ConfigErrors::default();
            let connection = parse_connection(&block, "s", env, &mut errors);
            (connection, errors.to_string())
        };
        let (connection, errors) = parse(
            json!({"host": "10.0.0.5:6380", "database": 2.0, "auth_token": "", "redis_secret": "secret",
                   "password": "later", "connection_timeout": "1500ms", "stream": "x"}),
            &|_| None,
        );
        assert_eq!(errors, "");
        let connection = connection.unwrap();
        let node = &connection.nodes[0];
        assert_eq!(connection.describe, "redis://10.0.0.5:6380");
        assert_eq!(node.redis_settings().db(), 2);
        // Agent's order: the first non-empty of auth_token, redis_secret, password.
        assert_eq!(node.redis_settings().password(), Some("secret"));
        assert_eq!(connection.connect_timeout, Duration::from_millis(1500));
        // No password key: REDIS_PASSWORD, as Agent falls back to it.
        let (connection, _) = parse(json!({"host": "localhost:6379", "database": 0}), &|name| {
            (name == "REDIS_PASSWORD").then(|| "from-env".to_owned())
        });
        assert_eq!(
            connection.unwrap().nodes[0].redis_settings().password(),
            Some("from-env")
        );
        let (_, errors) = parse(
            json!({"host": "nohost:", "database": 1.5, "connection_timeout": 10, "url": "redis://x"}),
            &|_| None,
        );
        assert!(errors.contains("either Optimizely Agent's keys"), "{errors}");
        let (_, errors) = parse(
            json!({"host": "h:notaport", "database": 1.5, "connection_timeout": 10}),
            &|_| None,
        );
        for expected in [
            "s.host: \"h:notaport\" is not host:port",
            "s.database: must be a database number",
            "s.connection_timeout: 10 is not a Go duration string",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in {errors}");
        }
    }
}
