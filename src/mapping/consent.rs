//! walkerOS's consent check (`getGrantedConsent`, systems.md §C.6).
//!
//! The state is the collector's consent overlaid with the event's own (the event wins per
//! group); the granted groups are those with a truthy value. A requirement is met when it
//! is empty or when **any one** of its groups is granted: walkerOS's OR semantics.

use serde_json::Value;

use super::truthy;
use crate::event::Object;

/// The granted groups (in state order, then the event's new groups), or `None` when the
/// requirement is not met.
pub fn granted_consent(required: Option<&Object>, state: &Object, individual: Option<&Object>) -> Option<Object> {
    let mut merged = state.clone();
    if let Some(individual) = individual {
        for (group, value) in individual {
            merged.insert(group.clone(), value.clone());
        }
    }
    let granted: Object = merged
        .into_iter()
        .filter(|(_, value)| truthy(value))
        .map(|(group, _)| (group, Value::Bool(true)))
        .collect();
    let Some(required) = required.filter(|required| !required.is_empty()) else {
        return Some(granted);
    };
    let met = required
        .iter()
        .any(|(group, wanted)| truthy(wanted) && granted.contains_key(group));
    met.then_some(granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap()
    }

    /// `grantedConsent` in vectors/walkeros-destinations-and-mapping.json.
    #[test]
    fn walkeros_vectors() {
        let granted = |required: Value, state: Value, individual: Option<Value>| {
            let required = object(required);
            let individual = individual.map(object);
            granted_consent(Some(&required), &object(state), individual.as_ref()).map(Value::Object)
        };
        assert_eq!(
            granted(json!({"a": true, "b": true}), json!({"a": true}), None),
            Some(json!({"a": true}))
        );
        assert_eq!(granted(json!({"a": true}), json!({"b": true}), None), None);
        assert_eq!(
            granted(json!({"a": true}), json!({"a": true}), Some(json!({"a": false}))),
            None
        );
        assert_eq!(
            granted_consent(None, &object(json!({"x": true, "y": false})), None).map(Value::Object),
            Some(json!({"x": true}))
        );
        assert_eq!(granted(json!({}), json!({}), None), Some(json!({})));
    }

    #[test]
    fn the_event_adds_groups_after_the_collector_s() {
        let state = object(json!({"functional": true}));
        let individual = object(json!({"marketing": true}));
        assert_eq!(
            granted_consent(None, &state, Some(&individual)).map(Value::Object),
            Some(json!({"functional": true, "marketing": true}))
        );
    }
}
