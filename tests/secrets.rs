//! Secrets never leak: every path that handles one — Redis passwords (in URLs and as keys),
//! Kafka SASL passwords and TLS key passphrases, RudderStack write keys, HMAC signing and
//! verifying keys, bearer tokens — is run through its failure modes (a wrong value, a server
//! that is not there, an invalid config, `weir validate`, `weir explain`, `RUST_LOG=trace`),
//! and everything weir says is scanned for each secret's value: every log line, every error
//! message, every metric, every dead letter (file and stream), every HTTP answer. Zero hits.
//! And no secret is compared with `==`: every comparison is constant-time.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::pki::Pki;
use support::recorder::Recorder;
use support::redis::RedisServer;
use support::{Weir, client, eventually, free_port, weir_binary};

const HTTP_TOKEN: &str = "http-token-5e1f3c9a";
const SSE_TOKEN: &str = "sse-token-8d2b7e41";
const ADMIN_TOKEN: &str = "admin-token-3c6a9f02";
/// Not the Redis server's password: weir's login fails.
const REDIS_WRONG_PASSWORD: &str = "redis-pass-7f4e2b19";
/// For a Redis that is not there.
const REDIS_GONE_PASSWORD: &str = "redis-gone-pass-91c3";
/// HMAC keys are hex.
const SIGNING_KEY: &str = "2a8d5c77e1f0b3a4c9d2a8d5c77e1f0b3a4c9d22a8d5c77e1f0b3a4c9d2a8d5c";
const VERIFYING_KEY: &str = "6b1e4f88c2d7a905e3f16b1e4f88c2d7a905e3f16b1e4f88c2d7a905e3f16b1e";
const KAFKA_PASSWORD: &str = "kafka-sasl-4d9a2e61";
const KAFKA_PASSPHRASE: &str = "kafka-passphrase-0f7c3b5d";
/// Not the one the data plane takes: every batch is refused (401) and dead-lettered.
const WRITE_KEY: &str = "write-key-1e5b9d3f";

const SECRETS: [&str; 10] = [
    HTTP_TOKEN,
    SSE_TOKEN,
    ADMIN_TOKEN,
    REDIS_WRONG_PASSWORD,
    REDIS_GONE_PASSWORD,
    SIGNING_KEY,
    VERIFYING_KEY,
    KAFKA_PASSWORD,
    KAFKA_PASSPHRASE,
    WRITE_KEY,
];

/// Everything weir said, with where it said it.
#[derive(Default)]
struct Said(Vec<(String, String)>);

impl Said {
    fn add(&mut self, place: &str, text: impl Into<String>) {
        self.0.push((place.to_owned(), text.into()));
    }

    fn answer(&mut self, place: &str, response: reqwest::blocking::Response) -> u16 {
        let status = response.status().as_u16();
        let headers: String = response
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        self.add(
            place,
            format!("{status}\n{headers}\n{}", response.text().unwrap_or_default()),
        );
        status
    }

    /// Where each secret was found; empty when none was. The write key is also looked for
    /// as it goes on the wire, in a Basic `Authorization` header.
    fn leaks(&self) -> Vec<String> {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
        let mut found = Vec::new();
        for secret in SECRETS.iter().copied().chain([basic.as_str()]) {
            for (place, text) in &self.0 {
                if text.contains(secret) {
                    let at = text.find(secret).unwrap();
                    let context = &text[at.saturating_sub(120)..(at + secret.len() + 40).min(text.len())];
                    found.push(format!("{secret} in {place}: …{context}…"));
                }
            }
        }
        found
    }
}

/// The flow: an HTTP source behind a token into a Redis whose password weir gets wrong, a
/// Redis that is not there, a signing Redis destination, a Kafka that is not there (SASL and
/// TLS with a passphrase), a RudderStack data plane that refuses the write key, and an SSE hub
/// and the admin listener behind tokens; a stream source verifying signatures it cannot match.
fn flow(locked: &RedisServer, open: &RedisServer, plane: &Recorder, pki: &Pki) -> Value {
    let locked_url = format!("redis://default:{REDIS_WRONG_PASSWORD}@127.0.0.1:{}", locked.port);
    let gone_url = format!("redis://weir:{REDIS_GONE_PASSWORD}@127.0.0.1:{}", free_port());
    json!({
        "admin": {"bearerToken": ADMIN_TOKEN},
        "sources": {
            "http": {"type": "http", "config": {"ack": "received", "settings": {"bearerToken": HTTP_TOKEN}}},
            "signed": {"type": "redis_stream", "config": {"settings": {
                "url": open.url(), "stream": "incoming", "group": "weir", "consumer": "c1", "startId": "0",
                "block": 100, "verify": {"key": VERIFYING_KEY}
            }}}
        },
        "destinations": {
            "locked": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": locked_url, "streamKey": "events"}}, "dlq": {"path": "locked.dlq.jsonl"}}},
            "gone": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": gone_url, "streamKey": "events"}}, "dlq": {"path": "gone.dlq.jsonl"}}},
            "signing": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": open.url(), "streamKey": "signed:events", "sign": {"key": SIGNING_KEY}}}}},
            "kafka": {"type": "kafka", "sources": ["http"], "config": {
                "settings": {"kafka": {
                    "brokers": [format!("127.0.0.1:{}", free_port())], "topic": "events",
                    "sasl": {"mechanism": "scram-sha-512", "username": "weir", "password": KAFKA_PASSWORD},
                    "ssl": {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key, "passphrase": KAFKA_PASSPHRASE}
                }},
                "dlq": {"path": "kafka.dlq.jsonl"}}},
            "rudderstack": {"type": "rudderstack", "sources": ["http"], "config": {
                "settings": {"writeKey": WRITE_KEY, "dataPlaneUrl": plane.base, "flushAt": 1},
                "retry": {"maxRetries": 1, "retryDelay": 10}, "dlq": {"path": "rudderstack.dlq.jsonl"}}},
            "hub": {"type": "sse", "sources": ["http"], "config": {"settings": {"bearerToken": SSE_TOKEN}}},
            "signed-out": {"type": "file", "sources": ["signed"], "config": {"settings": {"path": "signed.jsonl"}}}
        }
    })
}

/// Runs a `weir` command in `dir`; what it printed, both streams.
fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(weir_binary())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    format!(
        "exit {:?}\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn no_secret_reaches_a_log_an_error_a_metric_a_dead_letter_or_an_answer() {
    let locked = RedisServer::start_with(&["--requirepass", "the-servers-own-password"]);
    let open = RedisServer::start();
    let plane = Recorder::start("the-data-planes-own-key");
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::make(certs.path(), "weir secrets CA");
    let flow = flow(&locked, &open, &plane, &pki);
    let text = toml::to_string(&flow).unwrap();
    let mut said = Said::default();

    // `weir validate` and `weir explain` on the flow, and on a flow invalid next to its secrets.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.toml"), &text).unwrap();
    std::fs::write(dir.path().join("event.jsonl"), json!({"name": "page view"}).to_string()).unwrap();
    said.add(
        "weir validate",
        run(dir.path(), &["validate", "--config", "flow.toml"], &[]),
    );
    said.add(
        "weir explain",
        run(dir.path(), &["explain", "--config", "flow.toml", "event.jsonl"], &[]),
    );
    let mut invalid = flow.clone();
    invalid["destinations"]["locked"]["config"]["settings"]["redis"]["streamKey"] = json!(5);
    invalid["destinations"]["kafka"]["config"]["settings"]["kafka"]["sasl"]["password"] = json!(KAFKA_PASSWORD.len());
    invalid["destinations"]["kafka"]["config"]["settings"]["kafka"]["ssl"]["passphrase"] =
        json!(["not", KAFKA_PASSPHRASE]);
    invalid["destinations"]["rudderstack"]["config"]["settings"]["writeKey"] = json!({"key": WRITE_KEY});
    invalid["sources"]["http"]["config"]["settings"]["bearerToken"] = json!([HTTP_TOKEN]);
    invalid["sources"]["signed"]["config"]["settings"]["verify"] = json!({"key": VERIFYING_KEY, "scheme": "nope"});
    std::fs::write(dir.path().join("invalid.toml"), toml::to_string(&invalid).unwrap()).unwrap();
    let invalid_said = run(dir.path(), &["validate", "--config", "invalid.toml"], &[]);
    assert!(
        invalid_said.contains("exit Some(1)") || invalid_said.contains("exit Some(2)"),
        "{invalid_said}"
    );
    said.add("weir validate (invalid)", invalid_said.clone());
    said.add(
        "weir serve (invalid)",
        run(dir.path(), &["serve", "--config", "invalid.toml"], &[]),
    );

    // A running weir, logging at trace.
    let weir = Weir::start_env("flow.toml", &text, &[], &[("RUST_LOG", "trace")]);
    let http = client();
    let collect = weir.url("/collect");
    said.answer(
        "POST without a token",
        http.post(&collect).body(r#"{"name":"page view"}"#).send().unwrap(),
    );
    said.answer(
        "POST with a wrong token",
        http.post(&collect)
            .header("authorization", format!("Bearer {HTTP_TOKEN}x"))
            .body(r#"{"name":"page view"}"#)
            .send()
            .unwrap(),
    );
    for n in 0..5 {
        let status = said.answer(
            "POST",
            http.post(&collect)
                .header("authorization", format!("Bearer {HTTP_TOKEN}"))
                .body(json!({"name": "page view", "data": {"n": n}, "user": {"id": "u1"}}).to_string())
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200);
    }
    said.answer(
        "SSE with a wrong token",
        http.get(weir.url("/v1/notifications/event-stream"))
            .header("authorization", "Bearer sse-token")
            .send()
            .unwrap(),
    );
    // Entries whose signatures do not match the verifying key: dead-lettered, with the reason.
    for n in 0..3 {
        open.cli(&[
            "XADD",
            "incoming",
            "*",
            "event",
            &json!({"name": "signed event", "data": {"n": n}}).to_string(),
            "_sig",
            "00ff",
        ]);
    }
    assert!(
        eventually(Duration::from_secs(20), || open.cli(&["XLEN", "incoming.dlq"]).trim()
            == "3"),
        "{}",
        weir.log()
    );
    // The failures have happened: a refused login, an unreachable Redis and Kafka, a refused
    // write key, dead letters.
    assert!(
        eventually(Duration::from_secs(30), || {
            let log = weir.log();
            log.contains("rudderstack")
                && std::fs::read_to_string(weir.path("rudderstack.dlq.jsonl")).is_ok_and(|dead| !dead.is_empty())
                && log.contains("destination cannot connect")
        }),
        "{}",
        weir.log()
    );
    assert!(!plane.requests().is_empty(), "the data plane was asked");
    said.answer("/readyz", http.get(weir.url("/readyz")).send().unwrap());
    said.answer("/healthz", http.get(weir.url("/healthz")).send().unwrap());
    said.answer(
        "admin without a token",
        http.get(weir.admin_url("/metrics")).send().unwrap(),
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for path in ["/metrics", "/status.json", "/"] {
        let status = said.answer(
            &format!("admin {path}"),
            http.get(weir.admin_url(path))
                .header("authorization", &bearer)
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200, "admin {path}");
    }
    // Not ready (the locked Redis, the missing Redis and Kafka): /readyz says which and why.
    let status = said.answer(
        "admin /readyz",
        http.get(weir.admin_url("/readyz"))
            .header("authorization", &bearer)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 503);
    for dead in [
        "locked.dlq.jsonl",
        "gone.dlq.jsonl",
        "kafka.dlq.jsonl",
        "rudderstack.dlq.jsonl",
    ] {
        said.add(dead, std::fs::read_to_string(weir.path(dead)).unwrap_or_default());
    }
    said.add("incoming.dlq", open.cli(&["XRANGE", "incoming.dlq", "-", "+"]));
    said.add("signed:events", open.cli(&["XRANGE", "signed:events", "-", "+"]));
    said.add(
        "rudderstack requests",
        format!("{:?}", plane.requests().iter().map(|r| r.json()).collect::<Vec<_>>()),
    );
    let mut weir = weir;
    weir.terminate(Duration::from_secs(30));
    said.add("weir serve --log trace", weir.log());
    said.add("weir serve stdout", weir.output());

    let leaks = said.leaks();
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    let log = weir.log();
    assert!(
        log.lines().count() > 200,
        "the trace log is there to scan: {} lines",
        log.lines().count()
    );
    assert!(log.contains("Password authentication failed"), "the login failed");
}

/// Rust source files under `path`.
fn rust_files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        out.push(path.to_path_buf());
    }
}

/// A secret is read only through `Secret::expose`; none of its uses compares it with `==` or
/// `!=` (which stop at the first differing byte): tokens are compared with `subtle`, signatures
/// with `hmac`'s `verify_slice`.
#[test]
fn secrets_are_compared_in_constant_time() {
    let mut files = Vec::new();
    rust_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut exposed = 0;
    let mut compared = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.contains(".expose()") {
                exposed += 1;
                if line.contains("==") || line.contains("!=") || line.contains(".eq(") {
                    compared.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
                }
            }
        }
    }
    assert!(exposed > 3, "secrets are read through expose(): {exposed} uses");
    assert!(compared.is_empty(), "compared with ==:\n{}", compared.join("\n"));
}
