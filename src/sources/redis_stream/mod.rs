//! `redis_stream`: events read from Redis Streams through a consumer group, reliably — what
//! Optimizely Agent's and Caracal's docs promise and their code does not (Optimizely Agent's
//! `pkg/syncer/redis_streams.go`, Caracal's Go consumers).
//!
//! Per stream: `XGROUP CREATE … MKSTREAM` (BUSYGROUP is fine); first this consumer's own
//! pending entries (id `0`: a restarted consumer with its stable name finds what it held),
//! then new ones (`>`). An entry is XACKed only once every destination delivered it or
//! dead-lettered it into its own sink; one that failed stays pending. A reaper claims entries
//! idle longer than `claimIdle` (XAUTOCLAIM, paging to `0-0`) — another instance's after a
//! crash, or this one's after a failure — and an entry delivered more than `maxDeliveries`
//! times goes to the dead-letter stream (`crate::redis::dead_letters`' format), XACKed only after that XADD
//! succeeded. With verification keys, an entry with a bad or missing `_sig` is dead-lettered
//! as `bad_signature`, never dropped.
//!
//! `mode = "shared"`: one group, competing consumers (work is split). `mode = "broadcast"`:
//! one group per instance, `<group>:<consumer>`, so every instance sees every entry.
//!
//! A stream name with `*`, `?` or `[` is a pattern (Optimizely Agent writes one stream per SDK
//! key, `stream:optimizely-sync-<sdkKey>`): every `scanInterval` a SCAN finds the streams that
//! match it (dead-letter streams, `*.dlq` and `deadLetterStream`, excepted), and each new one
//! gets its consumer. Streams there at the first scan start at `startId`; streams found later
//! were created since, so their groups start at `0` and nothing written before the scan that
//! found them is missed.
//!
//! Two connections per stream. Blocking reads have their own, whose reply timeout outlasts
//! `BLOCK`: Redis answers a read the client has given up on, handing it the entries that
//! arrived meanwhile, so a read that timed out (or failed) means a new connection and the
//! pending list read again, never another read on the old one. Everything else (XACK,
//! claims, dead letters) goes over a connection that reconnects by itself.
//!
//! Files: `settings` (the config), `decode` (an entry into an event), `consumer` (the read
//! loop, delivery and acknowledgements), `reaper` (claims and repeats), `pubsub` (Redis
//! before 5.0).

mod consumer;
mod decode;
mod pubsub;
mod reaper;
mod settings;

use std::sync::Arc;

use redis::RedisResult;
use tokio_util::sync::CancellationToken;

use crate::redis::retryable;
use crate::runtime::Runtime;
pub use decode::decode;
pub use settings::{GroupMode, RedisStreamConfig};

/// Reads one source until `stop`; a task per stream.
pub async fn run(config: RedisStreamConfig, runtime: Arc<Runtime>, stop: CancellationToken) -> std::io::Result<()> {
    let config = Arc::new(config);
    if config.mode == GroupMode::Pubsub || !streams_supported(&config, &stop).await {
        pubsub::run(config, runtime, stop).await;
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    let (patterns, streams): (Vec<String>, Vec<String>) = config
        .streams
        .iter()
        .cloned()
        .partition(|stream| settings::is_pattern(stream));
    for stream in streams.iter().cloned() {
        tasks.spawn(consumer::consume(
            config.clone(),
            stream,
            config.start_id.clone(),
            runtime.clone(),
            stop.clone(),
        ));
    }
    if !patterns.is_empty() {
        let mut known: std::collections::HashSet<String> = streams.into_iter().collect();
        let mut first = true;
        let mut every = tokio::time::interval(config.scan_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => break,
                Some(done) = tasks.join_next() => {
                    done.map_err(std::io::Error::other)?;
                    continue;
                }
            }
            let found = with_retries(&config, &stop, "looking for streams (SCAN)", || {
                discover(&config, &patterns, &known)
            })
            .await;
            let Some(found) = found else { break };
            let start = if first { config.start_id.clone() } else { "0".to_owned() };
            for stream in found {
                if known.insert(stream.clone()) {
                    tracing::info!(source = %config.id, stream = %stream, start = %start, "found a stream matching the pattern");
                    tasks.spawn(consumer::consume(
                        config.clone(),
                        stream,
                        start.clone(),
                        runtime.clone(),
                        stop.clone(),
                    ));
                }
            }
            metrics::gauge!("weir_stream_source_streams", "source" => config.id.clone()).set(known.len() as f64);
            if first {
                tracing::info!(
                    source = %config.id, patterns = ?patterns, streams = known.len(),
                    "first scan done: streams matching the patterns from now on are read from their first entry"
                );
            }
            first = false;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// The streams not `known` yet whose names match `patterns`, dead-letter streams excepted:
/// SCAN with MATCH (any key type: `TYPE` filtering needs Redis 6), then TYPE for each match.
async fn discover(
    config: &RedisStreamConfig,
    patterns: &[String],
    known: &std::collections::HashSet<String>,
) -> RedisResult<Vec<String>> {
    let mut connection = config.connection.connect_first().await?;
    let mut found = Vec::new();
    for pattern in patterns {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            for key in keys {
                let dead_letters = key.ends_with(".dlq") || config.dead_letter_stream.as_deref() == Some(key.as_str());
                if dead_letters || known.contains(&key) || found.contains(&key) {
                    continue;
                }
                let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut connection).await?;
                if kind == "stream" {
                    found.push(key);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(found)
}

/// Whether the server has streams (Redis 5.0): `INFO server`, as Optimizely Agent decides.
async fn streams_supported(config: &RedisStreamConfig, stop: &CancellationToken) -> bool {
    let version = with_retries(config, stop, "reading INFO server", || async {
        let mut connection = config.connection.connect_first().await?;
        crate::redis::info::server_version(&mut connection).await
    })
    .await;
    let Some((version, parsed)) = version else { return true };
    let supported = parsed >= (5, 0);
    if !supported {
        tracing::warn!(
            source = %config.id, version = %version,
            "Redis before 5.0 has no streams: subscribing with Pub/Sub instead, which is fire-and-forget (what is published while weir is not listening is lost)"
        );
    }
    supported
}

/// Retries `attempt` with backoff until it succeeds or `stop`; `None` when stopped.
async fn with_retries<T, F, Fut>(
    config: &RedisStreamConfig,
    stop: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    let mut delay = config.retry_delay;
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                if retryable(&error) {
                    tracing::warn!(source = %config.id, error = %error, retry_in = ?delay, "{what} failed");
                } else {
                    // Waiting will not fix it; an operator will. Keep trying, slowly, loudly.
                    delay = config.max_retry_delay;
                    tracing::error!(source = %config.id, error = %error, retry_in = ?delay, "{what} failed and needs fixing");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return None,
                }
                delay = (delay * 2).min(config.max_retry_delay);
            }
        }
    }
}
