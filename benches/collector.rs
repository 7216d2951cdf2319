//! Events per second from weir's collector into a destination, in-process: partial event →
//! enrichment → mapping → render → delivery machinery → destination, acknowledged. No HTTP.
//!
//! `cargo bench --bench collector -- --flow FLOW.toml [--events N] [--producers P]`
//! The flow's first destination is measured; events come from two producer tasks, in chunks
//! of 500 with up to 32 chunks awaiting their acknowledgements. Prints one JSON line:
//! `{"events": N, "seconds": s, "events_per_second": r, "peak_rss_mib": m}`.
//! bench/redis.py runs it against redis-server next to redis-benchmark.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use weir::assembly::build_flow;
use weir::delivery::ack::AckSet;
use weir::delivery::worker::Lifecycle;
use weir::delivery::worker::spawn_workers;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHUNK: usize = 500;
/// Distinct input texts per producer.
const TEXT_POOL: usize = 4096;

fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The event every producer sends (with its own `data.n`): about 600 bytes once enriched.
pub fn template() -> Value {
    json!({
        "name": "page view",
        "data": {"title": "Everyday Ruck Snack – product page", "url": "https://shop.example/products/everyday-ruck-snack?color=black", "referrer": "https://search.example/?q=ruck+snack", "n": 0},
        "context": {"shopping": ["detail", 0]},
        "globals": {"pagegroup": "shop", "lang": "en"},
        "user": {"id": "us3r", "device": "c00k13", "session": "s3ss10n"},
        "consent": {"functional": true, "marketing": true},
        "trigger": "load",
        "source": {"type": "browser", "platform": "web", "url": "https://shop.example/"}
    })
}

fn main() {
    // `cargo bench` passes `--bench`; ignore it.
    let Some(flow_path) = argument("--flow") else {
        if std::env::args().any(|a| a == "--print-template") {
            println!("{}", template());
        } else {
            eprintln!("usage: collector --flow FLOW.toml [--events N] [--producers P]");
        }
        return;
    };
    let events: usize = argument("--events").and_then(|n| n.parse().ok()).unwrap_or(500_000);
    let producers: usize = argument("--producers").and_then(|n| n.parse().ok()).unwrap_or(2);
    let flow = weir::config::load_flow(std::path::Path::new(&flow_path), None).expect("the flow loads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        weir::telemetry::prometheus();
        let built = build_flow(&flow).expect("the flow is valid");
        let lifecycle = Lifecycle::default();
        let mut workers = spawn_workers(built.workers, &lifecycle);
        let flow_runtime = built.runtime;
        while flow_runtime.readiness().is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let in_flight = Arc::new(Semaphore::new(argument("--in-flight").and_then(|n| n.parse().ok()).unwrap_or(8)));
        let ready = Arc::new(tokio::sync::Barrier::new(producers + 1));
        let mut tasks = tokio::task::JoinSet::new();
        let per_producer = events / producers / CHUNK;
        for producer in 0..producers {
            let (flow_runtime, in_flight, ready) = (flow_runtime.clone(), in_flight.clone(), ready.clone());
            tasks.spawn(async move {
                let template = template().to_string();
                // The template with `"n":0` replaced per event, as a client would send it. The
                // texts are made before the clock starts, as redis-benchmark makes its payload
                // once: what is timed is weir's work, not the load generator's. Weir gives every
                // event its own id, so a pool of distinct texts reused in turn is enough.
                let (before, after) = template.split_once("\"n\":0").expect("the template has n");
                let texts: Vec<String> = (0..TEXT_POOL)
                    .map(|n| format!("{before}\"n\":{}{after}", producer * TEXT_POOL + n))
                    .collect();
                ready.wait().await;
                let mut waits = tokio::task::JoinSet::new();
                for chunk in 0..per_producer {
                    let permit = in_flight.clone().acquire_owned().await.unwrap();
                    let batch: Vec<(usize, Arc<weir::event::Event>)> = (0..CHUNK)
                        .map(|i| {
                            let text = &texts[(chunk * CHUNK + i) % TEXT_POOL];
                            (i, Arc::new(flow_runtime.collector().enrich_json(text).unwrap()))
                        })
                        .collect();
                    let (acks, wait) = AckSet::new(CHUNK);
                    loop {
                        match flow_runtime.dispatch("http", &batch, Some(&acks)) {
                            Ok(()) => break,
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                    acks.seal();
                    waits.spawn(async move {
                        let outcomes = wait.outcomes().await;
                        drop(permit);
                        outcomes.iter().filter(|o| !o.is_ok()).count()
                    });
                }
                let mut failed = 0;
                while let Some(count) = waits.join_next().await {
                    failed += count.unwrap();
                }
                failed
            });
        }
        ready.wait().await;
        let started = Instant::now();
        let mut failed = 0;
        while let Some(count) = tasks.join_next().await {
            failed += count.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let sent = per_producer * producers * CHUNK;
        assert_eq!(failed, 0, "{failed} events were not delivered");
        println!(
            "{}",
            json!({"events": sent, "seconds": seconds, "events_per_second": sent as f64 / seconds, "peak_rss_mib": peak_rss_mib()})
        );
        lifecycle.drain.cancel();
        while workers.join_next().await.is_some() {}
    });
}
