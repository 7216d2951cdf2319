//! Paths into an event: walkerOS's `getByPath` / `setByPath` (systems.md §C.5).
//!
//! Dot notation; a numeric segment indexes an array (`items.1.id`); `*` maps the rest of the
//! path over every item of an array (`items.*.id` → `["a","b"]`). A missing key yields
//! nothing (JavaScript's `undefined`), which callers turn into their default.

use serde_json::{Map, Value};

/// The value at `path` below `root`, or `None` when there is none. `null` is a value.
pub fn get_by_path(root: &Value, path: &str) -> Option<Value> {
    get_with_default(root, path, None).map(|(value, _)| value)
}

/// walkerOS `getByPath(root, path, default)`: the value, with `default` standing in for
/// anything missing (also per element under `*`). The flag says whether the value holds a
/// real `null`; elements missing under `*` without a default are holes (JavaScript
/// `undefined`), written as `null` but not flagged.
pub fn get_with_default(root: &Value, path: &str, default: Option<&Value>) -> Option<(Value, bool)> {
    let mut current = root;
    let mut segments = path.split('.');
    while let Some(segment) = segments.next() {
        if segment == "*"
            && let Value::Array(items) = current
        {
            let rest = segments.collect::<Vec<&str>>().join(".");
            let mut has_null = false;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match get_with_default(item, &rest, default) {
                    Some((value, null)) => {
                        has_null |= null;
                        out.push(value);
                    }
                    None => out.push(Value::Null),
                }
            }
            return Some((Value::Array(out), has_null));
        }
        match step(current, segment) {
            Some(next) => current = next,
            None => return default.map(|value| (value.clone(), contains_null(value))),
        }
    }
    Some((current.clone(), contains_null(current)))
}

/// Whether `value` holds a JSON `null` anywhere.
pub fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(map) => map.values().any(contains_null),
        _ => false,
    }
}

fn step<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(segment),
        // A canonical decimal index only (JavaScript: `items["01"]` is undefined).
        Value::Array(items) if segment == "0" || !segment.starts_with('0') => {
            segment.parse::<usize>().ok().and_then(|index| items.get(index))
        }
        _ => None,
    }
}

/// Writes `value` at `path`, creating objects on the way; `None` removes the key (walkerOS
/// writes `undefined`, which disappears when the event is serialized).
pub fn set_by_path(root: &mut Map<String, Value>, path: &str, value: Option<Value>) {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut map = root;
    for segment in parents {
        let entry = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = entry.as_object_mut().expect("made an object above");
    }
    match value {
        Some(value) => {
            map.insert((*last).to_owned(), value);
        }
        None => {
            map.shift_remove(*last);
        }
    }
}

/// Removes the key at a dotted `path` (walkerOS rule `remove`).
pub fn remove_by_path(root: &mut Value, path: &str) {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut current = root;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(*segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Value::Object(map) = current {
        map.shift_remove(*last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dots_indices_and_wildcards() {
        let event = json!({"data": {"id": "o1", "total": 0, "items": [{"id": "a", "p": 1}, {"id": "b", "p": 2}]}});
        assert_eq!(get_by_path(&event, "data.id"), Some(json!("o1")));
        assert_eq!(get_by_path(&event, "data.total"), Some(json!(0)));
        assert_eq!(get_by_path(&event, "data.nope"), None);
        assert_eq!(get_by_path(&event, "data.items.1.id"), Some(json!("b")));
        assert_eq!(get_by_path(&event, "data.items.*.id"), Some(json!(["a", "b"])));
        assert_eq!(get_by_path(&event, "data.id.deeper"), None);
    }

    #[test]
    fn set_creates_objects_and_none_removes() {
        let mut event = json!({"data": {"a": 1}}).as_object().cloned().unwrap();
        set_by_path(&mut event, "user.hash", Some(json!("h")));
        set_by_path(&mut event, "data.a", None);
        assert_eq!(Value::Object(event), json!({"data": {}, "user": {"hash": "h"}}));
    }
}
