//! The walkerOS v4 event: what a full event looks like and how it is held.
//!
//! An event has exactly walkerOS's 15 top-level keys, written in the order `createEvent`
//! builds them (walkerOS's `packages/core/src/types/walkeros.ts`), so the stored bytes match
//! walkerOS's; a policy may add more after them. Each field is held
//! either as its JSON text, when the text is exactly what `JSON.stringify` writes (checked by
//! [`crate::json::scan`]), or as a parsed value. Most events pass from request body to wire
//! without their `data`, `context`, `user` or `nested` ever becoming a tree: parsing,
//! hashing and allocating those trees was most of weir's per-event cost. The mapping
//! language still sees the whole event as one JSON tree ([`Event::tree`]), built on first
//! use and kept. Events are made by [`Collector::enrich`](crate::collector::Collector::enrich)
//! from what a client sent; a policy remakes one from its tree ([`Event::after_policy`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
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

/// Positions of the keys in [`EVENT_KEYS`].
pub mod key {
    pub const NAME: usize = 0;
    pub const DATA: usize = 1;
    pub const CONTEXT: usize = 2;
    pub const GLOBALS: usize = 3;
    pub const CUSTOM: usize = 4;
    pub const USER: usize = 5;
    pub const NESTED: usize = 6;
    pub const CONSENT: usize = 7;
    pub const ID: usize = 8;
    pub const TRIGGER: usize = 9;
    pub const ENTITY: usize = 10;
    pub const ACTION: usize = 11;
    pub const TIMESTAMP: usize = 12;
    pub const TIMING: usize = 13;
    pub const SOURCE: usize = 14;

    /// The position of a top-level key, if it is one of the 15.
    pub fn of(name: &str) -> Option<usize> {
        super::EVENT_KEYS.iter().position(|k| *k == name)
    }
}

/// One top-level field.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// Canonical JSON text, a range of the event's text buffer.
    Text(u32, u32),
    Value(Value),
    /// Removed by a policy that wrote `undefined`.
    Absent,
}

/// A field as a destination reads it.
pub enum FieldRef<'a> {
    /// Canonical JSON text.
    Text(&'a str),
    Value(&'a Value),
}

impl FieldRef<'_> {
    /// The field as a tree of its own (text is parsed, a value copied).
    pub fn to_value(&self) -> Value {
        match self {
            FieldRef::Text(text) => parse_canonical(text),
            FieldRef::Value(value) => (*value).clone(),
        }
    }
}

/// A full walkerOS v4 event.
#[derive(Clone)]
pub struct Event {
    /// The text of every [`Slot::Text`] field, one after another.
    text: Box<str>,
    slots: [Slot; 15],
    /// Top-level keys beyond the 15 (a policy may add them), in the order added; `None` is a
    /// key a policy set to `undefined` (see [`Event::flat_fields`]).
    extra: Vec<(String, Option<Value>)>,
    tree: OnceLock<Value>,
    /// The stream entry the event was read from, when a stream source read it: its id is
    /// the SSE `id:` and where `Last-Event-ID` resumes.
    origin: Option<Arc<StreamOrigin>>,
    /// What the source's `ingest` mapping made of the request the event came in with
    /// (walkerOS's `context.ingest`), shared by the events of one request.
    ingest: Option<Arc<Ingest>>,
}

/// A request's ingest object, as a tree (for `ingest.*` paths) and as JSON text (for the
/// journal, dead letters and code).
#[derive(Debug, PartialEq)]
pub struct Ingest {
    pub value: Value,
    pub text: Box<str>,
}

impl Ingest {
    pub fn new(value: Value) -> Ingest {
        let text = crate::json::to_string(&value).into_boxed_str();
        Ingest { value, text }
    }
}

/// Where in Redis an event was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOrigin {
    pub stream: String,
    pub id: String,
}

/// Builds an event field by field (the collector's job).
pub(crate) struct EventBuilder {
    text: String,
    slots: [Slot; 15],
}

impl EventBuilder {
    pub(crate) fn with_capacity(bytes: usize) -> EventBuilder {
        EventBuilder {
            text: String::with_capacity(bytes),
            slots: std::array::from_fn(|_| Slot::Absent),
        }
    }

    /// Writes field `index` as canonical JSON text built piece by piece by `write`.
    pub(crate) fn write(&mut self, index: usize, write: impl FnOnce(&mut String)) {
        let start = self.text.len() as u32;
        write(&mut self.text);
        self.slots[index] = Slot::Text(start, self.text.len() as u32);
    }

    /// Sets field `index` to canonical JSON `text`.
    pub(crate) fn text(&mut self, index: usize, text: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        self.slots[index] = Slot::Text(start, self.text.len() as u32);
    }

    pub(crate) fn value(&mut self, index: usize, value: Value) {
        self.slots[index] = Slot::Value(value);
    }

    /// Sets field `index` to a string: as quoted text when it needs no escapes.
    pub(crate) fn string(&mut self, index: usize, value: &str) {
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            let start = self.text.len() as u32;
            self.text.push('"');
            self.text.push_str(value);
            self.text.push('"');
            self.slots[index] = Slot::Text(start, self.text.len() as u32);
        } else {
            self.slots[index] = Slot::Value(Value::String(value.to_owned()));
        }
    }

    pub(crate) fn build(self) -> Event {
        debug_assert!(self.slots.iter().all(|slot| !matches!(slot, Slot::Absent)));
        Event {
            text: self.text.into_boxed_str(),
            slots: self.slots,
            extra: Vec::new(),
            tree: OnceLock::new(),
            origin: None,
            ingest: None,
        }
    }
}

impl Event {
    /// The stream entry this event came from, if it came from one.
    pub fn origin(&self) -> Option<&StreamOrigin> {
        self.origin.as_deref()
    }

    pub fn set_origin(&mut self, origin: StreamOrigin) {
        self.origin = Some(Arc::new(origin));
    }

    /// The request's ingest object, when its source has an `ingest` mapping.
    pub fn ingest(&self) -> Option<&Ingest> {
        self.ingest.as_deref()
    }

    pub fn set_ingest(&mut self, ingest: Arc<Ingest>) {
        self.ingest = Some(ingest);
    }

    fn slot_text(&self, start: u32, end: u32) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// Field `index` as text or value; `None` when a policy removed it.
    pub fn field(&self, index: usize) -> Option<FieldRef<'_>> {
        match &self.slots[index] {
            Slot::Text(start, end) => Some(FieldRef::Text(self.slot_text(*start, *end))),
            Slot::Value(value) => Some(FieldRef::Value(value)),
            Slot::Absent => None,
        }
    }

    /// Top-level member `name` as JSON text (borrowed when the event keeps it as text); `None`
    /// when the event has no such member.
    pub fn member_json(&self, name: &str) -> Option<Cow<'_, str>> {
        let field = match key::of(name) {
            Some(index) => self.field(index)?,
            None => FieldRef::Value(self.extra.iter().find(|(k, _)| k == name)?.1.as_ref()?),
        };
        Some(match field {
            FieldRef::Text(text) => Cow::Borrowed(text),
            FieldRef::Value(value) => Cow::Owned(crate::json::to_string(value)),
        })
    }

    /// Whether `value` is this event's tree (built already, and the same object).
    pub fn is_tree(&self, value: &Value) -> bool {
        self.tree.get().is_some_and(|tree| std::ptr::eq(tree, value))
    }

    /// A top-level field as an object; empty when absent or not an object.
    pub fn object(&self, index: usize) -> Cow<'_, Object> {
        match self.field(index) {
            Some(FieldRef::Value(Value::Object(map))) => Cow::Borrowed(map),
            Some(FieldRef::Text(text)) if text.starts_with('{') => match parse_canonical(text) {
                Value::Object(map) => Cow::Owned(map),
                _ => Cow::Owned(Object::new()),
            },
            _ => Cow::Owned(Object::new()),
        }
    }

    fn str_field(&self, index: usize) -> &str {
        match &self.slots[index] {
            Slot::Value(Value::String(text)) => text,
            // Strings are kept as text only when they need no escapes: strip the quotes.
            Slot::Text(start, end) => {
                let text = self.slot_text(*start, *end);
                text.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or_default()
            }
            _ => "",
        }
    }

    pub fn name(&self) -> &str {
        self.str_field(key::NAME)
    }

    pub fn id(&self) -> &str {
        self.str_field(key::ID)
    }

    /// Sets a top-level key; `None` is walkerOS's `undefined`: the key stays (in its place)
    /// but has no value, so JSON leaves it out and the flat form writes `"undefined"`.
    pub fn set(&mut self, name: &str, value: Option<Value>) {
        self.tree = OnceLock::new();
        match key::of(name) {
            Some(index) => self.slots[index] = value.map_or(Slot::Absent, Slot::Value),
            None => match self.extra.iter_mut().find(|(k, _)| k == name) {
                Some((_, slot)) => *slot = value,
                None => self.extra.push((name.to_owned(), value)),
            },
        }
    }

    /// The whole event as one JSON object, built on first use.
    pub fn tree(&self) -> &Value {
        self.tree.get_or_init(|| {
            let mut map = Map::with_capacity(15 + self.extra.len());
            for (index, name) in EVENT_KEYS.iter().enumerate() {
                if let Some(field) = self.field(index) {
                    map.insert((*name).to_owned(), field.to_value());
                }
            }
            for (name, value) in &self.extra {
                if let Some(value) = value {
                    map.insert(name.clone(), value.clone());
                }
            }
            Value::Object(map)
        })
    }

    /// Only the members named in `names` (those the event has), as one JSON object: for a
    /// reader that needs a few members, where [`tree`](Self::tree) would parse them all. The
    /// tree itself when it is built already.
    pub fn subtree(&self, names: &[String]) -> Cow<'_, Value> {
        if let Some(tree) = self.tree.get() {
            return Cow::Borrowed(tree);
        }
        let mut map = Map::with_capacity(names.len());
        for name in names {
            let value = match key::of(name) {
                Some(index) => match self.field(index) {
                    Some(field) => field.to_value(),
                    None => continue,
                },
                None => match self.extra.iter().find(|(key, _)| key == name) {
                    Some((_, Some(value))) => value.clone(),
                    _ => continue,
                },
            };
            map.insert(name.clone(), value);
        }
        Cow::Owned(Value::Object(map))
    }

    /// The event as an object (built from [`tree`](Self::tree)).
    pub fn as_object(&self) -> &Object {
        self.tree().as_object().expect("an event is an object")
    }

    /// An event from a tree (after a policy rewrote it): the 15 keys in their order, any
    /// other key after them.
    pub fn from_tree(tree: Value) -> Event {
        let Value::Object(map) = tree else {
            return Event {
                text: Box::default(),
                slots: std::array::from_fn(|_| Slot::Absent),
                extra: Vec::new(),
                tree: OnceLock::new(),
                origin: None,
                ingest: None,
            };
        };
        let mut slots: [Slot; 15] = std::array::from_fn(|_| Slot::Absent);
        let mut extra = Vec::new();
        for (name, value) in map {
            match key::of(&name) {
                Some(index) => slots[index] = Slot::Value(value),
                None => extra.push((name, Some(value))),
            }
        }
        Event {
            text: Box::default(),
            slots,
            extra,
            tree: OnceLock::new(),
            origin: None,
            ingest: None,
        }
    }

    /// An event from the JSON [`Event::write_json`] wrote (a journal record): each of the 15
    /// fields is kept as its text, which that writer made canonical, so no tree is built;
    /// other keys are parsed.
    pub fn from_written_json(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        let fields: indexmap::IndexMap<String, &RawValue> = serde_json::from_slice(bytes)?;
        let mut text = String::with_capacity(bytes.len());
        let mut slots: [Slot; 15] = std::array::from_fn(|_| Slot::Absent);
        let mut extra = Vec::new();
        for (name, raw) in fields {
            match key::of(&name) {
                // A string is kept as text only when it needs no escapes (as the collector
                // keeps it): the string fields are read by stripping the quotes.
                Some(index) if raw.get().starts_with('"') && raw.get().contains('\\') => {
                    slots[index] = Slot::Value(serde_json::from_str(raw.get())?);
                }
                Some(index) => {
                    let start = text.len() as u32;
                    text.push_str(raw.get());
                    slots[index] = Slot::Text(start, text.len() as u32);
                }
                None => extra.push((name, Some(serde_json::from_str(raw.get())?))),
            }
        }
        Ok(Event {
            text: text.into_boxed_str(),
            slots,
            extra,
            tree: OnceLock::new(),
            origin: None,
            ingest: None,
        })
    }

    /// The event a policy made of `previous`: `tree` (the policy's result) with walkerOS's
    /// `undefined` keys kept — those `previous` had, and the top-level names in `undefined`
    /// the policy set to nothing — unless the policy gave them a value. An extra key
    /// `previous` had keeps its place among the extra keys; new ones come after them.
    pub fn after_policy(previous: &Event, tree: Value, undefined: &[&str]) -> Event {
        let mut event = Event::from_tree(tree);
        let mut valued = std::mem::take(&mut event.extra);
        let mut extra = Vec::with_capacity(valued.len() + undefined.len());
        for (name, before) in &previous.extra {
            match valued.iter().position(|(n, _)| n == name) {
                Some(at) => extra.push(valued.remove(at)),
                None if before.is_none() || undefined.contains(&name.as_str()) => extra.push((name.clone(), None)),
                None => {}
            }
        }
        extra.append(&mut valued);
        for name in undefined {
            if key::of(name).is_none() && !extra.iter().any(|(n, _)| n == name) {
                extra.push(((*name).to_owned(), None));
            }
        }
        event.extra = extra;
        event.origin = previous.origin.clone();
        event.ingest = previous.ingest.clone();
        event
    }

    /// Writes the event as `JSON.stringify` writes it (into memory: a Vec or a command
    /// buffer, so writing cannot fail).
    pub fn write_json<W: std::io::Write>(&self, out: &mut W) {
        let mut put = |bytes: &[u8]| out.write_all(bytes).expect("writing into memory cannot fail");
        put(b"{");
        let mut first = true;
        for (index, name) in EVENT_KEYS.iter().enumerate() {
            let Some(field) = self.field(index) else { continue };
            if !std::mem::take(&mut first) {
                put(b",");
            }
            put(b"\"");
            put(name.as_bytes());
            put(b"\":");
            match field {
                FieldRef::Text(text) => put(text.as_bytes()),
                FieldRef::Value(value) => put(&crate::json::to_vec(value)),
            }
        }
        for (name, value) in &self.extra {
            let Some(value) = value else { continue };
            if !std::mem::take(&mut first) {
                put(b",");
            }
            put(&crate::json::to_vec(name.as_str()));
            put(b":");
            put(&crate::json::to_vec(value));
        }
        put(b"}");
    }

    /// About how many bytes the event's JSON takes (for batch byte limits).
    pub fn approximate_size(&self) -> usize {
        self.text.len() + 160
    }

    /// The event as `JSON.stringify` writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 256);
        self.write_json(&mut out);
        out
    }

    /// Every top-level key that has a value, with its field, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, FieldRef<'_>)> {
        self.flat_fields()
            .filter_map(|(name, field)| field.map(|field| (name, field)))
    }

    /// Every top-level key in order, `undefined` ones (`None`) included: what walkerOS's
    /// flat serialization walks (`Object.entries` of the event, in which the 15 keys are
    /// always present).
    pub fn flat_fields(&self) -> impl Iterator<Item = (&str, Option<FieldRef<'_>>)> {
        EVENT_KEYS
            .iter()
            .enumerate()
            .map(|(index, name)| (*name, self.field(index)))
            .chain(
                self.extra
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_ref().map(FieldRef::Value))),
            )
    }
}

/// Text the scanner found canonical is valid JSON by construction.
fn parse_canonical(text: &str) -> Value {
    serde_json::from_str(text).expect("canonical event text parses")
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, field) in self.fields() {
            match field {
                FieldRef::Text(text) => {
                    let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
                    map.serialize_entry(name, raw)?;
                }
                FieldRef::Value(value) => map.serialize_entry(name, value)?,
            }
        }
        map.end()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.to_json() == other.to_json()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_json()))
    }
}

/// Why a partial event cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// The event's JSON cannot be read as an event (e.g. a key given twice).
    #[error("Event is malformed: {0}")]
    Malformed(String),
    /// A field nests deeper than weir accepts.
    #[error("Event field \"{field}\" nests deeper than {limit} levels")]
    TooDeep { field: &'static str, limit: usize },
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

/// Milliseconds since the Unix epoch (JavaScript's `Date.now()`): an event's default
/// `timestamp`, and every other "now" weir writes.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    let mut id = String::with_capacity(16);
    push_span_id(&mut id);
    id
}

/// Appends a new span id to `out` (no allocation: this runs for every event).
pub fn push_span_id(out: &mut String) {
    let value: u64 = rand::random_range(1..=u64::MAX);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xf) as usize] as char);
    }
}

/// A W3C trace id: 32 lowercase hex digits, never all zero.
pub fn trace_id() -> String {
    format!("{:032x}", rand::random_range(1..=u128::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_is_the_tree_cut_to_the_named_members() {
        let text = br#"{"name":"page view","data":{"a":1},"user":{"id":"u"},"timestamp":17,"extraKey":[1,2]}"#;
        let names: Vec<String> = ["user", "extraKey", "missing", "timestamp", "consent"]
            .map(String::from)
            .to_vec();
        let cut = |event: &Event| {
            let whole = Event::from_written_json(&event.to_json()).unwrap();
            let expected: Object = whole
                .as_object()
                .iter()
                .filter(|(key, _)| names.contains(key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            Value::Object(expected)
        };
        // Members kept as text, as a written event has them.
        let written = Event::from_written_json(text).unwrap();
        let sub = written.subtree(&names);
        assert!(matches!(sub, Cow::Owned(_)));
        assert_eq!(*sub, cut(&written));
        // Members held as values, and one a policy removed.
        let mut changed = Event::from_written_json(text).unwrap();
        changed.set("user", Some(serde_json::json!({"id": "v"})));
        changed.set("timestamp", None);
        assert_eq!(*changed.subtree(&names), cut(&changed));
        assert_eq!(changed.subtree(&names)["user"]["id"], "v");
        assert!(changed.subtree(&names).get("timestamp").is_none());
        // Once the tree is built, it is the answer.
        let tree = written.tree().clone();
        assert!(matches!(written.subtree(&names), Cow::Borrowed(value) if *value == tree));
    }

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
