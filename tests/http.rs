//! Black-box tests of the HTTP source: the real `weir` binary on a loopback port.

mod support;

use std::io::Write;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Weir, client, eventually, read_json_lines};

const FILE_FLOW: &str = r#"
[sources.http]
type = "http"
[sources.http.config.settings]
maxBatchSize = 3

[destinations.file]
type = "file"
[destinations.file.config.settings]
path = "events.jsonl"
"#;

/// [`FILE_FLOW`] answering once the events are delivered (in the file).
fn delivered_file_flow() -> String {
    FILE_FLOW.replace(
        "[sources.http.config.settings]",
        "[sources.http.config]\nack = \"delivered\"\n[sources.http.config.settings]",
    )
}

fn body(response: reqwest::blocking::Response) -> Value {
    let text = response.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn post_json(weir: &Weir, body: &str) -> reqwest::blocking::Response {
    client()
        .post(weir.url("/collect"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .unwrap()
}

/// The responses walkerOS's express source gives (vectors/walkeros-express-http.json), in
/// both acknowledgement modes. Timestamps and event ids vary and are checked by shape.
#[test]
fn responses_match_walkeros_express_in_both_modes() {
    let vectors: Value = serde_json::from_str(include_str!("vectors/walkeros-express-http.json")).unwrap();
    for (mode, ack) in [("default", r#"async = { POST = true }"#), ("sync", r#"async = false"#)] {
        let flow = FILE_FLOW.replace(
            "[sources.http.config.settings]",
            &format!("[sources.http.config]\n{ack}\n[sources.http.config.settings]"),
        );
        let weir = Weir::start(&flow);
        let expected = |name: &str| &vectors["results"][format!("{mode} {name}")];
        let check_headers = |response: &reqwest::blocking::Response, name: &str| {
            let want = expected(name)["headers"].as_object().unwrap();
            for (header, value) in want {
                if header == "content-length" {
                    continue;
                }
                assert_eq!(
                    response.headers().get(header).map(|v| v.to_str().unwrap()),
                    Some(value.as_str().unwrap()),
                    "{mode} {name}: header {header}"
                );
            }
        };

        let response = post_json(&weir, r#"{"name":"page view","data":{"title":"Home"}}"#);
        assert_eq!(response.status(), 200);
        check_headers(&response, "POST single");
        let answer = body(response);
        assert_eq!(answer["success"], true);
        assert!(answer["timestamp"].is_u64());

        let envelope = post_json(&weir, r#"{"batch":[{"name":"a b"},{"name":"c d"}]}"#);
        assert_eq!(envelope.status(), 200);
        let answer = body(envelope);
        assert_eq!(answer["success"], true);
        if mode == "sync" {
            assert_eq!(answer["processed"], 2);
            assert_eq!(answer["ids"].as_array().unwrap().len(), 2);
            assert!(
                answer["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|id| id.as_str().unwrap().len() == 16)
            );
        }

        // walkerOS's sync mode answers 207 for a batch with an invalid event; so does weir in
        // both modes (it validates before answering).
        let batch = post_json(&weir, r#"[{"name":"a b"},{"name":"bad"},{"name":"c d"}]"#);
        assert_eq!(batch.status(), 207);
        assert_eq!(
            body(batch),
            json!({"success": false, "processed": 2, "failed": 1, "errors": [{"index": 1, "error": "Event name is invalid"}]})
        );

        for (name, input, error) in [
            ("POST invalid name", r#"{"name":"pageview"}"#, "Event name is invalid"),
            ("POST no name", r#"{"data":{}}"#, "Event name is required"),
        ] {
            let response = post_json(&weir, input);
            assert_eq!(response.status(), 400, "{mode} {name}");
            let answer = body(response);
            assert_eq!(answer["success"], false);
            assert_eq!(answer["error"], error);
            if mode == "sync" {
                assert_eq!(expected(name)["body"]["error"], error);
            }
        }

        let too_large = post_json(
            &weir,
            r#"[{"name":"a b"},{"name":"a b"},{"name":"a b"},{"name":"a b"}]"#,
        );
        assert_eq!(too_large.status(), 400);
        check_headers(&too_large, "POST batch too large");
        let answer = body(too_large);
        assert_eq!(answer["error"], expected("POST batch too large")["body"]["error"]);
        assert!(answer["timestamp"].is_u64());

        let bad = post_json(&weir, r#"{"name":"#);
        assert_eq!(bad.status(), 400);
        check_headers(&bad, "POST bad json");
        let answer = body(bad);
        assert_eq!(answer["success"], false);
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("Unexpected end of JSON input"),
            "{answer}"
        );
        assert!(answer.get("timestamp").is_none());

        let beacon = client()
            .post(weir.url("/collect"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(r#"{"name":"beacon send"}"#)
            .send()
            .unwrap();
        assert_eq!(beacon.status(), 200);

        for query in [
            "?name=pixel%20view&data[title]=Home",
            "?e=page%20view&d=%7B%22title%22%3A%22Home%22%7D",
        ] {
            let pixel = client().get(weir.url(&format!("/collect{query}"))).send().unwrap();
            assert_eq!(pixel.status(), 200);
            check_headers(&pixel, "GET pixel");
            let gif = pixel.bytes().unwrap();
            assert_eq!(gif.len(), 42);
            assert!(gif.starts_with(b"GIF89a"));
        }

        let preflight = client()
            .request(reqwest::Method::OPTIONS, weir.url("/collect"))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .unwrap();
        assert_eq!(preflight.status(), 204);
        check_headers(&preflight, "OPTIONS preflight");
        let plain = client()
            .request(reqwest::Method::OPTIONS, weir.url("/collect"))
            .send()
            .unwrap();
        assert_eq!(plain.status(), 204);
        check_headers(&plain, "OPTIONS plain");
        assert!(plain.headers().get("access-control-allow-headers").is_none());

        let put = client().put(weir.url("/collect")).send().unwrap();
        assert_eq!(put.status(), 404);
        check_headers(&put, "PUT");
        assert_eq!(put.text().unwrap(), expected("PUT")["body"].as_str().unwrap());
        // Recorded on `/health`, which walkerOS's runner (not the express source) answers, as
        // weir does: another path gets express's 404 page, naming that path.
        let other = client().get(weir.url("/elsewhere")).send().unwrap();
        assert_eq!(other.status(), 404);
        assert_eq!(
            other.text().unwrap(),
            expected("GET other path")["body"]
                .as_str()
                .unwrap()
                .replace("Cannot GET /health", "Cannot GET /elsewhere")
        );

        // What reached the file: the single event, the envelope's two, the batch's two valid
        // ones, the beacon and the named pixel, in order.
        assert!(eventually(Duration::from_secs(5), || weir
            .json_lines("events.jsonl")
            .len()
            == 7));
        let names: Vec<String> = weir
            .json_lines("events.jsonl")
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["page view", "a b", "c d", "a b", "c d", "beacon send", "pixel view"],
            "{mode}"
        );
    }
}

#[test]
fn delivered_events_are_in_the_file_when_the_answer_comes() {
    let weir = Weir::start(&delivered_file_flow());
    let response = client()
        .post(weir.url("/collect"))
        // What `curl -d` sends.
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"name":"page view","data":{"title":"Home"},"user":{"id":"u1"}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = weir.json_lines("events.jsonl");
    assert_eq!(events.len(), 1, "written before the answer");
    let event = events[0].as_object().unwrap();
    let keys: Vec<&str> = event.keys().map(String::as_str).collect();
    assert_eq!(keys, weir::event::EVENT_KEYS);
    assert_eq!(event["data"], json!({"title": "Home"}));
    assert_eq!(event["entity"], "page");
    assert_eq!(event["source"]["type"], "collector");
    assert_eq!(event["source"]["count"], 1);

    // A form body that is not JSON is read as bracket-notation fields.
    let form = client()
        .post(weir.url("/collect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=form%20submit&data[n]=2")
        .send()
        .unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(weir.json_lines("events.jsonl")[1]["data"], json!({"n": 2}));

    let gzipped = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(br#"[{"name":"zip one"},{"name":"zip two"}]"#)
            .unwrap();
        encoder.finish().unwrap()
    };
    let response = client()
        .post(weir.url("/collect"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body(response)["processed"], 2);
}

/// An inbound W3C `traceparent` gives the request's events their `source.trace`, as
/// walkerOS's collector does (`source.trace ?? ingest._meta.trace ?? collector.trace`): an
/// event's own trace wins, and an invalid header is ignored.
#[test]
fn a_traceparent_header_traces_the_events_of_its_request() {
    let weir = Weir::start(&delivered_file_flow());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let send = |body: &str, traceparent: Option<&str>| {
        let mut request = client()
            .post(weir.url("/collect"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(value) = traceparent {
            request = request.header("traceparent", value);
        }
        assert_eq!(request.send().unwrap().status(), 200);
    };
    let header = format!("00-{trace}-00f067aa0ba902b7-01");
    send(
        r#"[{"name":"a b"},{"name":"c d","source":{"type":"web","trace":"own"}}]"#,
        Some(&header),
    );
    send(r#"{"name":"e f"}"#, None);
    // Uppercase, version ff, an all-zero parent: not a traceparent walkerOS reads.
    for invalid in [
        header.to_uppercase(),
        format!("ff-{trace}-00f067aa0ba902b7-01"),
        format!("00-{trace}-0000000000000000-01"),
    ] {
        send(r#"{"name":"g h"}"#, Some(&invalid));
    }
    let traces: Vec<String> = weir
        .json_lines("events.jsonl")
        .iter()
        .map(|event| event["source"]["trace"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(traces.len(), 6);
    assert_eq!(traces[0], trace);
    assert_eq!(traces[1], "own");
    let run = &traces[2];
    assert_ne!(run, trace);
    assert_eq!(run.len(), 32);
    assert!(traces[3..].iter().all(|other| other == run), "{traces:?}");
}

/// A `null` a client sends is taken as walkerOS 4.4 takes it (tests/walkeros_fidelity.rs
/// has the cases): kept for `data` and the like, filled in for `id`, and for `globals` and
/// `user` — where walkerOS's collector throws after answering 200 — a 400 naming the field.
#[test]
fn nulls_from_clients_are_taken_as_walkeros_takes_them() {
    let weir = Weir::start(&delivered_file_flow());
    let response = post_json(&weir, r#"{"name":"page view","data":null,"trigger":null,"id":null}"#);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let event = &weir.json_lines("events.jsonl")[0];
    assert_eq!(event["data"], Value::Null);
    assert_eq!(event["trigger"], Value::Null);
    assert_eq!(event["id"].as_str().unwrap().len(), 16, "{event}");
    assert_eq!(event["context"], json!({}));
    for field in ["globals", "user"] {
        let response = post_json(&weir, &format!(r#"{{"name":"page view","{field}":null}}"#));
        assert_eq!(response.status(), 400);
        let text = response.text().unwrap();
        assert!(
            text.contains(&format!("Event field \\\"{field}\\\" must be an object, not null")),
            "{text}"
        );
    }
    assert_eq!(weir.json_lines("events.jsonl").len(), 1);
}

#[test]
fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let weir = Weir::start(&FILE_FLOW.replace("maxBatchSize = 3", "maxBatchSize = 3\nmaxBodyBytes = 65536"));
    let send = |content_type: &str, body: Vec<u8>| {
        let response = client()
            .post(weir.url("/collect"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let status = response.status();
        (status, response.text().unwrap())
    };

    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"name\": \"a b\",}".to_vec(),
            StatusCode::BAD_REQUEST,
            "Invalid JSON: trailing comma at line 1 column 16",
        ),
        (
            "invalid UTF-8",
            "application/json",
            b"{\"name\": \"a \xff b\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        ),
        (
            "oversize body",
            "application/json",
            format!("{{\"name\":\"a b\",\"data\":{{\"x\":\"{}\"}}}}", "y".repeat(70_000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request entity too large (limit 65536 bytes)",
        ),
        (
            "batch over maxBatchSize",
            "application/json",
            br#"{"batch":[{"name":"a b"},{"name":"a b"},{"name":"a b"},{"name":"a b"}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "Batch too large. Maximum size: 3 events",
        ),
        (
            "10 000-deep nesting",
            "application/json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "JSON nesting is too deep",
        ),
        (
            "wrong type",
            "application/json",
            br#"{"name":"a b","data":[1,2]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "Event field \\\"data\\\" must be an object, not an array",
        ),
        (
            "wrong name type",
            "application/json",
            br#"{"name":42}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "Event name is invalid",
        ),
        (
            "not an object",
            "application/json",
            br#""page view""#.to_vec(),
            StatusCode::BAD_REQUEST,
            "Event must be a JSON object, not a string",
        ),
        (
            "wrong content type",
            "application/xml",
            b"<event/>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type \\\"application/xml\\\"",
        ),
        (
            "wrong charset",
            "application/json; charset=latin1",
            br#"{"name":"a b"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported charset",
        ),
    ];
    for (what, content_type, payload, status, message) in cases {
        let (got, text) = send(content_type, payload);
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text} should contain {message}");
        assert!(text.starts_with("{\"success\":false"), "{what}: {text}");
        let (ok, _) = send("application/json", br#"{"name":"still serving"}"#.to_vec());
        assert_eq!(ok, StatusCode::OK, "after {what}");
    }
    let unsupported_encoding = client()
        .post(weir.url("/collect"))
        .header("content-encoding", "br")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(unsupported_encoding.status(), 415);

    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("weir_events_rejected_total{source=\"http\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_events_delivered_total{destination=\"file\"} 10"),
        "{metrics}"
    );
}

#[test]
fn a_bearer_token_guards_the_collect_paths() {
    let flow = FILE_FLOW.replace("maxBatchSize = 3", "maxBatchSize = 3\nbearerToken = \"s3cret-token\"");
    let weir = Weir::start(&flow);
    let without = post_json(&weir, r#"{"name":"a b"}"#);
    assert_eq!(without.status(), 401);
    assert_eq!(without.headers()["www-authenticate"], "Bearer");
    let wrong = client()
        .post(weir.url("/collect"))
        .bearer_auth("s3cret-tokeN")
        .body(r#"{"name":"a b"}"#)
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .post(weir.url("/collect"))
        .bearer_auth("s3cret-token")
        .body(r#"{"name":"a b"}"#)
        .send()
        .unwrap();
    assert_eq!(right.status(), 200);
    // walkerOS's runner answers `/health` and `/ready`; weir answers them as its own.
    for path in ["/healthz", "/health", "/readyz", "/ready"] {
        let answer = client().get(weir.url(path)).send().unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let body: Value = answer.json().unwrap();
        let expected = if path.starts_with("/health") { "ok" } else { "ready" };
        assert_eq!(body["status"], expected, "{path}");
    }
    assert!(!weir.log().contains("s3cret-token"), "the token must never be logged");
}

/// `/dev/full` accepts the open and fails every write with ENOSPC: a real, retryable error.
/// Without a journal (memory only) retries run out and dead-letter; with one, an outage holds
/// the events instead (tests/journal.rs).
#[test]
fn undeliverable_events_are_retried_then_dead_lettered_and_the_client_is_told() {
    let weir = Weir::start(
        r#"
[journal]
enabled = false

[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"

[destinations.full]
type = "file"
[destinations.full.config]
retry = { maxRetries = 2, retryDelay = 5, maxRetryDelay = 10 }
dlq = { type = "file", path = "dead.jsonl" }
[destinations.full.config.settings]
path = "/dev/full"
"#,
    );
    let response = post_json(&weir, r#"{"name":"order complete","data":{"id":"o1"}}"#);
    assert_eq!(response.status(), 500);
    let answer = body(response);
    assert_eq!(answer["error"], "Event was not processed");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("destination \"full\" dead-lettered the event"),
        "{detail}"
    );
    assert!(detail.contains("gave up after 3 attempts"), "{detail}");

    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["destination"], "full");
    assert_eq!(letters[0]["attempts"], 3);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("No space left"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[0]["event"]["data"], json!({"id": "o1"}));

    let batch = post_json(&weir, r#"[{"name":"a b"},{"name":"c d"}]"#);
    assert_eq!(batch.status(), 207);
    let answer = body(batch);
    assert_eq!(answer["failed"], 2);
    assert_eq!(answer["errors"][1]["error"], "Event was not processed");

    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("weir_events_dead_lettered_total{destination=\"full\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_events_retried_total{destination=\"full\"} 6"),
        "{metrics}"
    );
}

/// A destination that cannot connect holds events until its queue is full; then the source
/// pushes back with 503 and `Retry-After`; at shutdown the queued events are dead-lettered.
#[test]
fn full_queues_push_back_and_shutdown_dead_letters_what_is_left() {
    let mut weir = Weir::start_with(
        r#"
[sources.http]
type = "http"
[sources.http.config]
ack = "received"
[sources.http.config.settings]
maxBatchSize = 2

[destinations.stuck]
type = "file"
[destinations.stuck.config]
queueMax = 2
dlq = { type = "file", path = "dead.jsonl" }
[destinations.stuck.config.settings]
path = "flow.toml/events.jsonl"
"#,
        &["--shutdown-timeout", "1"],
    );
    let ready = client().get(weir.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(body(ready)["reason"], "destination \"stuck\" is not connected");

    assert_eq!(post_json(&weir, r#"[{"name":"a b"},{"name":"c d"}]"#).status(), 200);
    let full = post_json(&weir, r#"{"name":"e f"}"#);
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "1");
    assert!(body(full)["error"].as_str().unwrap().contains("queue is full"));

    let status = weir.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", weir.log());
    let letters = read_json_lines(&weir.path("dead.jsonl"));
    let names: Vec<&str> = letters.iter().map(|l| l["event"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a b", "c d"]);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("never connected"),
        "{}",
        letters[0]
    );
    assert!(weir.log().contains("shutdown complete"), "{}", weir.log());
}

#[test]
fn shutdown_delivers_what_is_queued() {
    let mut weir = Weir::start(
        r#"
[sources.http]
type = "http"
[sources.http.config]
ack = "received"

[destinations.file]
type = "file"
[destinations.file.config]
batch = { wait = 60000, size = 1000 }
[destinations.file.config.settings]
path = "events.jsonl"
"#,
    );
    for n in 0..5 {
        assert_eq!(
            post_json(&weir, &format!(r#"{{"name":"a b","data":{{"n":{n}}}}}"#)).status(),
            200
        );
    }
    assert!(weir.json_lines("events.jsonl").is_empty(), "held for the batch");
    let status = weir.terminate(Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(weir.json_lines("events.jsonl").len(), 5);
    assert!(
        weir.log().contains("every queued event was delivered"),
        "{}",
        weir.log()
    );
}

#[test]
fn the_file_destination_rotates_by_size_and_keeps_max_files() {
    let weir = Weir::start(
        r#"
[sources.http]
type = "http"

[destinations.file]
type = "file"
[destinations.file.config.settings]
path = "out/events.jsonl"
maxBytes = 2000
maxFiles = 2
"#,
    );
    for n in 0..30 {
        let response = post_json(&weir, &format!(r#"{{"name":"a b","data":{{"n":{n}}}}}"#));
        assert_eq!(response.status(), 200);
    }
    let mut files: Vec<String> = std::fs::read_dir(weir.path("out"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "current file plus maxFiles rotated: {files:?}");
    assert!(files.contains(&"events.jsonl".to_owned()));
    let mut last_numbers = Vec::new();
    for file in &files {
        let size = std::fs::metadata(weir.path("out").join(file)).unwrap().len();
        assert!(size <= 2000, "{file} is {size} bytes");
        assert!(file.starts_with("events.") && file.ends_with(".jsonl"), "{file}");
        for event in read_json_lines(&weir.path("out").join(file)) {
            last_numbers.push(event["data"]["n"].as_u64().unwrap());
        }
    }
    last_numbers.sort();
    // The newest events survive, contiguous up to the last one sent.
    assert_eq!(*last_numbers.last().unwrap(), 29);
    let first = last_numbers[0];
    assert_eq!(last_numbers, (first..30).collect::<Vec<u64>>());
}

#[test]
fn cors_can_be_off_or_restricted_to_origins() {
    let off = Weir::start(&FILE_FLOW.replace("maxBatchSize = 3", "cors = false"));
    let response = post_json(&off, r#"{"name":"a b"}"#);
    assert!(response.headers().get("access-control-allow-origin").is_none());
    let options = client()
        .request(reqwest::Method::OPTIONS, off.url("/collect"))
        .send()
        .unwrap();
    assert_eq!(options.status(), 204);
    assert!(options.headers().get("access-control-allow-methods").is_none());
    let elsewhere = client()
        .request(reqwest::Method::OPTIONS, off.url("/other"))
        .send()
        .unwrap();
    assert_eq!(elsewhere.status(), 404);

    let listed = Weir::start(&FILE_FLOW.replace(
        "maxBatchSize = 3",
        r#"cors = { origin = ["https://shop.example"], credentials = true, maxAge = 600, methods = ["POST"] }"#,
    ));
    let allowed = client()
        .post(listed.url("/collect"))
        .header("origin", "https://shop.example")
        .body(r#"{"name":"a b"}"#)
        .send()
        .unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    assert_eq!(allowed.headers()["vary"], "Origin");
    let other = client()
        .post(listed.url("/collect"))
        .header("origin", "https://evil.example")
        .body(r#"{"name":"a b"}"#)
        .send()
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let preflight = client()
        .request(reqwest::Method::OPTIONS, listed.url("/collect"))
        .header("origin", "https://shop.example")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-methods"], "POST");
    assert_eq!(preflight.headers()["access-control-max-age"], "600");
    assert_eq!(preflight.headers()["access-control-allow-headers"], "content-type");
}

/// A request waiting for its event, which waits for a batch to fill: at SIGTERM the batch
/// goes out at once, the request gets its 200, and nothing is dead-lettered.
#[test]
fn shutdown_sends_lingering_batches_that_requests_wait_for() {
    let mut weir = Weir::start_with(
        r#"
[sources.http]
type = "http"

[destinations.file]
type = "file"
[destinations.file.config]
batch = { wait = 60000, age = 60000 }
dlq = { type = "file", path = "dead.jsonl" }
[destinations.file.config.settings]
path = "events.jsonl"
"#,
        &["--shutdown-timeout", "5"],
    );
    let url = weir.url("/collect");
    let request = std::thread::spawn(move || {
        let response = client().post(url).body(r#"{"name":"a b"}"#).send().unwrap();
        (response.status(), response.text().unwrap())
    });
    let metrics_url = weir.admin_url("/metrics");
    assert!(eventually(Duration::from_secs(5), || {
        client()
            .get(&metrics_url)
            .send()
            .map(|r| {
                r.text()
                    .unwrap()
                    .contains("weir_events_received_total{source=\"http\"} 1")
            })
            .unwrap_or(false)
    }));
    let status = weir.terminate(Duration::from_secs(10));
    assert!(status.success());
    let (code, text) = request.join().unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(weir.json_lines("events.jsonl").len(), 1);
    assert!(weir.json_lines("dead.jsonl").is_empty());
}

#[test]
fn hostile_form_bodies_and_pixels_are_refused_and_the_server_keeps_serving() {
    let weir = Weir::start(FILE_FLOW);
    let deep = format!("name=a+b&data{}=1", "[x]".repeat(100_000));
    let response = client()
        .post(weir.url("/collect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(deep)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("nests deeper than 32 levels"));
    let wide: Vec<String> = (0..200).map(|i| format!("k{i}[1000]=1")).collect();
    let response = client()
        .post(weir.url("/collect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name=a+b&{}", wide.join("&")))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let pixel = client()
        .get(weir.url(&format!("/collect?name=a%20b&d{}=1", "[x]".repeat(2_000))))
        .send()
        .unwrap();
    assert_eq!(pixel.status(), 200);
    assert_eq!(pixel.headers()["x-weir-error"], "query key nests deeper than 32 levels");
    assert_eq!(post_json(&weir, r#"{"name":"still serving"}"#).status(), 200);
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("weir_requests_rejected_total{source=\"http\",reason=\"parse\"} 2"),
        "{metrics}"
    );
}

/// With `ack = "delivered"`, a request whose events cannot be confirmed in `ackTimeout`
/// gets 202: they stay queued and will be delivered or dead-lettered.
#[test]
fn an_unconfirmed_delivery_is_answered_202_after_ack_timeout() {
    let weir = Weir::start(
        r#"
[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"
ackTimeout = 200

[destinations.stuck]
type = "file"
[destinations.stuck.config.settings]
path = "flow.toml/events.jsonl"
"#,
    );
    let response = post_json(&weir, r#"{"name":"a b"}"#);
    assert_eq!(response.status(), 202);
    let answer = body(response);
    assert_eq!(answer["success"], true);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("not confirmed within 200 ms"),
        "{answer}"
    );
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("weir_ack_timeouts_total{source=\"http\"} 1"),
        "{metrics}"
    );
}
