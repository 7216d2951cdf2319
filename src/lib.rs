//! weir: a server-side event router.
//!
//! Events come in over HTTP, wire-compatible with walkerOS's server source; the collector
//! enriches them into walkerOS v4 events; each destination maps them with walkerOS's mapping
//! rules and delivers them through one shared delivery machinery (queue, batcher, retrier,
//! dead-letter sink, end-to-end acknowledgements).
//!
//! Layout, bottom to top (ARCHITECTURE.md draws it; `tests/layering.rs` checks that a
//! module uses only the ones below it):
//! - [`json`] (JSON written as JavaScript writes it, JavaScript's truthiness and `assign`),
//!   [`telemetry`] (logs, the metrics recorder), [`code`] (`$code:` JavaScript in a sandboxed
//!   QuickJS), [`event`] (the walkerOS v4 event).
//! - [`config`]: flow files (TOML, YAML, JSON in walkerOS's flow.json shape), typed settings.
//! - [`collector`]: enrichment; [`mapping`]: walkerOS's mapping rules, value language, consent.
//! - [`delivery`]: the machinery every destination runs on; [`redis`]: what every Redis user
//!   shares (connections, errors, replies, signing, dead letters).
//! - [`runtime`]: what sources hold while a flow runs (dispatch to every destination).
//! - [`destinations`] (`redis`, `kafka`, `rudderstack`, `redis_pubsub`, `sse`, `file`,
//!   `stdout`, `blackhole`, one registry) and [`sources`] (`http`, `redis_stream`).
//! - [`streams`]: the streams operations; [`assembly`]: a flow file turned into a running
//!   process (checks across entries, listeners); [`cli`]: the `weir` command.

pub mod assembly;
pub mod cli;
pub mod code;
pub mod collector;
pub mod config;
pub mod delivery;
pub mod destinations;
pub mod event;
pub mod journal;
pub mod json;
pub mod mapping;
pub mod redis;
pub mod runtime;
pub mod sources;
pub mod streams;
pub mod telemetry;
