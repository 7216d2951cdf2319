//! The journal's group commit on a real disk: `appenders` tasks each append `records`
//! records of `size` bytes per call, as fast as answers come, for `seconds`. bench/journal.py
//! runs it beside `fio --fdatasync=1` at the same write size and prints the ratio.
//!
//! `cargo bench --bench journal -- --dir DIR --appenders 64 --records 1 --size 600 --seconds 10`
//! One JSON line: appends and records per second, groups (write + fdatasync) per second, the
//! mean bytes per group write, and append latency p50/p99 in ms. Without `--dir` (as `cargo
//! test --all-targets` runs it): one second in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir::journal::storage::Disk;
use weir::journal::{Journal, JournalConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> u64 {
    argument(name).map_or(default, |value| value.parse().expect("a number"))
}

fn main() {
    let scratch = std::env::temp_dir().join(format!("weir-journal-bench-{}", std::process::id()));
    let (dir, smoke) = match argument("--dir") {
        Some(dir) => (std::path::PathBuf::from(dir), false),
        None => (scratch.clone(), true),
    };
    let appenders = number("--appenders", 64) as usize;
    let records = number("--records", 1) as usize;
    let size = number("--size", 600) as usize;
    let seconds = if smoke { 1 } else { number("--seconds", 10) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let disk = Disk::open(&dir).expect("the directory opens");
    let config = JournalConfig {
        max_bytes: 64 << 30,
        ..JournalConfig::default()
    };
    let (journal, _) = Journal::<()>::open(Arc::new(disk), config).expect("the journal opens");
    let journal = Arc::new(journal);
    let payload = Bytes::from(vec![b'x'; size]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut latencies: Vec<f64> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let (journal, payload) = (journal.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let items = (0..records).map(|_| (payload.clone(), Arc::new(()))).collect();
                    let sent = Instant::now();
                    journal.append(items).await.expect("the append succeeds");
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (commits, written) = journal.commits();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let appends = latencies.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "appenders": appenders, "records": records, "size": size,
            "appends_per_s": appends / elapsed,
            "records_per_s": appends * records as f64 / elapsed,
            "commits_per_s": commits as f64 / elapsed,
            "bytes_per_commit": written as f64 / commits.max(1) as f64,
            "p50_ms": at(0.5), "p99_ms": at(0.99),
        })
    );
    journal.close();
    if smoke {
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
