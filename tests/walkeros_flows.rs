//! walkerOS's own example flow files (tests/vectors/walkeros-flows, unchanged copies from
//! walkerOS 4.4.0) load and run in weir as they are: the server collection example serves
//! and logs through the demo destination, the order-complete example (switched from web to
//! server) renames and gates events by consent, and the demos' server flow is refused
//! naming the one package weir does not implement.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Weir, eventually, explain_events, post, weir_binary};

const SERVER_COLLECT: &str = include_str!("vectors/walkeros-flows/server-collect.json");
const ORDER_COMPLETE: &str = include_str!("vectors/walkeros-flows/flow-order-complete.json");
const DEMOS_SERVER: &str = include_str!("vectors/walkeros-flows/demos-server.json");

/// `weir validate` on `text` written as `flow.json`, with `env` set: (success, stdout+stderr).
fn validate(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.json"), text).unwrap();
    let output = Command::new(weir_binary())
        .args(["validate", "flow.json"])
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The JSON values logged after `prefix` in demo output, in order.
fn logged(output: &str, prefix: &str) -> Vec<Value> {
    output
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = output[at + prefix.len()..].strip_prefix(' ')?;
            let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            values.next()?.ok()
        })
        .collect()
}

#[test]
fn the_server_collection_example_serves_and_logs_through_the_demo_destination() {
    let (ok, text) = validate(SERVER_COLLECT, &[]);
    assert!(ok, "{text}");
    // `--listen` moves its port 8080 to a free loopback one; nothing else changes.
    let weir = Weir::start_file("flow.json", SERVER_COLLECT, &[]);
    let event = json!({
        "name": "product view", "data": {"id": "ers", "price": 420.5},
        "user": {"id": "us3r"}, "nested": [{"entity": "size", "data": {"value": "L"}}]
    });
    assert_eq!(post(&weir, &event).status(), 200);
    let prefix = "[Server Collection Demo]";
    assert!(
        eventually(Duration::from_secs(10), || !logged(&weir.output(), prefix).is_empty()),
        "nothing logged; stdout:\n{}\nlog:\n{}",
        weir.output(),
        weir.log()
    );
    let output = weir.output();
    assert!(
        output.starts_with("[Server Collection Demo] initialized\n"),
        "walkerOS's demo logs its start first:\n{output}"
    );
    let shown = &logged(&output, prefix)[0];
    // Exactly the `values` paths, in their order; the collector's globals are not among them.
    let keys: Vec<&str> = shown.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "data", "context", "user", "nested", "timestamp"]);
    assert_eq!(shown["name"], "product view");
    assert_eq!(shown["data"], event["data"]);
    assert_eq!(shown["user"], json!({"id": "us3r"}));
    assert_eq!(shown["nested"], event["nested"]);
    assert!(shown["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    // JSON.stringify(output, null, 2): two-space indents, one member per line.
    assert!(
        output.contains("[Server Collection Demo] {\n  \"name\": \"product view\",\n  \"data\": {\n    \"id\": \"ers\",\n    \"price\": 420.5\n  },"),
        "{output}"
    );
}

#[test]
fn the_order_complete_example_renames_and_gates_by_consent_once_switched_to_server() {
    let (ok, text) = validate(ORDER_COMPLETE, &[]);
    assert!(
        !ok && text.contains("flows.default.config.platform: this is a web flow"),
        "{text}"
    );

    let switched = ORDER_COMPLETE.replace("\"platform\": \"web\"", "\"platform\": \"server\"");
    assert_ne!(switched, ORDER_COMPLETE);
    let (ok, text) = validate(&switched, &[]);
    assert!(ok, "{text}");
    let flow: Value = serde_json::from_str(&switched).unwrap();
    let order = json!({
        "name": "order complete",
        "data": {"id": "0rd3r1d", "total": 555, "currency": "EUR", "tax": 73.76, "shipping": 5.22},
        "user": {"email": "user@example.com", "gclid": "g1"},
        "consent": {"marketing": true}
    });
    let denied = json!({"name": "order complete", "data": {"id": "x"}, "consent": {"functional": true}});
    let records = explain_events(&flow, &[order.clone(), denied]);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["outcome"], "send", "{}", records[0]);
    assert_eq!(records[0]["wire"]["prefix"], "[Order Complete with Consent Demo]");
    let shown = &records[0]["wire"]["logged"];
    let keys: Vec<&str> = shown.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "data", "user", "source", "consent"]);
    // The rule renames the event; walkerOS's demo logs the event, not the mapped data.
    assert_eq!(shown["name"], "purchase");
    assert_eq!(shown["data"], order["data"]);
    assert_eq!(shown["consent"], json!({"marketing": true}));
    // The destination asks for marketing consent: without it nothing is logged.
    assert_eq!(records[1]["outcome"], "consent", "{}", records[1]);
}

#[test]
fn the_demos_server_flow_is_refused_naming_the_gcp_package() {
    let env = [("PROJECT_ID", "p"), ("DATASET_ID", "d"), ("TABLE_ID", "t")];
    let (ok, text) = validate(DEMOS_SERVER, &env);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "flows.server.destinations.bigquery.package: weir does not implement @walkeros/server-destination-gcp; it knows"
        ),
        "{text}"
    );
    for known in [
        "@walkeros/server-destination-redis",
        "@walkeros/server-destination-kafka",
        "@walkeros/server-destination-rudderstack",
        "@walkeros/destination-demo",
        "@walkeros/server-destination-api",
    ] {
        assert!(text.contains(known), "{known} is not listed:\n{text}");
    }
    // Its other keys (`packages`, `code` import names, express settings) are accepted.
    assert!(text.contains("1 problem(s)"), "{text}");
}
