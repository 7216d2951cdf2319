//! The `redis_stream` source against a real redis-server: entries in, events out to a file
//! destination, acknowledged only after delivery; claims, dead letters, signatures.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, eventually};

/// weir reading stream `orders` of `server` as consumer `c1` (plus an HTTP source, which the
/// harness needs to find weir), writing events to `events.jsonl`; `extra` adds settings.
fn consumer(server: &RedisServer, extra: Value) -> Weir {
    let settings = support::merged(
        json!({
            "url": server.url(), "stream": "orders", "group": "weir", "consumer": "c1",
            "startId": "0", "block": 100, "claimIdle": 300, "maxDeliveries": 2
        }),
        &extra,
    );
    let flow = json!({
        "sources": {
            "http": {"type": "http"},
            "orders": {"type": "redis_stream", "config": {"settings": settings}}
        },
        "destinations": {"file": {"type": "file", "config": {"settings": {"path": "events.jsonl"}}}}
    });
    Weir::start(&toml::to_string(&flow).unwrap())
}

fn pending(server: &RedisServer) -> u64 {
    server.pending("orders", "weir")
}

/// XADDs an entry to `orders` carrying an event named `name`.
fn add(server: &RedisServer, name: &str) {
    server.cli(&["XADD", "orders", "*", "event", &json!({"name": name}).to_string()]);
}

fn names(weir: &Weir) -> Vec<String> {
    weir.json_lines("events.jsonl")
        .iter()
        .map(|event| event["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn entries_in_every_format_are_delivered_then_acknowledged() {
    let server = RedisServer::start();
    server.cli(&[
        "XADD",
        "orders",
        "*",
        "event",
        r#"{"name":"order complete","data":{"total":5}}"#,
    ]);
    server.cli(&[
        "XADD",
        "orders",
        "*",
        "name",
        "page view",
        "data",
        r#"{"title":"Home"}"#,
        "trigger",
        "load",
    ]);
    server.cli(&["XADD", "orders", "*", "data", r#"{"name":"product add"}"#]);
    let weir = consumer(&server, json!({}));
    assert!(
        eventually(Duration::from_secs(10), || names(&weir).len() == 3),
        "{}",
        weir.log()
    );
    assert_eq!(names(&weir), ["order complete", "page view", "product add"]);
    let events = weir.json_lines("events.jsonl");
    assert_eq!(events[0]["data"], json!({"total": 5}));
    assert_eq!(
        events[1]["data"],
        json!({"title": "Home"}),
        "flat fields are parsed back"
    );
    assert_eq!(events[1]["trigger"], "load");
    assert!(
        eventually(Duration::from_secs(5), || pending(&server) == 0),
        "acknowledged after delivery"
    );

    // New entries while running.
    server.cli(&["XADD", "orders", "*", "event", r#"{"name":"user login"}"#]);
    assert!(eventually(Duration::from_secs(10), || names(&weir).len() == 4));
}

/// A consumer restarted under its stable name reads what it held first (id 0).
#[test]
fn a_restarted_consumer_delivers_what_it_held() {
    let server = RedisServer::start();
    server.cli(&["XGROUP", "CREATE", "orders", "weir", "0", "MKSTREAM"]);
    for n in 0..3 {
        add(&server, &format!("held {n}"));
    }
    // c1 read them and died before delivering.
    server.cli(&["XREADGROUP", "GROUP", "weir", "c1", "STREAMS", "orders", ">"]);
    assert_eq!(pending(&server), 3);
    // A claimIdle far away: only reading its own pending list can deliver them.
    let weir = consumer(&server, json!({"claimIdle": 600_000}));
    assert!(
        eventually(Duration::from_secs(10), || names(&weir).len() == 3),
        "{}",
        weir.log()
    );
    assert!(eventually(Duration::from_secs(5), || pending(&server) == 0));
}

/// Entries stuck with a consumer that is gone are claimed after claimIdle; one delivered too
/// often goes to the dead-letter stream with its fields, then is acknowledged.
#[test]
fn stuck_entries_are_claimed_and_repeats_dead_lettered() {
    let server = RedisServer::start();
    server.cli(&["XGROUP", "CREATE", "orders", "weir", "0", "MKSTREAM"]);
    let fine = server
        .cli(&["XADD", "orders", "*", "event", r#"{"name":"stuck once"}"#])
        .trim()
        .to_owned();
    let poison = server
        .cli(&[
            "XADD",
            "orders",
            "*",
            "event",
            r#"{"name":"poison pill"}"#,
            "id",
            "evt-9",
        ])
        .trim()
        .to_owned();
    server.cli(&["XREADGROUP", "GROUP", "weir", "ghost", "STREAMS", "orders", ">"]);
    server.cli(&["XCLAIM", "orders", "weir", "ghost", "0", &poison, "RETRYCOUNT", "5"]);

    let weir = consumer(&server, json!({}));
    assert!(
        eventually(Duration::from_secs(10), || names(&weir) == ["stuck once"]),
        "{}",
        weir.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || pending(&server) == 0),
        "{}",
        weir.log()
    );
    let letters = server.xrange("orders.dlq");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let fields: Vec<(&str, &str)> = letters[0].1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(fields[0], ("reason", "max_deliveries"));
    assert_eq!(fields[1], ("src_id", poison.as_str()));
    assert_eq!(fields[2], ("attempts", "6"));
    assert_eq!(fields[3], ("consumer", "c1"));
    assert_eq!(fields[4].0, "received_at");
    assert_eq!(&fields[5..], [("event", r#"{"name":"poison pill"}"#), ("id", "evt-9")]);
    assert_ne!(fine, poison);
}

#[test]
fn entries_with_a_bad_or_missing_signature_are_dead_lettered() {
    let server = RedisServer::start();
    let key_hex = "cd".repeat(32);
    let key = weir::redis::signing::SigningKey::from_hex(&key_hex).unwrap();
    let event = r#"{"name":"session revoke"}"#;
    let signature = key.sign("orders", &[("event", event.as_bytes())]);
    server.cli(&["XADD", "orders", "*", "event", event, "_sig", &signature]);
    let unsigned = server
        .cli(&["XADD", "orders", "*", "event", r#"{"name":"forged one"}"#])
        .trim()
        .to_owned();
    let tampered = server
        .cli(&[
            "XADD",
            "orders",
            "*",
            "event",
            r#"{"name":"forged two"}"#,
            "_sig",
            &signature,
        ])
        .trim()
        .to_owned();
    let weir = consumer(&server, json!({"verify": {"key": key_hex}}));
    assert!(
        eventually(Duration::from_secs(10), || server.xrange("orders.dlq").len() == 2),
        "{}",
        weir.log()
    );
    // Dead letters are written while the batch is read; the valid entry is delivered after.
    assert!(eventually(Duration::from_secs(10), || !names(&weir).is_empty()));
    assert_eq!(names(&weir), ["session revoke"]);
    let letters = server.xrange("orders.dlq");
    for (letter, id) in letters.iter().zip([&unsigned, &tampered]) {
        assert_eq!(letter.1[0], ("reason".to_owned(), "bad_signature".to_owned()));
        assert_eq!(letter.1[1], ("src_id".to_owned(), id.clone()));
    }
    assert!(
        eventually(Duration::from_secs(5), || pending(&server) == 0),
        "never left pending, never dropped"
    );
    let metrics = support::client()
        .get(weir.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"weir_stream_dead_lettered_total{source="orders",reason="bad_signature"} 2"#),
        "{metrics}"
    );
}

#[test]
fn broadcast_groups_are_per_instance() {
    let server = RedisServer::start();
    server.cli(&["XADD", "orders", "*", "event", r#"{"name":"to everyone"}"#]);
    let weir = consumer(&server, json!({"mode": "broadcast", "consumer": "host-a"}));
    assert!(
        eventually(Duration::from_secs(10), || names(&weir).len() == 1),
        "{}",
        weir.log()
    );
    let groups = server.cli(&["XINFO", "GROUPS", "orders"]);
    assert!(groups.contains("weir:host-a"), "{groups}");
}

/// A destination that is down when weir dies mid-batch: the entries stay pending, and the
/// restarted consumer delivers them once the destination is back. Nothing is acknowledged
/// before it was delivered.
#[test]
fn entries_stay_pending_until_delivered_across_a_crash() {
    let source = RedisServer::start();
    let mut target = RedisServer::start();
    target.kill();
    for n in 0..5 {
        source.cli(&[
            "XADD",
            "orders",
            "*",
            "event",
            &json!({"name": format!("order {n}")}).to_string(),
        ]);
    }
    let flow = |target: &RedisServer| {
        let flow = json!({
            "sources": {
                "http": {"type": "http"},
                "orders": {"type": "redis_stream", "config": {"settings": {
                    "url": source.url(), "stream": "orders", "group": "weir", "consumer": "c1",
                    "startId": "0", "block": 100, "claimIdle": 600_000}}}
            },
            "destinations": {"copy": {"type": "redis", "config": {
                "settings": {"redis": {"url": target.url(), "streamKey": "copied"}},
                "retry": {"maxRetries": 1000, "retryDelay": 50, "maxRetryDelay": 200}}}}
        });
        toml::to_string(&flow).unwrap()
    };
    let mut weir = Weir::start(&flow(&target));
    assert!(
        eventually(Duration::from_secs(5), || pending(&source) == 5),
        "{}",
        weir.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pending(&source),
        5,
        "nothing is acknowledged while the destination is down"
    );
    let pid = weir.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    let _ = weir.child.wait();

    target.restart();
    let weir = Weir::start(&flow(&target));
    assert!(
        eventually(Duration::from_secs(15), || target.xrange("copied").len() == 5),
        "{}",
        weir.log()
    );
    assert!(eventually(Duration::from_secs(5), || pending(&source) == 0));
}

/// Pub/Sub both ways: events published by the `redis_pubsub` destination are heard by the
/// stream source in `mode = "pubsub"` (what Redis before 5.0 is limited to).
#[test]
fn pubsub_mode_hears_what_redis_pubsub_publishes() {
    let server = RedisServer::start();
    let flow = json!({
        "sources": {
            "http": {"type": "http"},
            "live": {"type": "redis_stream", "config": {"settings": {
                "url": server.url(), "stream": "live", "mode": "pubsub"}}}
        },
        "destinations": {
            "publish": {"type": "redis_pubsub", "sources": ["http"], "config": {
                "settings": {"redis": {"url": server.url(), "channel": "live"}}}},
            "file": {"type": "file", "sources": ["live"], "config": {"settings": {"path": "events.jsonl"}}}
        }
    });
    let weir = Weir::start(&toml::to_string(&flow).unwrap());
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("subscribing (Pub/Sub")),
        "{}",
        weir.log()
    );
    // The subscription is live once Redis counts a subscriber on the channel.
    assert!(eventually(Duration::from_secs(10), || server
        .cli(&["PUBSUB", "NUMSUB", "live"])
        .contains('1')));
    let response = support::client()
        .post(weir.url("/collect"))
        .header("content-type", "application/json")
        .body(json!({"name": "live update", "data": {"n": 1}}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), || names(&weir) == ["live update"]),
        "{}",
        weir.log()
    );
    assert_eq!(weir.json_lines("events.jsonl")[0]["data"], json!({"n": 1}));
}

/// A source left idle with its default `block` (1 s), then entries a few seconds apart: each
/// is delivered at once and acknowledged, and the idle source logs no warning. (A blocking
/// read given up on by the client while Redis still answered it used to swallow each entry
/// until the reaper claimed it, with a warning every 600 ms.) The bound asserted is generous
/// for a loaded CI machine; the latency printed is the figure (a few ms here).
fn idle_then_entries(mode: &str) {
    let server = RedisServer::start();
    let weir = consumer(
        &server,
        json!({"mode": mode, "startId": "$", "block": 1000, "claimIdle": 600_000}),
    );
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("reading the stream")),
        "{}",
        weir.log()
    );
    std::thread::sleep(Duration::from_secs(5));
    for n in 0..3 {
        let added = Instant::now();
        add(&server, &format!("late {n}"));
        assert!(
            eventually(Duration::from_secs(1), || names(&weir).len() == n + 1),
            "entry {n} not delivered within a second of its XADD:\n{}",
            weir.log()
        );
        println!("{mode}: entry {n} delivered {:?} after its XADD", added.elapsed());
        let group = if mode == "broadcast" { "weir:c1" } else { "weir" };
        assert!(
            eventually(Duration::from_secs(1), || server.pending("orders", group) == 0),
            "entry {n} left pending"
        );
        std::thread::sleep(Duration::from_millis(2500));
    }
    let log = weir.log();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "an idle source logs nothing:\n{log}"
    );
}

#[test]
fn an_idle_shared_source_delivers_new_entries_at_once() {
    idle_then_entries("shared");
}

#[test]
fn an_idle_broadcast_source_delivers_new_entries_at_once() {
    idle_then_entries("broadcast");
}

/// Redis restarted (SIGKILL) under a running source, with and without its data: the source
/// reconnects both its connections, creates its group again when Redis lost it, and entries
/// written afterwards are delivered and acknowledged.
#[test]
fn a_restarted_redis_is_read_again_and_acknowledged() {
    for persistent in [false, true] {
        let mut server = if persistent {
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
        } else {
            RedisServer::start()
        };
        let weir = consumer(&server, json!({"block": 1000, "claimIdle": 600_000}));
        server.cli(&["XADD", "orders", "*", "event", r#"{"name":"before restart"}"#]);
        assert!(
            eventually(Duration::from_secs(10), || names(&weir).len() == 1
                && pending(&server) == 0),
            "{}",
            weir.log()
        );
        server.kill();
        server.restart();
        for n in 0..3 {
            add(&server, &format!("after {n}"));
        }
        assert!(
            eventually(Duration::from_secs(20), || names(&weir).len() == 4),
            "persistent {persistent}: {:?}\n{}",
            names(&weir),
            weir.log()
        );
        assert!(
            eventually(Duration::from_secs(10), || pending(&server) == 0),
            "persistent {persistent}: entries left pending ({}):\n{}",
            pending(&server),
            weir.log()
        );
        assert_eq!(names(&weir)[1..], ["after 0", "after 1", "after 2"]);
    }
}

/// What the Redis destination writes flat — a field a policy set to nothing as "undefined" —
/// reads back as an event: the field as if absent, not an undecodable entry.
#[test]
fn flat_entries_with_undefined_fields_read_back() {
    let server = RedisServer::start();
    let flow = json!({
        "sources": {
            "http": {"type": "http", "config": {"ack": "delivered"}},
            "orders": {"type": "redis_stream", "config": {"settings": {
                "url": server.url(), "stream": "orders", "group": "weir", "consumer": "c1", "startId": "0", "block": 100}}}
        },
        "destinations": {
            "stream": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": server.url(), "streamKey": "orders", "serialization": "flat"}},
                "policy": {"data": "data.nope", "trigger": "data.nope"}}},
            "file": {"type": "file", "sources": ["orders"], "config": {"settings": {"path": "events.jsonl"}}}
        }
    });
    let weir = Weir::start(&toml::to_string(&flow).unwrap());
    let response = support::post(
        &weir,
        &json!({"name": "order complete", "data": {"id": 1}, "trigger": "click"}),
    );
    assert_eq!(response.status(), 200);
    let fields = &server.xrange("orders")[0].1;
    assert!(
        fields.contains(&("data".to_owned(), "undefined".to_owned())),
        "{fields:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || names(&weir) == ["order complete"]),
        "{}",
        weir.log()
    );
    let event = &weir.json_lines("events.jsonl")[0];
    assert_eq!(event["data"], json!({}));
    assert_eq!(event["trigger"], "");
    assert!(server.xrange("orders.dlq").is_empty());
}
