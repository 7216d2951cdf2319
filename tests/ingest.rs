//! The HTTP source's `ingest` (walkerOS's express source `config.ingest`): a mapping over the
//! request (Express's `req`: `ip`, `headers`, `method`, `path`, `query`...) whose result
//! travels with each event of the request — into `ingest.*` paths and `context.ingest` of a
//! destination's mapping, through the journal across a SIGKILL, and into dead letters. The
//! client's address follows `trustProxy` (Express's `trust proxy`).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::recorder::{Recorder, Reply};
use support::{Weir, client, eventually};

/// The source's ingest block, as walkerOS's docs write one (with the `map` operator).
fn ingest() -> Value {
    json!({"map": {
        "ip": {"key": "ip"},
        "ua": "headers.user-agent",
        "method": "method",
        "path": "path",
        "campaign": "query.utm",
        "country": {"fn": "$code:(req) => req.headers['x-country'] || 'unknown'"},
        "debug": {"key": "headers.x-debug", "condition": "$code:(req, context) => req.hostname === 'localhost'"}
    }})
}

/// weir with an HTTP source (`source` merged into its config) and an `api` destination whose
/// mapped data reads the ingest.
fn start(recorder: &Recorder, source: Value, api: Value) -> Weir {
    let source = support::merged(json!({"ingest": ingest()}), &source);
    let api = support::merged(
        json!({
            "settings": {"url": format!("{}/hook", recorder.base)},
            "dlq": {"path": "dead.jsonl"},
            "data": {"map": {
                "event": "name",
                "ip": "ingest.ip",
                "ua": "ingest.ua",
                "request": {"fn": "$code:(event, context) => `${context.ingest.method} ${context.ingest.path}`"},
                "campaign": "ingest.campaign",
                "country": "ingest.country",
                "debug": "ingest.debug",
                "source": "ingest._meta.path.0"
            }}
        }),
        &api,
    );
    let flow = json!({
        "sources": {"web": {"type": "http", "config": source}},
        "destinations": {"hook": {"package": "@walkeros/server-destination-api", "config": api}}
    });
    Weir::start(&toml::to_string(&flow).unwrap())
}

fn send(weir: &Weir, forwarded_for: Option<&str>) -> u16 {
    let mut request = client()
        .post(weir.url("/collect?utm=spring"))
        .header("content-type", "application/json")
        .header("user-agent", "shop-app/2.1")
        .header("x-country", "DE")
        .header("x-debug", "on");
    if let Some(hops) = forwarded_for {
        request = request.header("x-forwarded-for", hops);
    }
    request
        .body(json!({"name": "order complete"}).to_string())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn bodies(recorder: &Recorder, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(10), || recorder.requests().len() >= count);
    recorder.requests().iter().map(|request| request.json()).collect()
}

#[test]
fn a_mapping_reads_the_request_ingest_by_path_and_in_code() {
    let recorder = Recorder::open();
    let weir = start(&recorder, json!({"settings": {"trustProxy": "loopback"}}), json!({}));
    assert_eq!(send(&weir, Some("203.0.113.9, 127.0.0.1")), 200);
    let body = &bodies(&recorder, 1)[0];
    assert_eq!(
        body,
        &json!({
            "event": "order complete",
            // The loopback hops are trusted proxies: the client is the first address beyond them.
            "ip": "203.0.113.9",
            "ua": "shop-app/2.1",
            "request": "POST /collect",
            "campaign": "spring",
            "country": "DE",
            // The condition saw Express's `hostname` (127.0.0.1 here, not localhost).
            "source": "web"
        })
    );
}

#[test]
fn without_trusted_proxies_the_ip_is_the_peer_whatever_x_forwarded_for_says() {
    let recorder = Recorder::open();
    let weir = start(&recorder, json!({}), json!({}));
    assert_eq!(send(&weir, Some("203.0.113.9")), 200);
    assert_eq!(bodies(&recorder, 1)[0]["ip"], "127.0.0.1");
}

#[test]
fn a_pixel_request_carries_its_ingest_too() {
    let recorder = Recorder::open();
    let weir = start(&recorder, json!({}), json!({}));
    let answer = client()
        .get(weir.url("/collect?name=page%20view&utm=pixel"))
        .header("user-agent", "mail-client")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = &bodies(&recorder, 1)[0];
    assert_eq!(
        (&body["event"], &body["ua"], &body["campaign"], &body["request"]),
        (
            &json!("page view"),
            &json!("mail-client"),
            &json!("pixel"),
            &json!("GET /collect")
        )
    );
}

/// An event waiting in the journal for a retry keeps its request's ingest across a SIGKILL:
/// after the restart it is sent with the address of the request that brought it; a dead
/// letter keeps the ingest too, and `weir dlq replay` sends it again with it.
#[test]
fn the_ingest_survives_a_sigkill_in_the_journal_and_stays_with_a_dead_letter() {
    let recorder = Recorder::open();
    // The first attempt is told to come back in a minute; weir is killed meanwhile.
    recorder.script([Reply::status(503).header("retry-after", "60")]);
    let mut weir = start(
        &recorder,
        json!({"ack": "journaled", "settings": {"trustProxy": ["127.0.0.0/8"]}}),
        json!({}),
    );
    assert_eq!(send(&weir, Some("198.51.100.4")), 200);
    assert_eq!(bodies(&recorder, 1)[0]["ip"], "198.51.100.4");
    weir.kill();
    weir.restart();
    let after = bodies(&recorder, 2);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], after[0], "the same request data after the restart");

    // A refused event: its dead letter carries the ingest beside the event.
    recorder.script([Reply::status(400).body("{\"error\":\"no\"}")]);
    assert_eq!(send(&weir, Some("192.0.2.77")), 200);
    eventually(Duration::from_secs(10), || !weir.json_lines("dead.jsonl").is_empty());
    let letters = weir.json_lines("dead.jsonl");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["ingest"]["ip"], "192.0.2.77");
    assert_eq!(letters[0]["ingest"]["_meta"], json!({"hops": 0, "path": ["web"]}));
    assert!(
        letters[0]["event"].get("ingest").is_none(),
        "the ingest is not part of the event"
    );

    // Replayed (weir stopped), the dead letter is sent again with its request's ingest.
    assert!(weir.terminate(Duration::from_secs(20)).success());
    let replay = std::process::Command::new(support::weir_binary())
        .args(["dlq", "replay", "dead.jsonl", "--config", "flow.toml"])
        .current_dir(weir.dir.path())
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    weir.restart();
    let after = bodies(&recorder, 4);
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        (&after[3]["ip"], &after[3]["ua"]),
        (&json!("192.0.2.77"), &json!("shop-app/2.1"))
    );
}

#[test]
fn a_bad_ingest_or_trust_setting_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let flow = json!({
        "sources": {"web": {"type": "http", "config": {
            "ingest": {"map": {"ip": {"kee": "ip"}}},
            "settings": {"trustProxy": "10.0.0.0/8, office"}
        }}},
        "destinations": {"out": {"type": "blackhole"}}
    });
    std::fs::write(dir.path().join("flow.json"), flow.to_string()).unwrap();
    let output = std::process::Command::new(support::weir_binary())
        .args(["validate", "flow.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("sources.web.config.ingest.map.ip.kee"), "{text}");
    assert!(
        text.contains("sources.web.config.settings.trustProxy") && text.contains("\"office\""),
        "{text}"
    );
}

/// `weir explain --ingest` maps events as if their request had made that ingest.
#[test]
fn explain_takes_the_ingest_as_a_request_would_make_it() {
    let dir = tempfile::tempdir().unwrap();
    let flow = json!({
        "sources": {"web": {"type": "http", "config": {"ingest": ingest()}}},
        "destinations": {"events": {"type": "file", "config": {
            "settings": {"path": "events.jsonl"},
            "data": {"map": {"ip": "ingest.ip", "country": {"fn": "$code:(e, c) => c.ingest.country"}}}
        }}}
    });
    std::fs::write(dir.path().join("flow.json"), flow.to_string()).unwrap();
    let run = |ingest: &str| {
        let mut child = std::process::Command::new(support::weir_binary())
            .args(["explain", "--config", "flow.json", "--ingest", ingest])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"name\": \"page view\"}\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let output = run(r#"{"ip": "203.0.113.9", "country": "NL"}"#);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["outcome"], "send", "{record}");
    let line: Value = serde_json::from_str(record["wire"]["line"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(line, json!({"ip": "203.0.113.9", "country": "NL"}), "{record}");
    let output = run("[1]");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ingest must be a JSON object"));
}

/// walkerOS's documented ingest examples against a real request: express.mdx's (`ip`,
/// `country` from a function — a header here, where the docs call geoip —, `devMode` read only
/// when the condition on `hostname` holds, a nested `request` map) and flow-complete.json's
/// `anonymizedIp`, whose `key` beside `fn` wins in walkerOS's code: the raw address.
#[test]
fn walkeros_documented_ingest_examples() {
    let recorder = Recorder::open();
    let ingest = json!({"map": {
        "ip": {"key": "ip"},
        "country": {"fn": "$code:(req) => req.headers['x-country']"},
        "devMode": {"key": "headers.x-debug", "condition": "$code:(req) => req.hostname === 'localhost'"},
        "request": {"map": {"ua": {"key": "headers.user-agent"}, "origin": {"key": "headers.origin"}}},
        "anonymizedIp": {"key": "ip", "fn": "$code:(ip) => ip ? ip.replace(/\\.\\d+$/, '.0') : ''"}
    }});
    let flow = json!({
        "sources": {"web": {"type": "http", "config": {"ingest": ingest}}},
        "destinations": {"hook": {"package": "@walkeros/server-destination-api", "config": {
            "settings": {"url": format!("{}/hook", recorder.base)},
            "data": {"map": {"ingest": "ingest"}}
        }}}
    });
    let weir = Weir::start(&toml::to_string(&flow).unwrap());
    let send = |host: &str| {
        client()
            .post(weir.url("/collect"))
            .header("host", host)
            .header("content-type", "application/json")
            .header("user-agent", "docs/1")
            .header("origin", "https://shop.example")
            .header("x-country", "AT")
            .header("x-debug", "1")
            .body(json!({"name": "page view"}).to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send("localhost:8080"), 200);
    assert_eq!(send("collect.example"), 200);
    let bodies = bodies(&recorder, 2);
    let expected = |dev: bool| {
        let mut ingest = json!({
            "ip": "127.0.0.1",
            "country": "AT",
            "request": {"ua": "docs/1", "origin": "https://shop.example"},
            "anonymizedIp": "127.0.0.1",
            "_meta": {"hops": 0, "path": ["web"]}
        });
        if dev {
            ingest["devMode"] = json!("1");
        }
        json!({"ingest": ingest})
    };
    let mut bodies = bodies;
    bodies.sort_by_key(|body| body["ingest"].get("devMode").is_none());
    // Key order aside (the map's order, then `_meta`), each request's ingest as walkerOS makes it.
    assert_eq!(bodies, [expected(true), expected(false)]);
}
