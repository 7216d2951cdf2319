//! The admin listener against the real binary: what the public ingest port no longer shows,
//! the token, the status data, and the status page in a real headless Chromium.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually, post};

fn status(weir: &Weir) -> Value {
    client()
        .get(weir.admin_url("/status.json"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn destination<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no destination {id} in {status}"))
}

/// Ingest ports keep the health probes and show no metrics unless a source asks; the admin
/// listener serves them.
#[test]
fn metrics_are_on_the_admin_listener_and_on_ingest_only_when_asked() {
    let weir = Weir::start(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
"#,
    );
    assert!(weir.log().contains("admin listening"), "{}", weir.log());
    for path in ["/healthz", "/readyz", "/health", "/ready"] {
        assert_eq!(client().get(weir.url(path)).send().unwrap().status(), 200, "{path}");
        assert_eq!(
            client().get(weir.admin_url(path)).send().unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(client().get(weir.url("/metrics")).send().unwrap().status(), 404);
    assert_eq!(post(&weir, &json!({"name": "page view"})).status(), 200);
    assert!(
        eventually(Duration::from_secs(5), || weir
            .metrics()
            .contains("weir_events_delivered_total{destination=\"file\"} 1")),
        "{}",
        weir.metrics()
    );

    let asked = Weir::start(
        r#"
[sources.http]
type = "http"
config.settings.metrics = true
[destinations.file]
type = "file"
"#,
    );
    let text = client().get(asked.url("/metrics")).send().unwrap().text().unwrap();
    assert!(text.contains("weir_events_delivered_total"), "{text}");
}

#[test]
fn the_admin_token_guards_everything_but_the_health_probes() {
    let weir = Weir::start(
        r#"
admin.bearerToken = "s3cret"
[sources.http]
type = "http"
[destinations.file]
type = "file"
"#,
    );
    for path in ["/metrics", "/status.json", "/", "/status", "/status/events", "/tap"] {
        let refused = client().get(weir.admin_url(path)).send().unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        let wrong = client().get(weir.admin_url(path)).bearer_auth("s3cre").send().unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let header = client()
        .get(weir.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(header.status(), 200);
    let query = client()
        .get(weir.admin_url("/status.json?token=s3cret"))
        .send()
        .unwrap();
    assert_eq!(query.status(), 200);
    assert_eq!(query.json::<Value>().unwrap()["destinations"][0]["id"], "file");
    assert_eq!(client().get(weir.admin_url("/readyz")).send().unwrap().status(), 200);
    assert!(
        !weir.log().contains("s3cret"),
        "the token is never logged:\n{}",
        weir.log()
    );
}

#[test]
fn the_admin_listener_can_be_turned_off_and_a_bad_address_is_named() {
    let off = Weir::start_with(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
"#,
        &["--admin-listen", "off"],
    );
    assert!(!off.log().contains("admin listening"), "{}", off.log());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.toml");
    std::fs::write(
        &file,
        "admin.listen = \"nowhere\"\n[destinations.file]\ntype = \"file\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(support::weir_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("admin.listen: \"nowhere\" is not host:port (or false for no admin listener)"),
        "{stderr}"
    );
}

/// The status data: counts, rates, latency, and a destination whose Redis died is shown
/// retrying with the error while its events wait in the journal.
#[test]
fn the_status_shows_counts_and_a_dead_redis() {
    let mut server = RedisServer::start();
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
[destinations.events]
type = "redis"
config.settings.redis = {{ url = "{}", streamKey = "events" }}
config.retry = {{ maxRetries = 2 }}
"#,
        server.url()
    ));
    for _ in 0..5 {
        assert_eq!(post(&weir, &json!({"name": "page view"})).status(), 200);
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = status(&weir);
            destination(&now, "events")["delivered"] == 5.0 && destination(&now, "file")["delivered"] == 5.0
        }),
        "{}",
        status(&weir)
    );
    // Counters are sampled each second: the rate shows the five events.
    assert!(
        eventually(Duration::from_secs(3), || {
            let now = status(&weir);
            let seconds = destination(&now, "events")["perSecond"].as_array().unwrap().clone();
            seconds.iter().map(|v| v.as_u64().unwrap()).sum::<u64>() == 5
        }),
        "{}",
        status(&weir)
    );
    let now = status(&weir);
    let events = destination(&now, "events");
    assert_eq!(events["state"], "up");
    assert_eq!(events["type"], "redis");
    assert!(events["latency"]["p99"].as_f64().unwrap() > 0.0, "{events}");
    assert_eq!(now["sources"][0]["received"], 5.0);
    assert_eq!(now["ready"], true);

    server.kill();
    assert_eq!(post(&weir, &json!({"name": "after the kill"})).status(), 200);
    assert!(
        eventually(
            Duration::from_secs(10),
            || destination(&status(&weir), "events")["state"] == "retrying"
        ),
        "{}",
        status(&weir)
    );
    let now = status(&weir);
    let events = destination(&now, "events");
    assert!(events["lastError"]["message"].as_str().unwrap().len() > 3, "{events}");
    assert_eq!(destination(&now, "file")["state"], "up");
    // Journaled: an outage dead-letters nothing, the event waits in the journal.
    assert_eq!(events["deadLettered"], 0.0);
    server.restart();
    assert!(
        eventually(Duration::from_secs(20), || {
            let now = status(&weir);
            destination(&now, "events")["state"] == "up" && destination(&now, "events")["delivered"] == 6.0
        }),
        "{}",
        status(&weir)
    );
}

/// Collects what the page reports as errors: console errors, uncaught exceptions and
/// failed loads.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<Vec<String>>>);

impl Problems {
    fn watch(&self, tab: &headless_chrome::Tab) {
        use headless_chrome::protocol::cdp::types::Event;
        let seen = self.0.clone();
        tab.add_event_listener(Arc::new(move |event: &Event| {
            let problem = match event {
                Event::LogEntryAdded(added) => {
                    let entry = &added.params.entry;
                    (format!("{:?}", entry.level) == "Error").then(|| format!("log: {}", entry.text))
                }
                Event::RuntimeExceptionThrown(thrown) => {
                    Some(format!("exception: {:?}", thrown.params.exception_details))
                }
                Event::RuntimeConsoleAPICalled(called) => (format!("{:?}", called.params.Type) == "Error")
                    .then(|| format!("console.error: {:?}", called.params.args)),
                _ => None,
            };
            if let Some(problem) = problem {
                seen.lock().unwrap().push(problem);
            }
        }))
        .unwrap();
    }

    fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The page in a real browser: it loads with no console errors, lists every destination,
/// its counters move as events are posted, and a destination whose Redis is killed shows
/// as retrying within seconds, and it fits a phone's screen. Saves screenshots
/// (`target/status-page.png` and `target/status-page-phone.png`; the README's copy is
/// `docs/status-page.png`).
#[test]
fn the_status_page_in_headless_chromium() {
    use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
    use headless_chrome::{Browser, LaunchOptions};

    let chromium = std::path::PathBuf::from(support::CHROMIUM);
    assert!(
        chromium.exists(),
        "{} is missing: scripts/test.sh installs it (Debian package chromium)",
        chromium.display()
    );
    let mut server = RedisServer::start();
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
[destinations.events]
type = "redis"
config.settings.redis = {{ url = "{}", streamKey = "events" }}
[destinations.audit]
type = "blackhole"
"#,
        server.url()
    ));
    let profile = tempfile::tempdir().unwrap();
    let args: Vec<&std::ffi::OsStr> = support::CHROMIUM_FLAGS.iter().map(std::ffi::OsStr::new).collect();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1200, 900)))
            .user_data_dir(Some(profile.path().to_path_buf()))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(20));
    let problems = Problems::default();
    problems.watch(&tab);
    tab.enable_log().unwrap();
    tab.enable_runtime().unwrap();
    tab.navigate_to(&weir.admin_url("/")).unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element("[data-destination=\"events\"]").unwrap();

    let read = |expression: &str| -> Value { tab.evaluate(expression, false).unwrap().value.unwrap_or(Value::Null) };
    let shown = || -> Value {
        read(
            r#"JSON.stringify(Array.from(document.querySelectorAll('[data-destination]')).map((card) => ({
                id: card.dataset.destination,
                state: card.dataset.state,
                delivered: card.querySelector('[data-field=delivered]').textContent,
                error: (card.querySelector('[data-field=lastError]') || {}).textContent || null,
            })))"#,
        )
    };
    let cards = |value: Value| -> Vec<Value> { serde_json::from_str(value.as_str().unwrap()).unwrap() };
    let ids: Vec<String> = cards(shown())
        .iter()
        .map(|card| card["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["file", "events", "audit"], "every destination of the flow");

    for n in 0..20 {
        assert_eq!(
            post(&weir, &json!({"name": "page view", "data": {"n": n}})).status(),
            200
        );
    }
    let moved = |id: &str, count: &str| {
        let id = id.to_owned();
        let count = count.to_owned();
        move || {
            cards(shown())
                .iter()
                .any(|card| card["id"] == id.as_str() && card["delivered"] == count.as_str())
        }
    };
    assert!(
        eventually(Duration::from_secs(10), moved("events", "20")),
        "{}",
        shown()
    );
    assert!(eventually(Duration::from_secs(10), moved("audit", "20")), "{}", shown());
    // Let the chart show a second or two of traffic for the screenshot.
    for n in 0..30 {
        assert_eq!(
            post(&weir, &json!({"name": "product add", "data": {"n": n}})).status(),
            200
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        eventually(Duration::from_secs(10), moved("events", "50")),
        "{}",
        shown()
    );

    server.kill();
    assert_eq!(post(&weir, &json!({"name": "after the kill"})).status(), 200);
    let down = || {
        cards(shown())
            .iter()
            .any(|card| card["id"] == "events" && card["state"] == "retrying" && card["error"].is_string())
    };
    assert!(eventually(Duration::from_secs(10), down), "{}", shown());
    let pill = read("document.querySelector('[data-destination=events] [data-field=state]').textContent");
    assert_eq!(pill, "retrying");

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    std::fs::write(&target, &png).unwrap();
    assert!(png.len() > 10_000, "a screenshot of a real page");

    // On a phone: one column, nothing wider than the screen.
    tab.call_method(headless_chrome::protocol::cdp::Emulation::SetDeviceMetricsOverride {
        width: 390,
        height: 844,
        device_scale_factor: 1.0,
        mobile: true,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let fits = read("[window.innerWidth, document.documentElement.scrollWidth].join(' ')");
    assert_eq!(fits, "390 390", "the page fits a 390-pixel screen");
    let phone = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(target.with_file_name("status-page-phone.png"), &phone).unwrap();
    assert_eq!(problems.list(), Vec::<String>::new(), "no console errors");
    drop(server);
}

/// A stream source shows what it received and its group's lag and pending count: entries
/// handed to a destination that cannot deliver them stay pending.
#[test]
fn the_status_shows_a_stream_source_and_its_group() {
    let server = RedisServer::start();
    let weir = Weir::start(&format!(
        r#"
[sources.http]
type = "http"
[sources.orders]
type = "redis_stream"
config.settings = {{ url = "{}", stream = "orders", group = "weir", consumer = "one", block = 50 }}
[destinations.unreachable]
type = "redis"
sources = ["orders"]
config.settings.redis = {{ url = "redis://127.0.0.1:{}", streamKey = "copy" }}
[destinations.sink]
type = "blackhole"
sources = ["http"]
"#,
        server.url(),
        support::free_port()
    ));
    assert!(
        eventually(Duration::from_secs(5), || server
            .cli(&["XINFO", "GROUPS", "orders"])
            .contains("weir")),
        "the group exists"
    );
    for n in 0..3 {
        server.cli(&[
            "XADD",
            "orders",
            "*",
            "event",
            &json!({"name": "order complete", "data": {"n": n}}).to_string(),
        ]);
    }
    let shown = || {
        let now = status(&weir);
        let source = now["sources"][1].clone();
        source["id"] == "orders"
            && source["received"] == 3.0
            && source["streams"] == json!([{"stream": "orders", "lag": 0, "pending": 3}])
            && source["type"] == "redis_stream"
    };
    // The group is read every 5 s.
    assert!(eventually(Duration::from_secs(12), shown), "{}", status(&weir));
}

/// `weir tap` as a user runs it, until it has printed `limit` records (or 20 s pass).
struct Tap {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Tap {
    fn start(weir: &Weir, args: &[&str]) -> Tap {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(support::weir_binary())
            .args(["tap", "--admin", &weir.admin, "--json"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (attached_tx, attached_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = attached_tx.send(line);
            }
        });
        let attached = attached_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(attached.starts_with("tapping"), "{attached}");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Tap { child, lines }
    }

    /// Every record it printed, once it has exited (its `--limit` reached).
    fn records(mut self) -> Vec<Value> {
        let started = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "weir tap did not reach its limit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.child.wait().unwrap().success());
        self.lines
            .try_iter()
            .map(|line| serde_json::from_str(&line).unwrap())
            .collect()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir tap` shows live events with each destination's outcome and the wire form sent,
/// which is what `weir explain` says for that event; filters pick what it shows.
#[test]
fn weir_tap_shows_live_events_with_their_wire_form() {
    let server = RedisServer::start();
    let flow = json!({
        "sources": {"http": {"type": "http"}},
        "destinations": {
            "events": {"type": "redis", "config": {
                "settings": {"redis": {"url": server.url(), "streamKey": "events"}},
                "mapping": {"debug": {"*": {"ignore": true}}}
            }},
            "file": {"type": "file"}
        }
    });
    let weir = Weir::start_file("flow.json", &flow.to_string(), &[]);
    let delivered = Tap::start(&weir, &["--destination", "events", "--name", "order *", "--limit", "1"]);
    let ignored = Tap::start(&weir, &["--outcome", "ignored", "--limit", "1"]);
    for event in [
        json!({"name": "page view"}),
        json!({"name": "debug ping"}),
        json!({"name": "order complete", "data": {"total": 42}}),
    ] {
        assert_eq!(post(&weir, &event).status(), 200);
    }
    let records = delivered.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(
        (&record["source"], &record["destination"], &record["outcome"]),
        (&json!("http"), &json!("events"), &json!("delivered"))
    );
    assert_eq!(record["event"]["name"], "order complete");
    let explained = support::explain_events(&flow, std::slice::from_ref(&record["event"]));
    let at_events = explained.iter().find(|line| line["destination"] == "events").unwrap();
    assert_eq!(record["wire"], at_events["wire"], "the tap shows what explain shows");
    // And it is what the stream holds.
    let entries = server.xrange("events");
    assert_eq!(entries.len(), 2, "page view and order complete; debug ignored");

    let records = ignored.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (
            &records[0]["destination"],
            &records[0]["event"]["name"],
            &records[0]["wire"]
        ),
        (&json!("events"), &json!("debug ping"), &Value::Null)
    );
}

/// A tap that does not read loses records, counted and told, and never holds delivery up.
#[test]
fn a_stalled_tap_drops_records_and_delivery_goes_on() {
    use std::io::Read;
    let weir = Weir::start(
        r#"
[sources.http]
type = "http"
[destinations.sink]
type = "blackhole"
"#,
    );
    // Attached, then not read while 20 000 events pass.
    let mut stalled = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(weir.admin_url("/tap"))
        .send()
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let batch: Vec<Value> = (0..100)
        .map(|n| json!({"name": "page view", "data": {"n": n}}))
        .collect();
    for _ in 0..200 {
        assert_eq!(post(&weir, &Value::Array(batch.clone())).status(), 200);
    }
    assert!(
        eventually(
            Duration::from_secs(20),
            || destination(&status(&weir), "sink")["delivered"] == 20_000
        ),
        "{}",
        status(&weir)
    );
    // Now read what the tap kept: every record is either there or counted as dropped.
    let (mut records, mut dropped) = (0u64, 0u64);
    let mut text = String::new();
    let mut buffer = vec![0u8; 1 << 16];
    let started = std::time::Instant::now();
    while records + dropped < 20_000 && started.elapsed() < Duration::from_secs(30) {
        let read = stalled.read(&mut buffer).unwrap();
        assert!(read > 0, "the tap stream ended");
        text.push_str(&String::from_utf8_lossy(&buffer[..read]));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if frame.contains("event: tap") {
                records += 1;
            } else if frame.contains("event: dropped") {
                let data = frame.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
                dropped += serde_json::from_str::<Value>(data).unwrap()["dropped"]
                    .as_u64()
                    .unwrap();
            }
        }
    }
    assert_eq!(records + dropped, 20_000, "records {records}, dropped {dropped}");
    assert!(dropped > 0, "a tap that stalls through 20 000 events falls behind");
    assert!(
        weir.metrics().contains(&format!("weir_tap_dropped_total {dropped}")),
        "{}",
        weir.metrics()
    );
}

/// Without a token the admin paths answer only requests addressed to localhost or an IP
/// address: a web page cannot read them through a name it points at 127.0.0.1.
#[test]
fn without_a_token_only_local_addresses_are_answered() {
    let weir = Weir::start(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
"#,
    );
    let port = weir.admin.rsplit(':').next().unwrap().to_owned();
    let with_host = |host: &str| {
        client()
            .get(weir.admin_url("/status.json"))
            .header("host", host)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(with_host(&format!("127.0.0.1:{port}")), 200);
    assert_eq!(with_host(&format!("localhost:{port}")), 200);
    assert_eq!(with_host(&format!("[::1]:{port}")), 200);
    assert_eq!(with_host(&format!("rebound.example:{port}")), 403);
    // The health probes stay open.
    let probe = client()
        .get(weir.admin_url("/readyz"))
        .header("host", "rebound.example")
        .send()
        .unwrap();
    assert_eq!(probe.status(), 200);
}

/// An open status page or tap does not hold a shutdown up: their streams end when weir
/// stops, and queued events are delivered, not dead-lettered at the deadline.
#[test]
fn open_admin_streams_end_at_shutdown() {
    let mut weir = Weir::start(
        r#"
[sources.http]
type = "http"
[destinations.file]
type = "file"
"#,
    );
    let streaming = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let status = streaming.get(weir.admin_url("/status/events")).send().unwrap();
    let tap = streaming.get(weir.admin_url("/tap")).send().unwrap();
    assert_eq!((status.status().as_u16(), tap.status().as_u16()), (200, 200));
    assert_eq!(post(&weir, &json!({"name": "page view"})).status(), 200);
    let started = std::time::Instant::now();
    let exit = weir.terminate(Duration::from_secs(20));
    assert!(exit.success(), "{}", weir.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for the open streams",
        started.elapsed()
    );
    assert!(
        weir.log()
            .contains("shutdown complete: every queued event was delivered"),
        "{}",
        weir.log()
    );
    drop((status, tap));
}
