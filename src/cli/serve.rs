//! `weir serve`: run a flow until SIGTERM/SIGINT, then shut down gracefully.
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (they may
//! be waiting for their events' delivery), then drain every destination's queue, then flush
//! and close the destinations. Whatever is not delivered when the deadline passes stays in the
//! journal (journaled events) or is dead-lettered with the reason, and the totals are logged.
//! A journal that fails (fdatasync) starts the same shutdown, and weir exits non-zero.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::assembly::{build_flow, start_journal};
use crate::config::Flow;
use crate::delivery::worker::{Lifecycle, spawn_workers};

pub struct ServeOptions {
    pub listen: Option<String>,
    /// Replaces `admin.listen` (`off`: no admin listener).
    pub admin_listen: Option<String>,
    pub shutdown_timeout: Duration,
}

pub async fn serve(flow: Flow, options: ServeOptions) -> anyhow::Result<()> {
    // The recorder must exist before the pipelines resolve their metric handles.
    crate::telemetry::prometheus();
    let mut built = build_flow(&flow).map_err(|errors| anyhow::anyhow!("the flow is invalid:\n{errors}"))?;
    for warning in &built.warnings {
        tracing::warn!("{warning}");
    }
    let lifecycle = Lifecycle::default();
    let mut feeds = tokio::task::JoinSet::new();
    let journal = start_journal(&mut built, &lifecycle, &mut feeds)?;
    let journal_failed = journal
        .as_ref()
        .map_or_else(CancellationToken::new, |journal| journal.fatal());
    let mut workers = spawn_workers(std::mem::take(&mut built.workers), &lifecycle);
    tracing::info!(destinations = %built.runtime.describe(), "flow started");

    let mut signals = Signals::install().context("cannot listen for SIGTERM and SIGINT")?;
    let stop = CancellationToken::new();
    let admin_address = match options.admin_listen.as_deref() {
        Some("off" | "false") => None,
        Some(address) => Some(address.to_owned()),
        None => built.admin.listen.clone(),
    };
    let admin = admin_address.map(|address| {
        let admin = crate::assembly::admin::Admin {
            runtime: built.runtime.clone(),
            sources: std::sync::Arc::new(std::mem::take(&mut built.described_sources)),
            flow_name: flow.name.clone(),
            started: std::time::SystemTime::now(),
            token: built.admin.bearer_token.clone(),
        };
        (address, admin)
    });
    let mut servers = crate::assembly::start(
        &built.runtime,
        built.sources,
        built.endpoints,
        options.listen.as_deref(),
        admin,
        &stop,
    )
    .await?;

    tokio::select! {
        () = signals.next() => {}
        // A failed fdatasync: stop accepting, shut down, exit non-zero.
        () = journal_failed.cancelled() => {}
    }
    tracing::info!(timeout = ?options.shutdown_timeout, "shutting down: no new requests, draining queues");
    let deadline = tokio::time::Instant::now() + options.shutdown_timeout;
    // In-flight requests may be waiting for events held back to fill a batch: send them now.
    lifecycle.flush.cancel();
    stop.cancel();
    let abort = lifecycle.abort.clone();
    let deadline_watch = tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            // A second signal means "now": dead-letter what is left and exit.
            () = signals.next() => tracing::warn!("second signal: giving up on delivery"),
        }
        abort.cancel();
    });
    // In-flight requests wait for their events' delivery, so the workers keep running meanwhile.
    loop {
        tokio::select! {
            finished = servers.join_next() => match finished {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => tracing::error!(error = %error, "HTTP server failed"),
                Some(Err(error)) => tracing::error!(error = %error, "HTTP server task failed"),
            },
            () = lifecycle.abort.cancelled() => break,
        }
    }
    servers.abort_all();
    lifecycle.drain.cancel();
    while feeds.join_next().await.is_some() {}
    let (mut dead_lettered, mut failed, mut held) = (0, 0, 0);
    while let Some(report) = workers.join_next().await {
        match report {
            Ok(report) => {
                dead_lettered += report.dead_lettered_at_shutdown;
                failed += report.failed;
                held += report.held;
            }
            Err(error) => tracing::error!(error = %error, "destination worker failed"),
        }
    }
    deadline_watch.abort();
    if let Some(journal) = &journal {
        // Saves every cursor a last time: fewer redeliveries after the restart.
        journal.close();
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

/// SIGTERM and SIGINT, listened for from before the first listener is bound: a signal sent
/// the moment weir says it listens is never lost between binding and waiting.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
