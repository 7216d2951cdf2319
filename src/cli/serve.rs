//! `weir serve`: run a flow until SIGTERM/SIGINT, then shut down gracefully; SIGHUP (and,
//! with `--watch`, a change to the flow file) reloads the flow without stopping
//! ([`crate::assembly::running`] says how).
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (they may
//! be waiting for their events' delivery), then drain every destination's queue, then flush
//! and close the destinations. Whatever is not delivered when the deadline passes stays in the
//! journal (journaled events) or is dead-lettered with the reason, and the totals are logged.
//! A journal that fails (fdatasync) starts the same shutdown, and weir exits non-zero.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::assembly::{RunOptions, Running, build_flow};
use crate::config::Flow;

pub struct ServeOptions {
    pub listen: Option<String>,
    /// Replaces `admin.listen` (`off`: no admin listener).
    pub admin_listen: Option<String>,
    pub shutdown_timeout: Duration,
    /// The flow file and flow name, read again on SIGHUP (none: the embedded default).
    pub config: Option<(PathBuf, Option<String>)>,
    /// Also reload when the flow file changes.
    pub watch: bool,
}

/// How often `--watch` looks at the flow file.
const WATCH_EVERY: Duration = Duration::from_secs(1);

pub async fn serve(flow: Flow, options: ServeOptions) -> anyhow::Result<()> {
    // The recorder must exist before the pipelines resolve their metric handles.
    crate::telemetry::prometheus();
    let built = build_flow(&flow).map_err(|errors| anyhow::anyhow!("the flow is invalid:\n{errors}"))?;
    for warning in &built.warnings {
        tracing::warn!("{warning}");
    }
    let mut signals = Signals::install().context("cannot listen for SIGTERM, SIGINT and SIGHUP")?;
    let admin = match options.admin_listen.as_deref() {
        Some("off" | "false") => None,
        Some(address) => Some(address.to_owned()),
        None => built.admin.listen.clone(),
    };
    let mut running = Running::start(
        flow,
        built,
        RunOptions {
            listen: options.listen.clone(),
            admin,
            shutdown_timeout: options.shutdown_timeout,
        },
    )
    .await?;
    tracing::info!(destinations = %running.runtime.describe(), "flow started");
    let journal_failed = running
        .journal()
        .map_or_else(CancellationToken::new, |journal| journal.fatal());
    let mut watched = match (&options.config, options.watch) {
        (Some((path, _)), true) => std::fs::read(path).ok(),
        _ => None,
    };
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    // A reload refused as busy (destinations of the last one still finishing) is tried
    // again on the next tick.
    let mut again = None;
    loop {
        tokio::select! {
            signal = signals.next() => match (signal, &options.config) {
                (Signal::Stop, _) => break,
                (Signal::Reload, Some(config)) => again = reload(&mut running, config, "SIGHUP").await,
                (Signal::Reload, None) => {
                    tracing::warn!("SIGHUP: weir runs its embedded default, there is no flow file to read again");
                }
            },
            // A failed fdatasync: stop accepting, shut down, exit non-zero.
            () = journal_failed.cancelled() => break,
            _ = ticks.tick(), if watched.is_some() || again.is_some() => {
                let Some(config) = &options.config else { continue };
                if let Some(why) = again.take() {
                    again = reload(&mut running, config, why).await;
                    continue;
                }
                // Unreadable for a moment (being replaced): looked at again next tick.
                let Ok(now) = std::fs::read(&config.0) else { continue };
                if watched.as_ref() != Some(&now) {
                    watched = Some(now);
                    again = reload(&mut running, config, "the flow file changed").await;
                }
            }
        }
    }
    tracing::info!(timeout = ?options.shutdown_timeout, "shutting down: no new requests, draining queues");
    let deadline = tokio::time::Instant::now() + options.shutdown_timeout;
    let journal = running.journal().cloned();
    let hurry = async move { while signals.next().await != Signal::Stop {} };
    let reports = running.shutdown(deadline, hurry).await;
    let (mut dead_lettered, mut failed, mut held) = (0, 0, 0);
    for report in reports {
        dead_lettered += report.dead_lettered_at_shutdown;
        failed += report.failed;
        held += report.held;
    }
    if dead_lettered == 0 && failed == 0 && held == 0 {
        tracing::info!("shutdown complete: every queued event was delivered");
    } else {
        tracing::warn!(
            dead_lettered,
            failed,
            held,
            "shutdown complete: events not delivered before the deadline were dead-lettered (held = kept in the journal for the next start; failed = could not even be dead-lettered)"
        );
    }
    match journal.and_then(|journal| journal.fatal_reason()) {
        Some(reason) => Err(anyhow::anyhow!(
            "the journal failed ({reason}); weir stopped accepting events. Check the disk, then restart: what was acknowledged is on disk"
        )),
        None => Ok(()),
    }
}

/// Reads the flow file again and applies it; a flow with problems changes nothing, and
/// every problem is logged. Counted in `weir_config_reload_total{result}`. Returns why to
/// try again when the reload was refused as busy.
async fn reload(
    running: &mut Running,
    (path, name): &(PathBuf, Option<String>),
    why: &'static str,
) -> Option<&'static str> {
    tracing::info!(file = %path.display(), "{why}: reloading the flow");
    let result = match crate::config::load_flow(path, name.as_deref()) {
        Err(errors) => Err(crate::assembly::ReloadError::Invalid(errors)),
        Ok(flow) => running.reload(flow).await,
    };
    let label = match &result {
        Ok(reloaded) => {
            tracing::info!(
                kept = ?reloaded.kept, added = ?reloaded.added, changed = ?reloaded.changed,
                removed = ?reloaded.removed, "flow reloaded"
            );
            "ok"
        }
        Err(error) => {
            tracing::error!("reload refused, the running flow is unchanged: {error}");
            error.label()
        }
    };
    metrics::counter!("weir_config_reload_total", "result" => label).increment(1);
    matches!(result, Err(crate::assembly::ReloadError::Busy(_))).then_some(why)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// SIGTERM and SIGINT (stop), SIGHUP (reload), listened for from before the first listener
/// is bound: a signal sent the moment weir says it listens is never lost between binding and
/// waiting.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGTERM or SIGINT (stop), or SIGHUP (reload).
    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
