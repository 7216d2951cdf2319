//! `sse`: a Server-Sent-Events hub (`GET /v1/notifications/event-stream` by default), the
//! fan-out Optimizely Agent's notifications endpoint offers, made reliable (Optimizely
//! Agent's `pkg/handlers/notification.go`). It is served on every HTTP source's listener, or
//! on its own `listen` address; the assembly binds the listeners.
//!
//! Each event is rendered once into its frame — `id:` (the stream entry id when a stream
//! source read it, else the event id), `event:` (the event name), `data:` (the event JSON, or
//! the mapped `data`) — and handed to every connected client through one broadcast ring of
//! `clientQueue` frames. A client too slow to keep up falls off the ring and is disconnected
//! (counted), never slowing the others. `?filter=a,b` (or repeated) keeps only those event
//! names; `Last-Event-ID` replays what a client missed from the stream (`replay` settings),
//! then continues live without gaps or repeats; comment lines every `heartbeat` keep proxies
//! from closing idle connections; an optional bearer token guards it all.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::config::typed::{self, BearerToken};
use crate::config::{ConfigErrors, join};
use crate::delivery::{DeliveryDefaults, Destination, Endpoint, ErrorClass, RenderError, RenderInput, Rendered};
use crate::redis::connection::report_unknown_keys;
use crate::redis::replies::as_text;
use crate::redis::{Connection, parse_connection};

pub const DEFAULT_PATH: &str = "/v1/notifications/event-stream";

/// Frames joined into one write, up to about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    path: Option<String>,
    /// A listener of the hub's own; unset: every HTTP source's listener.
    listen: Option<String>,
    /// ms
    heartbeat: Option<u64>,
    client_queue: Option<usize>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    /// `{url, stream, …}`: where `Last-Event-ID` replays from.
    replay: Option<Value>,
}

/// One event, ready for every client.
#[derive(Debug)]
pub struct Frame {
    pub id: String,
    pub name: String,
    pub bytes: Bytes,
}

/// Where missed entries are read back from.
#[derive(Debug, Clone)]
struct Replay {
    connection: Connection,
    stream: String,
}

pub struct Hub {
    path: String,
    listen: Option<String>,
    heartbeat: Duration,
    bearer_token: Option<BearerToken>,
    replay: Option<Replay>,
    frames: broadcast::Sender<Arc<Frame>>,
    /// Frames the ring holds (`clientQueue`).
    capacity: usize,
    clients: AtomicUsize,
    /// Cancelled when the hub stops (shutdown, or a reload retired it): every client's
    /// stream ends, and a client reconnects (with `Last-Event-ID`) to whoever serves the path
    /// then.
    closed: tokio_util::sync::CancellationToken,
}

pub struct SseDestination {
    hub: Arc<Hub>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SseError(String);

/// `id:`, `event:` and `data:` lines; names and ids cannot break a frame.
fn frame(id: &str, name: &str, data: &[u8]) -> Frame {
    let clean = |text: &str| text.replace(['\r', '\n'], " ");
    let (id, name) = (clean(id), clean(name));
    let mut bytes = Vec::with_capacity(data.len() + id.len() + name.len() + 24);
    bytes.extend_from_slice(format!("id: {id}\nevent: {name}\ndata: ").as_bytes());
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\n\n");
    Frame {
        id,
        name,
        bytes: Bytes::from(bytes),
    }
}

impl Destination for SseDestination {
    type RuleSettings = serde::de::IgnoredAny;
    type Wire = Arc<Frame>;
    type Error = SseError;
    const KIND: &'static str = "sse";

    /// A live fan-out: its clients want what happens now, not a replay after a restart.
    fn journaled(&self) -> bool {
        false
    }

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let empty = Value::Object(serde_json::Map::new());
        let raw = typed::parse::<Raw>(settings.unwrap_or(&empty), path, errors)?;
        let endpoint = raw.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_owned());
        if !endpoint.starts_with('/') {
            errors.push(join(path, "path"), "must start with /");
        }
        if let Some(listen) = raw.listen.as_deref().filter(|listen| !typed::is_listen_address(listen)) {
            errors.push(join(path, "listen"), format!("\"{listen}\" is not host:port"));
        }
        let bearer_token =
            BearerToken::resolve(raw.bearer_token.clone(), raw.bearer_token_file.as_deref(), path, errors);
        let replay = raw.replay.as_ref().and_then(|value| {
            let at = join(path, "replay");
            let stream = value.get("stream").and_then(Value::as_str).map(str::to_owned);
            report_unknown_keys(value, &["stream"], &at, errors);
            let connection = parse_connection(value, &at, &|name| std::env::var(name).ok(), errors);
            if stream.is_none() {
                errors.push(join(&at, "stream"), "the stream to replay missed entries from");
            }
            Some(Replay {
                connection: connection?,
                stream: stream?,
            })
        });
        let queue = raw.client_queue.unwrap_or(1024).max(1);
        let (frames, _) = broadcast::channel(queue);
        Some(SseDestination {
            hub: Arc::new(Hub {
                path: endpoint,
                listen: raw.listen.clone(),
                heartbeat: Duration::from_millis(raw.heartbeat.unwrap_or(15_000).max(10)),
                bearer_token,
                replay,
                frames,
                capacity: queue,
                clients: AtomicUsize::new(0),
                closed: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            // A batch goes into the ring at once: a quarter of it leaves clients room to
            // keep up between batches.
            batch_size: (self.hub.capacity / 4).clamp(1, 256),
            concurrency: 1,
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), SseError> {
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, serde::de::IgnoredAny>) -> Result<Rendered<Arc<Frame>>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let data = match input.data {
            Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(&Value::Object(data.clone())),
            _ => input.event.to_json(),
        };
        let id = input
            .event
            .origin()
            .map_or(input.event.id(), |origin| origin.id.as_str());
        Ok(Rendered::Send(Arc::new(frame(id, input.event.name(), &data))))
    }

    fn explain(&self, wire: &Arc<Frame>) -> Value {
        serde_json::json!({"path": self.hub.path, "frame": String::from_utf8_lossy(&wire.bytes)})
    }

    fn wire_size(&self, wire: &Arc<Frame>) -> usize {
        wire.bytes.len()
    }

    async fn send(&self, batch: &[&Arc<Frame>]) -> Result<Vec<Result<(), SseError>>, SseError> {
        // Handed to the hub is delivered: every client connected now gets it or, too slow to
        // take it, is disconnected. No client connected is not an error.
        for frame in batch {
            let _ = self.hub.frames.send(Arc::clone(frame));
        }
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, _error: &SseError) -> ErrorClass {
        ErrorClass::Fatal
    }

    async fn shutdown(&self) -> Result<(), SseError> {
        self.hub.closed.cancel();
        Ok(())
    }

    fn closing(&self) {
        self.hub.closed.cancel();
    }

    fn http_endpoint(&self) -> Option<Endpoint> {
        let router = Router::new()
            .route(&self.hub.path, axum::routing::get(events))
            .with_state(self.hub.clone());
        Some(Endpoint {
            path: self.hub.path.clone(),
            router,
            listen: self.hub.listen.clone(),
        })
    }
}

/// `?filter=a,b&filter=c`: the event names a client wants (all when empty).
fn filters(query: Option<&str>) -> HashSet<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "filter")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Stream ids compare by (ms, sequence); `None` for anything else.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Frames of the entries after `last` in the replay stream, oldest first.
async fn missed(replay: &Replay, last: &str) -> redis::RedisResult<Vec<Frame>> {
    let mut connection = replay.connection.connect_first().await?;
    let mut frames = Vec::new();
    let mut start = format!("({last}");
    loop {
        let page: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(&replay.stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        for entry in &page {
            let redis::Value::Array(parts) = entry else { continue };
            let (Some(id), Some(redis::Value::Array(fields))) = (parts.first().and_then(as_text), parts.get(1)) else {
                continue;
            };
            start = format!("({id}");
            // weir's (and walkerOS's) `event` field: its JSON is the frame's data.
            let event = fields
                .chunks(2)
                .find(|pair| pair.first().and_then(as_text).as_deref() == Some("event"))
                .and_then(|pair| pair.get(1).and_then(as_text));
            let Some(event) = event else { continue };
            let name = serde_json::from_str::<Value>(&event)
                .ok()
                .and_then(|value| value.get("name").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            frames.push(frame(&id, &name, event.as_bytes()));
        }
        if page.len() < 1000 {
            return Ok(frames);
        }
    }
}

/// Counts a connected client for as long as it lives.
struct ClientGuard(Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let now = self.0.clients.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("weir_sse_clients", "path" => self.0.path.clone()).set(now as f64);
    }
}

/// Moves frames from the hub's ring into one client's queue until the client is gone or too
/// slow (its queue full, or it fell off the ring).
async fn forward(
    hub: Arc<Hub>,
    mut live: broadcast::Receiver<Arc<Frame>>,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    wanted: HashSet<String>,
    replayed_up_to: Option<(u64, u64)>,
) {
    loop {
        let frame = tokio::select! {
            received = live.recv() => received,
            () = queue.closed() => return,
            () = hub.closed.cancelled() => return,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(_)) => break,
        };
        let repeat = replayed_up_to.is_some_and(|up_to| stream_id(&frame.id).is_some_and(|id| id <= up_to));
        if repeat || !(wanted.is_empty() || wanted.contains(&frame.name)) {
            continue;
        }
        match queue.try_send(frame.bytes.clone()) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => break,
        }
    }
    metrics::counter!("weir_sse_clients_dropped_total", "path" => hub.path.clone()).increment(1);
    tracing::warn!("SSE client too slow: disconnected (it can resume with Last-Event-ID)");
}

async fn events(State(hub): State<Arc<Hub>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if let Some(token) = &hub.bearer_token
        && !token.accepts(headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()))
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let wanted = filters(query.as_deref());
    // Subscribe before replaying, so nothing published meanwhile is missed; live frames the
    // replay already sent are skipped by id.
    let live = hub.frames.subscribe();
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut backlog: Vec<Bytes> = Vec::new();
    let mut replayed_up_to = last_event_id.as_deref().and_then(stream_id);
    if let (Some(replay), Some(last)) = (&hub.replay, &last_event_id) {
        match missed(replay, last).await {
            Ok(frames) => {
                for missed in frames {
                    if let Some(id) = stream_id(&missed.id) {
                        replayed_up_to = replayed_up_to.max(Some(id));
                    }
                    if wanted.is_empty() || wanted.contains(&missed.name) {
                        backlog.push(missed.bytes);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot replay missed events; the client continues live");
            }
        }
    }
    let connected = hub.clients.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!("weir_sse_clients", "path" => hub.path.clone()).set(connected as f64);
    let guard = ClientGuard(hub.clone());
    // The client's own bounded queue, filled by a forwarder that never waits on the client's
    // socket: when the queue is full the client is too slow, and it is cut off right then
    // (its response ends once it reads what it has). Nobody else waits for it.
    let (queue, queued) = tokio::sync::mpsc::channel::<Bytes>(hub.capacity);
    for bytes in backlog {
        if queue.try_send(bytes).is_err() {
            break;
        }
    }
    tokio::spawn(forward(hub.clone(), live, queue, wanted, replayed_up_to));
    let mut heartbeat = tokio::time::interval(hub.heartbeat);
    heartbeat.tick().await;
    let stream = futures_util::stream::unfold(
        (queued, heartbeat, guard),
        |(mut queued, mut heartbeat, guard)| async move {
            let bytes = tokio::select! {
                received = queued.recv() => received?,
                _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            };
            // Whatever else is queued goes in the same write: under load one write carries
            // many frames instead of one system call each.
            let mut more = queued.try_recv().ok();
            if more.is_none() {
                return Some((Ok::<Bytes, std::io::Error>(bytes), (queued, heartbeat, guard)));
            }
            let mut joined = Vec::with_capacity(COALESCE_BYTES);
            joined.extend_from_slice(&bytes);
            while let Some(frame) = more.take() {
                joined.extend_from_slice(&frame);
                if joined.len() < COALESCE_BYTES {
                    more = queued.try_recv().ok();
                }
            }
            Some((Ok(Bytes::from(joined)), (queued, heartbeat, guard)))
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cannot_be_broken_by_names_or_ids() {
        let frame = frame("1-0", "page\nview", b"{}");
        assert_eq!(&frame.bytes[..], b"id: 1-0\nevent: page view\ndata: {}\n\n");
    }

    #[test]
    fn filters_take_lists_and_repeats() {
        let wanted = filters(Some("filter=a%20b,c&filter=d&other=x"));
        assert_eq!(
            wanted,
            HashSet::from(["a b".to_owned(), "c".to_owned(), "d".to_owned()])
        );
        assert!(filters(None).is_empty());
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(stream_id("10-0") > stream_id("9-5"));
        assert_eq!(stream_id("abc"), None);
    }
}
