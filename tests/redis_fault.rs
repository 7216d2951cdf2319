//! Nothing acknowledged is lost when Redis dies: 100 000 events posted over HTTP with
//! `ack = "delivered"` while redis-server (appendonly, appendfsync always) is SIGKILLed and
//! restarted twice. Every event whose request got a 200 must be in the stream afterwards.
//! Duplicates (an XADD that reached Redis but whose reply was lost, then retried) and the
//! 503s and retries along the way are reported.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, post_retrying_unavailable};

const EVENTS: usize = 100_000;
const BATCH: usize = 100;
const CLIENTS: usize = 4;

#[test]
fn acknowledged_events_survive_redis_being_killed_twice() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"
ackTimeout = 120000

[destinations.redis]
type = "redis"
[destinations.redis.config]
queueMax = 5000
retry = {{ maxRetries = 60, retryDelay = 50, maxRetryDelay = 500 }}
dlq = {{ path = "dead.jsonl" }}
[destinations.redis.config.settings.redis]
url = "{}"
streamKey = "fault:events"
"#,
        server.url()
    ));

    let batches: Vec<usize> = (0..EVENTS / BATCH).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let url = weir.url("/collect");
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, done, url, batches) = (next.clone(), done.clone(), url.clone(), batches.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut acked = Vec::new();
                let mut unavailable = 0usize;
                let mut other = HashMap::<u16, usize>::new();
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&batch) = batches.get(index) else { break };
                    let events: Vec<Value> = (batch * BATCH..(batch + 1) * BATCH)
                        .map(|n| json!({"name": "fault test", "data": {"n": n}}))
                        .collect();
                    let body = Value::Array(events).to_string();
                    let (status, answers_503) = post_retrying_unavailable(&http, &url, &body);
                    unavailable += answers_503;
                    if status == 200 {
                        acked.extend(batch * BATCH..(batch + 1) * BATCH);
                    } else {
                        *other.entry(status).or_default() += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                (acked, unavailable, other)
            })
        })
        .collect();

    // Kill Redis at about a fifth and at about three fifths of the way.
    let total = batches.len();
    for fraction in [5, 60] {
        while done.load(Ordering::SeqCst) * 100 < total * fraction {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        std::thread::sleep(Duration::from_millis(500));
        server.restart();
    }

    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut other = HashMap::<u16, usize>::new();
    for worker in workers {
        let (worker_acked, worker_unavailable, worker_other) = worker.join().unwrap();
        acked.extend(worker_acked);
        unavailable += worker_unavailable;
        for (status, count) in worker_other {
            *other.entry(status).or_default() += count;
        }
    }

    let mut seen = HashMap::<u64, usize>::new();
    for (_, fields) in server.xrange("fault:events") {
        let event: Value = serde_json::from_str(&fields[0].1).unwrap();
        *seen.entry(event["data"]["n"].as_u64().unwrap()).or_default() += 1;
    }
    let missing: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(&(*n as u64)))
        .collect();
    let duplicates: usize = seen.values().filter(|count| **count > 1).map(|count| count - 1).sum();
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    let retried = metrics
        .lines()
        .find(|line| line.starts_with("weir_events_retried_total{destination=\"redis\"}"))
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or("0")
        .to_owned();
    eprintln!(
        "fault test: {} of {EVENTS} events acknowledged with 200, {} in the stream, {} duplicates, \
         {unavailable} answers 503 (retried by the client), {retried} events retried by weir, other answers {other:?}",
        acked.len(),
        seen.values().sum::<usize>(),
        duplicates,
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        acked.len(),
        EVENTS,
        "every request eventually got a 200: other answers {other:?}"
    );
    assert!(
        server.log().matches("Ready to accept connections").count() >= 3,
        "Redis was restarted twice"
    );
}
