//! The SSE hub end to end: events posted over HTTP go into a Redis stream, weir's stream
//! source reads them back, and the `sse` destination fans them out to clients.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::{Weir, client, eventually};

/// HTTP → redis (stream `events`) → redis_stream source → sse; `sse` adds SSE settings.
fn hub(server: &RedisServer, sse: Value) -> Weir {
    let settings = support::merged(json!({"replay": {"url": server.url(), "stream": "events"}}), &sse);
    let flow = json!({
        "sources": {
            // The answer waits for delivery: tests read the stream as soon as it comes.
            "http": {"type": "http", "config": {"ack": "delivered", "settings": {"maxBatchSize": 5000}}},
            "events": {"type": "redis_stream", "config": {"settings": {
                "url": server.url(), "stream": "events", "group": "sse", "consumer": "hub", "block": 50, "batchSize": 100}}}
        },
        "destinations": {
            "stream": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": server.url(), "streamKey": "events"}}, "queueMax": 10000}},
            "notifications": {"type": "sse", "sources": ["events"], "config": {"settings": settings}}
        }
    });
    start_reading(&flow)
}

/// weir on `flow`, once its stream source reads.
fn start_reading(flow: &Value) -> Weir {
    let weir = Weir::start(&toml::to_string(flow).unwrap());
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("reading the stream")),
        "{}",
        weir.log()
    );
    weir
}

/// One SSE frame.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: String,
    event: String,
    data: Value,
}

struct Client {
    lines: BufReader<reqwest::blocking::Response>,
}

impl Client {
    fn connect(weir: &Weir, query: &str, headers: &[(&str, &str)]) -> Client {
        let mut request = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .get(weir.url(&format!("/v1/notifications/event-stream{query}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Client {
            lines: BufReader::new(response),
        }
    }

    /// The next frame (heartbeat comments skipped).
    fn frame(&mut self) -> Frame {
        let (mut id, mut event, mut data) = (String::new(), String::new(), Value::Null);
        loop {
            let mut line = String::new();
            assert!(self.lines.read_line(&mut line).unwrap() > 0, "the stream ended");
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !id.is_empty() {
                    return Frame { id, event, data };
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.to_owned();
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = serde_json::from_str(value).unwrap();
            }
        }
    }
}

fn post(weir: &Weir, events: Value) {
    let response = client()
        .post(weir.url("/collect"))
        .header("content-type", "application/json")
        .body(events.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

fn stream_ids(server: &RedisServer) -> Vec<String> {
    server.xrange("events").into_iter().map(|(id, _)| id).collect()
}

#[test]
fn clients_receive_events_with_their_stream_ids_and_filters_apply() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({}));
    let mut everything = Client::connect(&weir, "", &[]);
    let mut orders = Client::connect(&weir, "?filter=order%20complete,order%20refund", &[]);
    post(
        &weir,
        json!([{"name": "page view"}, {"name": "order complete", "data": {"total": 5}}, {"name": "page view"}]),
    );
    let ids = stream_ids(&server);
    let frames: Vec<Frame> = (0..3).map(|_| everything.frame()).collect();
    assert_eq!(frames.iter().map(|f| f.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(frames[1].event, "order complete");
    assert_eq!(frames[1].data["data"], json!({"total": 5}));
    let only = orders.frame();
    assert_eq!(
        (only.id.as_str(), only.event.as_str()),
        (ids[1].as_str(), "order complete")
    );
}

/// A flow with no HTTP source (a stream read and fanned out, Optimizely Agent's scenario
/// without ingest) serves the health endpoints and its SSE path on the hub's `listen`, and
/// its metrics on the admin listener only.
#[test]
fn a_flow_without_an_http_source_serves_health_and_sse_on_the_hub_listener() {
    let server = RedisServer::start();
    let flow = json!({
        "sources": {
            "events": {"type": "redis_stream", "config": {"settings": {
                "url": server.url(), "stream": "events", "group": "sse", "consumer": "hub", "block": 50}}}
        },
        "destinations": {
            // `--listen 127.0.0.1:0` (the test harness) replaces this address: the flow's
            // first listener is the hub's.
            "notifications": {"type": "sse", "config": {"settings": {"listen": "127.0.0.1:8080"}}}
        }
    });
    let weir = start_reading(&flow);
    assert!(weir.log().contains("HTTP endpoints listening"), "{}", weir.log());
    assert!(!weir.log().contains("HTTP source listening"), "{}", weir.log());
    let ready = client().get(weir.url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().unwrap(), json!({"status": "ready"}));
    assert_eq!(client().get(weir.url("/healthz")).send().unwrap().status(), 200);
    let mut listener = Client::connect(&weir, "", &[]);
    server.cli(&[
        "XADD",
        "events",
        "*",
        "event",
        &json!({"name": "order complete"}).to_string(),
    ]);
    let frame = listener.frame();
    assert_eq!(frame.event, "order complete");
    assert_eq!(frame.id, stream_ids(&server)[0]);
    let metrics = || client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    let counted = |text: &str| text.contains("weir_events_delivered_total{destination=\"notifications\"} 1");
    assert!(
        eventually(Duration::from_secs(5), || counted(&metrics())),
        "{}",
        metrics()
    );
    let missing = client().get(weir.url("/collect")).send().unwrap();
    assert_eq!(missing.status(), 404, "no HTTP source, so no collect path");
    let public = client().get(weir.url("/metrics")).send().unwrap();
    assert_eq!(public.status(), 404, "the hub's public port shows no internals");
}

/// A client that reconnects with Last-Event-ID gets what it missed from the stream, then
/// live events, without gaps or repeats.
#[test]
fn last_event_id_replays_what_was_missed_then_goes_live() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({}));
    post(
        &weir,
        json!([{"name": "a one"}, {"name": "a two"}, {"name": "a three"}]),
    );
    assert!(eventually(Duration::from_secs(5), || stream_ids(&server).len() == 3));
    let ids = stream_ids(&server);
    let mut client = Client::connect(&weir, "", &[("last-event-id", &ids[0])]);
    assert_eq!(client.frame().id, ids[1]);
    assert_eq!(client.frame().id, ids[2]);
    post(&weir, json!({"name": "a four"}));
    let live = client.frame();
    assert_eq!(live.event, "a four");
    assert_eq!(live.id, stream_ids(&server)[3]);
}

/// More missed than `clientQueue`: a page of them, then the stream ends; the client resumes
/// from the last one it got and gets the rest, then live — nothing skipped, nothing twice.
#[test]
fn a_replay_longer_than_the_client_queue_comes_a_page_at_a_time() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({"clientQueue": 4}));
    let events: Vec<Value> = (0..10).map(|n| json!({"name": "a missed", "data": {"n": n}})).collect();
    post(&weir, Value::Array(events));
    assert!(eventually(Duration::from_secs(5), || stream_ids(&server).len() == 10));
    let ids = stream_ids(&server);
    let mut received = Vec::new();
    let mut last = ids[0].clone();
    // 9 missed: two full pages, each ending its stream (read to the end), then the last one,
    // after which the stream stays open for live events.
    for page in 0..3 {
        let mut client = Client::connect(&weir, "", &[("last-event-id", &last)]);
        let mut got = Vec::new();
        let mut line = String::new();
        while (page < 2 || got.is_empty()) && client.lines.read_line(&mut line).unwrap() > 0 {
            if let Some(id) = line.strip_prefix("id: ") {
                got.push(id.trim_end().to_owned());
            }
            line.clear();
        }
        assert_eq!(got.len(), [4, 4, 1][page], "page {page}: {got:?}");
        last = got.last().cloned().unwrap();
        received.extend(got);
    }
    assert_eq!(received, ids[1..].to_vec(), "every missed entry once, in order");
    // Caught up: the next connection goes live.
    let mut client = Client::connect(&weir, "", &[("last-event-id", &last)]);
    post(&weir, json!({"name": "a live"}));
    assert_eq!(client.frame().event, "a live");
}

#[test]
fn a_bearer_token_guards_the_stream() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({"bearerToken": "let-me-in"}));
    let url = weir.url("/v1/notifications/event-stream");
    assert_eq!(client().get(&url).send().unwrap().status(), 401);
    let mut authorized = Client::connect(&weir, "", &[("authorization", "Bearer let-me-in")]);
    post(&weir, json!({"name": "a b"}));
    assert_eq!(authorized.frame().event, "a b");
}

/// A client that stops reading falls off the ring and is disconnected; the others keep
/// receiving everything.
#[test]
fn a_slow_client_is_disconnected_and_the_others_keep_up() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({"clientQueue": 256}));
    let _stalled = Client::connect(&weir, "", &[]);
    let mut reader = Client::connect(&weir, "", &[]);
    let total = 4000;
    let padding = "x".repeat(4000);
    let reading = std::thread::spawn(move || (0..total).map(|_| reader.frame().id).collect::<Vec<_>>());
    // 200 events of 4 kB a request: under the 1 MB body limit.
    for chunk in 0..(total / 200) {
        let events: Vec<Value> = (0..200)
            .map(|n| json!({"name": "bulk event", "data": {"n": chunk * 200 + n, "pad": padding}}))
            .collect();
        post(&weir, Value::Array(events));
    }
    let received = reading.join().unwrap();
    assert_eq!(
        received,
        stream_ids(&server),
        "the reading client got every event, in order"
    );
    let dropped = || {
        let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
        metrics.contains("weir_sse_clients_dropped_total{path=\"/v1/notifications/event-stream\"} 1")
    };
    assert!(eventually(Duration::from_secs(10), dropped), "{}", weir.log());
}

#[test]
fn idle_connections_get_heartbeat_comments() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({"heartbeat": 50}));
    let mut client = Client::connect(&weir, "", &[]);
    let mut line = String::new();
    client.lines.read_line(&mut line).unwrap();
    assert_eq!(line, ": heartbeat\n");
}

/// One of the Optimizely scenario's instances: an HTTP source writing to stream `events`, and a
/// broadcast-mode stream source (consumer `name`, `settings` added) reading it into an SSE hub.
fn broadcast_instance(server: &RedisServer, name: &str, settings: Value) -> Weir {
    let source = support::merged(
        json!({"url": server.url(), "stream": "events", "group": "notifications", "mode": "broadcast", "consumer": name}),
        &settings,
    );
    let flow = json!({
        "sources": {
            "http": {"type": "http"},
            "events": {"type": "redis_stream", "config": {"settings": source}}
        },
        "destinations": {
            "stream": {"type": "redis", "sources": ["http"], "config": {
                "settings": {"redis": {"url": server.url(), "streamKey": "events"}}}},
            "notifications": {"type": "sse", "sources": ["events"]}
        }
    });
    start_reading(&flow)
}

/// The Optimizely scenario: two weir instances behind different ports, each with SSE
/// clients, reading one stream in broadcast mode. Events posted to either reach every client
/// on both.
#[test]
fn events_posted_to_either_instance_reach_every_client_on_both() {
    let server = RedisServer::start();
    let instance = |name: &str| broadcast_instance(&server, name, json!({"block": 50}));
    let (a, b) = (instance("host-a"), instance("host-b"));
    let mut clients: Vec<Client> = (0..3)
        .flat_map(|_| [Client::connect(&a, "", &[]), Client::connect(&b, "", &[])])
        .collect();
    post(&a, json!({"name": "posted to a"}));
    post(&b, json!({"name": "posted to b"}));
    let ids = stream_ids(&server);
    assert_eq!(ids.len(), 2);
    for client in &mut clients {
        let mut received: Vec<(String, String)> = (0..2).map(|_| client.frame()).map(|f| (f.id, f.event)).collect();
        received.sort();
        assert_eq!(
            received,
            [
                (ids[0].clone(), "posted to a".to_owned()),
                (ids[1].clone(), "posted to b".to_owned())
            ]
        );
    }
    let groups = server.cli(&["XINFO", "GROUPS", "events"]);
    assert!(
        groups.contains("notifications:host-a") && groups.contains("notifications:host-b"),
        "{groups}"
    );
}

/// The Optimizely scenario on the stream source's defaults (`block` 1 s, `claimIdle` 60 s),
/// posting starting `delay` after both instances started: one event every 50 ms, alternately to
/// each, 40 in all. Every live client on both instances receives all 40 within seconds — none
/// waits for the reaper (a blocking read abandoned by the client used to swallow entries).
fn every_client_sees_every_event_when_posting_starts_after(delay: Duration) {
    let server = RedisServer::start();
    let (a, b) = (
        broadcast_instance(&server, "host-a", json!({})),
        broadcast_instance(&server, "host-b", json!({})),
    );
    let clients: Vec<Client> = (0..2)
        .flat_map(|_| [Client::connect(&a, "", &[]), Client::connect(&b, "", &[])])
        .collect();
    std::thread::sleep(delay);
    const EVENTS: usize = 40;
    let (frames_tx, frames_rx) = std::sync::mpsc::channel();
    for (index, mut client) in clients.into_iter().enumerate() {
        let frames_tx = frames_tx.clone();
        std::thread::spawn(move || {
            for _ in 0..EVENTS {
                let frame = client.frame();
                if frames_tx.send((index, frame.id)).is_err() {
                    return;
                }
            }
        });
    }
    for n in 0..EVENTS {
        let instance = if n % 2 == 0 { &a } else { &b };
        post(instance, json!({"name": format!("notice {n}")}));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut received: Vec<Vec<String>> = vec![Vec::new(); 4];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.iter().any(|ids| ids.len() < EVENTS) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((index, id)) = frames_rx.recv_timeout(left) else {
            break;
        };
        received[index].push(id);
    }
    let mut ids = stream_ids(&server);
    ids.sort();
    assert_eq!(ids.len(), EVENTS);
    for (index, got) in received.iter_mut().enumerate() {
        got.sort();
        assert_eq!(
            got.len(),
            EVENTS,
            "client {index} ({}) received {} of {EVENTS} within 10 s of the last post\nhost-a:\n{}\nhost-b:\n{}",
            if index % 2 == 0 { "host-a" } else { "host-b" },
            got.len(),
            a.log(),
            b.log()
        );
        assert_eq!(*got, ids);
    }
    for group in ["notifications:host-a", "notifications:host-b"] {
        assert!(
            eventually(Duration::from_secs(5), || server.pending("events", group) == 0),
            "{group} left entries pending"
        );
    }
}

#[test]
fn two_instances_on_defaults_posting_at_once() {
    every_client_sees_every_event_when_posting_starts_after(Duration::ZERO);
}

#[test]
fn two_instances_on_defaults_posting_after_two_seconds() {
    every_client_sees_every_event_when_posting_starts_after(Duration::from_secs(2));
}

#[test]
fn two_instances_on_defaults_posting_after_ten_seconds() {
    every_client_sees_every_event_when_posting_starts_after(Duration::from_secs(10));
}

/// A thousand clients at once, each on its own connection, all get the event.
#[test]
fn a_thousand_clients_all_receive_the_event() {
    use std::io::{Read, Write};
    raise_open_files_limit(4096);
    let server = RedisServer::start();
    let weir = hub(&server, json!({}));
    let address = weir.base.trim_start_matches("http://").to_owned();
    let mut sockets: Vec<std::net::TcpStream> = (0..1000)
        .map(|_| {
            let mut socket = std::net::TcpStream::connect(&address).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            write!(
                socket,
                "GET /v1/notifications/event-stream HTTP/1.1\r\nHost: {address}\r\n\r\n"
            )
            .unwrap();
            socket
        })
        .collect();
    // Every client is subscribed once its response headers arrived.
    for socket in &mut sockets {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    }
    post(&weir, json!({"name": "to all thousand"}));
    for socket in &mut sockets {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("event: to all thousand") {
            let read = socket.read(&mut buffer).unwrap();
            assert!(read > 0, "a client's stream ended");
            seen.extend_from_slice(&buffer[..read]);
        }
    }
    let metrics = client().get(weir.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("weir_sse_clients{path=\"/v1/notifications/event-stream\"} 1000"),
        "{metrics}"
    );
}

/// A thousand sockets here and a thousand in weir (which inherits the limit) need more than
/// the usual soft limit of 1 024 open files; raise it up to the hard limit.
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A real browser: headless Chromium opens an `EventSource` on weir, posts an event to weir's
/// collect path itself, and shows what arrived (scripts/test.sh installs Debian's chromium).
#[test]
fn a_browser_receives_events_through_event_source() {
    let server = RedisServer::start();
    let weir = hub(&server, json!({}));
    let page = weir.dir.path().join("page.html");
    std::fs::write(
        &page,
        format!(
            r#"<!doctype html><html><body><ul id="got"></ul><script>
const base = '{base}';
const source = new EventSource(base + '/v1/notifications/event-stream');
source.addEventListener('open', () => {{
  // text/plain, as sendBeacon sends: no preflight.
  fetch(base + '/collect', {{method: 'POST', headers: {{'content-type': 'text/plain'}},
    body: JSON.stringify({{name: 'browser check', data: {{from: 'chromium'}}}})}});
}});
source.addEventListener('browser check', (event) => {{
  const item = document.createElement('li');
  item.id = 'received';
  item.textContent = event.lastEventId + ' ' + JSON.parse(event.data).data.from;
  document.getElementById('got').appendChild(item);
  source.close();
}});
</script></body></html>"#,
            base = weir.base
        ),
    )
    .unwrap();
    let (dom, stderr) = support::chromium_dump_dom(&page);
    let ids = stream_ids(&server);
    assert_eq!(ids.len(), 1, "the browser's POST reached the stream: {dom}");
    assert!(
        dom.contains(&format!(r#"<li id="received">{} chromium</li>"#, ids[0])),
        "{dom}\n{stderr}"
    );
}
