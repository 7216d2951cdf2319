//! The `kafka` destination against a real Kafka-protocol broker (tansu) started by each test:
//! what is particular to Kafka. What every destination owes (readiness, shutdown, outages,
//! kills) is in tests/conformance.rs.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::kafka::{KafkaBroker, Record, python_with_confluent_kafka};
use support::pki::Pki;
use support::{Weir, client, eventually, explain, post, vectors};

/// Posts `count` page views numbered from 0, in batches of 100 (the source's largest).
fn post_events(weir: &Weir, count: usize) {
    for start in (0..count).step_by(100) {
        let batch: Vec<Value> = (start..(start + 100).min(count))
            .map(|n| json!({"name": "page view", "data": {"n": n}}))
            .collect();
        let response = post(weir, &Value::Array(batch));
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }
}

/// A flow with an HTTP source and one `kafka` destination; `kafka` goes under
/// `settings.kafka`, `extra` is merged into the destination's `config`.
fn flow(kafka: Value, mapping: Option<&Value>, extra: Value) -> String {
    let mut config = json!({
        "settings": {"kafka": kafka},
        "retry": {"maxRetries": 2, "retryDelay": 10},
        "dlq": {"path": "dead.jsonl"}
    });
    if let Some(mapping) = mapping {
        config["mapping"] = mapping.clone();
    }
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    let flow = json!({
        "collector": {"release": "4.4.0"},
        // The answer waits for delivery: tests consume as soon as it comes.
        "sources": {"http": {"type": "http", "config": {"ack": "delivered"}}},
        "destinations": {"kafka": {"type": "kafka", "config": config}}
    });
    toml::to_string(&flow).unwrap()
}

/// The record as walkerOS's examples write a message: key, value, headers, timestamp.
fn as_walkeros_message(record: &Record) -> Value {
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "key": record.key,
        "value": record.value,
        "headers": headers,
        "timestamp": record.timestamp.map(|ms| ms.to_string()),
    })
}

/// Every Kafka example of walkerOS: `weir explain` shows the `producer.send` record walkerOS
/// made, and the record consumed back from a real broker carries exactly that key, value,
/// headers and timestamp.
#[test]
fn walkeros_kafka_vectors_through_explain_and_a_real_broker() {
    let vectors = vectors();
    let cases = vectors["kafka"].as_object().unwrap();
    assert_eq!(cases.len(), 6, "walkerOS has six Kafka examples");
    for (name, case) in cases {
        let broker = KafkaBroker::start();
        let event = case["in"].clone();
        let mapping = case
            .get("mapping")
            .map(|rule| json!({event["entity"].as_str().unwrap(): {event["action"].as_str().unwrap(): rule}}));
        let mut kafka = case["settings"]["kafka"].clone();
        if kafka.is_null() {
            kafka = json!({"brokers": ["localhost:9092"], "topic": "walkeros-events"});
        }
        kafka["brokers"] = json!([broker.bootstrap()]);
        let flow_text = flow(kafka, mapping.as_ref(), json!({}));

        let record = explain(&flow_text, &event);
        let calls = case["calls"].as_array().unwrap();
        if calls.is_empty() {
            assert_eq!(record["outcome"], "ignored", "{name}");
            continue;
        }
        assert_eq!(record["wire"], calls[0], "{name}");

        let topic = calls[0]["topic"].as_str().unwrap();
        broker.create_topic(topic, 1);
        let weir = Weir::start(&flow_text);
        let response = post(&weir, &event);
        assert_eq!(response.status(), 200, "{name}: {}", response.text().unwrap());
        let records = broker.consume(topic, 1, Duration::from_secs(20));
        assert_eq!(records.len(), 1, "{name}: {records:?}\n{}", weir.log());
        assert_eq!(as_walkeros_message(&records[0]), calls[0]["messages"][0], "{name}");
    }
}

/// A timestamp with a fraction goes on the wire as the millisecond it falls in, one that is
/// `null` as the time of producing; the record a real broker holds has what `weir explain`
/// says. (walkerOS hands kafkajs the text "1700000100123.5" or "null".)
#[test]
fn record_timestamps_are_whole_milliseconds_as_explain_says() {
    let broker = KafkaBroker::start();
    broker.create_topic("stamps", 1);
    let flow_text = flow(
        json!({"brokers": [broker.bootstrap()], "topic": "stamps"}),
        None,
        json!({}),
    );
    let fractional = json!({"name": "page view", "timestamp": 1_700_000_100_123.5_f64});
    let explained = explain(&flow_text, &fractional);
    assert_eq!(explained["wire"]["messages"][0]["timestamp"], "1700000100123");
    let weir = Weir::start(&flow_text);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(post(&weir, &fractional).status(), 200);
    assert_eq!(
        post(&weir, &json!({"name": "page view", "timestamp": null})).status(),
        200
    );
    let records = broker.consume("stamps", 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2, "{records:?}\n{}", weir.log());
    assert_eq!(records[0].timestamp, Some(1_700_000_100_123));
    let produced = records[1].timestamp.unwrap();
    assert!(
        produced >= before && produced < before + 60_000,
        "{produced} vs {before}"
    );
    assert!(records[1].value.contains(r#""timestamp":null"#), "{}", records[1].value);
}

/// A second client, independent of weir's code (Python's confluent-kafka), reads the same
/// bytes back: key, value, headers and timestamp as walkerOS's defaultEvent example has them.
#[test]
fn an_independent_client_reads_what_weir_produced() {
    let vectors = vectors();
    let case = &vectors["kafka"]["defaultEvent"];
    let broker = KafkaBroker::start();
    broker.create_topic("walkeros-events", 1);
    let weir = Weir::start(&flow(
        json!({"brokers": [broker.bootstrap()], "topic": "walkeros-events", "compression": "zstd"}),
        None,
        json!({}),
    ));
    let response = post(&weir, &case["in"]);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());

    let script = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "second-client", "enable.auto.commit": False})
consumer.assign([TopicPartition("walkeros-events", 0, 0)])
message = None
for _ in range(100):
    message = consumer.poll(0.2)
    if message is not None and message.error() is None:
        break
kind, timestamp = message.timestamp()
print(json.dumps({
    "key": message.key().decode(),
    "value": message.value().decode(),
    "headers": {k: v.decode() for k, v in (message.headers() or [])},
    "timestamp": str(timestamp),
}))
consumer.close()
"#;
    let output = std::process::Command::new(python_with_confluent_kafka())
        .args(["-c", script, &broker.bootstrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read, case["calls"][0]["messages"][0]);
}

/// Every codec walkerOS names, several partitions, keys from a path: everything arrives, each
/// key always in the same partition.
#[test]
fn codecs_partitions_and_keys() {
    let broker = KafkaBroker::start();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("events-{codec}");
        broker.create_topic(&topic, 3);
        let weir = Weir::start(&flow(
            json!({"brokers": [broker.bootstrap()], "topic": topic, "compression": codec, "key": "user.id"}),
            None,
            json!({}),
        ));
        let batch: Vec<Value> = (0..60)
            .map(|n| json!({"name": "page view", "data": {"n": n}, "user": {"id": format!("user-{}", n % 6)}}))
            .collect();
        let response = post(&weir, &Value::Array(batch));
        assert_eq!(response.status(), 200, "{codec}: {}", response.text().unwrap());
        let records = broker.consume(&topic, 60, Duration::from_secs(20));
        assert_eq!(records.len(), 60, "{codec}");
        let mut partition_of = std::collections::HashMap::new();
        for record in &records {
            let key = record.key.clone().unwrap();
            let partition = *partition_of.entry(key.clone()).or_insert(record.partition);
            assert_eq!(partition, record.partition, "{codec}: key {key} in two partitions");
            let value: Value = serde_json::from_str(&record.value).unwrap();
            assert_eq!(value["user"]["id"], key.as_str(), "{codec}");
        }
        assert_eq!(partition_of.len(), 6, "{codec}");
        // Where Java's default partitioner puts each key.
        for (key, partition) in &partition_of {
            assert_eq!(*partition, java_partition(key.as_bytes(), 3), "{codec}: key {key}");
        }
    }
}

/// Java's `Utils.murmur2` (Kafka's default partitioner for keyed records), written from
/// its published algorithm so the test does not trust librdkafka's own.
fn java_murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (java_murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_own_test_values() {
    // From Kafka's UtilsTest.
    assert_eq!(java_murmur2(b"21"), -973_932_308);
    assert_eq!(java_murmur2(b"foobar"), -790_332_482);
    assert_eq!(java_murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(java_murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        java_murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(java_murmur2(b"abc"), 479_470_107);
}

/// A topic that does not exist and a record larger than the broker takes are dead-lettered
/// with the reason (the topic one says how to create it); the source hears of each.
#[test]
fn unknown_topics_and_oversized_records_are_dead_lettered_with_the_reason() {
    let broker = KafkaBroker::start();
    broker.create_topic("events", 1);
    let weir = Weir::start(&flow(
        json!({
            "brokers": [broker.bootstrap()],
            "topic": "events",
            "librdkafkaOptions": {"topic.metadata.propagation.max.ms": 1000, "message.max.bytes": 10000}
        }),
        Some(&json!({"missing": {"*": {"settings": {"topic": "no-such-topic"}}}})),
        json!({}),
    ));
    // With ack = "delivered" the client hears of a dead letter at once, with the reason.
    let response = post(&weir, &json!({"name": "missing topic", "data": {"n": 1}}));
    assert_eq!(response.status(), 500);
    let answer = response.text().unwrap();
    assert!(
        answer.contains("Kafka topic \\\"no-such-topic\\\" not found on cluster")
            && answer.contains("--create --topic no-such-topic"),
        "{answer}"
    );
    let big = "x".repeat(20_000);
    let response = post(&weir, &json!({"name": "page view", "data": {"big": big}}));
    assert_eq!(response.status(), 500);
    let answer = response.text().unwrap();
    assert!(answer.contains("too large"), "{answer}");
    let response = post(&weir, &json!({"name": "page view", "data": {"small": true}}));
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());

    // Both are in the dead-letter sink, with their events.
    let dead = weir.json_lines("dead.jsonl");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let text = serde_json::to_string(&dead).unwrap();
    assert!(
        text.contains("no-such-topic") && text.contains("missing topic"),
        "{text}"
    );
    assert!(text.contains(&big), "the oversized event is kept whole");
    let records = broker.consume("events", 1, Duration::from_secs(10));
    assert_eq!(records.len(), 1);
    assert!(records[0].value.contains("\"small\":true"));
}

/// SCRAM-SHA-256 and -512 against a broker that requires them, the password from a file;
/// a wrong password keeps weir not ready and says why.
#[test]
fn scram_authentication() {
    let mut broker = KafkaBroker::start_sqlite(&[]);
    broker.create_user("SCRAM-SHA-512", "weir512", "s3cret-512");
    broker.create_user("SCRAM-SHA-256", "weir256", "s3cret-256");
    broker.create_topic("events", 1);
    broker.restart_with_authentication("SCRAM-SHA-512", "weir512", "s3cret-512");

    for (mechanism, user, password) in [
        ("scram-sha-512", "weir512", "s3cret-512"),
        ("scram-sha-256", "weir256", "s3cret-256"),
    ] {
        let secrets = tempfile::tempdir().unwrap();
        let password_file = secrets.path().join("password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let weir = Weir::start(&flow(
            json!({
                "brokers": [broker.bootstrap()],
                "topic": "events",
                "sasl": {"mechanism": mechanism, "username": user, "passwordFile": password_file.to_str().unwrap()}
            }),
            None,
            json!({}),
        ));
        let response = post(&weir, &json!({"name": "page view", "data": {"mechanism": mechanism}}));
        assert_eq!(
            response.status(),
            200,
            "{mechanism}: {}\n{}",
            response.text().unwrap(),
            weir.log()
        );
    }
    let records = broker.consume("events", 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[0].value.contains("scram-sha-512") && records[1].value.contains("scram-sha-256"));

    let weir = Weir::start(&flow(
        json!({
            "brokers": [broker.bootstrap()],
            "topic": "events",
            "sasl": {"mechanism": "scram-sha-512", "username": "weir512", "password": "not-the-password-4b1f"}
        }),
        None,
        json!({}),
    ));
    assert!(
        eventually(Duration::from_secs(20), || weir.log().contains("Authentication")
            || weir.log().contains("authentication")),
        "{}",
        weir.log()
    );
    assert_eq!(client().get(weir.url("/readyz")).send().unwrap().status(), 503);
    assert!(
        !weir.log().contains("not-the-password-4b1f"),
        "the password is in the log:\n{}",
        weir.log()
    );
}

/// A flow posting into `kafka` whose answers wait at most `ack_timeout` ms for delivery.
fn flow_acking_within(kafka: Value, ack_timeout: u64) -> String {
    toml::to_string(&json!({
        "sources": {"http": {"type": "http", "config": {"ack": "delivered", "ackTimeout": ack_timeout}}},
        "destinations": {"kafka": {"type": "kafka", "config": {"settings": {"kafka": kafka}, "dlq": {"path": "dead.jsonl"}}}}
    }))
    .unwrap()
}

/// Kafka over TLS for real: stunnel with a private CA in front of tansu, requiring a client
/// certificate. `ssl = {ca, cert, key}` delivers; a CA that did not sign the broker's
/// certificate is a clear error (not ready, and the log and `/readyz` say the certificate
/// could not be verified) and nothing is acknowledged or lost; `rejectUnauthorized = false`
/// connects anyway, with a warning at start.
#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::make(certs.path(), "weir Kafka CA");
    let mut broker = KafkaBroker::start_tls(&pki);
    broker.create_topic("events", 1);
    let bootstrap = broker.bootstrap();
    let kafka = |ca: &std::path::Path, extra: Value| {
        let ssl = support::merged(
            json!({"ca": ca, "cert": pki.client_cert, "key": pki.client_key}),
            &extra,
        );
        json!({"brokers": [bootstrap], "topic": "events", "ssl": ssl})
    };

    let weir = Weir::start(&flow(kafka(&pki.ca, json!({})), None, json!({})));
    let response = post(&weir, &json!({"name": "page view", "data": {"over": "tls"}}));
    assert_eq!(response.status(), 200, "{}\n{}", response.text().unwrap(), weir.log());
    let records = broker.consume("events", 1, Duration::from_secs(20));
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].value.contains("\"over\":\"tls\""));

    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = Pki::make(elsewhere.path(), "another CA");
    let weir = Weir::start(&flow_acking_within(kafka(&wrong.ca, json!({})), 3000));
    let response = post(&weir, &json!({"name": "page view", "data": {"over": "the wrong CA"}}));
    assert_eq!(response.status(), 202, "not confirmed: {}", response.text().unwrap());
    assert!(
        eventually(Duration::from_secs(20), || weir
            .log()
            .contains("certificate verify failed")),
        "{}",
        weir.log()
    );
    // /readyz names the destination and, on the admin listener, once its first attempt
    // failed (a metadata request waits 10 s), says why: librdkafka's own words on the
    // handshake. The public port does not show them.
    let readyz = || -> Value {
        let ready = client().get(weir.admin_url("/readyz")).send().unwrap();
        assert_eq!(ready.status(), 503);
        ready.json().unwrap()
    };
    assert_eq!(readyz()["reason"], "destination \"kafka\" is not connected");
    assert!(
        eventually(Duration::from_secs(30), || readyz()["error"]
            .as_str()
            .is_some_and(|error| error.contains("certificate verify failed"))),
        "{}",
        readyz()
    );
    eprintln!("/readyz with the wrong CA: {}", readyz());
    let public: Value = client().get(weir.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(
        public,
        json!({"status": "not_ready", "reason": "destination \"kafka\" is not connected"})
    );
    assert!(
        !weir
            .metrics()
            .contains("weir_events_delivered_total{destination=\"kafka\"} 1"),
        "nothing acknowledged as delivered"
    );
    assert_eq!(
        broker.consume("events", 1, Duration::from_secs(3)).len(),
        1,
        "nothing more arrived"
    );

    let weir = Weir::start(&flow(
        kafka(&wrong.ca, json!({"rejectUnauthorized": false})),
        None,
        json!({}),
    ));
    assert!(weir.log().contains("rejectUnauthorized"), "{}", weir.log());
    let response = post(&weir, &json!({"name": "page view", "data": {"over": "unverified tls"}}));
    assert_eq!(response.status(), 200, "{}\n{}", response.text().unwrap(), weir.log());
    assert_eq!(broker.consume("events", 2, Duration::from_secs(20)).len(), 2);
    drop(weir);

    // SASL over that TLS (`sasl_ssl`): SCRAM delivers. tansu 0.6 offers no PLAIN: asking for
    // it is a clear error too, and nothing is acknowledged.
    broker.create_user("SCRAM-SHA-512", "weir512", "s3cret-512");
    broker.restart_with_authentication("SCRAM-SHA-512", "weir512", "s3cret-512");
    let with_sasl = |mechanism: &str| {
        let mut settings = kafka(&pki.ca, json!({}));
        settings["sasl"] = json!({"mechanism": mechanism, "username": "weir512", "password": "s3cret-512"});
        settings
    };
    let weir = Weir::start(&flow(with_sasl("scram-sha-512"), None, json!({})));
    let response = post(&weir, &json!({"name": "page view", "data": {"over": "scram and tls"}}));
    assert_eq!(response.status(), 200, "{}\n{}", response.text().unwrap(), weir.log());
    let records = broker.consume("events", 3, Duration::from_secs(20));
    assert!(records[2].value.contains("scram and tls"), "{records:?}");
    drop(weir);
    let weir = Weir::start(&flow_acking_within(with_sasl("plain"), 3000));
    let response = post(&weir, &json!({"name": "page view", "data": {"over": "plain and tls"}}));
    assert_eq!(response.status(), 202, "not confirmed: {}", response.text().unwrap());
    assert!(
        eventually(Duration::from_secs(30), || {
            let ready: Value = client().get(weir.admin_url("/readyz")).send().unwrap().json().unwrap();
            ready["error"]
                .as_str()
                .is_some_and(|error| error.contains("SASL PLAIN mechanism handshake failed"))
        }),
        "{}",
        weir.log()
    );
    assert!(!weir.log().contains("s3cret-512"), "the password is in the log");
}

/// A producer queue far smaller than what arrives is backpressure, not an error: every event
/// is delivered, none dead-lettered.
#[test]
fn a_full_producer_queue_is_backpressure() {
    let broker = KafkaBroker::start();
    broker.create_topic("events", 2);
    let weir = Weir::start(&flow(
        json!({
            "brokers": [broker.bootstrap()],
            "topic": "events",
            "librdkafkaOptions": {"queue.buffering.max.messages": 5, "statistics.interval.ms": 1000}
        }),
        None,
        json!({}),
    ));
    post_events(&weir, 500);
    let records = broker.consume("events", 500, Duration::from_secs(30));
    assert_eq!(records.len(), 500);
    assert!(weir.json_lines("dead.jsonl").is_empty());

    // librdkafka's statistics show in the metrics: the broker is up, the queue drained.
    let metrics = || client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    let broker_up = format!(
        "weir_kafka_broker_up{{topic=\"events\",broker=\"{}\"}} 1",
        broker.bootstrap()
    );
    assert!(
        eventually(Duration::from_secs(10), || metrics().contains(&broker_up)),
        "{broker_up} not in\n{}",
        metrics()
    );
    let queue = format!(
        "weir_kafka_queue_messages{{topic=\"events\",brokers=\"{}\"}} 0",
        broker.bootstrap()
    );
    assert!(metrics().contains(&queue), "{queue} not in\n{}", metrics());
}

/// walkerOS evaluates the destination's `key` with `getMappingValue`: a path, or any value
/// spec (`{fn}`, `{key, value}`); what gives no non-empty string keys by the event name. No
/// broker needed: `weir explain` renders the record `serve` would send.
#[test]
fn the_destination_key_is_a_value_spec() {
    let event = json!({"name": "order complete", "data": {"id": "0rd3r"}, "user": {"id": "us3r"}});
    let key_of = |key: Value| {
        let flow_text = flow(
            json!({"brokers": ["127.0.0.1:1"], "topic": "t", "key": key}),
            None,
            json!({}),
        );
        explain(&flow_text, &event)["wire"]["messages"][0]["key"].clone()
    };
    assert_eq!(key_of(json!("user.id")), "us3r");
    assert_eq!(
        key_of(json!({"fn": "$code:(e) => `${e.user.id}/${e.data.id}`"})),
        "us3r/0rd3r"
    );
    assert_eq!(key_of(json!({"key": "data.missing", "value": "fallback"})), "fallback");
    assert_eq!(key_of(json!({"key": "data.missing"})), "order_complete");
    assert_eq!(key_of(json!({"fn": "$code:() => 42"})), "order_complete");
}
