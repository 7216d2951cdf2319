//! `weir streams provision|verify` and `weir doctor` against a real redis-server started by
//! each test.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::redis::RedisServer;

/// Runs weir with `args` against `server` (password, if any, from a file via the
/// environment); returns (exit code, stdout, stderr).
fn weir(server: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(support::weir_binary());
    command
        .args(args)
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", server.port))
        .env_remove("REDIS_PASSWORD")
        .env_remove("REDIS_PASSWORD_FILE");
    if let Some(password) = &server.password {
        let file = server.dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        command.env("REDIS_PASSWORD_FILE", file);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/streams.toml");

#[test]
fn provisioning_twice_changes_nothing_the_second_time() {
    let server = RedisServer::start();
    let (code, out, err) = weir(&server, &["streams", "provision", EXAMPLE]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("created  group audit-ingestor on caracal.audit.events (from $)"),
        "{out}"
    );
    assert!(out.ends_with("redis streams provisioned: 10 changes\n"), "{out}");
    let groups = server.cli(&["XINFO", "GROUPS", "caracal.audit.events"]);
    assert!(
        groups.contains("audit-ingestor") && groups.contains("siem-export"),
        "{groups}"
    );

    for _ in 0..2 {
        let (code, out, err) = weir(&server, &["streams", "provision", EXAMPLE]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.ends_with("redis streams provisioned: 0 changes\n"), "{out}");
        assert!(
            out.contains("exists   group sts-keys on caracal.keys.invalidate"),
            "{out}"
        );
    }
    // The seed entry is written once, not once per run as Caracal's provisioner does.
    assert_eq!(server.cli(&["XLEN", "caracal.providers.ratelimit"]).trim(), "1");
}

#[test]
fn a_dry_run_changes_nothing_and_json_says_what_it_would_do() {
    let server = RedisServer::start();
    let (code, out, _) = weir(&server, &["streams", "provision", EXAMPLE, "--dry-run", "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["changes"], 10);
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["actions"][0]["action"], "create_group");
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0", "nothing was created");
}

#[test]
fn a_stream_longer_than_its_bound_is_warned_about_never_trimmed() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "streams.yaml",
        "streams:\n  jobs:\n    groups: {workers: \"0\"}\n    maxLen: 10\n",
    );
    for n in 0..11 {
        server.cli(&["XADD", "jobs", "*", "n", &n.to_string()]);
    }
    let (code, out, err) = weir(&server, &["streams", "provision", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err.trim(), "warn: jobs length 11 exceeds intended bound 10");
    assert!(out.contains("created  group workers on jobs (from 0)"), "{out}");
    assert_eq!(server.cli(&["XLEN", "jobs"]).trim(), "11");
}

#[test]
fn verify_names_what_is_missing_or_wrong() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "streams.json",
        r#"{"streams": {"a": {"groups": ["audit-ingestor"]}, "b": {"groups": ["g"]}, "c": {"groups": ["g"]}}}"#,
    );
    // `a` has a group whose name contains the wanted one's prefix; `b` is a string; `c` is missing.
    server.cli(&["XGROUP", "CREATE", "a", "audit", "$", "MKSTREAM"]);
    server.cli(&["SET", "b", "x"]);
    let (code, out, err) = weir(&server, &["streams", "verify", &file]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ok   stream a\n"), "{out}");
    assert!(
        out.contains("FAIL group a/audit-ingestor: not found"),
        "exact names: {out}"
    );
    assert!(out.contains("FAIL stream b: type string (expected stream)"), "{out}");
    assert!(out.contains("FAIL stream c: missing"), "{out}");
    assert!(out.contains("FAIL provisioning again changes nothing: "), "{out}");
    assert!(
        err.contains("verify failed: group a/audit-ingestor, stream b, group b/g, stream c, group c/g"),
        "{err}"
    );

    // Provisioning fixes what it can and leaves the string alone.
    let (code, _, err) = weir(&server, &["streams", "provision", &file]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error: b is a string, not a stream: left as it is"),
        "{err}"
    );
    server.cli(&["DEL", "b"]);
    let (code, _, _) = weir(&server, &["streams", "provision", &file]);
    assert_eq!(code, 0);
    let (code, out, _) = weir(&server, &["streams", "verify", &file, "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
}

#[test]
fn a_bad_file_is_reported_with_paths() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "s.toml",
        "[streams.x]\nmaxlen = 5\n[streams.y]\ngroups = [\"g\"]\n",
    );
    let (code, _, err) = weir(&server, &["streams", "provision", &file]);
    assert_eq!(code, 1);
    assert!(err.contains("streams.x.maxlen: unknown key"), "{err}");
    assert!(err.contains("streams.x: has neither groups nor a seed entry"), "{err}");
}

#[test]
fn doctor_fails_eviction_and_warns_without_appendonly() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru", "--appendonly", "no"]);
    let (code, out, _) = weir(&server, &["doctor"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAIL    maxmemory-policy  allkeys-lru: "), "{out}");
    assert!(out.contains("WARN    appendonly        no: "), "{out}");
    assert!(out.contains("OK      role              master"), "{out}");
}

#[test]
fn doctor_passes_a_server_fit_for_streams_with_a_password_from_a_file() {
    let server = RedisServer::start_with(&[
        "--requirepass",
        "s3cret-pass",
        "--appendonly",
        "yes",
        "--maxmemory",
        "256mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let (code, out, err) = weir(&server, &["doctor", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["worst"], "OK", "{report:#}");
    assert_eq!(report["findings"].as_array().unwrap().len(), 9);

    // Without the password: a clear error, no verdicts.
    let output = Command::new(support::weir_binary())
        .args(["doctor", "--url", &format!("redis://127.0.0.1:{}", server.port)])
        .env_remove("REDIS_PASSWORD")
        .env_remove("REDIS_PASSWORD_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("NOAUTH") || err.contains("Authentication required"),
        "{err}"
    );
}

#[test]
fn status_numbers_match_xinfo() {
    let server = RedisServer::start();
    let ids: Vec<String> = (0..5)
        .map(|n| {
            server
                .cli(&["XADD", "orders", "*", "n", &n.to_string()])
                .trim()
                .to_owned()
        })
        .collect();
    server.cli(&["XADD", "other", "*", "x", "1"]);
    server.cli(&["SET", "not-a-stream", "x"]);
    server.cli(&["XGROUP", "CREATE", "orders", "billing", "0"]);
    server.cli(&[
        "XREADGROUP",
        "GROUP",
        "billing",
        "c1",
        "COUNT",
        "3",
        "STREAMS",
        "orders",
        ">",
    ]);
    server.cli(&[
        "XREADGROUP",
        "GROUP",
        "billing",
        "c2",
        "COUNT",
        "1",
        "STREAMS",
        "orders",
        ">",
    ]);
    server.cli(&["XACK", "orders", "billing", &ids[3]]);

    let (code, out, err) = weir(&server, &["streams", "status", "ord*", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "only streams matching the pattern: {report:#}");
    let orders = &streams[0];
    assert_eq!(orders["stream"], "orders");
    assert_eq!(orders["length"], 5);
    assert_eq!(orders["firstId"], ids[0].as_str());
    assert_eq!(orders["lastId"], ids[4].as_str());
    assert!(orders["memoryBytes"].as_u64().unwrap() > 0);
    let group = &orders["groups"][0];
    assert_eq!(group["group"], "billing");
    assert_eq!(group["consumers"], 2);
    assert_eq!(group["pending"], 3);
    assert_eq!(group["lag"], 1);
    assert_eq!(group["lastDeliveredId"], ids[3].as_str());
    assert!(group["oldestPendingAgeMs"].as_u64().is_some());
    let consumers: Vec<(String, u64)> = group["consumerList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["consumer"].as_str().unwrap().to_owned(),
                c["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(consumers, [("c1".to_owned(), 3), ("c2".to_owned(), 0)]);

    // Piped, without --json: one key=value line per stream, group and consumer.
    let (_, out, _) = weir(&server, &["streams", "status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("stream=orders length=5 "), "{out}");
    assert!(lines[1].contains("group=billing consumers=2 pending=3 lag=1"), "{out}");
    assert!(lines[2].contains("consumer=c1 pending=3"), "{out}");
    assert!(lines[4].starts_with("stream=other length=1 "), "{out}");
}

/// A dead letter as weir's stream consumer writes it.
fn dead_letter(server: &RedisServer, reason: &str, src_id: &str, fields: &[&str]) -> String {
    let mut args = vec![
        "XADD",
        "orders.dlq",
        "*",
        "reason",
        reason,
        "src_id",
        src_id,
        "attempts",
        "5",
    ];
    args.extend(["consumer", "c1", "received_at", "1700000000000"]);
    args.extend(fields);
    server.cli(&args).trim().to_owned()
}

#[test]
fn dead_letters_list_replay_and_purge() {
    let server = RedisServer::start();
    dead_letter(
        &server,
        "max_deliveries",
        "1-1",
        &["event", "{\"name\":\"a b\"}", "id", "evt-1"],
    );
    dead_letter(
        &server,
        "bad_signature",
        "1-2",
        &["event", "{\"name\":\"c d\"}", "_sig", "00"],
    );
    server.cli(&["XADD", "orders.dlq", "*", "note", "not a dead letter"]);

    let (code, out, err) = weir(&server, &["streams", "dlq", "list", "orders"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("max_deliveries  src 1-1  attempts 5  consumer c1"),
        "{out}"
    );
    assert!(err.contains("1 entries are not weir dead letters; left alone"), "{err}");

    let (_, out, _) = weir(
        &server,
        &["streams", "dlq", "show", "orders", "--reason", "max", "--json"],
    );
    let shown: Value = serde_json::from_str(&out).unwrap();
    let letters = shown["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0]["srcId"], "1-1",
        "an original `id` field does not shadow src_id"
    );
    assert_eq!(
        letters[0]["fields"],
        serde_json::json!([["event", "{\"name\":\"a b\"}"], ["id", "evt-1"]])
    );

    // Replay one reason: back into the stream with its fields, gone from the dead letters.
    let (code, out, err) = weir(
        &server,
        &["streams", "dlq", "replay", "orders", "--reason", "max_deliveries"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 entries into orders"), "{out}");
    let replayed = server.xrange("orders");
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        replayed[0].1,
        [
            ("event".to_owned(), "{\"name\":\"a b\"}".to_owned()),
            ("id".to_owned(), "evt-1".to_owned())
        ]
    );
    assert_eq!(server.cli(&["XLEN", "orders.dlq"]).trim(), "2");

    // Re-signed on replay: the old signature goes, a valid new one comes.
    let key = "ab".repeat(32);
    let output = Command::new(support::weir_binary())
        .args([
            "streams",
            "dlq",
            "replay",
            "orders",
            "--reason",
            "bad_signature",
            "--sign",
        ])
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", server.port))
        .env("STREAMS_HMAC_KEY", &key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let entries = server.xrange("orders");
    let fields = &entries[1].1;
    assert_eq!(fields[0], ("event".to_owned(), "{\"name\":\"c d\"}".to_owned()));
    assert_eq!(fields[1].0, "_sig");
    let signing = weir::redis::signing::SigningKey::from_hex(&key).unwrap();
    assert!(signing.verify("orders", &[("event", b"{\"name\":\"c d\"}")], &fields[1].1));

    // Caracal's audit form: `sig` over `data` alone, key from AUDIT_HMAC_KEY.
    dead_letter(
        &server,
        "pg_permanent_error",
        "1-4",
        &["id", "a-1", "data", "{\"id\":\"a-1\"}", "sig", "stale"],
    );
    let audit_key = "cd".repeat(32);
    let output = Command::new(support::weir_binary())
        .args([
            "streams",
            "dlq",
            "replay",
            "orders",
            "--reason",
            "pg_permanent_error",
            "--sign=audit",
        ])
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", server.port))
        .env("AUDIT_HMAC_KEY", &audit_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let entries = server.xrange("orders");
    let fields = &entries[2].1;
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["id", "data", "sig"]);
    assert_eq!(fields[2].1, support::python_hmac(&audit_key, "{\"id\":\"a-1\"}"));

    // Purge asks first; the foreign entry stays either way.
    dead_letter(&server, "max_deliveries", "1-3", &["event", "{}"]);
    let (code, _, err) = weir(&server, &["streams", "dlq", "purge", "orders"]);
    assert_eq!(code, 1);
    assert!(err.contains("1 dead letters match in orders.dlq; add --yes"), "{err}");
    let (code, out, _) = weir(&server, &["streams", "dlq", "purge", "orders", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 1 dead letters from orders.dlq"), "{out}");
    assert_eq!(server.cli(&["XLEN", "orders.dlq"]).trim(), "1");
}

#[test]
fn gc_never_removes_anything_with_pending_entries() {
    let server = RedisServer::start();
    server.cli(&["XADD", "feed", "*", "n", "1"]);
    for group in ["billing", "feed:host-a", "feed:host-b"] {
        server.cli(&["XGROUP", "CREATE", "feed", group, "0"]);
    }
    // billing: c-busy holds the entry, c-idle has nothing pending.
    server.cli(&["XREADGROUP", "GROUP", "billing", "c-busy", "STREAMS", "feed", ">"]);
    server.cli(&["XGROUP", "CREATECONSUMER", "feed", "billing", "c-idle"]);
    // host-a read and acknowledged everything; host-b still holds its entry.
    let read = server.cli(&["XREADGROUP", "GROUP", "feed:host-a", "a1", "STREAMS", "feed", ">"]);
    let id = read.lines().nth(1).unwrap().trim().to_owned();
    server.cli(&["XACK", "feed", "feed:host-a", &id]);
    server.cli(&["XREADGROUP", "GROUP", "feed:host-b", "b1", "STREAMS", "feed", ">"]);
    std::thread::sleep(std::time::Duration::from_millis(20));

    let (code, out, _) = weir(&server, &["streams", "gc", "--idle", "10ms", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would remove consumer c-idle of feed/billing"), "{out}");
    assert!(out.contains("would remove broadcast group feed/feed:host-a"), "{out}");
    assert!(out.contains("gc: would remove 2"), "{out}");
    assert!(
        server.cli(&["XINFO", "GROUPS", "feed"]).contains("feed:host-a"),
        "a dry run removes nothing"
    );

    let (code, out, _) = weir(&server, &["streams", "gc", "--idle", "10ms"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("gc: removed 2"), "{out}");
    let groups = server.cli(&["XINFO", "GROUPS", "feed"]);
    assert!(
        !groups.contains("feed:host-a") && groups.contains("feed:host-b") && groups.contains("billing"),
        "{groups}"
    );
    let consumers = server.cli(&["XINFO", "CONSUMERS", "feed", "billing"]);
    assert!(
        consumers.contains("c-busy") && !consumers.contains("c-idle"),
        "{consumers}"
    );
    assert!(
        server
            .cli(&["XINFO", "CONSUMERS", "feed", "feed:host-b"])
            .contains("b1")
    );
    // Nothing long idle: nothing goes.
    let (_, out, _) = weir(&server, &["streams", "gc"]);
    assert!(out.contains("gc: removed 0 (idle limit 1day)"), "{out}");
}

#[test]
fn the_commands_speak_tls_with_a_private_ca() {
    let server = RedisServer::start_tls(&["--maxmemory-policy", "noeviction"]);
    let ca = server.ca_file.clone().unwrap();
    let output = Command::new(support::weir_binary())
        .args(["streams", "status", "--json", "--url", &server.url(), "--tls-ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["streams"], serde_json::json!([]));
    // Without the CA the server's certificate is not trusted.
    let output = Command::new(support::weir_binary())
        .args(["doctor", "--url", &server.url()])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Caracal's operators' environment: `REDIS_HOST`, `REDIS_PORT` and `REDIS_PASSWORD_FILE`
/// (what its provision and verify scripts take), no URL.
#[test]
fn caracal_s_environment_is_enough_to_provision_and_verify() {
    let server = RedisServer::start_with(&["--requirepass", "caracal-pass"]);
    let password = server.dir.path().join("redis-password");
    std::fs::write(&password, "caracal-pass\n").unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(support::weir_binary())
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("REDIS_PASSWORD")
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", server.port.to_string())
            .env("REDIS_PASSWORD_FILE", &password)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["streams", "provision", EXAMPLE]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("redis streams provisioned: 10 changes\n"), "{out}");
    let (code, out, err) = run(&["streams", "verify", EXAMPLE]);
    assert_eq!(code, 0, "{out}{err}");
    let groups = server.cli(&["XINFO", "GROUPS", "caracal.audit.events"]);
    assert!(groups.contains("audit-ingestor"), "{groups}");
    // doctor connects the same way (3 would be "cannot connect"; the test server has no AOF,
    // a WARN, so 1).
    let (code, out, err) = run(&["doctor"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("OK      version"), "{out}");
}
