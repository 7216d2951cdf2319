//! The walkerOS v4 event: what a full event looks like and how a partial one is completed.
//!
//! An event is kept as an ordered JSON object rather than a struct because walkerOS's
//! mapping language reads and writes it by path (`data.items.1.id`, policies that set
//! arbitrary keys), and because the stored bytes must match walkerOS's: the 15 keys in the
//! order `createEvent` builds them (systems.md §A.1), which `serde_json`'s `preserve_order`
//! keeps. [`Collector::enrich`](crate::collector::Collector::enrich) is the only way to make
//! an [`Event`], so every `Event` has exactly those keys with the right types.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// A JSON object with insertion-ordered keys.
pub type Object = Map<String, Value>;

/// The 15 top-level keys of a v4 event, in serialization order.
pub const EVENT_KEYS: [&str; 15] = [
    "name",
    "data",
    "context",
    "globals",
    "custom",
    "user",
    "nested",
    "consent",
    "id",
    "trigger",
    "entity",
    "action",
    "timestamp",
    "timing",
    "source",
];

/// A full walkerOS v4 event. Held as a JSON value (always an object) so that the mapping
/// language can read it by path without copying it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Event(Value);

impl Event {
    /// Wraps an object the collector built with all 15 keys.
    pub(crate) fn from_complete(object: Object) -> Event {
        debug_assert!(EVENT_KEYS.iter().all(|k| object.contains_key(*k)));
        Event(Value::Object(object))
    }

    pub fn as_value(&self) -> &Value {
        &self.0
    }

    pub fn as_object(&self) -> &Object {
        self.0.as_object().expect("an event is an object")
    }

    fn str_field(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.str_field("name")
    }

    pub fn id(&self) -> &str {
        self.str_field("id")
    }

    /// The event as `JSON.stringify` writes it.
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_vec(&self.0)
    }
}

/// Why a partial event cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// walkerOS: `name` missing or empty.
    #[error("Event name is required")]
    NameRequired,
    /// walkerOS: `name` is not a string of the form `"entity action"`.
    #[error("Event name is invalid")]
    NameInvalid,
    /// The event itself is not a JSON object.
    #[error("Event must be a JSON object, not {0}")]
    NotAnObject(JsonKind),
    /// A known field holds the wrong JSON type.
    #[error("Event field \"{field}\" must be {expected}, not {found}")]
    FieldType {
        field: &'static str,
        expected: &'static str,
        found: JsonKind,
    },
}

/// The JSON type of a value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub fn of(value: &Value) -> JsonKind {
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// Splits `"entity action"` as walkerOS does: on single spaces, taking the first two parts;
/// both must be non-empty. `"a b c"` is entity `a`, action `b`.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.split(' ');
    let entity = parts.next()?;
    let action = parts.next()?;
    (!entity.is_empty() && !action.is_empty()).then_some((entity, action))
}

/// A W3C span id: 16 lowercase hex digits, never all zero.
pub fn span_id() -> String {
    format!("{:016x}", rand::random_range(1..=u64::MAX))
}

/// A W3C trace id: 32 lowercase hex digits, never all zero.
pub fn trace_id() -> String {
    format!("{:032x}", rand::random_range(1..=u128::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_walkeros() {
        assert_eq!(split_name("page view"), Some(("page", "view")));
        assert_eq!(split_name("a b c"), Some(("a", "b")));
        assert_eq!(split_name("pageview"), None);
        assert_eq!(split_name("page "), None);
        assert_eq!(split_name(" view"), None);
        assert_eq!(split_name("page  view"), None);
    }

    #[test]
    fn ids_have_the_w3c_shape() {
        for _ in 0..100 {
            let span = span_id();
            assert_eq!(span.len(), 16);
            assert!(span.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_ne!(span, "0000000000000000");
            assert_eq!(trace_id().len(), 32);
        }
    }
}
