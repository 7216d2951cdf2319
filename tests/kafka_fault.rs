//! Nothing acknowledged is lost when the broker dies: a few hundred events posted over HTTP
//! with `ack = "delivered"` while the broker (tansu on SQLite, which keeps data across a
//! restart) is SIGKILLed and restarted. Every event whose request got a 200 must be readable
//! afterwards; duplicates are reported. (tansu's SQLite storage is slow to fetch big batches,
//! hence a few hundred events, not the Redis fault test's 100 000.)

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::kafka::KafkaBroker;
use support::{Weir, client, post_retrying_unavailable};

const EVENTS: usize = 400;
const BATCH: usize = 10;

fn batch_body(batch: usize) -> String {
    let events: Vec<Value> = (batch * BATCH..(batch + 1) * BATCH)
        .map(|n| json!({"name": "fault test", "data": {"n": n}}))
        .collect();
    Value::Array(events).to_string()
}

#[test]
fn acknowledged_events_survive_the_broker_being_killed() {
    let mut broker = KafkaBroker::start_sqlite(&[]);
    broker.create_topic("fault-events", 1);
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"
ackTimeout = 120000

[destinations.kafka]
type = "kafka"
[destinations.kafka.config]
retry = {{ maxRetries = 60, retryDelay = 50, maxRetryDelay = 500 }}
dlq = {{ path = "dead.jsonl" }}
[destinations.kafka.config.settings.kafka]
brokers = ["{}"]
topic = "fault-events"
"#,
        broker.bootstrap()
    ));

    let http = client();
    let mut acked = Vec::new();
    let mut other = HashMap::<u16, usize>::new();
    let mut unavailable = 0usize;
    for batch in 0..EVENTS / BATCH {
        if batch == EVENTS / BATCH / 3 {
            // A request made while the broker is down waits for it (ack = "delivered").
            broker.kill();
            let request = std::thread::spawn({
                let (url, body) = (weir.url("/collect"), batch_body(batch));
                move || {
                    let response = client()
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .unwrap();
                    (response.status().as_u16(), response.text().unwrap())
                }
            });
            std::thread::sleep(Duration::from_millis(1500));
            broker.restart();
            let (status, text) = request.join().unwrap();
            assert_eq!(status, 200, "while the broker was down: {text}");
            acked.extend(batch * BATCH..(batch + 1) * BATCH);
            continue;
        }
        let (status, answers_503) = post_retrying_unavailable(&http, &weir.url("/collect"), &batch_body(batch));
        unavailable += answers_503;
        if status == 200 {
            acked.extend(batch * BATCH..(batch + 1) * BATCH);
        } else {
            *other.entry(status).or_default() += 1;
        }
    }

    let records = broker.consume("fault-events", EVENTS, Duration::from_secs(60));
    let mut seen = HashMap::<u64, usize>::new();
    for record in &records {
        let event: Value = serde_json::from_str(&record.value).unwrap();
        *seen.entry(event["data"]["n"].as_u64().unwrap()).or_default() += 1;
    }
    let missing: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(&(*n as u64)))
        .collect();
    let duplicates: usize = seen.values().filter(|count| **count > 1).map(|count| count - 1).sum();
    eprintln!(
        "kafka fault test: {} of {EVENTS} events acknowledged with 200, {} records read back, {duplicates} duplicates, \
         {unavailable} answers 503, other answers {other:?}",
        acked.len(),
        records.len(),
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        weir.log()
    );
    assert_eq!(acked.len(), EVENTS, "every request got a 200: other answers {other:?}");
    assert!(
        weir.json_lines("dead.jsonl").is_empty(),
        "{:?}",
        weir.json_lines("dead.jsonl")
    );
}
