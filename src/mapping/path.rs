//! Paths into an event: walkerOS's `getByPath` / `setByPath` (walkerOS `packages/core/src/byPath.ts`).
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
        Value::Array(items) => array_index(segment).and_then(|index| items.get(index)),
        _ => None,
    }
}

/// Writes `value` at `path` (walkerOS `setByPath`): missing or scalar intermediates become
/// objects, an existing array is walked by index (an index past its end extends it with
/// `null`s, up to [`MAX_SET_INDEX`]). `None` removes the key: walkerOS writes `undefined`,
/// which disappears when the event is serialized.
pub fn set_by_path(root: &mut Map<String, Value>, path: &str, value: Option<Value>) {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(value) => {
                root.insert((*first).to_owned(), value);
            }
            None => {
                root.shift_remove(*first);
            }
        }
        return;
    }
    let child = root.entry((*first).to_owned()).or_insert(Value::Null);
    set_in(child, rest, value);
}

/// Largest array index a policy may write (bigger ones are ignored, not allocated).
pub const MAX_SET_INDEX: usize = 1000;

fn set_in(node: &mut Value, segments: &[&str], value: Option<Value>) {
    let (segment, rest) = (segments[0], &segments[1..]);
    if let Value::Array(items) = node {
        let Some(index) = array_index(segment).filter(|i| *i <= MAX_SET_INDEX) else {
            return;
        };
        if rest.is_empty() {
            match value {
                Some(value) => {
                    if items.len() <= index {
                        items.resize(index + 1, Value::Null);
                    }
                    items[index] = value;
                }
                // `undefined` in an array serializes as `null`.
                None => {
                    if let Some(slot) = items.get_mut(index) {
                        *slot = Value::Null;
                    }
                }
            }
            return;
        }
        if items.len() <= index {
            items.resize(index + 1, Value::Null);
        }
        return set_in(&mut items[index], rest, value);
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let Value::Object(map) = node else {
        unreachable!("made an object above")
    };
    if rest.is_empty() {
        match value {
            Some(value) => {
                map.insert(segment.to_owned(), value);
            }
            None => {
                map.shift_remove(segment);
            }
        }
        return;
    }
    set_in(map.entry(segment.to_owned()).or_insert(Value::Null), rest, value);
}

/// A canonical decimal array index (`"0"`, `"12"`; not `"01"` or `"-1"`).
fn array_index(segment: &str) -> Option<usize> {
    if segment != "0" && segment.starts_with('0') {
        return None;
    }
    segment.parse().ok()
}

/// Removes the value at a dotted `path` (walkerOS `deleteByPath`, used by rule `remove`):
/// an object key is deleted, an array item is spliced out.
pub fn remove_by_path(root: &mut Value, path: &str) {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut current = root;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(*segment),
            Value::Array(items) => array_index(segment).and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    match current {
        Value::Object(map) => {
            map.shift_remove(*last);
        }
        Value::Array(items) => {
            if let Some(index) = array_index(last).filter(|i| *i < items.len()) {
                items.remove(index);
            }
        }
        _ => {}
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
    fn set_and_remove_walk_arrays_by_index() {
        let mut event = json!({"nested": [{"data": {"price": 1}}, {"data": {}}], "data": {"items": ["a", "b", "c"]}})
            .as_object()
            .cloned()
            .unwrap();
        set_by_path(&mut event, "nested.1.data.price", Some(json!(2)));
        set_by_path(&mut event, "data.items.4", Some(json!("e")));
        let mut value = Value::Object(event);
        assert_eq!(value["nested"], json!([{"data": {"price": 1}}, {"data": {"price": 2}}]));
        assert_eq!(value["data"]["items"], json!(["a", "b", "c", null, "e"]));
        remove_by_path(&mut value, "data.items.0");
        remove_by_path(&mut value, "nested.0.data.price");
        assert_eq!(value["data"]["items"], json!(["b", "c", null, "e"]));
        assert_eq!(value["nested"][0], json!({"data": {}}));
    }

    #[test]
    fn set_creates_objects_and_none_removes() {
        let mut event = json!({"data": {"a": 1}}).as_object().cloned().unwrap();
        set_by_path(&mut event, "user.hash", Some(json!("h")));
        set_by_path(&mut event, "data.a", None);
        assert_eq!(Value::Object(event), json!({"data": {}, "user": {"hash": "h"}}));
    }
}
