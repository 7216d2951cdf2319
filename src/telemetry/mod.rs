//! Logs and metrics set-up.
//!
//! Metrics go through the `metrics` facade to two recorders at once: a Prometheus recorder
//! whose text the admin listener serves at `/metrics`, and a [`Readings`] registry the status
//! page reads, with a few minutes of history (per-second increments of every counter, the
//! last minute of every histogram). Both are installed once per process. Prometheus
//! histogram buckets are chosen for what they measure: batch sizes in events, delivery
//! latency from sub-millisecond (a local Redis) to the retry horizon.

mod readings;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use readings::{Quantiles, Reading, Readings};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();
static READINGS: OnceLock<std::sync::Arc<Readings>> = OnceLock::new();

/// The process's metrics as the status page reads them (installed with the recorders).
pub fn readings() -> &'static Readings {
    prometheus();
    READINGS.get().expect("installed with the Prometheus recorder")
}

/// The process's Prometheus recorder, installed on first use (with the [`readings`]).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("weir_delivery_latency_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("weir_batch_size".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0],
                )
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        let readings = std::sync::Arc::new(Readings::default());
        let _ = READINGS.set(readings.clone());
        // Histogram samples pile up until they are folded into buckets; without a scrape
        // that only happens in upkeep, so run it periodically to keep memory flat. The
        // readings take their per-second sample at the same time.
        let upkeep = handle.clone();
        let sampled = readings.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    upkeep.run_upkeep();
                    sampled.tick();
                }
            })
            .expect("cannot start the metrics upkeep thread");
        let fanout = metrics_util::layers::FanoutBuilder::default()
            .add_recorder(recorder)
            .add_recorder(readings::Recorder(readings))
            .build();
        // Another recorder may already be installed (tests embedding weir): then metrics go
        // there and /metrics shows this recorder's (empty) view, which is harmless.
        let _ = metrics::set_global_recorder(fanout);
        handle
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, coloured only when stderr is a terminal (and `NO_COLOR`
    /// is unset): a file or a pipe gets no escape codes.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log shippers.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). Safe to call more
/// than once.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
