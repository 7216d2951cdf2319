//! walkerOS's consent check (`getGrantedConsent`, walkerOS `packages/core/src/consent.ts`).
//!
//! The state is the collector's consent overlaid with the event's own (the event wins per
//! group); the granted groups are those with a truthy value. A requirement is met when it
//! is empty or when **any one** of its groups is granted: walkerOS's OR semantics.

use serde_json::Value;

use crate::event::Object;
use crate::json::truthy;

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

    /// `grantedConsent` in vectors/walkeros-destinations-and-mapping.json (the file records
    /// the results; the inputs are the calls walkerOS's own tests make).
    #[test]
    fn walkeros_vectors() {
        let vectors: Value = serde_json::from_str(include_str!(
            "../../tests/vectors/walkeros-destinations-and-mapping.json"
        ))
        .unwrap();
        let expected = |name: &str| match &vectors["grantedConsent"][name] {
            Value::Bool(false) => None,
            granted => Some(granted.clone()),
        };
        let granted = |required: Option<Value>, state: Value, individual: Option<Value>| {
            let required = required.map(object);
            let individual = individual.map(object);
            granted_consent(required.as_ref(), &object(state), individual.as_ref()).map(Value::Object)
        };
        assert_eq!(
            granted(Some(json!({"a": true, "b": true})), json!({"a": true}), None),
            expected("orSemantics")
        );
        assert_eq!(
            granted(Some(json!({"a": true})), json!({"b": true}), None),
            expected("none")
        );
        assert_eq!(
            granted(Some(json!({"a": true})), json!({"a": true}), Some(json!({"a": false}))),
            expected("individualWins")
        );
        assert_eq!(
            granted(None, json!({"x": true, "y": false}), None),
            expected("noRequirement")
        );
        assert_eq!(granted(Some(json!({})), json!({}), None), expected("emptyRequirement"));
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
