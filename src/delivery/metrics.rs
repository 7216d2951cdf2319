//! One destination's metric handles, resolved once when it is wired: what was delivered,
//! retried, dead-lettered, not sent (and why), queue depth, batch sizes, latency; and its
//! [`Health`], what the numbers cannot say (connected or retrying, the last error, the last
//! dead letters' reasons).

use metrics::{Counter, Gauge, Histogram};

use super::dead_letter::Cause;
use super::route::Outcome;

/// Metric handles for one destination, resolved once.
pub struct DestinationMetrics {
    pub(super) delivered: Counter,
    pub(super) retried: Counter,
    pub(super) dead_lettered: Counter,
    /// `weir_dead_letters_total{cause}`, in [`Cause::ALL`]'s order.
    dead_lettered_by_cause: Vec<Counter>,
    pub(super) failed: Counter,
    pub(super) ignored: Counter,
    pub(super) consent: Counter,
    pub(super) skipped: Counter,
    pub(super) queue_full: Counter,
    pub(super) queue_depth: Gauge,
    pub(super) batch_size: Histogram,
    pub(super) latency: Histogram,
    pub(super) health: Health,
}

impl DestinationMetrics {
    pub(super) fn new(id: &str) -> DestinationMetrics {
        let label = [("destination", id.to_owned())];
        let outcome = |reason: Outcome| {
            let labels = [("destination", id.to_owned()), ("reason", reason.label().to_owned())];
            metrics::counter!("weir_events_not_sent_total", &labels)
        };
        DestinationMetrics {
            delivered: metrics::counter!("weir_events_delivered_total", &label),
            retried: metrics::counter!("weir_events_retried_total", &label),
            dead_lettered: metrics::counter!("weir_events_dead_lettered_total", &label),
            dead_lettered_by_cause: Cause::ALL
                .iter()
                .map(|cause| {
                    let labels = [("destination", id.to_owned()), ("cause", cause.label().to_owned())];
                    metrics::counter!("weir_dead_letters_total", &labels)
                })
                .collect(),
            failed: metrics::counter!("weir_events_failed_total", &label),
            ignored: outcome(Outcome::Ignored),
            consent: outcome(Outcome::Consent),
            skipped: outcome(Outcome::Skipped),
            queue_full: metrics::counter!("weir_queue_full_total", &label),
            queue_depth: metrics::gauge!("weir_queue_depth", &label),
            batch_size: metrics::histogram!("weir_batch_size", &label),
            latency: metrics::histogram!("weir_delivery_latency_seconds", &label),
            health: Health::default(),
        }
    }
}

impl DestinationMetrics {
    /// Counts `count` events dead-lettered for `cause`.
    pub(super) fn count_dead_letters(&self, cause: Cause, count: u64) {
        self.dead_lettered.increment(count);
        let index = Cause::ALL.iter().position(|known| *known == cause).unwrap_or_default();
        self.dead_lettered_by_cause[index].increment(count);
    }
}

/// How many dead-letter reasons a destination's [`Health`] keeps.
const RECENT_DEAD_LETTERS: usize = 5;

/// What a destination is doing, beyond its numbers: the status page's state column. Set by
/// the worker as it connects and sends; read by whoever asks ([`super::route::Route::health`]).
#[derive(Default)]
pub struct Health(std::sync::Mutex<HealthState>);

/// A destination's state at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthState {
    pub state: State,
    /// When the state last changed.
    pub since: Option<std::time::SystemTime>,
    /// The last connection or delivery error (kept after recovery, with its time).
    pub last_error: Option<(std::time::SystemTime, String)>,
    /// The last few dead letters, newest last: time, cause and reason.
    pub dead_letters: std::collections::VecDeque<(std::time::SystemTime, Cause, String)>,
}

/// Where a destination stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum State {
    /// Not connected yet (the last error says why, if an attempt failed).
    #[default]
    Connecting,
    /// Connected, and the last delivery (if any) went through.
    Up,
    /// The last delivery failed with a retryable error: the target is unreachable or
    /// refusing for now; events wait (queued or journaled) and are retried.
    Retrying,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Retrying => "retrying",
        }
    }
}

impl Health {
    fn update(&self, change: impl FnOnce(&mut HealthState)) {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut state);
    }

    /// Moves to `state`; `error` (if any) becomes the last error.
    pub(super) fn set(&self, state: State, error: Option<&str>) {
        self.update(|health| {
            let now = std::time::SystemTime::now();
            if health.state != state || health.since.is_none() {
                health.state = state;
                health.since = Some(now);
            }
            if let Some(error) = error {
                health.last_error = Some((now, error.to_owned()));
            }
        });
    }

    pub(super) fn dead_lettered(&self, cause: Cause, reason: &str) {
        self.update(|health| {
            if health.dead_letters.len() == RECENT_DEAD_LETTERS {
                health.dead_letters.pop_front();
            }
            health
                .dead_letters
                .push_back((std::time::SystemTime::now(), cause, reason.to_owned()));
        });
    }

    pub fn snapshot(&self) -> HealthState {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}
