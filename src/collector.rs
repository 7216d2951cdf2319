//! The collector: flow-level state (`globals`, `user`, `consent`, `custom`) and the
//! enrichment that turns a partial event into a full walkerOS v4 event.
//!
//! Follows walkerOS 4.4's `prepareEvent` + `createEvent` (`packages/collector/src/` in
//! github.com/elbwalker/walkerOS): every key a client sends is kept, missing ones are
//! filled, `globals` merge with the collector's (collector keys first, event values win),
//! `user` and `consent` default to the collector's, and `source` is stamped with `count`,
//! `trace` and `release`. Unlike walkerOS, the types of the known keys are checked, so a
//! client sending `"data": 5` gets an error naming the field instead of a malformed event
//! downstream.
//!
//! Enrichment reads the event's JSON text with its top-level keys borrowed as raw text;
//! fields already written as `JSON.stringify` would write them are kept as text (see
//! [`crate::event`]), anything else is parsed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Number, Value};

use crate::config::flow::CollectorConfig;
use crate::event::{
    Event, EventBuilder, InvalidEvent, JsonKind, Object, key, push_span_id, span_id, split_name, trace_id,
};
use crate::json::Scan;
use crate::json::assign;

/// Deepest nesting accepted in an event field (serde_json's own limit for parsed JSON).
pub const MAX_DEPTH: usize = 128;

/// The collector's state for one run of a flow.
#[derive(Debug)]
pub struct Collector {
    pub globals: Object,
    pub user: Object,
    pub consent: Object,
    pub custom: Object,
    /// The same three as JSON text, for events that take them as they are.
    globals_text: String,
    user_text: String,
    consent_text: String,
    /// `collector.name`: the key under which this flow stamps `source.release`.
    name: Option<String>,
    release: String,
    /// `"release":{"<key>":"<release>"}` for the default source, as JSON text.
    default_release: String,
    /// W3C trace id shared by every event of this run.
    trace: String,
    count: AtomicU64,
    /// Start of the run, ms since the epoch (walkerOS `collector.timing`).
    started_ms: u64,
    /// What `$code:` functions see as `context.collector` (JSON text, parsed once per thread).
    script_view: std::sync::Arc<str>,
}

pub use crate::event::now_ms;

/// The known top-level keys of a partial event, borrowed from its JSON text (absent is
/// `None`; a `null` is kept, see [`Collector::enrich_json`] for what each field makes of it). Other keys are dropped, as walkerOS's `createEvent` drops them; a key
/// given twice counts once, the last time, as `JSON.parse` reads it.
#[derive(Default)]
struct GivenFields<'a> {
    name: Option<(&'a str, Scan)>,
    data: Option<(&'a str, Scan)>,
    context: Option<(&'a str, Scan)>,
    globals: Option<(&'a str, Scan)>,
    custom: Option<(&'a str, Scan)>,
    user: Option<(&'a str, Scan)>,
    nested: Option<(&'a str, Scan)>,
    consent: Option<(&'a str, Scan)>,
    id: Option<(&'a str, Scan)>,
    trigger: Option<(&'a str, Scan)>,
    entity: Option<(&'a str, Scan)>,
    action: Option<(&'a str, Scan)>,
    timestamp: Option<(&'a str, Scan)>,
    timing: Option<(&'a str, Scan)>,
    source: Option<(&'a str, Scan)>,
}

impl<'a> GivenFields<'a> {
    /// Reads the top level of an object given as valid JSON text, without validating or
    /// parsing the values (they are checked field by field later).
    fn read(text: &'a str) -> GivenFields<'a> {
        let mut given = GivenFields::default();
        for (raw_key, value, scan) in crate::json::members(text) {
            let unescaped;
            let name = if raw_key.contains('\\') {
                unescaped = serde_json::from_str::<String>(&format!("\"{raw_key}\"")).unwrap_or_default();
                unescaped.as_str()
            } else {
                raw_key
            };
            let slot = match name {
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
            *slot = Some((value, scan));
        }
        given
    }
}

/// The JSON type of a piece of (valid) JSON text, from its first character.
fn kind_of(text: &str) -> JsonKind {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b'"') => JsonKind::String,
        Some(b't' | b'f') => JsonKind::Bool,
        Some(b'n') | None => JsonKind::Null,
        _ => JsonKind::Number,
    }
}

fn type_error(field: &'static str, expected: &'static str, text: &str) -> InvalidEvent {
    InvalidEvent::FieldType {
        field,
        expected,
        found: kind_of(text),
    }
}

fn malformed(error: serde_json::Error) -> InvalidEvent {
    InvalidEvent::Malformed(error.to_string())
}

/// Puts JSON `text` (found by `scan` as it is) into field `index`: as text when canonical,
/// else parsed.
fn place(
    builder: &mut EventBuilder,
    index: usize,
    field: &'static str,
    text: &str,
    scan: Scan,
) -> Result<(), InvalidEvent> {
    if scan.depth > MAX_DEPTH {
        return Err(InvalidEvent::TooDeep {
            field,
            limit: MAX_DEPTH,
        });
    }
    if scan.canonical {
        builder.text(index, text);
    } else if scan.spaced {
        builder.write(index, |out| crate::json::compact(text, out));
    } else {
        builder.value(index, serde_json::from_str(text).map_err(malformed)?);
    }
    Ok(())
}

/// `None` for a field given as `null`: walkerOS fills it in as if it were absent.
fn null_is_absent(given: Option<(&str, Scan)>) -> Option<(&str, Scan)> {
    given.filter(|(text, _)| *text != "null")
}

/// What an object field given as `null` becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfNull {
    /// Kept as `null`, as walkerOS keeps it.
    Keep,
    /// An error naming the field: walkerOS's collector throws on it and the event is lost.
    Refuse,
}

/// An object field: given (checked), else `default` (canonical JSON text).
fn object_field(
    builder: &mut EventBuilder,
    index: usize,
    field: &'static str,
    given: Option<(&str, Scan)>,
    default: &str,
    if_null: IfNull,
) -> Result<(), InvalidEvent> {
    match given {
        None => {
            builder.text(index, default);
            Ok(())
        }
        Some((text, scan)) if text.starts_with('{') => place(builder, index, field, text, scan),
        Some(("null", _)) if if_null == IfNull::Keep => {
            builder.text(index, "null");
            Ok(())
        }
        Some((text, _)) => Err(type_error(field, "an object", text)),
    }
}

/// A string field: given (checked; `null` kept, as walkerOS keeps it), else `default`.
fn string_or(
    builder: &mut EventBuilder,
    index: usize,
    field: &'static str,
    given: Option<(&str, Scan)>,
    default: &str,
) -> Result<(), InvalidEvent> {
    match given.map(|(text, _)| text) {
        None => builder.string(index, default),
        Some("null") => builder.text(index, "null"),
        // A JSON string without escapes is already what JSON.stringify writes.
        Some(text) if text.starts_with('"') && !text.contains('\\') => builder.text(index, text),
        Some(text) if text.starts_with('"') => {
            let value: String = serde_json::from_str(text).map_err(malformed)?;
            builder.string(index, &value);
        }
        Some(text) => return Err(type_error(field, "a string", text)),
    }
    Ok(())
}

impl Collector {
    pub fn new(config: &CollectorConfig) -> Collector {
        let name = config.name.clone();
        let release = config
            .release
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        let default_key = name.clone().unwrap_or_else(|| "default".to_owned());
        let mut default_release = Map::new();
        default_release.insert(default_key, Value::from(release.clone()));
        let started_ms = now_ms();
        // walkerOS's collector instance, its data: state and identity, no functions.
        let script_view = serde_json::json!({
            "allowed": true,
            "consent": config.consent,
            "custom": config.custom,
            "globals": config.globals,
            "user": config.user,
            "timing": started_ms,
            "version": release,
        });
        Collector {
            script_view: std::sync::Arc::from(crate::json::to_string(&script_view)),
            globals_text: crate::json::to_string(&config.globals),
            user_text: crate::json::to_string(&config.user),
            consent_text: crate::json::to_string(&config.consent),
            globals: config.globals.clone(),
            user: config.user.clone(),
            consent: config.consent.clone(),
            custom: config.custom.clone(),
            name,
            release,
            default_release: crate::json::to_string(&default_release),
            trace: trace_id(),
            count: AtomicU64::new(0),
            started_ms,
        }
    }

    /// `context.collector` of `$code:` functions, as JSON text.
    pub fn script_view(&self) -> &std::sync::Arc<str> {
        &self.script_view
    }

    /// The run's trace id.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// The collector's consent as JSON text.
    pub fn consent_text(&self) -> &str {
        &self.consent_text
    }

    /// Completes a partial event given as a JSON value.
    pub fn enrich(&self, partial: Value) -> Result<Event, InvalidEvent> {
        self.enrich_traced(partial, None)
    }

    /// [`enrich`](Self::enrich) with the request's trace id (from its W3C `traceparent`),
    /// which an event without `source.trace` takes instead of the run's.
    pub fn enrich_traced(&self, partial: Value, trace: Option<&str>) -> Result<Event, InvalidEvent> {
        if !partial.is_object() {
            return Err(InvalidEvent::NotAnObject(JsonKind::of(&partial)));
        }
        self.enrich_json_traced(&crate::json::to_string(&partial), trace)
    }

    /// Completes a partial event given as JSON text (walkerOS `prepareEvent` +
    /// `createEvent`). The text must be valid JSON: the HTTP source and `weir explain` have
    /// had serde_json read it; here its top level is only split, not checked again.
    pub fn enrich_json(&self, text: &str) -> Result<Event, InvalidEvent> {
        self.enrich_json_traced(text, None)
    }

    /// [`enrich_json`](Self::enrich_json) with the request's trace id: walkerOS's
    /// `source.trace ?? ingest._meta.trace ?? collector.trace`.
    pub fn enrich_json_traced(&self, text: &str, trace: Option<&str>) -> Result<Event, InvalidEvent> {
        let trace = trace.unwrap_or(&self.trace);
        if !text.trim_start().starts_with('{') {
            return Err(InvalidEvent::NotAnObject(kind_of(text)));
        }
        let given = GivenFields::read(text.trim());
        let escaped_name;
        let name: &str = match given.name.map(|(text, _)| text) {
            // walkerOS: a falsy name is missing.
            None | Some("null") | Some("false") | Some("\"\"") => return Err(InvalidEvent::NameRequired),
            Some(number) if kind_of(number) == JsonKind::Number && number.parse::<f64>() == Ok(0.0) => {
                return Err(InvalidEvent::NameRequired);
            }
            Some(text) if text.starts_with('"') && !text.contains('\\') => &text[1..text.len() - 1],
            Some(text) if text.starts_with('"') => {
                escaped_name = serde_json::from_str::<String>(text).map_err(malformed)?;
                &escaped_name
            }
            Some(_) => return Err(InvalidEvent::NameInvalid),
        };
        let Some((entity, action)) = split_name(name) else {
            return Err(InvalidEvent::NameInvalid);
        };
        let now = now_ms();

        let mut builder = EventBuilder::with_capacity(text.len() + 160);
        builder.string(key::NAME, name);
        // A `null` given for a field is what walkerOS 4.4 makes of it when run: kept for data,
        // context, custom, nested, trigger, entity, action and timestamp; filled in as if
        // absent for consent, id, timing and source; refused for globals and user (walkerOS's
        // collector throws on those, and the event is lost).
        object_field(&mut builder, key::DATA, "data", given.data, "{}", IfNull::Keep)?;
        object_field(&mut builder, key::CONTEXT, "context", given.context, "{}", IfNull::Keep)?;
        match given.globals {
            Some((raw, _)) if !self.globals.is_empty() && raw.starts_with('{') => {
                let own: Object = serde_json::from_str(raw).map_err(malformed)?;
                builder.value(key::GLOBALS, Value::Object(assign(&self.globals, &own)));
            }
            other => object_field(
                &mut builder,
                key::GLOBALS,
                "globals",
                other,
                &self.globals_text,
                IfNull::Refuse,
            )?,
        }
        object_field(&mut builder, key::CUSTOM, "custom", given.custom, "{}", IfNull::Keep)?;
        object_field(
            &mut builder,
            key::USER,
            "user",
            given.user,
            &self.user_text,
            IfNull::Refuse,
        )?;
        match given.nested {
            None => builder.text(key::NESTED, "[]"),
            Some(("null", _)) => builder.text(key::NESTED, "null"),
            Some((text, scan)) if text.starts_with('[') => place(&mut builder, key::NESTED, "nested", text, scan)?,
            Some((text, _)) => return Err(type_error("nested", "an array", text)),
        }
        object_field(
            &mut builder,
            key::CONSENT,
            "consent",
            null_is_absent(given.consent),
            &self.consent_text,
            IfNull::Refuse,
        )?;
        match null_is_absent(given.id).map(|(text, _)| text) {
            Some(text) if text.starts_with('"') && text.len() > 2 && !text.contains('\\') => {
                builder.text(key::ID, text)
            }
            Some(text) if text.starts_with('"') => {
                let id: String = serde_json::from_str(text).map_err(malformed)?;
                let id = if id.is_empty() { span_id() } else { id };
                builder.string(key::ID, &id);
            }
            None => builder.write(key::ID, |text| {
                text.push('"');
                push_span_id(text);
                text.push('"');
            }),
            Some(text) => return Err(type_error("id", "a string", text)),
        }
        string_or(&mut builder, key::TRIGGER, "trigger", given.trigger, "")?;
        // walkerOS keeps a given entity/action even when it disagrees with the name.
        string_or(&mut builder, key::ENTITY, "entity", given.entity, entity)?;
        string_or(&mut builder, key::ACTION, "action", given.action, action)?;
        match given.timestamp {
            None => builder.value(key::TIMESTAMP, Value::from(now)),
            Some(("null", _)) => builder.text(key::TIMESTAMP, "null"),
            Some((text, scan)) if kind_of(text) == JsonKind::Number => {
                place(&mut builder, key::TIMESTAMP, "timestamp", text, scan)?;
            }
            Some((text, _)) => return Err(type_error("timestamp", "a number (ms since the epoch)", text)),
        }
        match null_is_absent(given.timing) {
            None => builder.value(key::TIMING, self.timing(now)),
            Some((text, scan)) if kind_of(text) == JsonKind::Number => {
                place(&mut builder, key::TIMING, "timing", text, scan)?
            }
            Some((text, _)) => return Err(type_error("timing", "a number", text)),
        }
        match null_is_absent(given.source) {
            None => {
                let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                builder.write(key::SOURCE, |text| {
                    text.push_str(r#"{"type":"collector","schema":"4","count":"#);
                    text.push_str(itoa::Buffer::new().format(count));
                    text.push_str(r#","trace":""#);
                    text.push_str(trace);
                    text.push_str(r#"","release":"#);
                    text.push_str(&self.default_release);
                    text.push('}');
                });
            }
            Some((text, scan)) if text.starts_with('{') => {
                if scan.depth > MAX_DEPTH {
                    return Err(InvalidEvent::TooDeep {
                        field: "source",
                        limit: MAX_DEPTH,
                    });
                }
                let mut spliced = false;
                if scan.canonical {
                    builder.write(key::SOURCE, |out| spliced = self.stamp_source_into(text, out, trace));
                } else if scan.spaced {
                    let mut compacted = String::with_capacity(text.len());
                    crate::json::compact(text, &mut compacted);
                    builder.write(key::SOURCE, |out| {
                        spliced = self.stamp_source_into(&compacted, out, trace)
                    });
                }
                if !spliced {
                    let own: Object = serde_json::from_str(text).map_err(malformed)?;
                    builder.value(key::SOURCE, Value::Object(self.stamp_source(own, trace)?));
                }
            }
            Some((text, _)) => return Err(type_error("source", "an object", text)),
        }
        Ok(builder.build())
    }

    /// Seconds since the run started, rounded to 2 decimals as walkerOS does
    /// (`Math.round((now - timing) / 10) / 100`).
    fn timing(&self, now: u64) -> Value {
        let centiseconds = (now.saturating_sub(self.started_ms) as f64 / 10.0 + 0.5).floor() as u64;
        if centiseconds.is_multiple_of(100) {
            Value::from(centiseconds / 100)
        } else {
            Number::from_f64(centiseconds as f64 / 100.0).map_or(Value::from(0), Value::Number)
        }
    }

    /// [`stamp_source`](Self::stamp_source) on canonical text, without parsing it: the
    /// additions are spliced in where walkerOS puts them. `None` when the source needs the
    /// general path (a `null` count, trace or release, or a release that is not an object).
    #[cfg(test)]
    fn stamp_source_text(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len() + 96);
        self.stamp_source_into(text, &mut out, &self.trace).then_some(out)
    }

    /// [`stamp_source_text`](Self::stamp_source_text) appending to `out`; false (and `out`
    /// left as it was) when the general path is needed.
    fn stamp_source_into(&self, text: &str, out: &mut String, trace: &str) -> bool {
        let mark = out.len();
        let done = self.splice_source(text, out, trace);
        if !done {
            out.truncate(mark);
        }
        done
    }

    fn splice_source(&self, text: &str, out: &mut String, trace_id: &str) -> bool {
        let (mut count, mut trace, mut release, mut platform) = (None, None, None, None);
        for (name, value, _) in crate::json::members(text) {
            match name {
                "count" => count = Some(value),
                "trace" => trace = Some(value),
                "release" => release = Some(value),
                "platform" => platform = Some(value),
                _ => {}
            }
        }
        if [count, trace, release].contains(&Some("null")) {
            return false;
        }
        let plain_string = |value: &str| -> Option<String> {
            (value.starts_with('"') && !value.contains('\\')).then(|| value[1..value.len() - 1].to_owned())
        };
        let release_key = match (&self.name, platform.and_then(plain_string)) {
            (Some(name), _) => name.clone(),
            (None, Some(platform)) => platform,
            (None, None) => "default".to_owned(),
        };
        let key_json = crate::json::to_string(release_key.as_str());
        let entry = format!("{key_json}:{}", crate::json::to_string(self.release.as_str()));
        let base = out.len();
        let offset = |inner: &str| inner.as_ptr() as usize - text.as_ptr() as usize;
        match release {
            Some(release) if !release.starts_with('{') => return false,
            Some(release) => {
                let existing = crate::json::members(release).find(|(k, _, _)| *k == &key_json[1..key_json.len() - 1]);
                match existing {
                    // This flow's entry is there already: its value is replaced in place.
                    Some((_, value, _)) => {
                        out.push_str(&text[..offset(value)]);
                        out.push_str(&crate::json::to_string(self.release.as_str()));
                        out.push_str(&text[offset(value) + value.len()..text.len() - 1]);
                    }
                    None => {
                        let end = offset(release) + release.len();
                        out.push_str(&text[..end - 1]);
                        if release != "{}" {
                            out.push(',');
                        }
                        out.push_str(&entry);
                        out.push_str(&text[end - 1..text.len() - 1]);
                    }
                }
            }
            None => out.push_str(&text[..text.len() - 1]),
        }
        let separator = |out: &mut String| {
            if out.len() > base + 1 {
                out.push(',');
            }
        };
        if count.is_none() {
            separator(out);
            let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            out.push_str("\"count\":");
            out.push_str(itoa::Buffer::new().format(count));
        }
        if trace.is_none() {
            separator(out);
            out.push_str("\"trace\":\"");
            out.push_str(trace_id);
            out.push('"');
        }
        if release.is_none() {
            separator(out);
            out.push_str("\"release\":{");
            out.push_str(&entry);
            out.push('}');
        }
        out.push('}');
        true
    }

    /// walkerOS `createEvent`'s source stamping: the incoming keys in their order, then
    /// `count`, `trace` and `release` where not already present; `release` gains this flow's
    /// entry (keyed by the collector name, else the source platform, else `default`).
    fn stamp_source(&self, mut source: Object, trace: &str) -> Result<Object, InvalidEvent> {
        if source.get("count").is_none_or(Value::is_null) {
            let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            source.insert("count".into(), Value::from(count));
        }
        if source.get("trace").is_none_or(Value::is_null) {
            source.insert("trace".into(), Value::from(trace));
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
            other => {
                return Err(InvalidEvent::FieldType {
                    field: "source.release",
                    expected: "an object",
                    found: JsonKind::of(other),
                });
            }
        }
        Ok(source)
    }
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

    /// walkerOS's Redis destination (json mode): a minimal server event stores exactly these bytes.
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

    /// An event written with whitespace (a pretty-printer, Python's `json.dumps`) enriches to
    /// the same bytes as its compact form, its objects kept as text rather than parsed.
    #[test]
    fn a_spaced_event_enriches_to_the_compact_events_bytes_without_trees() {
        let compact = r#"{"name":"page view","data":{"title":"Home","n":1,"tags":["a","b"]},"user":{"id":"u1"},"timestamp":1700000000000,"id":"aaaaaaaaaaaaaaaa","timing":0.01,"source":{"type":"express","count":7,"trace":"0123456789abcdef0123456789abcdef"}}"#;
        let value: Value = serde_json::from_str(compact).unwrap();
        let spaced = serde_json::to_string_pretty(&value).unwrap();
        assert_ne!(spaced, compact);
        let collector = collector(json!({}));
        let expected = collector.enrich_json(compact).unwrap().to_json();
        let event = collector.enrich_json(&spaced).unwrap();
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        for (name, field) in event.fields() {
            assert!(matches!(field, crate::event::FieldRef::Text(_)), "{name} kept as text");
        }
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

    /// Stamping a source without parsing it gives the same bytes as the general path.
    #[test]
    fn spliced_source_stamps_match_the_parsed_path() {
        for (name, source) in [
            (None, json!({"type": "browser", "platform": "web", "url": "https://x/"})),
            (
                None,
                json!({"type": "browser", "platform": "web", "release": {"web": "f00"}}),
            ),
            (Some("server"), json!({"type": "browser", "count": 3, "release": {}})),
            (
                Some("server"),
                json!({"trace": "abc", "release": {"web": "1"}, "extra": [1, {"a": "}"}]}),
            ),
            (None, json!({})),
            (None, json!({"count": 0, "trace": "t", "release": {"default": "old"}})),
        ] {
            let collector = collector(json!({"name": name}));
            let text = crate::json::to_string(&source);
            let spliced = collector.stamp_source_text(&text);
            let collector = self::collector(json!({"name": name}));
            let parsed = collector
                .stamp_source(source.as_object().cloned().unwrap(), collector.trace())
                .unwrap();
            match spliced {
                Some(spliced) => {
                    // The two collectors have different trace ids; compare with them masked.
                    let mask = |text: String, trace: &str| text.replace(trace, "TRACE");
                    let spliced_trace = serde_json::from_str::<Value>(&spliced).unwrap()["trace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let parsed = mask(crate::json::to_string(&parsed), collector.trace());
                    let spliced_masked = if spliced_trace.len() == 32 {
                        mask(spliced.clone(), &spliced_trace)
                    } else {
                        spliced.clone()
                    };
                    assert_eq!(spliced_masked, parsed, "{text}");
                    assert!(crate::json::scan(&spliced).canonical);
                }
                None => panic!("every case here can be spliced: {text}"),
            }
        }
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
