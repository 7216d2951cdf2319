//! The journal's promises against real processes: a 200 (`ack = "journaled"`) means the
//! events are on disk, so neither SIGKILL of weir at any moment nor an outage of Redis loses
//! one; a full journal answers 503 + `Retry-After` and takes events again once the
//! destination has drained.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually};

const STREAM: &str = "journal:events";

/// HTTP (answering once journaled, the default) into one Redis stream; `extra` is TOML
/// appended (a `[journal]` block).
fn flow(server: &RedisServer, extra: &str) -> String {
    format!(
        r#"
[sources.http]
type = "http"

[destinations.events]
type = "redis"
[destinations.events.config]
dlq = {{ path = "dead.jsonl" }}
retry = {{ retryDelay = 20, maxRetryDelay = 500 }}
[destinations.events.config.settings.redis]
url = "{url}"
streamKey = "{STREAM}"
{extra}"#,
        url = server.url()
    )
}

/// Every `data.id` in the stream, with how many times it is there.
fn ids_in_stream(server: &RedisServer) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for (_, fields) in server.xrange(STREAM) {
        let event = fields
            .iter()
            .find(|(name, _)| name == "event")
            .map(|(_, value)| serde_json::from_str::<Value>(value).unwrap())
            .expect("json entries have an event field");
        *ids.entry(event["data"]["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    ids
}

fn batch(prefix: &str, first: usize, count: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (first..first + count).map(|n| format!("{prefix}-{n}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"name": "load test", "data": {"id": id, "pad": "x".repeat(200)}}))
        .collect();
    (Value::Array(events).to_string(), ids)
}

/// Posts batches of ten until weir stops answering (it was killed) or `stop` is set; returns
/// the ids answered 200. Any other answer fails the test.
fn post_until_gone(base: String, prefix: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    let started = Instant::now();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
        let (body, ids) = batch(&prefix, next, 10);
        next += 10;
        let response = http
            .post(format!("{base}/collect"))
            .header("content-type", "application/json")
            .body(body)
            .send();
        match response {
            Ok(response) if response.status() == 200 => acknowledged.extend(ids),
            Ok(response) => panic!(
                "answered {}: {}",
                response.status(),
                response.text().unwrap_or_default()
            ),
            // Killed mid-request: not acknowledged (it may still be on disk: a duplicate).
            Err(_) => break,
        }
    }
    acknowledged
}

/// Twenty rounds of: start weir, post from another thread, SIGKILL weir at a random moment.
/// Then one last start; returns every acknowledged id.
fn kill_loop(weir: &mut Weir, rounds: usize) -> Vec<String> {
    let mut rng = rand::rng();
    let mut acknowledged = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            weir.restart();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let poster = {
            let (base, stop) = (weir.base.clone(), stop.clone());
            std::thread::spawn(move || post_until_gone(base, format!("r{round}"), stop))
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        weir.kill();
        stop.store(true, Ordering::Relaxed);
        acknowledged.extend(poster.join().unwrap());
    }
    weir.restart();
    acknowledged
}

fn assert_all_in_stream(server: &RedisServer, weir: &Weir, acknowledged: &[String]) {
    let wanted: HashSet<&String> = acknowledged.iter().collect();
    let complete = eventually(Duration::from_secs(60), || {
        let ids = ids_in_stream(server);
        wanted.iter().all(|id| ids.contains_key(*id))
    });
    let ids = ids_in_stream(server);
    let lost: Vec<&&String> = wanted.iter().filter(|id| !ids.contains_key(**id)).collect();
    assert!(
        complete && lost.is_empty(),
        "{} of {} acknowledged events lost (e.g. {:?})\n{}",
        lost.len(),
        wanted.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        weir.log()
    );
    let duplicates: usize = ids.values().map(|count| count - 1).sum();
    eprintln!(
        "{} acknowledged, {} in the stream, {} delivered twice, 0 lost",
        wanted.len(),
        ids.len(),
        duplicates
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let server = RedisServer::start();
    let mut weir = Weir::start(&flow(&server, ""));
    let acknowledged = kill_loop(&mut weir, 20);
    assert!(
        acknowledged.len() > 100,
        "the load reached weir: {}",
        acknowledged.len()
    );
    assert_all_in_stream(&server, &weir, &acknowledged);
    assert!(weir.json_lines("dead.jsonl").is_empty(), "nothing dead-lettered");
}

#[test]
fn sigkill_while_redis_is_down_loses_nothing_once_redis_returns() {
    let mut server = RedisServer::start();
    server.kill();
    let mut weir = Weir::start(&flow(&server, ""));
    let acknowledged = kill_loop(&mut weir, 20);
    assert!(
        acknowledged.len() > 100,
        "the load reached weir: {}",
        acknowledged.len()
    );
    assert!(ids_in_stream_is_unreachable(&server));
    server.restart();
    assert_all_in_stream(&server, &weir, &acknowledged);
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "an outage dead-letters nothing"
    );
}

fn ids_in_stream_is_unreachable(server: &RedisServer) -> bool {
    server.cli(&["PING"]).trim() != "PONG"
}

/// Redis gone for a minute while 50 000 events arrive: every answer is 200, nothing is
/// dead-lettered, and all of them are in the stream once Redis is back.
#[test]
fn a_minute_long_redis_outage_holds_every_event_and_dead_letters_none() {
    // Redis writes every XADD to its AOF before answering: what it acknowledged survives its
    // own SIGKILL, so the count below is weir's alone.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let weir = Weir::start(&flow(&server, ""));
    let http = client();
    let post = |first: usize| {
        let (body, _) = batch("outage", first, 100);
        let response = http
            .post(weir.url("/collect"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    };
    for first in (0..1000).step_by(100) {
        post(first);
    }
    let outage = Instant::now();
    server.kill();
    for first in (1000..50_000).step_by(100) {
        post(first);
    }
    let posted_in = outage.elapsed();
    // The journal takes events: a load balancer has no reason to take weir out of rotation.
    let readiness = http.get(weir.url("/readyz")).send().unwrap();
    assert_eq!(readiness.status(), 200, "ready while the journal holds the events");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "an outage dead-letters nothing"
    );
    server.restart();
    let outage_lasted = outage.elapsed();
    let all = eventually(Duration::from_secs(60), || ids_in_stream(&server).len() == 50_000);
    let ids = ids_in_stream(&server);
    assert!(all, "{} of 50000 in the stream\n{}", ids.len(), weir.log());
    assert!(weir.json_lines("dead.jsonl").is_empty());
    eprintln!(
        "redis: 50000 events, 49000 posted in {posted_in:?} during a {outage_lasted:?} outage; {} delivered twice",
        ids.values().map(|count| count - 1).sum::<usize>()
    );
}

/// Posts batches of 10 until weir answers 503, which must come with `Retry-After: 1` and
/// say `reason`; the ids answered 200 before it.
fn post_until_refused(weir: &Weir, prefix: &str, reason: &str) -> Vec<String> {
    let http = client();
    let mut acknowledged = Vec::new();
    for first in (0..100_000).step_by(10) {
        let (body, ids) = batch(prefix, first, 10);
        let response = http
            .post(weir.url("/collect"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        match response.status().as_u16() {
            200 => acknowledged.extend(ids),
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let text = response.text().unwrap();
                assert!(text.contains(reason), "{text}");
                return acknowledged;
            }
            status => panic!("answered {status}: {}", response.text().unwrap()),
        }
    }
    panic!("100 000 events taken without a 503 ({reason})");
}

/// A small `maxBytes` with nothing draining (Redis down): 503 + Retry-After, not ready, the
/// disk within the cap; once Redis is back the journal drains and takes events again, and
/// every event answered 200 arrives.
#[test]
fn a_full_journal_answers_503_until_the_destination_drains_it() {
    let mut server = RedisServer::start();
    server.kill();
    let weir = Weir::start(&flow(&server, "[journal]\nmaxBytes = 262144\nsegmentBytes = 65536\n"));
    let http = client();
    let mut acknowledged = post_until_refused(&weir, "full", "journal is full");
    let readiness = http.get(weir.url("/readyz")).send().unwrap().text().unwrap();
    assert!(readiness.contains("journal is full"), "{readiness}");
    let on_disk: u64 = std::fs::read_dir(weir.path("weir-data/journal"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".wjl"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 262_144, "{on_disk} bytes of segments");

    server.restart();
    let (body, ids) = batch("after", 0, 10);
    let (status, _) = support::post_retrying_unavailable(&http, &weir.url("/collect"), &body);
    assert_eq!(status, 200, "accepted again once drained");
    acknowledged.extend(ids);
    assert_all_in_stream(&server, &weir, &acknowledged);
}

fn weir_cli(weir: &Weir, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(support::weir_binary())
        .args(args)
        .current_dir(weir.dir.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Dead letters come back: what Redis refused (a key of the wrong type) is listed, replayed
/// into the journal once weir is stopped, and delivered at the next start; `weir journal
/// status` shows the destination's cursor meanwhile.
#[test]
fn dead_letters_are_listed_replayed_through_the_journal_and_purged() {
    let server = RedisServer::start();
    server.cli(&["SET", STREAM, "not a stream"]);
    let mut weir = Weir::start(&flow(&server, ""));
    for n in 0..3 {
        let (body, _) = batch("dlq", n, 1);
        assert_eq!(
            support::post(&weir, &serde_json::from_str(&body).unwrap()).status(),
            200
        );
    }
    assert!(eventually(Duration::from_secs(10), || weir
        .json_lines("dead.jsonl")
        .len()
        == 3));

    let (ok, stdout, _) = weir_cli(&weir, &["dlq", "list", "dead.jsonl", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let letters = listed["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|l| l["destination"] == "events" && l["cause"] == "fatal")
    );
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("WRONGTYPE"),
        "{}",
        letters[0]
    );
    let (ok, stdout, _) = weir_cli(
        &weir,
        &["dlq", "list", "dead.jsonl", "--reason", "retries_exhausted", "--json"],
    );
    assert!(ok && stdout.contains("\"deadLetters\":[]"), "{stdout}");

    let (ok, stdout, _) = weir_cli(&weir, &["journal", "status", "--config", "flow.toml", "--json"]);
    assert!(ok, "{stdout}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["consumers"][0]["name"], "events");
    assert!(status["lastSeq"].as_u64().unwrap() >= 3, "{status}");

    // While weir runs, the journal is its own.
    let (ok, _, stderr) = weir_cli(&weir, &["dlq", "replay", "dead.jsonl", "--config", "flow.toml"]);
    assert!(!ok && stderr.contains("weir must be stopped"), "{stderr}");

    assert!(weir.terminate(Duration::from_secs(20)).success());
    server.cli(&["DEL", STREAM]);
    let (ok, stdout, stderr) = weir_cli(&weir, &["dlq", "replay", "dead.jsonl", "--config", "flow.toml"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replayed 3 dead letters"), "{stdout}");
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "replayed letters leave the file"
    );
    weir.restart();
    assert!(
        eventually(Duration::from_secs(20), || ids_in_stream(&server).len() == 3),
        "{}",
        weir.log()
    );
    let ids = ids_in_stream(&server);
    assert!((0..3).all(|n| ids.contains_key(&format!("dlq-{n}"))), "{ids:?}");

    // Purge asks first, and refuses while weir runs.
    server.cli(&["DEL", STREAM]);
    server.cli(&["SET", STREAM, "not a stream"]);
    let (body, _) = batch("purge", 0, 2);
    assert_eq!(
        support::post(&weir, &serde_json::from_str(&body).unwrap()).status(),
        200
    );
    assert!(eventually(Duration::from_secs(10), || weir
        .json_lines("dead.jsonl")
        .len()
        == 2));
    let (ok, stdout, _) = weir_cli(&weir, &["dlq", "purge", "dead.jsonl"]);
    assert!(!ok && stdout.contains("add --yes"), "{stdout}");
    let (ok, _, stderr) = weir_cli(&weir, &["dlq", "purge", "dead.jsonl", "--yes", "--config", "flow.toml"]);
    assert!(!ok && stderr.contains("weir must be stopped"), "{stderr}");
    assert!(weir.terminate(Duration::from_secs(20)).success());
    let (ok, stdout, _) = weir_cli(&weir, &["dlq", "purge", "dead.jsonl", "--yes", "--config", "flow.toml"]);
    assert!(ok && stdout.contains("removed 2 dead letters"), "{stdout}");
    assert!(weir.json_lines("dead.jsonl").is_empty());
}

/// Posts `events` events (`data.id` = `<prefix>-<n>`) in batches of 100; every answer must
/// be 200.
fn post_all_ok(weir: &Weir, prefix: &str, events: std::ops::Range<usize>) {
    let http = client();
    for first in events.step_by(100) {
        let (body, _) = batch(prefix, first, 100);
        let response = http
            .post(weir.url("/collect"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }
}

/// The RudderStack data plane answering 503 for a minute while 50 000 events arrive: every
/// answer is 200, nothing is dead-lettered, all arrive once it answers 200 again.
#[test]
fn a_minute_of_503_from_rudderstack_holds_every_event() {
    let recorder = support::recorder::Recorder::start("outage-key");
    recorder.script(std::iter::repeat_with(|| support::recorder::Reply::status(503)).take(1_000_000));
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"

[destinations.rudderstack]
type = "rudderstack"
[destinations.rudderstack.config]
dlq = {{ path = "dead.jsonl" }}
retry = {{ retryDelay = 20, maxRetryDelay = 500 }}
[destinations.rudderstack.config.settings]
writeKey = "outage-key"
dataPlaneUrl = "{}"
flushAt = 100
userId = "data.id"
"#,
        recorder.base
    ));
    let outage = Instant::now();
    post_all_ok(&weir, "rs", 0..50_000);
    let posted_in = outage.elapsed();
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    assert!(recorder.delivered().is_empty(), "the data plane accepted nothing yet");
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "an outage dead-letters nothing"
    );
    recorder.unscript();
    let outage_lasted = outage.elapsed();
    let delivered = recorder.wait_for(50_000, Duration::from_secs(120));
    let ids: HashSet<&str> = delivered.iter().filter_map(|m| m["userId"].as_str()).collect();
    assert_eq!(ids.len(), 50_000, "{}", weir.log());
    assert!(weir.json_lines("dead.jsonl").is_empty());
    eprintln!(
        "rudderstack: 50000 events posted in {posted_in:?} during a {outage_lasted:?} outage, all delivered {:?} after it, {} twice",
        outage.elapsed() - outage_lasted,
        delivered.len() - ids.len()
    );
}

/// The Kafka broker down for a minute while 50 000 events arrive: every answer is 200,
/// nothing is dead-lettered, all are in the topic once it is back.
///
/// The broker keeps its log in memory, so the restarted one starts empty: the test reads what
/// was delivered before the outage first, and creates the topic again after it. The producer
/// id weir's producer holds is then unknown to the broker, which answers UNKNOWN_PRODUCER_ID
/// to every batch; librdkafka bumps the epoch locally and retries for ever, so its records
/// time out while the broker answers: this also shows weir replacing such a wedged producer
/// (it failed before weir did) and resending what the old one held.
///
/// Not tansu's SQLite storage: while the broker is down, batches time out in librdkafka, which
/// then bumps its idempotent producer's epoch locally (as KIP-360 allows); tansu 0.6.0's SQLite
/// engine panics on a batch whose epoch it did not hand out ("more or less than one row" in
/// `idempotent_message_check`) and from then on answers every request, fetches included, with
/// an error. Real Kafka accepts the bumped epoch. Reproduced with confluent-kafka-python alone.
#[test]
fn a_minute_long_kafka_outage_holds_every_event() {
    const EVENTS: usize = 50_000;
    const BEFORE: usize = 1_000;
    let mut broker = support::kafka::KafkaBroker::start();
    broker.create_topic("outage-events", 1);
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"

[destinations.kafka]
type = "kafka"
[destinations.kafka.config]
dlq = {{ path = "dead.jsonl" }}
retry = {{ retryDelay = 50, maxRetryDelay = 500 }}
[destinations.kafka.config.settings.kafka]
brokers = ["{}"]
topic = "outage-events"
"#,
        broker.bootstrap()
    ));
    let ids_of = |records: &[support::kafka::Record]| -> Vec<String> {
        records
            .iter()
            .map(|record| {
                let value: Value = serde_json::from_str(&record.value).unwrap();
                value["data"]["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    post_all_ok(&weir, "k", 0..BEFORE);
    let before = ids_of(&broker.consume("outage-events", BEFORE, Duration::from_secs(60)));
    let mut ids: HashSet<String> = before.iter().cloned().collect();
    assert_eq!(ids.len(), BEFORE, "delivered before the outage\n{}", weir.log());

    let outage = Instant::now();
    broker.kill();
    post_all_ok(&weir, "k", BEFORE..EVENTS);
    let posted_in = outage.elapsed();
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "an outage dead-letters nothing"
    );
    broker.restart();
    broker.create_topic("outage-events", 1);
    let outage_lasted = outage.elapsed();
    let after = ids_of(&broker.consume("outage-events", EVENTS - BEFORE, Duration::from_secs(180)));
    ids.extend(after.iter().cloned());
    assert_eq!(ids.len(), EVENTS, "{}\nBROKER\n{}", weir.log(), broker.log());
    assert!(weir.json_lines("dead.jsonl").is_empty());
    eprintln!(
        "kafka: {EVENTS} events posted in {posted_in:?} during a {outage_lasted:?} outage, all delivered {:?} after it, {} twice",
        outage.elapsed() - outage_lasted,
        before.len() + after.len() - ids.len()
    );
}

/// A real full disk: the journal on a 1 MiB tmpfs mounted by the test (CI runs as root).
/// Nothing drains (Redis down) until the disk is full: 503 + Retry-After; once Redis is back
/// the cursor moves (saved in place, needing no new space), segments go, events are taken
/// again, and every event answered 200 arrives.
#[test]
fn a_real_enospc_answers_503_and_loses_nothing() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root (CI runs as root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_owned());

    let mut server = RedisServer::start();
    server.kill();
    let journal = mount.path().join("journal");
    let weir = Weir::start(&flow(
        &server,
        &format!("[journal]\npath = \"{}\"\nsegmentBytes = 65536\n", journal.display()),
    ));
    let http = client();
    let mut acknowledged = post_until_refused(&weir, "enospc", "the disk is full");
    assert!(acknowledged.len() > 500, "{} events fit", acknowledged.len());

    server.restart();
    let (body, ids) = batch("after", 0, 10);
    let (status, _) = support::post_retrying_unavailable(&http, &weir.url("/collect"), &body);
    assert_eq!(status, 200, "accepted again once drained\n{}", weir.log());
    acknowledged.extend(ids);
    assert_all_in_stream(&server, &weir, &acknowledged);
}

/// Dead letters written before the flow had a journal replay into a journal their
/// destination has never read: its cursor is opened before the append, so the next start
/// delivers them instead of starting past them.
#[test]
fn dead_letters_from_before_the_journal_replay_into_a_new_journal() {
    let server = RedisServer::start();
    server.cli(&["SET", STREAM, "not a stream"]);
    let mut weir = Weir::start(&flow(&server, "[journal]\nenabled = false\n"));
    let (body, _) = batch("upgrade", 0, 3);
    assert_eq!(
        support::post(&weir, &serde_json::from_str(&body).unwrap()).status(),
        207
    );
    assert!(eventually(Duration::from_secs(10), || weir
        .json_lines("dead.jsonl")
        .len()
        == 3));
    assert!(weir.terminate(Duration::from_secs(20)).success());
    assert!(!weir.path("weir-data/journal").exists(), "no journal yet");

    server.cli(&["DEL", STREAM]);
    std::fs::write(weir.path("flow.toml"), flow(&server, "")).unwrap();
    let (ok, stdout, stderr) = weir_cli(&weir, &["dlq", "replay", "dead.jsonl", "--config", "flow.toml"]);
    assert!(ok && stdout.contains("replayed 3 dead letters"), "{stdout}{stderr}");
    weir.restart();
    assert!(
        eventually(Duration::from_secs(20), || ids_in_stream(&server).len() == 3),
        "{}",
        weir.log()
    );
}
