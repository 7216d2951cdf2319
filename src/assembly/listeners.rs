//! The process's HTTP listeners, and starting the sources.
//!
//! Each HTTP source gets a listener at its `listen` address; a destination endpoint (the SSE
//! hub) is served on every HTTP source's listener, or on its own `listen` address, where it
//! joins a source's listener of that address or gets one of its own. Every listener also
//! serves the process's health endpoints: `/healthz` (the process is up) and `/readyz` (every
//! destination connected), which load balancers probe; `/metrics` only where a source asks
//! for it (`settings.metrics`): it is the admin listener's ([`super::admin`]), which is bound
//! here with the others. All listeners are bound before
//! any is served or any source reads, so a taken port stops the start before an event is
//! taken in. Addresses are compared as written: `localhost:8080` and `127.0.0.1:8080` are two
//! listeners, and the second fails to bind with a clear error.
//!
//! A listener of its own (no HTTP source on it) sends no CORS headers: a browser on another
//! origin reaches an SSE hub through an HTTP source's listener, whose CORS settings apply.
//!
//! Connections are served by hyper's HTTP/1 connection directly rather than `axum::serve`:
//! weir speaks only HTTP/1.1, and skipping the HTTP/2 detection `axum::serve` does on every
//! connection is measurably cheaper on the ingest path (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::delivery::Endpoint;
use crate::runtime::Runtime;
use crate::sources::SourceConfig;
use crate::sources::http::{HttpSource, HttpSourceConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({serves})")]
    Bind {
        address: String,
        serves: String,
        #[source]
        source: std::io::Error,
    },
}

/// One listener to bind: its address, the HTTP source it carries (if any) and the
/// destination endpoints it serves.
struct Planned {
    address: String,
    source: Option<HttpSourceConfig>,
    endpoints: Vec<(String, Router)>,
}

impl Planned {
    /// What it serves, for logs and errors.
    fn serves(&self) -> String {
        let mut parts: Vec<String> = self
            .source
            .iter()
            .map(|http| format!("source \"{}\"", http.id))
            .collect();
        parts.extend(self.endpoints.iter().map(|(id, _)| format!("destination \"{id}\"")));
        parts.join(", ")
    }
}

/// Binds every listener the flow needs (and the admin listener at `admin`'s address, if
/// any), then serves them and runs the other sources until `stop`. `override_listen`
/// (`weir serve --listen`) replaces the first HTTP source's address, or in a flow without
/// one the first listener's. Each task ends when its source has stopped and (for a
/// listener) its in-flight requests are answered.
pub async fn start(
    runtime: &Arc<Runtime>,
    sources: Vec<SourceConfig>,
    endpoints: Vec<(String, Endpoint)>,
    override_listen: Option<&str>,
    admin: Option<(String, super::admin::Admin)>,
    stop: &CancellationToken,
) -> Result<JoinSet<std::io::Result<()>>, StartError> {
    let admin = match admin {
        Some((address, admin)) => match TcpListener::bind(&address).await {
            Ok(socket) => Some((socket, admin)),
            Err(source) => {
                return Err(StartError::Bind {
                    address,
                    serves: "the admin listener: set `admin.listen` (or `--admin-listen`), or `admin.listen = false`"
                        .into(),
                    source,
                });
            }
        },
        None => None,
    };
    let mut planned: Vec<Planned> = Vec::new();
    let mut readers = Vec::new();
    for source in sources {
        match source {
            SourceConfig::Http(http) => planned.push(Planned {
                address: http.listen.clone(),
                source: Some(http),
                endpoints: Vec::new(),
            }),
            SourceConfig::RedisStream(stream) => readers.push(stream),
        }
    }
    let source_listeners = planned.len();
    for (id, endpoint) in endpoints {
        match &endpoint.listen {
            None => {
                for listener in &mut planned[..source_listeners] {
                    listener.endpoints.push((id.clone(), endpoint.router.clone()));
                }
            }
            Some(address) => match planned.iter_mut().find(|listener| listener.address == *address) {
                Some(listener) => listener.endpoints.push((id, endpoint.router)),
                None => planned.push(Planned {
                    address: address.clone(),
                    source: None,
                    endpoints: vec![(id, endpoint.router)],
                }),
            },
        }
    }
    if let (Some(address), Some(first)) = (override_listen, planned.first_mut()) {
        first.address = address.to_owned();
    }

    let mut bound = Vec::with_capacity(planned.len());
    for listener in planned {
        match TcpListener::bind(&listener.address).await {
            Ok(socket) => bound.push((socket, listener)),
            Err(source) => {
                return Err(StartError::Bind {
                    serves: listener.serves(),
                    address: listener.address,
                    source,
                });
            }
        }
    }

    let mut tasks = JoinSet::new();
    if let Some((socket, admin)) = admin {
        let address = socket
            .local_addr()
            .map_or_else(|_| "?".into(), |local| local.to_string());
        tracing::info!(address = %address, "admin listening (status page, /metrics, tap)");
        tasks.spawn(serve_http(socket, super::admin::router(admin), false, stop.clone()));
    }
    for (socket, listener) in bound {
        let address = socket
            .local_addr()
            .map_or_else(|_| listener.address.clone(), |local| local.to_string());
        let serves = listener.serves();
        let mut shared = health_routes(runtime.clone());
        if listener.source.as_ref().is_some_and(|config| config.metrics) {
            shared = shared.route("/metrics", get(metrics_text));
        }
        for (_, router) in listener.endpoints {
            shared = shared.merge(router);
        }
        // Only a source with an `ingest` reads the peer's address (its `ip`).
        let with_peer = listener.source.as_ref().is_some_and(|config| config.ingest.is_some());
        let router = match listener.source {
            Some(config) => {
                tracing::info!(serves = %serves, address = %address, "HTTP source listening");
                HttpSource::new(config, runtime.clone()).router(shared)
            }
            None => {
                tracing::info!(serves = %serves, address = %address, "HTTP endpoints listening");
                shared.fallback(not_found)
            }
        };
        tasks.spawn(serve_http(socket, router, with_peer, stop.clone()));
    }
    for reader in readers {
        tasks.spawn(crate::sources::redis_stream::run(reader, runtime.clone(), stop.clone()));
    }
    Ok(tasks)
}

/// `/healthz` and `/readyz` (and walkerOS's runner's `/health`, `/ready`, answered alike),
/// on every listener.
pub(super) fn health_routes<S>(runtime: Arc<Runtime>) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health", get(healthz))
        .route("/ready", get(readyz))
        .with_state(runtime)
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, "{\"status\":\"ok\"}".into())
}

async fn readyz(State(runtime): State<Arc<Runtime>>) -> Response {
    match runtime.readiness() {
        Ok(()) => json_response(StatusCode::OK, "{\"status\":\"ready\"}".into()),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": reason}).to_string(),
        ),
    }
}

pub(super) async fn metrics_text() -> Response {
    let mut response = crate::telemetry::prometheus().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub(super) async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        "{\"success\":false,\"error\":\"Not found\"}".into(),
    )
}

/// Serves HTTP/1.1 connections until `stop`, then waits for in-flight requests to finish.
/// `with_peer`: each request carries the peer's address (axum's `ConnectInfo`).
async fn serve_http(
    listener: TcpListener,
    router: Router,
    with_peer: bool,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        if with_peer {
            let service =
                tower::ServiceExt::map_request(router.clone(), move |mut request: axum::extract::Request<_>| {
                    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    request
                });
            serve_connection(&graceful, stream, peer, service);
        } else {
            serve_connection(&graceful, stream, peer, router.clone());
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves one HTTP/1.1 connection with `service`, watched by `graceful`.
fn serve_connection<S>(
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    service: S,
) where
    S: tower::Service<axum::extract::Request<hyper::body::Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(service);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
        }
    });
}
