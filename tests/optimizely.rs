//! weir as a drop-in for Optimizely Agent's notifications: Agent's publisher writes
//! `stream:optimizely-sync-<sdkKey>` entries (here with redis-cli, exactly as Agent's
//! `XADD … data <json> timestamp <seconds>`), weir's stream source finds every such stream by
//! pattern, and Agent's clients (an HTTP client sending `X-Optimizely-SDK-Key`) get Agent's
//! frames from every weir instance. Reference: systems.md §F.

mod support;

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually};

const PATH: &str = "/v1/notifications/event-stream";

/// One weir instance beside Agents: HTTP → `redis` with Agent's serialization (so services can
/// publish notifications too), Agent's streams (by pattern, broadcast) → the SSE hub in Agent
/// mode, with `Last-Event-ID` replay.
fn instance(server: &RedisServer, name: &str, source: Value) -> Weir {
    let settings = support::merged(
        json!({"url": server.url(), "streams": ["stream:optimizely-sync-*"], "mode": "broadcast",
               "consumer": name, "block": 50, "scanInterval": 100}),
        &source,
    );
    let flow = json!({
        "sources": {
            "http": {"type": "http", "config": {"ack": "delivered"}},
            "agents": {"type": "redis_stream", "config": {"settings": settings}}
        },
        "destinations": {
            "publish": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": server.url(), "serialization": "optimizely"}}}},
            "notifications": {"type": "sse", "sources": ["agents"], "config": {"settings": {
                "protocol": "optimizely-agent", "heartbeat": 200, "replay": {"url": server.url()}}}}
        }
    });
    scanned(Weir::start(&toml::to_string(&flow).unwrap()))
}

/// `weir` once its first scan for Agent's streams is done: a stream created after that is
/// read from its first entry (one the first scan finds starts at `startId`, `$`).
fn scanned(weir: Weir) -> Weir {
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("first scan done")
            || weir.log().contains("subscribing (Pub/Sub")),
        "{}",
        weir.log()
    );
    weir
}

/// Agent's publisher, byte for byte: `XADD stream:optimizely-sync-<key> * data <json>
/// timestamp <unix seconds>`; returns the entry id.
fn agent_publishes(server: &RedisServer, sdk_key: &str, kind: &str, message: Value) -> String {
    let data = json!({"type": kind, "message": message}).to_string();
    server
        .cli(&[
            "XADD",
            &format!("stream:optimizely-sync-{sdk_key}"),
            "*",
            "data",
            &data,
            "timestamp",
            "1759461274",
        ])
        .trim()
        .to_owned()
}

/// An Agent client: the response body read as it comes.
struct AgentClient {
    response: reqwest::blocking::Response,
    buffer: Vec<u8>,
}

impl AgentClient {
    fn connect(weir: &Weir, query: &str, headers: &[(&str, &str)]) -> AgentClient {
        let mut request = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .get(weir.url(&format!("{PATH}{query}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["connection"], "keep-alive");
        AgentClient {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next piece of the body up to and including `separator`.
    fn next(&mut self, separator: &[u8]) -> String {
        loop {
            if let Some(at) = self.buffer.windows(separator.len()).position(|w| w == separator) {
                let piece: Vec<u8> = self.buffer.drain(..at + separator.len()).collect();
                return String::from_utf8(piece).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let read = self.response.read(&mut chunk).unwrap();
            assert!(read > 0, "the stream ended");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// The next SSE frame as sent, heartbeat comments skipped.
    fn frame(&mut self) -> String {
        loop {
            let frame = self.next(b"\n\n");
            if !frame.starts_with(": heartbeat") {
                return frame;
            }
        }
    }

    /// The next raw line.
    fn line(&mut self) -> String {
        self.next(b"\n")
    }
}

/// weir's log says the pattern found `stream`.
fn found(weir: &Weir, stream: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        weir.log()
            .lines()
            .any(|line| line.contains("found a stream matching the pattern") && line.contains(stream))
    })
}

/// Agent's clients on two weir instances get Agent's frames for their SDK key only, filtered
/// and raw as Agent serves them, for streams created after weir started, from Agent's
/// publisher and from weir's own.
#[test]
fn agent_s_clients_get_agent_s_frames_from_every_instance() {
    let server = RedisServer::start();
    // A key with a stream already (its old entries are history: groups start at `$`).
    agent_publishes(&server, "early", "track", json!({"eventKey": "old"}));
    let (a, b) = (
        instance(&server, "host-a", json!({})),
        instance(&server, "host-b", json!({})),
    );
    assert!(found(&a, "stream:optimizely-sync-early") && found(&b, "stream:optimizely-sync-early"));
    // Clients for a key that has no stream yet: they wait for their first notification.
    let mut all_a = AgentClient::connect(&a, "", &[("X-Optimizely-SDK-Key", "late")]);
    let mut all_b = AgentClient::connect(&b, "", &[("X-Optimizely-SDK-Key", "late:api-token")]);
    let mut tracks = AgentClient::connect(&a, "?filter=track,bogus", &[("X-Optimizely-SDK-Key", "late")]);
    let mut raw = AgentClient::connect(&b, "?raw&filter=decision", &[("X-Optimizely-SDK-Key", "late")]);
    let mut early = AgentClient::connect(&a, "", &[("X-Optimizely-SDK-Key", "early")]);

    // Agent's publisher creates the new key's stream; weir's scan finds it, and reads it from
    // its start (nothing written before the scan that found it is missed).
    let decision = agent_publishes(
        &server,
        "late",
        "decision",
        json!({"type": "flag", "userId": "u1", "attributes": {"plan": "<gold>"}, "decisionInfo": {"enabled": true}}),
    );
    assert!(found(&a, "stream:optimizely-sync-late") && found(&b, "stream:optimizely-sync-late"));
    // weir's own publisher: a service posts the notification over HTTP.
    let response = client()
        .post(b.url("/collect"))
        .json(&json!({"name": "notification track", "data": {"eventKey": "buy", "userId": "u2"}, "custom": {"sdkKey": "late"}}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let entries = server.xrange("stream:optimizely-sync-late");
    assert_eq!(entries.len(), 2);
    let (track, fields) = &entries[1];
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["data", "timestamp"]);
    assert_eq!(
        fields[0].1,
        r#"{"type":"track","message":{"eventKey":"buy","userId":"u2"}}"#
    );
    let seconds: u64 = fields[1].1.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(seconds) < 60, "timestamp {seconds} is unix seconds");
    agent_publishes(&server, "early", "decision", json!({"userId": "e"}));

    // Agent re-marshals the message as Go does: keys sorted, HTML escaped.
    let decision_json =
        r#"{"attributes":{"plan":"\u003cgold\u003e"},"decisionInfo":{"enabled":true},"type":"flag","userId":"u1"}"#;
    let track_json = r#"{"eventKey":"buy","userId":"u2"}"#;
    for client in [&mut all_a, &mut all_b] {
        assert_eq!(client.frame(), format!("id: {decision}\ndata: {decision_json}\n\n"));
        assert_eq!(client.frame(), format!("id: {track}\ndata: {track_json}\n\n"));
    }
    assert_eq!(tracks.frame(), format!("id: {track}\ndata: {track_json}\n\n"));
    assert_eq!(raw.line(), format!("{decision_json}\n"));
    assert_eq!(
        early.frame(),
        format!(
            "id: {}\ndata: {{\"userId\":\"e\"}}\n\n",
            server.xrange("stream:optimizely-sync-early")[1].0
        )
    );
    // Every instance has a group of its own on each key's stream (broadcast).
    let groups = server.cli(&["XINFO", "GROUPS", "stream:optimizely-sync-late"]);
    assert!(
        groups.contains("weir:host-a") && groups.contains("weir:host-b"),
        "{groups}"
    );
}

/// Agent's middleware answers a request without the header with its 400, byte for byte.
#[test]
fn a_missing_sdk_key_is_agent_s_400() {
    let server = RedisServer::start();
    let weir = instance(&server, "host-a", json!({}));
    let response = client().get(weir.url(PATH)).send().unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().unwrap(),
        "{\"error\":\"missing required X-Optimizely-SDK-Key header\"}\n"
    );
    // Only the part before `:` is the key; an empty one is no key.
    let response = client()
        .get(weir.url(PATH))
        .header("X-Optimizely-SDK-Key", ":token")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// weir SIGKILLed and restarted: a client that reconnects with the last id it saw gets what
/// was published meanwhile from the key's stream, then live notifications, with no gap.
#[test]
fn nothing_is_lost_across_a_weir_restart() {
    let server = RedisServer::start();
    agent_publishes(&server, "k", "track", json!({"n": 0}));
    let mut weir = instance(&server, "host-a", json!({}));
    assert!(found(&weir, "stream:optimizely-sync-k"));
    let mut listener = AgentClient::connect(&weir, "", &[("X-Optimizely-SDK-Key", "k")]);
    let first = agent_publishes(&server, "k", "track", json!({"n": 1}));
    assert_eq!(listener.frame(), format!("id: {first}\ndata: {{\"n\":1}}\n\n"));
    weir.kill();
    let missed: Vec<String> = (2..4)
        .map(|n| agent_publishes(&server, "k", "track", json!({ "n": n })))
        .collect();
    weir.restart();
    assert!(found(&weir, "stream:optimizely-sync-k"));
    let mut listener = AgentClient::connect(&weir, "", &[("X-Optimizely-SDK-Key", "k"), ("Last-Event-ID", &first)]);
    for (n, id) in missed.iter().enumerate() {
        assert_eq!(listener.frame(), format!("id: {id}\ndata: {{\"n\":{}}}\n\n", n + 2));
    }
    let live = agent_publishes(&server, "k", "track", json!({"n": 4}));
    assert_eq!(listener.frame(), format!("id: {live}\ndata: {{\"n\":4}}\n\n"));
}

/// Agent's entries that are not notifications are dead-lettered with the reason (Agent skips
/// them silently), and the dead-letter stream, though it matches the pattern, is not read.
#[test]
fn undecodable_agent_entries_are_dead_lettered() {
    let server = RedisServer::start();
    let weir = instance(&server, "host-a", json!({}));
    server.cli(&[
        "XADD",
        "stream:optimizely-sync-bad",
        "*",
        "data",
        "not json",
        "timestamp",
        "1",
    ]);
    assert!(found(&weir, "stream:optimizely-sync-bad"));
    let dlq = "stream:optimizely-sync-bad.dlq";
    assert!(eventually(Duration::from_secs(10), || !server.xrange(dlq).is_empty()));
    let letter = &server.xrange(dlq)[0].1;
    let reason = letter
        .iter()
        .find(|(n, _)| n == "reason")
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert!(reason.contains("the Optimizely payload is not JSON"), "{reason}");
    // Several scans later, still not read.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !weir
            .log()
            .lines()
            .any(|l| l.contains("found a stream") && l.contains(".dlq")),
        "{}",
        weir.log()
    );
}

/// `mode = "pubsub"` (and Redis before 5): PSUBSCRIBE to Agent's fallback channels,
/// `optimizely-sync-*`, whose messages are Agent's payloads.
#[test]
fn pubsub_mode_reads_agent_s_fallback_channels() {
    let server = RedisServer::start();
    let weir = instance(&server, "host-a", json!({"mode": "pubsub"}));
    assert!(eventually(Duration::from_secs(10), || weir
        .log()
        .contains("subscribing (Pub/Sub")));
    let mut listener = AgentClient::connect(&weir, "?raw", &[("X-Optimizely-SDK-Key", "k")]);
    let payload = json!({"type": "track", "message": {"eventKey": "e"}}).to_string();
    // PUBLISH says how many subscribers got it: wait until weir's subscription is live.
    assert!(eventually(Duration::from_secs(10), || {
        server.cli(&["PUBLISH", "optimizely-sync-k", &payload]).trim() == "1"
    }));
    assert_eq!(listener.line(), "{\"eventKey\":\"e\"}\n");
}

/// `examples/optimizely-agent.toml` as shipped: Redis from `${REDIS_URL}`, two instances on
/// one host told apart by `WEIR_INSTANCE`, each with its own group, each client served.
#[test]
fn the_shipped_example_runs_two_instances_on_one_host() {
    let server = RedisServer::start();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/optimizely-agent.toml")).unwrap();
    let url = server.url();
    let start = |instance: &str| {
        scanned(Weir::start_env(
            "flow.toml",
            &example,
            &[],
            &[("REDIS_URL", url.as_str()), ("WEIR_INSTANCE", instance)],
        ))
    };
    let (blue, green) = (start("blue"), start("green"));
    let mut clients = [
        AgentClient::connect(&blue, "", &[("X-Optimizely-SDK-Key", "key")]),
        AgentClient::connect(&green, "", &[("X-Optimizely-SDK-Key", "key")]),
    ];
    let id = agent_publishes(
        &server,
        "key",
        "project_config_update",
        json!({"Revision": "7", "SDKKey": "key"}),
    );
    assert!(found(&blue, "stream:optimizely-sync-key") && found(&green, "stream:optimizely-sync-key"));
    for client in &mut clients {
        assert_eq!(
            client.frame(),
            format!("id: {id}\ndata: {{\"Revision\":\"7\",\"SDKKey\":\"key\"}}\n\n")
        );
    }
    let groups = server.cli(&["XINFO", "GROUPS", "stream:optimizely-sync-key"]);
    assert!(
        groups.contains("weir-notifications:blue") && groups.contains("weir-notifications:green"),
        "{groups}"
    );
}

/// The browser path: an `EventSource` cannot send `X-Optimizely-SDK-Key`, so weir takes
/// `?sdkKey=` too (Agent does not). Headless Chromium subscribes, publishes a notification
/// through weir's collect path, and shows the message that came back.
#[test]
fn a_browser_subscribes_with_the_sdk_key_as_a_query_parameter() {
    let server = RedisServer::start();
    let weir = instance(&server, "host-a", json!({}));
    let page = weir.dir.path().join("page.html");
    std::fs::write(
        &page,
        format!(
            r#"<!doctype html><html><body><ul id="got"></ul><script>
const base = '{base}';
const source = new EventSource(base + '{PATH}?sdkKey=web');
source.addEventListener('open', () => {{
  fetch(base + '/collect', {{method: 'POST', headers: {{'content-type': 'text/plain'}},
    body: JSON.stringify({{name: 'notification track', data: {{eventKey: 'from-chromium'}}, custom: {{sdkKey: 'web'}}}})}});
}});
source.onmessage = (event) => {{
  const item = document.createElement('li');
  item.id = 'received';
  item.textContent = event.lastEventId + ' ' + JSON.parse(event.data).eventKey;
  document.getElementById('got').appendChild(item);
  source.close();
}};
</script></body></html>"#,
            base = weir.base
        ),
    )
    .unwrap();
    let (dom, stderr) = support::chromium_dump_dom(&page);
    let entries = server.xrange("stream:optimizely-sync-web");
    assert_eq!(entries.len(), 1, "the browser's POST reached Agent's stream: {dom}");
    assert!(
        dom.contains(&format!(r#"<li id="received">{} from-chromium</li>"#, entries[0].0)),
        "{dom}\n{stderr}"
    );
}

/// Three Agent pods publishing at once, `per_pod` notifications each, alternately for SDK keys
/// `A` and `B` and through Agent's three types; message `{"n":<n>,"p":<pod>}` (already in Go's
/// form). Waits for the pods to finish.
fn three_pods_publish(server: &RedisServer, round: usize, per_pod: usize) {
    let pods: Vec<_> = (0..3)
        .map(|pod| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..per_pod {
                    let n = round * 1000 + pod * 100 + i;
                    let key = if i % 2 == 0 { "A" } else { "B" };
                    let kind = ["decision", "track", "project_config_update"][i % 3];
                    let data = format!(r#"{{"type":"{kind}","message":{{"n":{n},"p":{pod}}}}}"#);
                    let _: String = redis::cmd("XADD")
                        .arg(format!("stream:optimizely-sync-{key}"))
                        .arg("*")
                        .arg("data")
                        .arg(data)
                        .arg("timestamp")
                        .arg(1_765_100_000)
                        .query(&mut connection)
                        .unwrap();
                }
            })
        })
        .collect();
    for pod in pods {
        pod.join().unwrap();
    }
}

/// What a client of `key` (only `decision` with `decisions_only`) must receive after entry
/// `after`, in stream order: (entry id, message).
fn expected(server: &RedisServer, key: &str, decisions_only: bool, after: Option<&str>) -> Vec<(String, String)> {
    let entries = server.xrange(&format!("stream:optimizely-sync-{key}"));
    let start = after.map_or(0, |after| entries.iter().position(|(id, _)| id == after).unwrap() + 1);
    entries[start..]
        .iter()
        .filter_map(|(id, fields)| {
            let payload: Value = serde_json::from_str(&fields[0].1).unwrap();
            let message = &payload["message"];
            let wanted = !decisions_only || payload["type"] == "decision";
            wanted.then(|| (id.clone(), format!(r#"{{"n":{},"p":{}}}"#, message["n"], message["p"])))
        })
        .collect()
}

/// Reads `count` SSE frames; returns them as (id, data).
fn frames(client: &mut AgentClient, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|_| {
            let frame = client.frame();
            let (id, data) = frame
                .strip_prefix("id: ")
                .and_then(|rest| rest.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not an Agent frame with weir's id: {frame:?}"));
            (id.to_owned(), data.trim_end_matches('\n').to_owned())
        })
        .collect()
}

/// The seed's scenario: three Agent pods publishing for two SDK keys, two weir instances, Agent
/// clients on both for each key, plus `filter=decision` and `raw` ones. Every client receives
/// every notification of its key, in order, and none of the other key's. Then one instance is
/// SIGKILLed while the pods go on: its clients reconnect to the other with `Last-Event-ID` and
/// miss nothing.
#[test]
fn the_seed_scenario_three_pods_two_instances_two_keys() {
    let server = RedisServer::start();
    let (mut a, b) = (
        instance(&server, "host-a", json!({})),
        instance(&server, "host-b", json!({})),
    );
    let header = |key: &'static str| [("X-Optimizely-SDK-Key", key)];
    // (instance, key, decisions only, client)
    let mut sse: Vec<(&str, &str, bool, AgentClient)> = Vec::new();
    for (name, weir) in [("a", &a), ("b", &b)] {
        for key in ["A", "B"] {
            sse.push((name, key, false, AgentClient::connect(weir, "", &header(key))));
            sse.push((
                name,
                key,
                true,
                AgentClient::connect(weir, "?filter=decision", &header(key)),
            ));
        }
    }
    let mut raw_a = AgentClient::connect(&a, "?raw", &header("A"));
    let mut raw_b = AgentClient::connect(&b, "?raw", &header("B"));

    three_pods_publish(&server, 1, 20);
    for (name, key, decisions, client) in &mut sse {
        let want = expected(&server, key, *decisions, None);
        // 30 per key; decisions: A 12, B 9 (i % 3 == 0 of each pod's even or odd i).
        assert_eq!(
            want.len(),
            [[30, 12], [30, 9]][usize::from(*key == "B")][usize::from(*decisions)]
        );
        assert_eq!(
            frames(client, want.len()),
            want,
            "client of {key} on {name} (decisions only: {decisions})"
        );
    }
    for (key, client) in [("A", &mut raw_a), ("B", &mut raw_b)] {
        for (_, message) in expected(&server, key, false, None) {
            assert_eq!(client.line(), format!("{message}\n"));
        }
    }
    // The last id each client saw: round 2 must follow it with no gap and nothing else between.
    let last_seen: Vec<Option<String>> = sse
        .iter()
        .map(|(_, key, decisions, _)| {
            expected(&server, key, *decisions, None)
                .last()
                .map(|(id, _)| id.clone())
        })
        .collect();

    a.kill();
    three_pods_publish(&server, 2, 20);
    for ((name, key, decisions, client), last) in sse.iter_mut().zip(&last_seen) {
        if *name == "a" {
            // Its instance is gone: reconnect to the other, resuming after the last id seen.
            let last = last.as_deref().unwrap();
            let query = if *decisions { "?filter=decision" } else { "" };
            *client = AgentClient::connect(&b, query, &[("X-Optimizely-SDK-Key", key), ("Last-Event-ID", last)]);
        }
        let want = expected(&server, key, *decisions, last.as_deref());
        assert_eq!(
            want.len(),
            [[30, 12], [30, 9]][usize::from(*key == "B")][usize::from(*decisions)]
        );
        assert_eq!(frames(client, want.len()), want, "round 2, client of {key} from {name}");
    }
}
