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
        MappingOutcome::Failed(reason) => panic!("failed: {reason}"),
    }
}

/// The rule `name` would take, by walkerOS's lookup with conditions.
fn find<'a>(
    mapping: &'a DestinationMapping<TestSettings>,
    collector: &Collector,
    event: &Event,
) -> Option<(&'a Rule<TestSettings>, String)> {
    mapping
        .rules
        .lookup(event.name(), |rule| rule_holds(rule, event, collector, "test"))
        .unwrap()
}

/// `ruleLookup` in vectors/walkeros-destinations-and-mapping.json, its `condition` as the
/// flow file writes it.
#[test]
fn rule_lookup_vectors() {
    let rules = mapping(json!({"mapping": {
        "product": {"*": {"name": "P*"}, "view": [
            {"condition": "$code:(e) => e.data.x === 1", "name": "cond"},
            {"name": "plain"}
        ]},
        "*": {"click": {"name": "*click"}, "*": {"name": "all"}}
    }}));
    let collector = collector(json!({}));
    let lookup = |rules: &DestinationMapping<TestSettings>, event: Value| {
        let event = collector.enrich(event).unwrap();
        find(rules, &collector, &event).map(|(rule, key)| (rule.name.clone().unwrap_or_default(), key))
    };
    let named = |name: &str| json!({"name": name});
    assert_eq!(
        lookup(&rules, json!({"name": "product view", "data": {"x": 1}})),
        Some(("cond".into(), "product view".into()))
    );
    assert_eq!(
        lookup(&rules, named("product view")),
        Some(("plain".into(), "product view".into()))
    );
    assert_eq!(
        lookup(&rules, named("product add")),
        Some(("P*".into(), "product *".into()))
    );
    assert_eq!(
        lookup(&rules, named("promo click")),
        Some(("*click".into(), "* click".into()))
    );
    assert_eq!(lookup(&rules, named("promo view")), Some(("all".into(), "* *".into())));

    let only_order = mapping(json!({"mapping": {"order": {"complete": {}}}}));
    assert!(lookup(&only_order, named("order view")).is_none());

    let no_star_action = mapping(json!({"mapping": {"product": {"add": {}}, "*": {"*": {"name": "all"}}}}));
    assert_eq!(
        lookup(&no_star_action, named("product view")),
        Some(("all".into(), "* *".into()))
    );
}

/// walkerOS's rule conditions: when every condition of `entity action` fails, only `* *` is
/// tried (not `entity *`); a promise counts as true (not awaited); a throw fails the push.
#[test]
fn rule_conditions_choose_fall_through_and_fail_as_walkeros_does() {
    let collector = collector(json!({}));
    let rules = mapping(json!({"mapping": {
        "order": {
            "complete": [
                {"condition": "$code:(e, c) => e.data.total > 100 && c.mapping.name === 'big'", "name": "big"},
                {"condition": "$code:async () => false", "name": "async"}
            ],
            "*": {"name": "order any"}
        },
        "page": {"view": {"condition": "$code:() => false", "name": "never"}},
        "cart": {"view": [{"condition": "$code:() => false", "name": "no"}], "*": {"name": "cart any"}},
        "boom": {"now": {"condition": "$code:(e) => e.data.missing.deeper", "name": "x"}},
        "*": {"*": {"name": "all"}}
    }}));
    let (event, _, key) = mapped(
        &rules,
        &collector,
        json!({"name": "order complete", "data": {"total": 500}}),
    );
    assert_eq!((event["name"].as_str(), key.as_str()), (Some("big"), "order complete"));
    let (event, _, _) = mapped(
        &rules,
        &collector,
        json!({"name": "order complete", "data": {"total": 5}}),
    );
    assert_eq!(event["name"], "async", "an async condition is a promise: truthy");
    let (event, _, key) = mapped(&rules, &collector, json!({"name": "page view"}));
    assert_eq!((event["name"].as_str(), key.as_str()), (Some("all"), "* *"));
    // `cart *` exists, but when every `cart view` condition fails only `* *` is tried.
    let (event, _, key) = mapped(&rules, &collector, json!({"name": "cart view"}));
    assert_eq!((event["name"].as_str(), key.as_str()), (Some("all"), "* *"));
    let (event, _, key) = mapped(&rules, &collector, json!({"name": "cart add"}));
    assert_eq!((event["name"].as_str(), key.as_str()), (Some("cart any"), "cart *"));

    let failing = collector.enrich(json!({"name": "boom now", "data": {}})).unwrap();
    match rules.apply(&failing, &collector) {
        MappingOutcome::Failed(reason) => assert!(reason.contains("TypeError"), "{reason}"),
        _ => panic!("a throwing rule condition fails the push"),
    }
}

/// Value-level JavaScript inside a destination's mapping: `fn` gets the event (or the loop
/// item) and `context`; a loop condition filters items; validate falls back to `value`.
#[test]
fn value_functions_run_inside_rules() {
    let collector = collector(json!({"globals": {"env": "prod"}}));
    let rules = mapping(json!({"mapping": {"order": {"complete": {"data": {"map": {
        "id": {"fn": "$code:(e) => e.data.id.toUpperCase()"},
        "env": {"fn": "$code:(e, c) => c.collector.globals.env"},
        "products": {"loop": ["nested", {
            "condition": "$code:(item) => item.entity === 'product'",
            "map": {"name": "data.name", "label": {"fn": "$code:(item, c) => c.event.name + ': ' + item.data.name"}}
        }]},
        "total": {"key": "data.total", "validate": "$code:(v) => v > 0", "value": 0},
        "broken": {"fn": "$code:(e) => e.data.nothing.here", "value": "fallback"}
    }}}}}}));
    let (_, data, _) = mapped(
        &rules,
        &collector,
        json!({"name": "order complete", "data": {"id": "o-1", "total": -3}, "nested": [
            {"entity": "product", "data": {"name": "Cap"}},
            {"entity": "gift", "data": {"name": "Surprise"}},
            {"entity": "product", "data": {"name": "Snack"}}
        ]}),
    );
    assert_eq!(
        data,
        Some(json!({
            "id": "O-1",
            "env": "prod",
            "products": [
                {"name": "Cap", "label": "order complete: Cap"},
                {"name": "Snack", "label": "order complete: Snack"}
            ],
            "total": 0,
            "broken": "fallback"
        }))
    );
}

#[test]
fn star_action_is_only_tried_when_the_entity_is_missing() {
    let rules =
        mapping(json!({"mapping": {"a": {"c": {"name": "ac"}}, "*": {"b": {"name": "*b"}, "*": {"name": "**"}}}}));
    let collector = collector(json!({}));
    let event = |name: &str| collector.enrich(json!({"name": name})).unwrap();
    assert_eq!(find(&rules, &collector, &event("a b")).unwrap().1, "* *");
    assert_eq!(find(&rules, &collector, &event("x b")).unwrap().1, "* b");
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
            "data": {"fn": "$code:(e) => e.", "validate": "$code:'text'"},
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
        "destinations.r.config.mapping.order.complete.condition: must be a JavaScript function written as \"$code:",
        "destinations.r.config.mapping.order.complete.settings.streamkey: unknown",
        "destinations.r.config.mapping.order.complete.data.fn: the JavaScript does not compile: SyntaxError",
        "destinations.r.config.mapping.order.complete.data.validate: must be a JavaScript function; this is string",
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
