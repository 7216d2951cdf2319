//! One destination's pipeline: mapping and rendering on the caller's task, then a bounded
//! queue, a batcher, concurrent senders with retries, and the dead-letter sink.
//!
//! Rendering happens where the event arrives (the HTTP handler's task), so the CPU work of
//! mapping and serializing spreads over every runtime thread; the worker task only batches
//! and sends. The queue is bounded by an explicit reservation counter rather than a bounded
//! channel so that a request can reserve room at every destination before queuing anything:
//! a full queue turns the whole request away (503) instead of delivering half of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use metrics::{Counter, Gauge, Histogram};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack::{AckSet, AckToken, Delivery};
use super::dead_letter::{DeadLetter, DeadLetterSink};
use super::policy::{BatchPolicy, DeliveryPolicy};
use super::{Destination, ErrorClass, RenderInput, Rendered};
use crate::collector::Collector;
use crate::event::Event;
use crate::mapping::{DestinationMapping, MappingOutcome};

/// Longest wait a target's `Retry-After` can impose between two attempts.
const MAX_ASKED_DELAY: Duration = Duration::from_secs(300);

/// What one destination does with one event, decided on the request path.
pub enum Disposition<W> {
    /// Queue it; `Err` holds a render error, which the worker dead-letters.
    Send { wire: Result<W, String>, slot: usize },
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
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub wire: Option<Value>,
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
    /// Events the queue holds at most (`queueMax`).
    fn queue_capacity(&self) -> usize;
    /// The longest an event may be held back to fill a batch (`batch` `wait`/`age`).
    fn batch_linger(&self) -> std::time::Duration;
    /// Redis streams it writes to (for `weir validate`'s loop check).
    fn stream_targets(&self) -> Vec<String>;
    /// Maps and renders `events` (each with its index in the source's batch) for queuing.
    fn stage(&self, events: &[(usize, Arc<Event>)], collector: &Collector) -> Box<dyn Staged + '_>;
    /// What would happen to `event`, with its wire form, without queuing anything.
    fn explain(&self, event: &Event, collector: &Collector) -> Explained;
}

/// Events mapped and rendered for one destination, not yet queued.
pub trait Staged: Send {
    /// Reserves queue room for every event that needs sending. Dropping a reserved stage
    /// without committing releases the room.
    fn reserve(&mut self) -> Result<(), QueueFull>;
    /// Queues the events (reserve first) and records the outcomes known already.
    fn commit(self: Box<Self>, acks: Option<&AckSet>);
}

/// Metric handles for one destination, resolved once.
pub struct DestinationMetrics {
    delivered: Counter,
    retried: Counter,
    dead_lettered: Counter,
    failed: Counter,
    ignored: Counter,
    consent: Counter,
    skipped: Counter,
    queue_full: Counter,
    queue_depth: Gauge,
    batch_size: Histogram,
    latency: Histogram,
}

impl DestinationMetrics {
    fn new(id: &str) -> DestinationMetrics {
        let label = [("destination", id.to_owned())];
        let outcome = |reason: &'static str| {
            let labels = [("destination", id.to_owned()), ("reason", reason.to_owned())];
            metrics::counter!("weir_events_not_sent_total", &labels)
        };
        DestinationMetrics {
            delivered: metrics::counter!("weir_events_delivered_total", &label),
            retried: metrics::counter!("weir_events_retried_total", &label),
            dead_lettered: metrics::counter!("weir_events_dead_lettered_total", &label),
            failed: metrics::counter!("weir_events_failed_total", &label),
            ignored: outcome("ignored"),
            consent: outcome("consent"),
            skipped: outcome("skipped"),
            queue_full: metrics::counter!("weir_queue_full_total", &label),
            queue_depth: metrics::gauge!("weir_queue_depth", &label),
            batch_size: metrics::histogram!("weir_batch_size", &label),
            latency: metrics::histogram!("weir_delivery_latency_seconds", &label),
        }
    }
}

struct Envelope<W> {
    wire: Result<W, String>,
    event: Arc<Event>,
    ack: AckToken,
    slot: usize,
    size: usize,
    enqueued: Instant,
}

/// The queue between the request path and the worker: an unbounded channel whose length is
/// bounded by reservations on `depth`.
struct Queue<W> {
    sender: mpsc::UnboundedSender<Envelope<W>>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

impl<W> Queue<W> {
    fn try_reserve(&self, count: usize) -> bool {
        self.depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth + count <= self.capacity).then_some(depth + count)
            })
            .is_ok()
    }

    fn release(&self, count: usize) {
        self.depth.fetch_sub(count, Ordering::AcqRel);
    }
}

/// A destination's worker, ready to be spawned.
pub type WorkerTask = Box<dyn FnOnce(Lifecycle) -> futures_util::future::BoxFuture<'static, WorkerReport> + Send>;

/// Spawns every worker; the returned set yields their reports as they stop.
pub fn spawn_workers(workers: Vec<WorkerTask>, lifecycle: &Lifecycle) -> JoinSet<WorkerReport> {
    let mut set = JoinSet::new();
    for worker in workers {
        set.spawn(worker(lifecycle.clone()));
    }
    set
}

/// Start and stop signals shared by every worker of a flow.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Shutdown has begun: stop holding events back to fill batches, send at once.
    pub flush: CancellationToken,
    /// Stop taking new events; deliver what is queued, then shut down.
    pub drain: CancellationToken,
    /// The shutdown deadline passed: dead-letter everything not yet delivered, now.
    pub abort: CancellationToken,
}

/// What a worker did by the time it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    pub destination: String,
    /// Events dead-lettered because the shutdown deadline passed.
    pub dead_lettered_at_shutdown: u64,
    /// Events neither delivered nor dead-lettered (the dead-letter write failed).
    pub failed: u64,
}

/// A destination wired into the machinery.
pub struct Pipeline<D: Destination> {
    id: Arc<str>,
    destination: Arc<D>,
    mapping: DestinationMapping<D::RuleSettings>,
    sources: Option<Vec<String>>,
    queue: Queue<D::Wire>,
    ready: Arc<AtomicBool>,
    metrics: Arc<DestinationMetrics>,
    /// Every batch policy (slot 0 the destination's), as the worker has them.
    policies: Vec<BatchPolicy>,
}

/// The receiving half of a pipeline; run it on the runtime with [`Worker::run`].
pub struct Worker<D: Destination> {
    id: Arc<str>,
    destination: Arc<D>,
    receiver: mpsc::UnboundedReceiver<Envelope<D::Wire>>,
    depth: Arc<AtomicUsize>,
    /// Slot 0 is the destination-wide policy; rules with their own `batch` have theirs.
    policies: Vec<BatchPolicy>,
    delivery: DeliveryPolicy,
    dead_letters: DeadLetterSink,
    ready: Arc<AtomicBool>,
    metrics: Arc<DestinationMetrics>,
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
        },
        ready: ready.clone(),
        metrics: metrics.clone(),
        policies: policies.clone(),
    };
    let worker = Worker {
        id,
        destination,
        receiver,
        depth,
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
            MappingOutcome::Mapped(mapped) => mapped,
        };
        let input = RenderInput {
            event: &mapped.event,
            data: mapped.data.as_ref(),
            rule_settings: mapped.rule.and_then(|rule| rule.settings.as_ref()),
            rule_name: mapped.rule.and_then(|rule| rule.name.as_deref()),
            silent: mapped.rule.is_some_and(|rule| rule.silent),
            collector,
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

    fn queue_capacity(&self) -> usize {
        self.queue.capacity
    }

    fn stream_targets(&self) -> Vec<String> {
        self.destination.stream_targets()
    }

    fn batch_linger(&self) -> std::time::Duration {
        self.policies
            .iter()
            .map(|policy| policy.wait.max(policy.age))
            .max()
            .unwrap_or_default()
    }

    fn stage(&self, events: &[(usize, Arc<Event>)], collector: &Collector) -> Box<dyn Staged + '_> {
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
                    staged.queued.push((*index, event.clone(), wire, slot, size));
                }
                other => staged.settled.push(other),
            }
        }
        Box::new(staged)
    }

    fn explain(&self, event: &Event, collector: &Collector) -> Explained {
        match self.disposition(event, collector) {
            Disposition::Send { wire: Ok(wire), .. } => Explained {
                outcome: "send",
                reason: None,
                wire: Some(self.destination.explain(&wire)),
            },
            Disposition::Send { wire: Err(reason), .. } => Explained {
                outcome: "rejected",
                reason: Some(reason),
                wire: None,
            },
            Disposition::Ignored => Explained {
                outcome: "ignored",
                reason: Some("the matching mapping rule says ignore".into()),
                wire: None,
            },
            Disposition::Consent => Explained {
                outcome: "consent",
                reason: Some("required consent is not granted".into()),
                wire: None,
            },
            Disposition::Skipped(reason) => Explained {
                outcome: "skipped",
                reason: Some(reason),
                wire: None,
            },
        }
    }
}

type QueuedEvent<W> = (usize, Arc<Event>, Result<W, String>, usize, usize);

struct StagedEvents<'p, D: Destination> {
    pipeline: &'p Pipeline<D>,
    queued: Vec<QueuedEvent<D::Wire>>,
    settled: Vec<Disposition<D::Wire>>,
    reserved: bool,
}

impl<D: Destination> Staged for StagedEvents<'_, D> {
    fn reserve(&mut self) -> Result<(), QueueFull> {
        if self.reserved || self.queued.is_empty() || self.pipeline.queue.try_reserve(self.queued.len()) {
            self.reserved = true;
            return Ok(());
        }
        self.pipeline.metrics.queue_full.increment(1);
        Err(QueueFull {
            destination: self.pipeline.id.clone(),
            capacity: self.pipeline.queue.capacity,
        })
    }

    fn commit(mut self: Box<Self>, acks: Option<&AckSet>) {
        assert!(self.reserved, "commit without reserve");
        let pipeline = self.pipeline;
        for disposition in self.settled.drain(..) {
            match disposition {
                Disposition::Ignored => pipeline.metrics.ignored.increment(1),
                Disposition::Consent => pipeline.metrics.consent.increment(1),
                Disposition::Skipped(_) => pipeline.metrics.skipped.increment(1),
                Disposition::Send { .. } => unreachable!("sends are queued, not settled"),
            }
        }
        let now = Instant::now();
        let queued = std::mem::take(&mut self.queued);
        self.reserved = false;
        pipeline
            .metrics
            .queue_depth
            .set(pipeline.queue.depth.load(Ordering::Relaxed) as f64);
        for (index, event, wire, slot, size) in queued {
            let ack = acks.map_or_else(AckToken::detached, |acks| acks.token(index, &pipeline.id));
            let envelope = Envelope {
                wire,
                event,
                ack,
                slot,
                size,
                enqueued: now,
            };
            if let Err(mpsc::error::SendError(envelope)) = pipeline.queue.sender.send(envelope) {
                // The worker has stopped (shutdown): the token reports the failure.
                pipeline.queue.release(1);
                pipeline.metrics.failed.increment(1);
                envelope.ack.resolve(Delivery::Failed {
                    destination: pipeline.id.clone(),
                    reason: "the destination is shutting down".into(),
                });
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

/// A buffer of events waiting to form a batch under one policy.
struct Buffer<W> {
    envelopes: Vec<Envelope<W>>,
    bytes: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl<W> Buffer<W> {
    fn new() -> Self {
        Buffer {
            envelopes: Vec::new(),
            bytes: 0,
            first_at: None,
            last_at: None,
        }
    }

    fn push(&mut self, envelope: Envelope<W>) {
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.bytes += envelope.size;
        self.envelopes.push(envelope);
    }

    /// Whether adding an event of `size` bytes would take the batch past its byte limit:
    /// then the batch goes first (RudderStack's body limit is a hard one).
    fn would_overflow(&self, policy: &BatchPolicy, size: usize) -> bool {
        !self.envelopes.is_empty() && policy.max_bytes.is_some_and(|max| self.bytes + size > max)
    }

    fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.envelopes.len() >= policy.size || policy.max_bytes.is_some_and(|max| self.bytes >= max)
    }

    /// When this buffer must be flushed even if it is not full: `wait` after its latest
    /// event (a debounce) or `age` after its first, whichever comes first; at once while the
    /// flow shuts down.
    fn deadline(&self, policy: &BatchPolicy, shutting_down: bool) -> Option<Instant> {
        let (first, last) = (self.first_at?, self.last_at?);
        if shutting_down {
            return Some(first);
        }
        Some((last + policy.wait).min(first + policy.age))
    }

    fn take(&mut self) -> Vec<Envelope<W>> {
        self.bytes = 0;
        self.first_at = None;
        self.last_at = None;
        std::mem::take(&mut self.envelopes)
    }
}

/// Sends batches with retries and dead-letters what cannot be delivered.
struct Sender<D: Destination> {
    id: Arc<str>,
    destination: Arc<D>,
    delivery: DeliveryPolicy,
    dead_letters: DeadLetterSink,
    metrics: Arc<DestinationMetrics>,
    abort: CancellationToken,
}

/// An event the sender still owes an outcome for.
struct InFlight<W> {
    wire: W,
    event: Arc<Event>,
    ack: AckToken,
    enqueued: Instant,
}

impl<D: Destination> Worker<D> {
    /// Connects, then batches and sends until drained (or aborted), then shuts the
    /// destination down.
    pub async fn run(mut self, lifecycle: Lifecycle) -> WorkerReport {
        let sender = Arc::new(Sender {
            id: self.id.clone(),
            destination: self.destination.clone(),
            delivery: self.delivery.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: self.metrics.clone(),
            abort: lifecycle.abort.clone(),
        });
        let mut report = WorkerReport {
            destination: self.id.to_string(),
            ..WorkerReport::default()
        };
        if let Err(reason) = self.connect(&lifecycle).await {
            self.receiver.close();
            let mut stranded = Vec::new();
            while let Some(envelope) = self.receiver.recv().await {
                self.depth.fetch_sub(1, Ordering::AcqRel);
                stranded.push(envelope);
            }
            let count = stranded.len() as u64;
            let failed = sender.dead_letter_envelopes(stranded, &reason).await;
            report.dead_lettered_at_shutdown = count - failed;
            report.failed = failed;
            return report;
        }

        let permits = Arc::new(Semaphore::new(self.delivery.concurrency.max(1)));
        let mut tasks: JoinSet<(u64, u64)> = JoinSet::new();
        let mut buffers: Vec<Buffer<D::Wire>> = self.policies.iter().map(|_| Buffer::new()).collect();
        let mut draining = false;
        let mut flushing = false;
        loop {
            let deadline = buffers
                .iter()
                .zip(&self.policies)
                .filter_map(|(buffer, policy)| buffer.deadline(policy, flushing))
                .min();
            tokio::select! {
                biased;
                () = lifecycle.flush.cancelled(), if !flushing => {
                    flushing = true;
                }
                () = lifecycle.drain.cancelled(), if !draining => {
                    draining = true;
                    flushing = true;
                    self.receiver.close();
                }
                received = self.receiver.recv() => {
                    let Some(envelope) = received else { break };
                    if let Some(batch) = self.take_in(envelope, &mut buffers) {
                        self.dispatch(batch, &sender, &permits, &mut tasks).await;
                    }
                    // Take whatever else is already queued, without waiting.
                    while let Ok(envelope) = self.receiver.try_recv() {
                        if let Some(batch) = self.take_in(envelope, &mut buffers) {
                            self.dispatch(batch, &sender, &permits, &mut tasks).await;
                        }
                        if buffers.iter().zip(&self.policies).any(|(b, p)| b.is_full(p)) {
                            break;
                        }
                    }
                    self.metrics.queue_depth.set(self.depth.load(Ordering::Relaxed) as f64);
                    self.flush_due(&mut buffers, flushing, &sender, &permits, &mut tasks).await;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.flush_due(&mut buffers, flushing, &sender, &permits, &mut tasks).await;
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    report.add(done);
                }
            }
        }
        // Drained: flush what the buffers still hold and wait for every send.
        for buffer in &mut buffers {
            let batch = buffer.take();
            if !batch.is_empty() {
                self.dispatch(batch, &sender, &permits, &mut tasks).await;
            }
        }
        while let Some(done) = tasks.join_next().await {
            report.add(done);
        }
        if let Err(error) = self.destination.shutdown().await {
            tracing::warn!(destination = %self.id, error = %error, "destination shutdown failed");
        }
        report
    }

    /// Connects with backoff until it succeeds; gives up only when the flow drains.
    async fn connect(&self, lifecycle: &Lifecycle) -> Result<(), String> {
        let mut attempt = 0u32;
        loop {
            match self.destination.connect().await {
                Ok(()) => {
                    self.ready.store(true, Ordering::Release);
                    tracing::info!(destination = %self.id, kind = D::KIND, "destination connected");
                    return Ok(());
                }
                Err(error) => {
                    let delay = self.delivery.retry.delay(attempt);
                    tracing::warn!(destination = %self.id, error = %error, retry_in = ?delay, "destination cannot connect");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = lifecycle.drain.cancelled() => {
                            return Err(format!("the destination never connected: {error}"));
                        }
                    }
                }
            }
        }
    }

    /// Sends every buffer that is full or whose deadline has passed.
    async fn flush_due(
        &self,
        buffers: &mut [Buffer<D::Wire>],
        shutting_down: bool,
        sender: &Arc<Sender<D>>,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<(u64, u64)>,
    ) {
        let now = Instant::now();
        for (buffer, policy) in buffers.iter_mut().zip(&self.policies) {
            if buffer.is_full(policy) || buffer.deadline(policy, shutting_down).is_some_and(|d| d <= now) {
                let batch = buffer.take();
                self.dispatch(batch, sender, permits, tasks).await;
            }
        }
    }

    /// Buffers an event; returns the batch that had to go first to make room for it.
    fn take_in(&self, envelope: Envelope<D::Wire>, buffers: &mut [Buffer<D::Wire>]) -> Option<Vec<Envelope<D::Wire>>> {
        self.depth.fetch_sub(1, Ordering::AcqRel);
        let slot = envelope.slot.min(buffers.len() - 1);
        let buffer = &mut buffers[slot];
        let full = buffer
            .would_overflow(&self.policies[slot], envelope.size)
            .then(|| buffer.take());
        buffer.push(envelope);
        full
    }

    async fn dispatch(
        &self,
        batch: Vec<Envelope<D::Wire>>,
        sender: &Arc<Sender<D>>,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<(u64, u64)>,
    ) {
        let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
        self.metrics.batch_size.record(batch.len() as f64);
        let sender = sender.clone();
        let count = batch.len() as u64;
        tasks.spawn(async move {
            // A panic in a destination must not lose events uncounted: their tokens report
            // failure to waiting sources, and the count says how many.
            let outcome = std::panic::AssertUnwindSafe(sender.deliver(batch)).catch_unwind().await;
            drop(permit);
            outcome.unwrap_or_else(|_| {
                sender.metrics.failed.increment(count);
                tracing::error!(destination = %sender.id, events = count, "sending panicked; the batch is lost");
                (0, count)
            })
        });
    }
}

impl WorkerReport {
    fn add(&mut self, done: Result<(u64, u64), tokio::task::JoinError>) {
        match done {
            Ok((dead_lettered_at_shutdown, failed)) => {
                self.dead_lettered_at_shutdown += dead_lettered_at_shutdown;
                self.failed += failed;
            }
            Err(error) => {
                tracing::error!(destination = %self.destination, error = %error, "send task failed");
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl<D: Destination> Sender<D> {
    /// Delivers one batch: send, retry the retryable failures with backoff, dead-letter the
    /// rest. Returns (dead-lettered because of shutdown, failed outright).
    async fn deliver(&self, batch: Vec<Envelope<D::Wire>>) -> (u64, u64) {
        let mut failed = 0;
        let mut pending = Vec::with_capacity(batch.len());
        let mut unrenderable = Vec::new();
        for envelope in batch {
            match envelope.wire {
                Ok(wire) => pending.push(InFlight {
                    wire,
                    event: envelope.event,
                    ack: envelope.ack,
                    enqueued: envelope.enqueued,
                }),
                Err(reason) => unrenderable.push((envelope.event, envelope.ack, format!("cannot render: {reason}"))),
            }
        }
        if !unrenderable.is_empty() {
            failed += self.dead_letter(unrenderable, 0).await;
        }

        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            let results = {
                let wires: Vec<&D::Wire> = pending.iter().map(|item| &item.wire).collect();
                let send = tokio::time::timeout(self.delivery.timeout, self.destination.send(&wires));
                tokio::select! {
                    // Past the deadline nothing new is attempted: it is dead-lettered.
                    biased;
                    () = self.abort.cancelled() => {
                        let count = pending.len() as u64;
                        let reason = "shutdown deadline reached before delivery was confirmed; the destination may have received it";
                        let failures = self.dead_letter_in_flight(pending, reason, attempt + 1).await;
                        return (count - failures, failed + failures);
                    }
                    result = send => result,
                }
            };
            // The longest wait the target asked for (HTTP Retry-After), if any.
            let mut asked_delay: Option<Duration> = None;
            let results: Vec<Result<(), (ErrorClass, String)>> = match results {
                Err(_elapsed) => {
                    let reason = format!("timed out after {} ms", self.delivery.timeout.as_millis());
                    vec![Err((ErrorClass::Retryable, reason)); pending.len()]
                }
                Ok(Err(error)) => {
                    let class = self.destination.classify(&error);
                    asked_delay = self.destination.retry_after(&error);
                    vec![Err((class, error.to_string())); pending.len()]
                }
                Ok(Ok(results)) if results.len() != pending.len() => {
                    let reason = format!(
                        "destination reported {} results for {} events",
                        results.len(),
                        pending.len()
                    );
                    vec![Err((ErrorClass::Fatal, reason)); pending.len()]
                }
                Ok(Ok(results)) => results
                    .into_iter()
                    .map(|result| {
                        result.map_err(|error| {
                            asked_delay = asked_delay.max(self.destination.retry_after(&error));
                            (self.destination.classify(&error), error.to_string())
                        })
                    })
                    .collect(),
            };

            let now = Instant::now();
            let mut retry = Vec::new();
            let mut fatal = Vec::new();
            let mut last_retryable = String::new();
            // Counted once per batch: one latency sample (the batch's oldest event, so the
            // histogram shows the worst wait) and one counter increment.
            let mut delivered = 0u64;
            let mut oldest: Option<Instant> = None;
            for (item, result) in pending.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        delivered += 1;
                        oldest = Some(oldest.map_or(item.enqueued, |o| o.min(item.enqueued)));
                        item.ack.resolve(Delivery::Delivered);
                    }
                    Err((ErrorClass::Fatal, reason)) => fatal.push((item.event, item.ack, reason)),
                    Err((ErrorClass::Retryable, reason)) => {
                        last_retryable = reason;
                        retry.push(item);
                    }
                }
            }
            if delivered > 0 {
                self.metrics.delivered.increment(delivered);
            }
            if let Some(oldest) = oldest {
                self.metrics.latency.record(now.duration_since(oldest).as_secs_f64());
            }
            if !fatal.is_empty() {
                tracing::warn!(destination = %self.id, events = fatal.len(), error = %fatal[0].2, "fatal delivery error");
                failed += self.dead_letter(fatal, attempt + 1).await;
            }
            if retry.is_empty() {
                break;
            }
            if attempt >= self.delivery.retry.max_retries {
                let reason = format!("gave up after {} attempts: {last_retryable}", attempt + 1);
                failed += self.dead_letter_in_flight(retry, &reason, attempt + 1).await;
                break;
            }
            // Backoff, or what the target asked for if longer (capped, so that a bad header
            // cannot park events for hours; retries still run out and dead-letter).
            let delay = self
                .delivery
                .retry
                .delay(attempt)
                .max(asked_delay.unwrap_or_default().min(MAX_ASKED_DELAY));
            tracing::warn!(
                destination = %self.id, events = retry.len(), attempt = attempt + 1,
                retry_in = ?delay, error = %last_retryable, "delivery failed, retrying"
            );
            self.metrics.retried.increment(retry.len() as u64);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.abort.cancelled() => {
                    let count = retry.len() as u64;
                    let reason = format!("shutdown deadline reached while retrying: {last_retryable}");
                    let failures = self.dead_letter_in_flight(retry, &reason, attempt + 1).await;
                    return (count - failures, failed + failures);
                }
            }
            attempt += 1;
            pending = retry;
        }
        (0, failed)
    }

    async fn dead_letter_in_flight(&self, items: Vec<InFlight<D::Wire>>, reason: &str, attempts: u32) -> u64 {
        let letters = items
            .into_iter()
            .map(|item| (item.event, item.ack, reason.to_owned()))
            .collect();
        self.dead_letter(letters, attempts).await
    }

    async fn dead_letter_envelopes(&self, envelopes: Vec<Envelope<D::Wire>>, reason: &str) -> u64 {
        let letters = envelopes
            .into_iter()
            .map(|envelope| (envelope.event, envelope.ack, reason.to_owned()))
            .collect();
        self.dead_letter(letters, 0).await
    }

    /// Writes dead letters and resolves their acknowledgements; returns how many could not
    /// be written (those are reported as failed).
    async fn dead_letter(&self, items: Vec<(Arc<Event>, AckToken, String)>, attempts: u32) -> u64 {
        if items.is_empty() {
            return 0;
        }
        let time = SystemTime::now();
        let letters: Vec<DeadLetter> = items
            .iter()
            .map(|(event, _, reason)| DeadLetter {
                destination: self.id.clone(),
                reason: reason.clone(),
                attempts,
                event: event.clone(),
                time,
            })
            .collect();
        let count = items.len() as u64;
        match self.dead_letters.write(&letters).await {
            Ok(()) => {
                self.metrics.dead_lettered.increment(count);
                tracing::warn!(
                    destination = %self.id, events = count, reason = %items[0].2,
                    sink = %self.dead_letters.describe(), "events dead-lettered"
                );
                for (_, ack, reason) in items {
                    ack.resolve(Delivery::DeadLettered {
                        destination: self.id.clone(),
                        reason,
                    });
                }
                0
            }
            Err(error) => {
                self.metrics.failed.increment(count);
                tracing::error!(
                    destination = %self.id, events = count, error = %error,
                    "events could not be delivered nor dead-lettered"
                );
                for (_, ack, reason) in items {
                    ack.resolve(Delivery::Failed {
                        destination: self.id.clone(),
                        reason: format!("{reason}; and the dead-letter write failed: {error}"),
                    });
                }
                count
            }
        }
    }
}
