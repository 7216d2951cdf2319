//! A destination's route: the request-path half of its pipeline, type-erased behind
//! [`Route`] so the runtime holds every destination alike. It maps and renders each event on
//! the caller's task (the HTTP handler's), so the CPU work of mapping and serializing spreads
//! over every runtime thread; reserves room in the [`queue`](super::queue) for a whole batch
//! at once; and queues. [`build`] wires a destination into a route and its
//! [`Worker`](super::worker::Worker), which batches, sends, retries and dead-letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::ack::{AckSet, AckToken};
use super::dead_letter::DeadLetterSink;
use super::metrics::{DestinationMetrics, HealthState};
use super::policy::{BatchPolicy, DeliveryPolicy};
use super::queue::{Envelope, Queue};
use super::worker::Worker;
use super::{Destination, RenderError, RenderInput, Rendered};
use crate::collector::Collector;
use crate::event::Event;
use crate::mapping::{DestinationMapping, MappingOutcome};

/// Runs `work` (mapping that may call JavaScript) so that it holds up no other task: inside
/// `block_in_place` on a multi-threaded runtime (elsewhere, as it is).
pub fn off_async_threads<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// What one destination does with one event, decided on the request path.
pub enum Disposition<W> {
    /// Queue it; `Err` holds a render error, which the worker dead-letters.
    Send { wire: Result<W, RenderError>, slot: usize },
    /// A mapping rule says `ignore`.
    Ignored,
    /// The destination's (or the rule's) required consent is not granted.
    Consent,
    /// The destination chose not to send it (e.g. `silent`).
    Skipped(String),
}

/// What `weir explain` prints for one event at one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub wire: Option<Value>,
}

/// What becomes of one event at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rendered and sent.
    Send,
    /// Rendering failed: dead-lettered with the reason.
    Rejected,
    /// A mapping rule says `ignore`.
    Ignored,
    /// Required consent is not granted.
    Consent,
    /// The destination chose not to send it.
    Skipped,
}

impl Outcome {
    /// The name `weir explain` prints (and `weir_events_not_sent_total` uses as `reason`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Send => "send",
            Outcome::Rejected => "rejected",
            Outcome::Ignored => "ignored",
            Outcome::Consent => "consent",
            Outcome::Skipped => "skipped",
        }
    }
}

/// A destination's queue is full; the source should push back (HTTP 503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("destination \"{destination}\" queue is full ({capacity} events)")]
pub struct QueueFull {
    pub destination: Arc<str>,
    pub capacity: usize,
}

/// A destination as the collector sees it, whatever its wire type.
pub trait Route: Send + Sync {
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Whether this destination takes events from `source` (its `sources` list; default all).
    fn takes_source(&self, source: &str) -> bool;
    /// Connected and checked (`/readyz`).
    fn is_ready(&self) -> bool;
    /// Its state, last error and last dead letters (the status page).
    fn health(&self) -> HealthState;
    /// Events the queue holds at most (`queueMax`).
    fn queue_capacity(&self) -> usize;
    /// The longest an event may be held back to fill a batch (`batch` `wait`/`age`).
    fn batch_linger(&self) -> std::time::Duration;
    /// Redis streams it writes to (for `weir validate`'s loop check).
    fn stream_targets(&self) -> Vec<String>;
    /// Takes journaled events from the journal through its own cursor (not on the request
    /// path).
    fn journaled(&self) -> bool;
    /// Maps and renders `events` (each with its index in the source's batch) for queuing.
    fn stage(&self, events: &[(usize, Arc<Event>)], collector: &Collector) -> Box<dyn Staged + '_>;
    /// What would happen to `event`, with its wire form, without queuing anything.
    fn explain(&self, event: &Event, collector: &Collector) -> Explained;
}

/// Events mapped and rendered for one destination, not yet queued.
pub trait Staged: Send {
    /// Reserves queue room for every event that needs sending, counting a full queue.
    /// Dropping a reserved stage without committing releases the room.
    fn reserve(&mut self) -> Result<(), QueueFull>;
    /// Reserves like [`Staged::reserve`], for a caller that waits for room instead of
    /// refusing (a journal feed): a full queue is not counted.
    fn try_reserve(&mut self) -> bool;
    /// Queues the events (reserve first) with acknowledgements from `tokens`, and settles
    /// the ones that need no sending.
    fn commit(self: Box<Self>, tokens: &mut dyn Tokens);
}

/// Where the acknowledgements of staged events come from.
pub trait Tokens {
    /// The token for event `index` queued at `destination`.
    fn token(&mut self, index: usize, destination: &Arc<str>) -> AckToken;
    /// Event `index` needs no sending at `destination` (ignored, consent, skipped).
    fn settled(&mut self, index: usize, destination: &Arc<str>);
    /// The source that took event `index` in, for the tap (asked only while it is watched).
    fn source(&self, _index: usize) -> Option<Arc<str>> {
        None
    }
}

/// A source's acknowledgement set and its name (the tap shows where events came from).
pub struct FromSource<'a> {
    pub acks: Option<&'a AckSet>,
    /// Set only while the tap is watched.
    pub source: Option<Arc<str>>,
}

impl<'a> FromSource<'a> {
    pub fn new(acks: Option<&'a AckSet>, source: &str) -> FromSource<'a> {
        FromSource {
            acks,
            source: super::tap::active().then(|| Arc::from(source)),
        }
    }
}

impl Tokens for FromSource<'_> {
    fn token(&mut self, index: usize, destination: &Arc<str>) -> AckToken {
        self.acks.token(index, destination)
    }

    fn settled(&mut self, index: usize, destination: &Arc<str>) {
        self.acks.settled(index, destination);
    }

    fn source(&self, _index: usize) -> Option<Arc<str>> {
        self.source.clone()
    }
}

/// A source's acknowledgement set, if it waits for outcomes.
impl Tokens for Option<&AckSet> {
    fn token(&mut self, index: usize, destination: &Arc<str>) -> AckToken {
        self.map_or_else(AckToken::detached, |acks| acks.token(index, destination))
    }

    fn settled(&mut self, _index: usize, _destination: &Arc<str>) {}
}

/// A destination wired into the machinery.
pub struct Pipeline<D: Destination> {
    pub(super) id: Arc<str>,
    destination: Arc<D>,
    mapping: DestinationMapping<D::RuleSettings>,
    sources: Option<Vec<String>>,
    pub(super) queue: Queue<D::Wire>,
    ready: Arc<AtomicBool>,
    metrics: Arc<DestinationMetrics>,
    journaled: bool,
    /// Every batch policy (slot 0 the destination's), as the worker has them.
    policies: Vec<BatchPolicy>,
}

/// Everything needed to wire one destination.
pub struct PipelineConfig<S> {
    pub id: String,
    pub mapping: DestinationMapping<S>,
    pub sources: Option<Vec<String>>,
    /// Batch policies of rules with their own `batch`, in slot order (slot 1, 2, ...).
    pub rule_batches: Vec<BatchPolicy>,
    pub delivery: DeliveryPolicy,
    pub dead_letters: DeadLetterSink,
}

pub fn build<D: Destination>(destination: D, config: PipelineConfig<D::RuleSettings>) -> (Pipeline<D>, Worker<D>) {
    let id: Arc<str> = Arc::from(config.id.as_str());
    let destination = Arc::new(destination);
    let (sender, receiver) = mpsc::unbounded_channel();
    let depth = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(DestinationMetrics::new(&id));
    let room = Arc::new(Notify::new());
    let journaled = destination.journaled();
    let mut policies = vec![config.delivery.batch];
    policies.extend(config.rule_batches);
    let pipeline = Pipeline {
        id: id.clone(),
        destination: destination.clone(),
        mapping: config.mapping,
        sources: config.sources,
        queue: Queue {
            sender,
            depth: depth.clone(),
            capacity: config.delivery.queue_max,
            room: room.clone(),
        },
        ready: ready.clone(),
        metrics: metrics.clone(),
        journaled,
        policies: policies.clone(),
    };
    let worker = Worker {
        id,
        destination,
        receiver,
        depth,
        room,
        policies,
        delivery: config.delivery,
        dead_letters: config.dead_letters,
        ready,
        metrics,
    };
    (pipeline, worker)
}

impl<D: Destination> Pipeline<D> {
    fn disposition(&self, event: &Event, collector: &Collector) -> Disposition<D::Wire> {
        let mapped = match self.mapping.apply(event, collector) {
            MappingOutcome::Ignored => return Disposition::Ignored,
            MappingOutcome::Denied => return Disposition::Consent,
            MappingOutcome::Failed(reason) => {
                return Disposition::Send {
                    wire: Err(RenderError::Mapping(reason)),
                    slot: 0,
                };
            }
            MappingOutcome::Mapped(mapped) => mapped,
        };
        let input = RenderInput {
            event: &mapped.event,
            data: mapped.data.as_ref(),
            rule_settings: mapped.rule.and_then(|rule| rule.settings.as_ref()),
            rule_name: mapped.rule.and_then(|rule| rule.name.as_deref()),
            silent: mapped.rule.is_some_and(|rule| rule.silent),
            collector,
            destination: &self.id,
        };
        let slot = mapped.rule.and_then(|rule| rule.batch_slot).unwrap_or(0);
        match self.destination.render(&input) {
            Ok(Rendered::Send(wire)) => Disposition::Send { wire: Ok(wire), slot },
            Ok(Rendered::Skip(reason)) => Disposition::Skipped(reason),
            Err(reason) => Disposition::Send {
                wire: Err(reason),
                slot: 0,
            },
        }
    }

    /// Runs `work` (mapping and rendering events) off the async threads when the flow has
    /// JavaScript (in a mapping or a destination's settings), which may take up to its time
    /// limit per call.
    fn mapping_off_async<T>(&self, work: impl FnOnce() -> T) -> T {
        if crate::code::in_use() {
            off_async_threads(work)
        } else {
            work()
        }
    }

    fn stage_events(&self, events: &[(usize, Arc<Event>)], collector: &Collector) -> Box<dyn Staged + '_> {
        let mut staged = StagedEvents {
            pipeline: self,
            queued: Vec::with_capacity(events.len()),
            settled: Vec::new(),
            reserved: false,
        };
        for (index, event) in events {
            match self.disposition(event, collector) {
                Disposition::Send { wire, slot } => {
                    let size = wire.as_ref().map_or(0, |w| self.destination.wire_size(w));
                    staged.queued.push(QueuedEvent {
                        index: *index,
                        event: event.clone(),
                        wire,
                        slot,
                        size,
                    });
                }
                other => staged.settled.push((*index, event.clone(), other)),
            }
        }
        Box::new(staged)
    }
}

impl<D: Destination> Route for Pipeline<D> {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        D::KIND
    }

    fn takes_source(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|sources| sources.iter().any(|s| s == source))
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn health(&self) -> HealthState {
        self.metrics.health.snapshot()
    }

    fn queue_capacity(&self) -> usize {
        self.queue.capacity
    }

    fn stream_targets(&self) -> Vec<String> {
        self.destination.stream_targets()
    }

    fn journaled(&self) -> bool {
        self.journaled
    }

    fn batch_linger(&self) -> std::time::Duration {
        self.policies
            .iter()
            .map(|policy| policy.wait.max(policy.age))
            .max()
            .unwrap_or_default()
    }

    fn stage(&self, events: &[(usize, Arc<Event>)], collector: &Collector) -> Box<dyn Staged + '_> {
        self.mapping_off_async(|| self.stage_events(events, collector))
    }

    fn explain(&self, event: &Event, collector: &Collector) -> Explained {
        match self.mapping_off_async(|| self.disposition(event, collector)) {
            Disposition::Send { wire: Ok(wire), .. } => Explained {
                outcome: Outcome::Send,
                reason: None,
                wire: Some(self.destination.explain(&wire)),
            },
            Disposition::Send { wire: Err(reason), .. } => Explained {
                outcome: Outcome::Rejected,
                reason: Some(reason.to_string()),
                wire: None,
            },
            Disposition::Ignored => Explained {
                outcome: Outcome::Ignored,
                reason: Some("the matching mapping rule says ignore".into()),
                wire: None,
            },
            Disposition::Consent => Explained {
                outcome: Outcome::Consent,
                reason: Some("required consent is not granted".into()),
                wire: None,
            },
            Disposition::Skipped(reason) => Explained {
                outcome: Outcome::Skipped,
                reason: Some(reason),
                wire: None,
            },
        }
    }
}

/// An event rendered for a destination, waiting for its batch's reservation.
struct QueuedEvent<W> {
    /// Its index in the source's batch (for the acknowledgement).
    index: usize,
    event: Arc<Event>,
    /// The wire form, or why it could not be rendered (dead-lettered by the worker).
    wire: Result<W, RenderError>,
    /// The batch policy it goes by (0: the destination's; a rule's own `batch` otherwise).
    slot: usize,
    /// Its wire size in bytes, for batch byte limits.
    size: usize,
}

struct StagedEvents<'p, D: Destination> {
    pipeline: &'p Pipeline<D>,
    queued: Vec<QueuedEvent<D::Wire>>,
    /// Events that need no sending, with their index in the source's batch.
    settled: Vec<(usize, Arc<Event>, Disposition<D::Wire>)>,
    reserved: bool,
}

impl<D: Destination> Staged for StagedEvents<'_, D> {
    fn reserve(&mut self) -> Result<(), QueueFull> {
        if self.try_reserve() {
            return Ok(());
        }
        self.pipeline.metrics.queue_full.increment(1);
        Err(QueueFull {
            destination: self.pipeline.id.clone(),
            capacity: self.pipeline.queue.capacity,
        })
    }

    fn try_reserve(&mut self) -> bool {
        if self.reserved || self.queued.is_empty() || self.pipeline.queue.try_reserve(self.queued.len()) {
            self.reserved = true;
        }
        self.reserved
    }

    fn commit(mut self: Box<Self>, tokens: &mut dyn Tokens) {
        assert!(self.reserved, "commit without reserve");
        let pipeline = self.pipeline;
        let tapping = super::tap::active();
        for (index, event, disposition) in self.settled.drain(..) {
            tokens.settled(index, &pipeline.id);
            let outcome = match &disposition {
                Disposition::Ignored => Outcome::Ignored,
                Disposition::Consent => Outcome::Consent,
                Disposition::Skipped(_) => Outcome::Skipped,
                Disposition::Send { .. } => unreachable!("sends are queued, not settled"),
            };
            match outcome {
                Outcome::Ignored => pipeline.metrics.ignored.increment(1),
                Outcome::Consent => pipeline.metrics.consent.increment(1),
                _ => pipeline.metrics.skipped.increment(1),
            }
            if tapping {
                let reason = match disposition {
                    Disposition::Skipped(reason) => Some(reason),
                    _ => None,
                };
                super::tap::publish(tokens.source(index), &pipeline.id, event, outcome.label(), reason, None);
            }
        }
        let now = Instant::now();
        let queued = std::mem::take(&mut self.queued);
        self.reserved = false;
        pipeline
            .metrics
            .queue_depth
            .set(pipeline.queue.depth.load(Ordering::Relaxed) as f64);
        for QueuedEvent {
            index,
            event,
            wire,
            slot,
            size,
        } in queued
        {
            let ack = tokens.token(index, &pipeline.id);
            let envelope = Envelope {
                wire,
                event,
                ack,
                slot,
                size,
                enqueued: now,
                source: if tapping { tokens.source(index) } else { None },
            };
            if let Err(mpsc::error::SendError(envelope)) = pipeline.queue.sender.send(envelope) {
                // The worker has stopped (shutdown): the token reports the failure.
                pipeline.queue.release(1);
                if !envelope.ack.is_journaled() {
                    pipeline.metrics.failed.increment(1);
                }
                envelope.ack.abandon(&pipeline.id, "the destination is shutting down");
            }
        }
    }
}

impl<D: Destination> Drop for StagedEvents<'_, D> {
    fn drop(&mut self) {
        if self.reserved {
            self.pipeline.queue.release(self.queued.len());
        }
    }
}
