//! The admin listener: what an operator looks at, apart from the ingest ports. It serves
//! `/metrics` (Prometheus text), `/healthz` and `/readyz` (and walkerOS's `/health`,
//! `/ready`), the live status page (`/`), its data (`/status.json`, and `/status/events`:
//! the same, once a second, as Server-Sent Events) and the tap (`/tap`: what becomes of each
//! event at each destination, as Server-Sent Events, filtered by `source`, `destination`,
//! `name` (`*` matches any run of characters) and `outcome` (comma-separated); a watcher
//! that falls behind gets a `dropped` event with the count instead of what it missed).
//!
//! It listens on loopback by default (`admin.listen`). With `admin.bearerToken` every path but
//! the health probes needs `Authorization: Bearer <token>`, or `?token=<token>` for a browser
//! (which cannot set headers on a page load or an `EventSource`); the page passes on its own
//! `token` to what it fetches.
//!
//! The page is one HTML file with its script and style inline, compiled into the binary: no
//! build step, no CDN, nothing fetched but its own data. Everything it shows comes from
//! [`status`]: the runtime's destinations (their health), the flow's sources, and the
//! process's metrics as [`crate::telemetry::readings`] keeps them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::listeners::json_response;
use crate::config::typed::BearerToken;
use crate::runtime::Runtime;

const PAGE: &str = include_str!("status.html");

/// What the admin listener needs to describe the flow.
#[derive(Clone)]
pub struct Admin {
    pub runtime: Arc<Runtime>,
    /// Each source's id and type, in the flow's order.
    pub sources: Arc<std::sync::RwLock<Vec<(String, &'static str)>>>,
    pub flow_name: Option<String>,
    pub started: SystemTime,
    pub token: Option<BearerToken>,
    /// HTTPS on the admin listener.
    pub tls: Option<crate::config::typed::TlsServer>,
    /// Cancelled when weir stops: the live streams end, so the listener can close.
    pub stop: tokio_util::sync::CancellationToken,
}

/// The admin routes (health probes open, the rest behind the token when there is one).
pub fn router(admin: Admin) -> Router {
    let guarded = Router::new()
        .route("/", get(page))
        .route("/status", get(page))
        .route("/status.json", get(status_json))
        .route("/status/events", get(status_events))
        .route("/metrics", get(super::listeners::metrics_text))
        .route("/tap", get(tap))
        .route_layer(axum::middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin.clone());
    super::listeners::health_routes(admin.runtime.clone(), true)
        .merge(guarded)
        .fallback(super::listeners::not_found)
}

/// Whether the request was addressed to `localhost` or an IP address (its `Host`). Without
/// a token that is all that guards the admin paths, and it stops a web page the operator
/// opens from reading them through a name it points at 127.0.0.1 (DNS rebinding).
fn addressed_locally(request: &Request) -> bool {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The token from `Authorization: Bearer`, or `?token=`; without a token, a request
/// addressed to `localhost` or an IP address.
async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let Some(token) = &admin.token else {
        if addressed_locally(&request) {
            return next.run(request).await;
        }
        return json_response(
            StatusCode::FORBIDDEN,
            "{\"success\":false,\"error\":\"Forbidden: without admin.bearerToken the admin listener answers only requests addressed to localhost or an IP address\"}".into(),
        );
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let query = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| format!("Bearer {value}"))
    });
    if token.accepts(header) || token.accepts(query.as_deref()) {
        return next.run(request).await;
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        "{\"success\":false,\"error\":\"Unauthorized: send Authorization: Bearer <admin.bearerToken> (or ?token=)\"}"
            .into(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn page(RawQuery(_): RawQuery) -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Its own script and style only: nothing else may run or load on the page.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A `?token=` in the page's address goes nowhere else.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn status_json(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, status(&admin).to_string())
}

/// The status, now and then once a second, until the client goes.
async fn status_events(State(admin): State<Admin>) -> impl IntoResponse {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let stream = futures_util::stream::unfold((admin, ticks), |(admin, mut ticks)| async move {
        tokio::select! {
            _ = ticks.tick() => {}
            () = admin.stop.cancelled() => return None,
        }
        let event = SseEvent::default().event("status").data(status(&admin).to_string());
        Some((Ok::<_, Infallible>(event), (admin, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A metric's value as JSON: whole numbers (counts) without a fraction.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// What a tap watcher asked to see.
#[derive(Debug, Default, serde::Deserialize)]
struct TapFilter {
    source: Option<String>,
    destination: Option<String>,
    name: Option<String>,
    outcome: Option<String>,
}

impl TapFilter {
    fn admits(&self, record: &crate::delivery::tap::Tapped) -> bool {
        self.source
            .as_deref()
            .is_none_or(|source| record.source.as_deref() == Some(source))
            && self
                .destination
                .as_deref()
                .is_none_or(|destination| *record.destination == *destination)
            && self
                .outcome
                .as_deref()
                .is_none_or(|outcomes| outcomes.split(',').any(|outcome| outcome.trim() == record.outcome))
            && self
                .name
                .as_deref()
                .is_none_or(|pattern| glob(pattern, record.event.name()))
    }
}

/// `*` matches any run of characters, everything else itself. By hand: a dozen lines, where
/// a glob crate brings path semantics (`/`, `**`) event names do not have.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Streams tap records that pass the filter until the watcher goes (or weir stops).
async fn tap(
    State(admin): State<Admin>,
    axum::extract::Query(filter): axum::extract::Query<TapFilter>,
) -> impl IntoResponse {
    use tokio::sync::broadcast::error::RecvError;
    let watch = crate::delivery::tap::watch();
    let dropped = metrics::counter!("weir_tap_dropped_total");
    let stop = admin.stop.clone();
    let state = (watch, filter, dropped, stop);
    let stream = futures_util::stream::unfold(state, |(mut watch, filter, dropped, stop)| async move {
        loop {
            let received = tokio::select! {
                received = watch.receiver.recv() => received,
                () = stop.cancelled() => return None,
            };
            let event = match received {
                Ok(record) if filter.admits(&record) => {
                    SseEvent::default().event("tap").data(record.to_json().to_string())
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    dropped.increment(missed);
                    SseEvent::default()
                        .event("dropped")
                        .data(json!({"dropped": missed}).to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(event), (watch, filter, dropped, stop)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Everything the page shows, as JSON.
pub fn status(admin: &Admin) -> Value {
    let readings = crate::telemetry::readings();
    let counters = readings.counters();
    let gauges = readings.gauges();
    let counter = |name: &str, label: &str, id: &str| -> Value {
        let total = counters
            .iter()
            .filter(|reading| reading.name == name && reading.label(label) == Some(id))
            .fold(0.0, |total, reading| total + reading.value);
        number(total)
    };
    let gauge = |name: &str, label: &str, id: &str| -> Option<Value> {
        gauges
            .iter()
            .find(|reading| reading.name == name && reading.label(label) == Some(id))
            .map(|reading| number(reading.value))
    };
    let rate = |name: &str, label: &str, id: &str| -> Vec<u32> {
        readings
            .rates(name)
            .into_iter()
            .filter(|(reading, _)| reading.label(label) == Some(id))
            .map(|(_, seconds)| seconds)
            .next()
            .unwrap_or_default()
    };
    let latencies = readings.quantiles("weir_delivery_latency_seconds", &[0.5, 0.99]);

    let sources: Vec<Value> = admin
        .sources
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|(id, kind)| {
            let streams: Vec<Value> = gauges
                .iter()
                .filter(|reading| reading.name == "weir_stream_group_lag" && reading.label("source") == Some(id))
                .map(|reading| {
                    let stream = reading.label("stream").unwrap_or_default();
                    let pending = gauges
                        .iter()
                        .find(|other| {
                            other.name == "weir_stream_group_pending"
                                && other.label("source") == Some(id)
                                && other.label("stream") == Some(stream)
                        })
                        .map(|other| other.value);
                    json!({"stream": stream, "lag": number(reading.value), "pending": pending.map(number)})
                })
                .collect();
            json!({
                "id": id,
                "type": kind,
                "received": counter("weir_events_received_total", "source", id),
                "rejected": counter("weir_events_rejected_total", "source", id),
                "requestsRejected": counter("weir_requests_rejected_total", "source", id),
                "deadLettered": counter("weir_stream_dead_lettered_total", "source", id),
                "perSecond": rate("weir_events_received_total", "source", id),
                "streams": streams,
            })
        })
        .collect();

    let destinations: Vec<Value> = admin
        .runtime
        .routes()
        .iter()
        .map(|route| {
            let id = route.id();
            let health = route.health();
            let latency = latencies
                .iter()
                .find(|quantiles| quantiles.label("destination") == Some(id))
                .and_then(|quantiles| quantiles.values.clone());
            let not_sent: serde_json::Map<String, Value> = counters
                .iter()
                .filter(|reading| {
                    reading.name == "weir_events_not_sent_total" && reading.label("destination") == Some(id)
                })
                .filter_map(|reading| Some((reading.label("reason")?.to_owned(), number(reading.value))))
                .collect();
            let journal = route.journaled().then(|| {
                json!({
                    "lag": gauge("weir_journal_lag_events", "destination", id),
                    "oldestSeconds": gauge("weir_journal_oldest_seconds", "destination", id),
                })
            });
            json!({
                "id": id,
                "type": route.kind(),
                "state": health.state.label(),
                "since": health.since.map(millis),
                "lastError": health.last_error.as_ref().map(|(time, message)| json!({"time": millis(*time), "message": message})),
                "deadLetters": health.dead_letters.iter().map(|(time, cause, reason)| {
                    json!({"time": millis(*time), "cause": cause.label(), "reason": reason})
                }).collect::<Vec<_>>(),
                "delivered": counter("weir_events_delivered_total", "destination", id),
                "retried": counter("weir_events_retried_total", "destination", id),
                "deadLettered": counter("weir_events_dead_lettered_total", "destination", id),
                "failed": counter("weir_events_failed_total", "destination", id),
                "queueFull": counter("weir_queue_full_total", "destination", id),
                "notSent": not_sent,
                "queueDepth": gauge("weir_queue_depth", "destination", id).unwrap_or(json!(0)),
                "queueMax": route.queue_capacity(),
                "journal": journal,
                "latency": latency.map(|values| json!({"p50": values[0], "p99": values[1]})),
                "perSecond": rate("weir_events_delivered_total", "destination", id),
            })
        })
        .collect();

    let hubs: Vec<Value> = gauges
        .iter()
        .filter(|reading| reading.name == "weir_sse_clients")
        .map(|reading| {
            let path = reading.label("path").unwrap_or_default();
            json!({
                "path": path,
                "clients": number(reading.value),
                "dropped": counter("weir_sse_clients_dropped_total", "path", path),
            })
        })
        .collect();
    let journal = gauges
        .iter()
        .any(|reading| reading.name == "weir_journal_bytes")
        .then(|| {
            json!({
                "bytes": gauges.iter().find(|r| r.name == "weir_journal_bytes").map(|r| number(r.value)),
                "segments": gauges.iter().find(|r| r.name == "weir_journal_segments").map(|r| number(r.value)),
            })
        });
    let ready = admin.runtime.readiness();
    json!({
        "flow": admin.flow_name,
        "version": env!("CARGO_PKG_VERSION"),
        "time": millis(SystemTime::now()),
        "started": millis(admin.started),
        "ready": ready.is_ok(),
        "notReady": ready.err(),
        "journal": journal,
        "sources": sources,
        "destinations": destinations,
        "hubs": hubs,
    })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_runs_of_characters() {
        for (pattern, text, expected) in [
            ("order *", "order complete", true),
            ("order *", "order", false),
            ("*", "", true),
            ("page view", "page view", true),
            ("page view", "page views", false),
            ("* view", "page view", true),
            ("p*e*w", "page view", true),
            ("p*x*w", "page view", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} on {text:?}");
        }
    }
}
