//! `api`: walkerOS's API destination (`@walkeros/server-destination-api`), a generic webhook.
//! Each event's mapped `data` (or, with none, the event) is sent as JSON to `url` with
//! `method` (POST), walkerOS's `Content-Type: application/json; charset=utf-8` and the
//! configured `headers`, within `timeout` ms (5000). `transform` (`$code:(data, config, rule)
//! => body`) replaces the body: a string is sent as it is, anything else as JSON.
//!
//! With a `batch` block (on the destination or a rule), each request carries a JSON array of
//! the events' bodies, as walkerOS's `pushBatch` (after 4.4) sends them; without one, each
//! event is its own request, one at a time in queue order (`concurrency` puts more batches
//! in flight, and gives up that order).
//!
//! Where walkerOS 4.4 only logs the response, weir delivers for real: a 2xx acknowledges, a
//! 408, 429 or 5xx (or no answer) is retried with backoff and `Retry-After`, any other status
//! is dead-lettered with the response, and a redirect is an answer, not a detour. A promise
//! from `transform` is awaited (walkerOS 4.4 would send `{}`).

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::code::Code;
use crate::config::{ConfigErrors, join, typed};
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::mapping::NoRuleSettings;

/// walkerOS's request timeout (`sendServer`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Longest piece of an error response kept for the dead-letter record.
const ERROR_BODY_LIMIT: usize = 1024;
/// Events taken at once when each is its own request (sent one after another).
const UNBATCHED_IN_FLIGHT: usize = 25;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiSettings {
    url: Option<String>,
    method: Option<String>,
    headers: Option<Map<String, Value>>,
    timeout: Option<u64>,
    transform: Option<Value>,
}

/// One event, ready to send: alone (`body`), or as an item of a batch's array.
pub struct ApiWire {
    /// The request body when sent alone; `None`: no body (`transform` gave undefined).
    body: Option<Vec<u8>>,
    /// Its JSON text inside a batch array, when that is not the body itself (a string from
    /// `transform` is quoted there).
    item: Option<Vec<u8>>,
}

impl ApiWire {
    /// The body as JSON text: the body itself, else `null` (undefined in an array).
    fn json(body: Vec<u8>) -> ApiWire {
        ApiWire {
            body: Some(body),
            item: None,
        }
    }

    fn item(&self) -> &[u8] {
        self.item.as_deref().or(self.body.as_deref()).unwrap_or(b"null")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("not sent to {url}: an event before it in the batch is being retried")]
    Held { url: String },
}

pub struct ApiDestination {
    url: reqwest::Url,
    method: reqwest::Method,
    headers: HeaderMap,
    timeout: Duration,
    transform: Option<Code>,
    /// `transform`'s second argument: `{settings}` without the function.
    config: Value,
    client: reqwest::Client,
    batched: bool,
}

impl ApiDestination {
    /// The body (or batch item) for one event's payload: `transform`'s result, or JSON.
    fn payload(&self, data: &Value, input: &RenderInput<'_, NoRuleSettings>) -> Result<ApiWire, RenderError> {
        let Some(transform) = &self.transform else {
            return Ok(ApiWire::json(crate::json::to_vec(data)));
        };
        let rule = match input.rule_name {
            Some(name) => json!({ "name": name }),
            None => json!({}),
        };
        let returned = transform.apply(&[data, &self.config, &rule]).map_err(|error| {
            crate::mapping::code_failed(input.destination, transform, &error);
            RenderError::Mapping(format!("settings.transform {error}"))
        })?;
        Ok(match returned.property {
            Some(Value::String(text)) => ApiWire {
                item: Some(crate::json::to_vec(&text)),
                body: Some(text.into_bytes()),
            },
            Some(other) => ApiWire::json(crate::json::to_vec(&other)),
            // walkerOS sends no body for undefined; in an array it is `null`.
            None => ApiWire { body: None, item: None },
        })
    }

    async fn request(&self, body: Option<Vec<u8>>) -> Result<(), ApiError> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let url = self.url.to_string();
        let response = request.send().await.map_err(|source| ApiError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            // Read the answer so the connection can be reused.
            let _ = response.bytes().await;
            return Ok(());
        }
        let retry_after = super::rudderstack::retry_after(response.headers());
        let text = match response.headers().get(reqwest::header::LOCATION) {
            Some(location) if status.is_redirection() => format!(
                "redirected to {}: set url to the address that answers",
                location.to_str().unwrap_or("?")
            ),
            _ => response.text().await.unwrap_or_default(),
        };
        let mut body: String = text.chars().take(ERROR_BODY_LIMIT).collect();
        if body.len() < text.len() {
            body.push('…');
        }
        Err(ApiError::Status {
            url,
            status: status.as_u16(),
            body,
            retry_after,
        })
    }
}

fn parse(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<ApiDestination> {
    let Some(settings) = settings else {
        errors.push(join(path, "url"), "is required: the address events are sent to");
        return None;
    };
    let parsed = typed::parse::<ApiSettings>(settings, path, errors)?;
    let url = match parsed.url.as_deref().map(reqwest::Url::parse) {
        None => {
            errors.push(join(path, "url"), "is required: the address events are sent to");
            None
        }
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => Some(url),
        Some(Ok(url)) => {
            errors.push(
                join(path, "url"),
                format!("must be http or https, not {}", url.scheme()),
            );
            None
        }
        Some(Err(error)) => {
            errors.push(join(path, "url"), format!("is not a URL: {error}"));
            None
        }
    };
    let method = match parsed.method.as_deref() {
        None | Some("") => Some(reqwest::Method::POST),
        Some(name) => match reqwest::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                errors.push(join(path, "method"), format!("\"{name}\" is not an HTTP method"));
                None
            }
        },
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (name, value) in parsed.headers.iter().flatten() {
        let at = join(&join(path, "headers"), name);
        let Some(text) = value.as_str() else {
            errors.push(at, "must be a string");
            continue;
        };
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(text)) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            (Err(_), _) => errors.push(at, "is not a valid header name"),
            // The value is not repeated: it may be a secret.
            (_, Err(_)) => errors.push(at, "has characters a header value cannot hold"),
        }
    }
    let timeout = match parsed.timeout {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(ms) => Duration::from_millis(ms),
    };
    let transform = parsed
        .transform
        .as_ref()
        .map(|value| crate::mapping::parse_code(value, &join(path, "transform"), Value::Null, errors));
    let mut shown = settings.clone();
    if let Value::Object(map) = &mut shown {
        map.remove("transform");
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
        // A followed redirect would acknowledge what the target never took.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            errors.push(path, format!("cannot set up the HTTP client: {error}"));
            return None;
        }
    };
    Some(ApiDestination {
        url: url?,
        method: method?,
        headers,
        timeout,
        transform: match transform {
            Some(parsed) => Some(parsed?),
            None => None,
        },
        config: json!({ "settings": shown }),
        client,
        batched: false,
    })
}

impl Destination for ApiDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = ApiWire;
    type Error = ApiError;
    const KIND: &'static str = "api";
    const PACKAGE: Option<&'static str> = Some("@walkeros/server-destination-api");

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        parse(settings, path, errors)
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: UNBATCHED_IN_FLIGHT,
            ..DeliveryDefaults::default()
        }
    }

    fn use_batches(&mut self, configured: bool) {
        self.batched = configured;
    }

    async fn connect(&self) -> Result<(), ApiError> {
        // A webhook has no probe that sends nothing; the first request tells.
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<ApiWire>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        // walkerOS: the mapped data when there is some, else the (processed) event.
        let data = input.data.unwrap_or_else(|| input.event.tree());
        self.payload(data, input).map(Rendered::Send)
    }

    fn explain(&self, wire: &ApiWire) -> Value {
        // Header values may be secrets: only their names are shown.
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        let body = wire.body.as_deref().map(|body| {
            serde_json::from_slice::<Value>(body).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(body)))
        });
        json!({
            "method": self.method.as_str(),
            "url": self.url.as_str(),
            "headers": headers,
            "batched": self.batched,
            "body": body,
        })
    }

    fn wire_size(&self, wire: &ApiWire) -> usize {
        wire.item().len() + 1
    }

    async fn send(&self, batch: &[&ApiWire]) -> Result<Vec<Result<(), ApiError>>, ApiError> {
        if self.batched {
            let mut body = Vec::with_capacity(batch.iter().map(|wire| self.wire_size(wire)).sum::<usize>() + 1);
            body.push(b'[');
            for (index, wire) in batch.iter().enumerate() {
                if index > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(wire.item());
            }
            body.push(b']');
            self.request(Some(body)).await?;
            return Ok(batch.iter().map(|_| Ok(())).collect());
        }
        // One request at a time, in queue order. After an answer worth retrying, the rest
        // wait for that retry, so that a retried event does not fall behind later ones.
        let mut results = Vec::with_capacity(batch.len());
        let mut held = false;
        for wire in batch {
            if held {
                results.push(Err(ApiError::Held {
                    url: self.url.to_string(),
                }));
                continue;
            }
            let result = self.request(wire.body.clone()).await;
            held = matches!(&result, Err(error) if self.classify(error) == ErrorClass::Retryable);
            results.push(result);
        }
        Ok(results)
    }

    fn classify(&self, error: &ApiError) -> ErrorClass {
        match error {
            ApiError::Status { status, .. } if *status == 408 || *status == 429 || *status >= 500 => {
                ErrorClass::Retryable
            }
            ApiError::Status { .. } => ErrorClass::Fatal,
            ApiError::Transport { source, .. } if source.is_builder() => ErrorClass::Fatal,
            ApiError::Transport { .. } | ApiError::Held { .. } => ErrorClass::Retryable,
        }
    }

    fn retry_after(&self, error: &ApiError) -> Option<Duration> {
        match error {
            ApiError::Status { retry_after, .. } => *retry_after,
            ApiError::Transport { .. } | ApiError::Held { .. } => None,
        }
    }

    async fn shutdown(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(settings: Value) -> String {
        let mut errors = ConfigErrors::default();
        parse(Some(&settings), "settings", &mut errors);
        errors.to_string()
    }

    #[test]
    fn settings_are_checked_with_their_paths() {
        assert!(errors_of(json!({})).contains("settings.url: is required"));
        assert!(errors_of(json!({"url": "ftp://x"})).contains("settings.url: must be http or https"));
        assert!(errors_of(json!({"url": "http://x", "method": "P OST"})).contains("settings.method"));
        let text = errors_of(json!({"url": "http://x", "headers": {"A b": "1", "X-Key": "line\nbreak", "N": 1}}));
        assert!(
            text.contains("settings.headers.A b: is not a valid header name"),
            "{text}"
        );
        assert!(text.contains("settings.headers.X-Key: has characters"), "{text}");
        assert!(!text.contains("line"), "a header value is never repeated: {text}");
        assert!(text.contains("settings.headers.N: must be a string"), "{text}");
        assert!(errors_of(json!({"url": "http://x", "transform": "(d) => d"})).contains("settings.transform"));
        assert!(errors_of(json!({"url": "http://x", "transform": "$code:(d) =>"})).contains("does not compile"));
        assert!(errors_of(json!({"url": "http://x", "tranform": 1})).contains("settings.tranform: unknown key"));
        assert_eq!(
            errors_of(json!({"url": "https://x/hook", "method": "put", "timeout": 0})),
            ""
        );
    }
}
