//! `weir streams status`: per stream its length, first and last entry (id and age) and memory;
//! per consumer group its consumers, pending entries, lag, last delivered id and the age of
//! its oldest pending entry; per consumer its pending entries, idle and inactive times. Read
//! from `XINFO`, `XPENDING` and `MEMORY USAGE`; nothing is changed.

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::redis::replies::{as_text, field};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub stream: String,
    pub length: u64,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    /// Milliseconds since the first / last entry was added (from their ids).
    pub first_age_ms: Option<u64>,
    pub last_age_ms: Option<u64>,
    /// `MEMORY USAGE`, when allowed.
    pub memory_bytes: Option<u64>,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub group: String,
    pub consumers: u64,
    pub pending: u64,
    /// Entries not yet delivered to the group (Redis 7; `None` when Redis cannot tell).
    pub lag: Option<u64>,
    pub last_delivered_id: String,
    pub oldest_pending_age_ms: Option<u64>,
    pub consumer_list: Vec<ConsumerStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub consumer: String,
    pub pending: u64,
    /// Since its last attempted interaction.
    pub idle_ms: u64,
    /// Since its last successful interaction (Redis 7.2).
    pub inactive_ms: Option<i64>,
}

fn int(value: Option<&redis::Value>) -> Option<i64> {
    match value? {
        redis::Value::Int(n) => Some(*n),
        other => as_text(other)?.parse().ok(),
    }
}

/// The entry id of an `XINFO STREAM` first/last entry (`[id, fields]`).
fn entry_id(value: Option<&redis::Value>) -> Option<String> {
    match value? {
        redis::Value::Array(entry) => entry.first().and_then(as_text),
        _ => None,
    }
}

/// Milliseconds from an entry id's time to `now_ms`.
fn age(id: Option<&String>, now_ms: u64) -> Option<u64> {
    let millis: u64 = id?.split('-').next()?.parse().ok()?;
    Some(now_ms.saturating_sub(millis))
}

/// Stream keys matching `pattern` (glob), sorted.
pub async fn streams_matching(connection: &mut MultiplexedConnection, pattern: &str) -> RedisResult<Vec<String>> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream")
            .query_async(connection)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The status of every stream matching `pattern`.
pub async fn status(connection: &mut MultiplexedConnection, pattern: &str) -> RedisResult<Vec<StreamStatus>> {
    let now_ms = crate::event::now_ms();
    let mut all = Vec::new();
    for stream in streams_matching(connection, pattern).await? {
        all.push(stream_status(connection, &stream, now_ms).await?);
    }
    Ok(all)
}

async fn stream_status(connection: &mut MultiplexedConnection, stream: &str, now_ms: u64) -> RedisResult<StreamStatus> {
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(connection)
        .await?;
    let first_id = entry_id(field(&info, "first-entry"));
    let last_id = entry_id(field(&info, "last-entry"));
    let memory_bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(stream)
        .query_async(connection)
        .await
        .ok();
    let groups_reply: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(connection)
        .await?;
    let mut groups = Vec::new();
    for reply in &groups_reply {
        let Some(group) = field(reply, "name").and_then(as_text) else {
            continue;
        };
        // XPENDING summary: [count, smallest id, greatest id, [[consumer, count]...]].
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&group)
            .query_async(connection)
            .await?;
        let oldest = match &summary {
            redis::Value::Array(parts) => parts.get(1).and_then(as_text),
            _ => None,
        };
        let consumers: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(&group)
            .query_async(connection)
            .await?;
        let consumer_list = consumers
            .iter()
            .filter_map(|consumer| {
                Some(ConsumerStatus {
                    consumer: field(consumer, "name").and_then(as_text)?,
                    pending: int(field(consumer, "pending")).unwrap_or(0).max(0) as u64,
                    idle_ms: int(field(consumer, "idle")).unwrap_or(0).max(0) as u64,
                    inactive_ms: int(field(consumer, "inactive")),
                })
            })
            .collect();
        groups.push(GroupStatus {
            consumers: int(field(reply, "consumers")).unwrap_or(0).max(0) as u64,
            pending: int(field(reply, "pending")).unwrap_or(0).max(0) as u64,
            lag: int(field(reply, "lag")).and_then(|lag| u64::try_from(lag).ok()),
            last_delivered_id: field(reply, "last-delivered-id").and_then(as_text).unwrap_or_default(),
            oldest_pending_age_ms: age(oldest.as_ref(), now_ms),
            consumer_list,
            group,
        });
    }
    Ok(StreamStatus {
        stream: stream.to_owned(),
        length: int(field(&info, "length")).unwrap_or(0).max(0) as u64,
        first_age_ms: age(first_id.as_ref(), now_ms),
        last_age_ms: age(last_id.as_ref(), now_ms),
        first_id,
        last_id,
        memory_bytes,
        groups,
    })
}

/// `1.2s`, `3m04s`, `2h05m`, `4d03h`.
pub fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// Rows for a table: streams, then their groups indented, then their consumers.
pub fn rows(all: &[StreamStatus]) -> Vec<[String; 6]> {
    let optional = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), duration);
    let mut rows = vec![[
        "STREAM / GROUP / CONSUMER".to_owned(),
        "LENGTH / PENDING".to_owned(),
        "LAG".to_owned(),
        "FIRST / LAST DELIVERED".to_owned(),
        "AGE / IDLE".to_owned(),
        "MEMORY / INACTIVE".to_owned(),
    ]];
    for stream in all {
        rows.push([
            stream.stream.clone(),
            stream.length.to_string(),
            String::new(),
            format!(
                "{} .. {}",
                stream.first_id.as_deref().unwrap_or("-"),
                stream.last_id.as_deref().unwrap_or("-")
            ),
            format!("{} .. {}", optional(stream.first_age_ms), optional(stream.last_age_ms)),
            stream
                .memory_bytes
                .map_or_else(|| "-".to_owned(), |bytes| format!("{:.1} KiB", bytes as f64 / 1024.0)),
        ]);
        for group in &stream.groups {
            rows.push([
                format!("  {} ({} consumers)", group.group, group.consumers),
                group.pending.to_string(),
                group.lag.map_or_else(|| "?".to_owned(), |lag| lag.to_string()),
                group.last_delivered_id.clone(),
                format!("oldest pending {}", optional(group.oldest_pending_age_ms)),
                String::new(),
            ]);
            for consumer in &group.consumer_list {
                rows.push([
                    format!("    {}", consumer.consumer),
                    consumer.pending.to_string(),
                    String::new(),
                    String::new(),
                    format!("idle {}", duration(consumer.idle_ms)),
                    consumer.inactive_ms.map_or_else(
                        || "-".to_owned(),
                        |ms| if ms < 0 { "never".into() } else { duration(ms as u64) },
                    ),
                ]);
            }
        }
    }
    rows
}

/// Plain lines for pipes: one per stream, group and consumer, `key=value` fields.
pub fn plain_lines(all: &[StreamStatus]) -> Vec<String> {
    let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut lines = Vec::new();
    for stream in all {
        lines.push(format!(
            "stream={} length={} first={} last={} first_age_ms={} last_age_ms={} memory_bytes={}",
            stream.stream,
            stream.length,
            stream.first_id.as_deref().unwrap_or("-"),
            stream.last_id.as_deref().unwrap_or("-"),
            number(stream.first_age_ms),
            number(stream.last_age_ms),
            number(stream.memory_bytes)
        ));
        for group in &stream.groups {
            lines.push(format!(
                "stream={} group={} consumers={} pending={} lag={} last_delivered={} oldest_pending_age_ms={}",
                stream.stream,
                group.group,
                group.consumers,
                group.pending,
                number(group.lag),
                group.last_delivered_id,
                number(group.oldest_pending_age_ms)
            ));
            for consumer in &group.consumer_list {
                lines.push(format!(
                    "stream={} group={} consumer={} pending={} idle_ms={} inactive_ms={}",
                    stream.stream,
                    group.group,
                    consumer.consumer,
                    consumer.pending,
                    consumer.idle_ms,
                    consumer.inactive_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string())
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(1234), "1.2s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(356_400_000), "4d03h");
    }
}
