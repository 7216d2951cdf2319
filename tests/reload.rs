//! Reloading a running weir (SIGHUP, `--watch`) against a real Redis, under load: nothing
//! acknowledged is lost, events after the reload use the new flow, a bad flow changes
//! nothing.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually};

/// A flow: HTTP into the Redis stream `events`, whose mapping stamps `version`; `extra` is
/// appended as is.
fn flow(server: &RedisServer, version: &str, extra: &str) -> String {
    format!(
        r#"
[sources.http]
type = "http"

[destinations.events]
type = "redis"
config.settings.redis = {{ url = "{url}", streamKey = "events" }}
config.mapping.page.view.data.map = {{ version = {{ value = "{version}" }}, seq = "data.seq" }}
{extra}
"#,
        url = server.url()
    )
}

fn hangup(weir: &Weir) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &weir.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGHUP and waits for weir to log the outcome (the `n`th reload line).
fn reload(weir: &Weir, n: usize) -> String {
    hangup(weir);
    let done = |log: &str| log.matches("flow reloaded").count() + log.matches("reload refused").count() >= n;
    assert!(
        eventually(Duration::from_secs(10), || done(&weir.log())),
        "{}",
        weir.log()
    );
    weir.log()
}

/// `data` of each entry of `stream`, in order.
fn entries(server: &RedisServer, stream: &str) -> Vec<Value> {
    server
        .xrange(stream)
        .into_iter()
        .map(|(_, fields)| {
            let event = fields
                .iter()
                .find(|(name, _)| name == "event")
                .unwrap_or_else(|| panic!("no event field in {fields:?}"));
            serde_json::from_str(&event.1).unwrap()
        })
        .collect()
}

/// Posts `page view` events with increasing `seq` until stopped; remembers which were
/// acknowledged (200: journaled).
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(weir: &Weir) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let url = weir.url("/collect");
        let thread = {
            let (stop, acknowledged, next) = (stop.clone(), acknowledged.clone(), next.clone());
            std::thread::spawn(move || {
                let http = client();
                let started = Instant::now();
                // Bounded: at most a minute.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"name": "page view", "data": {"seq": seq}}).to_string();
                    if let Ok(response) = http.post(&url).body(body).send()
                        && response.status() == 200
                    {
                        acknowledged.lock().unwrap().push(seq);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Load {
            stop,
            acknowledged,
            next,
            thread: Some(thread),
        }
    }

    /// The next sequence number it will post.
    fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.acknowledged.lock().unwrap().clone()
    }
}

/// Under load: a changed mapping, an added destination and a removed one, each by SIGHUP.
/// Every acknowledged event reaches the stream; events posted after a reload use the new
/// mapping and reach the added destination; the removed one delivered everything it held.
#[test]
fn reloading_under_load_loses_nothing() {
    let server = RedisServer::start();
    let archive = r#"
[destinations.archive]
type = "file"
config.settings.path = "archive.jsonl"
"#;
    let weir = Weir::start(&flow(&server, "v1", archive));
    let load = Load::start(&weir);
    std::thread::sleep(Duration::from_millis(400));

    // 1. The mapping changes.
    std::fs::write(weir.path("flow.toml"), flow(&server, "v2", archive)).unwrap();
    let log = reload(&weir, 1);
    assert!(log.contains(r#"changed=["events"]"#), "{log}");
    let after_mapping = load.next();
    std::thread::sleep(Duration::from_millis(400));

    // 2. A destination is added.
    let audit = format!(
        "{archive}\n[destinations.audit]\ntype = \"redis\"\nconfig.settings.redis = {{ url = \"{}\", streamKey = \"audit\" }}\n",
        server.url()
    );
    std::fs::write(weir.path("flow.toml"), flow(&server, "v2", &audit)).unwrap();
    let log = reload(&weir, 2);
    assert!(log.contains(r#"added=["audit"]"#), "{log}");
    let after_audit = load.next();
    std::thread::sleep(Duration::from_millis(400));

    // 3. The file destination is removed and the mapping changes again, in one reload.
    let before_removal = load.next();
    let without_archive = format!(
        "[destinations.audit]\ntype = \"redis\"\nconfig.settings.redis = {{ url = \"{}\", streamKey = \"audit\" }}\n",
        server.url()
    );
    std::fs::write(weir.path("flow.toml"), flow(&server, "v3", &without_archive)).unwrap();
    let log = reload(&weir, 3);
    assert!(log.contains(r#"removed=["archive"]"#), "{log}");
    assert!(log.contains(r#"kept=["audit"] added=[] changed=["events"]"#), "{log}");
    let after_both = load.next();
    std::thread::sleep(Duration::from_millis(400));
    let acknowledged = load.finish();
    assert!(acknowledged.len() > 100, "under load: {} events", acknowledged.len());

    // Every acknowledged event reaches the stream, at least once.
    let mut in_stream: Vec<Value> = Vec::new();
    assert!(
        eventually(Duration::from_secs(15), || {
            in_stream = entries(&server, "events");
            let seen: std::collections::HashSet<u64> =
                in_stream.iter().map(|data| data["seq"].as_u64().unwrap()).collect();
            acknowledged.iter().all(|seq| seen.contains(seq))
        }),
        "lost: {:?}\n{}",
        {
            let seen: std::collections::HashSet<u64> =
                in_stream.iter().map(|data| data["seq"].as_u64().unwrap()).collect();
            acknowledged
                .iter()
                .filter(|seq| !seen.contains(seq))
                .collect::<Vec<_>>()
        },
        weir.log()
    );
    // The old mapping until the reload, the new one for everything posted after it.
    assert!(
        in_stream.iter().any(|data| data["version"] == "v1"),
        "the first mapping ran"
    );
    for data in &in_stream {
        let seq = data["seq"].as_u64().unwrap();
        if seq >= after_both {
            assert_eq!(data["version"], "v3", "posted after the third reload: {data}");
        } else if seq >= after_mapping {
            assert!(data["version"] != "v1", "posted after the first reload: {data}");
        }
    }
    assert!(
        in_stream.iter().any(|data| data["version"] == "v2"),
        "the second mapping ran"
    );
    // The added destination (no mapping: whole events) has everything posted after it was
    // added.
    let audited: std::collections::HashSet<u64> = entries(&server, "audit")
        .iter()
        .map(|event| event["data"]["seq"].as_u64().unwrap())
        .collect();
    for seq in acknowledged.iter().filter(|seq| **seq >= after_audit) {
        assert!(
            audited.contains(seq),
            "event {seq} posted after audit was added is missing there"
        );
    }
    // The removed destination delivered what it had taken before it went.
    let archived: std::collections::HashSet<u64> = weir
        .json_lines("archive.jsonl")
        .iter()
        .map(|event| event["data"]["seq"].as_u64().unwrap())
        .collect();
    for seq in acknowledged.iter().filter(|seq| **seq < before_removal) {
        assert!(
            archived.contains(seq),
            "event {seq} acknowledged before archive was removed is not in it"
        );
    }
    let metrics = weir.metrics();
    assert!(
        metrics.contains(r#"weir_config_reload_total{result="ok"} 3"#),
        "{metrics}"
    );
}

/// A flow file with problems changes nothing: each problem is logged with its path, the
/// refusal is counted, and events go on as before.
#[test]
fn a_bad_flow_file_keeps_the_running_flow() {
    let server = RedisServer::start();
    let weir = Weir::start(&flow(&server, "v1", ""));
    std::fs::write(
        weir.path("flow.toml"),
        flow(
            &server,
            "v2",
            "[destinations.broken]\ntype = \"redis\"\nconfig.settings.redis = { streamKey = 5 }\nconfig.qeueMax = 1\n",
        ),
    )
    .unwrap();
    let log = reload(&weir, 1);
    assert!(log.contains("reload refused, the running flow is unchanged"), "{log}");
    assert!(log.contains("destinations.broken.config.qeueMax: unknown key"), "{log}");
    assert!(log.contains("destinations.broken.config.settings.redis"), "{log}");
    let response = support::post(&weir, &json!({"name": "page view", "data": {"seq": 1}}));
    assert_eq!(response.status(), 200);
    assert!(eventually(Duration::from_secs(5), || entries(&server, "events").len() == 1));
    assert_eq!(
        entries(&server, "events")[0]["version"],
        "v1",
        "the old mapping still runs"
    );
    assert!(
        weir.metrics()
            .contains(r#"weir_config_reload_total{result="invalid"} 1"#),
        "{}",
        weir.metrics()
    );
}

/// `--watch` reloads when the file changes; a listener whose address changed moves, the
/// others stay.
#[test]
fn watch_reloads_on_change_and_listeners_move_only_when_their_address_does() {
    let server = RedisServer::start();
    let first = support::free_port();
    let second = support::free_port();
    let extra =
        |port: u16| format!("[sources.beacon]\ntype = \"http\"\nconfig.settings.listen = \"127.0.0.1:{port}\"\n");
    let weir = Weir::start_with(&flow(&server, "v1", &extra(first)), &["--watch"]);
    let beacon = |port: u16| {
        client()
            .post(format!("http://127.0.0.1:{port}/collect"))
            .body(json!({"name": "page view", "data": {"seq": port}}).to_string())
            .send()
    };
    assert_eq!(beacon(first).unwrap().status(), 200);
    std::fs::write(weir.path("flow.toml"), flow(&server, "v2", &extra(second))).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("flow reloaded")),
        "{}",
        weir.log()
    );
    assert!(weir.log().contains("the flow file changed"), "{}", weir.log());
    assert!(
        eventually(Duration::from_secs(5), || beacon(first).is_err()),
        "the old address is closed"
    );
    assert_eq!(beacon(second).unwrap().status(), 200);
    // The first source's listener stayed where it was.
    assert_eq!(
        support::post(&weir, &json!({"name": "page view", "data": {"seq": 1}})).status(),
        200
    );
    assert!(eventually(Duration::from_secs(5), || entries(&server, "events").len() == 3));
    let versions: Vec<Value> = entries(&server, "events")
        .iter()
        .map(|data| data["version"].clone())
        .collect();
    assert_eq!(versions, [json!("v1"), json!("v2"), json!("v2")]);
}

/// A destination whose target is down when the reload comes: the old version holds what it
/// has until the shutdown timeout, then hands it over through the journal; a second reload
/// meanwhile is put off until then, not lost. When Redis is back, every acknowledged event
/// is there, mapped the newest way from the second reload on.
#[test]
fn reloads_during_an_outage_hand_over_and_wait_their_turn() {
    let mut server = RedisServer::start();
    let weir = Weir::start_with(&flow(&server, "v1", ""), &["--shutdown-timeout", "2"]);
    let post = |seq: u64| support::post(&weir, &json!({"name": "page view", "data": {"seq": seq}})).status();
    assert_eq!(post(0), 200);
    assert!(eventually(Duration::from_secs(5), || entries(&server, "events").len() == 1));
    server.kill();
    for seq in 1..=5 {
        assert_eq!(post(seq), 200, "journaled while Redis is down");
    }
    std::fs::write(weir.path("flow.toml"), flow(&server, "v2", "")).unwrap();
    reload(&weir, 1);
    assert_eq!(post(6), 200);
    // The old version of `events` is still finishing (Redis is down): this one waits.
    std::fs::write(weir.path("flow.toml"), flow(&server, "v3", "")).unwrap();
    hangup(&weir);
    assert!(
        eventually(Duration::from_secs(5), || weir
            .log()
            .contains("still finishing after the last reload")),
        "{}",
        weir.log()
    );
    assert!(
        eventually(Duration::from_secs(15), || weir.log().matches("flow reloaded").count()
            == 2),
        "the put-off reload is applied once the first has finished:\n{}",
        weir.log()
    );
    for seq in 7..=9 {
        assert_eq!(post(seq), 200);
    }
    // A fresh Redis (nothing persisted): event 0 was delivered before it died.
    server.restart();
    assert!(
        eventually(Duration::from_secs(30), || {
            let seen: std::collections::HashSet<u64> = entries(&server, "events")
                .iter()
                .map(|data| data["seq"].as_u64().unwrap())
                .collect();
            (1..=9).all(|seq| seen.contains(&seq))
        }),
        "{:?}\n{}",
        entries(&server, "events"),
        weir.log()
    );
    for data in entries(&server, "events") {
        if data["seq"].as_u64().unwrap() >= 7 {
            assert_eq!(data["version"], "v3", "{data}");
        }
    }
    let metrics = weir.metrics();
    assert!(
        metrics.contains(r#"weir_config_reload_total{result="busy"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("weir_events_dead_lettered_total{destination=\"events\"} 1"),
        "{metrics}"
    );
}

/// A destination changed from one that is not journaled (an SSE hub) to one that is (a
/// Redis stream) reads the journal from the reload on.
#[test]
fn a_destination_that_becomes_journaled_reads_from_the_reload_on() {
    let server = RedisServer::start();
    let hub = "[destinations.out]\ntype = \"sse\"\n";
    let weir = Weir::start(&flow(&server, "v1", hub));
    assert_eq!(
        support::post(&weir, &json!({"name": "page view", "data": {"seq": 0}})).status(),
        200
    );
    let stream = format!(
        "[destinations.out]\ntype = \"redis\"\nconfig.settings.redis = {{ url = \"{}\", streamKey = \"out\" }}\n",
        server.url()
    );
    std::fs::write(weir.path("flow.toml"), flow(&server, "v1", &stream)).unwrap();
    let log = reload(&weir, 1);
    assert!(log.contains(r#"changed=["out"]"#), "{log}");
    for seq in 1..=5 {
        assert_eq!(
            support::post(&weir, &json!({"name": "page view", "data": {"seq": seq}})).status(),
            200
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || entries(&server, "out").len() == 5),
        "{:?}\n{}",
        entries(&server, "out"),
        weir.log()
    );
}
