//! Batches form per batch policy (the destination's, and each rule's with its own `batch`):
//! full at `size` events (or `max_bytes`), else sent `wait` after the latest event (a
//! debounce) or `age` after the first, whichever comes first; at once during shutdown.

use tokio::time::Instant;

use super::policy::BatchPolicy;
use super::queue::Envelope;

/// A buffer of events waiting to form a batch under one policy.
pub(super) struct Buffer<W> {
    pub(super) envelopes: Vec<Envelope<W>>,
    pub(super) bytes: usize,
    pub(super) first_at: Option<Instant>,
    pub(super) last_at: Option<Instant>,
}

impl<W> Buffer<W> {
    pub(super) fn new() -> Self {
        Buffer {
            envelopes: Vec::new(),
            bytes: 0,
            first_at: None,
            last_at: None,
        }
    }

    pub(super) fn push(&mut self, envelope: Envelope<W>) {
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.bytes += envelope.size;
        self.envelopes.push(envelope);
    }

    /// Whether adding an event of `size` bytes would take the batch past its byte limit:
    /// then the batch goes first (RudderStack's body limit is a hard one).
    pub(super) fn would_overflow(&self, policy: &BatchPolicy, size: usize) -> bool {
        !self.envelopes.is_empty() && policy.max_bytes.is_some_and(|max| self.bytes + size > max)
    }

    pub(super) fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.envelopes.len() >= policy.size || policy.max_bytes.is_some_and(|max| self.bytes >= max)
    }

    /// When this buffer must be flushed even if it is not full: `wait` after its latest
    /// event (a debounce) or `age` after its first, whichever comes first; at once while the
    /// flow shuts down.
    pub(super) fn deadline(&self, policy: &BatchPolicy, shutting_down: bool) -> Option<Instant> {
        let (first, last) = (self.first_at?, self.last_at?);
        if shutting_down {
            return Some(first);
        }
        Some((last + policy.wait).min(first + policy.age))
    }

    pub(super) fn take(&mut self) -> Vec<Envelope<W>> {
        self.bytes = 0;
        self.first_at = None;
        self.last_at = None;
        std::mem::take(&mut self.envelopes)
    }
}
