//! The `api` destination (walkerOS's `@walkeros/server-destination-api`) against a recording
//! HTTP server: the request walkerOS sends (method, headers, body: mapped data or the event),
//! `transform`, batches as JSON arrays, and delivery for real (retries with Retry-After, dead
//! letters with the answer). The shared promises are in tests/conformance.rs.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::recorder::{Recorded, Recorder, Reply};
use support::{Weir, eventually, post};

/// weir with an HTTP source and an `api` destination (`config` merged into its block).
fn start(recorder: &Recorder, settings: Value, config: Value) -> Weir {
    let mut all = json!({"url": format!("{}/hook", recorder.base)});
    all.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let config = support::merged(
        json!({"settings": all, "retry": {"retryDelay": 10}, "dlq": {"path": "dead.jsonl"}}),
        &config,
    );
    let flow = json!({
        // Answered once delivered (or dead-lettered), so each test knows the outcome.
        "sources": {"http": {"type": "http", "config": {"ack": "delivered"}}},
        "destinations": {"hook": {"package": "@walkeros/server-destination-api", "config": config}}
    });
    Weir::start(&toml::to_string(&flow).unwrap())
}

fn wait_requests(recorder: &Recorder, count: usize) -> Vec<Recorded> {
    eventually(Duration::from_secs(10), || recorder.requests().len() >= count);
    recorder.requests()
}

#[test]
fn each_event_is_one_request_with_walkeros_headers_and_the_mapped_data_or_the_event() {
    let recorder = Recorder::open();
    let weir = start(
        &recorder,
        json!({"method": "put", "headers": {"X-Api-Key": "k3y"}}),
        json!({"mapping": {"order": {"complete": {"data": {"map": {"order_id": "data.id", "event_type": "name"}}}}}}),
    );
    assert_eq!(
        post(&weir, &json!({"name": "order complete", "data": {"id": "ORD-500"}})).status(),
        200
    );
    assert_eq!(
        post(&weir, &json!({"name": "page view", "data": {"title": "Home"}})).status(),
        200
    );
    let requests = wait_requests(&recorder, 2);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let mut bodies: Vec<Value> = requests.iter().map(Recorded::json).collect();
    bodies.sort_by_key(|body| body.get("order_id").is_none());
    assert_eq!(
        bodies[0],
        json!({"order_id": "ORD-500", "event_type": "order complete"})
    );
    // No mapped data: the whole (enriched) event.
    assert_eq!(bodies[1]["name"], "page view");
    assert_eq!(bodies[1]["data"], json!({"title": "Home"}));
    assert!(bodies[1]["id"].is_string() && bodies[1]["timestamp"].is_number());
    for request in &requests {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("content-type"), Some("application/json; charset=utf-8"));
        assert_eq!(request.header("x-api-key"), Some("k3y"));
    }
    assert!(
        !weir.log().contains("k3y"),
        "a header value never reaches the log:\n{}",
        weir.log()
    );
}

#[test]
fn transform_makes_the_body_a_string_as_it_is_anything_else_as_json() {
    let recorder = Recorder::open();
    let transform = "$code:(data, config, rule) => data.entity === 'page' \
        ? `${data.data.title}|${config.settings.url.endsWith('/hook')}|${rule.name}` \
        : Promise.resolve({wrapped: data.name})";
    let weir = start(
        &recorder,
        json!({"transform": transform}),
        json!({"mapping": {"page": {"view": {"name": "pv"}}}}),
    );
    assert_eq!(
        post(&weir, &json!({"name": "page view", "data": {"title": "Home"}})).status(),
        200
    );
    assert_eq!(post(&weir, &json!({"name": "order complete"})).status(), 200);
    let requests = wait_requests(&recorder, 2);
    let mut bodies: Vec<String> = requests
        .iter()
        .map(|request| String::from_utf8(request.body.clone()).unwrap())
        .collect();
    bodies.sort();
    // The rule renamed the event to "pv" before the transform saw it.
    assert_eq!(bodies, ["Home|true|pv", r#"{"wrapped":"order complete"}"#]);
}

#[test]
fn a_transform_that_throws_dead_letters_the_event_with_the_reason() {
    let recorder = Recorder::open();
    let weir = start(
        &recorder,
        json!({"transform": "$code:(data) => { throw new Error('no ' + data.name) }"}),
        json!({}),
    );
    // Rendered on the request path: the failure is known before the answer.
    assert_eq!(post(&weir, &json!({"name": "page view"})).status(), 500);
    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("settings.transform threw") && reason.contains("no page view"),
        "{reason}"
    );
    assert!(recorder.requests().is_empty());
}

#[test]
fn with_a_batch_block_each_request_is_an_array_of_bodies() {
    let recorder = Recorder::open();
    let weir = start(&recorder, json!({}), json!({"batch": {"size": 3, "wait": 5000}}));
    let batch: Vec<Value> = (0..3).map(|n| json!({"name": "page view", "data": {"n": n}})).collect();
    assert_eq!(post(&weir, &Value::Array(batch)).status(), 200);
    let requests = wait_requests(&recorder, 1);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let body = requests[0].json();
    let numbers: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|event| &event["data"]["n"])
        .collect();
    assert_eq!(numbers, [&json!(0), &json!(1), &json!(2)]);
}

#[test]
fn a_503_is_retried_after_retry_after_and_a_400_is_dead_lettered_with_the_answer() {
    let recorder = Recorder::open();
    recorder.script([Reply::status(503).header("retry-after", "1")]);
    let weir = start(&recorder, json!({}), json!({}));
    let started = Instant::now();
    assert_eq!(post(&weir, &json!({"name": "page view"})).status(), 200);
    let requests = wait_requests(&recorder, 2);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].status, 200);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After is 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    recorder.script([Reply::status(400).body("{\"error\":\"bad payload\"}")]);
    assert_eq!(post(&weir, &json!({"name": "order complete"})).status(), 500);
    let letters = weir.json_lines("dead.jsonl");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("400") && reason.contains("bad payload"), "{reason}");
    assert_eq!(letters[0]["event"]["name"], "order complete");
    assert_eq!(recorder.requests().len(), 3, "a 400 is not retried");
}
