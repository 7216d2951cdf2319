//! A running flow: the collector plus every destination pipeline, and the one operation
//! sources need — hand over a batch of events and (optionally) learn what became of each.
//!
//! Dispatch is all-or-nothing per batch: events are mapped and rendered for every
//! destination first, then room is reserved in every destination's queue, and only when
//! all reservations succeed is anything queued. A full queue therefore rejects the batch as
//! a whole (the HTTP source answers 503) and never delivers half of it.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::collector::Collector;
use crate::delivery::ack::AckSet;
use crate::delivery::pipeline::{Explained, Lifecycle, QueueFull, Route, WorkerReport};
use crate::event::Event;

/// A destination's worker, ready to be spawned.
pub type WorkerTask = Box<dyn FnOnce(Lifecycle) -> BoxFuture<'static, WorkerReport> + Send>;

pub struct Runtime {
    pub collector: Collector,
    routes: Vec<Arc<dyn Route>>,
    /// Routes destinations serve on every HTTP listener (the SSE hub).
    endpoints: Vec<axum::Router>,
}

/// One line of `weir explain`: what happens to one event at one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainLine {
    pub destination: String,
    pub explained: Explained,
}

impl Runtime {
    pub fn new(collector: Collector, routes: Vec<Arc<dyn Route>>) -> Runtime {
        Runtime {
            collector,
            routes,
            endpoints: Vec::new(),
        }
    }

    pub fn endpoints(&self) -> &[axum::Router] {
        &self.endpoints
    }

    pub fn routes(&self) -> &[Arc<dyn Route>] {
        &self.routes
    }

    /// Queues `events` (each with its index in the source's batch) at every destination
    /// that takes `source`. With `acks`, each queued event gets a token in the set.
    pub fn dispatch(
        &self,
        source: &str,
        events: &[(usize, Arc<Event>)],
        acks: Option<&AckSet>,
    ) -> Result<(), QueueFull> {
        let mut staged = Vec::with_capacity(self.routes.len());
        for route in self.routes.iter().filter(|route| route.takes_source(source)) {
            staged.push(route.stage(events, &self.collector));
        }
        for stage in &mut staged {
            stage.reserve()?;
        }
        for stage in staged {
            stage.commit(acks);
        }
        Ok(())
    }

    /// What each destination taking `source` would do with `event`.
    pub fn explain(&self, source: &str, event: &Event) -> Vec<ExplainLine> {
        self.routes
            .iter()
            .filter(|route| route.takes_source(source))
            .map(|route| ExplainLine {
                destination: route.id().to_owned(),
                explained: route.explain(event, &self.collector),
            })
            .collect()
    }

    /// Every destination connected and checked; otherwise the first that is not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.routes.iter().find(|route| !route.is_ready()) {
            None => Ok(()),
            Some(route) => Err(format!("destination \"{}\" is not connected", route.id())),
        }
    }

    /// Destination ids and kinds, for the start-up log.
    pub fn describe(&self) -> Value {
        Value::Array(
            self.routes
                .iter()
                .map(|route| serde_json::json!({"id": route.id(), "type": route.kind()}))
                .collect(),
        )
    }
}

/// Spawns every worker; the returned set yields their reports as they stop.
pub fn spawn_workers(workers: Vec<WorkerTask>, lifecycle: &Lifecycle) -> JoinSet<WorkerReport> {
    let mut set = JoinSet::new();
    for worker in workers {
        set.spawn(worker(lifecycle.clone()));
    }
    set
}

/// A flow checked and wired, not yet running.
pub struct BuiltFlow {
    pub runtime: Arc<Runtime>,
    pub sources: Vec<crate::sources::SourceConfig>,
    pub workers: Vec<WorkerTask>,
    /// Legal but probably unintended (a source no destination takes...).
    pub warnings: Vec<String>,
}

/// Checks every part of `flow` and wires it; all problems are reported together.
pub fn build_flow(flow: &crate::config::Flow) -> Result<BuiltFlow, crate::config::ConfigErrors> {
    use crate::config::join;
    use crate::sources::SourceConfig;

    let mut errors = flow.problems.clone();
    let mut warnings = Vec::new();
    let sources: Vec<SourceConfig> = flow
        .sources
        .iter()
        .filter_map(|step| crate::sources::build(step, &mut errors))
        .collect();
    let mut routes = Vec::new();
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    let mut destination_steps = Vec::new();
    for step in &flow.destinations {
        if let Some(names) = &step.sources {
            for name in names {
                if !flow.sources.iter().any(|source| &source.id == name) {
                    errors.push(join(&step.path, "sources"), format!("no source named \"{name}\""));
                }
            }
        }
        if let Some(built) = crate::destinations::build(step, &mut errors) {
            routes.push(built.route);
            workers.push(built.worker);
            if let Some((path, router)) = built.endpoint {
                if let Some((_, other, _)) = endpoints.iter().find(|(taken, _, _)| *taken == path) {
                    errors.push(
                        join(&step.path, "config.settings.path"),
                        format!("{path} is served by destination \"{other}\" already"),
                    );
                } else {
                    endpoints.push((path, step.id.clone(), router));
                }
            }
            destination_steps.push(step);
        }
    }

    for (index, source) in sources.iter().enumerate() {
        let takers: Vec<&Arc<dyn Route>> = routes.iter().filter(|route| route.takes_source(source.id())).collect();
        if takers.is_empty() {
            warnings.push(format!("events from source \"{}\" reach no destination", source.id()));
        }
        let largest_batch = match source {
            SourceConfig::Http(http) => http.max_batch_size,
            SourceConfig::RedisStream(stream) => stream.batch_size,
        };
        for route in &takers {
            if route.queue_capacity() < largest_batch {
                errors.push(
                    format!("destinations.{}.config.queueMax", route.id()),
                    format!(
                        "{} is less than the {} events of a full batch from source \"{}\", which could never be queued",
                        route.queue_capacity(),
                        largest_batch,
                        source.id()
                    ),
                );
            }
        }
        if let SourceConfig::RedisStream(reader) = source {
            for route in &takers {
                for stream in route.stream_targets() {
                    if reader.streams.contains(&stream) {
                        errors.push(
                            format!("destinations.{}.config.settings.redis.streamKey", route.id()),
                            format!(
                                "writes into stream \"{stream}\", which source \"{}\" reads and hands back to it: every event would go round forever (list the destination's `sources`)",
                                reader.id
                            ),
                        );
                    }
                }
            }
        }
        let SourceConfig::Http(http) = source else { continue };
        for (path, destination, _) in &endpoints {
            let clash = http.paths.iter().any(|collect| collect.path == *path)
                || crate::sources::http::RESERVED_PATHS.contains(&path.as_str());
            if clash {
                errors.push(
                    format!("destinations.{destination}.config.settings.path"),
                    format!(
                        "{path} is also a path of source \"{}\" or one weir serves itself",
                        http.id
                    ),
                );
            }
        }
        let clashes = sources[..index]
            .iter()
            .any(|other| matches!(other, SourceConfig::Http(other) if other.listen == http.listen));
        if clashes {
            errors.push(
                format!("sources.{}.config.settings", http.id),
                format!("listen address {} is used by another source", http.listen),
            );
        }
        for route in takers {
            let linger = route.batch_linger();
            let waits = http.post_ack == crate::sources::http::AckMode::Delivered
                || http.get_ack == crate::sources::http::AckMode::Delivered;
            if waits && !linger.is_zero() {
                warnings.push(format!(
                    "requests to source \"{}\" wait for delivery, and destination \"{}\" holds events up to {} ms to fill batches: answers can take that long (or answer after `ackTimeout` with 202)",
                    http.id,
                    route.id(),
                    linger.as_millis()
                ));
            }
        }
    }
    check_file_clashes(&destination_steps, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    warnings.extend(errors.warnings.iter().map(ToString::to_string));
    let mut runtime = Runtime::new(Collector::new(&flow.collector), routes);
    runtime.endpoints = endpoints.into_iter().map(|(_, _, router)| router).collect();
    let runtime = Arc::new(runtime);
    Ok(BuiltFlow {
        runtime,
        sources,
        workers,
        warnings,
    })
}

/// Two writers on one file corrupt it (and a rotation would move the other's file away):
/// every `file` destination needs its own path, and none may be a dead-letter file.
fn check_file_clashes(steps: &[&crate::config::flow::Step], errors: &mut crate::config::ConfigErrors) {
    let absolute = |path: &str| std::path::absolute(path).unwrap_or_else(|_| std::path::PathBuf::from(path));
    let mut dead_letter_files = Vec::new();
    let mut data_files: Vec<(std::path::PathBuf, &str)> = Vec::new();
    for step in steps {
        let dlq = step.config.pointer("/dlq/path").and_then(Value::as_str);
        dead_letter_files.push(absolute(dlq.unwrap_or(crate::destinations::DEFAULT_DLQ_PATH)));
        if step.kind == "file" {
            let path = step.config.pointer("/settings/path").and_then(Value::as_str);
            let path = absolute(path.unwrap_or(crate::destinations::file::DEFAULT_PATH));
            if let Some((_, other)) = data_files.iter().find(|(existing, _)| *existing == path) {
                errors.push(
                    format!("{}.config.settings.path", step.path),
                    format!("{} is also written by {other}", path.display()),
                );
            }
            data_files.push((path, step.path.as_str()));
        }
    }
    for (path, owner) in &data_files {
        if dead_letter_files.contains(path) {
            errors.push(
                format!("{owner}.config.settings.path"),
                format!("{} is also a dead-letter file", path.display()),
            );
        }
    }
}

/// The flow weir runs with no config: HTTP on 127.0.0.1:8080 into `weir-data/events.jsonl`.
pub fn embedded_default() -> crate::config::Flow {
    use crate::config::flow::Step;
    crate::config::Flow {
        name: None,
        collector: Default::default(),
        sources: vec![Step {
            id: "http".into(),
            kind: "http".into(),
            path: "sources.http".into(),
            config: serde_json::json!({"settings": {"listen": crate::sources::http::DEFAULT_LISTEN}}),
            sources: None,
        }],
        destinations: vec![Step {
            id: "file".into(),
            kind: "file".into(),
            path: "destinations.file".into(),
            config: Value::Null,
            sources: None,
        }],
        problems: Default::default(),
    }
}
