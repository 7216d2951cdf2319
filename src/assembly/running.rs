//! A flow while it runs: its workers, feeds, listeners and readers, how a reload changes
//! them without losing an event, and the shutdown.
//!
//! A reload builds and checks the new flow whole first: a flow with problems changes
//! nothing. Then, per destination (by id), comparing its entry as written:
//! - **unchanged**: kept as it is, with its connections, queue, journal cursor and counters;
//! - **added**: started;
//! - **changed**: the new one starts at once and takes every event dispatched from the
//!   reload on; the old one stops taking events, delivers what it holds (its queue; with a
//!   journal, what was committed up to the switch) and shuts down. A journaled
//!   destination's new feed starts after that, from the cursor the old one leaves, so
//!   nothing journaled is missed and nothing is read by both;
//! - **removed**: finishes like a changed one; its journal cursor is saved and holds nothing
//!   back any more.
//!
//! A reload that touches a destination still finishing from the last one is refused as
//! busy (`weir serve` tries it again a second later): one journal cursor, one reader.
//!
//! The old ones have the shutdown timeout to finish; then, as at shutdown, journaled events
//! stay in the journal (for the new destination, or the next start) and the rest are
//! dead-lettered. The switch itself is one swap of the runtime's [`Generation`]: a batch is
//! dispatched to the old flow's destinations or the new one's, never half to each, and the
//! old ones are told to finish only once no dispatch holds the old generation.
//!
//! Everything that can fail (journal cursors, new listen addresses) is done before anything
//! changes. Listeners stay where their address stays (each request is served by the routes
//! current when it arrives); listeners whose address went are closed after their requests
//! are answered. Stream sources whose entry changed are stopped and, once what they read is
//! delivered and acknowledged, started again. The journal block applies at the next start
//! (a reload that changes it is refused), the admin block too, but for its certificate.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::listeners::{Listeners, StartError};
use super::{BuiltFlow, build_flow};
use crate::config::Flow;
use crate::config::flow::Step;
use crate::delivery::Endpoint;
use crate::delivery::feed::{Collectors, FeedTask, Journaled};
use crate::delivery::route::Route;
use crate::delivery::worker::{Lifecycle, WorkerReport, WorkerTask};
use crate::journal::Journal;
use crate::runtime::{Generation, Runtime};

/// Why a running flow could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] super::JournalStartError),
    #[error(transparent)]
    Listen(#[from] StartError),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new flow is invalid:\n{0}")]
    Invalid(crate::config::ConfigErrors),
    #[error("{0}")]
    NeedsRestart(String),
    #[error(transparent)]
    Listen(#[from] StartError),
    #[error("destinations {0:?} are still finishing after the last reload; trying again in a moment")]
    Busy(Vec<String>),
}

impl ReloadError {
    /// The `result` label of `weir_config_reload_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::NeedsRestart(_) => "needs_restart",
            ReloadError::Listen(_) => "cannot_listen",
            ReloadError::Busy(_) => "busy",
        }
    }
}

/// What a reload did, by destination id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// A destination as it runs.
struct Current {
    step: Step,
    route: Arc<dyn Route>,
    endpoint: Option<Endpoint>,
    lifecycle: Lifecycle,
    worker: JoinHandle<WorkerReport>,
    feed: Option<JoinHandle<()>>,
}

/// A destination of a freshly built flow, not running yet.
struct Fresh {
    route: Arc<dyn Route>,
    worker: WorkerTask,
    feed: Option<FeedTask>,
    endpoint: Option<Endpoint>,
}

pub struct Running {
    pub runtime: Arc<Runtime>,
    lifecycle: Lifecycle,
    journal: Option<Arc<Journal<Journaled>>>,
    flow: Flow,
    destinations: HashMap<String, Current>,
    /// Workers of destinations a reload retired (each task returns its report once done).
    retired: Vec<JoinHandle<WorkerReport>>,
    /// Ids of destinations still finishing after a reload retired them.
    retiring: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Feeds started by retirements (a changed journaled destination's new feed).
    late_feeds: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The collector feeds map with: the runtime's current one.
    collectors: Collectors,
    pub listeners: Listeners,
    /// The sources the status page lists.
    described_sources: Arc<RwLock<Vec<(String, &'static str)>>>,
    shutdown_timeout: Duration,
}

/// Splits a built flow into its destinations, by id.
fn fresh(built: &mut BuiltFlow) -> Vec<(String, Fresh)> {
    let routes = built.runtime.routes();
    let workers = std::mem::take(&mut built.workers);
    let mut feeds: HashMap<String, FeedTask> = built.feeds.drain(..).collect();
    let mut endpoints: HashMap<String, Endpoint> = built.endpoints.drain(..).collect();
    routes
        .into_iter()
        .zip(workers)
        .map(|(route, worker)| {
            let id = route.id().to_owned();
            let fresh = Fresh {
                feed: feeds.remove(&id),
                endpoint: endpoints.remove(&id),
                route,
                worker,
            };
            (id, fresh)
        })
        .collect()
}

fn step_of<'a>(flow: &'a Flow, id: &str) -> &'a Step {
    flow.destinations
        .iter()
        .find(|step| step.id == id)
        .expect("every built destination has its entry")
}

/// Options of a running flow.
pub struct RunOptions {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub shutdown_timeout: Duration,
}

impl Running {
    /// Opens the journal, starts every destination, binds every listener and starts the
    /// sources.
    pub async fn start(flow: Flow, mut built: BuiltFlow, options: RunOptions) -> Result<Running, RunError> {
        let lifecycle = Lifecycle::default();
        let journal = super::journal::open_journal(&built)?;
        let journal_path = built
            .journal
            .as_ref()
            .map(|settings| settings.path.display().to_string());
        let described_sources = Arc::new(RwLock::new(std::mem::take(&mut built.described_sources)));
        let collectors: Collectors = {
            let runtime = built.runtime.clone();
            Arc::new(move || runtime.collector())
        };
        let mut destinations = HashMap::new();
        for (id, fresh) in fresh(&mut built) {
            let consumer = match (&fresh.feed, &journal) {
                (Some(_), Some(journal)) => {
                    Some(
                        journal
                            .consumer(&id)
                            .map_err(|source| super::JournalStartError::Recover {
                                path: journal_path.clone().unwrap_or_default(),
                                source,
                            })?,
                    )
                }
                _ => None,
            };
            let current = launch(&flow, &id, fresh, consumer, &lifecycle, &collectors);
            destinations.insert(id, current);
        }
        if let Some(journal) = &journal {
            journal.consumers_opened();
            built.runtime.attach_journal(journal.clone());
        }
        let stop = CancellationToken::new();
        let admin = options.admin.map(|address| {
            let admin = super::admin::Admin {
                runtime: built.runtime.clone(),
                sources: described_sources.clone(),
                flow_name: flow.name.clone(),
                started: std::time::SystemTime::now(),
                token: built.admin.bearer_token.clone(),
                tls: built.admin.tls.clone(),
                stop: stop.clone(),
            };
            (address, admin)
        });
        let endpoints: Vec<(String, Endpoint)> = destinations
            .iter()
            .filter_map(|(id, current)| Some((id.clone(), current.endpoint.clone()?)))
            .collect();
        let listeners = Listeners::start(
            &built.runtime,
            built.sources,
            ordered(&flow, endpoints),
            options.listen.as_deref(),
            admin,
            &stop,
        )
        .await?;
        Ok(Running {
            runtime: built.runtime,
            lifecycle,
            journal,
            flow,
            destinations,
            retired: Vec::new(),
            retiring: Arc::default(),
            collectors,
            late_feeds: Arc::default(),
            listeners,
            described_sources,
            shutdown_timeout: options.shutdown_timeout,
        })
    }

    pub fn journal(&self) -> Option<&Arc<Journal<Journaled>>> {
        self.journal.as_ref()
    }

    /// Replaces the running flow with `flow` (see the module's description).
    pub async fn reload(&mut self, flow: Flow) -> Result<Reloaded, ReloadError> {
        let mut built = build_flow(&flow).map_err(ReloadError::Invalid)?;
        for warning in &built.warnings {
            tracing::warn!("{warning}");
        }
        if flow.journal != self.flow.journal {
            return Err(ReloadError::NeedsRestart(
                "the journal block changed: restart weir to apply it (nothing was changed)".into(),
            ));
        }
        let mut report = Reloaded::default();
        let mut plan: Vec<(String, Option<Fresh>)> = Vec::new();
        for (id, fresh) in fresh(&mut built) {
            match self.destinations.get(&id) {
                Some(current) if current.step == *step_of(&flow, &id) => {
                    report.kept.push(id.clone());
                    plan.push((id, None));
                }
                Some(_) => {
                    report.changed.push(id.clone());
                    plan.push((id, Some(fresh)));
                }
                None => {
                    report.added.push(id.clone());
                    plan.push((id, Some(fresh)));
                }
            }
        }
        report.removed = self
            .destinations
            .keys()
            .filter(|id| !plan.iter().any(|(planned, _)| planned == *id))
            .cloned()
            .collect();
        report.removed.sort();
        {
            let retiring = self.retiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let busy: Vec<String> = report
                .changed
                .iter()
                .chain(&report.added)
                .chain(&report.removed)
                .filter(|id| retiring.contains(*id))
                .cloned()
                .collect();
            if !busy.is_empty() {
                return Err(ReloadError::Busy(busy));
            }
        }
        if flow.admin != self.flow.admin {
            tracing::warn!("the admin block changed: its address and token apply at the next start");
        }

        // Everything that can fail, before anything changes: journal consumers of
        // destinations that start reading now (a changed journaled one takes its
        // predecessor's cursor once that one is done), and new listen addresses.
        let mut consumers: HashMap<String, crate::journal::Consumer<Journaled>> = HashMap::new();
        if let Some(journal) = &self.journal {
            for (id, fresh) in &plan {
                let Some(fresh) = fresh else { continue };
                let hands_over = self.destinations.get(id).is_some_and(|old| old.route.journaled());
                if fresh.feed.is_none() || hands_over {
                    continue;
                }
                match journal.consumer(id) {
                    Ok(consumer) => {
                        consumers.insert(id.clone(), consumer);
                    }
                    Err(error) => {
                        for opened in consumers.keys() {
                            let _ = journal.close_consumer(opened);
                        }
                        return Err(ReloadError::NeedsRestart(format!(
                            "the journal cannot open destination {id}'s cursor: {error}"
                        )));
                    }
                }
            }
        }
        let endpoints: Vec<(String, Endpoint)> = plan
            .iter()
            .filter_map(|(id, fresh)| {
                let endpoint = match fresh {
                    Some(fresh) => fresh.endpoint.clone(),
                    None => self.destinations[id].endpoint.clone(),
                };
                Some((id.clone(), endpoint?))
            })
            .collect();
        let restarted: Vec<String> = self
            .flow
            .sources
            .iter()
            .filter(|old| flow.sources.iter().find(|new| new.id == old.id) != Some(old))
            .map(|old| old.id.clone())
            .collect();
        let prepared = match self
            .listeners
            .prepare(std::mem::take(&mut built.sources), ordered(&flow, endpoints))
            .await
        {
            Ok(prepared) => prepared,
            Err(error) => {
                if let Some(journal) = &self.journal {
                    for opened in consumers.keys() {
                        let _ = journal.close_consumer(opened);
                    }
                }
                return Err(error.into());
            }
        };

        // Start what is new, then switch in one swap.
        let mut routes = Vec::with_capacity(plan.len());
        let mut retiring: Vec<(Current, Option<(FeedTask, Lifecycle)>)> = Vec::new();
        for (id, fresh) in plan {
            let Some(mut fresh) = fresh else {
                routes.push(self.destinations[&id].route.clone());
                continue;
            };
            routes.push(fresh.route.clone());
            let consumer = consumers.remove(&id);
            // A changed journaled destination's new feed starts once the old one is done.
            let deferred = if consumer.is_none() { fresh.feed.take() } else { None };
            let current = launch(&flow, &id, fresh, consumer, &self.lifecycle, &self.collectors);
            let deferred = deferred.map(|feed| (feed, current.lifecycle.clone()));
            if let Some(old) = self.destinations.insert(id.clone(), current) {
                retiring.push((old, deferred));
            }
        }
        for id in &report.removed {
            if let Some(old) = self.destinations.remove(id) {
                retiring.push((old, None));
            }
        }
        let old = self.runtime.replace(Generation {
            collector: if flow.collector == self.flow.collector {
                self.runtime.collector()
            } else {
                built.runtime.collector()
            },
            routes,
        });
        // Retired journaled feeds take what was committed up to now, and no more.
        let boundary = self.journal.as_ref().map_or(0, |journal| journal.committed());
        for (old_destination, _) in &retiring {
            old_destination.lifecycle.stop_at.store(boundary, Ordering::Release);
            old_destination.lifecycle.retire.cancel();
        }
        *self
            .described_sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = std::mem::take(&mut built.described_sources);
        self.listeners.update(prepared, &restarted);
        self.listeners.update_admin_tls(flow.admin.tls.as_ref());
        // Their workers are told to finish once no dispatch holds the old generation (so
        // none can still queue into them).
        let settled = CancellationToken::new();
        {
            let settled = settled.clone();
            tokio::spawn(async move {
                Runtime::settled(&old).await;
                settled.cancel();
            });
        }
        for (old_destination, deferred) in retiring {
            self.retire(settled.clone(), old_destination, deferred);
        }
        self.flow = flow;
        Ok(report)
    }

    /// Lets a destination taken out of the flow finish, then hands its journal cursor over.
    fn retire(&mut self, settled: CancellationToken, current: Current, deferred: Option<(FeedTask, Lifecycle)>) {
        let timeout = self.shutdown_timeout;
        let journal = self.journal.clone();
        let collectors = self.collectors.clone();
        let late_feeds = self.late_feeds.clone();
        let retiring = self.retiring.clone();
        let id = current.step.id.clone();
        retiring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.clone());
        self.retired.push(tokio::spawn(async move {
            settled.cancelled().await;
            let lifecycle = current.lifecycle;
            let deadline = {
                let lifecycle = lifecycle.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    lifecycle.drain.cancel();
                    lifecycle.abort.cancel();
                })
            };
            // A journaled one first takes what was committed before the switch.
            if let Some(feed) = current.feed {
                let _ = feed.await;
            }
            lifecycle.flush.cancel();
            lifecycle.drain.cancel();
            let report = current.worker.await.unwrap_or_else(|error| {
                tracing::error!(destination = %id, error = %error, "destination worker failed");
                WorkerReport::default()
            });
            deadline.abort();
            if let Some(journal) = journal {
                match deferred {
                    Some((feed, lifecycle)) => match journal.reopen_consumer(&id) {
                        Ok(consumer) => {
                            let task = tokio::spawn(feed(consumer, collectors, lifecycle));
                            late_feeds.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(task);
                        }
                        Err(error) => tracing::error!(
                            destination = %id, error = %error,
                            "cannot hand the journal over to the changed destination: restart weir (what is journaled stays)"
                        ),
                    },
                    None if current.route.journaled() => {
                        if let Err(error) = journal.close_consumer(&id) {
                            tracing::warn!(destination = %id, error = %error, "cannot save the removed destination's cursor");
                        }
                    }
                    None => {}
                }
            }
            if report.dead_lettered_at_shutdown + report.failed > 0 {
                tracing::warn!(
                    destination = %id, dead_lettered = report.dead_lettered_at_shutdown, failed = report.failed,
                    held = report.held, "replaced or removed destination finished; what it could not deliver in time was dead-lettered"
                );
            } else {
                tracing::info!(destination = %id, held = report.held, "replaced or removed destination finished");
            }
            retiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
            report
        }));
    }

    /// Shuts down (see `weir serve`): stops the listeners and readers, lets in-flight
    /// requests finish, delivers what is queued, dead-letters what is left at `deadline`.
    /// `hurry` ends the wait early (a second signal). Returns every worker's report.
    pub async fn shutdown(
        mut self,
        deadline: tokio::time::Instant,
        hurry: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Vec<WorkerReport> {
        // In-flight requests may be waiting for events held back to fill a batch: send them now.
        self.lifecycle.flush.cancel();
        self.listeners.stop();
        let abort = self.lifecycle.abort.clone();
        let deadline_watch = tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = hurry => tracing::warn!("second signal: giving up on delivery"),
            }
            abort.cancel();
        });
        // In-flight requests wait for their events' delivery, so the workers keep running meanwhile.
        loop {
            tokio::select! {
                finished = self.listeners.tasks.join_next() => match finished {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => tracing::error!(error = %error, "HTTP server failed"),
                    Some(Err(error)) => tracing::error!(error = %error, "HTTP server task failed"),
                },
                () = self.lifecycle.abort.cancelled() => break,
            }
        }
        self.listeners.tasks.abort_all();
        self.lifecycle.drain.cancel();
        let mut reports = Vec::new();
        let mut feeds = Vec::new();
        let mut workers = Vec::new();
        for (_, current) in self.destinations.drain() {
            feeds.extend(current.feed);
            workers.push(current.worker);
        }
        workers.append(&mut self.retired);
        for worker in workers {
            match worker.await {
                Ok(report) => reports.push(report),
                Err(error) => tracing::error!(error = %error, "destination worker failed"),
            }
        }
        feeds.append(&mut self.late_feeds.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for feed in feeds {
            let _ = feed.await;
        }
        deadline_watch.abort();
        if let Some(journal) = &self.journal {
            // Saves every cursor a last time: fewer redeliveries after the restart.
            journal.close();
        }
        reports
    }
}

/// Endpoints in the flow's order of destinations (so a listener's routes merge the same way
/// every time).
fn ordered(flow: &Flow, mut endpoints: Vec<(String, Endpoint)>) -> Vec<(String, Endpoint)> {
    endpoints.sort_by_key(|(id, _)| flow.destinations.iter().position(|step| step.id == *id));
    endpoints
}

/// Starts one destination: its worker, and its journal feed reading through `consumer`.
fn launch(
    flow: &Flow,
    id: &str,
    fresh: Fresh,
    consumer: Option<crate::journal::Consumer<Journaled>>,
    flow_lifecycle: &Lifecycle,
    collectors: &Collectors,
) -> Current {
    let lifecycle = flow_lifecycle.child();
    let feed = match (fresh.feed, consumer) {
        (Some(feed), Some(consumer)) => Some(tokio::spawn(feed(consumer, collectors.clone(), lifecycle.clone()))),
        _ => None,
    };
    let worker = tokio::spawn((fresh.worker)(lifecycle.clone()));
    Current {
        step: step_of(flow, id).clone(),
        route: fresh.route,
        endpoint: fresh.endpoint,
        lifecycle,
        worker,
        feed,
    }
}
