//! The delivery machinery, written once and used by every destination.
//!
//! A destination implements [`Destination`]: connect and check, render one mapped event into
//! its wire form, send a batch and report per-event outcomes, classify its errors as
//! retryable or fatal, shut down. Everything else is here and the same for all of them, one
//! file per role:
//! - [`route`]: the request path — mapping and consent, rendering, a reservation for the
//!   whole batch, queuing; `weir explain`'s outcome;
//! - `queue`: the bounded queue between the two halves; `batcher`: batches by `batch`
//!   (size / wait / age); `metrics`: the destination's counters;
//! - [`worker`]: sending, retrying (`retry`: exponential backoff with jitter) and
//!   dead-lettering ([`dead_letter`]), and shutdown;
//! - [`feed`]: a journaled destination's reader, which takes events from the journal through
//!   its cursor into the same queue (the request path only appends to the journal);
//! - [`tap`]: what became of each event, for whoever watches (`weir tap`);
//! - [`ack`]: the end-to-end acknowledgement that tells the source, per event, whether it
//!   was delivered or dead-lettered; [`policy`]: the settings all of it runs by.
//!
//! No destination catches and logs its own errors: it returns them, and the machinery
//! retries, dead-letters and counts.

pub mod ack;
mod batcher;
pub mod dead_letter;
pub mod feed;
mod metrics;
pub mod policy;
mod queue;
pub mod route;
pub mod tap;
pub mod worker;

use std::future::Future;

use serde_json::Value;

use crate::event::Event;

/// Why one event cannot be rendered for a destination. The event is dead-lettered with it
/// (cause `unrenderable`); `weir explain` shows it as `rejected`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// Larger than the target takes in one request or record (`setting` is the limit's name).
    #[error("the event's messages are {size} bytes, more than {setting} ({limit}) allows in one request")]
    TooLarge {
        size: usize,
        limit: usize,
        setting: &'static str,
    },
    /// A value the target needs is not in the event.
    #[error("{field} is missing")]
    Missing { field: &'static str },
    /// A value the target cannot represent.
    #[error("{field} {value} is outside {allowed}")]
    OutOfRange {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// The mapping failed (a rule's JavaScript condition threw).
    #[error("the mapping failed: {0}")]
    Mapping(String),
}

/// Routes a destination serves over HTTP, and where.
#[derive(Clone)]
pub struct Endpoint {
    /// The path it answers (for clash checks and logs).
    pub path: String,
    pub router: axum::Router,
    /// A listener of its own (`settings.listen`); `None` serves it on every HTTP source's
    /// listener.
    pub listen: Option<String>,
}

/// The connection a request came on, in the request's extensions (on listeners that serve
/// an [`Endpoint`], for GET requests): cancelling it closes the connection at once. An SSE
/// hub cuts off a client too slow to keep up this way, without waiting for it to read what
/// is still buffered for it.
#[derive(Clone, Debug)]
pub struct Hangup(pub tokio_util::sync::CancellationToken);

/// Whether sending again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: connection loss, timeouts, a server loading or failing over. Retried with
    /// backoff, then dead-lettered when retries run out.
    Retryable,
    /// Retrying cannot help (wrong type, auth, payload rejected): dead-lettered at once.
    Fatal,
}

/// Defaults a destination gives the machinery when the flow file does not set them.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryDefaults {
    /// Largest batch handed to [`Destination::send`].
    pub batch_size: usize,
    /// Largest summed [`Destination::wire_size`] of a batch, if the target limits request
    /// sizes (RudderStack's `maxQueueSize`, Kafka's message size).
    pub batch_bytes: Option<usize>,
    /// Batches in flight at once. Destinations whose order matters (a file) use 1.
    pub concurrency: usize,
    /// Hold a batch until it is full or its first event is this old (RudderStack's
    /// `flushInterval`); `None` sends whatever is queued at once.
    pub batch_age: Option<std::time::Duration>,
    /// Retries before dead-lettering, when the flow file's `retry.maxRetries` is unset
    /// (RudderStack's `retryCount`).
    pub max_retries: Option<u32>,
    /// Queue bound, when the flow file's `queueMax` is unset (RudderStack's
    /// `maxInternalQueueSize`).
    pub queue_max: Option<usize>,
    /// Per-attempt timeout when the flow file's `timeout` is unset, and its least allowed
    /// value: a client that reports each record's fate itself within a bound (Kafka's message
    /// timeout) must be given that long.
    pub attempt_timeout: Option<std::time::Duration>,
}

impl Default for DeliveryDefaults {
    fn default() -> Self {
        DeliveryDefaults {
            batch_size: 500,
            batch_bytes: None,
            concurrency: 1,
            batch_age: None,
            max_retries: None,
            queue_max: None,
            attempt_timeout: None,
        }
    }
}

/// One event as a destination renders it: mapping and consent have been applied.
pub struct RenderInput<'a, S> {
    /// The event after the destination's policy, rule `name` and rule policy, with `consent`
    /// reduced to the granted groups and `user` merged with the collector's user.
    pub event: &'a Event,
    /// The mapped `data` (config `data` merged with rule `data`, `include`, `remove`), if any.
    pub data: Option<&'a Value>,
    /// The matched rule's destination-specific `settings`, if a rule matched and has some.
    pub rule_settings: Option<&'a S>,
    /// The matched rule's `name`, if it has one.
    pub rule_name: Option<&'a str>,
    /// The matched rule says `silent` (or its older name `skip`): suppress the default call.
    pub silent: bool,
    /// The collector's state, for destination settings that are walkerOS value specs (a
    /// Kafka `key` path, RudderStack `identify`): evaluate them with
    /// [`ValueContext`](crate::mapping::ValueContext) built from its consent.
    pub collector: &'a crate::collector::Collector,
    /// The destination's id (code failures in its settings are counted under it).
    pub destination: &'a str,
}

impl<S> RenderInput<'_, S> {
    /// What a destination's value-spec settings (a Kafka `key`, RudderStack's `identify`)
    /// read while rendering this event.
    pub fn value_context(&self) -> crate::mapping::ValueContext<'_> {
        crate::mapping::value_context(self.event, self.collector, self.destination)
    }
}

/// What a destination makes of one event.
pub enum Rendered<W> {
    /// Put this on the wire.
    Send(W),
    /// Nothing to send for this event, and that is correct (e.g. a `silent` rule); the reason
    /// is counted and shown by `weir explain`.
    Skip(String),
}

/// A destination: the part of delivery that differs per target system.
pub trait Destination: Send + Sync + Sized + 'static {
    /// The destination-specific `settings` of a mapping rule (e.g. Redis `streamKey`).
    type RuleSettings: crate::mapping::RuleSettings + std::fmt::Debug + Send + Sync + 'static;
    /// One event in wire form, rendered once on the request path.
    type Wire: Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// The `type` name in flow files.
    const KIND: &'static str;
    /// walkerOS's npm package for this destination, which a flow file may name instead of
    /// `type` (`@walkeros/server-destination-redis`).
    const PACKAGE: Option<&'static str> = None;

    /// Reads the entry's `config.settings` (found at `path`), reporting every problem into
    /// `errors` with its path; `None` when the destination cannot be built.
    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut crate::config::ConfigErrors) -> Option<Self>;

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults::default()
    }

    /// Told whether the flow file gives it `batch` settings (on the destination or a rule),
    /// before it runs: the API destination then sends arrays instead of single events.
    fn use_batches(&mut self, _configured: bool) {}

    /// Connects and checks the target (versions, permissions). Retried with backoff until it
    /// succeeds; the destination counts as ready (`/readyz`) from then on.
    fn connect(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Renders one mapped event. An `Err` is a problem with this event for this destination
    /// (it is dead-lettered with the message, never dropped).
    ///
    /// Runs on the request path, on many threads at once, and also for `weir explain`, for
    /// events that may yet be refused (a full queue): state that depends on event order
    /// (RudderStack's identify de-duplication) belongs in `send`, which the worker calls in
    /// queue order when one batch is in flight at a time (`concurrency` 1) and the rules have
    /// no batch settings of their own.
    fn render(&self, input: &RenderInput<'_, Self::RuleSettings>) -> Result<Rendered<Self::Wire>, RenderError>;

    /// The wire form as `weir explain` prints it.
    fn explain(&self, wire: &Self::Wire) -> Value;

    /// Size of the wire form in bytes, for batch byte limits.
    fn wire_size(&self, wire: &Self::Wire) -> usize;

    /// Sends a batch. `Err` means the whole batch failed; `Ok` holds one result per event, in
    /// batch order.
    fn send(
        &self,
        batch: &[&Self::Wire],
    ) -> impl Future<Output = Result<Vec<Result<(), Self::Error>>, Self::Error>> + Send;

    fn classify(&self, error: &Self::Error) -> ErrorClass;

    /// How long the target asked to be left alone (HTTP `Retry-After`): the next attempt
    /// waits at least this long.
    fn retry_after(&self, _error: &Self::Error) -> Option<std::time::Duration> {
        None
    }

    /// The Redis streams it writes to (the destination-level key; rules may add others).
    fn stream_targets(&self) -> Vec<String> {
        Vec::new()
    }

    /// The routes this destination serves over HTTP (the SSE hub).
    fn http_endpoint(&self) -> Option<Endpoint> {
        None
    }

    /// Whether it takes journaled events from the journal, through its own cursor (they
    /// survive a crash and an outage of any length). A live fan-out (the SSE hub) says no:
    /// its clients want what happens now, not a replay after a restart.
    fn journaled(&self) -> bool {
        true
    }

    /// Files this destination writes into, so that two writers on one file are caught
    /// before the flow starts.
    fn written_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// Flushes and closes. Called once, after the last batch was sent.
    fn shutdown(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The flow is shutting down, or a reload retired this destination: let go of
    /// long-lived clients (an SSE hub ends its streams, so listeners can close) while what
    /// is queued is still delivered.
    fn closing(&self) {}
}

#[cfg(test)]
mod tests;
