//! The knobs of the delivery machinery, under walkerOS's names: `batch` (`size`, `wait`,
//! `age`), `retry` (`maxRetries`, `retryDelay`, `maxRetryDelay`), `timeout`, `queueMax`.

use std::time::Duration;

use rand::Rng;

/// When a buffer of queued events is handed to the destination.
///
/// walkerOS semantics (walkerOS's `packages/collector/src/destination.ts`): reaching `size` flushes at once; `wait` is a
/// debounce (every new event restarts it); `age` bounds the time since the buffer's first
/// event. A destination with no `batch` configured sends as soon as it can, taking whatever
/// has queued up meanwhile (up to its default size): batching without added latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub size: usize,
    /// Optional cap on the summed wire size of a batch, in bytes.
    pub max_bytes: Option<usize>,
    pub wait: Duration,
    pub age: Duration,
}

impl BatchPolicy {
    /// Send whatever is queued, up to `size` events, without waiting.
    pub fn immediate(size: usize) -> BatchPolicy {
        BatchPolicy {
            size,
            max_bytes: None,
            wait: Duration::ZERO,
            age: Duration::ZERO,
        }
    }
}

/// walkerOS's defaults for a `batch` block that leaves a field unset (walkerOS's `packages/collector/src/destination.ts`).
pub const WALKEROS_BATCH_SIZE: usize = 1000;
pub const WALKEROS_BATCH_WAIT: Duration = Duration::from_millis(30_000);
pub const WALKEROS_BATCH_AGE: Duration = Duration::from_millis(30_000);

/// How failed sends are retried before an event is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; an event is tried `max_retries + 1` times.
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for RetryPolicy {
    /// About 40 s of retrying in all: long enough to ride out a Redis or broker restart,
    /// short enough that an event does not sit in memory for minutes.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_millis(10_000),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0-based): exponential from `retryDelay`, capped at
    /// `maxRetryDelay`, with "equal jitter" (half fixed, half random) so that many workers
    /// failing together do not retry in lockstep, while the delay never collapses to zero.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self
            .retry_delay
            .saturating_mul(2u32.saturating_pow(retry.min(31)))
            .min(self.max_retry_delay);
        let half = base / 2;
        let jitter_nanos = rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }
}

/// Everything the delivery machinery needs to know about one destination.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// The destination-wide batch policy; rules with their own `batch` get their own buffer.
    pub batch: BatchPolicy,
    pub retry: RetryPolicy,
    /// Per-attempt send timeout (walkerOS `timeout`, default 10 000 ms).
    pub timeout: Duration,
    /// Events that may wait in the destination's queue (weir's bound; default 10 000).
    pub queue_max: usize,
    /// Batches sent at the same time.
    pub concurrency: usize,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_QUEUE_MAX: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_exponentially_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 10,
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let first = policy.delay(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.delay(2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.delay(30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }
}
