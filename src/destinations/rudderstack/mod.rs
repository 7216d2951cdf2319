//! `rudderstack`: events as Segment-spec calls to RudderStack's `/v1/batch` HTTP API, the
//! calls walkerOS's RudderStack destination makes (walkerOS `packages/server/destinations/rudderstack/src/push.ts`), written as RudderStack's
//! official Node SDK writes them on the wire — but delivered for real: batched, retried,
//! dead-lettered, acknowledged only when the data plane answered 2xx.
//!
//! Each event is rendered once, on the request path, into its messages (JSON text without
//! `sentAt`, which is spliced in at send time). identify and group are de-duplicated per
//! identity (a bounded LRU of the last traits sent per user, and per user the last group),
//! decided when a batch is first sent — in queue order with the default concurrency of 1 —
//! and kept for that batch's retries.
//! A batch that fails forgets its identities, so the next event for them identifies again:
//! a repeated identify is harmless, a lost one is not.
//!
//! `messageId` is a UUID (v5) of the event id and the call type: a retried or replayed event
//! keeps its ids, and the data plane can drop the duplicate.

pub mod calls;
mod gzip;
pub mod settings;

use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub use settings::{RudderRuleSettings, RudderSettings};

use self::calls::{Call, CallKind, NoCalls, PushInput};
use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};

/// Identities whose last identify / group weir remembers.
const DEDUP_CAPACITY: usize = 100_000;

/// A body is `{"batch":[` (10 bytes), the messages separated by commas, then
/// `],"timestamp":"…","sentAt":"…"}` (77 bytes with two 24-byte times). [`wire_size`]
/// counts a comma after every message, one more than the body has, so a body is exactly
/// 10 + 77 − 1 = 86 bytes plus the sum of its wires' sizes.
///
/// [`wire_size`]: Destination::wire_size
const BODY_OVERHEAD: usize = 86;

/// How much longer a message gets in the body: its closing `}` is replaced by
/// `,"sentAt":"2026-11-24T10:00:00.000Z"}` (37 bytes), net 36.
const SENT_AT_LENGTH: usize = 36;

/// Longest piece of an error response kept for the dead-letter record.
const ERROR_BODY_LIMIT: usize = 1024;

/// The namespace of weir's message ids.
/// The start of every message's `context`: the library that sent it (the SDK names itself).
const LIBRARY_CONTEXT: &str = concat!(
    ",\"context\":{\"library\":{\"name\":\"weir\",\"version\":\"",
    env!("CARGO_PKG_VERSION"),
    "\"}"
);

static MESSAGE_ID_NAMESPACE: LazyLock<uuid::Uuid> =
    LazyLock::new(|| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"https://weir.dev/rudderstack/messageId"));

/// One message, rendered.
struct Message {
    kind: CallKind,
    /// The SDK's message JSON without `sentAt`; ends with `}`.
    json: Vec<u8>,
    dedup: Option<calls::Dedup>,
}

/// One event's messages.
pub struct RudderWire {
    messages: Vec<Message>,
    /// Which messages go out (bit per message), decided at the first send of the batch.
    sent: OnceLock<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RudderError {
    #[error("the data plane answered {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the data plane: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("cannot compress the batch: {0}")]
    Compress(#[source] flate2::CompressError),
}

/// Last identify traits per identity, and last group per identity.
struct Dedup {
    identify: lru::LruCache<u64, u64>,
    group: lru::LruCache<u64, u64>,
}

pub struct RudderStackDestination {
    settings: RudderSettings,
    client: reqwest::Client,
    dedup: Mutex<Dedup>,
    /// The event members a push outside any rule reads (`None`: the whole event).
    members: Option<Vec<String>>,
    /// `integrations` as JSON text, written into every message.
    integrations_json: Option<Vec<u8>>,
    gzip: gzip::Gzip,
    /// For rate-limited warnings about events without identity: when the last was logged
    /// (ms since the epoch), and how many were skipped since.
    skipped_logged_at: AtomicU64,
    skipped_since_log: AtomicU64,
}

impl RudderStackDestination {
    pub fn new(settings: RudderSettings) -> Result<RudderStackDestination, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            // A followed 301/302 turns the POST into a bodyless GET whose 2xx would
            // acknowledge a batch that never arrived: a redirect is an answer, not a detour.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let capacity = NonZeroUsize::new(DEDUP_CAPACITY).expect("capacity is not zero");
        Ok(RudderStackDestination {
            members: settings.event_members(None),
            integrations_json: settings
                .integrations
                .as_ref()
                .map(|integrations| crate::json::to_vec(&Value::Object(integrations.clone()))),
            settings,
            client,
            dedup: Mutex::new(Dedup {
                identify: lru::LruCache::new(capacity),
                group: lru::LruCache::new(capacity),
            }),
            gzip: gzip::Gzip::default(),
            skipped_logged_at: AtomicU64::new(0),
            skipped_since_log: AtomicU64::new(0),
        })
    }

    /// The SDK's message for one call: the call's parameters, `integrations`, `context`
    /// (library, and an identify's traits), `type`, `channel`, `originalTimestamp`,
    /// `messageId`; `sentAt` follows at send time.
    fn message(&self, call: Call, event_id: &str, original_timestamp: &str) -> Message {
        let Call { kind, params, dedup } = call;
        // The parameters are written as they are, then the fields every message has, in the
        // SDK's order, straight into the text: none of them can be among the parameters.
        // An identify's traits go into its context too.
        let traits = match kind {
            CallKind::Identify => params.get("traits").map(crate::json::to_vec),
            _ => None,
        };
        let mut json = crate::json::to_vec(&Value::Object(params));
        json.pop(); // the closing brace
        if let Some(integrations) = &self.integrations_json {
            json.extend_from_slice(b",\"integrations\":");
            json.extend_from_slice(integrations);
        }
        json.extend_from_slice(LIBRARY_CONTEXT.as_bytes());
        if let Some(text) = &traits {
            json.extend_from_slice(b",\"traits\":");
            json.extend_from_slice(text);
        }
        let id = uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, format!("{event_id}/{}", kind.name()).as_bytes());
        let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        write!(
            json,
            "}},\"type\":\"{}\",\"channel\":\"server\",\"originalTimestamp\":\"{original_timestamp}\",\"messageId\":\"{}\"}}",
            kind.name(),
            id.hyphenated().encode_lower(&mut id_text),
        )
        .expect("writing to a Vec cannot fail");
        Message { kind, json, dedup }
    }

    /// Decides which of a wire's messages go out: identify and group only when their traits
    /// (or group) changed for that identity since the last one sent.
    fn decide(&self, wire: &RudderWire) -> u64 {
        *wire.sent.get_or_init(|| {
            let mut dedup = self.dedup.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut mask = 0u64;
            for (index, message) in wire.messages.iter().enumerate() {
                let fire = match (message.kind, message.dedup) {
                    (CallKind::Identify, Some(key)) => remember(&mut dedup.identify, key),
                    (CallKind::Group, Some(key)) => remember(&mut dedup.group, key),
                    _ => true,
                };
                if fire {
                    mask |= 1 << index;
                }
            }
            mask
        })
    }

    /// After a failed send: forget the identities of the batch's identify and group calls.
    fn forget(&self, batch: &[&RudderWire]) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for message in batch.iter().flat_map(|wire| &wire.messages) {
            match (message.kind, message.dedup) {
                (CallKind::Identify, Some(key)) => {
                    dedup.identify.pop(&key.identity);
                }
                (CallKind::Group, Some(key)) => {
                    dedup.group.pop(&key.identity);
                }
                _ => {}
            }
        }
    }

    /// The request body: `{"batch":[…],"timestamp":…,"sentAt":…}`, each message with
    /// `sentAt`. `None` when de-duplication left nothing to send.
    fn body(&self, batch: &[&RudderWire], sent_at: &str) -> Option<Vec<u8>> {
        let capacity = batch.iter().map(|wire| self.wire_size(wire)).sum::<usize>() + BODY_OVERHEAD;
        let mut body = Vec::with_capacity(capacity);
        body.extend_from_slice(b"{\"batch\":[");
        let mut count = 0;
        for wire in batch {
            let mask = self.decide(wire);
            for (index, message) in wire.messages.iter().enumerate() {
                if mask & (1 << index) == 0 {
                    continue;
                }
                if count > 0 {
                    body.push(b',');
                }
                count += 1;
                body.extend_from_slice(&message.json[..message.json.len() - 1]);
                write!(body, ",\"sentAt\":\"{sent_at}\"}}").expect("writing to a Vec cannot fail");
            }
        }
        if count == 0 {
            return None;
        }
        write!(body, "],\"timestamp\":\"{sent_at}\",\"sentAt\":\"{sent_at}\"}}").expect("writing to a Vec cannot fail");
        Some(body)
    }

    /// walkerOS warns for every event without identity; weir counts them all (as skipped)
    /// and logs at most one line every ten seconds.
    fn warn_no_identity(&self) {
        let skipped = self.skipped_since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms() as u64;
        let last = self.skipped_logged_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .skipped_logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.skipped_since_log.fetch_sub(skipped, Ordering::Relaxed);
            tracing::warn!(
                events = skipped,
                "RudderStack requires userId or anonymousId; skipping event (check the userId / anonymousId paths)"
            );
        }
    }
}

/// Forgets a batch's identities when dropped before its send was confirmed.
struct ForgetUnlessConfirmed<'a> {
    destination: &'a RudderStackDestination,
    batch: &'a [&'a RudderWire],
    confirmed: bool,
}

impl Drop for ForgetUnlessConfirmed<'_> {
    fn drop(&mut self) {
        if !self.confirmed {
            self.destination.forget(self.batch);
        }
    }
}

/// Whether to send, and remembers what was sent: true when `key.identity` has no entry or
/// a different value.
fn remember(cache: &mut lru::LruCache<u64, u64>, key: calls::Dedup) -> bool {
    if cache.get(&key.identity) == Some(&key.value) {
        return false;
    }
    cache.put(key.identity, key.value);
    true
}

fn now_ms() -> f64 {
    crate::event::now_ms() as f64
}

/// `Retry-After`: seconds, or an HTTP date (proxies in front of a data plane send either).
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    match httpdate::parse_http_date(text) {
        Ok(date) => Some(date.duration_since(SystemTime::now()).unwrap_or_default()),
        Err(_) => {
            tracing::debug!(retry_after = %text, "unreadable Retry-After; backing off as usual");
            None
        }
    }
}

impl Destination for RudderStackDestination {
    type RuleSettings = RudderRuleSettings;
    type Wire = RudderWire;
    type Error = RudderError;
    const KIND: &'static str = "rudderstack";
    const PACKAGE: Option<&'static str> = Some("@walkeros/server-destination-rudderstack");

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let settings = RudderSettings::parse(settings, path, &|name| std::env::var(name).ok(), errors)?;
        match RudderStackDestination::new(settings) {
            Ok(destination) => Some(destination),
            Err(error) => {
                errors.push(path, format!("cannot set up the HTTP client: {error}"));
                None
            }
        }
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: self.settings.flush_at,
            batch_bytes: Some(self.settings.max_queue_size.saturating_sub(BODY_OVERHEAD).max(1)),
            // One request at a time keeps each user's calls in order, as one SDK instance
            // sends them; `concurrency` raises it.
            concurrency: 1,
            batch_age: Some(self.settings.flush_interval),
            max_retries: Some(self.settings.retry_count),
            queue_max: Some(self.settings.max_internal_queue_size),
            attempt_timeout: None,
        }
    }

    async fn connect(&self) -> Result<(), RudderError> {
        // The batch API has no cheap probe that needs no events; the first batch checks the
        // write key (a 401 dead-letters with the data plane's answer).
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, RudderRuleSettings>) -> Result<Rendered<RudderWire>, RenderError> {
        if !self.settings.enable {
            return Ok(Rendered::Skip("enable is false: nothing is sent to RudderStack".into()));
        }
        let now = now_ms();
        let context = input.value_context();
        // Only the members the call algorithm reads are parsed, when its specs say which:
        // building the whole event as a tree was a quarter of this destination's time.
        let members = match input.rule_settings {
            Some(rule) => rule.members.get_or_init(|| self.settings.event_members(Some(rule))),
            None => &self.members,
        };
        let event = match members {
            Some(members) => input.event.subtree(members),
            None => std::borrow::Cow::Borrowed(input.event.tree()),
        };
        let push = PushInput {
            event: &event,
            data: input.data,
            rule: input.rule_settings,
            silent: input.silent,
            context: &context,
            now_ms: now,
        };
        let calls = match calls::calls(&self.settings, &push)? {
            Ok(calls) => calls,
            Err(NoCalls::NoIdentity) => {
                self.warn_no_identity();
                return Ok(Rendered::Skip("RudderStack requires userId or anonymousId".into()));
            }
            Err(NoCalls::Nothing) => {
                return Ok(Rendered::Skip(
                    "the matching rule is silent and makes no identify, group, page, screen or alias call".into(),
                ));
            }
        };
        let original_timestamp = calls::iso_time(now)?;
        let messages: Vec<Message> = calls
            .into_iter()
            .map(|call| self.message(call, input.event.id(), &original_timestamp))
            .collect();
        let wire = RudderWire {
            messages,
            sent: OnceLock::new(),
        };
        let size = self.wire_size(&wire);
        if size + BODY_OVERHEAD > self.settings.max_queue_size {
            return Err(RenderError::TooLarge {
                size,
                limit: self.settings.max_queue_size,
                setting: "maxQueueSize",
            });
        }
        Ok(Rendered::Send(wire))
    }

    /// The calls `serve` would send for this event: explain renders a file's events in order
    /// on a destination of its own, so deciding here keeps the same per-identity state
    /// `serve` keeps, and a repeated identify or group is listed as de-duplicated instead.
    fn explain(&self, wire: &RudderWire) -> Value {
        let mask = self.decide(wire);
        let (mut calls, mut deduplicated) = (Vec::new(), Vec::new());
        for (index, message) in wire.messages.iter().enumerate() {
            if mask & (1 << index) == 0 {
                deduplicated.push(serde_json::json!({
                    "call": message.kind.name(),
                    "reason": "the same was sent for this identity already",
                }));
                continue;
            }
            calls.push(serde_json::json!({
                "call": message.kind.name(),
                "message": serde_json::from_slice::<Value>(&message.json).unwrap_or(Value::Null),
            }));
        }
        let mut shown = serde_json::json!({
            "endpoint": self.settings.endpoint,
            "gzip": self.settings.gzip,
            "calls": calls,
        });
        if !deduplicated.is_empty() {
            shown["deduplicated"] = Value::Array(deduplicated);
        }
        shown
    }

    fn wire_size(&self, wire: &RudderWire) -> usize {
        wire.messages
            .iter()
            .map(|message| message.json.len() + SENT_AT_LENGTH + 1)
            .sum()
    }

    async fn send(&self, batch: &[&RudderWire]) -> Result<Vec<Result<(), RudderError>>, RudderError> {
        let sent_at = calls::iso_time(now_ms()).unwrap_or_default();
        let Some(body) = self.body(batch, &sent_at) else {
            // Every call was a repeated identify or group: nothing to send, nothing lost.
            return Ok(batch.iter().map(|_| Ok(())).collect());
        };
        // Unless the data plane answers 2xx, the batch's identities are forgotten — also when
        // the attempt is cut off by the delivery timeout, which drops this future mid-way.
        let mut unconfirmed = ForgetUnlessConfirmed {
            destination: self,
            batch,
            confirmed: false,
        };
        self.post(body).await?;
        unconfirmed.confirmed = true;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &RudderError) -> ErrorClass {
        match error {
            RudderError::Status { status, .. } if *status == 429 || *status == 408 || *status >= 500 => {
                ErrorClass::Retryable
            }
            RudderError::Status { .. } => ErrorClass::Fatal,
            RudderError::Transport(error) if error.is_builder() => ErrorClass::Fatal,
            RudderError::Transport(_) => ErrorClass::Retryable,
            RudderError::Compress(_) => ErrorClass::Fatal,
        }
    }

    fn retry_after(&self, error: &RudderError) -> Option<Duration> {
        match error {
            RudderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    async fn shutdown(&self) -> Result<(), RudderError> {
        Ok(())
    }
}

impl RudderStackDestination {
    /// POSTs one body, gzipped when `gzip` is on, with the SDK's headers.
    async fn post(&self, body: Vec<u8>) -> Result<(), RudderError> {
        let request = self
            .client
            .post(&self.settings.endpoint)
            .basic_auth(self.settings.write_key.expose(), None::<&str>);
        let request = if self.settings.gzip {
            let compressed = self.gzip.compress(&body).map_err(RudderError::Compress)?;
            // The Node SDK labels its gzipped JSON this way; the data plane expects it.
            request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(compressed)
        } else {
            request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        };
        let response = request.send().await.map_err(RudderError::Transport)?;
        let status = response.status();
        if status.is_success() {
            // Read the (small) answer so the connection can be reused.
            let _ = response.bytes().await;
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = match (status.is_redirection(), location) {
            (true, Some(location)) => {
                format!("redirected to {location}: set dataPlaneUrl to the address the data plane answers at")
            }
            _ => response.text().await.unwrap_or_default(),
        };
        let mut body: String = text.chars().take(ERROR_BODY_LIMIT).collect();
        if body.len() < text.len() {
            body.push('…');
        }
        Err(RudderError::Status {
            status: status.as_u16(),
            body,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn destination(settings: Value) -> RudderStackDestination {
        let mut errors = ConfigErrors::default();
        let settings = RudderSettings::parse(Some(&settings), "s", &|_| None, &mut errors).expect("valid settings");
        RudderStackDestination::new(settings).unwrap()
    }

    fn wire(destination: &RudderStackDestination, event_id: &str, calls: Vec<Call>) -> RudderWire {
        RudderWire {
            messages: calls
                .into_iter()
                .map(|call| destination.message(call, event_id, "2026-11-24T10:00:00.000Z"))
                .collect(),
            sent: OnceLock::new(),
        }
    }

    fn call(kind: CallKind, user: &str, traits: u64) -> Call {
        let mut params = serde_json::Map::new();
        params.insert("userId".into(), Value::from(user));
        Call {
            kind,
            params,
            dedup: (kind == CallKind::Identify).then_some(calls::Dedup {
                identity: user.len() as u64,
                value: traits,
            }),
        }
    }

    #[test]
    fn a_message_is_its_parameters_then_the_sdks_fields_in_order() {
        let configured = destination(json!({"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:1",
            "integrations": {"All": false, "Amplitude": true}}));
        let mut identify = call(CallKind::Identify, "u1", 7);
        identify
            .params
            .insert("timestamp".into(), json!("2026-12-07T10:00:00.000Z"));
        identify
            .params
            .insert("traits".into(), json!({"email": "a@b.c", "plan": {"tier": 2}}));
        let message = configured.message(identify, "e1", "2026-12-07T10:00:01.000Z");
        let id = uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, b"e1/identify");
        let expected = format!(
            concat!(
                r#"{{"userId":"u1","timestamp":"2026-12-07T10:00:00.000Z","traits":{{"email":"a@b.c","plan":{{"tier":2}}}},"#,
                r#""integrations":{{"All":false,"Amplitude":true}},"#,
                r#""context":{{"library":{{"name":"weir","version":"{}"}},"traits":{{"email":"a@b.c","plan":{{"tier":2}}}}}},"#,
                r#""type":"identify","channel":"server","originalTimestamp":"2026-12-07T10:00:01.000Z","messageId":"{}"}}"#
            ),
            env!("CARGO_PKG_VERSION"),
            id
        );
        assert_eq!(String::from_utf8(message.json).unwrap(), expected);
        // A track has no traits in its context, and no integrations unless configured.
        let plain = destination(json!({"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:1"}));
        let track = plain.message(call(CallKind::Track, "u1", 0), "e1", "2026-12-07T10:00:01.000Z");
        let parsed: Value = serde_json::from_slice(&track.json).unwrap();
        assert_eq!(
            parsed["context"],
            json!({"library": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}})
        );
        assert!(parsed.get("integrations").is_none());
    }

    #[test]
    fn a_body_is_exactly_its_overhead_plus_its_wire_sizes() {
        let destination = destination(json!({"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:1"}));
        let wires = [
            wire(
                &destination,
                "e1",
                vec![call(CallKind::Identify, "u", 1), call(CallKind::Track, "u", 0)],
            ),
            wire(&destination, "e2", vec![call(CallKind::Track, "uu", 0)]),
        ];
        let batch: Vec<&RudderWire> = wires.iter().collect();
        let body = destination.body(&batch, "2026-11-24T10:00:01.000Z").unwrap();
        let sizes: usize = wires.iter().map(|w| destination.wire_size(w)).sum();
        assert_eq!(body.len(), BODY_OVERHEAD + sizes);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["batch"].as_array().unwrap().len(), 3);
        assert_eq!(parsed["batch"][2]["sentAt"], "2026-11-24T10:00:01.000Z");
    }

    #[test]
    fn message_ids_follow_the_event_id_and_the_call() {
        let destination = destination(json!({"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:1"}));
        let id = |event: &str, kind| {
            let message = destination.message(call(kind, "u", 0), event, "2026-11-24T10:00:00.000Z");
            serde_json::from_slice::<Value>(&message.json).unwrap()["messageId"].clone()
        };
        assert_eq!(id("e1", CallKind::Track), id("e1", CallKind::Track));
        assert_ne!(id("e1", CallKind::Track), id("e2", CallKind::Track));
        assert_ne!(id("e1", CallKind::Track), id("e1", CallKind::Identify));
    }

    #[test]
    fn a_decision_holds_for_retries_and_a_failure_forgets_the_identity() {
        let destination = destination(json!({"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:1"}));
        let first = wire(
            &destination,
            "e1",
            vec![call(CallKind::Identify, "u", 7), call(CallKind::Track, "u", 0)],
        );
        assert_eq!(destination.decide(&first), 0b11);
        // Retrying the same batch sends the same messages.
        assert_eq!(destination.decide(&first), 0b11);
        let second = wire(
            &destination,
            "e2",
            vec![call(CallKind::Identify, "u", 7), call(CallKind::Track, "u", 0)],
        );
        assert_eq!(destination.decide(&second), 0b10, "same traits: track only");
        destination.forget(&[&first]);
        let third = wire(&destination, "e3", vec![call(CallKind::Identify, "u", 7)]);
        assert_eq!(
            destination.decide(&third),
            0b1,
            "after a failure the identity identifies again"
        );
        let batch = [&second];
        assert!(destination.body(&batch, "2026-11-24T10:00:01.000Z").is_some());
        let only_repeats = wire(&destination, "e4", vec![call(CallKind::Identify, "u", 7)]);
        assert!(destination.body(&[&only_repeats], "2026-11-24T10:00:01.000Z").is_none());
    }
}
