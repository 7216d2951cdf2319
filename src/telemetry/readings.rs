//! Every metric the process records, readable in-process, with a little history: what the
//! status page shows. A second recorder beside Prometheus's (a fanout sends each update to
//! both) rather than parsing Prometheus text back: values stay numbers, and the hot paths
//! keep the handles they resolve once. Kept by hand because no crate keeps a rolling
//! per-second history; the storage itself is metrics-util's atomic registry.
//!
//! Once a second [`Readings::tick`] takes what every counter gained (five minutes kept) and
//! folds every histogram's new samples into that second's buckets (one minute kept), so
//! memory stays flat whether or not anyone looks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Seconds of counter history kept (the status page's charts).
pub const HISTORY_SECONDS: usize = 300;
/// Seconds of histogram samples quantiles are taken over.
pub const QUANTILE_SECONDS: usize = 60;
/// Histogram buckets grow by this factor from [`SMALLEST`]: a quantile is known to ±12%.
const GROWTH: f64 = 1.25;
const SMALLEST: f64 = 1e-6;
const BUCKETS: usize = 130;

/// One metric's current value and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Quantiles of one histogram (one label set) over the last [`QUANTILE_SECONDS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles {
    pub labels: Vec<(String, String)>,
    /// In the order asked for; `None` when it had no samples.
    pub values: Option<Vec<f64>>,
}

impl Quantiles {
    pub fn label(&self, name: &str) -> Option<&str> {
        label(&self.labels, name)
    }
}

impl Reading {
    pub fn label(&self, name: &str) -> Option<&str> {
        label(&self.labels, name)
    }
}

pub struct Readings {
    registry: Registry<Key, AtomicStorage>,
    history: Mutex<History>,
}

impl Default for Readings {
    fn default() -> Self {
        Readings {
            registry: Registry::atomic(),
            history: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct History {
    /// Per counter: its value at the last tick, and what it gained in each second since.
    counters: HashMap<Key, (u64, VecDeque<u32>)>,
    /// Per histogram: bucket counts per second.
    histograms: HashMap<Key, VecDeque<Vec<u32>>>,
}

/// The value of label `name`.
fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn bucket(value: f64) -> usize {
    if value.is_nan() || value <= SMALLEST {
        return 0;
    }
    ((value / SMALLEST).ln() / GROWTH.ln()).ceil().min((BUCKETS - 1) as f64) as usize
}

/// The value a bucket stands for: the geometric middle of its bounds.
fn bucket_value(index: usize) -> f64 {
    if index == 0 {
        return SMALLEST;
    }
    SMALLEST * GROWTH.powf(index as f64 - 0.5)
}

fn labels(key: &Key) -> Vec<(String, String)> {
    key.labels()
        .map(|label| (label.key().to_owned(), label.value().to_owned()))
        .collect()
}

impl Readings {
    /// Every counter's total.
    pub fn counters(&self) -> Vec<Reading> {
        let mut out = Vec::new();
        self.registry.visit_counters(|key, counter| {
            out.push(Reading {
                name: key.name().to_owned(),
                labels: labels(key),
                value: counter.load(Ordering::Relaxed) as f64,
            });
        });
        out
    }

    /// Every gauge's value.
    pub fn gauges(&self) -> Vec<Reading> {
        let mut out = Vec::new();
        self.registry.visit_gauges(|key, gauge| {
            out.push(Reading {
                name: key.name().to_owned(),
                labels: labels(key),
                value: f64::from_bits(gauge.load(Ordering::Relaxed)),
            });
        });
        out
    }

    /// Counters named `name`, each with what it gained per second over the last
    /// [`HISTORY_SECONDS`] (oldest first; fewer while the process is young).
    pub fn rates(&self, name: &str) -> Vec<(Reading, Vec<u32>)> {
        let history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        history
            .counters
            .iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(key, (total, seconds))| {
                let reading = Reading {
                    name: name.to_owned(),
                    labels: labels(key),
                    value: *total as f64,
                };
                (reading, seconds.iter().copied().collect())
            })
            .collect()
    }

    /// Quantiles (`0.5`, `0.99`...) of histogram `name` over the last [`QUANTILE_SECONDS`],
    /// per label set.
    pub fn quantiles(&self, name: &str, quantiles: &[f64]) -> Vec<Quantiles> {
        let history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        history
            .histograms
            .iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(key, seconds)| {
                let mut sum = [0u64; BUCKETS];
                for second in seconds {
                    for (total, count) in sum.iter_mut().zip(second) {
                        *total += u64::from(*count);
                    }
                }
                let samples: u64 = sum.iter().sum();
                let values = (samples > 0).then(|| {
                    quantiles
                        .iter()
                        .map(|quantile| {
                            let rank = (quantile * samples as f64).ceil().max(1.0) as u64;
                            let mut seen = 0;
                            let index = sum
                                .iter()
                                .position(|count| {
                                    seen += count;
                                    seen >= rank
                                })
                                .unwrap_or(BUCKETS - 1);
                            bucket_value(index)
                        })
                        .collect()
                });
                Quantiles {
                    labels: labels(key),
                    values,
                }
            })
            .collect()
    }

    /// Takes this second's sample: counter increments, histogram samples into buckets.
    pub fn tick(&self) {
        let mut history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let History { counters, histograms } = &mut *history;
        self.registry.visit_counters(|key, counter| {
            let now = counter.load(Ordering::Relaxed);
            let (last, seconds) = counters.entry(key.clone()).or_insert_with(|| (0, VecDeque::new()));
            if seconds.len() == HISTORY_SECONDS {
                seconds.pop_front();
            }
            seconds.push_back(u32::try_from(now.saturating_sub(*last)).unwrap_or(u32::MAX));
            *last = now;
        });
        self.registry.visit_histograms(|key, samples| {
            let seconds = histograms.entry(key.clone()).or_default();
            if seconds.len() == QUANTILE_SECONDS {
                seconds.pop_front();
            }
            let mut counts = vec![0u32; BUCKETS];
            samples.clear_with(|values| {
                for value in values {
                    counts[bucket(*value)] = counts[bucket(*value)].saturating_add(1);
                }
            });
            seconds.push_back(counts);
        });
    }
}

/// The recorder half: every update lands in the registry's atomics.
pub(super) struct Recorder(pub(super) Arc<Readings>);

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.registry.get_or_create_histogram(key, Arc::clone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_rates_and_quantiles_read_back() {
        let readings = Arc::new(Readings::default());
        let recorder = Recorder(readings.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("delivered", "destination" => "a").increment(5);
            metrics::gauge!("depth", "destination" => "a").set(7.0);
            for millis in 1..=100 {
                metrics::histogram!("latency", "destination" => "a").record(f64::from(millis) / 1000.0);
            }
        });
        readings.tick();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("delivered", "destination" => "a").increment(3);
        });
        readings.tick();

        let counters = readings.counters();
        assert_eq!(counters.len(), 1);
        assert_eq!((counters[0].value, counters[0].label("destination")), (8.0, Some("a")));
        assert_eq!(readings.gauges()[0].value, 7.0);
        let rates = readings.rates("delivered");
        assert_eq!(rates[0].1, vec![5, 3]);
        let quantiles = readings.quantiles("latency", &[0.5, 0.99]);
        let values = quantiles[0].values.clone().unwrap();
        // Within a bucket's width of the true 50 ms and 99 ms.
        assert!((values[0] / 0.050 - 1.0).abs() < 0.13, "{values:?}");
        assert!((values[1] / 0.099 - 1.0).abs() < 0.13, "{values:?}");
        // The samples were taken once: the next second has none.
        readings.tick();
        let later = readings.quantiles("latency", &[0.5]);
        assert!(later[0].values.is_some(), "the minute still holds them");
    }

    #[test]
    fn history_is_bounded() {
        let readings = Arc::new(Readings::default());
        let recorder = Recorder(readings.clone());
        metrics::with_local_recorder(&recorder, || metrics::counter!("c").increment(1));
        for _ in 0..HISTORY_SECONDS + 10 {
            readings.tick();
        }
        assert_eq!(readings.rates("c")[0].1.len(), HISTORY_SECONDS);
        assert_eq!(readings.history.lock().unwrap().histograms.len(), 0);
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::MAX), BUCKETS - 1);
    }
}
