//! A journaled destination's feed: reads the journal through the destination's cursor, maps
//! and renders each event, and queues it for the worker, waiting for room rather than
//! refusing (the journal is the buffer; the queue only bounds what is in memory).
//!
//! Each queued event's token stands for its journal record: delivered or dead-lettered, the
//! cursor may pass it; an event the destination does not take (another source, a rule's
//! `ignore`, consent) is passed at once. A request waiting for delivery (`ack = "delivered"`)
//! left its tokens in the [`Journaled`] entry; the feed picks its own up, so the answer
//! comes from the same outcome that moves the cursor.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::Destination;
use super::ack::{AckToken, Delivery};
use super::route::{Pipeline, Route, Tokens};
use super::worker::Lifecycle;
use crate::collector::Collector;
use crate::event::{Event, Ingest};
use crate::journal::{Body, Consumer, CursorHandle};

/// Marks a record's ingest section (an event's JSON starts with `{`, never with it).
const INGEST_TAG: u8 = 1;

/// The tokens of a request waiting for an event's delivery, by destination id.
type Waiting = Mutex<Vec<(Arc<str>, AckToken)>>;

/// An event as the journal keeps it: its source and the event, plus (in memory only) the
/// tokens of a request waiting for its delivery.
pub struct Journaled {
    pub source: Arc<str>,
    pub event: Arc<Event>,
    /// Only this destination takes it (a dead letter replayed for the destination that
    /// dead-lettered it), whatever its source.
    pub target: Option<Arc<str>>,
    waiting: Option<Waiting>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the record is {0} bytes, too short for its names")]
    Short(usize),
    #[error("a name in the record is not UTF-8")]
    Name,
    #[error("the event is not JSON: {0}")]
    Event(#[from] serde_json::Error),
    #[error("the request ingest is not JSON: {0}")]
    Ingest(serde_json::Error),
}

impl Journaled {
    /// `waiting`: one token per journaled destination that takes `source`, for a request
    /// that waits for delivery.
    pub fn new(source: Arc<str>, event: Arc<Event>, waiting: Vec<(Arc<str>, AckToken)>) -> Journaled {
        Journaled {
            source,
            event,
            target: None,
            waiting: (!waiting.is_empty()).then(|| Mutex::new(waiting)),
        }
    }

    /// An event for `destination` only (a replayed dead letter).
    pub fn for_destination(destination: Arc<str>, event: Arc<Event>) -> Journaled {
        Journaled {
            source: Arc::from(""),
            event,
            target: Some(destination),
            waiting: None,
        }
    }

    /// The record's bytes: the source name and the target destination (empty: every
    /// destination taking the source), each as a little-endian u16 length and the name;
    /// when the event has a request ingest, the byte [`INGEST_TAG`], its length as a
    /// little-endian u32 and its JSON; then the event's JSON. An event's JSON starts with
    /// `{`, so records written before ingest existed read the same.
    pub fn encode(&self) -> Bytes {
        let target = self.target.as_deref().unwrap_or("");
        let ingest = self.event.ingest().map(|ingest| ingest.text.as_bytes());
        let names = 4 + self.source.len() + target.len() + ingest.map_or(0, |text| 5 + text.len());
        let mut out = BytesMut::with_capacity(names + self.event.approximate_size()).writer();
        for name in [&*self.source, target] {
            let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            out.get_mut().put_u16_le(name.len() as u16);
            out.get_mut().put_slice(name);
        }
        if let Some(text) = ingest {
            out.get_mut().put_u8(INGEST_TAG);
            out.get_mut().put_u32_le(text.len() as u32);
            out.get_mut().put_slice(text);
        }
        self.event.write_json(&mut out);
        out.into_inner().freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Journaled, DecodeError> {
        let mut rest = bytes;
        let mut name = || -> Result<&str, DecodeError> {
            let len = u16::from_le_bytes(
                rest.get(..2)
                    .ok_or(DecodeError::Short(bytes.len()))?
                    .try_into()
                    .expect("2 bytes"),
            ) as usize;
            let text = rest.get(2..2 + len).ok_or(DecodeError::Short(bytes.len()))?;
            rest = &rest[2 + len..];
            std::str::from_utf8(text).map_err(|_| DecodeError::Name)
        };
        let source = Arc::from(name()?);
        let target = name()?;
        let target = (!target.is_empty()).then(|| Arc::from(target));
        let mut ingest = None;
        if rest.first() == Some(&INGEST_TAG) {
            let len = rest
                .get(1..5)
                .ok_or(DecodeError::Short(bytes.len()))
                .map(|len| u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize)?;
            let text = rest.get(5..5 + len).ok_or(DecodeError::Short(bytes.len()))?;
            ingest = Some(Arc::new(Ingest::new(
                serde_json::from_slice(text).map_err(DecodeError::Ingest)?,
            )));
            rest = &rest[5 + len..];
        }
        let mut event = Event::from_written_json(rest)?;
        if let Some(ingest) = ingest {
            event.set_ingest(ingest);
        }
        Ok(Journaled {
            source,
            event: Arc::new(event),
            target,
            waiting: None,
        })
    }

    /// The waiting request's token for `destination`, if there is one.
    fn take_token(&self, destination: &str) -> Option<AckToken> {
        let mut waiting = self.waiting.as_ref()?.lock().expect("journal entry lock");
        let at = waiting.iter().position(|(id, _)| &**id == destination)?;
        Some(waiting.swap_remove(at).1)
    }
}

/// The collector events are mapped with now (a reload may replace it).
pub type Collectors = Arc<dyn Fn() -> Arc<Collector> + Send + Sync>;

/// A journaled destination's feed, ready to be spawned with its consumer.
pub type FeedTask =
    Box<dyn FnOnce(Consumer<Journaled>, Collectors, Lifecycle) -> futures_util::future::BoxFuture<'static, ()> + Send>;

/// The feed of `pipeline`.
pub fn task<D: Destination>(pipeline: Arc<Pipeline<D>>) -> FeedTask {
    Box::new(move |consumer, collector, lifecycle| Box::pin(run(pipeline, consumer, collector, lifecycle)))
}

/// Records read per round: at most what the queue can take at once.
const READ_MAX: usize = 1000;

async fn run<D: Destination>(
    pipeline: Arc<Pipeline<D>>,
    mut consumer: Consumer<Journaled>,
    collectors: Collectors,
    lifecycle: Lifecycle,
) {
    let cursor = consumer.handle();
    let read_max = pipeline.queue.capacity.clamp(1, READ_MAX);
    let corrupt = metrics::counter!("weir_journal_corrupt_records_total");
    let mut retiring = false;
    loop {
        let read = tokio::select! {
            biased;
            () = lifecycle.drain.cancelled() => return,
            () = lifecycle.retire.cancelled(), if !retiring => {
                retiring = true;
                if consumer.next_seq() > lifecycle.stop_at.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            read = consumer.read(read_max) => read,
        };
        let mut records = match read {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(destination = %pipeline.id, error = %error, "cannot read the journal; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = lifecycle.drain.cancelled() => return,
                }
            }
        };
        // Retired: what came after the new flow took over is its successor's (left
        // unresolved, so the cursor hands it over).
        let limit = lifecycle
            .retire
            .is_cancelled()
            .then(|| lifecycle.stop_at.load(Ordering::Acquire));
        let past_limit = limit.is_some_and(|limit| records.iter().any(|record| record.seq > limit));
        if let Some(limit) = limit {
            records.retain(|record| record.seq <= limit);
        }
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let entry = match record.body {
                Body::Memory(entry) => entry,
                Body::Disk(bytes) => match Journaled::decode(&bytes) {
                    Ok(entry) => Arc::new(entry),
                    Err(error) => {
                        corrupt.increment(1);
                        tracing::error!(destination = %pipeline.id, seq = record.seq, error = %error, "journal record cannot be read as an event; skipped");
                        cursor.resolve(record.seq);
                        continue;
                    }
                },
            };
            let takes = match &entry.target {
                Some(target) => **target == *pipeline.id,
                None => pipeline.takes_source(&entry.source),
            };
            if takes {
                entries.push((record.seq, entry));
            } else {
                cursor.resolve(record.seq);
            }
        }
        if entries.is_empty() {
            if past_limit {
                return;
            }
            continue;
        }
        let events: Vec<(usize, Arc<Event>)> = entries
            .iter()
            .enumerate()
            .map(|(index, (_, entry))| (index, entry.event.clone()))
            .collect();
        let collector = collectors();
        let mut staged = pipeline.stage(&events, &collector);
        loop {
            let room = pipeline.queue.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if staged.try_reserve() {
                break;
            }
            tokio::select! {
                () = room => {}
                // The records stay unresolved: delivered after a restart.
                () = lifecycle.drain.cancelled() => return,
            }
        }
        staged.commit(&mut FeedTokens {
            entries: &entries,
            cursor: &cursor,
        });
        let reached = limit.is_some_and(|limit| consumer.next_seq() > limit);
        if past_limit || reached {
            return;
        }
    }
}

struct FeedTokens<'a> {
    entries: &'a [(u64, Arc<Journaled>)],
    cursor: &'a CursorHandle,
}

impl Tokens for FeedTokens<'_> {
    fn source(&self, index: usize) -> Option<Arc<str>> {
        Some(self.entries[index].1.source.clone())
    }

    fn token(&mut self, index: usize, destination: &Arc<str>) -> AckToken {
        let (seq, entry) = &self.entries[index];
        entry
            .take_token(destination)
            .unwrap_or_else(AckToken::detached)
            .for_record(self.cursor.clone(), *seq)
    }

    fn settled(&mut self, index: usize, destination: &Arc<str>) {
        let (seq, entry) = &self.entries[index];
        if let Some(token) = entry.take_token(destination) {
            token.resolve(Delivery::Delivered);
        }
        self.cursor.resolve(*seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_bytes() {
        let collector = Collector::new(&Default::default());
        let event = Arc::new(
            collector
                .enrich(serde_json::json!({"name": "page view", "data": {"n": 1}}))
                .unwrap(),
        );
        let plain = Journaled::new(Arc::from("http"), event.clone(), Vec::new());
        let back = Journaled::decode(&plain.encode()).unwrap();
        assert_eq!((&*back.source, back.target.as_deref()), ("http", None));
        assert_eq!(back.event.to_json(), event.to_json());
        assert_eq!(back.event.tree(), event.tree());
        // An event with parsed fields and keys beyond the 15 (a policy's) reads back the same.
        let mut tree = event.tree().clone();
        tree["extra"] = serde_json::json!({"a": [1, 2.5, "x"]});
        tree["data"] = serde_json::json!({"n": 1e21, "s": "é\n"});
        tree["name"] = serde_json::json!("say \"hi\"\\now");
        tree["id"] = serde_json::json!("a\tb");
        let parsed = Arc::new(Event::from_tree(tree));
        let back = Journaled::decode(&Journaled::new(Arc::from("http"), parsed.clone(), Vec::new()).encode()).unwrap();
        assert_eq!(back.event.to_json(), parsed.to_json());
        assert_eq!(back.event.tree(), parsed.tree());
        // The string fields rules and destinations read by name come back unescaped.
        assert_eq!(back.event.name(), "say \"hi\"\\now");
        assert_eq!(back.event.id(), "a\tb");
        let replay = Journaled::for_destination(Arc::from("events"), event.clone());
        let back = Journaled::decode(&replay.encode()).unwrap();
        assert_eq!(back.target.as_deref(), Some("events"));
        assert!(back.event.ingest().is_none());
        // A request's ingest travels with its event.
        let mut with_ingest = (*event).clone();
        let ingest = serde_json::json!({"ip": "203.0.113.9", "_meta": {"hops": 0, "path": ["http"]}});
        with_ingest.set_ingest(Arc::new(Ingest::new(ingest.clone())));
        let back =
            Journaled::decode(&Journaled::new(Arc::from("http"), Arc::new(with_ingest), Vec::new()).encode()).unwrap();
        assert_eq!(back.event.ingest().map(|ingest| &ingest.value), Some(&ingest));
        assert_eq!(back.event.to_json(), event.to_json());
        assert!(matches!(
            Journaled::decode(b"\x01\x00h\x00\x00\x01\x09"),
            Err(DecodeError::Short(_))
        ));
        assert!(matches!(Journaled::decode(b"\x05\x00ab"), Err(DecodeError::Short(4))));
    }
}
