//! `INFO`: its `key:value` lines, and the server version as Optimizely Agent reads it.

use std::collections::HashMap;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

/// `key:value` lines of an `INFO` reply.
pub fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// `major.minor` of a `redis_version`; `(0, 0)` when it cannot be read.
pub fn parse_version(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|part| part.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The server's `redis_version` (`"unknown"` when INFO does not say) and its `(major, minor)`.
pub async fn server_version(connection: &mut MultiplexedConnection) -> RedisResult<(String, (u32, u32))> {
    let text: String = redis::cmd("INFO").arg("server").query_async(connection).await?;
    let version = fields(&text)
        .remove("redis_version")
        .unwrap_or_else(|| "unknown".to_owned());
    let parsed = parse_version(&version);
    Ok((version, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_optimizely_agent_reads_them() {
        assert_eq!(parse_version("7.0.15"), (7, 0));
        assert_eq!(parse_version("6.2.5"), (6, 2));
        assert_eq!(parse_version("5"), (5, 0));
        assert_eq!(parse_version("abc"), (0, 0));
    }

    #[test]
    fn info_lines_are_fields() {
        let info = fields("# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n");
        assert_eq!(info["redis_version"], "7.2.4");
        assert_eq!(info["redis_mode"], "standalone");
    }
}
