//! `sse`: a Server-Sent-Events hub (`GET /v1/notifications/event-stream` by default), the
//! fan-out Optimizely Agent's notifications endpoint offers, made reliable (Optimizely
//! Agent's `pkg/handlers/notification.go`). It is served on every HTTP source's listener, or
//! on its own `listen` address; the assembly binds the listeners.
//!
//! Each event is rendered once into its frame — `id:` (the stream entry id when a stream
//! source read it, else the event id), `event:` (the event name), `data:` (the event JSON, or
//! the mapped `data`). The hub fans a delivered batch out itself: its frames are joined into
//! one buffer once, shared by every client that takes them all, and pushed into each client's
//! queue — one push, and at most one wake-up of the client's connection, per client per batch
//! (a task per client moving frames one by one cost two wake-ups per frame per client). A
//! client with more than `clientQueue` frames still queued is too slow: it is disconnected
//! (counted) at that push, never slowing the others. `?filter=a,b` (or repeated) keeps only those event
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

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
    /// The connected clients.
    clients: Mutex<Vec<Arc<Client>>>,
    /// Frames a client may have queued (`clientQueue`).
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
        Some(SseDestination {
            hub: Arc::new(Hub {
                path: endpoint,
                protocol,
                listen: raw.listen.clone(),
                heartbeat: Duration::from_millis(raw.heartbeat.unwrap_or(15_000).max(10)),
                bearer_token,
                replay,
                clients: Mutex::new(Vec::new()),
                capacity: queue,
                closed: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            // A batch goes into every client's queue at once: a quarter of the queue leaves
            // clients room to keep up between batches.
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
        self.hub.fan_out(batch);
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, _error: &SseError) -> ErrorClass {
        ErrorClass::Fatal
    }

    async fn shutdown(&self) -> Result<(), SseError> {
        self.hub.close();
        Ok(())
    }

    fn closing(&self) {
        self.hub.close();
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
    /// Every frame, as it is: the batch's shared buffer will do.
    fn takes_everything(&self) -> bool {
        self.all && self.sdk_key.is_none() && !self.raw
    }

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

/// What a client's connection takes from its queue.
enum Item {
    /// Frames of one batch, joined: (bytes, frames).
    Joined(Bytes, usize),
    /// One frame, pushed while the client's replay runs: its connection skips it if the
    /// replay already sent it.
    Frame(Arc<Frame>),
}

/// A connected client, as the hub pushes to it.
struct Client {
    wanted: Wanted,
    queue: tokio::sync::mpsc::UnboundedSender<Item>,
    /// Frames pushed and not yet taken by its connection: past the hub's `capacity` the
    /// client is too slow.
    queued: AtomicUsize,
    /// Its `Last-Event-ID` replay is still being read: frames go to it one by one.
    replaying: AtomicBool,
    /// The last stream id its replay sent (set before `replaying` is cleared): live frames
    /// up to it are repeats.
    replayed_up_to: Mutex<Option<(u64, u64)>>,
    hangup: Option<crate::delivery::Hangup>,
    /// Cancelled when it is cut off or the hub closes (a child of the hub's `closed`): its
    /// connection writes what is queued, then ends.
    ended: tokio_util::sync::CancellationToken,
}

/// Whether a live `frame` is one a client's replay, which went up to `up_to`, already sent.
fn replayed(up_to: Option<(u64, u64)>, frame: &Frame) -> bool {
    up_to.is_some_and(|up_to| stream_id(&frame.id).is_some_and(|id| id <= up_to))
}

/// The frames of `frames`, joined into one buffer.
fn joined<'a>(frames: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut joined = Vec::with_capacity(frames.clone().map(Bytes::len).sum());
    for bytes in frames {
        joined.extend_from_slice(bytes);
    }
    Bytes::from(joined)
}

impl Hub {
    /// Pushes `batch` into every client's queue, each client's frames as one item; cuts off
    /// the clients whose queues would pass `capacity`.
    fn fan_out(&self, batch: &[&Arc<Frame>]) {
        let clients = self.clients.lock().expect("sse lock").clone();
        if clients.is_empty() || batch.is_empty() {
            return;
        }
        // The batch's frames joined once, for every client that takes them all.
        let mut shared: Option<Bytes> = None;
        // The oldest stream id in the batch: a client whose replay went past it gets the
        // batch filtered.
        let oldest = batch.iter().filter_map(|frame| stream_id(&frame.id)).min();
        let mut slow = Vec::new();
        for client in &clients {
            let replaying = client.replaying.load(Ordering::Acquire);
            let up_to = *client.replayed_up_to.lock().expect("sse lock");
            let mut items = Vec::new();
            if replaying {
                items.extend(
                    batch
                        .iter()
                        .filter(|frame| client.wanted.accepts(frame))
                        .map(|frame| (Item::Frame(Arc::clone(frame)), 1)),
                );
            } else if client.wanted.takes_everything() && up_to.is_none_or(|up_to| oldest.is_none_or(|o| o > up_to)) {
                let bytes = shared.get_or_insert_with(|| joined(batch.iter().map(|frame| &frame.bytes)));
                items.push((Item::Joined(bytes.clone(), batch.len()), batch.len()));
            } else {
                let taken: Vec<Bytes> = batch
                    .iter()
                    .filter(|frame| client.wanted.accepts(frame) && !replayed(up_to, frame))
                    .map(|frame| client.wanted.bytes(frame))
                    .collect();
                if !taken.is_empty() {
                    items.push((Item::Joined(joined(taken.iter()), taken.len()), taken.len()));
                }
            }
            let count: usize = items.iter().map(|(_, count)| count).sum();
            if count == 0 {
                continue;
            }
            if client.queued.fetch_add(count, Ordering::AcqRel) + count > self.capacity {
                slow.push(client.clone());
                continue;
            }
            for (item, _) in items {
                let _ = client.queue.send(item);
            }
        }
        for client in slow {
            self.cut_off(&client);
        }
    }

    /// A client too slow to keep up: taken out of the fan-out and its connection closed. It
    /// can resume with `Last-Event-ID`.
    fn cut_off(&self, client: &Arc<Client>) {
        if !self.remove(client) {
            return;
        }
        client.ended.cancel();
        metrics::counter!("weir_sse_clients_dropped_total", "path" => self.path.clone()).increment(1);
        tracing::warn!("SSE client too slow: disconnected (it can resume with Last-Event-ID)");
        // Close its connection now: a client that stopped reading would otherwise hold what is
        // buffered for it (and its socket) for as long as it stays connected.
        if let Some(hangup) = &client.hangup {
            hangup.0.cancel();
        }
    }

    /// Takes `client` out of the fan-out; whether it was in it.
    fn remove(&self, client: &Arc<Client>) -> bool {
        let mut clients = self.clients.lock().expect("sse lock");
        let before = clients.len();
        clients.retain(|other| !Arc::ptr_eq(other, client));
        clients.len() != before
    }

    /// Every client's stream ends (once it has what is queued for it); a client that
    /// connects afterwards ends at once.
    fn close(&self) {
        self.closed.cancel();
        self.clients.lock().expect("sse lock").clear();
    }
}

/// Counts a connected client for as long as it lives, and takes it out of the fan-out when
/// its connection ends.
struct ClientGuard(Arc<Hub>, Arc<Client>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.remove(&self.1);
        // Counted up and down, never set: two clients connecting at once would set the
        // gauge from values read in either order.
        metrics::gauge!("weir_sse_clients", "path" => self.0.path.clone()).decrement(1.0);
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
    // Join the fan-out before replaying, so nothing published meanwhile is missed; live
    // frames the replay already sent are skipped by id.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let replaying = hub.replay.is_some() && last_event_id.is_some();
    let (queue, queued) = tokio::sync::mpsc::unbounded_channel::<Item>();
    let client = Arc::new(Client {
        wanted,
        queue,
        queued: AtomicUsize::new(0),
        replaying: AtomicBool::new(replaying),
        replayed_up_to: Mutex::new(last_event_id.as_deref().and_then(stream_id)),
        hangup: hangup.map(|axum::Extension(hangup)| hangup),
        ended: hub.closed.child_token(),
    });
    hub.clients.lock().expect("sse lock").push(client.clone());
    metrics::gauge!("weir_sse_clients", "path" => hub.path.clone()).increment(1.0);
    let guard = ClientGuard(hub.clone(), client.clone());
    let mut backlog: Vec<Bytes> = Vec::new();
    // More missed frames than `clientQueue`: the connection ends after that many, and the
    // client resumes from the last one it got (its `Last-Event-ID`) — a page at a time, no
    // gap.
    let mut truncated = false;
    if let (Some(replay), Some(last)) = (&hub.replay, &last_event_id) {
        let sdk_key = client.wanted.sdk_key.as_deref();
        let stream = match (&replay.stream, sdk_key) {
            (Some(stream), _) => stream.clone(),
            (None, Some(sdk_key)) => optimizely::stream_for(sdk_key),
            (None, None) => unreachable!("settings: weir's replay names its stream"),
        };
        match missed(replay, &stream, last, sdk_key).await {
            Ok(frames) => {
                let mut up_to = *client.replayed_up_to.lock().expect("sse lock");
                for missed in frames {
                    if client.wanted.accepts(&missed) {
                        if backlog.len() == hub.capacity {
                            truncated = true;
                            break;
                        }
                        backlog.push(client.wanted.bytes(&missed));
                    }
                    if let Some(id) = stream_id(&missed.id) {
                        up_to = up_to.max(Some(id));
                    }
                }
                *client.replayed_up_to.lock().expect("sse lock") = up_to;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot replay missed events; the client continues live");
            }
        }
        client.replaying.store(false, Ordering::Release);
        if truncated {
            hub.remove(&client);
        }
    }
    let replayed_up_to = *client.replayed_up_to.lock().expect("sse lock");
    // Raw lines are not SSE: a comment would be a line of garbage to a JSON-lines reader.
    let heartbeats = !client.wanted.raw;
    let mut heartbeat = tokio::time::interval(hub.heartbeat);
    heartbeat.tick().await;
    // What a client's connection writes next: its replay, then whatever its queue holds —
    // frames pushed during the replay that it did not already send, then joined batches.
    let next = move |item: Item, client: &Client| -> Option<Bytes> {
        match item {
            Item::Joined(bytes, count) => {
                client.queued.fetch_sub(count, Ordering::AcqRel);
                Some(bytes)
            }
            Item::Frame(frame) => {
                client.queued.fetch_sub(1, Ordering::AcqRel);
                (!replayed(replayed_up_to, &frame)).then(|| client.wanted.bytes(&frame))
            }
        }
    };
    let ended = client.ended.clone();
    let stream = futures_util::stream::unfold(
        (backlog.into_iter(), queued, heartbeat, guard),
        move |(mut backlog, mut queued, mut heartbeat, guard)| {
            let ended = ended.clone();
            async move {
                let client = guard.1.clone();
                let mut frames: Vec<Bytes> = backlog.next().into_iter().collect();
                if frames.is_empty() {
                    if truncated {
                        return None;
                    }
                    let first = loop {
                        let item = tokio::select! {
                            biased;
                            received = queued.recv() => received?,
                            // Cut off, or the hub closed: what is queued still goes out.
                            () = ended.cancelled() => queued.try_recv().ok()?,
                            _ = heartbeat.tick(), if heartbeats => {
                                break Bytes::from_static(b": heartbeat\n\n");
                            }
                        };
                        if let Some(bytes) = next(item, &client) {
                            break bytes;
                        }
                    };
                    frames.push(first);
                }
                // Whatever else is ready goes in the same write, up to about COALESCE_BYTES:
                // under load one write carries many frames instead of one system call each.
                // Sized to what it carries: a client that stopped reading holds its last
                // write for as long as it stays connected.
                let mut size = frames[0].len();
                while size < COALESCE_BYTES {
                    let more = match backlog.next() {
                        Some(bytes) => Some(bytes),
                        None if truncated => break,
                        None => match queued.try_recv() {
                            Ok(item) => next(item, &client),
                            Err(_) => break,
                        },
                    };
                    if let Some(bytes) = more {
                        size += bytes.len();
                        frames.push(bytes);
                    }
                }
                let bytes = if frames.len() == 1 {
                    frames.pop().expect("one frame")
                } else {
                    joined(frames.iter())
                };
                Some((Ok::<Bytes, std::io::Error>(bytes), (backlog, queued, heartbeat, guard)))
            }
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
