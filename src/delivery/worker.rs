//! A destination's worker: connects, batches what the queue holds, sends batches (several
//! at once up to `concurrency`), retries retryable failures with backoff, dead-letters the
//! rest with the reason, resolves every event's acknowledgement, and at shutdown delivers
//! what was accepted or dead-letters it when the deadline passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack::{AckToken, Delivery};
use super::batcher::Buffer;
use super::dead_letter::{Cause, DeadLetter, DeadLetterSink};
use super::metrics::{DestinationMetrics, State};
use super::policy::{BatchPolicy, DeliveryPolicy};
use super::queue::Envelope;
use super::{Destination, ErrorClass};
use crate::event::Event;

/// Longest wait a target's `Retry-After` can impose between two attempts.
const MAX_ASKED_DELAY: Duration = Duration::from_secs(300);

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
    /// A reload retired this destination: its journal feed takes records up to `stop_at`
    /// (the last one committed when the new flow took over), then stops; later records are
    /// left to its successor.
    pub retire: CancellationToken,
    pub stop_at: Arc<std::sync::atomic::AtomicU64>,
}

impl Lifecycle {
    /// One destination's own signals: cancelled with the flow's, or alone when a reload
    /// retires that destination.
    pub fn child(&self) -> Lifecycle {
        Lifecycle {
            flush: self.flush.child_token(),
            drain: self.drain.child_token(),
            abort: self.abort.child_token(),
            retire: self.retire.child_token(),
            stop_at: Arc::default(),
        }
    }
}

/// What a worker did by the time it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    pub destination: String,
    /// Events dead-lettered because the shutdown deadline passed.
    pub dead_lettered_at_shutdown: u64,
    /// Events neither delivered nor dead-lettered (the dead-letter write failed).
    pub failed: u64,
    /// Journaled events not delivered by the deadline: they stay in the journal.
    pub held: u64,
}

/// The receiving half of a pipeline; run it on the runtime with [`Worker::run`].
pub struct Worker<D: Destination> {
    pub(super) id: Arc<str>,
    pub(super) destination: Arc<D>,
    pub(super) receiver: mpsc::UnboundedReceiver<Envelope<D::Wire>>,
    pub(super) depth: Arc<AtomicUsize>,
    pub(super) room: Arc<Notify>,
    /// Slot 0 is the destination-wide policy; rules with their own `batch` have theirs.
    pub(super) policies: Vec<BatchPolicy>,
    pub(super) delivery: DeliveryPolicy,
    pub(super) dead_letters: DeadLetterSink,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) metrics: Arc<DestinationMetrics>,
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
    /// Set only while the tap is watched.
    source: Option<Arc<str>>,
}

/// An event to dead-letter, and why.
struct Letter {
    event: Arc<Event>,
    ack: AckToken,
    reason: String,
    source: Option<Arc<str>>,
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
                if envelope.ack.is_journaled() {
                    // Delivered after a restart, from the journal.
                    report.held += 1;
                    envelope.ack.abandon(&self.id, &reason);
                } else {
                    stranded.push(envelope);
                }
            }
            let count = stranded.len() as u64;
            let failed = sender
                .dead_letter_envelopes(stranded, Cause::NeverConnected, &reason)
                .await;
            report.dead_lettered_at_shutdown = count - failed;
            report.failed = failed;
            return report;
        }

        let permits = Arc::new(Semaphore::new(self.delivery.concurrency.max(1)));
        let mut tasks: JoinSet<Tally> = JoinSet::new();
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
                    self.destination.closing();
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
                    self.room.notify_waiters();
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
                    self.metrics.health.set(State::Up, None);
                    tracing::info!(destination = %self.id, kind = D::KIND, "destination connected");
                    return Ok(());
                }
                Err(error) => {
                    self.metrics.health.set(State::Connecting, Some(&error.to_string()));
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
        tasks: &mut JoinSet<Tally>,
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
        tasks: &mut JoinSet<Tally>,
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
                Tally {
                    failed: count,
                    ..Tally::default()
                }
            })
        });
    }
}

/// What became of one batch's events that were not delivered.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    dead_lettered_at_shutdown: u64,
    failed: u64,
    held: u64,
}

impl WorkerReport {
    fn add(&mut self, done: Result<Tally, tokio::task::JoinError>) {
        match done {
            Ok(tally) => {
                self.dead_lettered_at_shutdown += tally.dead_lettered_at_shutdown;
                self.failed += tally.failed;
                self.held += tally.held;
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
    /// rest — except journaled events, which an outage never dead-letters: they are retried
    /// for as long as it lasts, and at the shutdown deadline stay in the journal.
    async fn deliver(&self, batch: Vec<Envelope<D::Wire>>) -> Tally {
        let mut tally = Tally::default();
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
                    source: envelope.source,
                }),
                Err(reason) => unrenderable.push(Letter {
                    event: envelope.event,
                    ack: envelope.ack,
                    reason: format!("cannot render: {reason}"),
                    source: envelope.source,
                }),
            }
        }
        if !unrenderable.is_empty() {
            failed += self.dead_letter(unrenderable, Cause::Unrenderable, 0).await;
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
                        let reason = "shutdown deadline reached before delivery was confirmed; the destination may have received it";
                        return self.give_up_at_deadline(pending, reason, attempt + 1, tally, failed).await;
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
            let tapping = super::tap::active();
            for (item, result) in pending.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        delivered += 1;
                        oldest = Some(oldest.map_or(item.enqueued, |o| o.min(item.enqueued)));
                        item.ack.resolve(Delivery::Delivered);
                        if tapping {
                            let wire = Some(self.destination.explain(&item.wire));
                            super::tap::publish(item.source, &self.id, item.event, "delivered", None, wire);
                        }
                    }
                    Err((ErrorClass::Fatal, reason)) => fatal.push(Letter {
                        event: item.event,
                        ack: item.ack,
                        reason,
                        source: item.source,
                    }),
                    Err((ErrorClass::Retryable, reason)) => {
                        last_retryable = reason;
                        retry.push(item);
                    }
                }
            }
            if delivered > 0 {
                self.metrics.delivered.increment(delivered);
                self.metrics.health.set(State::Up, None);
            }
            if let Some(oldest) = oldest {
                self.metrics.latency.record(now.duration_since(oldest).as_secs_f64());
            }
            if !fatal.is_empty() {
                tracing::warn!(destination = %self.id, events = fatal.len(), error = %fatal[0].reason, "fatal delivery error");
                failed += self.dead_letter(fatal, Cause::Fatal, attempt + 1).await;
            }
            if retry.is_empty() {
                break;
            }
            if delivered == 0 {
                self.metrics.health.set(State::Retrying, Some(&last_retryable));
            }
            if attempt >= self.delivery.retry.max_retries {
                let (journaled, exhausted): (Vec<_>, Vec<_>) =
                    retry.into_iter().partition(|item| item.ack.is_journaled());
                let reason = format!("gave up after {} attempts: {last_retryable}", attempt + 1);
                failed += self
                    .dead_letter_in_flight(exhausted, Cause::RetriesExhausted, &reason, attempt + 1)
                    .await;
                retry = journaled;
                if retry.is_empty() {
                    break;
                }
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
                    let reason = format!("shutdown deadline reached while retrying: {last_retryable}");
                    return self.give_up_at_deadline(retry, &reason, attempt + 1, tally, failed).await;
                }
            }
            attempt = attempt.saturating_add(1);
            pending = retry;
        }
        tally.failed = failed;
        tally
    }

    /// The shutdown deadline passed: journaled events stay in the journal (held), the rest
    /// are dead-lettered.
    async fn give_up_at_deadline(
        &self,
        items: Vec<InFlight<D::Wire>>,
        reason: &str,
        attempts: u32,
        mut tally: Tally,
        failed: u64,
    ) -> Tally {
        let (journaled, others): (Vec<_>, Vec<_>) = items.into_iter().partition(|item| item.ack.is_journaled());
        tally.held += journaled.len() as u64;
        let tapping = super::tap::active();
        for item in journaled {
            item.ack.abandon(&self.id, reason);
            if tapping {
                super::tap::publish(item.source, &self.id, item.event, "held", Some(reason.to_owned()), None);
            }
        }
        let count = others.len() as u64;
        let failures = self
            .dead_letter_in_flight(others, Cause::ShutdownDeadline, reason, attempts)
            .await;
        tally.dead_lettered_at_shutdown += count - failures;
        tally.failed = failed + failures;
        tally
    }

    async fn dead_letter_in_flight(
        &self,
        items: Vec<InFlight<D::Wire>>,
        cause: Cause,
        reason: &str,
        attempts: u32,
    ) -> u64 {
        let letters = items
            .into_iter()
            .map(|item| Letter {
                event: item.event,
                ack: item.ack,
                reason: reason.to_owned(),
                source: item.source,
            })
            .collect();
        self.dead_letter(letters, cause, attempts).await
    }

    async fn dead_letter_envelopes(&self, envelopes: Vec<Envelope<D::Wire>>, cause: Cause, reason: &str) -> u64 {
        let letters = envelopes
            .into_iter()
            .map(|envelope| Letter {
                event: envelope.event,
                ack: envelope.ack,
                reason: reason.to_owned(),
                source: envelope.source,
            })
            .collect();
        self.dead_letter(letters, cause, 0).await
    }

    /// Writes dead letters and resolves their acknowledgements; returns how many could not
    /// be written (those are reported as failed).
    async fn dead_letter(&self, items: Vec<Letter>, cause: Cause, attempts: u32) -> u64 {
        if items.is_empty() {
            return 0;
        }
        let time = SystemTime::now();
        let letters: Vec<DeadLetter> = items
            .iter()
            .map(|letter| DeadLetter {
                destination: self.id.clone(),
                cause,
                reason: letter.reason.clone(),
                attempts,
                event: letter.event.clone(),
                time,
            })
            .collect();
        let count = items.len() as u64;
        match self.dead_letters.write(&letters).await {
            Ok(()) => {
                self.metrics.count_dead_letters(cause, count);
                self.metrics.health.dead_lettered(cause, &items[0].reason);
                tracing::warn!(
                    destination = %self.id, events = count, cause = cause.label(), reason = %items[0].reason,
                    sink = %self.dead_letters.describe(), "events dead-lettered"
                );
                let tapping = super::tap::active();
                for letter in items {
                    if tapping {
                        self.tap(
                            &letter,
                            "dead_lettered",
                            format!("{}: {}", cause.label(), letter.reason),
                        );
                    }
                    letter.ack.resolve(Delivery::DeadLettered {
                        destination: self.id.clone(),
                        reason: letter.reason,
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
                let tapping = super::tap::active();
                for letter in items {
                    let reason = format!("{}; and the dead-letter write failed: {error}", letter.reason);
                    if tapping {
                        self.tap(&letter, "failed", reason.clone());
                    }
                    letter.ack.resolve(Delivery::Failed {
                        destination: self.id.clone(),
                        reason,
                    });
                }
                count
            }
        }
    }

    /// Tells the tap what became of a letter.
    fn tap(&self, letter: &Letter, outcome: &'static str, reason: String) {
        let event = letter.event.clone();
        super::tap::publish(letter.source.clone(), &self.id, event, outcome, Some(reason), None);
    }
}
