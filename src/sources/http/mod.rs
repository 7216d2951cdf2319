//! The HTTP source, wire-compatible with walkerOS's express source (`@walkeros/server-source-express`).
//!
//! `POST <path>` takes one event (object), a batch (array, or `{"batch": [...]}`) as JSON,
//! `text/plain` (sendBeacon) or a form body; `GET <path>` takes one event from a
//! bracket-notation query and answers a 1×1 GIF; `OPTIONS` is answered by the CORS policy.
//! Responses have walkerOS's shapes and codes: 200, 207 with per-index errors, 400, 413,
//! 415, plus 401 (bearer token), 503 + `Retry-After` (a destination queue is full) and 500
//! (the event was dead-lettered). With `ack = "delivered"` (weir's default) a request is
//! answered once every destination delivered or dead-lettered its events; with
//! `"received"` once they are queued. Either way the events are validated first, so a
//! client always learns about an invalid event (walkerOS's respond-first mode answers 200
//! and drops it). The process endpoints (`/healthz`, `/readyz`, `/metrics`) and
//! destinations' routes are served beside the collect paths, on a listener the assembly
//! binds.

// Handlers return a ready `Response` as their error: it is what the client gets.
#![allow(clippy::result_large_err)]

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http_body_util::BodyExt;
use metrics::Counter;
use serde_json::value::RawValue;
use serde_json::{Value, json};

mod config;
mod request;

pub use config::{
    AckMode, ConnectionLimits, DEFAULT_LISTEN, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BODY_BYTES, HttpSourceConfig,
};

use super::cors::Cors;
use super::query::parse_query;
use crate::collector::now_ms;
use crate::delivery::ack::{AckSet, EventOutcome};
use crate::event::{Event, Ingest, InvalidEvent};
use crate::runtime::{Refused, Runtime};

/// The 1×1 transparent GIF walkerOS answers pixel requests with (42 bytes).
pub const TRANSPARENT_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x01, 0x44, 0x00, 0x3b,
];

/// A running HTTP source: its settings, the flow it feeds, its counters.
pub struct HttpSource {
    config: HttpSourceConfig,
    runtime: Arc<Runtime>,
    received: Counter,
    rejected: Counter,
}

impl HttpSource {
    pub fn new(config: HttpSourceConfig, runtime: Arc<Runtime>) -> Arc<HttpSource> {
        let label = [("source", config.id.clone())];
        Arc::new(HttpSource {
            received: metrics::counter!("weir_events_received_total", &label),
            rejected: metrics::counter!("weir_events_rejected_total", &label),
            config,
            runtime,
        })
    }

    /// Requests turned away before any event was read, by reason.
    fn requests_rejected(&self, reason: &'static str) -> Counter {
        metrics::counter!("weir_requests_rejected_total", "source" => self.config.id.clone(), "reason" => reason)
    }

    /// The axum router serving this source, with `shared`: the routes every listener of
    /// the process carries (health, metrics, destinations' endpoints), under this source's
    /// CORS headers.
    pub fn router(self: &Arc<Self>, shared: Router) -> Router {
        let mut router = Router::new();
        for collect in &self.config.paths {
            let mut methods: MethodRouter<Arc<HttpSource>> = MethodRouter::new()
                .options(options)
                .head(head_not_allowed)
                .fallback(fallback);
            if collect.post {
                methods = methods.post(post_events);
            }
            if collect.get {
                methods = methods.get(get_pixel);
            }
            router = router.route(&collect.path, methods);
        }
        let router = router.fallback(fallback).with_state(self.clone()).merge(shared);
        // Headers every response carries. With a fixed CORS origin (the default `*`) they
        // are static and a plain response mapper adds them; only an origin list needs the
        // request's `Origin`, and so a middleware.
        if self.config.cors.needs_request_origin() {
            router.layer(middleware::from_fn_with_state(self.clone(), common_headers))
        } else {
            let cors = self.config.cors.clone();
            router.layer(tower::util::MapResponseLayer::new(move |mut response: Response| {
                add_common_headers(&cors, None, response.headers_mut());
                response
            }))
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        self.config
            .bearer_token
            .as_ref()
            .is_none_or(|token| token.accepts(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())))
    }

    /// walkerOS's ingest of a request (`extractIngest`): the `ingest` mapping's result (an
    /// object; anything else counts as nothing) with walkerOS's `_meta`, when the source has
    /// one. The mapping reads Express's
    /// `req` ([`request::request_object`]); its code runs off the async threads.
    fn ingest(&self, parts: &axum::http::request::Parts) -> Option<Arc<Ingest>> {
        let spec = self.config.ingest.as_ref()?;
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0);
        let request = request::request_object(parts, peer, &self.config.trust_proxy);
        let collector = self.runtime.collector();
        let context = crate::mapping::value_context(&request, &collector, &self.config.id);
        let extracted = if crate::code::in_use() {
            crate::delivery::route::off_async_threads(|| spec.value(&request, &context))
        } else {
            spec.value(&request, &context)
        };
        let mut ingest = match extracted {
            Some(Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let mut meta = json!({"hops": 0, "path": [self.config.id]});
        if let Some(trace) = traceparent(&parts.headers) {
            meta["trace"] = Value::from(trace);
            if let Some(parent) = parts.headers.get("traceparent").and_then(|value| value.to_str().ok()) {
                meta["parentEventId"] = Value::from(parent.split('-').nth(2).unwrap_or_default());
            }
        }
        ingest.insert("_meta".into(), meta);
        Some(Arc::new(Ingest::new(Value::Object(ingest))))
    }

    /// Enriches `inputs`, queues the valid ones, and (when asked) waits for their outcomes.
    /// `Err` is a response to send as is (queue full).
    /// `trace` is the request's `traceparent` trace id, which events without `source.trace`
    /// carry.
    async fn process(
        &self,
        inputs: Vec<EventInput<'_>>,
        mode: AckMode,
        trace: Option<&str>,
        ingest: Option<Arc<Ingest>>,
    ) -> Result<Processed, Response> {
        let count = inputs.len();
        self.received.increment(count as u64);
        let mut results: Vec<Result<Arc<Event>, InvalidEvent>> = Vec::with_capacity(count);
        let mut valid = Vec::with_capacity(count);
        let collector = self.runtime.collector();
        for (index, input) in inputs.into_iter().enumerate() {
            let enriched = match input {
                EventInput::Json(text) => collector.enrich_json_traced(text, trace),
                EventInput::Value(value) => collector.enrich_traced(value, trace),
            };
            match enriched {
                Ok(mut event) => {
                    if let Some(ingest) = &ingest {
                        event.set_ingest(ingest.clone());
                    }
                    let event = Arc::new(event);
                    valid.push((index, event.clone()));
                    results.push(Ok(event));
                }
                Err(invalid) => {
                    self.rejected.increment(1);
                    results.push(Err(invalid));
                }
            }
        }
        let outcomes = match mode {
            AckMode::Received => {
                self.runtime
                    .dispatch(&self.config.id, &valid, None)
                    .map_err(|full| unavailable(&full.to_string()))?;
                vec![EventOutcome::default(); count]
            }
            AckMode::Journaled => {
                self.runtime
                    .journal(&self.config.id, &valid, None)
                    .await
                    .map_err(refused)?;
                vec![EventOutcome::default(); count]
            }
            AckMode::Delivered => {
                let (acks, wait) = AckSet::new(count);
                let accepted = self.runtime.journal(&self.config.id, &valid, Some(&acks)).await;
                acks.seal();
                accepted.map_err(refused)?;
                let outcomes = match tokio::time::timeout(self.config.ack_timeout, wait.outcomes()).await {
                    Ok(outcomes) => outcomes,
                    Err(_) => {
                        // Still queued or retrying: it will be delivered or dead-lettered.
                        metrics::counter!("weir_ack_timeouts_total", "source" => self.config.id.clone()).increment(1);
                        return Err(accepted_unconfirmed(&format!(
                            "delivery not confirmed within {} ms; the events stay queued and will be delivered or dead-lettered",
                            self.config.ack_timeout.as_millis()
                        )));
                    }
                };
                if outcomes.iter().any(|outcome| outcome.held && outcome.is_ok()) {
                    return Err(accepted_unconfirmed(
                        "delivery not confirmed before weir stopped; the events are in the journal and are delivered after a restart",
                    ));
                }
                outcomes
            }
        };
        Ok(Processed { results, outcomes })
    }
}

/// Events of one request after processing.
struct Processed {
    results: Vec<Result<Arc<Event>, InvalidEvent>>,
    outcomes: Vec<EventOutcome>,
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// `{"success":false,"error":...}` without a timestamp (walkerOS's body-parser errors).
fn body_error(status: StatusCode, error: &str) -> Response {
    json_response(status, json!({"success": false, "error": error}).to_string())
}

/// `{"success":false,"error":...,"timestamp":...}`.
fn failure(status: StatusCode, error: &str) -> Response {
    json_response(
        status,
        json!({"success": false, "error": error, "timestamp": now_ms()}).to_string(),
    )
}

fn success() -> Response {
    json_response(
        StatusCode::OK,
        format!("{{\"success\":true,\"timestamp\":{}}}", now_ms()),
    )
}

/// 202: the events are accepted but their delivery was not confirmed (`detail` says why).
fn accepted_unconfirmed(detail: &str) -> Response {
    json_response(
        StatusCode::ACCEPTED,
        json!({"success": true, "timestamp": now_ms(), "detail": detail}).to_string(),
    )
}

/// The answer to events the runtime did not accept.
fn refused(refused: Refused) -> Response {
    match refused {
        Refused::TooLarge(reason) => failure(StatusCode::PAYLOAD_TOO_LARGE, &reason),
        Refused::QueueFull(full) => unavailable(&full.to_string()),
        Refused::Unavailable(reason) => unavailable(&reason),
    }
}

fn unavailable(reason: &str) -> Response {
    let mut response = failure(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}; retry later"));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn unauthorized() -> Response {
    let mut response = body_error(StatusCode::UNAUTHORIZED, "Missing or invalid bearer token");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Adds `X-Content-Type-Options: nosniff` and the CORS headers to every response.
async fn common_headers(State(source): State<Arc<HttpSource>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    add_common_headers(&source.config.cors, origin.as_ref(), response.headers_mut());
    response
}

fn add_common_headers(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Preflight answers already carry their CORS headers.
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS) {
        cors.response_headers(origin, headers);
    }
}

/// `OPTIONS` on a collect path: the CORS preflight, or a bare 204 with CORS off.
async fn options(State(source): State<Arc<HttpSource>>, headers: HeaderMap) -> Response {
    preflight(&source, &headers)
}

fn preflight(source: &HttpSource, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    source.config.cors.preflight_headers(headers, response.headers_mut());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

async fn head_not_allowed() -> Response {
    // walkerOS's express source answers HEAD with 405 (it never pushes an event for it);
    // a HEAD response has no body.
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Unknown paths: Express's 404 page; `OPTIONS` anywhere is a preflight when CORS is on.
async fn fallback(State(source): State<Arc<HttpSource>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method == Method::OPTIONS && source.config.cors.is_on() {
        return preflight(&source, &headers);
    }
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot {} {}</pre>\n</body>\n</html>\n",
        method,
        html_escape(uri.path())
    );
    let mut response = (StatusCode::NOT_FOUND, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How the body of a POST is to be read.
enum BodyKind {
    /// JSON (`application/json`, `text/plain` as sent by sendBeacon, or no type).
    Json,
    /// `application/x-www-form-urlencoded`: JSON text (what `curl -d` sends) or form fields
    /// with bracket notation.
    Form,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, Response> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let content_type = content_type.to_str().unwrap_or_default().to_ascii_lowercase();
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    for parameter in parts {
        if let Some(charset) = parameter.trim().strip_prefix("charset=") {
            let charset = charset.trim_matches('"');
            if charset != "utf-8" && charset != "utf8" && charset != "us-ascii" {
                return Err(body_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("unsupported charset \"{}\"", charset.to_ascii_uppercase()),
                ));
            }
        }
    }
    match media {
        "application/json" | "text/plain" | "" => Ok(BodyKind::Json),
        media if media.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        other => Err(body_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported content type \"{other}\"; send application/json or text/plain"),
        )),
    }
}

/// Reads the body within `limit` bytes and `timeout`, inflating gzip/deflate bodies (also
/// within `limit`). A chunked body is counted as it arrives: one larger than `limit` is
/// refused at the limit, never read whole.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize, timeout: Duration) -> Result<Bytes, Response> {
    let too_large = || {
        body_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request entity too large (limit {limit} bytes)"),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(too_large());
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(encoding.as_str(), "identity" | "gzip" | "deflate" | "") {
        return Err(body_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported content encoding \"{encoding}\""),
        ));
    }
    let collected = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await;
    let raw = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(too_large());
        }
        Ok(Err(_)) => return Err(body_error(StatusCode::BAD_REQUEST, "request aborted")),
        Err(_) => {
            return Err(body_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body not received within {} ms (bodyTimeout)",
                    timeout.as_millis()
                ),
            ));
        }
    };
    let inflate = |reader: &mut dyn Read| -> Result<Bytes, Response> {
        let mut out = Vec::new();
        match reader.take(limit as u64 + 1).read_to_end(&mut out) {
            Ok(_) if out.len() > limit => Err(too_large()),
            Ok(_) => Ok(Bytes::from(out)),
            Err(error) => Err(body_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot decompress the body: {error}"),
            )),
        }
    };
    match encoding.as_str() {
        "gzip" => inflate(&mut flate2::read::GzDecoder::new(&raw[..])),
        "deflate" => inflate(&mut flate2::read::ZlibDecoder::new(&raw[..])),
        _ => Ok(raw),
    }
}

/// A JSON parse error as a client-facing message.
fn parse_error_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("recursion limit exceeded") {
        return format!(
            "JSON nesting is too deep (more than 128 levels) at line {} column {}",
            error.line(),
            error.column()
        );
    }
    if error.is_eof() {
        return format!("Unexpected end of JSON input ({text})");
    }
    format!("Invalid JSON: {text}")
}

/// The elements of a JSON array, as text borrowed from it.
fn array_elements(array: &str) -> Result<Vec<EventInput<'_>>, String> {
    let items: Vec<&RawValue> = serde_json::from_str(array).map_err(|error| parse_error_message(&error))?;
    Ok(items.into_iter().map(|item| EventInput::Json(item.get())).collect())
}

/// The trace id of a W3C `traceparent` header, read as walkerOS's `parseTraceparent` reads
/// it: `<version>-<trace id>-<parent id>-<flags>` in lowercase hex (2, 32, 16 and 2 digits),
/// where a version `ff`, an all-zero trace id or an all-zero parent id make it invalid. An
/// invalid header is ignored, as in walkerOS.
pub fn traceparent(headers: &HeaderMap) -> Option<&str> {
    let text = headers.get("traceparent")?.to_str().ok()?;
    let lower_hex = |part: &str, length: usize| {
        part.len() == length && part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = text.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && lower_hex(version, 2)
        && lower_hex(trace, 32)
        && lower_hex(parent, 16)
        && lower_hex(flags, 2)
        && version != "ff"
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

/// One event of a request, before enrichment.
pub enum EventInput<'a> {
    /// JSON text from the body.
    Json(&'a str),
    /// Built from a query string or form fields.
    Value(Value),
}

/// The events of a POST body and whether it was a batch: JSON (an object, an array, or
/// `{"batch": [...]}`), or for a form body that is not JSON, one event from its fields. The
/// events stay text borrowed from the body.
pub fn parse_events(text: &str, form: bool) -> Result<(Vec<EventInput<'_>>, bool), String> {
    if form && !text.trim_start().starts_with(['{', '[']) {
        return Ok((vec![EventInput::Value(Value::Object(parse_query(text)?))], false));
    }
    let body = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if crate::json::depth(body) > crate::collector::MAX_DEPTH {
        return Err(format!(
            "JSON nesting is too deep (more than {} levels)",
            crate::collector::MAX_DEPTH
        ));
    }
    match body.as_bytes().first() {
        Some(b'[') => Ok((array_elements(body)?, true)),
        Some(b'{') => {
            // walkerOS `toEventList`: an object whose `batch` is an array is a batch.
            #[derive(serde::Deserialize)]
            struct Envelope<'a> {
                #[serde(borrow)]
                batch: Option<&'a RawValue>,
            }
            let envelope: Envelope<'_> = serde_json::from_str(body).map_err(|error| parse_error_message(&error))?;
            match envelope.batch.map(RawValue::get) {
                Some(batch) if batch.starts_with('[') => Ok((array_elements(batch)?, true)),
                _ => Ok((vec![EventInput::Json(body)], false)),
            }
        }
        // Anything else is one (invalid) event, as in walkerOS; it must still be JSON.
        _ => {
            let scalar: &RawValue = serde_json::from_str(body).map_err(|error| parse_error_message(&error))?;
            Ok((vec![EventInput::Json(scalar.get())], false))
        }
    }
}

async fn post_events(State(source): State<Arc<HttpSource>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if !source.authorized(headers) {
        source.requests_rejected("unauthorized").increment(1);
        return unauthorized();
    }
    let reject = |reason: &'static str, response: Response| {
        source.requests_rejected(reason).increment(1);
        response
    };
    let kind = match body_kind(headers) {
        Ok(kind) => kind,
        Err(response) => return reject("content_type", response),
    };
    let limits = &source.config.limits;
    let bytes = match read_body(body, headers, source.config.max_body_bytes, limits.body_timeout).await {
        Ok(bytes) => bytes,
        Err(response) => return reject("body", response),
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(error) => {
            let message = format!(
                "request body is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            );
            return reject("utf8", body_error(StatusCode::BAD_REQUEST, &message));
        }
    };
    let (inputs, is_batch) = match parse_events(text, matches!(kind, BodyKind::Form)) {
        Ok(parsed) => parsed,
        Err(message) => return reject("parse", body_error(StatusCode::BAD_REQUEST, &message)),
    };
    if is_batch && inputs.len() > source.config.max_batch_size {
        let message = format!("Batch too large. Maximum size: {} events", source.config.max_batch_size);
        return reject("batch_too_large", failure(StatusCode::BAD_REQUEST, &message));
    }
    let mode = source.config.post_ack;
    let ingest = source.ingest(&parts);
    let processed = match source.process(inputs, mode, traceparent(headers), ingest).await {
        Ok(processed) => processed,
        Err(response) => return response,
    };
    if is_batch {
        batch_response(processed, mode)
    } else {
        single_response(processed)
    }
}

fn single_response(processed: Processed) -> Response {
    match (&processed.results[0], &processed.outcomes[0]) {
        (Err(invalid), _) => failure(StatusCode::BAD_REQUEST, &invalid.to_string()),
        (Ok(_), outcome) if outcome.is_ok() => success(),
        (Ok(_), outcome) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "success": false,
                "error": "Event was not processed",
                "detail": outcome.problems.join("; "),
                "timestamp": now_ms(),
            })
            .to_string(),
        ),
    }
}

fn batch_response(processed: Processed, mode: AckMode) -> Response {
    let mut errors = Vec::new();
    for (index, (result, outcome)) in processed.results.iter().zip(&processed.outcomes).enumerate() {
        match result {
            Err(invalid) => errors.push(json!({"index": index, "error": invalid.to_string()})),
            Ok(_) if !outcome.is_ok() => errors.push(json!({
                "index": index,
                "error": "Event was not processed",
                "detail": outcome.problems.join("; "),
            })),
            Ok(_) => {}
        }
    }
    let total = processed.results.len();
    if !errors.is_empty() {
        return json_response(
            StatusCode::MULTI_STATUS,
            json!({"success": false, "processed": total - errors.len(), "failed": errors.len(), "errors": errors})
                .to_string(),
        );
    }
    match mode {
        AckMode::Received | AckMode::Journaled => success(),
        AckMode::Delivered => {
            let ids: Vec<Value> = processed
                .results
                .iter()
                .map(|result| result.as_ref().map_or(Value::Null, |event| Value::from(event.id())))
                .collect();
            json_response(
                StatusCode::OK,
                json!({"success": true, "processed": total, "ids": ids}).to_string(),
            )
        }
    }
}

fn gif(status: StatusCode, error: Option<&str>) -> Response {
    let mut response = (status, TRANSPARENT_GIF).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    if let Some(error) = error
        && let Ok(value) = HeaderValue::from_str(error)
    {
        headers.insert("x-weir-error", value);
    }
    response
}

async fn get_pixel(State(source): State<Arc<HttpSource>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let (headers, uri) = (&parts.headers, &parts.uri);
    if !source.authorized(headers) {
        source.requests_rejected("unauthorized").increment(1);
        return unauthorized();
    }
    let query = uri.query().unwrap_or_default();
    let query = query.split('?').next().unwrap_or_default();
    let event = match parse_query(query) {
        Ok(fields) => Value::Object(fields),
        Err(problem) => {
            source.requests_rejected("query").increment(1);
            return gif(StatusCode::OK, Some(&problem));
        }
    };
    match source
        .process(
            vec![EventInput::Value(event)],
            source.config.get_ack,
            traceparent(headers),
            source.ingest(&parts),
        )
        .await
    {
        // walkerOS answers a pixel with the GIF whatever became of the event; weir says why
        // in a header so a failing pixel can be debugged.
        Ok(processed) => match (&processed.results[0], &processed.outcomes[0]) {
            (Err(invalid), _) => gif(StatusCode::OK, Some(&invalid.to_string())),
            (Ok(_), outcome) if outcome.is_ok() => gif(StatusCode::OK, None),
            (Ok(_), outcome) => gif(StatusCode::OK, Some(&outcome.problems.join("; "))),
        },
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_walkeros_reads_it() {
        let read = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_str(value).unwrap());
            traceparent(&headers).map(str::to_owned)
        };
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(read(&format!("00-{trace}-00f067aa0ba902b7-01")).as_deref(), Some(trace));
        assert_eq!(read(&format!("01-{trace}-00f067aa0ba902b7-00")).as_deref(), Some(trace));
        for invalid in [
            format!("ff-{trace}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{trace}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
            format!("00-{trace}-00f067aa0ba902b7-01-extra"),
            format!("00-{trace}-00f067aa0ba902b-01"),
            "".to_owned(),
        ] {
            assert_eq!(read(&invalid), None, "{invalid}");
        }
        assert_eq!(traceparent(&HeaderMap::new()), None);
    }
}
