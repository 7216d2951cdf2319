//! The `rudderstack` destination end to end: events posted to weir's HTTP source, bodies
//! recorded by a data plane started by each test (support/recorder.rs).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use support::recorder::{Recorded, Recorder, Reply};
use support::{Weir, client, eventually, post, vectors};

const WRITE_KEY: &str = "test-write-key";

/// Keys the Node SDK adds to walkerOS's call parameters.
const SDK_KEYS: [&str; 6] = ["context", "type", "channel", "originalTimestamp", "messageId", "sentAt"];

/// A flow: the HTTP source (`source` is its config) and one `rudderstack` destination whose
/// settings are `settings` on top of the write key and the recorder's URL.
fn flow(recorder: &Recorder, settings: Value, mapping: Option<Value>, source: Value) -> String {
    let mut all = json!({"writeKey": WRITE_KEY, "dataPlaneUrl": recorder.base});
    all.as_object_mut()
        .unwrap()
        .extend(settings.as_object().cloned().unwrap_or_default());
    let mut config = json!({"settings": all, "retry": {"retryDelay": 10}, "dlq": {"path": "dead.jsonl"}});
    if let Some(mapping) = mapping {
        config["mapping"] = mapping;
    }
    let flow = json!({
        // The answer waits for delivery (unless a test says otherwise): tests read the
        // recorder as soon as it comes.
        "sources": {"http": {"type": "http", "config": support::merged(json!({"ack": "delivered"}), &source)}},
        "destinations": {"rudderstack": {"type": "rudderstack", "config": config}}
    });
    toml::to_string(&flow).unwrap()
}

/// A message as the call walkerOS made: `[type, parameters]`.
fn as_call(message: &Value) -> Value {
    let mut params: Map<String, Value> = message.as_object().unwrap().clone();
    for key in SDK_KEYS {
        params.remove(key);
    }
    json!([message["type"], params])
}

fn is_iso_time(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T' && text.as_bytes()[19] == b'.'
}

/// What the Node SDK adds, on every message.
fn assert_sdk_fields(message: &Value) {
    assert_eq!(message["channel"], "server", "{message}");
    assert_eq!(
        message["context"]["library"],
        json!({"name": "weir", "version": env!("CARGO_PKG_VERSION")})
    );
    let id = message["messageId"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    assert!(is_iso_time(&message["originalTimestamp"]), "{message}");
    assert!(is_iso_time(&message["sentAt"]), "{message}");
    if message["type"] == "identify" {
        assert_eq!(message["context"]["traits"], message["traits"], "{message}");
    }
}

/// walkerOS's ten step examples (walkerOS `packages/server/destinations/rudderstack/examples/step.ts`): the event, the
/// destination settings and the rule, by example name.
fn examples() -> Vec<(&'static str, Value, Value, Option<Value>)> {
    let user = json!({"id": "us3r", "session": "s3ss10n"});
    vec![
        (
            "defaultTrack",
            // getEvent gives every event data; with no data mapping, properties stay {}.
            json!({"name": "product view", "timestamp": 1_700_000_100u64, "user": user,
                   "data": {"id": "ers", "name": "Everyday Ruck Snack", "price": 420}}),
            json!({}),
            None,
        ),
        (
            "mappedEventName",
            json!({"name": "order complete", "timestamp": 1_700_000_101u64, "user": user,
                   "data": {"id": "0rd3r1d", "total": 555}}),
            json!({}),
            Some(json!({"order": {"complete": {"name": "Order Completed"}}})),
        ),
        (
            "destinationIdentify",
            json!({"name": "page view", "timestamp": 1_700_000_102u64,
                   "user": {"id": "us3r", "session": "s3ss10n", "email": "user@example.com"}}),
            json!({"identify": {"map": {"traits": {"map": {"email": "user.email"}}}}}),
            None,
        ),
        (
            "userLoginIdentify",
            json!({"name": "user login", "timestamp": 1_700_000_103u64, "user": user,
                   "data": {"user_id": "new-user-123", "email": "user@acme.com", "name": "Jane Doe", "plan": "premium"}}),
            json!({}),
            Some(
                json!({"user": {"login": {"silent": true, "settings": {"identify": {"map": {
                "userId": "data.user_id",
                "traits": {"map": {"email": "data.email", "name": "data.name", "plan": "data.plan"}}}}}}}}),
            ),
        ),
        (
            "companyGroup",
            json!({"name": "company update", "timestamp": 1_700_000_104u64, "user": user,
                   "data": {"company_id": "comp-456", "company_name": "Acme", "industry": "tech", "employees": 50}}),
            json!({}),
            Some(
                json!({"company": {"update": {"silent": true, "settings": {"group": {"map": {
                "groupId": "data.company_id",
                "traits": {"map": {"name": "data.company_name", "industry": "data.industry", "employees": "data.employees"}}}}}}}}),
            ),
        ),
        (
            "pageView",
            json!({"name": "page view", "timestamp": 1_700_000_105u64, "user": user,
                   "data": {"title": "Getting Started", "section": "tutorials"}}),
            json!({}),
            Some(json!({"page": {"view": {"silent": true, "settings": {"page": {"map": {
                "name": "data.title", "properties": {"map": {"section": "data.section"}}}}}}}})),
        ),
        (
            "screenView",
            json!({"name": "screen view", "timestamp": 1_700_000_106u64, "user": user,
                   "data": {"screen_name": "Welcome", "section": "onboarding", "build": "1.2.3"}}),
            json!({}),
            Some(
                json!({"screen": {"view": {"silent": true, "settings": {"screen": {"map": {
                "name": "data.screen_name", "properties": {"map": {"build": "data.build"}}}}}}}}),
            ),
        ),
        (
            "aliasUser",
            json!({"name": "identity merge", "timestamp": 1_700_000_107u64,
                   "user": {"id": "registered-456", "session": "s3ss10n"}, "data": {"anonymous_id": "anonymous-123"}}),
            json!({}),
            Some(
                json!({"identity": {"merge": {"silent": true, "settings": {"alias": {"map": {
                "previousId": "data.anonymous_id"}}}}}}),
            ),
        ),
        (
            // walkerOS sets `userId: undefined`, which means the default path; TOML has no
            // undefined, and leaving the key out is the same.
            "anonymousOnly",
            json!({"name": "product view", "timestamp": 1_700_000_108u64, "user": {"session": "s3ss10n"}}),
            json!({}),
            None,
        ),
        (
            "wildcardIgnored",
            json!({"name": "debug noise", "timestamp": 1_700_000_109u64, "user": user}),
            json!({}),
            Some(json!({"*": {"*": {"ignore": true}}})),
        ),
    ]
}

#[test]
fn walkeros_examples_end_to_end() {
    let vectors = vectors();
    let cases = examples();
    assert_eq!(cases.len(), vectors["rudder"].as_object().unwrap().len());
    for (name, event, settings, mapping) in cases {
        let recorder = Recorder::start(WRITE_KEY);
        let mut settings = settings;
        settings["flushAt"] = json!(1);
        let weir = Weir::start(&flow(&recorder, settings, mapping, json!({})));
        let response = post(&weir, &event);
        assert_eq!(response.status(), 200, "{name}: {}", response.text().unwrap());
        // `ack = "delivered"`: the answer came after the data plane's.
        let messages = recorder.delivered();
        let calls: Vec<Value> = messages.iter().map(as_call).collect();
        assert_eq!(
            Value::Array(calls),
            vectors["rudder"][name]["calls"],
            "{name}:\n{}",
            weir.log()
        );
        for message in &messages {
            assert_sdk_fields(message);
        }
        assert!(
            recorder
                .requests()
                .iter()
                .all(|r| r.authorized && r.path == "/v1/batch")
        );
    }
}

/// The de-duplication probe's settings and pushes (walkerOS's destination run with them).
fn dedup_settings() -> Value {
    json!({
        "flushAt": 1,
        "identify": {"map": {"traits": {"map": {"email": "user.email"}}}},
        "group": {"map": {"groupId": "globals.org"}}
    })
}

fn dedup_pushes() -> [Value; 5] {
    [
        json!({"name": "page view", "timestamp": 1, "user": {"id": "u1", "session": "s1", "email": "a@x"}, "globals": {"org": "o1"}}),
        json!({"name": "page view", "timestamp": 2, "user": {"id": "u1", "session": "s1", "email": "a@x"}, "globals": {"org": "o1"}}),
        json!({"name": "page view", "timestamp": 3, "user": {"id": "u1", "session": "s1", "email": "b@x"}, "globals": {"org": "o1"}}),
        json!({"name": "page view", "timestamp": 4, "user": {"session": "s2"}}),
        json!({"name": "page view", "timestamp": 5, "user": {}}),
    ]
}

/// `weir explain` on the probe's five events, in one file, prints exactly the calls `serve`
/// sends (and walkerOS makes): a repeated identify or group is listed as de-duplicated.
#[test]
fn explain_prints_the_calls_serve_sends() {
    let flow = json!({
        "sources": {"http": {"type": "http"}},
        "destinations": {"rudderstack": {"type": "rudderstack", "config": {"settings": {
            "writeKey": WRITE_KEY, "dataPlaneUrl": "http://127.0.0.1:9", "identify": dedup_settings()["identify"],
            "group": dedup_settings()["group"]}}}}
    });
    let records = support::explain_events(&flow, &dedup_pushes());
    let calls: Vec<Value> = records
        .iter()
        .filter_map(|record| record["wire"]["calls"].as_array())
        .flatten()
        .map(|call| as_call(&call["message"]))
        .collect();
    assert_eq!(Value::Array(calls), vectors()["rudderDedup"]);
    assert_eq!(
        records[1]["wire"]["deduplicated"],
        json!([
            {"call": "identify", "reason": "the same was sent for this identity already"},
            {"call": "group", "reason": "the same was sent for this identity already"}
        ]),
        "{records:?}"
    );
    assert_eq!(records[4]["outcome"], "skipped", "no identity: no calls");
}

/// The de-duplication probe (walkerOS's destination run with these settings): five pushes, identify and group only when
/// their traits or group changed.
#[test]
fn identify_and_group_are_deduplicated_like_walkeros() {
    let recorder = Recorder::start(WRITE_KEY);
    let weir = Weir::start(&flow(&recorder, dedup_settings(), None, json!({})));
    for push in &dedup_pushes() {
        assert_eq!(post(&weir, push).status(), 200);
    }
    let calls: Vec<Value> = recorder.delivered().iter().map(as_call).collect();
    assert_eq!(Value::Array(calls), vectors()["rudderDedup"]);
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains(r#"weir_events_not_sent_total{destination="rudderstack",reason="skipped"} 1"#),
        "the event without identity is counted:\n{metrics}"
    );
    assert!(
        weir.log().contains("RudderStack requires userId or anonymousId"),
        "{}",
        weir.log()
    );
}

/// weir de-duplicates per identity: alternating users do not identify again each time
/// (walkerOS would, comparing against the last identify of any user).
#[test]
fn alternating_users_identify_once_each() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings = json!({"flushAt": 1, "identify": {"map": {"traits": {"map": {"email": "user.email"}}}}});
    let weir = Weir::start(&flow(&recorder, settings, None, json!({})));
    for round in 0..3 {
        for user in ["u1", "u2"] {
            let event = json!({"name": "page view", "timestamp": 10 + round,
                               "user": {"id": user, "email": format!("{user}@x")}});
            assert_eq!(post(&weir, &event).status(), 200);
        }
    }
    let messages = recorder.delivered();
    let identifies: Vec<&Value> = messages.iter().filter(|m| m["type"] == "identify").collect();
    assert_eq!(identifies.len(), 2, "{messages:#?}");
    assert_eq!(messages.iter().filter(|m| m["type"] == "track").count(), 6);
}

#[test]
fn the_wire_is_the_node_sdks() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings = json!({
        "flushAt": 1,
        "identify": {"map": {"traits": {"map": {"email": "user.email"}}}},
        "integrations": {"All": true, "Amplitude": false}
    });
    let weir = Weir::start(&flow(&recorder, settings, None, json!({})));
    // The same event twice (a client retry, or a replay): the same message ids.
    let event =
        json!({"name": "product view", "id": "e-1", "user": {"id": "u1", "email": "a@x"}, "data": {"sku": "x"}});
    assert_eq!(post(&weir, &event).status(), 200);
    assert_eq!(post(&weir, &event).status(), 200);

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    let request = &requests[0];
    assert!(request.authorized, "Authorization: Basic base64(writeKey + \":\")");
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    // The SDK labels its gzipped JSON so; RudderStack's data plane expects it.
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(request.header("user-agent").unwrap().starts_with("weir/"));
    let body = request.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["batch", "timestamp", "sentAt"]);
    assert!(is_iso_time(&body["sentAt"]));

    let first = request.messages();
    assert_eq!(first.len(), 2, "identify, then track");
    assert_eq!(
        (first[0]["type"].as_str(), first[1]["type"].as_str()),
        (Some("identify"), Some("track"))
    );
    for message in &first {
        assert_sdk_fields(message);
        assert_eq!(message["sentAt"], body["sentAt"]);
        assert_eq!(message["integrations"], json!({"All": true, "Amplitude": false}));
    }
    assert_ne!(first[0]["messageId"], first[1]["messageId"]);
    // walkerOS's parameters in its key order, then the SDK's.
    let keys = |message: &Value| message.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let sdk = [
        "integrations",
        "context",
        "type",
        "channel",
        "originalTimestamp",
        "messageId",
        "sentAt",
    ];
    let expected = |params: &[&str]| params.iter().chain(&sdk).map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(&first[0]), expected(&["userId", "timestamp", "traits"]));
    assert_eq!(
        keys(&first[1]),
        expected(&["userId", "event", "properties", "timestamp"])
    );
    // The second time the traits are unchanged: track only, with the first track's id.
    let second = requests[1].messages();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["messageId"], first[1]["messageId"]);
}

#[test]
fn gzip_off_sends_plain_json() {
    let recorder = Recorder::start(WRITE_KEY);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1, "gzip": false}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 200);
    let request = &recorder.requests()[0];
    assert_eq!(request.header("content-encoding"), None);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.messages()[0]["event"], "a b");
}

fn batch(count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|n| json!({"name": "product view", "user": {"id": format!("u{n}")}, "data": {"n": n, "pad": "x".repeat(200)}}))
            .collect(),
    )
}

fn message_counts(requests: &[Recorded]) -> Vec<usize> {
    requests.iter().map(|r| r.messages().len()).collect()
}

/// `flushAt` messages make a request; the rest waits for `flushInterval` or, here, for
/// shutdown, which sends it at once.
#[test]
fn batches_flush_at_flush_at_and_on_shutdown() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings = json!({"flushAt": 3, "flushInterval": 60_000});
    let mut weir = Weir::start(&flow(&recorder, settings, None, json!({"ack": "received"})));
    assert_eq!(post(&weir, &batch(7)).status(), 200);
    assert!(eventually(Duration::from_secs(10), || recorder.delivered().len() >= 6));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(message_counts(&recorder.requests()), [3, 3], "the 7th waits for more");
    assert!(weir.terminate(Duration::from_secs(10)).success());
    assert_eq!(message_counts(&recorder.requests()), [3, 3, 1], "{}", weir.log());
}

/// A request body never passes `maxQueueSize` bytes: the batch goes before it would.
#[test]
fn batches_stay_under_max_queue_size() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings = json!({"flushAt": 100, "flushInterval": 200, "maxQueueSize": 3000});
    let weir = Weir::start(&flow(&recorder, settings, None, json!({"ack": "received"})));
    assert_eq!(post(&weir, &batch(20)).status(), 200);
    let delivered = recorder.wait_for(20, Duration::from_secs(10));
    assert_eq!(delivered.len(), 20);
    let requests = recorder.requests();
    for request in &requests {
        assert!(request.body.len() <= 3000, "{} bytes", request.body.len());
    }
    let counts = message_counts(&requests);
    assert!(counts.len() >= 2 && counts[0] > 1, "{counts:?}");
    // Each request went because the next message would not have fitted.
    for pair in requests.windows(2) {
        let next = serde_json::to_vec(&pair[1].messages()[0]).unwrap().len();
        assert!(pair[0].body.len() + 1 + next > 3000, "{counts:?}: room was left");
    }
}

/// Fewer than `flushAt` messages go after `flushInterval`, not before.
#[test]
fn a_partial_batch_goes_after_flush_interval() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings = json!({"flushAt": 100, "flushInterval": 400});
    let weir = Weir::start(&flow(&recorder, settings, None, json!({"ack": "received"})));
    let started = Instant::now();
    assert_eq!(post(&weir, &batch(2)).status(), 200);
    let delivered = recorder.wait_for(2, Duration::from_secs(10));
    assert_eq!(delivered.len(), 2);
    let requests = recorder.requests();
    assert_eq!(message_counts(&requests), [2]);
    let waited = requests[0].at.duration_since(started);
    assert!(waited >= Duration::from_millis(380), "sent after {waited:?}");
}

#[test]
fn server_errors_are_retried_until_delivered() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(500), Reply::status(500), Reply::status(200)]);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 200);
    let requests = recorder.requests();
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 200]);
    let ids: Vec<Value> = requests.iter().map(|r| r.messages()[0]["messageId"].clone()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "a retry keeps the message id: {ids:?}"
    );
    assert_eq!(recorder.delivered().len(), 1);
    assert!(weir.json_lines("dead.jsonl").is_empty());
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(429).header("retry-after", "1"), Reply::status(200)]);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 200);
    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, retryDelay is 10 ms"
    );
}

#[test]
fn client_errors_are_dead_lettered_with_the_answer() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(400).body("{\"error\":\"invalid batch\"}")]);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 500);
    assert_eq!(recorder.requests().len(), 1, "a 400 is not retried");
    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1);
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("400") && reason.contains("invalid batch"), "{reason}");
    assert_eq!(letters[0]["event"]["name"], "a b");
}

/// Without a journal (memory only), retries run out as the SDK's do; with one, an outage
/// holds the events instead (tests/journal.rs).
#[test]
fn retries_run_out_after_retry_count() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(503), Reply::status(503), Reply::status(503)]);
    let memory_only =
        flow(&recorder, json!({"flushAt": 1, "retryCount": 1}), None, json!({})) + "[journal]\nenabled = false\n";
    let weir = Weir::start(&memory_only);
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 500);
    assert_eq!(recorder.requests().len(), 2, "one try and one retry");
    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{}",
        letters[0]
    );
}

#[test]
fn a_wrong_write_key_is_dead_lettered() {
    let recorder = Recorder::start("another-key");
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 500);
    let letters = weir.json_lines("dead.jsonl");
    assert!(letters[0]["reason"].as_str().unwrap().contains("401"), "{}", letters[0]);
    assert!(!weir.log().contains(WRITE_KEY), "the write key is never logged");
}

#[test]
fn enable_false_accepts_and_counts_but_sends_nothing() {
    let recorder = Recorder::start(WRITE_KEY);
    let weir = Weir::start(&flow(
        &recorder,
        json!({"flushAt": 1, "enable": false}),
        None,
        json!({}),
    ));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 200);
    assert!(recorder.requests().is_empty());
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains(r#"weir_events_not_sent_total{destination="rudderstack",reason="skipped"} 1"#),
        "{metrics}"
    );
}

#[test]
fn explain_shows_the_calls() {
    let recorder = Recorder::start(WRITE_KEY);
    let dir = tempfile::tempdir().unwrap();
    let settings = json!({"identify": {"map": {"traits": {"map": {"email": "user.email"}}}}});
    std::fs::write(dir.path().join("flow.toml"), flow(&recorder, settings, None, json!({}))).unwrap();
    let event = json!({"name": "page view", "user": {"id": "u1", "email": "a@x"}});
    std::fs::write(dir.path().join("events.jsonl"), event.to_string()).unwrap();
    let output = std::process::Command::new(support::weir_binary())
        .args(["explain", "--config", "flow.toml", "events.jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let explained: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(explained["outcome"], "send", "{explained:#}");
    let calls = &explained["wire"]["calls"];
    assert_eq!(calls[0]["call"], "identify", "{explained:#}");
    assert_eq!(calls[0]["message"]["traits"], json!({"email": "a@x"}));
    assert_eq!(calls[1]["call"], "track");
    assert!(recorder.requests().is_empty(), "explain sends nothing");
}

/// A batch that never reached the data plane forgets its identities: the next event for the
/// same user identifies again instead of never.
#[test]
fn a_failed_identify_is_sent_again_with_the_next_event() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(400)]);
    let settings = json!({"flushAt": 1, "identify": {"map": {"traits": {"map": {"email": "user.email"}}}}});
    let weir = Weir::start(&flow(&recorder, settings, None, json!({})));
    let event = json!({"name": "page view", "user": {"id": "u1", "email": "a@x"}});
    assert_eq!(post(&weir, &event).status(), 500);
    assert_eq!(post(&weir, &event).status(), 200);
    let delivered = recorder.delivered();
    let types: Vec<&str> = delivered.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["identify", "track"]);
}

#[test]
fn request_timeouts_from_the_data_plane_are_retried() {
    let recorder = Recorder::start(WRITE_KEY);
    recorder.script([Reply::status(408)]);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 200);
    assert_eq!(
        recorder.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        [408, 200]
    );
}

/// A redirect is not followed (a followed 302 turns the POST into a GET whose 200 would
/// acknowledge nothing); the batch is dead-lettered saying where the data plane pointed.
#[test]
fn a_redirect_is_dead_lettered_not_followed() {
    let recorder = Recorder::start(WRITE_KEY);
    let elsewhere = format!("{}/moved", recorder.base);
    recorder.script([Reply::status(302).header("location", &elsewhere)]);
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), None, json!({})));
    assert_eq!(post(&weir, &json!({"name": "a b", "user": {"id": "u"}})).status(), 500);
    assert_eq!(recorder.requests().len(), 1, "{:?}", recorder.requests());
    let reason = weir.json_lines("dead.jsonl")[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("302") && reason.contains(&elsewhere), "{reason}");
}

#[test]
fn page_true_sends_a_page_call_with_an_empty_name() {
    let recorder = Recorder::start(WRITE_KEY);
    let mapping = json!({"page": {"view": {"silent": true, "settings": {"page": true}}}});
    let weir = Weir::start(&flow(&recorder, json!({"flushAt": 1}), Some(mapping), json!({})));
    let event = json!({"name": "page view", "timestamp": 1_700_000_000u64, "user": {"id": "u", "session": "s"}});
    assert_eq!(post(&weir, &event).status(), 200);
    let calls: Vec<Value> = recorder.delivered().iter().map(as_call).collect();
    assert_eq!(
        calls,
        [json!(["page", {"userId": "u", "anonymousId": "s", "timestamp": "1970-01-20T16:13:20.000Z", "name": ""}])]
    );
}

#[test]
fn an_event_too_big_for_one_request_is_dead_lettered() {
    let recorder = Recorder::start(WRITE_KEY);
    let settings =
        json!({"flushAt": 1, "maxQueueSize": 1000, "identify": {"map": {"traits": {"map": {"bio": "user.bio"}}}}});
    let weir = Weir::start(&flow(&recorder, settings, None, json!({})));
    let event = json!({"name": "a b", "user": {"id": "u", "bio": "x".repeat(2000)}});
    assert_eq!(post(&weir, &event).status(), 500);
    assert!(recorder.requests().is_empty());
    let reason = weir.json_lines("dead.jsonl")[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("more than maxQueueSize (1000)"), "{reason}");
}
