//! Abuse of the HTTP server by real clients against the real binary: slowloris, idle
//! connections past the cap and past the open-files limit, oversized heads, a gigabyte of
//! chunked body, a body that never comes, and thousands of SSE clients that never read.
//! Each test checks that weir answers as documented, counts what it cut off, keeps serving a
//! normal client, and holds its resident memory under a stated bound. They run one at a time:
//! they measure, and they open many sockets.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Weir, client, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// One event, 20 bytes.
const EVENT: &[u8] = br#"{"name":"page view"}"#;

static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An HTTP source with `settings`, into `blackhole`, answered on receipt (the disk is not
/// what these tests measure).
fn flow(settings: Value) -> String {
    toml::to_string(&json!({
        "sources": {"http": {"type": "http", "config": {"ack": "received", "settings": settings}}},
        "destinations": {"out": {"type": "blackhole"}}
    }))
    .unwrap()
}

/// The metric label of weir's HTTP listener.
fn listener(weir: &Weir) -> String {
    format!("listener=\"{}\"", address(weir))
}

fn address(weir: &Weir) -> SocketAddr {
    weir.base.trim_start_matches("http://").parse().unwrap()
}

/// Raises this process's open-files limit to at least `wanted` (root may raise the hard limit).
fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, alive for each call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= wanted {
            return;
        }
        limit.rlim_cur = wanted;
        limit.rlim_max = limit.rlim_max.max(wanted);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "this test opens {wanted} sockets: raise `ulimit -n` to at least that"
        );
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The peak resident memory of a process, sampled every 20 ms until dropped.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                seen.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The sum of metric `name`'s series whose labels contain `label` (empty: all).
fn metric(weir: &Weir, name: &str, label: &str) -> f64 {
    weir.metrics()
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A slowloris client: opens a connection after `delay` and sends a request head one byte a
/// second, never finishing it; when the server closes the connection it counts that in `cut`
/// and opens another, until `until`.
async fn slowloris(address: SocketAddr, delay: Duration, until: Instant, cut: Arc<AtomicUsize>) {
    tokio::time::sleep(delay).await;
    let head = b"POST /collect HTTP/1.1\r\nHost: weir\r\nX-Slow: ";
    let mut buffer = [0u8; 256];
    while Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for sent in 0.. {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
            // Anything read (the end, or an answer) means the server let go of it.
            if tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer))
                .await
                .is_ok()
            {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if Instant::now() >= until {
                return;
            }
        }
    }
}

/// 2 000 slowloris connections sending a header byte a second do not stop a normal client
/// from getting 200s with p99 under 50 ms; each is cut off at `headerTimeout`, counted.
#[test]
fn slowloris_connections_do_not_slow_a_normal_client() {
    let _alone = alone();
    raise_open_files(8192);
    let weir = Weir::start(&flow(json!({"headerTimeout": 4000})));
    let pid = weir.child.id();
    let baseline = rss_bytes(pid);
    let peak = PeakRss::watch(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(7);
    let cut = Arc::new(AtomicUsize::new(0));
    let runtime = runtime();
    let attackers: Vec<_> = (0..2000u64)
        .map(|n| {
            runtime.spawn(slowloris(
                address(&weir),
                Duration::from_micros(n * 500),
                until,
                cut.clone(),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let held = metric(&weir, "weir_http_connections", &listener(&weir));
    let http = client();
    let mut latencies = Vec::new();
    while Instant::now() + Duration::from_millis(500) < until {
        let asked = Instant::now();
        let response = http
            .post(weir.url("/collect"))
            .body(r#"{"name":"page view"}"#)
            .send()
            .unwrap();
        latencies.push(asked.elapsed());
        assert_eq!(response.status(), 200);
        std::thread::sleep(Duration::from_millis(10));
    }
    for attacker in attackers {
        runtime.block_on(attacker).unwrap();
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    let cut_off = metric(&weir, "weir_http_connections_closed_total", "reason=\"header_timeout\"");
    let growth = peak.peak().saturating_sub(baseline);
    eprintln!(
        "slowloris: {} connections open after 1.5 s; {} requests, p50 {:?}, p99 {p99:?}; {} cut off by the server \
         ({cut_off} counted); RSS {} MiB at start, peak +{} KiB",
        held,
        latencies.len(),
        percentile(&latencies, 0.5),
        cut.load(Ordering::Relaxed),
        baseline / MIB,
        growth / 1024
    );
    assert!(held >= 2000.0, "every slowloris connection was admitted: {held}");
    assert!(latencies.len() >= 200, "{}", latencies.len());
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(
        cut.load(Ordering::Relaxed) >= 2000 && cut_off >= 2000.0,
        "each slowloris connection is cut off at headerTimeout: clients saw {}, weir counted {cut_off}\n{}",
        cut.load(Ordering::Relaxed),
        weir.log()
    );
    // A connection in a request holds hyper's read and write buffers (8 KiB each) and its
    // state: under 48 KiB each in a debug build.
    assert!(growth < 2000 * 48 * 1024, "RSS grew by {} KiB", growth / 1024);
}

/// How the server ended a number of idle connections.
#[derive(Debug, Default)]
struct IdleOutcome {
    /// Answered 503 at once: the listener was at its cap.
    refused: usize,
    /// Closed by the server, after this many seconds each.
    closed: Vec<f64>,
    failed: Vec<String>,
}

/// Opens `processes` × `each` connections that send nothing (`tests/support/idle_connections.py`,
/// `per_tick` every 25 ms in each process; one process holds only as many sockets as its
/// open-files limit allows) and waits for each to end.
fn idle_connections(address: SocketAddr, processes: usize, each: usize, per_tick: usize) -> IdleOutcome {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/idle_connections.py");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            std::process::Command::new("python3")
                .arg(script)
                .args([address.to_string(), each.to_string(), per_tick.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcome = IdleOutcome::default();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "the idle-connections helper failed");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        outcome.refused += report["refused"].as_u64().unwrap() as usize;
        outcome.closed.extend(
            report["closed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|after| after.as_f64().unwrap()),
        );
        outcome
            .failed
            .extend(report["failed"].as_array().unwrap().iter().map(|why| why.to_string()));
    }
    outcome
}

/// 20 000 connections that send nothing: the listener holds its `maxConnections` (10 000 by
/// default), answers the rest 503 at once (a normal client too), closes the held ones at
/// `headerTimeout` (10 s by default), counts both, and serves a normal client again
/// afterwards.
#[test]
fn twenty_thousand_idle_connections_meet_the_cap() {
    let _alone = alone();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given, alive for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    assert!(
        limit.rlim_max >= 11_000,
        "weir needs 10 000 connections and 768 files more here, and each helper 10 000: raise `ulimit -Hn` to 11 000 at least (it is {})",
        limit.rlim_max
    );
    let weir = Weir::start(&flow(json!({})));
    let pid = weir.child.id();
    let baseline = rss_bytes(pid);
    let peak = PeakRss::watch(pid);
    let weir_address = address(&weir);
    let opening = std::thread::spawn(move || idle_connections(weir_address, 2, 10_000, 100));
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &weir,
            "weir_http_connections",
            &listener(&weir)
        ) >= 10_000.0),
        "{}",
        weir.log()
    );
    // Once the flood is in (every connection held or refused), a normal client asking at
    // the cap is answered 503. (In the flood itself, past 128 refusals being answered at
    // once, the answer comes before the request, or as a reset.)
    assert!(
        eventually(Duration::from_secs(20), || metric(
            &weir,
            "weir_http_connections_closed_total",
            "reason=\"refused\""
        ) >= 10_000.0),
        "{}",
        weir.log()
    );
    // The flood's own refusals wait up to a second for a request that never comes.
    std::thread::sleep(Duration::from_millis(2500));
    let at_cap = client().post(weir.url("/collect")).body("{}").send();
    let IdleOutcome {
        refused,
        closed,
        failed,
    } = opening.join().unwrap();
    let growth = peak.peak().saturating_sub(baseline);
    let cut_off = metric(&weir, "weir_http_connections_closed_total", "reason=\"header_timeout\"");
    let counted_refused = metric(&weir, "weir_http_connections_closed_total", "reason=\"refused\"");
    eprintln!(
        "idle: {} held, closed after {:.1}..{:.1} s; {refused} refused ({counted_refused} counted); RSS {} MiB at \
         start, peak +{} MiB",
        closed.len(),
        closed.iter().copied().fold(f64::MAX, f64::min),
        closed.iter().copied().fold(0.0, f64::max),
        baseline / MIB,
        growth / MIB
    );
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
    assert_eq!(closed.len(), 10_000, "held up to maxConnections");
    assert_eq!(refused, 10_000, "the rest answered 503");
    let at_cap = at_cap.map(|response| response.status().as_u16());
    assert_eq!(at_cap.as_ref().ok(), Some(&503), "{at_cap:?}");
    assert_eq!(counted_refused, (refused + 1) as f64);
    assert!(cut_off >= 10_000.0, "{cut_off}");
    assert!(
        closed.iter().all(|after| *after >= 9.5),
        "held ones were closed at headerTimeout, not before"
    );
    assert_still_serves(&weir);
    // Until its first byte a connection is a small task and its socket: under 4 KiB each.
    assert!(growth < 10_000 * 4 * 1024, "RSS grew by {} MiB", growth / MIB);
}

/// A process allowed 1 024 open files lowers its listeners' caps to fit and says so: 512 are
/// kept for everything else, the rest shared by the HTTP listener (10 000 asked) and the
/// admin listener (256) in proportion, 499 and 12. A flood of connections is then refused,
/// never met with "too many open files".
#[test]
fn the_cap_is_lowered_to_fit_the_open_files_limit() {
    let _alone = alone();
    let weir = Weir::start_with_open_files(&flow(json!({"headerTimeout": 2000})), 1024);
    assert!(weir.log().contains("maxConnections lowered"), "{}", weir.log());
    let IdleOutcome {
        refused,
        closed,
        failed,
    } = idle_connections(address(&weir), 1, 700, 100);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!((closed.len(), refused), (499, 201));
    assert_still_serves(&weir);
    assert!(!weir.log().contains("Too many open files"), "{}", weir.log());
}

/// A normal client is served: whatever the test did to weir, it keeps serving.
fn assert_still_serves(weir: &Weir) {
    let response = client().post(weir.url("/collect")).body(EVENT).send().unwrap();
    assert_eq!(response.status(), 200, "a normal request after the attack");
}

/// Sends `head` (and `body`) on a new connection and returns the status line of the answer.
fn status_line(address: SocketAddr, head: &[u8], body: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(head).unwrap();
    let _ = stream.write_all(body);
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Heads too large or with too many lines are answered 431, a body that does not come in
/// time 408, an idle keep-alive connection is closed at `keepAliveTimeout`, and a gigabyte
/// sent chunked is refused at the body limit without being read whole.
#[test]
fn oversized_slow_and_idle_requests_are_answered_as_documented() {
    let _alone = alone();
    let weir = Weir::start(&flow(json!({"bodyTimeout": 1000, "keepAliveTimeout": 1000})));
    let at = address(&weir);

    let big = format!(
        "POST /collect HTTP/1.1\r\nHost: weir\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        status_line(at, big.as_bytes(), b""),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many: String = (0..101).map(|n| format!("X-Header-{n}: {n}\r\n")).collect();
    let many = format!("POST /collect HTTP/1.1\r\nHost: weir\r\n{many}\r\n");
    assert_eq!(
        status_line(at, many.as_bytes(), b""),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let fine: String = (0..90).map(|n| format!("X-Header-{n}: {n}\r\n")).collect();
    let fine = format!("POST /collect HTTP/1.1\r\nHost: weir\r\nContent-Length: 20\r\n{fine}\r\n");
    assert_eq!(status_line(at, fine.as_bytes(), EVENT), "HTTP/1.1 200 OK");

    let asked = Instant::now();
    let slow = b"POST /collect HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    assert_eq!(status_line(at, slow, b"{\"name\":"), "HTTP/1.1 408 Request Timeout");
    assert!(asked.elapsed() >= Duration::from_millis(900), "{:?}", asked.elapsed());

    // Keep-alive: one request (with a body, and without), then nothing; the server closes
    // the connection at keepAliveTimeout.
    let with_body = [
        b"POST /collect HTTP/1.1\r\nHost: weir\r\nContent-Length: 20\r\n\r\n".as_slice(),
        EVENT,
    ]
    .concat();
    for request in [with_body.as_slice(), b"GET /healthz HTTP/1.1\r\nHost: weir\r\n\r\n"] {
        let mut stream = TcpStream::connect(at).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = [0u8; 4096];
        let read = stream.read(&mut answer).unwrap();
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        let answered = Instant::now();
        assert_eq!(stream.read(&mut answer).unwrap(), 0, "closed, not answered");
        let idle = answered.elapsed();
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
            "{idle:?}"
        );
    }
    assert!(metric(&weir, "weir_http_connections_closed_total", "reason=\"idle_timeout\"") >= 2.0);

    // A gigabyte, chunked: refused at the 1 MB limit while it is still coming.
    let pid = weir.child.id();
    let baseline = rss_bytes(pid);
    let peak = PeakRss::watch(pid);
    let stream = TcpStream::connect(at).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let chunk = [b'x'; 64 * 1024];
        let mut sent = 0u64;
        let head = b"POST /collect HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if writer.write_all(head).is_err() {
            return sent;
        }
        while sent < 1024 * MIB {
            if writer.write_all(b"10000\r\n").is_err()
                || writer.write_all(&chunk).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let sent = sent.join().unwrap();
    let growth = peak.peak().saturating_sub(baseline);
    eprintln!(
        "chunked: {line:?} after {} KiB sent; RSS peak +{} KiB",
        sent / 1024,
        growth / 1024
    );
    assert_eq!(line.trim_end(), "HTTP/1.1 413 Payload Too Large");
    assert!(sent < 64 * MIB, "the sender was stopped early: {} MiB went", sent / MIB);
    assert!(growth < 16 * MIB, "RSS grew by {} KiB", growth / 1024);
    // And the server is fine.
    assert_still_serves(&weir);
}

/// A stalled SSE client's socket: a small receive buffer and segments, as across the
/// internet, so that the kernel holds little for it and weir sees it stall soon.
async fn stalled_sse_client(address: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let segment: libc::c_int = 1400;
    // SAFETY: setsockopt reads `segment`, alive for the call, on a socket this owns.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut stream = socket.connect(address).await?;
    stream
        .write_all(b"GET /v1/notifications/event-stream HTTP/1.1\r\nHost: weir\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    Ok(stream)
}

/// 5 000 SSE clients that never read: each is cut off once its `clientQueue` is full,
/// counted, and its connection closed; a client that reads gets every event; weir's RSS stays
/// under `clientQueue` × frame size per stalled client.
#[test]
fn sse_clients_that_never_read_are_cut_off_and_counted() {
    let _alone = alone();
    raise_open_files(12_000);
    const STALLED: usize = 5000;
    const QUEUE: u64 = 256;
    let flow = toml::to_string(&json!({
        "sources": {"http": {"type": "http", "config": {"ack": "received", "settings": {"maxBatchSize": 1000}}}},
        "destinations": {"hub": {"type": "sse", "sources": ["http"], "config": {"settings": {"clientQueue": QUEUE}}}}
    }))
    .unwrap();
    let weir = Weir::start(&flow);
    let pid = weir.child.id();
    let runtime = runtime();
    let at = address(&weir);
    let stalled: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut streams = Vec::with_capacity(STALLED);
        for _ in 0..STALLED / 250 {
            let batch: Vec<_> = (0..250).map(|_| tokio::spawn(stalled_sse_client(at))).collect();
            for connecting in batch {
                streams.push(connecting.await.unwrap().unwrap());
            }
        }
        streams
    });
    let mut reader = BufReader::new(
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .get(weir.url("/v1/notifications/event-stream"))
            .send()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(20), || metric(&weir, "weir_sse_clients", "")
            >= (STALLED + 1) as f64),
        "{}",
        weir.log()
    );
    let baseline = rss_bytes(pid);
    let peak = PeakRss::watch(pid);
    let received = Arc::new(AtomicUsize::new(0));
    let counting = received.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
            if line.starts_with("data: ") {
                counting.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
        }
    });
    // Frames of about 1.2 kB, five events a request, until every stalled client is cut off.
    let padding = "x".repeat(1000);
    let http = client();
    let mut posted = 0;
    let dropped = || metric(&weir, "weir_sse_clients_dropped_total", "");
    let started = Instant::now();
    while dropped() < STALLED as f64 && started.elapsed() < Duration::from_secs(90) {
        let events: Vec<Value> = (0..5)
            .map(|n| json!({"name": "bulk event", "data": {"n": posted + n, "pad": padding}}))
            .collect();
        assert_eq!(
            http.post(weir.url("/collect")).json(&events).send().unwrap().status(),
            200
        );
        posted += 5;
        std::thread::sleep(Duration::from_millis(10));
    }
    let growth = peak.peak().saturating_sub(baseline);
    let frame = 1200;
    eprintln!(
        "sse: {posted} events posted; {} stalled clients cut off in {:?}; RSS {} MiB with them connected, peak +{} \
         MiB (bound {} MiB)",
        dropped(),
        started.elapsed(),
        baseline / MIB,
        growth / MIB,
        STALLED as u64 * QUEUE * frame / MIB
    );
    assert_eq!(dropped(), STALLED as f64, "{}", weir.log());
    assert!(
        eventually(Duration::from_secs(10), || received.load(Ordering::Relaxed) == posted),
        "the reading client got every event: {} of {posted}",
        received.load(Ordering::Relaxed)
    );
    // Cut off means closed: the connections of the last ones cut off are being dropped as
    // the reader finishes (5 000 tasks to wake), so within a bound, not at once.
    assert!(
        eventually(Duration::from_secs(10), || metric(&weir, "weir_sse_clients", "") == 1.0),
        "only the reader is left: {} clients",
        metric(&weir, "weir_sse_clients", "")
    );
    assert!(
        growth < STALLED as u64 * QUEUE * frame,
        "RSS grew by {} MiB",
        growth / MIB
    );
    // In fact far less: the queued frames are shared with the hub's ring, so what a stalled
    // client holds of its own is one coalesced write (at most 16 KiB) and hyper's buffers.
    assert!(growth < STALLED as u64 * 48 * 1024, "RSS grew by {} MiB", growth / MIB);
    // Their connections are closed: reading drains what the kernel held, then ends.
    let ended = runtime.block_on(async {
        let mut ended = 0;
        for mut stream in stalled {
            let mut buffer = vec![0u8; 64 * 1024];
            let finished = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            ended += usize::from(finished.is_ok());
        }
        ended
    });
    assert_eq!(ended, STALLED, "every stalled connection was closed by weir");
    assert!(
        metric(&weir, "weir_http_connections", "") <= 3.0,
        "{}",
        metric(&weir, "weir_http_connections", "")
    );
}
