//! Optimizely Agent's notifications on Redis (Agent's `pkg/syncer`): its names, its entry,
//! and what a notification is as a weir event — shared by the stream source (reading Agent's
//! entries), the `redis` destination (writing them as Agent does) and the SSE hub's Agent mode
//! (framing them as Agent's endpoint does).
//!
//! Agent publishes `{"type": <decision|track|project_config_update>, "message": <the
//! notification>}` as the `data` field of `XADD stream:optimizely-sync-<sdkKey> * data <json>
//! timestamp <unix seconds>` (Pub/Sub before Redis 5: `PUBLISH optimizely-sync-<sdkKey>
//! <json>`). In weir that is the event `notification <type>` whose `data` is the message and
//! whose `custom.sdkKey` is the key, so a flow can map, route and filter it like any other.
//! Agent's datafile-sync channel (`optimizely-sync-datafile`, the bare SDK key as message)
//! becomes `datafile sync` with `data.sdkKey`.

use serde_json::{Map, Value};

/// Agent's channel prefix; its stream is `stream:` + the channel.
pub const CHANNEL_PREFIX: &str = "optimizely-sync-";
/// What Agent puts before a channel name to name its stream.
pub const STREAM_PREFIX: &str = "stream:";
/// The channel Agent's datafile webhook publishes to (not an SDK key's).
pub const DATAFILE_CHANNEL: &str = "optimizely-sync-datafile";
/// The notification types Agent streams.
pub const TYPES: [&str; 3] = ["decision", "track", "project_config_update"];
/// The entity of a notification event: `notification decision`.
pub const ENTITY: &str = "notification";
/// Where a notification event carries its SDK key.
pub const SDK_KEY_PATH: &str = "custom.sdkKey";

/// `stream:optimizely-sync-<sdkKey>`.
pub fn stream_for(sdk_key: &str) -> String {
    format!("{STREAM_PREFIX}{CHANNEL_PREFIX}{sdk_key}")
}

/// The Pub/Sub channel Agent uses where it would use `stream` (the stream name without
/// `stream:`); other names as they are.
pub fn channel_for(stream: &str) -> &str {
    stream
        .strip_prefix(STREAM_PREFIX)
        .filter(|channel| channel.starts_with(CHANNEL_PREFIX))
        .unwrap_or(stream)
}

/// The SDK key an Agent stream or channel name is for.
pub fn sdk_key_of(name: &str) -> Option<&str> {
    name.strip_prefix(STREAM_PREFIX)
        .unwrap_or(name)
        .strip_prefix(CHANNEL_PREFIX)
        .filter(|key| !key.is_empty())
}

/// Why an Agent entry is not a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the Optimizely payload is not JSON: {0}")]
    NotJson(String),
    #[error("the Optimizely payload has no string `type`")]
    NoType,
    #[error("the Optimizely payload's `message` is not a JSON object")]
    MessageNotObject,
    #[error("a datafile-sync message is the SDK key as text; this one is empty or not UTF-8")]
    BadDatafileKey,
}

/// A message read from an Agent stream or channel named `name`, as a partial weir event;
/// `timestamp` is the entry's `timestamp` field (unix seconds), if any.
pub fn event_from(name: &str, payload: &[u8], timestamp: Option<&[u8]>) -> Result<Value, NotificationError> {
    let mut event = Map::new();
    if channel_for(name) == DATAFILE_CHANNEL {
        let key = std::str::from_utf8(payload)
            .ok()
            .filter(|key| !key.is_empty())
            .ok_or(NotificationError::BadDatafileKey)?;
        event.insert("name".into(), Value::from("datafile sync"));
        event.insert("data".into(), serde_json::json!({ "sdkKey": key }));
    } else {
        let parsed: Value = serde_json::from_slice(payload).map_err(|e| NotificationError::NotJson(e.to_string()))?;
        let kind = parsed
            .get("type")
            .and_then(Value::as_str)
            .ok_or(NotificationError::NoType)?;
        let message = match parsed.get("message") {
            Some(Value::Object(message)) => message.clone(),
            _ => return Err(NotificationError::MessageNotObject),
        };
        event.insert("name".into(), Value::from(format!("{ENTITY} {kind}")));
        event.insert("data".into(), Value::Object(message));
        if let Some(key) = sdk_key_of(name) {
            event.insert("custom".into(), serde_json::json!({ "sdkKey": key }));
        }
    }
    let seconds = timestamp.and_then(|t| std::str::from_utf8(t).ok()?.trim().parse::<u64>().ok());
    if let Some(seconds) = seconds {
        event.insert("timestamp".into(), Value::from(seconds.saturating_mul(1000)));
    }
    Ok(Value::Object(event))
}

/// Whether a payload with no weir event in it looks like Agent's (`type` and `message`).
pub fn looks_like_payload(value: &Value) -> bool {
    value.get("name").is_none() && value.get("type").is_some_and(Value::is_string) && value.get("message").is_some()
}

/// [`looks_like_payload`] of valid JSON text, read from its top level without building a
/// tree (a key written with escapes is left to the tree).
pub fn looks_like_payload_text(text: &str) -> bool {
    let object = text.trim_start();
    let (mut name, mut kind, mut message) = (false, None, false);
    for (key, raw, _) in crate::json::members(object) {
        match key {
            _ if key.contains('\\') => {
                return serde_json::from_str::<Value>(text).is_ok_and(|value| looks_like_payload(&value));
            }
            "name" => name = true,
            "type" => kind = Some(raw.starts_with('"')),
            "message" => message = true,
            _ => {}
        }
    }
    !name && kind == Some(true) && message
}

/// The notification type of an event named `notification <type>`.
pub fn notification_type(event_name: &str) -> Option<&str> {
    event_name
        .strip_prefix(ENTITY)
        .and_then(|rest| rest.strip_prefix(' '))
        .filter(|kind| !kind.is_empty())
}

/// Agent's `data` field: `{"type":<kind>,"message":<message JSON>}`.
pub fn payload(kind: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + kind.len() + 24);
    out.extend_from_slice(b"{\"type\":");
    crate::json::write(&mut out, kind);
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(message);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text check agrees with the tree's on Agent's payloads and on everything near them.
    #[test]
    fn a_payload_is_recognised_from_its_text_as_from_its_tree() {
        for (text, agent) in [
            (r#"{"type":"decision","message":{"a":1}}"#, true),
            (r#" { "type" : "track", "message" : null } "#, true),
            (r#"{"message":"m","type":"x"}"#, true),
            (r#"{"\u0074ype":"x","message":1}"#, true),
            (r#"{"type":1,"message":{}}"#, false),
            (r#"{"type":"x"}"#, false),
            (r#"{"type":"x","message":1,"name":"page view"}"#, false),
            (r#"{"type":"x","message":1,"type":2}"#, false),
            (r#"{"name":"page view","data":{"type":"x","message":1}}"#, false),
            (r#"["type","message"]"#, false),
            (r#""type""#, false),
        ] {
            let tree: Value = serde_json::from_str(text).unwrap();
            assert_eq!(looks_like_payload(&tree), agent, "tree: {text}");
            assert_eq!(looks_like_payload_text(text), agent, "text: {text}");
        }
    }

    #[test]
    fn names_are_agent_s() {
        assert_eq!(stream_for("abc"), "stream:optimizely-sync-abc");
        assert_eq!(sdk_key_of("stream:optimizely-sync-abc"), Some("abc"));
        assert_eq!(sdk_key_of("optimizely-sync-abc"), Some("abc"));
        assert_eq!(sdk_key_of("stream:optimizely-sync-"), None);
        assert_eq!(sdk_key_of("events"), None);
        assert_eq!(channel_for("stream:optimizely-sync-*"), "optimizely-sync-*");
        assert_eq!(channel_for("stream:other"), "stream:other");
        assert_eq!(channel_for("events"), "events");
    }

    /// Agent's example entry (systems.md F.2).
    #[test]
    fn agent_s_entries_are_notification_events() {
        let payload = br#"{"type":"decision","message":{"type":"flag","userId":"u1","decisionInfo":{"flagKey":"f"}}}"#;
        let event = event_from("stream:optimizely-sync-abc", payload, Some(b"1759461274")).unwrap();
        assert_eq!(
            event,
            serde_json::json!({
                "name": "notification decision",
                "data": {"type": "flag", "userId": "u1", "decisionInfo": {"flagKey": "f"}},
                "custom": {"sdkKey": "abc"},
                "timestamp": 1759461274000u64
            })
        );
        assert_eq!(notification_type("notification decision"), Some("decision"));
        assert_eq!(notification_type("page view"), None);
        assert_eq!(
            event_from("stream:optimizely-sync-abc", b"{}", None),
            Err(NotificationError::NoType)
        );
        assert_eq!(
            event_from("stream:optimizely-sync-abc", br#"{"type":"track","message":1}"#, None),
            Err(NotificationError::MessageNotObject)
        );
        assert!(matches!(
            event_from("optimizely-sync-abc", b"nope", None),
            Err(NotificationError::NotJson(_))
        ));
        let datafile = event_from("stream:optimizely-sync-datafile", b"abc", Some(b"1")).unwrap();
        assert_eq!(
            datafile,
            serde_json::json!({"name": "datafile sync", "data": {"sdkKey": "abc"}, "timestamp": 1000})
        );
    }

    #[test]
    fn payloads_are_agent_s_wrapper() {
        assert_eq!(
            payload("track", br#"{"eventKey":"buy"}"#),
            br#"{"type":"track","message":{"eventKey":"buy"}}"#
        );
    }
}
