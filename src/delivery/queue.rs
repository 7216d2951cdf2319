//! The queue between the request path and a destination's worker.
//!
//! An unbounded channel whose length is bounded by reservations on a counter rather than a
//! bounded channel, so that a request can reserve room at every destination before queuing
//! anything: a full queue turns the whole request away (503) instead of delivering half of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::RenderError;
use super::ack::AckToken;
use crate::event::Event;

pub(super) struct Envelope<W> {
    pub(super) wire: Result<W, RenderError>,
    pub(super) event: Arc<Event>,
    pub(super) ack: AckToken,
    pub(super) slot: usize,
    pub(super) size: usize,
    pub(super) enqueued: Instant,
    /// The source that took it in: only while someone watches the [`super::tap`].
    pub(super) source: Option<Arc<str>>,
}

/// The queue between the request path and the worker: an unbounded channel whose length is
/// bounded by reservations on `depth`.
pub(super) struct Queue<W> {
    pub(super) sender: mpsc::UnboundedSender<Envelope<W>>,
    pub(super) depth: Arc<AtomicUsize>,
    pub(super) capacity: usize,
    /// Notified when the worker has taken events out (room for a waiting journal feed).
    pub(super) room: Arc<Notify>,
}

impl<W> Queue<W> {
    pub(super) fn try_reserve(&self, count: usize) -> bool {
        self.depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth + count <= self.capacity).then_some(depth + count)
            })
            .is_ok()
    }

    pub(super) fn release(&self, count: usize) {
        self.depth.fetch_sub(count, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}
