//! The Redis layer: what every part of weir that talks to Redis shares — the Redis Streams
//! destination, `redis_pubsub`, the stream source, the SSE hub's replay and the streams CLI
//! all use it, and it uses none of them (only `config`, for settings and their errors).
//!
//! - [`connection`]: connection settings (walkerOS's keys plus Cluster, TLS, ACL, password
//!   file) and the three ways to connect;
//! - [`errors`]: one classification of errors into "passes by waiting" and "needs fixing";
//! - [`info`]: `INFO` fields and the server version;
//! - [`replies`]: text, map fields and stream entries out of replies;
//! - [`signing`]: Caracal-compatible entry signatures and the settings that name the key;
//! - [`dead_letters`]: the dead-letter entry format the stream source writes and the CLI reads;
//! - [`optimizely`]: Optimizely Agent's stream and channel names and its notification entries.

pub mod connection;
pub mod dead_letters;
pub mod errors;
pub mod info;
pub mod optimizely;
pub mod replies;
pub mod signing;

pub use connection::{Connection, parse_connection};
pub use errors::retryable;
