//! The HTTP source's configuration: walkerOS's express source settings (`port`, `paths`,
//! `maxBatchSize`, `cors`, `async`) plus weir's (`listen`, `ack`, `ackTimeout`,
//! `maxBodyBytes`, `bearerToken`, `trustProxy`, and the connection limits of
//! [`ConnectionLimits`]), and walkerOS's source-level `ingest`.
//!
//! Everything a misconfiguration would only reveal at start-up (or never) is checked here,
//! so `weir validate` catches it: paths that clash or that the router cannot take, listen
//! addresses without a port, typos inside nested blocks (parsed by hand rather than with
//! serde's untagged enums, which cannot name an unknown key).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::request::TrustProxy;
use crate::config::typed::{self, BearerToken};
use crate::config::{ConfigErrors, join};
use crate::mapping::ValueSpec;
use crate::sources::cors::{Cors, CorsOptions};

/// Default listen address when the flow sets neither `listen` nor `port`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// walkerOS's body limit (express `json({limit: '1mb'})`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// walkerOS's `maxBatchSize` default.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 100;
/// How long a request waits for its events' delivery before it is answered 202.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What one listener lets a client hold, so that slow, idle or oversized clients cannot
/// exhaust the process (`settings.headerTimeout` and its neighbours). Listeners without an
/// HTTP source (an SSE hub's or the admin listener of its own) use the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a connection's first byte of a request (or from its accept) to the end of that
    /// request's headers (slowloris). Node's is 60 s; 10 s is ample for a head.
    pub header_timeout: Duration,
    /// To read a request body whole once its headers are in (answered 408 after it).
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request. Longer than the 60 s idle
    /// timeout of the common load balancers, so that they, not weir, close idle
    /// connections (a backend closing first makes them answer 502 now and then).
    pub keep_alive_timeout: Duration,
    /// Request line and headers together (431 beyond), as Node's `maxHeaderSize`.
    pub max_header_bytes: usize,
    /// Header lines (431 beyond), hyper's default.
    pub max_headers: usize,
    /// Connections open at once; beyond it a new one is answered 503 and closed. Lowered
    /// at start to what the process's file limit allows.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 10_000,
        }
    }
}

/// The smallest `maxHeaderBytes` (hyper reads in buffers of at least this many bytes).
pub const MIN_HEADER_BYTES: usize = 8192;

/// When a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Once the events are validated and queued in memory: a crash loses what is queued.
    Received,
    /// Once the events are on disk in the journal (fsynced): the default with a journal.
    Journaled,
    /// Once every destination delivered or dead-lettered them (after journaling them, with a
    /// journal).
    Delivered,
}

/// Where the source's ack modes came from, so that a flow without a journal can resolve
/// them: an explicit `ack`, walkerOS's `async`, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckOrigin {
    Explicit,
    Async,
    Default,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    /// walkerOS: the port to listen on (all interfaces).
    port: Option<u16>,
    /// weir: the full listen address, e.g. `127.0.0.1:8080`. Wins over `port`.
    listen: Option<String>,
    /// walkerOS's deprecated single path.
    path: Option<String>,
    /// Strings or `{path, methods}`; checked by hand.
    paths: Option<Value>,
    max_batch_size: Option<usize>,
    /// `true`, `false` or options; checked by hand.
    cors: Option<Value>,
    /// weir: request body limit in bytes (after decompression).
    max_body_bytes: Option<usize>,
    /// weir: require `Authorization: Bearer <token>` on the collect paths.
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    /// weir: which hops are proxies whose `X-Forwarded-*` headers the ingest's `ip`,
    /// `protocol` and `hostname` believe (Express's `trust proxy`); checked by hand.
    trust_proxy: Option<Value>,
    /// weir: HTTPS (`{certFile, keyFile}`); checked by hand.
    tls: Option<Value>,
    /// weir: also serve `/metrics` here (it is on the admin listener; a public ingest port
    /// shows no internals unless asked).
    metrics: Option<bool>,
    /// weir: connection limits ([`ConnectionLimits`]); milliseconds, bytes, counts.
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    keep_alive_timeout: Option<u64>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_connections: Option<usize>,
    /// Settings of older express sources that walkerOS's own example flows still carry
    /// (4.4 ignores them): weir always answers `/health` and `/ready`.
    #[serde(rename = "healthCheck")]
    _health_check: Option<Value>,
    #[serde(rename = "status")]
    _status: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct PathSpec {
    path: String,
    methods: Option<Vec<Method>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

#[derive(Debug, Deserialize)]
struct AsyncPerMethod {
    #[serde(rename = "GET")]
    get: Option<bool>,
    #[serde(rename = "POST")]
    post: Option<bool>,
}

/// A collect path and the methods it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectPath {
    pub path: String,
    pub get: bool,
    pub post: bool,
}

/// A checked HTTP source.
#[derive(Debug)]
pub struct HttpSourceConfig {
    pub id: String,
    pub listen: String,
    pub paths: Vec<CollectPath>,
    pub max_batch_size: usize,
    pub max_body_bytes: usize,
    pub cors: Cors,
    pub bearer_token: Option<BearerToken>,
    pub get_ack: AckMode,
    pub post_ack: AckMode,
    /// With `ack = "delivered"`: answer 202 after this long instead of waiting on.
    pub ack_timeout: Duration,
    ack_origin: AckOrigin,
    /// walkerOS's `ingest`: a mapping over the request whose result travels with each of
    /// its events.
    pub ingest: Option<ValueSpec>,
    pub trust_proxy: TrustProxy,
    /// Serve `/metrics` on this source's listener too (`settings.metrics`).
    pub metrics: bool,
    /// HTTPS on this source's listener (`settings.tls`).
    pub tls: Option<typed::TlsServer>,
    /// What a connection to this source's listener may hold.
    pub limits: ConnectionLimits,
}

impl HttpSourceConfig {
    /// Checks a flow-file source entry of type `http` (its `config` block at `path`).
    pub fn from_step(id: &str, config: &Value, path: &str, errors: &mut ConfigErrors) -> Option<HttpSourceConfig> {
        let empty = Map::new();
        let config_map = match config {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => {
                errors.push(path, "must be an object");
                return None;
            }
        };
        let settings_path = join(path, "settings");
        let settings = typed::parse::<Settings>(
            config_map.get("settings").unwrap_or(&Value::Object(Map::new())),
            &settings_path,
            errors,
        )?;
        let (get_ack, post_ack, ack_origin) = ack_modes(config_map, path, errors);
        let limits = connection_limits(&settings, &settings_path, errors);
        let mut ack_timeout = DEFAULT_ACK_TIMEOUT;
        let mut ingest = None;
        for (key, value) in config_map {
            let at = join(path, key);
            match key.as_str() {
                "settings" | "ack" | "async" | "id" | "disabled" | "logger" | "primary" => {}
                "ackTimeout" => match value.as_u64() {
                    Some(ms) if ms > 0 => ack_timeout = Duration::from_millis(ms),
                    _ => errors.push(at, "must be a positive number of milliseconds"),
                },
                "ingest" => ingest = ValueSpec::parse(value, &at, errors),
                "mapping" | "consent" | "policy" | "data" | "include" | "state" => {
                    errors.push(at, format!("source-level `{key}` is not supported by weir yet"));
                }
                "env" | "require" | "setup" | "credentials" => {
                    errors.push(at, format!("`{key}` is not supported by weir"));
                }
                _ => errors.push(at, "unknown key"),
            }
        }

        let listen = match (settings.listen, settings.port) {
            (Some(listen), _) => listen,
            // walkerOS (express) listens on every interface.
            (None, Some(port)) => format!("0.0.0.0:{port}"),
            (None, None) => DEFAULT_LISTEN.to_owned(),
        };
        if !typed::is_listen_address(&listen) {
            errors.push(join(&settings_path, "listen"), format!("\"{listen}\" is not host:port"));
        }
        let paths = collect_paths(settings.paths.as_ref(), settings.path, &settings_path, errors);
        let cors = match &settings.cors {
            None | Some(Value::Bool(true)) => Cors::On(CorsOptions::default()),
            Some(Value::Bool(false)) => Cors::Off,
            Some(options @ Value::Object(_)) => Cors::On(
                typed::parse::<CorsOptions>(options, &join(&settings_path, "cors"), errors).unwrap_or_default(),
            ),
            Some(_) => {
                errors.push(join(&settings_path, "cors"), "must be true, false or an options object");
                Cors::Off
            }
        };
        let bearer_token = BearerToken::resolve(
            settings.bearer_token,
            settings.bearer_token_file.as_deref(),
            &settings_path,
            errors,
        );
        let max_batch_size = settings.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE);
        if max_batch_size == 0 {
            errors.push(join(&settings_path, "maxBatchSize"), "must be at least 1");
        }
        Some(HttpSourceConfig {
            id: id.to_owned(),
            listen,
            paths,
            max_batch_size,
            max_body_bytes: settings.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            cors,
            bearer_token,
            get_ack,
            post_ack,
            ack_timeout,
            ack_origin,
            ingest,
            trust_proxy: super::request::trust_proxy(settings.trust_proxy.as_ref(), &settings_path, errors),
            metrics: settings.metrics.unwrap_or(false),
            tls: settings
                .tls
                .as_ref()
                .and_then(|tls| typed::TlsServer::parse(tls, &join(&settings_path, "tls"), errors)),
            limits,
        })
    }
}

/// The connection limits `settings` sets, over the defaults.
fn connection_limits(settings: &Settings, settings_path: &str, errors: &mut ConfigErrors) -> ConnectionLimits {
    let defaults = ConnectionLimits::default();
    let mut at_least = |key: &str, value: Option<usize>, least: usize, default: usize, unit: &str| match value {
        Some(value) if value < least => {
            errors.push(join(settings_path, key), format!("must be at least {least}{unit}"));
            default
        }
        Some(value) => value,
        None => default,
    };
    let mut timeout = |key: &str, value: Option<u64>, default: Duration| {
        let ms = value.map(|ms| usize::try_from(ms).unwrap_or(usize::MAX));
        let default = usize::try_from(default.as_millis()).unwrap_or(usize::MAX);
        Duration::from_millis(at_least(key, ms, 1, default, " ms") as u64)
    };
    ConnectionLimits {
        header_timeout: timeout("headerTimeout", settings.header_timeout, defaults.header_timeout),
        body_timeout: timeout("bodyTimeout", settings.body_timeout, defaults.body_timeout),
        keep_alive_timeout: timeout(
            "keepAliveTimeout",
            settings.keep_alive_timeout,
            defaults.keep_alive_timeout,
        ),
        max_header_bytes: at_least(
            "maxHeaderBytes",
            settings.max_header_bytes,
            MIN_HEADER_BYTES,
            defaults.max_header_bytes,
            " bytes",
        ),
        max_headers: at_least("maxHeaders", settings.max_headers, 1, defaults.max_headers, ""),
        max_connections: at_least(
            "maxConnections",
            settings.max_connections,
            1,
            defaults.max_connections,
            "",
        ),
    }
}

/// `ack` (weir) or `async` (walkerOS: `true` = respond first), per method.
/// The (GET, POST) ack modes as if the flow has a journal (see
/// [`HttpSourceConfig::without_journal`]). walkerOS's `async` ("respond first") answers once
/// the events are journaled: before delivery, as walkerOS does, but never before they are
/// safe.
fn ack_modes(config: &Map<String, Value>, path: &str, errors: &mut ConfigErrors) -> (AckMode, AckMode, AckOrigin) {
    let mode = |respond_first: bool| {
        if respond_first {
            AckMode::Journaled
        } else {
            AckMode::Delivered
        }
    };
    let fallback = (AckMode::Journaled, AckMode::Journaled, AckOrigin::Default);
    match (config.get("ack"), config.get("async")) {
        (Some(_), Some(_)) => {
            errors.push(join(path, "async"), "set `ack` or walkerOS's `async`, not both");
            fallback
        }
        (Some(ack), None) => {
            let mode = match ack.as_str() {
                Some("received") => AckMode::Received,
                Some("journaled") => AckMode::Journaled,
                Some("delivered") => AckMode::Delivered,
                _ => {
                    errors.push(
                        join(path, "ack"),
                        "must be \"received\", \"journaled\" or \"delivered\"",
                    );
                    return fallback;
                }
            };
            (mode, mode, AckOrigin::Explicit)
        }
        (None, Some(Value::Bool(flag))) => (mode(*flag), mode(*flag), AckOrigin::Async),
        (None, Some(per_method @ Value::Object(_))) => {
            match typed::parse::<AsyncPerMethod>(per_method, &join(path, "async"), errors) {
                // walkerOS's per-method defaults: GET synchronous, POST respond-first.
                Some(AsyncPerMethod { get, post }) => {
                    (mode(get.unwrap_or(false)), mode(post.unwrap_or(true)), AckOrigin::Async)
                }
                None => fallback,
            }
        }
        (None, Some(_)) => {
            errors.push(join(path, "async"), "must be a boolean or {GET, POST} booleans");
            fallback
        }
        (None, None) => fallback,
    }
}

impl HttpSourceConfig {
    /// The flow has no journal (`journal.enabled = false`): the default is `delivered` (an
    /// answer says the events are safe at their destinations), walkerOS's `async` answers
    /// once they are queued in memory; an explicit `ack = "journaled"` is an error.
    pub fn without_journal(&mut self) -> Result<(), String> {
        let replace = |mode: AckMode, with: AckMode| if mode == AckMode::Journaled { with } else { mode };
        match self.ack_origin {
            AckOrigin::Explicit if self.post_ack == AckMode::Journaled => {
                return Err(
                    "\"journaled\" needs the flow's journal, which is disabled (journal.enabled = false)".into(),
                );
            }
            AckOrigin::Explicit => {}
            AckOrigin::Async => {
                self.get_ack = replace(self.get_ack, AckMode::Received);
                self.post_ack = replace(self.post_ack, AckMode::Received);
            }
            AckOrigin::Default => {
                self.get_ack = AckMode::Delivered;
                self.post_ack = AckMode::Delivered;
            }
        }
        Ok(())
    }
}

/// `paths` (strings or `{path, methods}`), else the deprecated `path`, else `/collect`.
fn collect_paths(
    paths: Option<&Value>,
    single: Option<String>,
    settings_path: &str,
    errors: &mut ConfigErrors,
) -> Vec<CollectPath> {
    let mut out = Vec::new();
    let at = join(settings_path, "paths");
    match paths {
        Some(Value::Array(entries)) => {
            for (index, entry) in entries.iter().enumerate() {
                let entry_path = join(&at, &index.to_string());
                match entry {
                    Value::String(path) => out.push(CollectPath {
                        path: path.clone(),
                        get: true,
                        post: true,
                    }),
                    Value::Object(_) => {
                        if let Some(spec) = typed::parse::<PathSpec>(entry, &entry_path, errors) {
                            let methods = spec.methods.unwrap_or_else(|| vec![Method::Get, Method::Post]);
                            out.push(CollectPath {
                                path: spec.path,
                                get: methods.contains(&Method::Get),
                                post: methods.contains(&Method::Post),
                            });
                        }
                    }
                    _ => errors.push(entry_path, "must be a path or {path, methods}"),
                }
            }
        }
        Some(_) => errors.push(at.clone(), "must be a list"),
        None => out.push(CollectPath {
            path: single.unwrap_or_else(|| "/collect".to_owned()),
            get: true,
            post: true,
        }),
    }
    for (index, entry) in out.iter().enumerate() {
        let path = &entry.path;
        let valid_characters = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'));
        if !path.starts_with('/') || !valid_characters {
            errors.push(
                at.clone(),
                format!("\"{path}\" must start with / and use only letters, digits and / - _ . ~"),
            );
        } else if crate::runtime::PROCESS_PATHS.contains(&path.as_str()) {
            errors.push(at.clone(), format!("\"{path}\" is served by weir itself"));
        } else if out[..index].iter().any(|earlier| &earlier.path == path) {
            errors.push(at.clone(), format!("\"{path}\" is listed twice"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(config: Value) -> (Option<HttpSourceConfig>, String) {
        let mut errors = ConfigErrors::default();
        let parsed = HttpSourceConfig::from_step("http", &config, "sources.http.config", &mut errors);
        (parsed, errors.to_string())
    }

    #[test]
    fn connection_limits_default_and_name_what_is_wrong() {
        let (parsed, errors) = check(json!({}));
        assert_eq!(errors, "");
        assert_eq!(parsed.unwrap().limits, ConnectionLimits::default());
        let (parsed, errors) = check(json!({"settings": {
            "headerTimeout": 2000, "bodyTimeout": 5000, "keepAliveTimeout": 120000,
            "maxHeaderBytes": 32768, "maxHeaders": 50, "maxConnections": 100
        }}));
        assert_eq!(errors, "");
        assert_eq!(
            parsed.unwrap().limits,
            ConnectionLimits {
                header_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_secs(5),
                keep_alive_timeout: Duration::from_secs(120),
                max_header_bytes: 32768,
                max_headers: 50,
                max_connections: 100,
            }
        );
        let (_, errors) = check(json!({"settings": {"maxHeaderBytes": 4096, "maxConnections": 0, "headerTimeout": 0}}));
        assert!(
            errors.contains("sources.http.config.settings.maxHeaderBytes: must be at least 8192 bytes"),
            "{errors}"
        );
        assert!(
            errors.contains("sources.http.config.settings.maxConnections: must be at least 1"),
            "{errors}"
        );
        assert!(
            errors.contains("sources.http.config.settings.headerTimeout: must be at least 1 ms"),
            "{errors}"
        );
    }

    #[test]
    fn walkeros_settings_and_ack_modes() {
        let (parsed, errors) = check(json!({
            "async": {"POST": true},
            "settings": {"port": 8080, "paths": ["/collect", {"path": "/pixel", "methods": ["GET"]}], "cors": false}
        }));
        assert_eq!(errors, "");
        let mut parsed = parsed.unwrap();
        assert_eq!(parsed.listen, "0.0.0.0:8080");
        // Respond-first answers once the events are journaled; without a journal, once queued.
        assert_eq!(
            (parsed.get_ack, parsed.post_ack),
            (AckMode::Delivered, AckMode::Journaled)
        );
        parsed.without_journal().unwrap();
        assert_eq!(
            (parsed.get_ack, parsed.post_ack),
            (AckMode::Delivered, AckMode::Received)
        );
        assert_eq!(
            parsed.paths[1],
            CollectPath {
                path: "/pixel".into(),
                get: true,
                post: false
            }
        );
        assert!(!parsed.cors.is_on());
    }

    #[test]
    fn the_default_is_journaled_with_a_journal_and_delivered_without() {
        let (parsed, _) = check(json!({}));
        let mut parsed = parsed.unwrap();
        assert_eq!(
            (parsed.get_ack, parsed.post_ack),
            (AckMode::Journaled, AckMode::Journaled)
        );
        parsed.without_journal().unwrap();
        assert_eq!(
            (parsed.get_ack, parsed.post_ack),
            (AckMode::Delivered, AckMode::Delivered)
        );

        let (parsed, errors) = check(json!({"ack": "journaled"}));
        assert_eq!(errors, "");
        let problem = parsed.unwrap().without_journal().unwrap_err();
        assert!(problem.contains("journal.enabled = false"), "{problem}");
        let (parsed, _) = check(json!({"ack": "received"}));
        let mut parsed = parsed.unwrap();
        parsed.without_journal().unwrap();
        assert_eq!(parsed.post_ack, AckMode::Received);
        let (_, errors) = check(json!({"ack": "fsynced"}));
        assert!(
            errors.contains("\"received\", \"journaled\" or \"delivered\""),
            "{errors}"
        );
    }

    #[test]
    fn typos_and_unusable_values_are_named() {
        let (_, errors) = check(json!({
            "async": {"get": true},
            "settings": {
                "listen": "localhost",
                "paths": ["/collect", "/collect", "/metrics", "/c/{id}", {"path": "/x", "method": ["POST"]}],
                "cors": {"origin": "*", "maxage": 5},
                "maxBatchSize": 0
            }
        }));
        for expected in [
            "sources.http.config.async.get: unknown key",
            "sources.http.config.settings.listen: \"localhost\" is not host:port",
            "sources.http.config.settings.paths: \"/collect\" is listed twice",
            "sources.http.config.settings.paths: \"/metrics\" is served by weir itself",
            "sources.http.config.settings.paths: \"/c/{id}\" must start with /",
            "sources.http.config.settings.paths.4.method: unknown key",
            "sources.http.config.settings.cors.maxage: unknown key",
            "sources.http.config.settings.maxBatchSize: must be at least 1",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
        }
    }
}
