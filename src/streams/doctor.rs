//! `weir doctor`: is this Redis fit to carry streams whose entries must not be lost? One
//! verdict per line (OK / WARN / FAIL and why), read from `INFO` (which managed Redis allows)
//! and `CONFIG GET appendfsync` (which it may forbid: then the verdict is UNKNOWN, not a
//! failure).

use std::collections::HashMap;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Unknown,
    Warn,
    Fail,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Unknown => "UNKNOWN",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    /// What was found and, unless OK, why it matters.
    pub detail: String,
}

/// Runs every check.
pub async fn examine(connection: &mut MultiplexedConnection) -> RedisResult<Vec<Finding>> {
    let mut info = HashMap::new();
    for section in ["server", "memory", "persistence", "stats", "replication"] {
        let text: String = redis::cmd("INFO").arg(section).query_async(connection).await?;
        info.extend(crate::redis::info::fields(&text));
    }
    let appendfsync: Option<String> = match redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async::<Vec<String>>(connection)
        .await
    {
        Ok(pair) => pair.get(1).cloned(),
        Err(_) => None,
    };
    Ok(judge(&info, appendfsync.as_deref()))
}

/// The verdicts for what INFO (and CONFIG, if allowed) said.
pub fn judge(info: &HashMap<String, String>, appendfsync: Option<&str>) -> Vec<Finding> {
    let get = |key: &str| info.get(key).map(String::as_str);
    let mut findings = Vec::new();
    let mut add = |check, verdict, detail: String| findings.push(Finding { check, verdict, detail });

    let version = get("redis_version").unwrap_or("unknown");
    let (major, minor) = crate::redis::info::parse_version(version);
    match (major, minor) {
        (0, 0) => add("version", Verdict::Unknown, format!("{version}: cannot read it")),
        v if v < (5, 0) => add(
            "version",
            Verdict::Fail,
            format!("{version}: Redis Streams need 5.0 (weir falls back to Pub/Sub, which loses what no one hears)"),
        ),
        v if v < (6, 2) => add(
            "version",
            Verdict::Warn,
            format!("{version}: below 6.2 the consumer cannot claim stuck entries (XAUTOCLAIM)"),
        ),
        _ => add("version", Verdict::Ok, version.to_owned()),
    }

    match get("maxmemory_policy") {
        Some("noeviction") => add("maxmemory-policy", Verdict::Ok, "noeviction".into()),
        Some(policy) => add(
            "maxmemory-policy",
            Verdict::Fail,
            format!(
                "{policy}: under memory pressure Redis evicts keys, whole streams included, silently; set noeviction"
            ),
        ),
        None => add("maxmemory-policy", Verdict::Unknown, "not in INFO memory".into()),
    }

    match get("aof_enabled") {
        Some("1") => add("appendonly", Verdict::Ok, "yes".into()),
        Some(_) => add(
            "appendonly",
            Verdict::Warn,
            "no: a restart loses every entry written since the last RDB snapshot; set appendonly yes".into(),
        ),
        None => add("appendonly", Verdict::Unknown, "not in INFO persistence".into()),
    }

    match appendfsync {
        Some(policy @ ("always" | "everysec")) => add("appendfsync", Verdict::Ok, policy.to_owned()),
        Some(policy) => add(
            "appendfsync",
            Verdict::Warn,
            format!("{policy}: the OS decides when the log reaches the disk; a power loss can lose more than a second"),
        ),
        None => add(
            "appendfsync",
            Verdict::Unknown,
            "CONFIG GET is not allowed here (managed Redis or ACL)".into(),
        ),
    }

    let used: u64 = get("used_memory").and_then(|v| v.parse().ok()).unwrap_or(0);
    match get("maxmemory").and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => add(
            "maxmemory",
            Verdict::Warn,
            "no limit: Redis grows until the OS kills it; set one, with noeviction writes are refused instead".into(),
        ),
        Some(limit) => {
            let percent = used as f64 * 100.0 / limit as f64;
            let detail = format!("{} of {} used ({percent:.0} %)", mib(used), mib(limit));
            if percent >= 90.0 {
                add(
                    "maxmemory",
                    Verdict::Warn,
                    format!("{detail}: writes will soon be refused"),
                );
            } else {
                add("maxmemory", Verdict::Ok, detail);
            }
        }
        None => add("maxmemory", Verdict::Unknown, "not in INFO memory".into()),
    }

    match get("evicted_keys").and_then(|v| v.parse::<u64>().ok()) {
        Some(0) => add("evicted keys", Verdict::Ok, "0".into()),
        Some(count) => add(
            "evicted keys",
            Verdict::Fail,
            format!("{count} keys were evicted since the start: data is being lost"),
        ),
        None => add("evicted keys", Verdict::Unknown, "not in INFO stats".into()),
    }

    match get("rdb_last_bgsave_status") {
        Some("ok") => add("last RDB save", Verdict::Ok, "ok".into()),
        Some(status) => add(
            "last RDB save",
            Verdict::Fail,
            format!("{status}: snapshots are failing (disk full or not writable?)"),
        ),
        None => add("last RDB save", Verdict::Unknown, "not in INFO persistence".into()),
    }
    if get("aof_enabled") == Some("1") {
        let write = get("aof_last_write_status").unwrap_or("unknown");
        let rewrite = get("aof_last_bgrewrite_status").unwrap_or("unknown");
        if write == "ok" && rewrite == "ok" {
            add("last AOF write", Verdict::Ok, "ok".into());
        } else {
            add(
                "last AOF write",
                Verdict::Fail,
                format!("write {write}, rewrite {rewrite}: the append-only log is failing"),
            );
        }
    }

    match get("role") {
        Some("master") => add("role", Verdict::Ok, "master".into()),
        Some(role) => add(
            "role",
            Verdict::Warn,
            format!("{role}: a replica refuses writes (READONLY); point producers at the master"),
        ),
        None => add("role", Verdict::Unknown, "not in INFO replication".into()),
    }
    findings
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn verdict(findings: &[Finding], check: &str) -> Verdict {
        findings.iter().find(|f| f.check == check).unwrap().verdict
    }

    #[test]
    fn a_server_fit_for_streams_is_ok_throughout() {
        let findings = judge(
            &info(&[
                ("redis_version", "7.0.15"),
                ("maxmemory_policy", "noeviction"),
                ("aof_enabled", "1"),
                ("aof_last_write_status", "ok"),
                ("aof_last_bgrewrite_status", "ok"),
                ("used_memory", "1048576"),
                ("maxmemory", "104857600"),
                ("evicted_keys", "0"),
                ("rdb_last_bgsave_status", "ok"),
                ("role", "master"),
            ]),
            Some("everysec"),
        );
        assert!(findings.iter().all(|f| f.verdict == Verdict::Ok), "{findings:#?}");
    }

    #[test]
    fn eviction_fails_and_a_forbidden_config_is_unknown() {
        let findings = judge(
            &info(&[
                ("redis_version", "6.0.9"),
                ("maxmemory_policy", "allkeys-lru"),
                ("aof_enabled", "0"),
                ("maxmemory", "100"),
                ("used_memory", "95"),
                ("evicted_keys", "12"),
                ("rdb_last_bgsave_status", "err"),
                ("role", "slave"),
            ]),
            None,
        );
        assert_eq!(verdict(&findings, "version"), Verdict::Warn);
        assert_eq!(verdict(&findings, "maxmemory-policy"), Verdict::Fail);
        assert_eq!(verdict(&findings, "appendonly"), Verdict::Warn);
        assert_eq!(verdict(&findings, "appendfsync"), Verdict::Unknown);
        assert_eq!(verdict(&findings, "maxmemory"), Verdict::Warn);
        assert_eq!(verdict(&findings, "evicted keys"), Verdict::Fail);
        assert_eq!(verdict(&findings, "last RDB save"), Verdict::Fail);
        assert_eq!(verdict(&findings, "role"), Verdict::Warn);
    }
}
