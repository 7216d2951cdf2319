//! The `weir validate` and `weir explain` commands, run as a user would.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{explain_events as explain, weir_binary};

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(weir_binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A walkerOS flow file with one `file` destination whose rule for the event's
/// entity/action is `rule` (walkerOS's step-example wiring).
fn flow_with_rule(event: &Value, rule: Option<&Value>) -> Value {
    let mut config = json!({"settings": {"path": "events.jsonl"}});
    if let Some(rule) = rule {
        config["mapping"] = json!({event["entity"].as_str().unwrap(): {event["action"].as_str().unwrap(): rule}});
    }
    json!({
        "version": 4,
        "flows": {"default": {
            "config": {"platform": "server"},
            "sources": {"http": {"package": "@walkeros/server-source-express"}},
            "destinations": {"events": {"type": "file", "config": config}},
            "collector": {"name": "default", "release": "4.4.0"}
        }}
    })
}

/// Every Redis and Kafka example of walkerOS whose behaviour is not specific to those
/// destinations: the line the `file` destination would write is exactly what walkerOS
/// stored (Redis `event` field) or produced (Kafka value): same keys, order, numbers.
#[test]
fn explain_reproduces_the_walkeros_vectors() {
    let vectors: Value = serde_json::from_str(include_str!("vectors/walkeros-destinations-and-mapping.json")).unwrap();
    let mut checked = 0;
    for (destination, name) in [
        ("redis", "jsonDefault"),
        ("redis", "orderComplete"),
        ("redis", "withMaxLen"),
        ("redis", "withExactTrim"),
        ("redis", "ignoredEvent"),
        ("kafka", "defaultEvent"),
        ("kafka", "mappedEventName"),
        ("kafka", "mappedData"),
        ("kafka", "keyFromUser"),
        ("kafka", "ignoredEvent"),
    ] {
        let case = &vectors[destination][name];
        let event = &case["in"];
        let records = explain(&flow_with_rule(event, case.get("mapping")), std::slice::from_ref(event));
        assert_eq!(records.len(), 1, "{destination} {name}");
        let record = &records[0];
        assert_eq!(record["event"], 0);
        assert_eq!(record["id"], event["id"]);
        assert_eq!(record["destination"], "events");
        let calls = case["calls"].as_array().unwrap();
        if calls.is_empty() {
            assert_eq!(record["outcome"], "ignored", "{destination} {name}");
            continue;
        }
        let expected = match destination {
            "redis" => calls[0].as_array().unwrap().last().unwrap().clone(),
            _ => calls[0]["messages"][0]["value"].clone(),
        };
        assert_eq!(record["outcome"], "send", "{destination} {name}");
        assert_eq!(record["wire"]["line"], expected, "{destination} {name}");
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn explain_shows_every_outcome_in_input_order_with_collector_state() {
    let flow = json!({
        "collector": {"globals": {"env": "prod"}, "user": {"id": "collectorUser"}, "consent": {"functional": true}, "release": "4.4.0"},
        "sources": {"http": {"type": "http"}},
        "destinations": {
            "all": {"type": "file", "config": {"mapping": {"debug": {"*": {"ignore": true}}, "user": {"login": {"silent": true}}}}},
            "marketing": {"type": "stdout", "config": {"consent": {"marketing": true}}}
        }
    });
    let records = explain(
        &flow,
        &[
            json!({"name": "page view", "id": "aaaaaaaaaaaaaaaa", "timestamp": 1700000000000u64, "data": {"title": "Home"}}),
            json!({"name": "debug noise"}),
            json!({"name": "user login", "consent": {"marketing": true}}),
            json!({"name": "pageview", "id": "x"}),
        ],
    );
    let summary: Vec<(u64, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["event"].as_u64().unwrap(),
                r["destination"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "all", "send"),
            (0, "marketing", "consent"),
            (1, "all", "ignored"),
            (1, "marketing", "consent"),
            (2, "all", "skipped"),
            (2, "marketing", "send"),
            (3, "all", "rejected"),
            (3, "marketing", "rejected"),
        ]
    );
    let line: Value = serde_json::from_str(records[0]["wire"]["line"].as_str().unwrap()).unwrap();
    assert_eq!(line["globals"], json!({"env": "prod"}));
    assert_eq!(line["user"], json!({"id": "collectorUser"}));
    assert_eq!(line["source"]["count"], 1);
    assert_eq!(records[0]["id"], "aaaaaaaaaaaaaaaa");
    let marketing: Value = serde_json::from_str(records[5]["wire"]["line"].as_str().unwrap()).unwrap();
    assert_eq!(marketing["consent"], json!({"functional": true, "marketing": true}));
    assert_eq!(marketing["source"]["count"], 3, "events are counted in input order");
    assert_eq!(records[6]["reason"], "Event name is invalid");
    assert_eq!(records[6]["id"], "x");
}

#[test]
fn validate_lists_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.yaml"),
        r#"
sources:
  http:
    type: http
    config:
      settings:
        prot: 8080
destinations:
  events:
    type: file
    sources: [http, beacon]
    config:
      batch: {size: 10, linger: 5}
      mapping:
        order:
          complete:
            condition: "(event) => event.data.total > 100"
            data:
              map:
                email: {fn: "(v) => v.toLowerCase()"}
  kafka:
    package: "@walkeros/server-destination-gcp"
"#,
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["validate", "flow.yaml"]);
    assert!(!ok);
    for expected in [
        "destinations.kafka.package: weir does not implement @walkeros/server-destination-gcp",
        "sources.http.config.settings.prot: unknown key",
        "destinations.events.sources: no source named \"beacon\"",
        "destinations.events.config.batch.linger: unknown key",
        // JavaScript comes as walkerOS flow files write it: "$code:...".
        "destinations.events.config.mapping.order.complete.condition: must be a JavaScript function written as \"$code:",
        "destinations.events.config.mapping.order.complete.data.map.email.fn: must be a JavaScript function written as \"$code:",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("6 problem(s)"), "{stderr}");

    std::fs::write(
        dir.path().join("good.toml"),
        "[sources.http]\ntype = \"http\"\n[destinations.out]\ntype = \"stdout\"\n[destinations.out.config.mapping.\"*\".\"*\"]\nname = \"x y\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &["validate", "good.toml"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (1 sources, 1 destinations)"), "{stdout}");
}

#[test]
fn validate_catches_what_would_only_fail_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.toml"),
        r#"
[sources.web]
type = "http"
[sources.web.config.settings]
listen = "127.0.0.1:9000"
maxBatchSize = 100

[sources.app]
type = "http"
[sources.app.config.settings]
listen = "127.0.0.1:9000"

[sources.idle]
type = "http"
[sources.idle.config.settings]
listen = "127.0.0.1:9001"

[destinations.one]
type = "file"
sources = ["web", "app"]
[destinations.one.config]
queueMax = 50
dlq = { type = "file", path = "events.jsonl", fsync = true }
[destinations.one.config.settings]
path = "events.jsonl"

[destinations.two]
type = "file"
sources = ["web"]
[destinations.two.config]
disabled = true
retry = { maxRetrys = 3 }
"#,
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["validate", "flow.toml"]);
    assert!(!ok);
    for expected in [
        "sources.app.config.settings: listen address 127.0.0.1:9000 is used by another source",
        "destinations.one.config.queueMax: 50 is less than the 100 events of a full batch from source \"web\"",
        "destinations.one.config.dlq.fsync: unknown key",
        "is also a dead-letter file",
        "destinations.two.config.retry.maxRetrys: unknown key",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }

    std::fs::write(
        dir.path().join("quiet.toml"),
        "[sources.http]\ntype = \"http\"\n[sources.spare]\ntype = \"http\"\n[sources.spare.config.settings]\nlisten = \"127.0.0.1:9002\"\n[destinations.out]\ntype = \"stdout\"\nsources = [\"http\"]\n",
    )
    .unwrap();
    let (ok, stdout, _) = run(dir.path(), &["validate", "quiet.toml"]);
    assert!(ok);
    assert!(
        stdout.contains("warning: events from source \"spare\" reach no destination"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("linger.toml"),
        "[sources.http]\ntype = \"http\"\n[sources.http.config]\nack = \"delivered\"\n[destinations.out]\ntype = \"stdout\"\n[destinations.out.config]\nbatch = { size = 500 }\n",
    )
    .unwrap();
    let (ok, stdout, _) = run(dir.path(), &["validate", "linger.toml"]);
    assert!(ok);
    assert!(
        stdout.contains("destination \"out\" holds events up to 30000 ms to fill batches"),
        "{stdout}"
    );
}

/// A destination that writes into the stream its own source reads would loop forever; an SSE
/// path that another route has would never be reached.
#[test]
fn validate_catches_stream_loops_and_sse_path_clashes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.toml"),
        r#"
[sources.http]
type = "http"

[sources.events]
type = "redis_stream"
[sources.events.config.settings]
url = "redis://127.0.0.1:6379"
streams = ["events", "orders"]

[destinations.copy]
type = "redis"
[destinations.copy.config.settings.redis]
url = "redis://127.0.0.1:6379"
streamKey = "orders"

[destinations.safe]
type = "redis"
sources = ["http"]
[destinations.safe.config.settings.redis]
url = "redis://127.0.0.1:6379"
streamKey = "events"

[destinations.hub]
type = "sse"
sources = ["events"]
[destinations.hub.config.settings]
path = "/metrics"
"#,
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["validate", "flow.toml"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "destinations.copy.config.settings.redis.streamKey: writes into stream \"orders\", which source \"events\" reads"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("destinations.safe"),
        "a destination that only takes HTTP events is fine: {stderr}"
    );
    assert!(
        stderr.contains("destinations.hub.config.settings.path: /metrics is also a path of source \"http\""),
        "{stderr}"
    );
}

/// Runs `weir serve` on the embedded default with `env` set and stderr piped (not a terminal)
/// until it says it listens; returns what it logged.
fn serve_log(env: &[(&str, &str)], args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(weir_binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env_remove("WEIR_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listening = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("HTTP source listening") {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    assert!(listening, "weir did not say it listens within 20 s:\n{log}");
    log
}

/// Logs to a pipe carry no colour codes; `--log-format json` (or `WEIR_LOG_FORMAT=json`) writes
/// one JSON object per line.
#[test]
fn logs_to_a_pipe_are_plain_and_json_on_request() {
    let text = serve_log(&[], &[]);
    assert!(text.contains("HTTP source listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a piped log:\n{text:?}");

    for (env, args) in [
        (vec![], vec!["--log-format", "json"]),
        (vec![("WEIR_LOG_FORMAT", "json")], vec![]),
    ] {
        let json = serve_log(&env, &args);
        let lines: Vec<Value> = json
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")))
            .collect();
        let listening = lines
            .iter()
            .find(|line| line["fields"]["message"] == "HTTP source listening")
            .unwrap_or_else(|| panic!("{json}"));
        assert_eq!(listening["level"], "INFO");
        assert!(
            listening["fields"]["address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
}

/// What walkerOS accepts and silently ignores loads, and `weir validate` says so, naming each
/// key (what walkerOS does with them: tests/walkeros_fidelity.rs).
#[test]
fn validate_warns_about_what_walkeros_silently_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let flow = json!({
        "sources": {"http": {"type": "http"}},
        "destinations": {
            "stream": {"type": "redis", "config": {
                "settings": {"redis": {"url": "redis://127.0.0.1:9", "streamKey": "events", "maxLen": 0}},
                "include": ["globals", "bogus"],
                "mapping": {"order": {"complete": {"settings": {"streamKey": 42}}}}}},
            "kafka": {"type": "kafka", "config": {
                "settings": {"kafka": {"brokers": ["127.0.0.1:9"], "topic": "events"}},
                "mapping": {"order": {"complete": {"settings": {"topic": {}, "key": 7}}}}}},
            "rudder": {"type": "rudderstack", "config": {
                "settings": {"writeKey": "k", "dataPlaneUrl": "http://127.0.0.1:9", "identify": true},
                "mapping": {"user": {"merge": {"settings": {"alias": true}}}}}}
        }
    });
    std::fs::write(dir.path().join("flow.json"), flow.to_string()).unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &["validate", "flow.json"]);
    assert!(ok, "{stderr}");
    for expected in [
        "warning: destinations.stream.config.settings.redis.maxLen: 0 means no trimming",
        "warning: destinations.stream.config.include.1: \"bogus\" is not a section",
        "warning: destinations.stream.config.mapping.order.complete.settings.streamKey: a number is ignored",
        "warning: destinations.kafka.config.mapping.order.complete.settings.topic: an object is ignored",
        "warning: destinations.kafka.config.mapping.order.complete.settings.key: a number is not a key path",
        "warning: destinations.rudder.config.settings.identify: a boolean is not a mapping value and yields nothing",
        "warning: destinations.rudder.config.mapping.user.merge.settings.alias: a boolean is not a mapping value",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(stdout.contains("ok (1 sources, 3 destinations)"), "{stdout}");

    // An empty rule topic is refused: brokers would refuse every record.
    let mut bad = flow.clone();
    bad["destinations"]["kafka"]["config"]["mapping"]["order"]["complete"]["settings"]["topic"] = json!("");
    std::fs::write(dir.path().join("bad.json"), bad.to_string()).unwrap();
    let (ok, _, stderr) = run(dir.path(), &["validate", "bad.json"]);
    assert!(!ok);
    assert!(
        stderr.contains("destinations.kafka.config.mapping.order.complete.settings.topic: an empty topic"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: destinations.stream.config.settings.redis.maxLen"),
        "{stderr}"
    );
}
