//! An entry as an event: weir's and walkerOS's `event` field (JSON), walkerOS's flat fields,
//! or a `data` field — Optimizely Agent's notification (see [`crate::redis::optimizely`]) on
//! Agent's streams and channels, or whenever it has Agent's `type` and `message`; else an
//! event's JSON.

use serde_json::Value;

use crate::collector::Collector;
use crate::event::Event;
use crate::redis::optimizely;
use crate::redis::replies::Entry;
use crate::redis::signing::SIGNATURE_FIELD;

/// The event an entry carries: weir's and walkerOS's `event` field (JSON), walkerOS's flat
/// fields (objects and arrays as JSON, scalars as text), or a `data` field (Optimizely
/// Agent's, or an event's JSON). `stream` is the stream (or Pub/Sub channel) it came from.
pub fn decode(entry: &Entry, stream: &str, collector: &Collector) -> Result<Event, String> {
    let field = |name: &str| entry.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| "a field is not UTF-8".to_owned());
    // Read in place: the entry's bytes are not copied.
    let json = |bytes: &[u8]| -> Result<Event, String> {
        let json = std::str::from_utf8(bytes).map_err(|_| "a field is not UTF-8".to_owned())?;
        serde_json::from_str::<serde::de::IgnoredAny>(json).map_err(|e| format!("not JSON: {e}"))?;
        collector.enrich_json(json).map_err(|e| e.to_string())
    };
    if let Some(event) = field("event") {
        return json(event);
    }
    // walkerOS's flat form has a `name` (and a `data` field of its own); Optimizely's only `data`.
    if field("name").is_some() {
        let mut object = serde_json::Map::new();
        for (name, value) in &entry.fields {
            // `undefined` is walkerOS's flat form of a field with no value (a policy set it
            // to nothing): as if absent.
            if name == SIGNATURE_FIELD || value == b"undefined" {
                continue;
            }
            let value = text(value)?;
            let parsed = match name.as_str() {
                // Text fields as walkerOS's String() wrote them.
                "name" | "id" | "trigger" | "entity" | "action" => Value::String(value),
                _ => serde_json::from_str(&value).unwrap_or(Value::String(value)),
            };
            object.insert(name.clone(), parsed);
        }
        return collector.enrich(Value::Object(object)).map_err(|e| e.to_string());
    }
    if let Some(data) = field("data") {
        // Off Agent's streams, a `data` field is Agent's only if it has Agent's shape; the
        // text is checked and read once either way.
        if optimizely::sdk_key_of(stream).is_none() {
            let json = text(data)?;
            serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| format!("not JSON: {e}"))?;
            if !optimizely::looks_like_payload_text(&json) {
                return collector.enrich_json(&json).map_err(|e| e.to_string());
            }
        }
        let partial = optimizely::event_from(stream, data, field("timestamp")).map_err(|e| e.to_string())?;
        return collector.enrich(partial).map_err(|e| e.to_string());
    }
    Err("no `event`, `data` or walkerOS flat fields".to_owned())
}
