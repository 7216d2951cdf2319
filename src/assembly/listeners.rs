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
//! Each listener admits at most its `maxConnections` and times every connection's heads and
//! idle waits ([`super::connection`]); hyper bounds header bytes and lines (431).
//!
//! Connections are served by hyper's HTTP/1 connection directly rather than `axum::serve`:
//! weir speaks only HTTP/1.1, and skipping the HTTP/2 detection `axum::serve` does on every
//! connection is measurably cheaper on the ingest path (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::typed::TlsServer;
use crate::delivery::Endpoint;
use crate::runtime::Runtime;
use crate::sources::SourceConfig;
use crate::sources::http::{ConnectionLimits, HttpSource, HttpSourceConfig};

use super::connection::{Activity, Admitted, Gate, Guarded, Meter, Tracked};

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

    /// Its connection limits: its source's, else the defaults.
    fn limits(&self) -> ConnectionLimits {
        self.source
            .as_ref()
            .map_or_else(ConnectionLimits::default, |source| source.limits.clone())
    }
}

/// The listeners and stream readers of a running flow. A reload ([`Listeners::update`])
/// keeps every listener whose address stays and swaps what it serves (connections already
/// open finish on what they started with); it binds new addresses before anything changes
/// and stops listeners whose address went, after their requests are answered.
pub struct Listeners {
    runtime: Arc<Runtime>,
    live: Vec<Live>,
    /// Stream readers: id, stop, and a token cancelled once the reader has ended.
    readers: Vec<(String, CancellationToken, CancellationToken)>,
    override_listen: Option<String>,
    stop: CancellationToken,
    /// Every listener's and reader's task; each ends when it has stopped.
    pub tasks: JoinSet<std::io::Result<()>>,
    /// What the admin listener serves (a reload reads its certificate again).
    admin: Option<Arc<ArcSwap<Serving>>>,
}

/// A bound listener: its address as configured, what it serves now, and its own stop.
struct Live {
    address: String,
    serving: Arc<ArcSwap<Serving>>,
    stop: CancellationToken,
}

/// What a listener serves, swapped whole by a reload.
struct Serving {
    router: Router,
    /// Each request carries the peer's address (a source with an `ingest` reads its `ip`).
    with_peer: bool,
    /// HTTPS: connections are TLS handshakes first.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Timeouts and header bounds for the connections it accepts from now on.
    limits: Arc<ConnectionLimits>,
    /// GET requests carry a [`crate::delivery::Hangup`] (it serves an SSE hub or the like).
    with_hangup: bool,
}

fn acceptor(tls: Option<&TlsServer>) -> Option<tokio_rustls::TlsAcceptor> {
    tls.map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone()))
}

/// Where listeners go: each HTTP source's address, and each endpoint's (joining a source's
/// listener of that address, or one of its own); stream sources read instead.
fn plan(
    sources: Vec<SourceConfig>,
    endpoints: Vec<(String, Endpoint)>,
    override_listen: Option<&str>,
) -> (Vec<Planned>, Vec<crate::sources::redis_stream::RedisStreamConfig>) {
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
    (planned, readers)
}

/// A bound socket's address, for logs and metric labels.
fn address_of(socket: &TcpListener, otherwise: &str) -> String {
    socket
        .local_addr()
        .map_or_else(|_| otherwise.to_owned(), |local| local.to_string())
}

/// Pending connections a listener queues for `accept` (the kernel caps it at
/// `net.core.somaxconn`). tokio's default of 1 024 overflows in a burst of connections, and a
/// client whose handshake was dropped from a full queue may believe itself connected.
const BACKLOG: u32 = 4096;

async fn bind(address: &str, serves: impl FnOnce() -> String) -> Result<TcpListener, StartError> {
    let failed = |source| StartError::Bind {
        address: address.to_owned(),
        serves: serves(),
        source,
    };
    let resolved = match tokio::net::lookup_host(address).await {
        Ok(resolved) => resolved,
        Err(error) => return Err(failed(error)),
    };
    let mut last = None;
    for resolved in resolved {
        let socket = match resolved {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let listening = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(resolved)?;
            socket.listen(BACKLOG)
        });
        match listening {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "the address resolves to nothing")
    })))
}

impl Listeners {
    /// Binds every listener the flow needs (and the admin listener at `admin`'s address, if
    /// any), then serves them and runs the stream sources until `stop`. `override_listen`
    /// (`weir serve --listen`) replaces the first HTTP source's address, or in a flow without
    /// one the first listener's.
    pub async fn start(
        runtime: &Arc<Runtime>,
        sources: Vec<SourceConfig>,
        endpoints: Vec<(String, Endpoint)>,
        override_listen: Option<&str>,
        admin: Option<(String, super::admin::Admin)>,
        stop: &CancellationToken,
    ) -> Result<Listeners, StartError> {
        let admin = match admin {
            Some((address, admin)) => Some((
                bind(&address, || {
                    "the admin listener: set `admin.listen` (or `--admin-listen`), or `admin.listen = false`".into()
                })
                .await?,
                admin,
            )),
            None => None,
        };
        let mut listeners = Listeners {
            runtime: runtime.clone(),
            live: Vec::new(),
            readers: Vec::new(),
            override_listen: override_listen.map(str::to_owned),
            stop: stop.clone(),
            tasks: JoinSet::new(),
            admin: None,
        };
        let (planned, readers) = plan(sources, endpoints, override_listen);
        let mut bound = Vec::with_capacity(planned.len());
        for listener in planned {
            bound.push((bind(&listener.address, || listener.serves()).await?, listener));
        }
        let mut caps: Vec<(String, usize)> = bound
            .iter()
            .map(|(socket, listener)| (address_of(socket, &listener.address), listener.limits().max_connections))
            .collect();
        if let Some((socket, _)) = &admin {
            caps.push((address_of(socket, "admin"), super::connection::ADMIN_MAX_CONNECTIONS));
        }
        super::connection::fit_to_file_limit(&mut caps);
        let mut caps = caps.into_iter().map(|(_, cap)| cap);
        let bound: Vec<_> = bound
            .into_iter()
            .map(|(socket, listener)| (socket, listener, caps.next().expect("one cap per listener")))
            .collect();
        if let Some((socket, admin)) = admin {
            let address = address_of(&socket, "?");
            let scheme = if admin.tls.is_some() { "https" } else { "http" };
            tracing::info!(scheme, address = %address, "admin listening (status page, /metrics, tap)");
            let serving = Arc::new(ArcSwap::from_pointee(Serving {
                tls: acceptor(admin.tls.as_ref()),
                router: super::admin::router(admin),
                with_peer: false,
                limits: Arc::new(ConnectionLimits::default()),
                with_hangup: true,
            }));
            listeners.admin = Some(serving.clone());
            let gate = Gate::new(caps.next().expect("the admin listener's cap"), Meter::new(&address));
            listeners
                .tasks
                .spawn(serve_http(socket, serving, gate, address, stop.clone()));
        }
        for (socket, listener, cap) in bound {
            listeners.serve(socket, listener, Some(cap));
        }
        for reader in readers {
            listeners.read(reader, None);
        }
        Ok(listeners)
    }

    /// Stops accepting on every listener and stops the stream readers (each task ends once
    /// its requests are answered, or what it read is delivered).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Serves `listener` on `socket`, admitting `cap` connections at once (its
    /// `maxConnections` when `None`).
    fn serve(&mut self, socket: TcpListener, listener: Planned, cap: Option<usize>) {
        let address = address_of(&socket, &listener.address);
        let configured = listener.address.clone();
        let gate = Gate::new(
            cap.unwrap_or_else(|| listener.limits().max_connections),
            Meter::new(&address),
        );
        let serving = Arc::new(ArcSwap::from_pointee(self.serving(listener, &address)));
        let stop = self.stop.child_token();
        self.tasks
            .spawn(serve_http(socket, serving.clone(), gate, address, stop.clone()));
        self.live.push(Live {
            address: configured,
            serving,
            stop,
        });
    }

    /// Starts a stream reader, once `after` (its predecessor of the same id, still
    /// delivering what it read) has ended: two readers with one consumer name would hand
    /// out the same pending entries twice.
    fn read(&mut self, reader: crate::sources::redis_stream::RedisStreamConfig, after: Option<CancellationToken>) {
        let stop = self.stop.child_token();
        let ended = CancellationToken::new();
        self.readers.push((reader.id.clone(), stop.clone(), ended.clone()));
        let runtime = self.runtime.clone();
        self.tasks.spawn(async move {
            let _ended = ended.drop_guard();
            if let Some(after) = after {
                after.cancelled().await;
            }
            crate::sources::redis_stream::run(reader, runtime, stop).await
        });
    }

    /// What `listener` serves: its source's routes, its endpoints, the health probes.
    fn serving(&self, listener: Planned, address: &str) -> Serving {
        let serves = listener.serves();
        let limits = Arc::new(listener.limits());
        let with_hangup = !listener.endpoints.is_empty();
        let mut shared = health_routes(self.runtime.clone(), false);
        if listener.source.as_ref().is_some_and(|config| config.metrics) {
            shared = shared.route("/metrics", get(metrics_text));
        }
        for (_, router) in listener.endpoints {
            shared = shared.merge(router);
        }
        // Only a source with an `ingest` reads the peer's address (its `ip`).
        let with_peer = listener.source.as_ref().is_some_and(|config| config.ingest.is_some());
        let tls = acceptor(listener.source.as_ref().and_then(|config| config.tls.as_ref()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let router = match listener.source {
            Some(config) => {
                tracing::info!(serves = %serves, scheme, address = %address, "HTTP source listening");
                HttpSource::new(config, self.runtime.clone()).router(shared)
            }
            None => {
                tracing::info!(serves = %serves, address = %address, "HTTP endpoints listening");
                shared.fallback(not_found)
            }
        };
        Serving {
            router,
            with_peer,
            tls,
            limits,
            with_hangup,
        }
    }

    /// The admin listener's certificate, read again by a reload (its address and token apply
    /// at the next start).
    pub fn update_admin_tls(&self, tls: Option<&TlsServer>) {
        let (Some(admin), Some(tls)) = (&self.admin, tls) else {
            return;
        };
        let now = admin.load();
        if now.tls.is_some() {
            admin.store(Arc::new(Serving {
                router: now.router.clone(),
                with_peer: now.with_peer,
                tls: acceptor(Some(tls)),
                limits: now.limits.clone(),
                with_hangup: now.with_hangup,
            }));
        }
    }

    /// Binds the addresses `sources` and `endpoints` need that are not bound yet, without
    /// serving them: a reload that cannot bind changes nothing.
    pub async fn prepare(
        &self,
        sources: Vec<SourceConfig>,
        endpoints: Vec<(String, Endpoint)>,
    ) -> Result<Prepared, StartError> {
        let (planned, readers) = plan(sources, endpoints, self.override_listen.as_deref());
        let mut listeners = Vec::with_capacity(planned.len());
        for listener in planned {
            let socket = match self.live.iter().any(|live| live.address == listener.address) {
                true => None,
                false => Some(bind(&listener.address, || listener.serves()).await?),
            };
            listeners.push((socket, listener));
        }
        Ok(Prepared { listeners, readers })
    }

    /// Serves what `prepared` planned: swaps what kept listeners serve, starts new ones,
    /// stops those whose address went; stops the readers named in `stopped` and starts
    /// `prepared`'s readers whose id is not running.
    pub fn update(&mut self, prepared: Prepared, stopped: &[String]) {
        let wanted: Vec<String> = prepared
            .listeners
            .iter()
            .map(|(_, listener)| listener.address.clone())
            .collect();
        self.live.retain(|live| {
            let stays = wanted.contains(&live.address);
            if !stays {
                tracing::info!(address = %live.address, "listener no longer in the flow: closing it");
                live.stop.cancel();
            }
            stays
        });
        for (socket, listener) in prepared.listeners {
            match socket {
                Some(socket) => self.serve(socket, listener, None),
                None => {
                    let at = self
                        .live
                        .iter()
                        .position(|live| live.address == listener.address)
                        .expect("prepared against these listeners");
                    let address = self.live[at].address.clone();
                    let serving = self.serving(listener, &address);
                    self.live[at].serving.store(Arc::new(serving));
                }
            }
        }
        let mut ending = Vec::new();
        self.readers.retain(|(id, stop, ended)| {
            let stays = !stopped.contains(id);
            if !stays {
                stop.cancel();
                ending.push((id.clone(), ended.clone()));
            }
            stays
        });
        for reader in prepared.readers {
            if !self.readers.iter().any(|(id, _, _)| *id == reader.id) {
                let after = ending
                    .iter()
                    .find(|(id, _)| *id == reader.id)
                    .map(|(_, ended)| ended.clone());
                self.read(reader, after);
            }
        }
    }
}

/// Listeners bound for a reload, not yet serving.
pub struct Prepared {
    listeners: Vec<(Option<TcpListener>, Planned)>,
    readers: Vec<crate::sources::redis_stream::RedisStreamConfig>,
}

/// `/healthz` and `/readyz` (and walkerOS's runner's `/health`, `/ready`, answered alike),
/// on every listener. With `detailed` (the admin listener), a `/readyz` that is not ready
/// also says why the destination it names could not connect (`error`): the error text of a
/// client library names hosts and certificates, which a public port does not show.
pub(super) fn health_routes<S>(runtime: Arc<Runtime>, detailed: bool) -> Router<S> {
    let readyz = move |State(runtime): State<Arc<Runtime>>| readyz(runtime, detailed);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health", get(healthz))
        .route("/ready", get(readyz))
        .with_state(runtime)
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, "{\"status\":\"ok\"}".into())
}

async fn readyz(runtime: Arc<Runtime>, detailed: bool) -> Response {
    match runtime.readiness_with_error() {
        Ok(()) => json_response(StatusCode::OK, "{\"status\":\"ready\"}".into()),
        Err((reason, error)) => {
            let mut body = serde_json::json!({"status": "not_ready", "reason": reason});
            if let (true, Some(error)) = (detailed, error) {
                body["error"] = error.into();
            }
            json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
        }
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
/// Each connection is served by what `serving` holds when it is accepted, if `gate` admits it.
async fn serve_http(
    listener: TcpListener,
    serving: Arc<ArcSwap<Serving>>,
    gate: Gate,
    address: String,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let meter = gate.meter().clone();
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
        let Some((stream, admitted)) = gate.admit(stream, serving.load().tls.is_some(), &address) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        spawn_connection(
            (graceful.watcher(), stop.clone()),
            stream,
            peer,
            serving.clone(),
            admitted,
            meter.clone(),
        );
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection on a task of its own, watched by `watcher` for a graceful stop:
/// the TLS handshake (for HTTPS) with the certificate `serving` holds when it is accepted,
/// then each request with the routes `serving` holds when that request arrives (a reload
/// reaches keep-alive connections too). The connection's reads are timed by [`Guarded`]
/// under the limits `serving` holds when it is accepted; until its first byte it is not
/// hyper's yet, and `stop` closes it.
fn spawn_connection(
    (watcher, stop): (hyper_util::server::graceful::Watcher, CancellationToken),
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    serving: Arc<ArcSwap<Serving>>,
    admitted: Admitted,
    meter: Meter,
) {
    let task = async move {
        let _admitted = admitted;
        let (tls, limits) = {
            let now = serving.load();
            (now.tls.clone(), now.limits.clone())
        };
        // Until its first byte a connection is this small task and its socket: hyper's
        // connection and buffers (tens of kB) are made, on the heap, once there is a request.
        // Its first head is due `headerTimeout` after the accept. (A peek, not `readable()`:
        // a fresh socket's readiness can be a false positive.)
        let due = tokio::time::Instant::now() + limits.header_timeout;
        let mut first = [0u8; 1];
        tokio::select! {
            peeked = tokio::time::timeout_at(due, stream.peek(&mut first)) => match peeked {
                Err(_) => {
                    meter.header_timed_out();
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
            },
            // Stopping: a connection without a request is closed at once.
            () = stop.cancelled() => return,
        }
        let stream = Guarded::new(stream, due, &limits, meter);
        Box::pin(serve_admitted(watcher, stream, peer, serving, tls, limits)).await;
    };
    tokio::spawn(task);
}

/// Serves an admitted connection that has sent its first byte: the TLS handshake (for
/// HTTPS), then HTTP/1.1.
async fn serve_admitted(
    watcher: hyper_util::server::graceful::Watcher,
    stream: Guarded<tokio::net::TcpStream>,
    peer: std::net::SocketAddr,
    serving: Arc<ArcSwap<Serving>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<ConnectionLimits>,
) {
    let activity = stream.activity().clone();
    let result = match tls {
        None => serve_connection(watcher, stream, peer, serving, activity, &limits).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_connection(watcher, tls, peer, serving, activity, &limits).await,
            Ok(Err(error)) => {
                tracing::debug!(peer = %peer, error = %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
    }
}

/// Serves HTTP/1.1 on `io` until the client, a graceful stop or a [`crate::delivery::Hangup`]
/// ends it.
async fn serve_connection<I>(
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    peer: std::net::SocketAddr,
    serving: Arc<ArcSwap<Serving>>,
    activity: Arc<Activity>,
    limits: &ConnectionLimits,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        // Timed by `Guarded`, which tells idle time from header time.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_header_size(limits.max_header_bytes);
    if limits.max_headers != ConnectionLimits::default().max_headers {
        // Only when set: hyper then parses headers into the heap instead of the stack.
        builder.max_headers(limits.max_headers);
    }
    let hangup = CancellationToken::new();
    let cut = hangup.clone();
    // hyper's own service calls through `&self`: nothing is cloned per request but the
    // router, as a tower service adapter would clone it too.
    let service = hyper::service::service_fn(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
        let answering = activity.start();
        let now = serving.load();
        if now.with_peer {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        }
        if now.with_hangup && request.method() == axum::http::Method::GET {
            request.extensions_mut().insert(crate::delivery::Hangup(hangup.clone()));
        }
        let response = tower::ServiceExt::oneshot(now.router.clone(), request.map(axum::body::Body::new));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, answering }))
        }
    });
    let connection = watcher.watch(builder.serve_connection(hyper_util::rt::TokioIo::new(io), service));
    tokio::select! {
        result = connection => result,
        () = cut.cancelled() => Ok(()),
    }
}
