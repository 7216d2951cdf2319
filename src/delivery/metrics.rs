//! One destination's metric handles, resolved once when it is wired: what was delivered,
//! retried, dead-lettered, not sent (and why), queue depth, batch sizes, latency.

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
