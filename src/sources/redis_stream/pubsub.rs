//! Redis before 5.0 has no streams: SUBSCRIBE to channels named like the streams instead,
//! fire-and-forget (chosen by itself then, or by `mode = "pubsub"`). A stream pattern
//! (`events:*`) is a PSUBSCRIBE; Optimizely Agent's streams (`stream:optimizely-sync-…`) map
//! to the channels Agent publishes to without streams (`optimizely-sync-…`), whose messages
//! are Agent's notification payloads.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::decode::decode;
use super::settings::{RedisStreamConfig, is_pattern};
use super::with_retries;
use crate::redis::optimizely;
use crate::redis::replies::Entry;
use crate::runtime::Runtime;

/// Pub/Sub: SUBSCRIBE to channels named like the streams and hand each message on, with no
/// acknowledgement to wait for (there is no one to tell). Resubscribes after a lost connection.
pub(super) async fn run(config: Arc<RedisStreamConfig>, runtime: Arc<Runtime>, stop: CancellationToken) {
    use futures_util::StreamExt;
    let channels: Vec<&str> = config
        .streams
        .iter()
        .map(|stream| optimizely::channel_for(stream))
        .collect();
    tracing::info!(source = %config.id, channels = ?channels, "subscribing (Pub/Sub: fire-and-forget)");
    while !stop.is_cancelled() {
        let subscribed = with_retries(&config, &stop, "subscribing", || async {
            let client = config.connection.client(&config.connection.nodes[0])?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in &channels {
                if is_pattern(channel) {
                    pubsub.psubscribe(*channel).await?;
                } else {
                    pubsub.subscribe(*channel).await?;
                }
            }
            Ok(pubsub)
        })
        .await;
        let Some(pubsub) = subscribed else { return };
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = stop.cancelled() => return,
            };
            let Some(message) = message else {
                tracing::warn!(source = %config.id, "Pub/Sub connection lost; subscribing again");
                break;
            };
            let channel = message.get_channel_name();
            // Agent publishes its payload alone; weir's and walkerOS's publishers the event.
            let field = if optimizely::sdk_key_of(channel).is_some() {
                "data"
            } else {
                "event"
            };
            let entry = Entry {
                id: String::new(),
                fields: vec![(field.to_owned(), message.get_payload_bytes().to_vec())],
            };
            match decode(&entry, channel, &runtime.collector()) {
                Ok(event) => {
                    let events = [(0, Arc::new(event))];
                    if runtime.dispatch(&config.id, &events, None).is_ok() {
                        metrics::counter!("weir_events_received_total", "source" => config.id.clone()).increment(1);
                    } else {
                        metrics::counter!("weir_pubsub_dropped_total", "source" => config.id.clone()).increment(1);
                        tracing::warn!(source = %config.id, "queues full: a Pub/Sub message is dropped (Pub/Sub cannot wait)");
                    }
                }
                Err(reason) => {
                    metrics::counter!("weir_pubsub_dropped_total", "source" => config.id.clone()).increment(1);
                    tracing::warn!(source = %config.id, channel = %channel, reason, "undecodable Pub/Sub message dropped");
                }
            }
        }
    }
}
