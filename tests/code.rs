//! `$code:` JavaScript in a running weir: walkerOS-style functions map events on their way to
//! a destination, and code that loops, allocates without end or reaches for the host fails
//! that call only: the server keeps answering, other events keep flowing, failures are
//! counted.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Weir, client, eventually, post};

const FLOW: &str = r#"
[code]
timeout = 100

[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"

[destinations.file]
type = "file"
[destinations.file.config]
dlq = { type = "file", path = "dead.jsonl" }
[destinations.file.config.settings]
path = "events.jsonl"

[destinations.file.config.mapping.order.complete]
name = "order_complete"
[destinations.file.config.mapping.order.complete.data.map]
name = "name"
id = { fn = "$code:(event) => event.data.id.toUpperCase()" }
total = { key = "data.total", validate = "$code:(total) => total > 0", value = 0 }
products = { loop = ["nested", { condition = "$code:(item) => item.entity === 'product'", key = "data.name" }] }

[[destinations.file.config.mapping.hostile.call]]
condition = "$code:(event) => event.data.how === 'checked'"
name = "checked"

[[destinations.file.config.mapping.hostile.call]]
name = "hostile"
[destinations.file.config.mapping.hostile.call.data.map]
how = "data.how"
result = { fn = """$code:(event) => {
  switch (event.data.how) {
    case 'loop': while (true) {}
    case 'alloc': { const chunks = []; for (;;) chunks.push('x'.repeat(1 << 20) + chunks.length); }
    case 'huge': return new Array(10 * 1024 * 1024 * 1024).fill(1).length;
    case 'fs': return require('fs').readFileSync('/etc/passwd', 'utf8');
    case 'fetch': return fetch('http://127.0.0.1:1/');
    case 'process': return process.env.HOME;
  }
  return 'fine';
}""", value = "failed" }

[destinations.file.config.mapping.boom.now]
condition = "$code:(event) => event.data.missing.deeper"
"#;

fn code_errors(weir: &Weir) -> f64 {
    let text = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("weir_mapping_code_errors_total{destination=\"file\"} "))
        .map_or(0.0, |value| value.parse().unwrap())
}

/// The lines of the file: the mapped data when there is some, else the whole event.
fn written(weir: &Weir) -> Vec<Value> {
    weir.json_lines("events.jsonl")
}

#[test]
fn functions_map_events_as_walkeros_does() {
    let weir = Weir::start(FLOW);
    let event = json!({"name": "order complete", "data": {"id": "o-7", "total": -1}, "nested": [
        {"entity": "product", "data": {"name": "Cap"}},
        {"entity": "gift", "data": {"name": "Surprise"}},
        {"entity": "product", "data": {"name": "Snack"}}
    ]});
    let explained = support::explain(FLOW, &event);
    let response = post(&weir, &event);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let events = written(&weir);
    assert_eq!(events.len(), 1, "{}", weir.log());
    let expected = json!({"name": "order_complete", "id": "O-7", "total": 0, "products": ["Cap", "Snack"]});
    assert_eq!(events[0], expected);
    // `weir explain` runs the same code and shows the same line.
    let line: Value = serde_json::from_str(explained["wire"]["line"].as_str().unwrap()).unwrap();
    assert_eq!(line, expected);
}

/// Each hostile call fails alone, within its limit, counted; the server answers meanwhile
/// and the events after it are mapped normally. A throwing rule condition dead-letters the
/// event at that destination, as walkerOS fails the push.
#[test]
fn hostile_code_fails_only_its_own_call() {
    let weir = Weir::start(FLOW);
    let hostile = ["loop", "alloc", "huge", "fs", "fetch", "process"];
    let health = std::thread::scope(|scope| {
        // A second client keeps asking /healthz while the hostile calls run.
        let probing = scope.spawn(|| {
            let http = client();
            let mut slowest = Duration::ZERO;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                let asked = Instant::now();
                let status = http.get(weir.url("/healthz")).send().unwrap().status();
                assert_eq!(status, 200);
                slowest = slowest.max(asked.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            slowest
        });
        for how in hostile {
            let started = Instant::now();
            let response = post(&weir, &json!({"name": "hostile call", "data": {"how": how}}));
            assert_eq!(response.status(), 200, "{how}: {}", response.text().unwrap());
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{how} took {:?}",
                started.elapsed()
            );
        }
        probing.join().unwrap()
    });
    assert!(health < Duration::from_millis(500), "/healthz took up to {health:?}");

    let results: Vec<(String, String)> = written(&weir)
        .iter()
        .map(|event| {
            (
                event["how"].as_str().unwrap().to_owned(),
                event["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = hostile
        .iter()
        .map(|how| (how.to_string(), "failed".to_owned()))
        .collect();
    assert_eq!(results, expected, "{}", weir.log());
    assert_eq!(code_errors(&weir), hostile.len() as f64);

    // After all that, code still runs, and a rule condition still chooses.
    post(&weir, &json!({"name": "hostile call", "data": {"how": "none"}}));
    post(&weir, &json!({"name": "hostile call", "data": {"how": "checked"}}));
    let events = written(&weir);
    assert_eq!(events[events.len() - 2], json!({"how": "none", "result": "fine"}));
    // No data for the "checked" rule: the whole event, renamed by the rule the condition chose.
    assert_eq!(events[events.len() - 1]["name"], "checked");

    let response = post(&weir, &json!({"name": "boom now", "data": {}}));
    assert_eq!(response.status(), 500);
    let answer = response.text().unwrap();
    assert!(answer.contains("condition"), "{answer}");
    assert!(eventually(Duration::from_secs(5), || !weir
        .json_lines("dead.jsonl")
        .is_empty()));
    let dead = weir.json_lines("dead.jsonl");
    let reason = dead[0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("condition") && reason.contains("TypeError"), "{dead:?}");
    // The failures are logged once per function, not per call.
    let log = weir.log();
    assert_eq!(log.matches("a mapping function").count(), 2, "{log}");
}

/// `weir validate` names the path of JavaScript that does not compile.
#[test]
fn code_that_does_not_compile_is_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.toml");
    std::fs::write(
        &flow,
        r#"
[sources.http]
type = "http"
[destinations.out]
type = "stdout"
[destinations.out.config.mapping.page.view.data]
fn = "$code:(event) => event."
"#,
    )
    .unwrap();
    let output = std::process::Command::new(support::weir_binary())
        .arg("validate")
        .arg(&flow)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "destinations.out.config.mapping.page.view.data.fn: the JavaScript does not compile: SyntaxError"
        ),
        "{stderr}"
    );
}
