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

/// A walkerOS v4 flow file as the CLI writes it, with `$code:` in a Redis destination's
/// mapping (a rule condition choosing among rules, a value `fn`, `validate`, a loop
/// `condition`, a function reading its context): a real redis-server holds exactly the entries
/// `weir explain` shows for the same events.
#[test]
fn a_walkeros_flow_with_code_mappings_into_redis_matches_explain_on_a_real_server() {
    let server = support::redis::RedisServer::start();
    let flow = json!({
        "version": 4,
        "$schema": "https://walkeros.io/schema/flow/v4.json",
        "flows": {"default": {
            "config": {"platform": "server"},
            "packages": {
                "@walkeros/server-source-express": {"version": "4.4.0"},
                "@walkeros/server-destination-redis": {"version": "4.4.0"}
            },
            "sources": {"express": {
                "package": "@walkeros/server-source-express",
                "config": {"settings": {"port": 8080}}
            }},
            "destinations": {"redis": {
                "package": "@walkeros/server-destination-redis",
                "config": {
                    "settings": {"redis": {"url": server.url(), "streamKey": "walkeros:events"}},
                    "mapping": {"order": {"complete": [
                        {
                            "condition": "$code:(event) => event.data.total > 100",
                            "name": "big_order",
                            "settings": {"streamKey": "walkeros:big"},
                            "data": {"map": {
                                "id": "data.id",
                                "total": {"key": "data.total", "validate": "$code:(total) => total > 0"},
                                "products": {"loop": ["nested", {
                                    "condition": "$code:(item) => item.entity === 'product'",
                                    "map": {
                                        "id": "data.id",
                                        "cents": {"fn": "$code:(item) => Math.round(item.data.price * 100)"}
                                    }
                                }]}
                            }}
                        },
                        {
                            "name": "order",
                            "data": {"map": {
                                "id": "data.id",
                                "customer": {"fn": "$code:(event, context) => context.consent.marketing ? event.user.id : undefined"}
                            }}
                        }
                    ]}}
                }
            }}
        }}
    });
    let events = [
        json!({"name": "order complete", "data": {"id": "o1", "total": 250}, "nested": [
            {"entity": "product", "data": {"id": "ers", "price": 199.99}},
            {"entity": "gift", "data": {"id": "card"}},
            {"entity": "product", "data": {"id": "cc", "price": 50.01}}
        ]}),
        json!({"name": "order complete", "data": {"id": "o2", "total": 50}, "user": {"id": "u2"},
               "consent": {"marketing": true}}),
        json!({"name": "order complete", "data": {"id": "o3", "total": 40}, "user": {"id": "u3"},
               "consent": {"marketing": false, "functional": true}}),
    ];
    // explain: the commands, without connecting.
    let explained: Vec<Vec<String>> = explain_events(&flow, &events)
        .iter()
        .map(|record| {
            assert_eq!(record["outcome"], "send", "{record}");
            serde_json::from_value(record["wire"]["command"].clone()).unwrap()
        })
        .collect();
    let data = |command: &[String]| -> (String, Value) {
        let at = command.iter().position(|arg| arg == "event").unwrap();
        (command[1].clone(), serde_json::from_str(&command[at + 1]).unwrap())
    };
    assert_eq!(
        explained.iter().map(|command| data(command)).collect::<Vec<_>>(),
        [
            (
                "walkeros:big".to_owned(),
                json!({"id": "o1", "total": 250, "products": [{"id": "ers", "cents": 19999}, {"id": "cc", "cents": 5001}]})
            ),
            ("walkeros:events".to_owned(), json!({"id": "o2", "customer": "u2"})),
            ("walkeros:events".to_owned(), json!({"id": "o3"})),
        ]
    );
    // serve: the same entries in a real Redis.
    let weir = Weir::start_file("flow.json", &flow.to_string(), &[]);
    for event in &events {
        assert_eq!(post(&weir, event).status(), 200);
    }
    let mut stored = Vec::new();
    eventually(Duration::from_secs(10), || {
        stored = ["walkeros:big", "walkeros:events"]
            .iter()
            .flat_map(|stream| {
                server
                    .xrange(stream)
                    .into_iter()
                    .map(move |(_, fields)| (stream.to_string(), fields))
            })
            .collect::<Vec<_>>();
        stored.len() == 3
    });
    let expected: Vec<(String, Vec<(String, String)>)> = explained
        .iter()
        .map(|command| {
            let star = command.iter().position(|arg| arg == "*").unwrap();
            let fields = command[star + 1..]
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            (command[1].clone(), fields)
        })
        .collect();
    assert_eq!(stored, expected);
}
