//! The reaper: every `claimIdle` it claims entries idle that long (XAUTOCLAIM, paging to
//! `0-0`) — another instance's after a crash, or this consumer's after a failure — and
//! dead-letters those delivered more than `maxDeliveries` times; the rest are delivered
//! again.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, RedisResult, Value as Reply};
use tokio_util::sync::CancellationToken;

use super::consumer::Consumer;
use crate::redis::dead_letters::Reason;
use crate::redis::replies::{Entry, as_text, entries, field};

impl Consumer {
    /// Every `claimIdle`: claims entries idle that long (XAUTOCLAIM, paging to `0-0`);
    /// dead-letters those delivered more than `maxDeliveries` times, delivers the rest.
    pub(super) async fn reap(&self, stop: CancellationToken) {
        let idle = self.config.claim_idle.as_millis() as u64;
        let period = self
            .config
            .claim_idle
            .min(Duration::from_secs(30))
            .max(Duration::from_millis(50));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = stop.cancelled() => return,
            }
            let mut start = "0-0".to_owned();
            loop {
                let mut connection = self.commands.clone();
                let reply: RedisResult<Reply> = redis::cmd("XAUTOCLAIM")
                    .arg(&self.stream)
                    .arg(&self.config.group)
                    .arg(&self.config.consumer)
                    .arg(idle)
                    .arg(&start)
                    .arg("COUNT")
                    .arg(100)
                    .query_async(&mut connection)
                    .await;
                let (next, claimed) = match reply {
                    Ok(Reply::Array(parts)) if parts.len() >= 2 => (
                        parts.first().and_then(as_text).unwrap_or_else(|| "0-0".into()),
                        entries(&parts[1]),
                    ),
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(source = %self.config.id, error = %error, "XAUTOCLAIM failed");
                        break;
                    }
                };
                if !claimed.is_empty() {
                    self.handle_claimed(claimed).await;
                }
                if next == "0-0" || stop.is_cancelled() {
                    break;
                }
                start = next;
            }
        }
    }

    async fn handle_claimed(&self, mut claimed: Vec<Entry>) {
        // This consumer's own entries still being delivered are claimed too once idle that
        // long: they are not handed out again (nor dead-lettered) meanwhile.
        {
            let in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            claimed.retain(|entry| !in_flight.contains(&entry.id));
        }
        if claimed.is_empty() {
            return;
        }
        let counts = self.delivery_counts(&claimed).await.unwrap_or_default();
        let mut again = Vec::new();
        for entry in claimed {
            let delivered = counts.iter().find(|(id, _)| *id == entry.id).map_or(1, |(_, n)| *n);
            if delivered > self.config.max_deliveries {
                self.dead_letter(&entry, Reason::MaxDeliveries, delivered).await;
            } else {
                again.push(entry);
            }
        }
        if !again.is_empty() {
            tracing::info!(source = %self.config.id, stream = %self.stream, entries = again.len(), "claimed idle entries");
            self.handle(again).await;
        }
    }

    /// Times each entry was delivered: one XPENDING (extended form) for the page, over the
    /// ids from its first to its last entry and this consumer only (the claim made them its);
    /// an entry that reply left out (this consumer holds others in that range) is asked for on
    /// its own.
    async fn delivery_counts(&self, entries: &[Entry]) -> Result<Vec<(String, u64)>, RedisError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let mut connection = self.commands.clone();
        let mut counts = self
            .pending_counts(&mut connection, &first.id, &last.id, entries.len())
            .await?;
        for entry in entries {
            if !counts.iter().any(|(id, _)| *id == entry.id) {
                counts.extend(self.pending_counts(&mut connection, &entry.id, &entry.id, 1).await?);
            }
        }
        Ok(counts)
    }

    /// XPENDING of this consumer's entries from `start` to `end`, `count` at most.
    async fn pending_counts(
        &self,
        connection: &mut ConnectionManager,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<(String, u64)>, RedisError> {
        let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.config.group)
            .arg(start)
            .arg(end)
            .arg(count)
            .arg(&self.config.consumer)
            .query_async(connection)
            .await?;
        Ok(reply.into_iter().map(|(id, _, _, delivered)| (id, delivered)).collect())
    }
}

/// How often the group's lag and pending count are read for the status page and `/metrics`.
const GROUP_WATCH_PERIOD: Duration = Duration::from_secs(5);

impl Consumer {
    /// Every few seconds: the group's lag (entries not yet read by it; Redis 7+) and pending
    /// count (read, not yet acknowledged), as `weir_stream_group_lag` and
    /// `weir_stream_group_pending` gauges per source and stream.
    pub(super) async fn watch_group(&self, stop: CancellationToken) {
        let labels = [("source", self.config.id.clone()), ("stream", self.stream.clone())];
        let lag = metrics::gauge!("weir_stream_group_lag", &labels);
        let pending = metrics::gauge!("weir_stream_group_pending", &labels);
        loop {
            let mut connection = self.commands.clone();
            let reply: RedisResult<Reply> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&self.stream)
                .query_async(&mut connection)
                .await;
            if let Ok(Reply::Array(groups)) = reply {
                let ours = groups
                    .iter()
                    .find(|group| field(group, "name").and_then(as_text).as_deref() == Some(&self.config.group));
                let number = |group: &Reply, name: &str| field(group, name).and_then(as_text)?.parse::<f64>().ok();
                if let Some(group) = ours {
                    // `lag` is nil when Redis cannot tell (entries deleted since): left as it was.
                    if let Some(value) = number(group, "lag") {
                        lag.set(value);
                    }
                    if let Some(value) = number(group, "pending") {
                        pending.set(value);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(GROUP_WATCH_PERIOD) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
