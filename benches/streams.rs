//! Reading Redis Streams back: consumer throughput against a minimal XREADGROUP + XACK loop,
//! and XADD → SSE latency with many clients. bench/streams.py runs both against a private
//! redis-server and prints the tables for BENCHMARKS.md.
//!
//! `cargo bench --bench streams -- throughput --url URL --entries N`
//!   Fills a stream with N copies of weir's stored benchmark event, then reads it through a
//!   fresh group twice: with the minimal loop (same redis-rs client, XREADGROUP COUNT 100,
//!   XACK of each batch) and with weir's `redis_stream` source (batchSize 100) into the
//!   `blackhole` destination — decode, enrich, dispatch, acknowledgement, XACK. One JSON line.
//!
//! `cargo bench --bench streams -- latency --url URL --sse URL --clients C --rate R --seconds S`
//!   Opens C SSE connections to a running weir (`redis_stream` → `sse`), XADDs R events per
//!   second for S seconds, each carrying its send time, and measures send → frame received
//!   on 50 of the clients, spread evenly over the connection order so that neither the first
//!   nor the last served stand for all (every client gets every frame). One JSON line with p50/p99/max.
//!   `--pid PID` adds the server's share of the cores over the same time.
//!   With `--gap MS` instead of a rate: one event every MS milliseconds (after MS of quiet
//!   first), `--seconds` of them — how soon an entry arrives after the stream sat idle longer
//!   than the source's `block`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::assembly::build_flow;
use weir::delivery::worker::Lifecycle;
use weir::delivery::worker::spawn_workers;
use weir::sources::SourceConfig;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> u64 {
    argument(name).and_then(|n| n.parse().ok()).unwrap_or(default)
}

const EVENT: &str = r#"{"name":"page view","data":{"title":"Everyday Ruck Snack – product page","url":"https://shop.example/products/everyday-ruck-snack?color=black","n":1},"context":{"shopping":["detail",0]},"globals":{"pagegroup":"shop","lang":"en"},"user":{"id":"us3r","device":"c00k13","session":"s3ss10n"},"consent":{"functional":true,"marketing":true},"trigger":"load"}"#;

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn fill(redis: &mut MultiplexedConnection, stream: &str, entries: u64) {
    let _: () = redis::cmd("DEL").arg(stream).query_async(redis).await.unwrap();
    let mut left = entries;
    while left > 0 {
        let chunk = left.min(1000);
        let mut pipeline = redis::pipe();
        for _ in 0..chunk {
            pipeline
                .cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("event")
                .arg(EVENT)
                .ignore();
        }
        let _: () = pipeline.query_async(redis).await.unwrap();
        left -= chunk;
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("bench")
        .arg("0")
        .query_async(redis)
        .await
        .unwrap();
}

/// The reference: read 100 at a time, XACK each batch.
async fn minimal_loop(url: &str, stream: &str, entries: u64) -> f64 {
    let mut redis = connect(url).await;
    fill(&mut redis, stream, entries).await;
    let started = Instant::now();
    let mut read = 0u64;
    while read < entries {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("bench")
            .arg("minimal")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut redis)
            .await
            .unwrap();
        let ids: Vec<String> = reply
            .keys
            .iter()
            .flat_map(|key| key.ids.iter().map(|entry| entry.id.clone()))
            .collect();
        read += ids.len() as u64;
        let _: u64 = redis::cmd("XACK")
            .arg(stream)
            .arg("bench")
            .arg(&ids)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    entries as f64 / started.elapsed().as_secs_f64()
}

/// weir's stream source into `blackhole`, until everything is read and acknowledged.
async fn weir_source(url: &str, stream: &str, entries: u64) -> f64 {
    let mut redis = connect(url).await;
    fill(&mut redis, stream, entries).await;
    let flow = json!({
        "sources": {"bench": {"type": "redis_stream", "config": {"settings": {
            "url": url, "stream": stream, "group": "bench", "consumer": "weir", "batchSize": 100, "block": 100}}}},
        "destinations": {"sink": {"type": "blackhole", "config": {"queueMax": 100000}}}
    });
    let flow = weir::config::parse_flow(flow, None, &|_| None).expect("the flow parses");
    let built = build_flow(&flow).expect("the flow is valid");
    let lifecycle = Lifecycle::default();
    let mut workers = spawn_workers(built.workers, &lifecycle);
    let stop = tokio_util::sync::CancellationToken::new();
    let Some(SourceConfig::RedisStream(source)) = built.sources.into_iter().next() else {
        panic!("the flow has a stream source")
    };
    let started = Instant::now();
    let reader = tokio::spawn(weir::sources::redis_stream::run(
        source,
        built.runtime.clone(),
        stop.clone(),
    ));
    loop {
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut redis)
            .await
            .unwrap();
        let field = |name: &str| weir::redis::replies::field(&groups[0], name).and_then(weir::redis::replies::as_text);
        let pending: u64 = field("pending").and_then(|p| p.parse().ok()).unwrap_or(u64::MAX);
        let lag: u64 = field("lag").and_then(|p| p.parse().ok()).unwrap_or(u64::MAX);
        if pending == 0 && lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = entries as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = reader.await;
    lifecycle.drain.cancel();
    while workers.join_next().await.is_some() {}
    rate
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// One SSE client: reads frames, and when `samples` is given records send → receive in µs.
async fn client(
    address: String,
    path: String,
    samples: Option<Arc<std::sync::Mutex<Vec<u64>>>>,
    ready: Arc<tokio::sync::Barrier>,
) {
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let mut subscribed = false;
    let marker = b"\"sent\":";
    loop {
        let read = match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let received = now_ns();
        pending.extend_from_slice(&buffer[..read]);
        if !subscribed && pending.windows(4).any(|w| w == b"\r\n\r\n") {
            subscribed = true;
            ready.wait().await;
        }
        let Some(samples) = &samples else {
            pending.clear();
            continue;
        };
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(offset) = memchr::memmem::find(&pending[at..], marker) {
            let start = at + offset + marker.len();
            let end = pending[start..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map(|e| start + e);
            let Some(end) = end else { break };
            if let Ok(sent) = std::str::from_utf8(&pending[start..end]).unwrap().parse::<u128>() {
                found.push(((received.saturating_sub(sent)) / 1000) as u64);
            }
            at = end;
        }
        pending.drain(..at);
        samples.lock().unwrap().extend(found);
    }
}

/// How the latency run sends: `rate` events/s for `seconds`, or `count` single events `gap`
/// apart.
enum Load {
    Rate { rate: u64, seconds: u64 },
    Gaps { gap: Duration, count: u64 },
}

fn tick_event() -> String {
    format!(r#"{{"name":"bench tick","data":{{"sent":{}}}}}"#, now_ns())
}

async fn latency(url: &str, sse: &str, clients: u64, load: Load) -> serde_json::Value {
    let address = sse.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let path = format!(
        "/{}",
        sse.trim_start_matches("http://").split_once('/').map_or("", |(_, p)| p)
    );
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ready = Arc::new(tokio::sync::Barrier::new(clients as usize + 1));
    let mut tasks = Vec::new();
    // 50 clients spread evenly over the spawn (and so connection) order measure: a fan-out
    // serves clients in some order, and the first 50 would see only its start.
    let measured = clients.min(50);
    let sampled_indices: std::collections::HashSet<u64> = (0..measured).map(|i| i * clients / measured).collect();
    for index in 0..clients {
        let sampled = sampled_indices.contains(&index).then(|| samples.clone());
        tasks.push(tokio::spawn(client(
            address.clone(),
            path.clone(),
            sampled,
            ready.clone(),
        )));
    }
    ready.wait().await;
    let mut redis = connect(url).await;
    let server = argument("--pid");
    let server_cpu = || server.as_deref().map_or(0.0, cpu_seconds);
    let (cpu_before, server_before, load_started) = (cpu_seconds("self"), server_cpu(), Instant::now());
    let (total, shown) = match load {
        Load::Rate { rate, seconds } => {
            let total = rate * seconds;
            let started = Instant::now();
            let tick = Duration::from_millis(10);
            let per_tick = (rate / 100).max(1);
            let mut sent = 0;
            while sent < total {
                let mut pipeline = redis::pipe();
                for _ in 0..per_tick.min(total - sent) {
                    pipeline
                        .cmd("XADD")
                        .arg("ticks")
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(100_000)
                        .arg("*")
                        .arg("event")
                        .arg(tick_event())
                        .ignore();
                    sent += 1;
                }
                let _: () = pipeline.query_async(&mut redis).await.unwrap();
                let due = started + tick * (sent / per_tick) as u32;
                tokio::time::sleep_until(due.into()).await;
            }
            (total, json!({"rate": rate, "seconds": seconds}))
        }
        Load::Gaps { gap, count } => {
            for _ in 0..count {
                tokio::time::sleep(gap).await;
                let _: String = redis::cmd("XADD")
                    .arg("ticks")
                    .arg("*")
                    .arg("event")
                    .arg(tick_event())
                    .query_async(&mut redis)
                    .await
                    .unwrap();
            }
            (count, json!({"gap_ms": gap.as_millis() as u64, "count": count}))
        }
    };
    let expected = total * measured;
    // Wait for every sample, or until none has come for a second (frames lost to a cut-off
    // never come). The CPU window ends when the last one came, so waiting does not dilute it.
    let (mut seen, mut last_growth) = (0, Instant::now());
    let (mut cpu_end, mut server_end) = (cpu_seconds("self"), server_cpu());
    loop {
        let count = samples.lock().unwrap().len() as u64;
        if count > seen {
            (seen, last_growth) = (count, Instant::now());
            (cpu_end, server_end) = (cpu_seconds("self"), server_cpu());
        }
        if count >= expected || last_growth.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = last_growth.duration_since(load_started).as_secs_f64().max(1e-3);
    let (cores, server_cores) = ((cpu_end - cpu_before) / elapsed, (server_end - server_before) / elapsed);
    let mut all = std::mem::take(&mut *samples.lock().unwrap());
    for task in tasks {
        task.abort();
    }
    all.sort_unstable();
    let quantile = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    json!({
        "clients": clients, "load": shown,
        "samples": all.len(), "expected": expected,
        "p50_ms": quantile(0.50) as f64 / 1000.0, "p99_ms": quantile(0.99) as f64 / 1000.0,
        "max_ms": all.last().copied().unwrap_or(0) as f64 / 1000.0,
        "load_generator_cores": cores, "server_cores": server_cores,
    })
}

/// User + system CPU a process (`self` or a pid) has taken (`/proc/…/stat`): the load
/// generator shares the machine with the server it measures. 0 when it is gone.
fn cpu_seconds(process: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{process}/stat")) else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime: fields 14 and 15 of the line, 11 and 12 counted from 0 after the name.
    (ticks(11) + ticks(12)) / per_second
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let url = argument("--url").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        weir::telemetry::prometheus();
        match mode.as_str() {
            "throughput" => {
                let entries = number("--entries", 200_000);
                let minimal = minimal_loop(&url, "bench:minimal", entries).await;
                let weir = weir_source(&url, "bench:weir", entries).await;
                println!(
                    "{}",
                    json!({"entries": entries, "minimal_per_second": minimal, "weir_per_second": weir})
                );
            }
            "latency" => {
                let sse = argument("--sse").expect("--sse URL");
                let load = match argument("--gap") {
                    Some(_) => Load::Gaps {
                        gap: Duration::from_millis(number("--gap", 3000)),
                        count: number("--seconds", 5),
                    },
                    None => Load::Rate {
                        rate: number("--rate", 10_000),
                        seconds: number("--seconds", 5),
                    },
                };
                let result = latency(&url, &sse, number("--clients", 1000), load).await;
                println!("{result}");
            }
            // `cargo bench` runs every bench target with `--bench`: nothing to do then.
            _ => eprintln!("usage: streams throughput|latency --url URL …"),
        }
    });
}
