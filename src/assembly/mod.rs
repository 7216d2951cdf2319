//! Assembly: a flow file's entries turned into a running process. Only the CLI uses it.
//!
//! [`build_flow`] checks every source and destination entry (each type checks its own
//! `config`), then what no single entry can see: a destination naming a source that does not
//! exist, a queue smaller than a source's largest batch, a destination writing into a stream
//! its own source reads, two writers on one file, two routes on one path. Every problem is
//! reported together, with its path. What it returns is inert: the [`Runtime`] sources will
//! hold, the checked source configs and the destination workers, not yet spawned.
//!
//! [`listeners`] then binds the HTTP listeners the flow needs — one per HTTP source, plus
//! one for each `listen` address of a destination that no source listens on — and spawns
//! the sources. The
//! listeners are the process's, not a source's: a flow that only reads a stream and fans
//! it out over SSE still serves `/healthz`, `/readyz`, `/metrics` and its SSE path.
//!
//! This is the one module that knows every source and destination type; the runtime, the
//! sources and the destinations know none of each other.

pub mod admin;
pub mod connection;
pub mod journal;
pub mod listeners;
pub mod running;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::collector::Collector;
use crate::config::flow::{JournalSettings, Step};
use crate::config::{ConfigErrors, Flow, join};
use crate::delivery::Endpoint;
use crate::delivery::feed::FeedTask;
use crate::delivery::route::Route;
use crate::delivery::worker::WorkerTask;
use crate::runtime::{PROCESS_PATHS, Runtime};
use crate::sources::SourceConfig;
use crate::sources::http::AckMode;

pub use journal::{JournalStartError, open_journal, open_offline};
pub use listeners::StartError;
pub use running::{ReloadError, Reloaded, RunOptions, Running};

/// A flow checked and wired, not yet running.
pub struct BuiltFlow {
    pub runtime: Arc<Runtime>,
    pub sources: Vec<SourceConfig>,
    pub workers: Vec<WorkerTask>,
    /// The journal feeds of journaled destinations, by destination id (none without a
    /// journal).
    pub feeds: Vec<(String, FeedTask)>,
    /// The journal's settings, when the flow has one.
    pub journal: Option<JournalSettings>,
    /// Destinations' HTTP routes, with the id of the destination serving each.
    pub endpoints: Vec<(String, Endpoint)>,
    /// Legal but probably unintended (a source no destination takes...).
    pub warnings: Vec<String>,
    /// The admin listener's settings.
    pub admin: crate::config::flow::AdminSettings,
    /// Each source's id and type, for the status page.
    pub described_sources: Vec<(String, &'static str)>,
}

/// Checks every part of `flow` and wires it; all problems are reported together.
pub fn build_flow(flow: &Flow) -> Result<BuiltFlow, ConfigErrors> {
    crate::code::set_limits(flow.code);
    let mut errors = flow.problems.clone();
    let mut warnings = Vec::new();
    let mut sources: Vec<SourceConfig> = flow
        .sources
        .iter()
        .filter_map(|step| crate::sources::build(step, &mut errors))
        .collect();
    if !flow.journal.enabled {
        for source in &mut sources {
            if let SourceConfig::Http(http) = source
                && let Err(problem) = http.without_journal()
            {
                errors.push(format!("sources.{}.config.ack", http.id), problem);
            }
        }
    }
    let mut routes = Vec::new();
    let mut workers = Vec::new();
    let mut feeds = Vec::new();
    let mut endpoints = Vec::new();
    let mut files = Vec::new();
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
            if let Some(feed) = built.feed
                && flow.journal.enabled
            {
                feeds.push((step.id.clone(), feed));
            }
            if let Some(endpoint) = built.endpoint {
                endpoints.push((step.id.clone(), endpoint));
            }
            files.push(WrittenFiles {
                step,
                data: built.files,
                dead_letters: built.dead_letter_file,
            });
        }
    }

    check_endpoints(&sources, &endpoints, &mut errors);
    for (index, source) in sources.iter().enumerate() {
        let takers: Vec<&Arc<dyn Route>> = routes.iter().filter(|route| route.takes_source(source.id())).collect();
        if takers.is_empty() {
            warnings.push(format!("events from source \"{}\" reach no destination", source.id()));
        }
        for route in &takers {
            if route.queue_capacity() < source.largest_batch() {
                errors.push(
                    format!("destinations.{}.config.queueMax", route.id()),
                    format!(
                        "{} is less than the {} events of a full batch from source \"{}\", which could never be queued",
                        route.queue_capacity(),
                        source.largest_batch(),
                        source.id()
                    ),
                );
            }
            for stream in route.stream_targets() {
                if source.streams_read().iter().any(|read| may_overlap(read, &stream)) {
                    errors.push(
                        format!("destinations.{}.config.settings.redis.streamKey", route.id()),
                        format!(
                            "writes into stream \"{stream}\", which source \"{}\" reads and hands back to it: every event would go round forever (list the destination's `sources`)",
                            source.id()
                        ),
                    );
                }
            }
        }
        let SourceConfig::Http(http) = source else { continue };
        let clashes = sources[..index]
            .iter()
            .any(|other| matches!(other, SourceConfig::Http(other) if other.listen == http.listen));
        if clashes {
            errors.push(
                format!("sources.{}.config.settings", http.id),
                format!("listen address {} is used by another source", http.listen),
            );
        }
        let waits = http.post_ack == AckMode::Delivered || http.get_ack == AckMode::Delivered;
        for route in takers {
            let linger = route.batch_linger();
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
    check_file_clashes(&files, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    warnings.extend(errors.warnings.iter().map(ToString::to_string));
    let described_sources = sources
        .iter()
        .map(|source| (source.id().to_owned(), source.kind()))
        .collect();
    Ok(BuiltFlow {
        admin: flow.admin.clone(),
        described_sources,
        runtime: Arc::new(Runtime::new(Collector::new(&flow.collector), routes)),
        sources,
        workers,
        feeds,
        journal: flow.journal.enabled.then(|| flow.journal.clone()),
        endpoints,
        warnings,
    })
}

/// The addresses an endpoint is served on: its own `listen`, or every HTTP source's.
fn endpoint_addresses<'a>(sources: &'a [SourceConfig], endpoint: &'a Endpoint) -> Vec<&'a str> {
    match &endpoint.listen {
        Some(address) => vec![address.as_str()],
        None => sources
            .iter()
            .filter_map(|source| match source {
                SourceConfig::Http(http) => Some(http.listen.as_str()),
                SourceConfig::RedisStream(_) => None,
            })
            .collect(),
    }
}

/// Every endpoint has a listener, and no path is served twice on one listener.
fn check_endpoints(sources: &[SourceConfig], endpoints: &[(String, Endpoint)], errors: &mut ConfigErrors) {
    for (index, (id, endpoint)) in endpoints.iter().enumerate() {
        let at = format!("destinations.{id}.config.settings");
        let addresses = endpoint_addresses(sources, endpoint);
        if addresses.is_empty() {
            errors.push(
                join(&at, "listen"),
                format!(
                    "the flow has no HTTP source to serve {} on: set `listen` (e.g. \"127.0.0.1:8080\")",
                    endpoint.path
                ),
            );
        }
        let reserved = PROCESS_PATHS.contains(&endpoint.path.as_str());
        let mut clashed = false;
        for source in sources {
            let SourceConfig::Http(http) = source else { continue };
            let on_it = addresses.contains(&http.listen.as_str());
            if on_it && (reserved || http.paths.iter().any(|collect| collect.path == endpoint.path)) {
                clashed = true;
                errors.push(
                    join(&at, "path"),
                    format!(
                        "{} is also a path of source \"{}\" or one weir serves itself",
                        endpoint.path, http.id
                    ),
                );
            }
        }
        if reserved && !clashed {
            errors.push(
                join(&at, "path"),
                format!("{} is a path weir serves itself", endpoint.path),
            );
        }
        let taken = endpoints[..index].iter().find(|(_, other)| {
            other.path == endpoint.path
                && endpoint_addresses(sources, other)
                    .iter()
                    .any(|address| addresses.contains(address))
        });
        if let Some((other, _)) = taken {
            errors.push(
                join(&at, "path"),
                format!("{} is served by destination \"{other}\" already", endpoint.path),
            );
        }
    }
}

/// The files one destination writes.
struct WrittenFiles<'a> {
    step: &'a Step,
    data: Vec<PathBuf>,
    dead_letters: Option<PathBuf>,
}

/// Two writers on one file corrupt it (and a rotation would move the other's file away):
/// every data file needs its own destination, and none may be a dead-letter file.
fn check_file_clashes(destinations: &[WrittenFiles<'_>], errors: &mut ConfigErrors) {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dead_letter_files: Vec<PathBuf> = destinations
        .iter()
        .filter_map(|written| written.dead_letters.as_deref().map(absolute))
        .collect();
    let mut data_files: Vec<(PathBuf, &str)> = Vec::new();
    for written in destinations {
        for path in &written.data {
            let path = absolute(path);
            let at = format!("{}.config.settings.path", written.step.path);
            if let Some((_, other)) = data_files.iter().find(|(existing, _)| *existing == path) {
                errors.push(at.clone(), format!("{} is also written by {other}", path.display()));
            }
            if dead_letter_files.contains(&path) {
                errors.push(at, format!("{} is also a dead-letter file", path.display()));
            }
            data_files.push((path, written.step.path.as_str()));
        }
    }
}

/// The flow weir runs with no config: HTTP on 127.0.0.1:8080 into `weir-data/events.jsonl`.
pub fn embedded_default() -> Flow {
    Flow {
        name: None,
        collector: Default::default(),
        journal: Default::default(),
        code: Default::default(),
        admin: Default::default(),
        sources: vec![Step {
            id: "http".into(),
            kind: "http".into(),
            package: None,
            path: "sources.http".into(),
            config: serde_json::json!({"settings": {"listen": crate::sources::http::DEFAULT_LISTEN}}),
            sources: None,
        }],
        destinations: vec![Step {
            id: "file".into(),
            kind: "file".into(),
            package: None,
            path: "destinations.file".into(),
            config: serde_json::Value::Null,
            sources: None,
        }],
        problems: Default::default(),
    }
}

/// Whether two stream names, either of which may be a Redis glob pattern, can name the same
/// stream: literals when equal, a literal and a pattern when the literal starts with the
/// pattern's text before its first wildcard, two patterns when one such text starts with the
/// other. Errs towards "yes": it guards against events going round forever.
fn may_overlap(a: &str, b: &str) -> bool {
    fn literal(name: &str) -> &str {
        &name[..name.find(['*', '?', '[']).unwrap_or(name.len())]
    }
    match (literal(a).len() == a.len(), literal(b).len() == b.len()) {
        (true, true) => a == b,
        (true, false) => a.starts_with(literal(b)),
        (false, true) => b.starts_with(literal(a)),
        (false, false) => literal(a).starts_with(literal(b)) || literal(b).starts_with(literal(a)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(flow: serde_json::Value) -> String {
        let flow = crate::config::parse_flow(flow, None, &|_| None).unwrap();
        match build_flow(&flow) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    fn stream_source() -> serde_json::Value {
        json!({"type": "redis_stream", "config": {"settings": {"url": "redis://127.0.0.1:1", "stream": "s"}}})
    }

    #[test]
    fn walkeros_packages_name_sources_and_destinations() {
        let flow = crate::config::parse_flow(
            json!({
                "sources": {"http": {"package": "@walkeros/server-source-express"}},
                "destinations": {"events": {
                    "package": "@walkeros/server-destination-redis@4.4.0",
                    "config": {"settings": {"redis": {"url": "redis://127.0.0.1:1", "streamKey": "s"}}}
                }}
            }),
            None,
            &|_| None,
        )
        .unwrap();
        let built = build_flow(&flow).map_err(|errors| errors.to_string()).unwrap();
        assert!(matches!(built.sources[0], SourceConfig::Http(_)));
        assert_eq!(built.runtime.describe(), json!([{"id": "events", "type": "redis"}]));

        let text = problems(json!({
            "sources": {"http": {"package": "@walkeros/server-source-fetch"}},
            "destinations": {"a": {"package": "@walkeros/server-destination-gcp"}, "b": {"type": "kafkaa"}}
        }));
        for expected in [
            "sources.http.package: weir does not implement @walkeros/server-source-fetch; it knows @walkeros/server-source-express",
            "destinations.a.package: weir does not implement @walkeros/server-destination-gcp; it knows @walkeros/server-destination-redis, @walkeros/server-destination-kafka, @walkeros/server-destination-rudderstack",
            "destinations.b.type: unknown destination type \"kafkaa\"; weir has file, stdout, blackhole, redis, kafka, redis_pubsub, rudderstack, sse",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn the_destination_wrapper_reports_every_problem_at_once() {
        let text = problems(json!({
            "destinations": {"f": {"type": "file", "config": {
                "queueMax": 0, "retry": {"maxRetries": 2, "delay": 5}, "before": "x", "loadScript": true,
                "dlq": {"type": "file"}, "qeueMax": 5, "timeout": "soon", "concurrency": null,
                "disabled": "yes", "settings": {"pth": "x.jsonl"}, "consent": null
            }}}
        }));
        for expected in [
            "destinations.f.config.qeueMax: unknown key",
            "destinations.f.config.retry.delay: unknown key",
            "destinations.f.config.timeout: must be a number of milliseconds",
            "destinations.f.config.queueMax: must be a positive whole number",
            "destinations.f.config.concurrency: must be a positive whole number",
            "destinations.f.config.disabled: must be true or false",
            "destinations.f.config.before: `before` is not supported by weir",
            "destinations.f.config.dlq: missing field `path`",
            "destinations.f.config.settings.pth: unknown key",
            "destinations.f.config.consent",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("loadScript"), "{text}");
    }

    #[test]
    fn stream_patterns_overlap_conservatively() {
        assert!(may_overlap("events", "events"));
        assert!(!may_overlap("events", "orders"));
        assert!(may_overlap("stream:optimizely-sync-*", "stream:optimizely-sync-abc"));
        assert!(may_overlap("stream:optimizely-sync-abc", "stream:optimizely-sync-*"));
        assert!(may_overlap("stream:*", "stream:optimizely-sync-*"));
        assert!(!may_overlap("orders:*", "stream:optimizely-sync-*"));
        assert!(!may_overlap("orders", "stream:optimizely-sync-*"));
    }

    /// Agent's publisher fed by the source that reads Agent's streams would write back what it
    /// reads, forever.
    #[test]
    fn an_optimizely_publisher_fed_by_agent_s_streams_is_a_loop() {
        let flow = |sources: serde_json::Value| {
            problems(json!({
                "sources": {
                    "http": {"type": "http"},
                    "agents": {"type": "redis_stream", "config": {"settings": {"url": "redis://127.0.0.1:1", "streams": ["stream:optimizely-sync-*"]}}}
                },
                "destinations": {"publish": {"type": "redis", "sources": sources, "config": {"settings": {"redis": {"url": "redis://127.0.0.1:1", "serialization": "optimizely"}}}}}
            }))
        };
        let looping = flow(json!(["http", "agents"]));
        assert!(
            looping.contains("writes into stream \"stream:optimizely-sync-*\", which source \"agents\" reads"),
            "{looping}"
        );
        assert_eq!(flow(json!(["http"])), "");
    }

    #[test]
    fn an_endpoint_needs_a_listener() {
        let text = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"hub": {"type": "sse"}}
        }));
        assert!(
            text.contains("destinations.hub.config.settings.listen: the flow has no HTTP source to serve /v1/notifications/event-stream on"),
            "{text}"
        );
        let served = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"hub": {"type": "sse", "config": {"settings": {"listen": "127.0.0.1:9000"}}}}
        }));
        assert_eq!(served, "");
        let unusable = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"hub": {"type": "sse", "config": {"settings": {"listen": "localhost"}}}}
        }));
        assert!(
            unusable.contains("destinations.hub.config.settings.listen: \"localhost\" is not host:port"),
            "{unusable}"
        );
    }

    #[test]
    fn one_path_twice_clashes_only_on_one_listener() {
        let hub = |listen: &str| json!({"type": "sse", "config": {"settings": {"listen": listen}}});
        let apart = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"a": hub("127.0.0.1:9000"), "b": hub("127.0.0.1:9001")}
        }));
        assert_eq!(apart, "");
        let together = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"a": hub("127.0.0.1:9000"), "b": hub("127.0.0.1:9000")}
        }));
        assert!(
            together.contains("destinations.b.config.settings.path: /v1/notifications/event-stream is served by destination \"a\" already"),
            "{together}"
        );
        let reserved = problems(json!({
            "sources": {"events": stream_source()},
            "destinations": {"a": {"type": "sse", "config": {"settings": {"listen": "127.0.0.1:9000", "path": "/readyz"}}}}
        }));
        assert!(reserved.contains("/readyz is a path weir serves itself"), "{reserved}");
    }
}
