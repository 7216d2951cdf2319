//! `weir serve`: run a flow until SIGTERM/SIGINT, then shut down gracefully.
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (they may
//! be waiting for their events' delivery), then drain every destination's queue, then flush
//! and close the destinations. Whatever is not delivered when the deadline passes is
//! dead-lettered with the reason, and the totals are logged.

use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Flow;
use crate::delivery::pipeline::Lifecycle;
use crate::runtime::{build_flow, spawn_workers};
use crate::sources::SourceConfig;
use crate::sources::http::{HttpSource, bind};

pub struct ServeOptions {
    pub listen: Option<String>,
    pub shutdown_timeout: Duration,
}

pub async fn serve(flow: Flow, options: ServeOptions) -> anyhow::Result<()> {
    // The recorder must exist before the pipelines resolve their metric handles.
    crate::telemetry::prometheus();
    let built = build_flow(&flow).map_err(|errors| anyhow::anyhow!("the flow is invalid:\n{errors}"))?;
    for warning in &built.warnings {
        tracing::warn!("{warning}");
    }
    let lifecycle = Lifecycle::default();
    let mut workers = spawn_workers(built.workers, &lifecycle);
    tracing::info!(destinations = %built.runtime.describe(), "flow started");

    let stop = CancellationToken::new();
    let mut servers = JoinSet::new();
    let mut override_listen = options.listen.clone();
    for source in built.sources {
        match source {
            SourceConfig::Http(config) => {
                let source = HttpSource::new(config, built.runtime.clone());
                let (listener, address) = bind(&source, override_listen.take().as_deref())
                    .await
                    .with_context(|| format!("cannot listen on {}", source.listen_address()))?;
                tracing::info!(address = %address, "HTTP source listening");
                let router = source.router();
                servers.spawn(serve_http(listener, router, stop.clone()));
            }
            SourceConfig::RedisStream(config) => {
                servers.spawn(crate::sources::redis_stream::run(
                    config,
                    built.runtime.clone(),
                    stop.clone(),
                ));
            }
        }
    }

    shutdown_signal().await;
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
            () = shutdown_signal() => tracing::warn!("second signal: giving up on delivery"),
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
    let mut dead_lettered = 0;
    let mut failed = 0;
    while let Some(report) = workers.join_next().await {
        match report {
            Ok(report) => {
                dead_lettered += report.dead_lettered_at_shutdown;
                failed += report.failed;
            }
            Err(error) => tracing::error!(error = %error, "destination worker failed"),
        }
    }
    deadline_watch.abort();
    if dead_lettered == 0 && failed == 0 {
        tracing::info!("shutdown complete: every queued event was delivered");
    } else {
        tracing::warn!(
            dead_lettered,
            failed,
            "shutdown complete: events not delivered before the deadline were dead-lettered (failed = could not even be dead-lettered)"
        );
    }
    Ok(())
}

/// Serves HTTP/1.1 connections until `stop`, then waits for in-flight requests to finish.
///
/// hyper's HTTP/1 connection directly rather than `axum::serve`: weir's sources speak only
/// HTTP/1.1, and skipping the HTTP/2 detection `axum::serve` does on every connection is
/// measurably cheaper on the ingest path (BENCHMARKS.md).
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
