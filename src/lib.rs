//! weir: a server-side event router.
//!
//! Events come in over HTTP, wire-compatible with walkerOS's server source; the collector
//! enriches them into walkerOS v4 events; each destination maps them with walkerOS's mapping
//! rules and delivers them through one shared delivery machinery (queue, batcher, retrier,
//! dead-letter sink, end-to-end acknowledgements).
//!
//! Layout, following the flow (sources → collector → delivery → destinations):
//! - [`sources`]: where events come from (`http`, `redis_stream`).
//! - [`collector`] and [`event`]: the walkerOS v4 event and its enrichment; [`json`]: JSON
//!   written as JavaScript writes it.
//! - [`mapping`]: walkerOS's mapping rules, value language and consent.
//! - [`delivery`]: the machinery every destination runs on.
//! - [`destinations`]: `redis`, `kafka`, `rudderstack`, `redis_pubsub`, `sse`, `file`, `stdout`,
//!   `blackhole`.
//! - [`redis`]: what every Redis user shares (connections, errors, replies, signing, dead
//!   letters).
//! - [`config`]: flow files (TOML, YAML, JSON in walkerOS's flow.json shape).
//! - [`runtime`]: a running flow; [`streams`]: the streams operations; [`cli`]: the `weir`
//!   command.

pub mod cli;
pub mod collector;
pub mod config;
pub mod delivery;
pub mod destinations;
pub mod event;
pub mod json;
pub mod mapping;
pub mod redis;
pub mod runtime;
pub mod sources;
pub mod streams;
pub mod telemetry;
