//! walkerOS's value language (`getMappingValue` / `processMappingValue` in
//! github.com/elbwalker/walkerOS `packages/core/src/mapping.ts`).
//!
//! A value spec is a path string (`"data.id"` ≡ `{"key": "data.id"}`), a config object
//! (`key`, `value`, `map`, `loop`, `set`, `consent`), or an array of alternatives: at the top
//! level the first result that is defined wins (`0`, `""`, `false` count); an array nested
//! inside an alternative takes the first truthy result, else its last result.
//!
//! JavaScript distinguishes `undefined` (nothing) from `null`, and walkerOS's final
//! "is it a Property" check rejects any value containing `null` while accepting arrays with
//! `undefined` holes (which serialize as `null`). [`Resolved`] carries that distinction: a
//! JSON `null` inside `value` is a hole unless `has_null` says a real `null` is in there.
//!
//! `fn`, `condition` and `validate` are JavaScript (`"$code:(value, context) => ..."`), run by
//! [`crate::code`] in walkerOS 4.4's order: condition (falsy or a throw: nothing, not even the
//! static `value`) → consent → fn (a throw: undefined) → key (overwrites fn's result) →
//! loop / map / set → validate (gets the produced value; falsy or a throw: undefined) → cast,
//! with the static `value` as the fallback. Every call is awaited. A failed call is counted
//! (`weir_mapping_code_errors_total{destination}`) and logged once per function, as walkerOS
//! logs it and goes on. A boolean, number or `null` where a spec belongs yields nothing, as in
//! walkerOS (which finds no keys in it); it loads, with a warning naming its path.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::consent::granted_consent;
use super::path::{contains_null, get_with_default};
use crate::code::{Call, Code, CodeError, Consent, Input, Returned};
use crate::config::{ConfigErrors, join};
use crate::event::Object;
use crate::json::truthy;

/// A parsed value spec.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSpec {
    /// `"data.id"`: the value at that path.
    Key(String),
    Config(Box<ValueConfig>),
    Alternatives(Vec<ValueSpec>),
    /// A boolean, number or `null` given as a spec: yields nothing.
    Nothing(crate::event::JsonKind),
}

/// `{key, value, map, loop, set, consent, fn, condition, validate}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueConfig {
    pub condition: Option<Code>,
    pub function: Option<Code>,
    pub validate: Option<Code>,
    pub key: Option<String>,
    /// Static value, and the fallback when the rest yields nothing.
    pub value: Option<Value>,
    pub map: Option<Vec<(String, ValueSpec)>>,
    pub loop_over: Option<Box<(LoopScope, ValueSpec)>>,
    pub set: Option<Vec<ValueSpec>>,
    pub consent: Option<Object>,
    /// `{}`: yields nothing.
    empty: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoopScope {
    /// `"this"`: loop over a one-element list holding the input.
    This,
    Spec(ValueSpec),
}

/// A computed value. `has_null` says whether `value` holds a real JSON `null` (as opposed to
/// `null`s standing for JavaScript `undefined` array holes).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub value: Value,
    pub has_null: bool,
}

impl Resolved {
    /// A value read from an event or the config: every `null` in it is real.
    pub fn from_json(value: Value) -> Resolved {
        let has_null = contains_null(&value);
        Resolved { value, has_null }
    }

    /// walkerOS `castToProperty`: a value containing `null` anywhere is not a Property.
    fn cast(self) -> Option<Resolved> {
        (!self.has_null).then_some(self)
    }
}

/// What a value spec may read besides its input: the collector's consent (used when the
/// input carries no consent of its own), and what its JavaScript sees.
#[derive(Clone, Copy)]
pub struct ValueContext<'a> {
    pub collector_consent: &'a Object,
    /// Inside a `loop`: the consent the looping spec resolved, which an item without its own
    /// inherits (walkerOS: `item.consent || context.consent || collector.consent`).
    pub inherited_consent: Option<&'a Object>,
    /// `context.event` of a function: the event being mapped.
    pub event: &'a dyn crate::code::EventSource,
    /// `context.collector` of a function, as JSON text.
    pub collector: &'a Arc<str>,
    /// The destination whose mapping this is (failed calls are counted under it).
    pub owner: &'a str,
}

impl ValueContext<'_> {
    /// Calls `code` with `value` (`None`: JavaScript's `undefined`); `input` supplies the
    /// consent the call sees (its own, else the collector's). A failure is counted and
    /// logged once, and reads as `None`.
    /// The consent a spec applied to `input` goes by: the input's own, else the one inherited
    /// from a loop, else the collector's.
    fn consent_of<'c>(&'c self, input: &'c Value) -> &'c Object {
        match input.get("consent") {
            Some(Value::Object(own)) => own,
            _ => self.inherited_consent.unwrap_or(self.collector_consent),
        }
    }

    /// The value at `key` in `input`; a path that starts with `ingest` reads the request's
    /// ingest instead, when the input is the event and it came with one (see
    /// [`ingest_path`]); inside a `loop` the item's own `ingest` is read.
    fn lookup(&self, input: &Value, key: &str, default: Option<&Value>) -> Option<(Value, bool)> {
        if let Some(rest) = ingest_path(key)
            && let Some((ingest, _)) = self.event.ingest()
            && self.event.is(input)
        {
            return match rest {
                "" => Some((ingest.clone(), contains_null(ingest))),
                rest => get_with_default(ingest, rest, default),
            };
        }
        get_with_default(input, key, default)
    }

    fn call(&self, code: &Code, value: Option<&Value>, input: &Value) -> Option<Returned> {
        // The event's own consent as the text the event keeps (nothing to write again).
        let own = self
            .event
            .is(input)
            .then(|| self.event.member("consent"))
            .flatten()
            .filter(|text| text.starts_with('{'));
        let consent = match &own {
            Some(text) => Consent::Json(text),
            None => Consent::Object(self.consent_of(input)),
        };
        let call = Call {
            value: value.map_or(Input::Undefined, Input::Json),
            event: self.event,
            consent,
            collector: self.collector,
            awaited: true,
        };
        code.call(&call)
            .map_err(|error| code_failed(self.owner, code, &error))
            .ok()
    }
}

/// The rest of a path into the request's ingest (`"ip"` of `"ingest.ip"`, `""` of
/// `"ingest"`). walkerOS hands the ingest to destinations and routes, not to the mapping
/// language; weir lets a mapping read it, so that a request's IP or user agent can reach a
/// stream entry without code. An event has no `ingest` member of its own, so no walkerOS
/// mapping changes meaning.
pub fn ingest_path(key: &str) -> Option<&str> {
    match key {
        "ingest" => Some(""),
        _ => key.strip_prefix("ingest."),
    }
}

/// Counts a failed call of `code` for `owner` and logs the first failure of each function.
pub fn code_failed(owner: &str, code: &Code, error: &CodeError) {
    metrics::counter!("weir_mapping_code_errors_total", "destination" => owner.to_owned()).increment(1);
    if code.first_failure() {
        let source: String = code.source().chars().take(80).collect();
        tracing::warn!(
            destination = %owner,
            code = %source,
            "a mapping function {error}; it counts as walkerOS counts it (undefined, or false for a condition). Only the first failure of each function is logged; weir_mapping_code_errors_total counts them all"
        );
    }
}

/// A `fn`, `condition` or `validate`: a `"$code:..."` string holding a JavaScript function,
/// compiled now; `mapping` is what its calls see as `context.mapping`.
pub fn parse_code(value: &Value, path: &str, mapping: Value, errors: &mut ConfigErrors) -> Option<Code> {
    let Some(source) = value.as_str().and_then(|text| text.strip_prefix("$code:")) else {
        errors.push(
            path,
            "must be a JavaScript function written as \"$code:(value, context) => ...\" (as walkerOS flow files write functions)",
        );
        return None;
    };
    match Code::compile(source, mapping) {
        Ok(code) => Some(code),
        Err(CodeError::Thrown(message)) => {
            errors.push(path, format!("the JavaScript does not compile: {message}"));
            None
        }
        Err(CodeError::NotAFunction(what)) => {
            errors.push(path, format!("must be a JavaScript function; this is {what}"));
            None
        }
        Err(other) => {
            errors.push(path, format!("the JavaScript {other}"));
            None
        }
    }
}

/// A value spec inside a destination's typed settings (RudderStack's `identify`, `group`):
/// parsed as [`ValueSpec::parse`] does, its problems reported as one error at that key.
impl<'de> serde::Deserialize<'de> for ValueSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let mut errors = ConfigErrors::default();
        match ValueSpec::parse(&value, "", &mut errors) {
            Some(spec) if errors.is_empty() => Ok(spec),
            _ => {
                let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Err(serde::de::Error::custom(problems.join("; ")))
            }
        }
    }
}

impl ValueSpec {
    /// Parses a spec at `path`; JavaScript and unknown keys are errors.
    pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<ValueSpec> {
        match value {
            Value::String(key) => Some(ValueSpec::Key(key.clone())),
            Value::Array(items) => {
                let parsed: Vec<Option<ValueSpec>> = items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| ValueSpec::parse(item, &join(path, &index.to_string()), errors))
                    .collect();
                parsed
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(ValueSpec::Alternatives)
            }
            Value::Object(map) => ValueConfig::parse(map, path, errors).map(|c| ValueSpec::Config(Box::new(c))),
            other => {
                let spec = ValueSpec::Nothing(crate::event::JsonKind::of(other));
                spec.warn_ignored(path, errors);
                Some(spec)
            }
        }
    }

    /// Warns about every part of the spec that yields nothing because it is not a spec
    /// (for specs read through serde, which has no path to report at).
    pub fn warn_ignored(&self, path: &str, errors: &mut ConfigErrors) {
        match self {
            ValueSpec::Key(_) => {}
            ValueSpec::Nothing(kind) => errors.warn(
                path,
                format!(
                    "{kind} is not a mapping value and yields nothing, as in walkerOS (use a path string, an object or a list)"
                ),
            ),
            ValueSpec::Alternatives(items) => {
                for (index, item) in items.iter().enumerate() {
                    item.warn_ignored(&join(path, &index.to_string()), errors);
                }
            }
            ValueSpec::Config(config) => {
                for (key, spec) in config.map.iter().flatten() {
                    spec.warn_ignored(&join(&join(path, "map"), key), errors);
                }
                for (index, spec) in config.set.iter().flatten().enumerate() {
                    spec.warn_ignored(&join(&join(path, "set"), &index.to_string()), errors);
                }
                if let Some(looped) = &config.loop_over {
                    if let LoopScope::Spec(scope) = &looped.0 {
                        scope.warn_ignored(&join(path, "loop.0"), errors);
                    }
                    looped.1.warn_ignored(&join(path, "loop.1"), errors);
                }
            }
        }
    }

    /// walkerOS `getMappingValue(input, spec)`: the top-level evaluation.
    pub fn resolve(&self, input: &Value, context: &ValueContext<'_>) -> Option<Resolved> {
        match self {
            ValueSpec::Alternatives(items) => items.iter().find_map(|item| item.process(input, context)),
            single => single.process(input, context),
        }
    }

    /// Like [`resolve`](Self::resolve), as plain JSON (holes become `null`).
    pub fn value(&self, input: &Value, context: &ValueContext<'_>) -> Option<Value> {
        self.resolve(input, context).map(|r| r.value)
    }

    /// Adds to `members` the event's top-level members this spec reads, when it is evaluated
    /// on the event; `false` when it may read more than named members: a function, a
    /// condition or a validation (they see the whole input), a loop, an `ingest` or `*` path,
    /// or a config that yields its input. A destination that evaluates only such specs can
    /// then parse those members instead of the whole event.
    pub fn event_members(&self, members: &mut Vec<String>) -> bool {
        match self {
            ValueSpec::Nothing(_) => true,
            ValueSpec::Key(key) => key_member(key, members),
            ValueSpec::Alternatives(items) => items.iter().all(|item| item.event_members(members)),
            ValueSpec::Config(config) => config.event_members(members),
        }
    }

    /// walkerOS `processMappingValue(input, spec)`: one alternative.
    fn process(&self, input: &Value, context: &ValueContext<'_>) -> Option<Resolved> {
        match self {
            ValueSpec::Key(key) => context
                .lookup(input, key, None)
                .map(|(value, has_null)| Resolved { value, has_null })
                .and_then(Resolved::cast),
            ValueSpec::Config(config) => config.process(input, context),
            ValueSpec::Nothing(_) => None,
            ValueSpec::Alternatives(items) => {
                // Nested list: the first truthy result, else the last result.
                let mut last = None;
                for item in items {
                    last = item.process(input, context);
                    if last.as_ref().is_some_and(|r| truthy(&r.value)) {
                        break;
                    }
                }
                last
            }
        }
    }
}

/// The top-level member a path starts at, added to `members`; `false` for paths that do not
/// name one (empty, `*`) or that may read the request's ingest instead.
fn key_member(key: &str, members: &mut Vec<String>) -> bool {
    let first = key.split('.').next().unwrap_or_default();
    if first.is_empty() || first == "*" || ingest_path(key).is_some() {
        return false;
    }
    add_member(members, first);
    true
}

fn add_member(members: &mut Vec<String>, name: &str) {
    if !members.iter().any(|member| member == name) {
        members.push(name.to_owned());
    }
}

impl ValueConfig {
    /// See [`ValueSpec::event_members`].
    fn event_members(&self, members: &mut Vec<String>) -> bool {
        if self.empty {
            return true;
        }
        if self.condition.is_some() || self.function.is_some() || self.validate.is_some() || self.loop_over.is_some() {
            return false;
        }
        // Without a key, map or set the result starts from the static value, else the input.
        if self.key.is_none() && self.map.is_none() && self.set.is_none() && self.value.is_none() {
            return false;
        }
        if self.consent.is_some() {
            add_member(members, "consent");
        }
        self.key.as_deref().is_none_or(|key| key_member(key, members))
            && self.map.iter().flatten().all(|(_, spec)| spec.event_members(members))
            && self.set.iter().flatten().all(|spec| spec.event_members(members))
    }

    fn parse(map: &Map<String, Value>, path: &str, errors: &mut ConfigErrors) -> Option<ValueConfig> {
        let mut config = ValueConfig {
            empty: map.is_empty(),
            ..ValueConfig::default()
        };
        let mut ok = true;
        for (key, value) in map {
            let at = join(path, key);
            match key.as_str() {
                "key" => match value {
                    Value::String(path) => config.key = Some(path.clone()),
                    _ => {
                        errors.push(at, "must be a path string");
                        ok = false;
                    }
                },
                "value" => config.value = Some(value.clone()),
                "map" => match value {
                    Value::Object(entries) => {
                        let mut parsed = Vec::with_capacity(entries.len());
                        for (name, spec) in entries {
                            match ValueSpec::parse(spec, &join(&at, name), errors) {
                                Some(spec) => parsed.push((name.clone(), spec)),
                                None => ok = false,
                            }
                        }
                        config.map = Some(parsed);
                    }
                    _ => {
                        errors.push(at, "must be an object of key → mapping value");
                        ok = false;
                    }
                },
                "loop" => match value.as_array().map(Vec::as_slice) {
                    Some([scope, item]) => {
                        let scope = match scope {
                            Value::String(this) if this == "this" => Some(LoopScope::This),
                            other => ValueSpec::parse(other, &join(&at, "0"), errors).map(LoopScope::Spec),
                        };
                        let item = ValueSpec::parse(item, &join(&at, "1"), errors);
                        match (scope, item) {
                            (Some(scope), Some(item)) => config.loop_over = Some(Box::new((scope, item))),
                            _ => ok = false,
                        }
                    }
                    _ => {
                        errors.push(at, "must be a list of two: [scope, item mapping]");
                        ok = false;
                    }
                },
                "set" => match value {
                    Value::Array(items) => {
                        let parsed: Option<Vec<ValueSpec>> = items
                            .iter()
                            .enumerate()
                            .map(|(index, item)| ValueSpec::parse(item, &join(&at, &index.to_string()), errors))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .collect();
                        match parsed {
                            Some(parsed) => config.set = Some(parsed),
                            None => ok = false,
                        }
                    }
                    _ => {
                        errors.push(at, "must be a list of mapping values");
                        ok = false;
                    }
                },
                "consent" => match parse_consent(value, &at, errors) {
                    Some(consent) => config.consent = Some(consent),
                    None => ok = false,
                },
                "fn" | "condition" | "validate" => {
                    let code = parse_code(value, &at, Value::Object(map.clone()), errors);
                    let slot = match key.as_str() {
                        "fn" => &mut config.function,
                        "condition" => &mut config.condition,
                        _ => &mut config.validate,
                    };
                    match code {
                        Some(code) => *slot = Some(code),
                        None => ok = false,
                    }
                }
                _ => {
                    errors.push(at, "unknown key in a mapping value");
                    ok = false;
                }
            }
        }
        ok.then_some(config)
    }

    fn process(&self, input: &Value, context: &ValueContext<'_>) -> Option<Resolved> {
        if self.empty {
            return None;
        }
        if let Some(condition) = &self.condition
            && !context.call(condition, Some(input), input).is_some_and(|r| r.truthy)
        {
            // Not even the static value (walkerOS returns at once).
            return None;
        }
        let fallback = || self.value.clone().map(Resolved::from_json);
        if let Some(required) = &self.consent {
            // The input's own consent when it has one (the event's), else the inherited one.
            if granted_consent(Some(required), context.consent_of(input), None).is_none() {
                // Denied: the static value, as is (walkerOS does not cast it).
                return fallback();
            }
        }
        // walkerOS starts from the static value, else the input; a `fn`, `key`, `map` or `set`
        // (without a `loop`, which wins over them) always replaces it, so it is only copied
        // when it can be the result.
        let replaced = self.function.is_some()
            || self.key.is_some()
            || (self.loop_over.is_none() && (self.map.is_some() || self.set.is_some()));
        let mut working = match (&self.value, replaced) {
            (_, true) => None,
            (Some(value), false) => Some(Resolved::from_json(value.clone())),
            (None, false) => Some(Resolved::from_json(input.clone())),
        };
        if let Some(function) = &self.function {
            // A code result holds no real null: castToProperty refused those inside.
            working = context
                .call(function, Some(input), input)
                .and_then(|returned| returned.property)
                .map(|value| Resolved { value, has_null: false });
        }
        if let Some(key) = &self.key {
            working = context
                .lookup(input, key, self.value.as_ref())
                .map(|(value, has_null)| Resolved { value, has_null });
        }
        if let Some(looped) = &self.loop_over {
            let (scope, item) = looped.as_ref();
            let list = match scope {
                LoopScope::This => Some(Resolved::from_json(Value::Array(vec![input.clone()]))),
                LoopScope::Spec(spec) => spec.resolve(input, context),
            };
            if let Some(Resolved {
                value: Value::Array(items),
                ..
            }) = list
            {
                let within = ValueContext {
                    inherited_consent: Some(context.consent_of(input)),
                    ..*context
                };
                let mut has_null = false;
                let mut out = Vec::with_capacity(items.len());
                for element in &items {
                    if let Some(resolved) = item.resolve(element, &within) {
                        has_null |= resolved.has_null;
                        out.push(resolved.value);
                    }
                }
                working = Some(Resolved {
                    value: Value::Array(out),
                    has_null,
                });
            }
        } else if let Some(entries) = &self.map {
            let mut has_null = false;
            let mut out = Map::with_capacity(entries.len());
            for (name, spec) in entries {
                if let Some(resolved) = spec.resolve(input, context) {
                    has_null |= resolved.has_null;
                    out.insert(name.clone(), resolved.value);
                }
            }
            working = Some(Resolved {
                value: Value::Object(out),
                has_null,
            });
        } else if let Some(items) = &self.set {
            // Every item's result, undefined ones kept as holes.
            let mut has_null = false;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.process(input, context) {
                    Some(resolved) => {
                        has_null |= resolved.has_null;
                        out.push(resolved.value);
                    }
                    None => out.push(Value::Null),
                }
            }
            working = Some(Resolved {
                value: Value::Array(out),
                has_null,
            });
        }
        if let Some(validate) = &self.validate {
            // Gets what was produced (undefined when nothing was); falsy or a throw drops it.
            let produced = working.as_ref().map(|resolved| &resolved.value);
            if !context.call(validate, produced, input).is_some_and(|r| r.truthy) {
                working = None;
            }
        }
        working
            .and_then(Resolved::cast)
            .or_else(|| fallback().and_then(Resolved::cast))
    }
}

/// A consent map `{group: bool}`.
pub fn parse_consent(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Object> {
    match value {
        Value::Object(map) if map.values().all(Value::is_boolean) => Some(map.clone()),
        _ => {
            errors.push(path, "must be an object of consent group → true/false");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> ValueSpec {
        let mut errors = ConfigErrors::default();
        let parsed = ValueSpec::parse(&value, "test", &mut errors);
        assert!(errors.is_empty(), "{errors}");
        parsed.unwrap()
    }

    fn eval(input: &Value, mapping: Value) -> Option<Value> {
        let consent = Object::new();
        let collector: Arc<str> = Arc::from("{}");
        spec(mapping).value(
            input,
            &ValueContext {
                collector_consent: &consent,
                inherited_consent: None,
                event: input,
                collector: &collector,
                owner: "test",
            },
        )
    }

    fn ev() -> Value {
        json!({
            "data": {"id": "o1", "total": 0, "items": [{"id": "a", "p": 1}, {"id": "b", "p": 2}]},
            "user": {"email": "E@X.COM"},
            "consent": {"marketing": false, "functional": true}
        })
    }

    /// What a spec says it reads is all it reads: evaluated on only those members of the
    /// event, it gives what it gives on the whole event.
    #[test]
    fn a_spec_reads_only_the_members_it_names() {
        let event = ev();
        let cases = [
            (json!("data.id"), Some(vec!["data"])),
            (json!("user.email"), Some(vec!["user"])),
            (json!("nothing.here"), Some(vec!["nothing"])),
            (json!(["data.nope", "user.email"]), Some(vec!["data", "user"])),
            (json!({"key": "data.nope", "value": "fallback"}), Some(vec!["data"])),
            (json!({"value": "USD"}), Some(vec![])),
            (json!({}), Some(vec![])),
            (json!(true), Some(vec![])),
            (
                json!({"map": {"id": "data.id", "mail": {"key": "user.email"}}, "consent": {"marketing": true}}),
                Some(vec!["consent", "data", "user"]),
            ),
            (json!({"set": ["data.total", "user.email"]}), Some(vec!["data", "user"])),
            (
                json!({"consent": {"functional": true}, "key": "data.id"}),
                Some(vec!["consent", "data"]),
            ),
            // Read more than named members: the whole event is needed.
            (json!(""), None),
            (json!("*.id"), None),
            (json!("ingest.ip"), None),
            (json!({"consent": {"functional": true}}), None),
            (json!({"loop": ["data.items", "id"]}), None),
            (json!({"fn": "$code:(value) => value.data.id"}), None),
            (
                json!({"key": "data.id", "condition": "$code:(value) => !!value.user"}),
                None,
            ),
            (json!(["user.email", {"fn": "$code:(value) => 1"}]), None),
        ];
        for (mapping, expected) in cases {
            let parsed = spec(mapping.clone());
            let mut members = Vec::new();
            let named = parsed.event_members(&mut members).then_some(members);
            let mut sorted = named.clone();
            if let Some(members) = &mut sorted {
                members.sort();
            }
            let expected: Option<Vec<String>> = expected.map(|m| m.into_iter().map(String::from).collect());
            assert_eq!(sorted, expected, "{mapping}");
            if let Some(members) = named {
                let only: Map<String, Value> = event
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(key, _)| members.contains(key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                assert_eq!(
                    eval(&Value::Object(only), mapping.clone()),
                    eval(&event, mapping.clone()),
                    "{mapping}"
                );
            }
        }
    }

    /// `mapping` in vectors/walkeros-destinations-and-mapping.json, inputs from walkerOS's;
    /// its functions written as flow files write them (`$code:`).
    #[test]
    fn walkeros_value_vectors() {
        let vectors: Value = serde_json::from_str(include_str!(
            "../../tests/vectors/walkeros-destinations-and-mapping.json"
        ))
        .unwrap();
        let expected = &vectors["mapping"];
        let ev = ev();
        let cases = [
            ("path", json!("data.id")),
            ("keyWithDefault", json!({"key": "data.nope", "value": "fallback"})),
            ("staticValue", json!({"value": "USD"})),
            ("arrayFirstDefined", json!(["data.nope", "data.id"])),
            ("arrayFalsyZero", json!(["data.total", "data.id"])),
            ("arrayTopLevelZero", json!(["data.total", "data.id"])),
            ("nestedArrayFalsy", json!([["data.total", "data.id"]])),
            ("set", json!({"set": ["data.id", "data.nope", {"value": "x"}]})),
            (
                "map",
                json!({"map": {"id": "data.id", "cur": {"value": "EUR"}, "miss": "data.nope"}}),
            ),
            (
                "loop",
                json!({"loop": ["data.items", {"map": {"item_id": "id", "price": "p"}}]}),
            ),
            ("loopThis", json!({"loop": ["this", {"key": "data.id"}]})),
            ("wildcardPath", json!("data.items.*.id")),
            ("indexPath", json!("data.items.1.id")),
            (
                "consentDeniedWithValue",
                json!({"key": "user.email", "consent": {"marketing": true}, "value": "redacted"}),
            ),
            (
                "consentGranted",
                json!({"key": "user.email", "consent": {"functional": true}}),
            ),
            ("fn", json!({"fn": "$code:(e) => e.user.email.toLowerCase()"})),
            ("fnPlusKey", json!({"fn": "$code:() => 'fromFn'", "key": "data.id"})),
            ("condTrue", json!({"condition": "$code:() => true", "value": "x"})),
            (
                "validateFailWithValue",
                json!({"key": "data.nope", "value": "dflt", "validate": "$code:() => false"}),
            ),
        ];
        for (name, mapping) in cases {
            assert_eq!(eval(&ev, mapping).as_ref(), Some(&expected[name]), "vector {name}");
        }
        assert_eq!(eval(&ev, json!("data.nope")), None);
        assert_eq!(
            eval(&ev, json!({"key": "user.email", "consent": {"marketing": true}})),
            None
        );
        assert_eq!(eval(&ev, json!({})), None);
        assert_eq!(eval(&ev, json!({"condition": "$code:() => false", "value": "x"})), None);
        assert_eq!(
            eval(&ev, json!({"key": "data.id", "validate": "$code:(v) => v === 'zzz'"})),
            None
        );
        assert_eq!(eval(&ev, json!({"fn": "$code:() => () => 1"})), None);
    }

    /// walkerOS 4.4's results: a throwing fn is undefined (the static value applies), a
    /// throwing condition is false (nothing, not even the static value), a throwing validate
    /// drops the value; promises are awaited; validate sees the produced value.
    #[test]
    fn functions_follow_walkeros_results() {
        let ev = ev();
        let cases = [
            (
                json!({"fn": "$code:() => { throw new Error('x') }", "value": "static"}),
                Some(json!("static")),
            ),
            (json!({"fn": "$code:() => { throw new Error('x') }"}), None),
            (
                json!({"condition": "$code:() => { throw new Error('x') }", "value": "static"}),
                None,
            ),
            (
                json!({"key": "data.id", "validate": "$code:() => { throw new Error('x') }", "value": "v"}),
                Some(json!("v")),
            ),
            (json!({"fn": "$code:async (e) => e.data.id + '!'"}), Some(json!("o1!"))),
            (json!({"condition": "$code:async () => false", "value": "x"}), None),
            (
                json!({"fn": "$code:() => null", "value": "static"}),
                Some(json!("static")),
            ),
            (
                json!({"fn": "$code:() => new Date()", "value": "static"}),
                Some(json!("static")),
            ),
            (json!({"fn": "$code:() => NaN"}), None),
            (json!({"fn": "$code:() => [1, undefined]"}), Some(json!([1, null]))),
            (
                json!({"fn": "$code:() => ({a: null})", "value": "static"}),
                Some(json!("static")),
            ),
            (
                json!({"key": "data.total", "validate": "$code:(v) => v === 0"}),
                Some(json!(0)),
            ),
            (
                json!({"key": "data.nope", "validate": "$code:(v) => v === undefined", "value": "d"}),
                Some(json!("d")),
            ),
            (
                json!({"map": {"a": "data.id"}, "validate": "$code:(v) => v.a === 'o1'"}),
                Some(json!({"a": "o1"})),
            ),
            (
                json!({"fn": "$code:(e, c) => c.consent.functional && !c.consent.marketing"}),
                Some(json!(true)),
            ),
            (
                json!({"fn": "$code:(e, c) => c.mapping.value", "value": "mine"}),
                Some(json!("mine")),
            ),
            (
                json!({"key": "user.email", "consent": {"marketing": true}, "fn": "$code:() => 'never'", "value": "r"}),
                Some(json!("r")),
            ),
        ];
        for (mapping, expected) in cases {
            assert_eq!(eval(&ev, mapping.clone()), expected, "{mapping}");
        }
        // A loop item without consent of its own goes by the event's (not the collector's,
        // which is empty here).
        let items =
            json!({"consent": {"functional": true}, "data": {"items": [{"id": "a"}, {"id": "b", "consent": {}}]}});
        assert_eq!(
            eval(
                &items,
                json!({"loop": ["data.items", {"key": "id", "consent": {"functional": true}}]})
            ),
            Some(json!(["a"]))
        );
        assert_eq!(
            eval(
                &items,
                json!({"loop": ["data.items", {"fn": "$code:(item, c) => c.consent.functional === true"}]})
            ),
            Some(json!([true, false]))
        );
        // A failed condition in an alternative moves on to the next one.
        assert_eq!(
            eval(
                &ev,
                json!([{"condition": "$code:() => false", "value": "no"}, "data.id"])
            ),
            Some(json!("o1"))
        );
    }

    #[test]
    fn javascript_problems_are_config_errors_naming_the_path() {
        let mut errors = ConfigErrors::default();
        let parsed = ValueSpec::parse(
            &json!({"map": {"email": {"fn": "(v) => v.toLowerCase()"}, "ok": {"validate": "$code:(v) =>"}}}),
            "destinations.d.config.data",
            &mut errors,
        );
        assert!(parsed.is_none());
        let text = errors.to_string();
        assert!(
            text.contains("destinations.d.config.data.map.email.fn: must be a JavaScript function written as \"$code:"),
            "{text}"
        );
        assert!(
            text.contains("destinations.d.config.data.map.ok.validate: the JavaScript does not compile: SyntaxError"),
            "{text}"
        );
    }

    #[test]
    fn null_is_not_a_property_but_holes_are_fine() {
        let input = json!({"data": {"n": null, "items": [{"id": "a"}, {}], "obj": {"a": 1, "b": null}}});
        assert_eq!(eval(&input, json!("data.n")), None);
        assert_eq!(
            eval(&input, json!({"key": "data.n", "value": "dflt"})),
            Some(json!("dflt"))
        );
        assert_eq!(eval(&input, json!("data.obj")), None);
        assert_eq!(eval(&input, json!("data.items.*.id")), Some(json!(["a", null])));
        assert_eq!(eval(&input, json!({"set": ["data.nope"]})), Some(json!([null])));
    }

    #[test]
    fn nested_alternatives_fall_back_to_the_last_result() {
        let input = json!({"a": 0, "b": "", "c": false});
        assert_eq!(eval(&input, json!([["c", "a"]])), Some(json!(0)));
        assert_eq!(eval(&input, json!([["a", "b"]])), Some(json!("")));
        assert_eq!(eval(&input, json!([["b", "missing"]])), None);
        assert_eq!(eval(&input, json!({"map": {"x": ["a", "b"]}})), Some(json!({"x": 0})));
    }

    #[test]
    fn a_loop_over_a_non_list_keeps_the_working_value() {
        let input = json!({"a": 0, "name": "page view"});
        assert_eq!(
            eval(&input, json!({"loop": ["a", "x"], "value": "v"})),
            Some(json!("v"))
        );
        assert_eq!(
            eval(&input, json!({"loop": ["this", {"key": "name"}]})),
            Some(json!(["page view"]))
        );
    }
}
