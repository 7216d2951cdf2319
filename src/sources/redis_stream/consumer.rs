//! The read loop of one stream: this consumer's pending entries, then new ones; a few batches
//! delivered while the next is read; each entry acknowledged once every destination has
//! accounted for it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use redis::{RedisResult, Value as Reply};
use tokio_util::sync::CancellationToken;

use super::decode::decode;
use super::settings::RedisStreamConfig;
use super::with_retries;
use crate::delivery::ack::{AckSet, AckWait};
use crate::event::now_ms;
use crate::redis::dead_letters::{Reason, entry_fields};
use crate::redis::replies::{Entry, deleted_ids, entries, last_id};
use crate::redis::retryable;
use crate::runtime::Runtime;

pub(super) struct Consumer {
    pub(super) config: Arc<RedisStreamConfig>,
    pub(super) stream: String,
    pub(super) runtime: Arc<Runtime>,
    /// For XACK, XADD to the dead-letter stream, XAUTOCLAIM, XPENDING: never blocked by a
    /// read, and reconnecting by itself after Redis restarts.
    pub(super) commands: ConnectionManager,
    /// Entries handed to the destinations and not yet acknowledged. Reading the pending list
    /// again (after a reconnect) or claiming skips them: an entry is never delivered twice at
    /// once by this consumer.
    pub(super) in_flight: Mutex<HashSet<String>>,
}

pub(super) async fn consume(
    config: Arc<RedisStreamConfig>,
    stream: String,
    start: String,
    runtime: Arc<Runtime>,
    stop: CancellationToken,
) {
    let connect = || config.connection.connect_managed();
    let Some(commands) = with_retries(&config, &stop, "connecting to Redis", connect).await else {
        return;
    };
    let create = || {
        let mut connection = commands.clone();
        let (stream, group, start) = (stream.clone(), config.group.clone(), start.clone());
        async move {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(&group)
                .arg(&start)
                .arg("MKSTREAM")
                .query_async(&mut connection)
                .await;
            match created {
                Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        }
    };
    if with_retries(&config, &stop, "creating the consumer group", create)
        .await
        .is_none()
    {
        return;
    }
    tracing::info!(source = %config.id, stream = %stream, group = %config.group, consumer = %config.consumer, "reading the stream");
    let consumer = Arc::new(Consumer {
        config: config.clone(),
        stream: stream.clone(),
        runtime,
        commands: commands.clone(),
        in_flight: Mutex::new(HashSet::new()),
    });

    // This consumer's own pending entries first, then new ones; the reaper alongside.
    let reaper = {
        let (consumer, stop) = (consumer.clone(), stop.clone());
        tokio::spawn(async move { consumer.reap(stop).await })
    };
    let watcher = {
        let (consumer, stop) = (consumer.clone(), stop.clone());
        tokio::spawn(async move { consumer.watch_group(stop).await })
    };
    // The next batch is read while earlier ones are delivered: a few batches in flight keep
    // the round trips to Redis and the wait for acknowledgements from adding up.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut delivering = tokio::task::JoinSet::new();
    // Blocking reads have a connection of their own, opened here and dropped after any
    // failed read (see `connect_for_blocking_reads`). Each new connection starts by reading
    // this consumer's own pending entries (cursor `0`; those still being delivered are
    // skipped): a read Redis answered after the old connection stopped listening left its
    // entries there.
    let mut reads = None;
    let mut cursor = "0".to_owned();
    while !stop.is_cancelled() {
        let connection = match reads.as_mut() {
            Some(connection) => connection,
            None => {
                let connect = || config.connection.connect_for_blocking_reads(config.block);
                let Some(connection) = with_retries(&config, &stop, "connecting to Redis", connect).await else {
                    break;
                };
                cursor = "0".to_owned();
                reads.insert(connection)
            }
        };
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&config.group)
            .arg(&config.consumer)
            .arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(config.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&cursor);
        let read = command.query_async::<Reply>(connection);
        let reply = tokio::select! {
            reply = read => reply,
            () = stop.cancelled() => break,
        };
        let (batch, last_id, deleted) = match reply {
            // [[stream, [entries]]], or nil on timeout.
            Ok(Reply::Array(streams)) => match streams.first() {
                Some(Reply::Array(pair)) => pair
                    .get(1)
                    .map(|list| (entries(list), last_id(list), deleted_ids(list)))
                    .unwrap_or_default(),
                _ => Default::default(),
            },
            Ok(_) => Default::default(),
            // The group is gone: Redis lost its data (restarted without persistence), or
            // someone deleted it. Created again as at start (at `startId`), read on.
            Err(error) if error.code() == Some("NOGROUP") => {
                tracing::warn!(
                    source = %config.id, stream = %stream, group = %config.group, start = %start,
                    "the consumer group is gone (Redis lost its data, or it was deleted); creating it again"
                );
                if with_retries(&config, &stop, "creating the consumer group", create)
                    .await
                    .is_none()
                {
                    break;
                }
                cursor = "0".to_owned();
                continue;
            }
            Err(error) => {
                let delay = if retryable(&error) {
                    config.retry_delay
                } else {
                    config.max_retry_delay
                };
                tracing::warn!(source = %config.id, error = %error, retry_in = ?delay, "reading the stream failed; reconnecting");
                reads = None;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };
        if cursor != ">" {
            // Own pending entries are read by id: continue after the last one (one deleted
            // since counts too: a page of those is not the end of the list). A deleted one
            // (trimmed while pending) can never be delivered: acknowledged, so it goes.
            cursor = last_id.unwrap_or_else(|| ">".to_owned());
            if !deleted.is_empty() {
                let ids: Vec<&String> = deleted.iter().collect();
                consumer.ack(&ids).await;
            }
        }
        if !batch.is_empty() {
            // Queued here, in stream order; only the wait for delivery runs alongside.
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if let Some(dispatched) = consumer.dispatch(batch).await {
                let consumer = consumer.clone();
                delivering.spawn(async move {
                    consumer.acknowledge(dispatched).await;
                    drop(permit);
                });
            }
            while delivering.try_join_next().is_some() {}
        }
    }
    // Stopped reading, and no read left open for Redis to hand entries to; what was read is
    // still delivered and acknowledged.
    drop(reads.take());
    while delivering.join_next().await.is_some() {}
    reaper.abort();
    watcher.abort();
}

/// Batches read ahead of their delivery.
const BATCHES_IN_FLIGHT: usize = 4;

/// Tries of one XACK before its entries are left to the reaper.
const ACK_ATTEMPTS: u32 = 5;

impl Consumer {
    /// Verifies, decodes and delivers a batch, then XACKs what every destination accounted
    /// for; dead-letters what cannot be an event.
    pub(super) async fn handle(&self, batch: Vec<Entry>) {
        if let Some(dispatched) = self.dispatch(batch).await {
            self.acknowledge(dispatched).await;
        }
    }

    /// Verifies and decodes a batch and queues its events at the destinations, in stream
    /// order; dead-letters what cannot be an event. The acknowledgements are still to come.
    async fn dispatch(&self, mut batch: Vec<Entry>) -> Option<(Vec<String>, AckWait)> {
        // Taken for this delivery, unless already being delivered (checked and taken at once:
        // the read loop and the reaper both come here).
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.retain(|entry| in_flight.insert(entry.id.clone()));
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut settled = Vec::new();
        for entry in batch {
            if let Some(signer) = &self.config.verify {
                let fields: Vec<(&str, &[u8])> = entry.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                if !signer.verify_entry(&self.stream, &fields) {
                    self.dead_letter(&entry, Reason::BadSignature, 1).await;
                    settled.push(entry.id);
                    continue;
                }
            }
            match decode(&entry, &self.stream, &self.runtime.collector()) {
                Ok(mut event) => {
                    event.set_origin(crate::event::StreamOrigin {
                        stream: self.stream.clone(),
                        id: entry.id.clone(),
                    });
                    events.push((events.len(), Arc::new(event)));
                    ids.push(entry.id);
                }
                Err(reason) => {
                    self.dead_letter(&entry, Reason::Undecodable(reason), 1).await;
                    settled.push(entry.id);
                }
            }
        }
        self.release(&settled);
        if events.is_empty() {
            return None;
        }
        let (acks, wait) = AckSet::new(events.len());
        let mut delay = self.config.retry_delay;
        // A full queue is backpressure: wait and try again, the entries stay pending meanwhile.
        while self.runtime.dispatch(&self.config.id, &events, Some(&acks)).is_err() {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
        metrics::counter!("weir_events_received_total", "source" => self.config.id.clone())
            .increment(events.len() as u64);
        acks.seal();
        Some((ids, wait))
    }

    /// Waits for a dispatched batch's outcomes and XACKs what every destination accounted for.
    async fn acknowledge(&self, (ids, wait): (Vec<String>, AckWait)) {
        let outcomes = wait.outcomes().await;
        let done: Vec<&String> = ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_accounted())
            .map(|(id, _)| id)
            .collect();
        if done.len() < ids.len() {
            tracing::warn!(
                source = %self.config.id, stream = %self.stream, failed = ids.len() - done.len(),
                "entries not delivered stay pending; they are claimed again after claimIdle"
            );
        }
        if !done.is_empty() {
            self.ack(&done).await;
        }
        self.release(&ids);
    }

    /// No longer being delivered (acknowledged, dead-lettered, or left pending).
    fn release(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in ids {
            in_flight.remove(id);
        }
    }

    /// XACK, tried again while the error is one that passes (XACK is idempotent; the
    /// connection reconnects by itself).
    pub(super) async fn ack(&self, ids: &[&String]) {
        let mut delay = self.config.retry_delay;
        for attempt in 1..=ACK_ATTEMPTS {
            let mut connection = self.commands.clone();
            let result: RedisResult<u64> = redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.config.group)
                .arg(ids)
                .query_async(&mut connection)
                .await;
            match result {
                Ok(_) => return,
                Err(error) if attempt < ACK_ATTEMPTS && retryable(&error) => {
                    tracing::debug!(source = %self.config.id, error = %error, "XACK failed; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.max_retry_delay);
                }
                Err(error) => {
                    // Not lost: the entries stay pending and are delivered again after claimIdle.
                    tracing::warn!(source = %self.config.id, error = %error, entries = ids.len(), "XACK failed");
                    return;
                }
            }
        }
    }

    /// Moves an entry to the dead-letter stream, then XACKs it; if the XADD fails it stays
    /// pending (and is tried again after claimIdle).
    pub(super) async fn dead_letter(&self, entry: &Entry, reason: Reason, attempts: u64) {
        let target = self.config.dead_letters(&self.stream);
        let fields = entry_fields(
            &reason.to_string(),
            &entry.id,
            attempts,
            &self.config.consumer,
            now_ms(),
            &entry.fields,
        );
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&target).arg("*");
        for (name, value) in &fields {
            xadd.arg(name).arg(value.as_slice());
        }
        let mut connection = self.commands.clone();
        match xadd.query_async::<String>(&mut connection).await {
            Ok(_) => {
                metrics::counter!("weir_stream_dead_lettered_total", "source" => self.config.id.clone(), "reason" => reason.label()).increment(1);
                tracing::warn!(source = %self.config.id, stream = %self.stream, entry = %entry.id, reason = %reason, dead_letters = %target, "entry dead-lettered");
                self.ack(&[&entry.id]).await;
            }
            Err(error) => tracing::error!(
                source = %self.config.id, entry = %entry.id, error = %error,
                "cannot write the dead letter; the entry stays pending"
            ),
        }
    }
}
