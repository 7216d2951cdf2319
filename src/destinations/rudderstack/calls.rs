//! walkerOS's RudderStack push algorithm (walkerOS `packages/server/destinations/rudderstack/src/push.ts`): which Segment-spec
//! calls one mapped event makes, with the parameters walkerOS hands the Node SDK, in its key
//! order. Pure: de-duplication of identify and group is decided later, in order, by the
//! destination ([`Dedup`] says what to compare).

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

use super::settings::{NamedCall, RudderRuleSettings, RudderSettings};
use crate::delivery::RenderError;
use crate::mapping::{ValueContext, ValueSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Identify,
    Group,
    Page,
    Screen,
    Alias,
    Track,
}

impl CallKind {
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Identify => "identify",
            CallKind::Group => "group",
            CallKind::Page => "page",
            CallKind::Screen => "screen",
            CallKind::Alias => "alias",
            CallKind::Track => "track",
        }
    }
}

/// What an identify or group call is compared on: sent again only when `value` differs from
/// the last one sent for `identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedup {
    pub identity: u64,
    pub value: u64,
}

/// One call with walkerOS's parameters (`timestamp` as JavaScript's `toISOString`).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub kind: CallKind,
    pub params: Map<String, Value>,
    pub dedup: Option<Dedup>,
}

/// Why an event makes no call at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoCalls {
    /// Neither identity resolves to a non-empty string (walkerOS's warning).
    NoIdentity,
    /// Nothing applies: a silent rule with no identify, group, page, screen or alias result.
    Nothing,
}

/// The inputs of one push.
pub struct PushInput<'a> {
    /// The mapped event, as a tree.
    pub event: &'a Value,
    /// The mapped `data`, if any.
    pub data: Option<&'a Value>,
    pub rule: Option<&'a RudderRuleSettings>,
    pub silent: bool,
    pub context: &'a ValueContext<'a>,
    /// `Date.now()`, for an event without a timestamp.
    pub now_ms: f64,
}

/// Steps 2–9 for one event. `Err` is an event walkerOS would throw on (an invalid date).
pub fn calls(settings: &RudderSettings, input: &PushInput<'_>) -> Result<Result<Vec<Call>, NoCalls>, RenderError> {
    // 2. new Date(event.timestamp || Date.now())
    let timestamp = match input.event.get("timestamp").and_then(Value::as_f64) {
        Some(ms) if ms != 0.0 && !ms.is_nan() => ms,
        _ => input.now_ms,
    };
    let timestamp = Value::String(iso_time(timestamp)?);

    // 3. Identity: only non-empty strings count.
    let user_id = non_empty_string(settings.user_id.value(input.event, input.context));
    let anonymous_id = non_empty_string(settings.anonymous_id.value(input.event, input.context));
    let mut identity = Map::new();
    if let Some(id) = &user_id {
        identity.insert("userId".into(), Value::String(id.clone()));
    }
    if let Some(id) = &anonymous_id {
        identity.insert("anonymousId".into(), Value::String(id.clone()));
    }
    // Whom identify and group de-duplicate for: the user, else the anonymous visitor.
    let identity_key = |prefix: &str, id: &str| hash(&(prefix, id));
    let event_identity = match (&user_id, &anonymous_id) {
        (Some(uid), _) => identity_key("user", uid),
        (None, Some(anonymous)) => identity_key("anonymous", anonymous),
        (None, None) => return Ok(Err(NoCalls::NoIdentity)),
    };
    let mut calls = Vec::new();
    let resolve = |spec: &ValueSpec| spec.value(input.event, input.context);

    // 4. Identify: rule first, then the destination's.
    let identify = input
        .rule
        .and_then(|rule| rule.identify.as_ref())
        .or(settings.identify.as_ref());
    if let Some(Value::Object(resolved)) = identify.and_then(resolve) {
        let uid = match resolved.get("userId") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => user_id.clone(),
        };
        let traits = object(resolved.get("traits"));
        let mut params = identity.clone();
        params.insert("timestamp".into(), timestamp.clone());
        if let Some(uid) = &uid {
            params.insert("userId".into(), Value::String(uid.clone()));
        }
        if let Some(traits) = &traits {
            params.insert("traits".into(), traits.clone());
        }
        let who = uid.as_deref().map_or(event_identity, |uid| identity_key("user", uid));
        calls.push(Call {
            kind: CallKind::Identify,
            params,
            dedup: Some(Dedup {
                identity: who,
                value: traits_hash(traits.as_ref()),
            }),
        });
    }

    // 5. Group: needs a non-empty string groupId.
    let group = input
        .rule
        .and_then(|rule| rule.group.as_ref())
        .or(settings.group.as_ref());
    if let Some(Value::Object(resolved)) = group.and_then(resolve)
        && let Some(Value::String(group_id)) = resolved.get("groupId")
        && !group_id.is_empty()
    {
        let traits = object(resolved.get("traits"));
        let mut params = identity.clone();
        params.insert("groupId".into(), Value::String(group_id.clone()));
        params.insert("timestamp".into(), timestamp.clone());
        if let Some(traits) = &traits {
            params.insert("traits".into(), traits.clone());
        }
        calls.push(Call {
            kind: CallKind::Group,
            params,
            dedup: Some(Dedup {
                identity: event_identity,
                value: hash(&(group_id.as_str(), traits_hash(traits.as_ref()))),
            }),
        });
    }

    // 6, 7. Page and screen (rule only): `true`, or an object with name and properties.
    let named = [
        (CallKind::Page, input.rule.and_then(|rule| rule.page.as_ref())),
        (CallKind::Screen, input.rule.and_then(|rule| rule.screen.as_ref())),
    ];
    for (kind, setting) in named {
        let (name, properties) = match setting {
            None => continue,
            Some(NamedCall::Empty) => (String::new(), None),
            Some(NamedCall::Spec(spec)) => match resolve(spec) {
                Some(Value::Object(resolved)) => (
                    match resolved.get("name") {
                        Some(Value::String(name)) => name.clone(),
                        _ => String::new(),
                    },
                    object(resolved.get("properties")),
                ),
                _ => continue,
            },
        };
        let mut params = identity.clone();
        params.insert("timestamp".into(), timestamp.clone());
        params.insert("name".into(), Value::String(name));
        if let Some(properties) = properties {
            params.insert("properties".into(), properties);
        }
        calls.push(Call {
            kind,
            params,
            dedup: None,
        });
    }

    // 8. Alias (rule only): needs a non-empty string previousId; no anonymousId.
    if let Some(spec) = input.rule.and_then(|rule| rule.alias.as_ref())
        && let Some(Value::Object(resolved)) = resolve(spec)
        && let Some(Value::String(previous)) = resolved.get("previousId")
        && !previous.is_empty()
    {
        let mut params = Map::new();
        params.insert("previousId".into(), Value::String(previous.clone()));
        params.insert("timestamp".into(), timestamp.clone());
        if let Some(id) = &user_id {
            params.insert("userId".into(), Value::String(id.clone()));
        }
        calls.push(Call {
            kind: CallKind::Alias,
            params,
            dedup: None,
        });
    }

    // 9. Track unless silent; the event name is the rule's `name` when it has one (the
    // mapping step has applied it already).
    if !input.silent {
        let mut params = identity;
        let name = input.event.get("name").cloned().unwrap_or_else(|| Value::from(""));
        params.insert("event".into(), name);
        let properties = match input.data {
            Some(Value::Object(data)) => Value::Object(data.clone()),
            _ => Value::Object(Map::new()),
        };
        params.insert("properties".into(), properties);
        params.insert("timestamp".into(), timestamp);
        calls.push(Call {
            kind: CallKind::Track,
            params,
            dedup: None,
        });
    }
    Ok(if calls.is_empty() {
        Err(NoCalls::Nothing)
    } else {
        Ok(calls)
    })
}

fn non_empty_string(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Some(text),
        _ => None,
    }
}

fn object(value: Option<&Value>) -> Option<Value> {
    value.filter(|value| value.is_object()).cloned()
}

/// walkerOS compares `JSON.stringify(traits)` (or `''`): the same text hashes the same.
fn traits_hash(traits: Option<&Value>) -> u64 {
    let text = traits.map(crate::json::to_vec).unwrap_or_default();
    hash(&text)
}

fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The latest time `Date#toISOString` writes with a four-digit year (9999-12-31T23:59:59.999Z).
const MAX_ISO_MS: f64 = 253_402_300_799_999.0;

/// JavaScript's `new Date(ms).toISOString()` for times from 1970 to 9999 (milliseconds,
/// always three fraction digits, `Z`); other times are an error, as weir cannot write the
/// six-digit years JavaScript would (and walkerOS throws on an invalid date).
pub fn iso_time(ms: f64) -> Result<String, RenderError> {
    // Date truncates a fractional time value towards zero.
    let ms = ms.trunc();
    if !(0.0..=MAX_ISO_MS).contains(&ms) {
        return Err(RenderError::OutOfRange {
            field: "timestamp",
            value: ms.to_string(),
            allowed: "the dates RudderStack takes (1970 to 9999)",
        });
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    Ok(humantime::format_rfc3339_millis(time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_are_javascripts() {
        assert_eq!(iso_time(1_700_000_100.0).unwrap(), "1970-01-20T16:13:20.100Z");
        assert_eq!(iso_time(0.9).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_767_225_600_123.0).unwrap(), "2026-01-01T00:00:00.123Z");
        assert!(iso_time(-1.0).is_err());
        assert!(iso_time(8.64e15).is_err());
    }
}
