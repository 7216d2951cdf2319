use serde_json::json;

use super::*;
use crate::config::flow::CollectorConfig;

#[derive(Debug, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestSettings {
    stream_key: Option<String>,
}

impl RuleSettings for TestSettings {}

fn mapping(config: Value) -> DestinationMapping<TestSettings> {
    let mut errors = ConfigErrors::default();
    let mut slots = 0;
    let parsed = DestinationMapping::from_config(config.as_object().unwrap(), "config", &mut errors, &mut |_| {
        slots += 1;
        slots
    });
    assert!(errors.is_empty(), "{errors}");
    parsed.unwrap()
}

fn collector(config: Value) -> Collector {
    let object = |key: &str| config.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    Collector::new(&CollectorConfig {
        globals: object("globals"),
        user: object("user"),
        consent: object("consent"),
        custom: object("custom"),
        name: None,
        release: Some("4.4.0".into()),
    })
}

fn mapped(
    mapping: &DestinationMapping<TestSettings>,
    collector: &Collector,
    event: Value,
) -> (Value, Option<Value>, String) {
    let event = collector.enrich(event).unwrap();
    match mapping.apply(&event, collector) {
        MappingOutcome::Mapped(m) => (m.event.tree().clone(), m.data, m.rule_key),
        MappingOutcome::Ignored => panic!("ignored"),
        MappingOutcome::Denied => panic!("denied"),
    }
}

/// `ruleLookup` in vectors/walkeros-destinations-and-mapping.json. The `product view x1`
/// vector needs a JavaScript `condition`, which weir rejects at load.
#[test]
fn rule_lookup_vectors() {
    let rules = mapping(json!({"mapping": {
        "product": {"*": {"name": "P*"}, "view": [{"name": "plain"}]},
        "*": {"click": {"name": "*click"}, "*": {"name": "all"}}
    }}));
    let lookup = |name: &str| {
        rules
            .rules
            .lookup(name)
            .map(|(rule, key)| (rule.name.clone().unwrap(), key))
    };
    assert_eq!(lookup("product view"), Some(("plain".into(), "product view".into())));
    assert_eq!(lookup("product add"), Some(("P*".into(), "product *".into())));
    assert_eq!(lookup("promo click"), Some(("*click".into(), "* click".into())));
    assert_eq!(lookup("promo view"), Some(("all".into(), "* *".into())));

    let only_order = mapping(json!({"mapping": {"order": {"complete": {}}}}));
    assert!(only_order.rules.lookup("order view").is_none());

    let no_star_action = mapping(json!({"mapping": {"product": {"add": {}}, "*": {"*": {"name": "all"}}}}));
    let (rule, key) = no_star_action.rules.lookup("product view").unwrap();
    assert_eq!((rule.name.as_deref(), key.as_str()), (Some("all"), "* *"));
}

#[test]
fn star_action_is_only_tried_when_the_entity_is_missing() {
    let rules =
        mapping(json!({"mapping": {"a": {"c": {"name": "ac"}}, "*": {"b": {"name": "*b"}, "*": {"name": "**"}}}}));
    assert_eq!(rules.rules.lookup("a b").unwrap().1, "* *");
    assert_eq!(rules.rules.lookup("x b").unwrap().1, "* b");
}

#[test]
fn consent_and_user_are_prepared_as_walkeros_does_per_destination() {
    let collector = collector(
        json!({"user": {"id": "collectorUser"}, "consent": {"functional": true}, "globals": {"env": "prod"}}),
    );
    let none = mapping(json!({}));
    let (event, _, _) = mapped(
        &none,
        &collector,
        json!({"name": "page view", "user": {"session": "ev"}, "consent": {"marketing": true}}),
    );
    assert_eq!(event["user"], json!({"id": "collectorUser", "session": "ev"}));
    assert_eq!(event["consent"], json!({"functional": true, "marketing": true}));

    let denied_keys = collector;
    let (event, _, _) = mapped(
        &none,
        &denied_keys,
        json!({"name": "page view", "consent": {"functional": true, "marketing": false}}),
    );
    assert_eq!(event["consent"], json!({"functional": true}));
}

#[test]
fn destination_consent_is_or_and_rule_consent_is_enforced() {
    let collector = collector(json!({"consent": {"functional": true}}));
    let gated = mapping(json!({"consent": {"marketing": true, "analytics": true}}));
    let event = collector.enrich(json!({"name": "a b"})).unwrap();
    assert!(matches!(gated.apply(&event, &collector), MappingOutcome::Denied));
    let event = collector
        .enrich(json!({"name": "a b", "consent": {"analytics": true}}))
        .unwrap();
    assert!(matches!(gated.apply(&event, &collector), MappingOutcome::Mapped(_)));

    // walkerOS 4.4 ignores rule-level consent; weir enforces it as documented.
    let rule_gated = mapping(json!({"mapping": {"*": {"*": {"consent": {"marketing": true}, "name": "renamed"}}}}));
    let event = collector.enrich(json!({"name": "a b"})).unwrap();
    assert!(matches!(rule_gated.apply(&event, &collector), MappingOutcome::Denied));

    // An event's own denial wins over the collector's grant at the rule gate too.
    let granting = self::collector(json!({"consent": {"marketing": true}}));
    let denied = granting
        .enrich(json!({"name": "a b", "consent": {"marketing": false}}))
        .unwrap();
    assert!(matches!(rule_gated.apply(&denied, &granting), MappingOutcome::Denied));
    let allowed = granting.enrich(json!({"name": "a b"})).unwrap();
    assert!(matches!(
        rule_gated.apply(&allowed, &granting),
        MappingOutcome::Mapped(_)
    ));
}

#[test]
fn rule_fields_in_walkeros_order() {
    let collector = collector(json!({}));
    let config = mapping(json!({
        "policy": {"user.hash": "user.id"},
        "data": {"map": {"id": "data.id", "keep": {"value": 1}}},
        "mapping": {"order": {"complete": {
            "name": "purchase",
            "data": {"map": {"revenue": "data.total"}},
            "include": ["globals", "context"],
            "remove": ["keep"],
            "settings": {"streamKey": "orders"}
        }}}
    }));
    let (event, data, key) = mapped(
        &config,
        &collector,
        json!({
            "name": "order complete",
            "data": {"id": "o1", "total": 9.5},
            "globals": {"pagegroup": "shop"},
            "context": {"shopping": ["complete", 0]},
            "user": {"id": "u1"}
        }),
    );
    assert_eq!(key, "order complete");
    assert_eq!(event["name"], "purchase");
    assert_eq!(event["entity"], "order");
    assert_eq!(event["user"], json!({"id": "u1", "hash": "u1"}));
    assert_eq!(
        data,
        Some(json!({"globals_pagegroup": "shop", "context_shopping": "complete", "id": "o1", "revenue": 9.5}))
    );
}

#[test]
fn ignore_and_silent_with_its_older_name_skip() {
    let collector = collector(json!({}));
    let config = mapping(json!({"mapping": {"debug": {"*": {"ignore": true}}, "user": {"login": {"skip": true}}}}));
    let event = collector.enrich(json!({"name": "debug noise"})).unwrap();
    assert!(matches!(config.apply(&event, &collector), MappingOutcome::Ignored));
    let event = collector.enrich(json!({"name": "user login"})).unwrap();
    match config.apply(&event, &collector) {
        MappingOutcome::Mapped(m) => assert!(m.rule.unwrap().silent),
        _ => panic!("expected mapped"),
    }
}

#[test]
fn rule_data_that_resolves_to_nothing_erases_the_destination_data() {
    let collector = collector(json!({}));
    let config =
        mapping(json!({"data": {"map": {"a": {"value": 1}}}, "mapping": {"*": {"*": {"data": "data.missing"}}}}));
    let (_, data, _) = mapped(&config, &collector, json!({"name": "a b"}));
    assert_eq!(data, None);
}

#[test]
fn every_rule_problem_is_reported_with_its_path() {
    let mut errors = ConfigErrors::default();
    let parsed = DestinationMapping::<TestSettings>::from_config(
        json!({"mapping": {"order": {"complete": {
            "condition": "(e) => true",
            "settings": {"streamkey": "x"},
            "data": {"fn": "(e) => e"},
            "bogus": 1
        }}}})
        .as_object()
        .unwrap(),
        "destinations.r.config",
        &mut errors,
        &mut |_| 1,
    );
    assert!(parsed.is_none());
    let text = errors.to_string();
    for expected in [
        "destinations.r.config.mapping.order.complete.condition: `condition` is JavaScript",
        "destinations.r.config.mapping.order.complete.settings.streamkey: unknown",
        "destinations.r.config.mapping.order.complete.data.fn: `fn` is JavaScript",
        "destinations.r.config.mapping.order.complete.bogus: unknown rule key",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// A key a policy sets to nothing stays as walkerOS's `undefined` through a later policy: in
/// its place among the keys (the flat form writes `"undefined"` there), left out of the JSON.
#[test]
fn undefined_keys_keep_their_place_through_both_policies() {
    let collector = collector(json!({}));
    let config = mapping(json!({
        "policy": {"trigger": "data.nope", "first": {"value": 1}, "second": {"value": 2}, "gone": "data.nope"},
        "mapping": {"page": {"view": {"policy": {"first": "data.nope", "data.x": {"value": 1}}}}}
    }));
    let event = collector
        .enrich(json!({"name": "page view", "trigger": "load"}))
        .unwrap();
    let MappingOutcome::Mapped(mapped) = config.apply(&event, &collector) else {
        panic!("not mapped");
    };
    let flat: Vec<(&str, bool)> = mapped
        .event
        .flat_fields()
        .map(|(name, field)| (name, field.is_some()))
        .collect();
    let names: Vec<&str> = flat.iter().map(|(name, _)| *name).collect();
    assert_eq!(&names[..15], crate::event::EVENT_KEYS);
    assert_eq!(&names[15..], ["first", "second", "gone"]);
    let undefined: Vec<&str> = flat.iter().filter(|(_, has)| !has).map(|(name, _)| *name).collect();
    assert_eq!(undefined, ["trigger", "first", "gone"]);
    let json: Value = serde_json::from_slice(&mapped.event.to_json()).unwrap();
    assert!(json.get("trigger").is_none() && json.get("first").is_none(), "{json}");
    assert_eq!(json["second"], 2);
    assert_eq!(json["data"]["x"], 1);
}
