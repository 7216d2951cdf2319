//! The `redis` destination against a real redis-server started by each test.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually, explain, post, vectors};

/// weir with an HTTP source and one `redis` destination: `source` and `config` are TOML
/// lines of the source's and the destination's `config` blocks (an empty `source`: the
/// answer waits for delivery), `settings` of its `settings.redis` block, and `tail` any
/// tables after those (mapping rules).
fn serve_with_redis(source: &str, config: &str, settings: &str, tail: &str) -> Weir {
    let source = if source.is_empty() {
        "ack = \"delivered\""
    } else {
        source
    };
    Weir::start(&format!(
        "[sources.http]\ntype = \"http\"\n[sources.http.config]\n{source}\n\
         [destinations.redis]\ntype = \"redis\"\n[destinations.redis.config]\n{config}\n\
         [destinations.redis.config.settings.redis]\n{settings}\n{tail}"
    ))
}

/// A flow with one `redis` destination; `settings` goes under `settings.redis`.
fn flow(settings: Value, mapping: Option<&Value>) -> String {
    let mut config = json!({"settings": {"redis": settings}, "retry": {"maxRetries": 2, "retryDelay": 10}, "dlq": {"path": "dead.jsonl"}});
    if let Some(mapping) = mapping {
        config["mapping"] = mapping.clone();
    }
    let flow = json!({
        "collector": {"release": "4.4.0"},
        // The answer waits for delivery: tests read the stream as soon as it comes.
        "sources": {"http": {"type": "http", "config": {"ack": "delivered"}}},
        "destinations": {"redis": {"type": "redis", "config": config}}
    });
    // The Weir harness writes flow.toml.
    toml::to_string(&flow).unwrap()
}

/// The event a walkerOS example starts from, with the mapping wired as walkerOS's step
/// examples wire it: `{entity: {action: rule}}`.
fn example(case: &Value) -> (Value, Option<Value>) {
    let event = case["in"].clone();
    let mapping = case
        .get("mapping")
        .map(|rule| json!({event["entity"].as_str().unwrap(): {event["action"].as_str().unwrap(): rule}}));
    (event, mapping)
}

/// Every Redis example of walkerOS: `weir explain` shows the XADD walkerOS sent, and the
/// entry read back from a real redis-server with XRANGE holds exactly those fields.
#[test]
fn walkeros_redis_vectors_through_explain_and_a_real_server() {
    let vectors = vectors();
    let server = RedisServer::start();
    for name in [
        "jsonDefault",
        "orderComplete",
        "withMaxLen",
        "withExactTrim",
        "streamKeyOverride",
        "ignoredEvent",
        "flatMode",
    ] {
        let case = &vectors["redis"][name];
        let (event, mapping) = if name == "flatMode" {
            // The file records only the call; its input is jsonDefault's event with
            // data {id: "Home"} (walkerOS's flat-mode probe) and the id the call shows.
            let mut event = vectors["redis"]["jsonDefault"]["in"].clone();
            event["data"] = json!({"id": "Home"});
            event["id"] = case["calls"][0][22].clone();
            (event, None)
        } else {
            example(case)
        };
        let mut settings = case["settings"]["redis"].clone();
        if settings.is_null() {
            settings = json!({"streamKey": "walkeros:events"});
        }
        if name == "flatMode" {
            settings = json!({"streamKey": "walkeros:events", "serialization": "flat", "maxLen": 1000});
        }
        let stream = format!("{}:{name}", settings["streamKey"].as_str().unwrap());
        settings["streamKey"] = json!(stream);
        settings["url"] = json!(server.url());
        let flow_text = flow(settings, mapping.as_ref());

        // explain: the exact command walkerOS sent.
        let record = explain(&flow_text, &event);
        let calls = case["calls"].as_array().unwrap();
        if calls.is_empty() {
            assert_eq!(record["outcome"], "ignored", "{name}");
            continue;
        }
        let mut expected: Vec<Value> = calls[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| match arg {
                Value::Number(n) => Value::from(n.to_string()),
                other => other.clone(),
            })
            .collect();
        let walkeros_stream = expected[0].as_str().unwrap().to_owned();
        expected[0] = json!(format!("{walkeros_stream}:{name}"));
        expected.insert(0, json!("XADD"));
        if name == "streamKeyOverride" {
            expected[1] = json!("walkeros:orders");
        }
        assert_eq!(record["wire"]["command"], Value::Array(expected.clone()), "{name}");

        // serve: the same fields, read back from Redis.
        let weir = Weir::start(&flow_text);
        let response = post(&weir, &event);
        assert_eq!(response.status(), 200, "{name}: {}", response.text().unwrap());
        let read_stream = expected[1].as_str().unwrap();
        let entries = server.xrange(read_stream);
        let fields = &entries
            .last()
            .unwrap_or_else(|| panic!("{name}: nothing in {read_stream}"))
            .1;
        let star = expected.iter().position(|a| a == "*").unwrap();
        let expected_fields: Vec<(String, String)> = expected[star + 1..]
            .chunks(2)
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_owned(),
                    pair[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(fields, &expected_fields, "{name}");
    }
}

#[test]
fn approximate_and_exact_trimming() {
    let server = RedisServer::start();
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[sources.http.config.settings]
maxBatchSize = 1000

[destinations.approx]
type = "redis"
[destinations.approx.config.settings.redis]
url = "{url}"
streamKey = "trim:approx"
maxLen = 100

[destinations.exact]
type = "redis"
[destinations.exact.config.settings.redis]
url = "{url}"
streamKey = "trim:exact"
maxLen = 100
exactTrimming = true
"#,
        url = server.url()
    ));
    for _ in 0..10 {
        let batch: Vec<Value> = (0..1000).map(|n| json!({"name": "a b", "data": {"n": n}})).collect();
        let response = post(&weir, &Value::Array(batch));
        assert_eq!(response.status(), 200);
    }
    let xlen = |key: &str| server.cli(&["XLEN", key]).trim().parse::<u64>().unwrap();
    assert_eq!(xlen("trim:exact"), 100);
    let approx = xlen("trim:approx");
    assert!(
        (100..10_000).contains(&approx),
        "approximate trimming keeps at least 100 and trims: {approx}"
    );
}

#[test]
fn signed_entries_verify_with_the_consumer_side_code() {
    let server = RedisServer::start();
    let key = "0123456789abcdef".repeat(4);
    let weir = serve_with_redis(
        "",
        "",
        &format!(
            "url = \"{}\"\nstreamKey = \"signed:events\"\nserialization = \"flat\"\nsign = {{ key = \"{key}\" }}",
            server.url()
        ),
        "",
    );
    assert_eq!(
        post(&weir, &json!({"name": "order complete", "data": {"total": 9.5}})).status(),
        200
    );
    let entries = server.xrange("signed:events");
    let fields = &entries[0].1;
    assert_eq!(fields.last().unwrap().0, "_sig");
    let signature = &fields.last().unwrap().1;
    let signed: Vec<(&str, &[u8])> = fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let signing = weir::redis::signing::SigningKey::from_hex(&key).unwrap();
    assert!(signing.verify("signed:events", &signed, signature));
    assert!(!signing.verify("other:stream", &signed, signature));
}

/// Caracal's audit form: `id`, `data` (the event JSON) and `sig` = hex HMAC-SHA256 of `data`
/// alone, checked here with Python's own hmac module, as Caracal's audit consumer checks it.
#[test]
fn audit_signed_entries_carry_caracal_s_sig_over_data() {
    let server = RedisServer::start();
    let key = "00112233445566778899aabbccddeeff".repeat(2);
    let weir = serve_with_redis(
        "",
        "data = { map = { id = \"id\", data = \"data\" } }",
        &format!(
            "url = \"{}\"\nstreamKey = \"caracal.audit.events\"\nserialization = \"flat\"\nsign = {{ key = \"{key}\", scheme = \"audit\" }}",
            server.url()
        ),
        "",
    );
    assert_eq!(
        post(
            &weir,
            &json!({"name": "session revoke", "data": {"zone_id": "z1", "occurred_at": "2026-12-07T00:00:00Z"}})
        )
        .status(),
        200
    );
    let entries = server.xrange("caracal.audit.events");
    let fields: Vec<(&str, &str)> = entries[0].1.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["id", "data", "sig"]);
    let data = fields[1].1;
    assert_eq!(serde_json::from_str::<Value>(data).unwrap()["zone_id"], "z1");
    assert_eq!(fields[2].1, support::python_hmac(&key, data));
    // An event whose entry has no `data` field cannot be audit-signed: dead-lettered, with
    // the field named in the answer.
    let weir = serve_with_redis(
        "",
        "",
        &format!(
            "url = \"{}\"\nstreamKey = \"caracal.audit.events\"\nsign = {{ key = \"{key}\", scheme = \"audit\" }}",
            server.url()
        ),
        "",
    );
    let response = post(&weir, &json!({"name": "session revoke"}));
    let status = response.status();
    let body = response.text().unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("dead-lettered the event: cannot render: the entry's `data` field"),
        "{body}"
    );
    assert_eq!(server.xrange("caracal.audit.events").len(), 1);
}

#[test]
fn a_wrong_type_key_is_fatal_and_dead_lettered() {
    let server = RedisServer::start();
    server.cli(&["SET", "not:a:stream", "x"]);
    let weir = Weir::start(&flow(json!({"url": server.url(), "streamKey": "not:a:stream"}), None));
    let response = post(&weir, &json!({"name": "a b"}));
    assert_eq!(response.status(), 500);
    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 1, "WRONGTYPE is not retried");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("WRONGTYPE"),
        "{}",
        letters[0]
    );
}

#[test]
fn start_up_checks_warn_about_eviction_and_persistence() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let weir = Weir::start(&flow(json!({"url": server.url(), "streamKey": "s"}), None));
    assert!(
        eventually(Duration::from_secs(5), || weir.log().contains("Redis checked")),
        "{}",
        weir.log()
    );
    let log = weir.log();
    assert!(log.contains("maxmemory_policy=allkeys-lru"), "{log}");
    assert!(log.contains("set maxmemory-policy noeviction"), "{log}");
    assert!(log.contains("appendonly is no"), "{log}");
    // Warnings, not failures: ready once the connection is open (just after the checks).
    assert!(eventually(Duration::from_secs(5), || client()
        .get(weir.url("/readyz"))
        .send()
        .unwrap()
        .status()
        == 200));
}

#[test]
fn acl_user_and_password_and_a_wrong_password() {
    let server = RedisServer::start();
    server.cli(&[
        "ACL",
        "SETUSER",
        "weir",
        "on",
        ">s3cret-pass",
        "~events:*",
        "+xadd",
        "+info",
        "+ping",
        "+quit",
        "+client",
        "+hello",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "s3cret-pass\n").unwrap();
    let weir = serve_with_redis(
        "",
        "",
        &format!(
            "streamKey = \"events:acl\"\npasswordFile = \"{}\"\noptions = {{ host = \"127.0.0.1\", port = {}, username = \"weir\" }}",
            password_file.display(),
            server.port
        ),
        "",
    );
    assert_eq!(post(&weir, &json!({"name": "a b"})).status(), 200);
    assert_eq!(server.xrange("events:acl").len(), 1);
    // CONFIG is not allowed for this user: the checks are skipped, not fatal.
    assert!(!weir.log().contains("ERROR"), "{}", weir.log());

    let wrong = serve_with_redis(
        "",
        "",
        &format!(
            "streamKey = \"events:acl\"\nurl = \"redis://weir:wrong@127.0.0.1:{}\"",
            server.port
        ),
        "",
    );
    assert!(
        eventually(Duration::from_secs(5), || wrong
            .log()
            .contains("destination cannot connect")),
        "{}",
        wrong.log()
    );
    let log = wrong.log();
    assert!(log.contains("Password authentication failed"), "{log}");
    assert!(!log.contains("wrong@"), "the password must not be logged: {log}");
    assert_eq!(client().get(wrong.url("/readyz")).send().unwrap().status(), 503);
}

#[test]
fn tls_with_a_private_ca() {
    let server = RedisServer::start_tls(&[]);
    let weir = serve_with_redis(
        "",
        "",
        &format!(
            "streamKey = \"events:tls\"\noptions = {{ host = \"127.0.0.1\", port = {}, tls = {{ caFile = \"{}\" }} }}",
            server.port,
            server.ca_file.as_ref().unwrap().display()
        ),
        "",
    );
    assert_eq!(post(&weir, &json!({"name": "secure event"})).status(), 200);
    assert_eq!(server.cli(&["XLEN", "events:tls"]).trim(), "1");
}

/// Three local masters: entries for different stream keys land on the nodes that own
/// their slots, and a batch mixing keys is split per slot.
#[test]
fn redis_cluster_routes_entries_by_slot() {
    let cluster = support::redis::RedisCluster::start();
    let urls: Vec<String> = cluster.urls();
    let weir = serve_with_redis(
        "",
        "",
        &format!("url = {urls:?}\nstreamKey = \"walkeros:events\""),
        "[destinations.redis.config.mapping.order.complete.settings]\nstreamKey = \"stream:b\"\n\
         [destinations.redis.config.mapping.user.login.settings]\nstreamKey = \"stream:c\"\n",
    );
    // Slots 12134, 6511 and 2382: one key on each of the three masters.
    let keys = ["walkeros:events", "stream:b", "stream:c"];
    let owners: std::collections::BTreeSet<usize> = keys.iter().map(|key| cluster.owner(key)).collect();
    assert_eq!(owners.len(), 3, "one key per node: {owners:?}");
    let batch: Vec<Value> = (0..30)
        .map(|n| {
            let name = ["page view", "order complete", "user login"][n % 3];
            json!({"name": name, "data": {"n": n}})
        })
        .collect();
    let response = post(&weir, &Value::Array(batch));
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    for key in keys {
        let owner = &cluster.nodes[cluster.owner(key)];
        assert_eq!(owner.cli(&["XLEN", key]).trim(), "10", "{key} on its owner");
    }
}

/// SIGTERM: held batches go out and every XADD completes before weir exits.
#[test]
fn shutdown_completes_every_xadd_before_exiting() {
    let server = RedisServer::start();
    let mut weir = serve_with_redis(
        "ack = \"received\"",
        "batch = { wait = 60000, age = 60000 }",
        &format!("url = \"{}\"\nstreamKey = \"shutdown:events\"", server.url()),
        "",
    );
    for n in 0..5 {
        assert_eq!(post(&weir, &json!({"name": "a b", "data": {"n": n}})).status(), 200);
    }
    assert_eq!(
        server.cli(&["XLEN", "shutdown:events"]).trim(),
        "0",
        "held for the batch"
    );
    let status = weir.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", weir.log());
    assert_eq!(server.cli(&["XLEN", "shutdown:events"]).trim(), "5");
    assert!(
        weir.log().contains("every queued event was delivered"),
        "{}",
        weir.log()
    );
}
