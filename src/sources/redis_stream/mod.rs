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
pub use settings::{GroupMode, RedisStreamConfig};

/// Reads one source until `stop`; a task per stream.
pub async fn run(config: RedisStreamConfig, runtime: Arc<Runtime>, stop: CancellationToken) -> std::io::Result<()> {
    let config = Arc::new(config);
    if config.mode == GroupMode::Pubsub || !streams_supported(&config, &stop).await {
        pubsub::run(config, runtime, stop).await;
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for stream in config.streams.clone() {
        tasks.spawn(consumer::consume(config.clone(), stream, runtime.clone(), stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)?;
    }
    Ok(())
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
