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
//!
//! `protocol = "optimizely-agent"` speaks Agent's endpoint on the wire instead: a client names
//! its SDK key in `X-Optimizely-SDK-Key` (the part before the first `:`; a missing one is
//! Agent's 400) and gets only that key's notifications (events `notification <type>` with
//! `custom.sdkKey`, as [`crate::redis::optimizely`] reads them from Agent's streams), framed
//! as Agent frames them — `data: <message>` with the message as Go re-marshals it, or
//! `<message>` lines with `raw` — filtered by Agent's `filter` rules. weir adds an `id:` line
//! (the stream entry id) so `Last-Event-ID` resumes from `stream:optimizely-sync-<sdkKey>`,
//! heartbeat comments (not in `raw`, which is not SSE), and `?sdkKey=` for browsers, which
//! cannot set headers on an EventSource.

use std::collections::HashSet;
use std::sync::Arc;
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
use crate::redis::optimizely;
use crate::redis::replies::as_text;
use crate::redis::{Connection, parse_connection};

pub const DEFAULT_PATH: &str = "/v1/notifications/event-stream";

/// Frames joined into one write, up to about this many bytes.
const COALESCE_BYTES: usize = 16 * 1024;

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
    /// `weir` (default) or `optimizely-agent`.
    protocol: Option<String>,
}

/// What the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// weir's frames: `id:`, `event:` (the event name), `data:` (the event JSON).
    Weir,
    /// Optimizely Agent's notification endpoint.
    OptimizelyAgent,
}

/// One event, ready for every client.
#[derive(Debug)]
pub struct Frame {
    pub id: String,
    /// What `filter` matches: the event name (weir) or the notification type (Agent).
    pub name: String,
    pub bytes: Bytes,
    /// Agent mode: the SDK key whose clients get it, and its `raw` line.
    pub sdk_key: Option<String>,
    pub raw: Bytes,
}

/// Where missed entries are read back from (Agent mode: the client's SDK key's stream when
/// no `stream` is given).
#[derive(Debug, Clone)]
struct Replay {
    connection: Connection,
    stream: Option<String>,
}

pub struct Hub {
    path: String,
    protocol: Protocol,
    listen: Option<String>,
    heartbeat: Duration,
    bearer_token: Option<BearerToken>,
    replay: Option<Replay>,
    frames: broadcast::Sender<Arc<Frame>>,
    /// Frames the ring holds (`clientQueue`).
    capacity: usize,
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
        sdk_key: None,
        raw: Bytes::new(),
    }
}

/// Agent's frame of a notification `message` (already in Go's form) of type `kind`, with
/// weir's `id:` line before it.
fn agent_frame(id: &str, kind: &str, sdk_key: &str, message: &[u8]) -> Frame {
    let id = id.replace(['\r', '\n'], " ");
    let mut bytes = Vec::with_capacity(message.len() + id.len() + 16);
    bytes.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
    bytes.extend_from_slice(message);
    bytes.extend_from_slice(b"\n\n");
    let mut raw = Vec::with_capacity(message.len() + 1);
    raw.extend_from_slice(message);
    raw.push(b'\n');
    Frame {
        id,
        name: kind.to_owned(),
        bytes: Bytes::from(bytes),
        sdk_key: Some(sdk_key.to_owned()),
        raw: Bytes::from(raw),
    }
}

/// Agent's 400 when a client names no SDK key: `render.JSON`'s body, newline included.
const MISSING_SDK_KEY: &str = "{\"error\":\"missing required X-Optimizely-SDK-Key header\"}\n";

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
        let protocol = match raw.protocol.as_deref() {
            None | Some("weir") => Protocol::Weir,
            Some("optimizely-agent") => Protocol::OptimizelyAgent,
            Some(other) => {
                errors.push(
                    join(path, "protocol"),
                    format!("\"{other}\" is not a protocol: use \"weir\" or \"optimizely-agent\""),
                );
                Protocol::Weir
            }
        };
        let bearer_token =
            BearerToken::resolve(raw.bearer_token.clone(), raw.bearer_token_file.as_deref(), path, errors);
        let replay = raw.replay.as_ref().and_then(|value| {
            let at = join(path, "replay");
            let stream = value.get("stream").and_then(Value::as_str).map(str::to_owned);
            report_unknown_keys(value, &["stream"], &at, errors);
            let connection = parse_connection(value, &at, &|name| std::env::var(name).ok(), errors);
            if stream.is_none() && protocol == Protocol::Weir {
                errors.push(join(&at, "stream"), "the stream to replay missed entries from");
                return None;
            }
            Some(Replay {
                connection: connection?,
                stream,
            })
        });
        let queue = raw.client_queue.unwrap_or(1024).max(1);
        let (frames, _) = broadcast::channel(queue);
        Some(SseDestination {
            hub: Arc::new(Hub {
                path: endpoint,
                protocol,
                listen: raw.listen.clone(),
                heartbeat: Duration::from_millis(raw.heartbeat.unwrap_or(15_000).max(10)),
                bearer_token,
                replay,
                frames,
                capacity: queue,
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
        let id = input
            .event
            .origin()
            .map_or(input.event.id(), |origin| origin.id.as_str());
        if self.hub.protocol == Protocol::OptimizelyAgent {
            let Some(kind) = optimizely::notification_type(input.event.name()) else {
                return Ok(Rendered::Skip(
                    "not an Optimizely notification (an event named `notification <type>`)".into(),
                ));
            };
            let tree = input.event.tree();
            let Some(sdk_key) = tree.pointer("/custom/sdkKey").and_then(Value::as_str) else {
                return Ok(Rendered::Skip(
                    "no custom.sdkKey: Agent's clients ask for one SDK key's notifications".into(),
                ));
            };
            let message = match input.data {
                Some(Value::Object(data)) if !data.is_empty() => crate::json::to_go_vec(&Value::Object(data.clone())),
                _ => crate::json::to_go_vec(tree.get("data").unwrap_or(&Value::Null)),
            };
            return Ok(Rendered::Send(Arc::new(agent_frame(id, kind, sdk_key, &message))));
        }
        let data = match input.data {
            Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(&Value::Object(data.clone())),
            _ => input.event.to_json(),
        };
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

/// Agent's `getFilter`: every `filter` value split on `,`; the known notification types kept
/// (untrimmed, as Agent compares them), the rest ignored; no `filter` at all means every type,
/// while filters that are all unknown mean none.
fn agent_filters(query: Option<&str>) -> HashSet<String> {
    let given: Vec<String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "filter")
        .map(|(_, value)| value.into_owned())
        .collect();
    if given.is_empty() {
        return optimizely::TYPES.iter().map(|kind| kind.to_string()).collect();
    }
    given
        .iter()
        .flat_map(|value| value.split(','))
        .filter(|kind| optimizely::TYPES.contains(kind))
        .map(str::to_owned)
        .collect()
}

/// What one client asked for.
struct Wanted {
    /// Frame names (event names, or Agent's types) it wants; `all`: any.
    names: HashSet<String>,
    all: bool,
    /// Agent mode: the SDK key it asked for.
    sdk_key: Option<String>,
    /// Agent's `raw`: bare JSON lines instead of SSE frames.
    raw: bool,
}

impl Wanted {
    fn accepts(&self, frame: &Frame) -> bool {
        frame.sdk_key == self.sdk_key && (self.all || self.names.contains(&frame.name))
    }

    fn bytes(&self, frame: &Frame) -> Bytes {
        if self.raw {
            frame.raw.clone()
        } else {
            frame.bytes.clone()
        }
    }
}

/// Stream ids compare by (ms, sequence); `None` for anything else.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The frame of a stream entry read back for a replay: weir's `event` field, or (Agent mode)
/// Agent's `data` payload for `sdk_key`.
fn replayed_frame(id: &str, fields: &[redis::Value], sdk_key: Option<&str>) -> Option<Frame> {
    let field = |wanted: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().and_then(as_text).as_deref() == Some(wanted))
            .and_then(|pair| pair.get(1).and_then(as_text))
    };
    match sdk_key {
        Some(sdk_key) => {
            let payload: Value = serde_json::from_str(&field("data")?).ok()?;
            let kind = payload.get("type")?.as_str()?;
            let message = crate::json::to_go_vec(payload.get("message")?);
            Some(agent_frame(id, kind, sdk_key, &message))
        }
        None => {
            // weir's (and walkerOS's) `event` field: its JSON is the frame's data.
            let event = field("event")?;
            let name = serde_json::from_str::<Value>(&event)
                .ok()
                .and_then(|value| value.get("name").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            Some(frame(id, &name, event.as_bytes()))
        }
    }
}

/// Frames of the entries after `last` in `stream`, oldest first.
async fn missed(replay: &Replay, stream: &str, last: &str, sdk_key: Option<&str>) -> redis::RedisResult<Vec<Frame>> {
    let mut connection = replay.connection.connect_first().await?;
    let mut frames = Vec::new();
    let mut start = format!("({last}");
    loop {
        let page: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(stream)
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
            frames.extend(replayed_frame(&id, fields, sdk_key));
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
        // Counted up and down, never set: two clients connecting at once would set the
        // gauge from values read in either order.
        metrics::gauge!("weir_sse_clients", "path" => self.0.path.clone()).decrement(1.0);
    }
}

/// Moves frames from the hub's ring into one client's queue until the client is gone or too
/// slow (its queue full, or it fell off the ring).
async fn forward(
    hub: Arc<Hub>,
    mut live: broadcast::Receiver<Arc<Frame>>,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    wanted: Wanted,
    replayed_up_to: Option<(u64, u64)>,
    hangup: Option<crate::delivery::Hangup>,
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
        if repeat || !wanted.accepts(&frame) {
            continue;
        }
        match queue.try_send(wanted.bytes(&frame)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => break,
        }
    }
    metrics::counter!("weir_sse_clients_dropped_total", "path" => hub.path.clone()).increment(1);
    tracing::warn!("SSE client too slow: disconnected (it can resume with Last-Event-ID)");
    // Close its connection now: a client that stopped reading would otherwise hold what is
    // buffered for it (and its socket) for as long as it stays connected.
    if let Some(hangup) = hangup {
        hangup.0.cancel();
    }
}

/// What a request asks for, by the hub's protocol; `None` in Agent mode when it names no SDK
/// key.
fn wanted(hub: &Hub, headers: &HeaderMap, query: Option<&str>) -> Option<Wanted> {
    if hub.protocol == Protocol::Weir {
        let names = filters(query);
        return Some(Wanted {
            all: names.is_empty(),
            names,
            sdk_key: None,
            raw: false,
        });
    }
    let from_query = || {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(key, _)| key == "sdkKey")
            .map(|(_, value)| value.into_owned())
    };
    let given = headers
        .get("x-optimizely-sdk-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(from_query)
        .unwrap_or_default();
    // `sdkKey:apiKey`: the part before the first `:`.
    let sdk_key = given.split(':').next().unwrap_or_default().to_owned();
    if sdk_key.is_empty() {
        return None;
    }
    let raw = form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(key, _)| key == "raw");
    Some(Wanted {
        names: agent_filters(query),
        all: false,
        sdk_key: Some(sdk_key),
        raw,
    })
}

async fn events(
    State(hub): State<Arc<Hub>>,
    hangup: Option<axum::Extension<crate::delivery::Hangup>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
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
    let Some(wanted) = wanted(&hub, &headers, query.as_deref()) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            MISSING_SDK_KEY,
        )
            .into_response();
    };
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
        let sdk_key = wanted.sdk_key.as_deref();
        let stream = match (&replay.stream, sdk_key) {
            (Some(stream), _) => stream.clone(),
            (None, Some(sdk_key)) => optimizely::stream_for(sdk_key),
            (None, None) => unreachable!("settings: weir's replay names its stream"),
        };
        match missed(replay, &stream, last, sdk_key).await {
            Ok(frames) => {
                for missed in frames {
                    if let Some(id) = stream_id(&missed.id) {
                        replayed_up_to = replayed_up_to.max(Some(id));
                    }
                    if wanted.accepts(&missed) {
                        backlog.push(wanted.bytes(&missed));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot replay missed events; the client continues live");
            }
        }
    }
    metrics::gauge!("weir_sse_clients", "path" => hub.path.clone()).increment(1.0);
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
    // Raw lines are not SSE: a comment would be a line of garbage to a JSON-lines reader.
    let heartbeats = !wanted.raw;
    let hangup = hangup.map(|axum::Extension(hangup)| hangup);
    tokio::spawn(forward(hub.clone(), live, queue, wanted, replayed_up_to, hangup));
    let mut heartbeat = tokio::time::interval(hub.heartbeat);
    heartbeat.tick().await;
    let stream = futures_util::stream::unfold(
        (queued, heartbeat, guard),
        move |(mut queued, mut heartbeat, guard)| async move {
            let bytes = tokio::select! {
                received = queued.recv() => received?,
                _ = heartbeat.tick(), if heartbeats => Bytes::from_static(b": heartbeat\n\n"),
            };
            // Whatever else is queued goes in the same write: under load one write carries
            // many frames instead of one system call each.
            let mut more = queued.try_recv().ok();
            if more.is_none() {
                return Some((Ok::<Bytes, std::io::Error>(bytes), (queued, heartbeat, guard)));
            }
            // Sized to what it carries: a client that stopped reading holds its last write
            // for as long as it stays connected.
            let mut frames = vec![bytes];
            let mut size = frames[0].len();
            while let Some(frame) = more.take() {
                size += frame.len();
                frames.push(frame);
                if size < COALESCE_BYTES {
                    more = queued.try_recv().ok();
                }
            }
            let mut joined = Vec::with_capacity(size);
            for frame in &frames {
                joined.extend_from_slice(frame);
            }
            Some((Ok(Bytes::from(joined)), (queued, heartbeat, guard)))
        },
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if hub.protocol == Protocol::OptimizelyAgent {
        // Agent's third header.
        response
            .headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("keep-alive"));
    }
    response
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

    /// Agent's `getFilter` (`pkg/handlers/notification.go`).
    #[test]
    fn agent_filters_are_agent_s() {
        let set = |kinds: &[&str]| kinds.iter().map(|k| k.to_string()).collect::<HashSet<String>>();
        assert_eq!(
            agent_filters(None),
            set(&["decision", "track", "project_config_update"])
        );
        assert_eq!(
            agent_filters(Some("raw")),
            set(&["decision", "track", "project_config_update"])
        );
        assert_eq!(
            agent_filters(Some("filter=track,bogus&filter=decision")),
            set(&["track", "decision"])
        );
        // Given, but none known: nothing (Agent does not fall back to all).
        assert_eq!(agent_filters(Some("filter=bogus")), set(&[]));
        // Untrimmed, as Agent compares them.
        assert_eq!(agent_filters(Some("filter=track,%20decision")), set(&["track"]));
    }

    #[test]
    fn agent_frames_carry_the_message_alone() {
        let frame = agent_frame("5-0", "track", "key", br#"{"a":1}"#);
        assert_eq!(&frame.bytes[..], b"id: 5-0\ndata: {\"a\":1}\n\n");
        assert_eq!(&frame.raw[..], b"{\"a\":1}\n");
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(stream_id("10-0") > stream_id("9-5"));
        assert_eq!(stream_id("abc"), None);
    }
}
