//! One answer to "will this Redis error pass by waiting?", for every part of weir that talks
//! to Redis: the destination's retrier, the stream source's reconnects and acknowledgements,
//! `redis_pubsub`.
//!
//! Retryable: the connection failing (refused, reset, dropped, broken pipe, EOF, timeouts,
//! unreachable networks, unknown hosts — Optimizely Agent's list in `pkg/syncer/redis_streams.go`)
//! and the server saying "not now": `LOADING`, `READONLY` (a failover in progress),
//! `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `BUSY` (a script running), `MOVED` / `ASK` (slots
//! moving). Everything else the server answers (`WRONGTYPE`, `NOAUTH`, `OOM`, syntax errors)
//! needs someone to fix it.

use redis::RedisError;

/// Server error codes that pass by waiting.
const PASSING_CODES: [&str; 8] = [
    "LOADING",
    "READONLY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MASTERDOWN",
    "BUSY",
    "MOVED",
    "ASK",
];

/// Whether trying `error`'s command again later may succeed.
pub fn retryable(error: &RedisError) -> bool {
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() || error.is_timeout() {
        return true;
    }
    match error.code() {
        Some(code) => PASSING_CODES.contains(&code),
        None => error.kind() == redis::ErrorKind::Io || retryable_message(&error.to_string()),
    }
}

/// For an error with no server code: whether its text says the connection failed.
fn retryable_message(text: &str) -> bool {
    const MARKERS: [&str; 10] = [
        "connection refused",
        "connection reset",
        "timeout",
        "timed out",
        "network is unreachable",
        "broken pipe",
        "eof",
        "connection pool exhausted",
        "no such host",
        "failed to lookup address",
    ];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().any(|marker| lower.contains(marker))
        || PASSING_CODES
            .iter()
            .any(|code| text.split_whitespace().next() == Some(*code))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Optimizely Agent's table (redis_streams_error_test.go), and the codes a failover or a
    /// resharding answers with.
    #[test]
    fn retryable_errors_are_optimizely_agents_and_failover_codes() {
        for text in [
            "dial tcp: connection refused",
            "read: connection reset by peer",
            "i/o timeout",
            "network is unreachable",
            "write: broken pipe",
            "EOF",
            "connection pool exhausted",
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert!(retryable_message(text), "{text}");
        }
        for text in [
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOAUTH Authentication required.",
        ] {
            assert!(!retryable_message(text), "{text}");
        }
        let io = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(retryable(&io));
    }
}
