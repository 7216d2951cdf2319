//! The collector: flow-level state (`globals`, `user`, `consent`, `custom`) and the
//! enrichment that turns a partial event into a full walkerOS v4 event.
//!
//! Follows walkerOS 4.4's `prepareEvent` + `createEvent` (systems.md §A.1): every key a
//! client sends is kept, missing ones are filled, `globals` merge with the collector's
//! (collector keys first, event values win), `user` and `consent` default to the
//! collector's, and `source` is stamped with `count`, `trace` and `release`. Unlike
//! walkerOS, the types of the known keys are checked, so a client sending `"data": 5`
//! gets an error naming the field instead of a malformed event downstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Number, Value};

use crate::config::flow::CollectorConfig;
use crate::event::{Event, InvalidEvent, JsonKind, Object, span_id, split_name, trace_id};
use crate::mapping::assign;

/// The collector's state for one run of a flow.
#[derive(Debug)]
pub struct Collector {
    pub globals: Object,
    pub user: Object,
    pub consent: Object,
    pub custom: Object,
    /// `collector.name`: the key under which this flow stamps `source.release`.
    name: Option<String>,
    release: String,
    /// W3C trace id shared by every event of this run.
    trace: String,
    count: AtomicU64,
    /// Start of the run, ms since the epoch (walkerOS `collector.timing`).
    started_ms: u64,
}

/// Milliseconds since the Unix epoch (JavaScript's `Date.now()`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Collector {
    pub fn new(config: &CollectorConfig) -> Collector {
        Collector {
            globals: config.globals.clone(),
            user: config.user.clone(),
            consent: config.consent.clone(),
            custom: config.custom.clone(),
            name: config.name.clone(),
            release: config
                .release
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            trace: trace_id(),
            count: AtomicU64::new(0),
            started_ms: now_ms(),
        }
    }

    /// The run's trace id.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Completes a partial event (walkerOS `prepareEvent` + `createEvent`).
    pub fn enrich(&self, partial: Value) -> Result<Event, InvalidEvent> {
        let Value::Object(input) = partial else {
            return Err(InvalidEvent::NotAnObject(JsonKind::of(&partial)));
        };
        // One pass over the input, by key name: cheaper than 15 hashed lookups, and every
        // key walkerOS does not know is dropped here, as `createEvent` drops it.
        let mut given = GivenFields::default();
        for (key, value) in input {
            let slot = match key.as_str() {
                "name" => &mut given.name,
                "data" => &mut given.data,
                "context" => &mut given.context,
                "globals" => &mut given.globals,
                "custom" => &mut given.custom,
                "user" => &mut given.user,
                "nested" => &mut given.nested,
                "consent" => &mut given.consent,
                "id" => &mut given.id,
                "trigger" => &mut given.trigger,
                "entity" => &mut given.entity,
                "action" => &mut given.action,
                "timestamp" => &mut given.timestamp,
                "timing" => &mut given.timing,
                "source" => &mut given.source,
                _ => continue,
            };
            // `null` is treated as absent.
            *slot = Some(value).filter(|v| !v.is_null());
        }
        let (entity, action) = match &given.name {
            // walkerOS: a falsy name is missing.
            None | Some(Value::Bool(false)) => return Err(InvalidEvent::NameRequired),
            Some(Value::String(name)) if name.is_empty() => return Err(InvalidEvent::NameRequired),
            Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return Err(InvalidEvent::NameRequired),
            Some(Value::String(name)) => match split_name(name) {
                Some((entity, action)) => (entity.to_owned(), action.to_owned()),
                None => return Err(InvalidEvent::NameInvalid),
            },
            Some(_) => return Err(InvalidEvent::NameInvalid),
        };
        let now = now_ms();

        let mut event = Map::with_capacity(15);
        event.insert("name".into(), given.name.take().unwrap_or_default());
        event.insert("data".into(), object_or_empty(given.data, "data")?);
        event.insert("context".into(), object_or_empty(given.context, "context")?);
        let globals = match object(given.globals, "globals")? {
            Some(own) => assign(&self.globals, &own),
            None => self.globals.clone(),
        };
        event.insert("globals".into(), Value::Object(globals));
        event.insert("custom".into(), object_or_empty(given.custom, "custom")?);
        let user = object(given.user, "user")?.unwrap_or_else(|| self.user.clone());
        event.insert("user".into(), Value::Object(user));
        let nested = match given.nested {
            None => Value::Array(Vec::new()),
            Some(nested @ Value::Array(_)) => nested,
            Some(other) => return Err(type_error("nested", "an array", &other)),
        };
        event.insert("nested".into(), nested);
        let consent = object(given.consent, "consent")?.unwrap_or_else(|| self.consent.clone());
        event.insert("consent".into(), Value::Object(consent));
        let id = match given.id {
            Some(Value::String(id)) if !id.is_empty() => id,
            None | Some(Value::String(_)) => span_id(),
            Some(other) => return Err(type_error("id", "a string", &other)),
        };
        event.insert("id".into(), Value::String(id));
        let trigger = string(given.trigger, "trigger")?.unwrap_or_default();
        event.insert("trigger".into(), Value::String(trigger));
        // walkerOS keeps a given entity/action even when it disagrees with the name.
        let entity = string(given.entity, "entity")?.unwrap_or(entity);
        let action = string(given.action, "action")?.unwrap_or(action);
        event.insert("entity".into(), Value::String(entity));
        event.insert("action".into(), Value::String(action));
        let timestamp = match given.timestamp {
            None => Value::from(now),
            Some(timestamp @ Value::Number(_)) => timestamp,
            Some(other) => return Err(type_error("timestamp", "a number (ms since the epoch)", &other)),
        };
        event.insert("timestamp".into(), timestamp);
        let timing = match given.timing {
            None => self.timing(now),
            Some(timing @ Value::Number(_)) => timing,
            Some(other) => return Err(type_error("timing", "a number", &other)),
        };
        event.insert("timing".into(), timing);
        let source = self.stamp_source(object(given.source, "source")?)?;
        event.insert("source".into(), Value::Object(source));
        Ok(Event::from_complete(event))
    }

    /// Seconds since the run started, rounded to 2 decimals as walkerOS does
    /// (`Math.round((now - timing) / 10) / 100`).
    fn timing(&self, now: u64) -> Value {
        let centiseconds = (now.saturating_sub(self.started_ms) as f64 / 10.0 + 0.5).floor() as u64;
        if centiseconds % 100 == 0 {
            Value::from(centiseconds / 100)
        } else {
            Number::from_f64(centiseconds as f64 / 100.0).map_or(Value::from(0), Value::Number)
        }
    }

    /// walkerOS `createEvent`'s source stamping: the incoming keys in their order, then
    /// `count`, `trace` and `release` where not already present; `release` gains this flow's
    /// entry (keyed by the collector name, else the source platform, else `default`).
    fn stamp_source(&self, source: Option<Object>) -> Result<Object, InvalidEvent> {
        let mut source = source.unwrap_or_else(|| {
            let mut default = Map::new();
            default.insert("type".into(), Value::from("collector"));
            default.insert("schema".into(), Value::from("4"));
            default
        });
        if source.get("count").is_none_or(Value::is_null) {
            let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            source.insert("count".into(), Value::from(count));
        }
        if source.get("trace").is_none_or(Value::is_null) {
            source.insert("trace".into(), Value::from(self.trace.clone()));
        }
        let key = self
            .name
            .clone()
            .or_else(|| source.get("platform").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        let release = source.entry("release").or_insert_with(|| Value::Object(Map::new()));
        match release {
            Value::Object(release) => {
                release.insert(key, Value::from(self.release.clone()));
            }
            Value::Null => {
                let mut fresh = Map::new();
                fresh.insert(key, Value::from(self.release.clone()));
                *release = Value::Object(fresh);
            }
            other => return Err(type_error("source.release", "an object", other)),
        }
        Ok(source)
    }
}

fn type_error(field: &'static str, expected: &'static str, found: &Value) -> InvalidEvent {
    InvalidEvent::FieldType {
        field,
        expected,
        found: JsonKind::of(found),
    }
}

/// The known fields of a partial event, as given (`None` when absent or `null`).
#[derive(Default)]
struct GivenFields {
    name: Option<Value>,
    data: Option<Value>,
    context: Option<Value>,
    globals: Option<Value>,
    custom: Option<Value>,
    user: Option<Value>,
    nested: Option<Value>,
    consent: Option<Value>,
    id: Option<Value>,
    trigger: Option<Value>,
    entity: Option<Value>,
    action: Option<Value>,
    timestamp: Option<Value>,
    timing: Option<Value>,
    source: Option<Value>,
}

fn string(value: Option<Value>, field: &'static str) -> Result<Option<String>, InvalidEvent> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(type_error(field, "a string", &other)),
    }
}

fn object(value: Option<Value>, field: &'static str) -> Result<Option<Object>, InvalidEvent> {
    match value {
        None => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(type_error(field, "an object", &other)),
    }
}

fn object_or_empty(value: Option<Value>, field: &'static str) -> Result<Value, InvalidEvent> {
    Ok(Value::Object(object(value, field)?.unwrap_or_default()))
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../tests/vectors/walkeros-destinations-and-mapping.json")).unwrap()
    }

    fn collector(config: Value) -> Collector {
        let object = |key: &str| config.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        Collector::new(&CollectorConfig {
            globals: object("globals"),
            user: object("user"),
            consent: object("consent"),
            custom: object("custom"),
            name: config.get("name").and_then(Value::as_str).map(str::to_owned),
            release: Some("4.4.0".into()),
        })
    }

    /// systems.md §A.4: a minimal server event stores exactly these bytes.
    #[test]
    fn a_minimal_event_serializes_byte_for_byte_as_walkeros() {
        let event = collector(json!({}))
            .enrich(json!({
                "name": "page view", "data": {"title": "Home", "n": 1}, "user": {"id": "u1"},
                "timestamp": 1700000000000u64, "id": "aaaaaaaaaaaaaaaa", "timing": 0.01,
                "source": {"type": "express", "count": 7, "trace": "0123456789abcdef0123456789abcdef"}
            }))
            .unwrap();
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            r#"{"name":"page view","data":{"title":"Home","n":1},"context":{},"globals":{},"custom":{},"user":{"id":"u1"},"nested":[],"consent":{},"id":"aaaaaaaaaaaaaaaa","trigger":"","entity":"page","action":"view","timestamp":1700000000000,"timing":0.01,"source":{"type":"express","count":7,"trace":"0123456789abcdef0123456789abcdef","release":{"default":"4.4.0"}}}"#
        );
    }

    /// The `in` events of the Redis vectors enrich to the exact JSON walkerOS stored.
    #[test]
    fn vector_events_enrich_to_the_stored_bytes() {
        let vectors = vectors();
        for name in ["jsonDefault", "orderComplete", "withMaxLen", "withExactTrim"] {
            let case = &vectors["redis"][name];
            let event = collector(json!({})).enrich(case["in"].clone()).unwrap();
            let stored = case["calls"][0].as_array().unwrap().last().unwrap().as_str().unwrap();
            assert_eq!(String::from_utf8(event.to_json()).unwrap(), stored, "vector {name}");
        }
    }

    /// `enrich` in the vectors: collector state merged into a bare event.
    #[test]
    fn collector_state_fills_a_bare_event() {
        let collector = collector(
            json!({"globals": {"env": "prod"}, "user": {"id": "collectorUser"}, "consent": {"functional": true}}),
        );
        let first = collector
            .enrich(json!({"name": "page view", "data": {"title": "Home"}}))
            .unwrap();
        let second = collector
            .enrich(json!({"name": "page view", "data": {"title": "Home2"}}))
            .unwrap();
        let object = first.as_object();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, crate::event::EVENT_KEYS);
        assert_eq!(object["globals"], json!({"env": "prod"}));
        assert_eq!(object["user"], json!({"id": "collectorUser"}));
        assert_eq!(object["consent"], json!({"functional": true}));
        assert_eq!(object["timing"], json!(0));
        assert_eq!(object["trigger"], json!(""));
        assert_eq!(first.id().len(), 16);
        let source = object["source"].as_object().unwrap();
        let source_keys: Vec<&str> = source.keys().map(String::as_str).collect();
        assert_eq!(source_keys, ["type", "schema", "count", "trace", "release"]);
        assert_eq!(source["count"], json!(1));
        assert_eq!(second.as_object()["source"]["count"], json!(2));
        assert_eq!(source["trace"].as_str().unwrap().len(), 32);
        assert_eq!(source["trace"], second.as_object()["source"]["trace"]);
        assert_eq!(source["release"], json!({"default": "4.4.0"}));
    }

    #[test]
    fn name_errors_are_walkeros_messages() {
        let collector = collector(json!({}));
        for (input, message) in [
            (json!({}), "Event name is required"),
            (json!({"name": ""}), "Event name is required"),
            (json!({"name": null}), "Event name is required"),
            (json!({"name": "pageview"}), "Event name is invalid"),
            (json!({"name": "page "}), "Event name is invalid"),
            (json!({"name": 5}), "Event name is invalid"),
        ] {
            assert_eq!(collector.enrich(input).unwrap_err().to_string(), message);
        }
        assert_eq!(
            collector
                .enrich(json!({"name": "a b", "data": 5}))
                .unwrap_err()
                .to_string(),
            "Event field \"data\" must be an object, not a number"
        );
        assert_eq!(
            collector.enrich(json!(["a b"])).unwrap_err().to_string(),
            "Event must be a JSON object, not an array"
        );
    }

    #[test]
    fn globals_merge_collector_first_and_release_accumulates() {
        let collector = collector(json!({"globals": {"env": "prod", "tags": ["a"]}, "name": "server"}));
        let event = collector
            .enrich(json!({
                "name": "a b", "globals": {"tags": ["b", "a"], "env": "dev"}, "entity": "x",
                "source": {"type": "browser", "platform": "web", "release": {"web": "f00"}, "count": 0}
            }))
            .unwrap();
        let object = event.as_object();
        assert_eq!(object["globals"], json!({"env": "dev", "tags": ["a", "b"]}));
        assert_eq!(object["entity"], json!("x"));
        assert_eq!(
            object["source"],
            json!({"type": "browser", "platform": "web", "release": {"web": "f00", "server": "4.4.0"}, "count": 0, "trace": collector.trace()})
        );
    }
}
