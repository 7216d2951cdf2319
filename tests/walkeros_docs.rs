//! Every `fn`, `condition` and `validate` example in walkerOS 4.4's mapping documentation that
//! runs on a server, as a flow written the way a walkerOS flow file writes it (`$code:`
//! strings), run through `weir explain`, with walkerOS's documented output — or, where the
//! documentation and walkerOS's code disagree, what walkerOS's code produces (each such case
//! says so). Sources: `website/docs/mapping/value.mdx`, `rule.mdx`,
//! `guides/reference-syntax.mdx`, `getting-started/flow/index.mdx`,
//! `packages/cli/examples/flow-complete.json` (tag v4.4.0 of github.com/elbwalker/walkerOS).
//! The express source's `ingest` examples run against a real server in tests/ingest.rs.

mod support;

use serde_json::{Value, json};
use support::explain_events;

/// A flow with one `file` destination whose `config` is `config` (walkerOS's destination
/// config: `data`, `policy`, `mapping`), and an HTTP source.
fn flow(config: Value) -> Value {
    let config = support::merged(json!({"settings": {"path": "events.jsonl"}}), &config);
    json!({
        "version": 4,
        "flows": {"default": {
            "config": {"platform": "server"},
            "sources": {"http": {"package": "@walkeros/server-source-express"}},
            "destinations": {"out": {"type": "file", "config": config}}
        }}
    })
}

/// What the file destination would write for each event: its line as JSON (mapped data, or
/// the event), or the outcome when nothing is written.
fn written(config: Value, events: &[Value]) -> Vec<Value> {
    explain_events(&flow(config), events)
        .into_iter()
        .map(|record| match record["wire"]["line"].as_str() {
            Some(line) => serde_json::from_str(line).unwrap(),
            None => json!({"outcome": record["outcome"], "reason": record["reason"]}),
        })
        .collect()
}

/// value.mdx "Fn": `fn: (event) => event.user.email.split('@')[1]` → `"example.com"`.
#[test]
fn value_fn() {
    let out = written(
        json!({"data": {"map": {"domain": {"fn": "$code:(event) => event.user.email.split('@')[1]"}}}}),
        &[json!({"name": "page view", "user": {"email": "john@example.com"}})],
    );
    assert_eq!(out, [json!({"domain": "example.com"})]);
}

/// value.mdx "Condition": `{condition: (event) => event.data?.value > 50, value: 'high_value'}`
/// — "only produce output when condition(event) returns truthy" (no fallback when it does not).
#[test]
fn value_condition() {
    let config = json!({"data": {"map": {
        "tier": {"condition": "$code:(event) => event.data?.value > 50", "value": "high_value"},
        "value": "data.value"
    }}});
    let events = [
        json!({"name": "order complete", "data": {"value": 100}}),
        json!({"name": "order complete", "data": {"value": 10}}),
    ];
    assert_eq!(
        written(config, &events),
        [json!({"tier": "high_value", "value": 100}), json!({"value": 10})]
    );
}

/// value.mdx "Validate": `{key: 'email', validate: (value) => typeof value === 'string' &&
/// value.includes('@')}` → `"john@example.com"`; a value that fails is dropped. (The docs'
/// input is a bare object; an event keeps it in `data`.)
#[test]
fn value_validate() {
    let config = json!({"data": {"map": {
        "email": {"key": "data.email", "validate": "$code:(value) => typeof value === 'string' && value.includes('@')"},
        "name": "name"
    }}});
    let events = [
        json!({"name": "form submit", "data": {"email": "john@example.com"}}),
        json!({"name": "form submit", "data": {"email": "not an address"}}),
    ];
    assert_eq!(
        written(config, &events),
        [
            json!({"email": "john@example.com", "name": "form submit"}),
            json!({"name": "form submit"})
        ]
    );
}

/// value.mdx "Config-level policy": `'user.email': {fn: (e) => e.user?.email?.toLowerCase()}`
/// and `'data.timestamp': {fn: () => Date.now()}`, applied to every event before its rule.
#[test]
fn config_level_policy() {
    let config = json!({"policy": {
        "user.email": {"fn": "$code:(e) => e.user?.email?.toLowerCase()"},
        "data.timestamp": {"fn": "$code:() => Date.now()"}
    }});
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = written(
        config,
        &[json!({"name": "page view", "user": {"email": "John@Example.COM"}, "data": {"title": "Home"}})],
    );
    assert_eq!(out[0]["user"]["email"], "john@example.com");
    assert_eq!(out[0]["data"]["title"], "Home");
    let stamped = out[0]["data"]["timestamp"].as_u64().unwrap();
    assert!(stamped >= before && stamped < before + 60_000, "{stamped}");
}

/// value.mdx "Event-level policy" (and walkerOS's core test of it):
/// `product view` with `{name: 'view_item', policy: {'data.id': {fn: (e) => `PRODUCT_${e.data?.id}`}}}`
/// → `data.id === 'PRODUCT_P123'`, named `view_item`.
#[test]
fn event_level_policy() {
    let config = json!({"mapping": {"product": {"view": {
        "name": "view_item",
        "policy": {"data.id": {"fn": "$code:(e) => `PRODUCT_${e.data?.id}`"}}
    }}}});
    let out = written(config, &[json!({"name": "product view", "data": {"id": "P123"}})]);
    assert_eq!(
        (&out[0]["name"], &out[0]["data"]["id"]),
        (&json!("view_item"), &json!("PRODUCT_P123"))
    );
}

/// rule.mdx "Conditional rules": the first rule whose condition holds wins
/// (`high_value_purchase` for a value of 100), else the next (`purchase`).
#[test]
fn conditional_rules() {
    let config = json!({"mapping": {"order": {"complete": [
        {"condition": "$code:(event) => event.data?.value > 50", "name": "high_value_purchase"},
        {"name": "purchase"}
    ]}}});
    let events = [
        json!({"name": "order complete", "data": {"value": 100}}),
        json!({"name": "order complete", "data": {"value": 10}}),
    ];
    let names: Vec<Value> = written(config, &events).iter().map(|out| out["name"].clone()).collect();
    assert_eq!(names, [json!("high_value_purchase"), json!("purchase")]);
}

/// reference-syntax.mdx: a variable holding a `$code:` condition (`(entity) => entity.entity
/// === 'product'`; the docs wrap it in `{condition: ...}`, here it is the string itself, used
/// as a loop item's `condition` through `$var.`) in a loop over `nested`: only products.
#[test]
fn a_variable_with_a_code_condition_in_a_loop() {
    let mut flow = flow(json!({"data": {"map": {"products": {"loop": ["nested", {
        "condition": "$code:(entity) => entity.entity === 'product'",
        "key": "data.id"
    }]}}}}));
    flow["variables"] = json!({"onlyProducts": "$code:(entity) => entity.entity === 'product'"});
    flow["flows"]["default"]["destinations"]["out"]["config"]["data"]["map"]["products"]["loop"][1]["condition"] =
        json!("$var.onlyProducts");
    let event = json!({"name": "order complete", "nested": [
        {"entity": "product", "data": {"id": "ers"}},
        {"entity": "gift", "data": {"id": "card"}},
        {"entity": "product", "data": {"id": "cc"}}
    ]});
    let records = explain_events(&flow, &[event]);
    let line: Value = serde_json::from_str(records[0]["wire"]["line"].as_str().unwrap()).unwrap();
    assert_eq!(line, json!({"products": ["ers", "cc"]}));
}

/// getting-started/flow: `item_id: {key: "data.id", fn: "$code:(value) => value.toUpperCase()"}`.
/// The docs show the bundled code only. By walkerOS's code `fn` gets the whole event (which
/// has no `toUpperCase`: the call throws, is logged, and yields nothing), then `key`
/// overwrites the result: `item_id` is `data.id` as it is, not upper-cased.
#[test]
fn key_beside_fn_overwrites_what_fn_made() {
    let config = json!({"data": {"map": {
        "item_id": {"key": "data.id", "fn": "$code:(value) => value.toUpperCase()"}
    }}});
    let out = written(config, &[json!({"name": "product view", "data": {"id": "sku-1"}})]);
    assert_eq!(out, [json!({"item_id": "sku-1"})]);
}
