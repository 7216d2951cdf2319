//! `weir streams gc`: removes consumers idle longer than a limit whose pending list is empty,
//! and broadcast groups (`<group>:<instance>`, one per consumer instance) whose instance is
//! gone — every consumer idle past the limit (or none left) and nothing pending. The clean-up
//! Caracal lacks (its issue #430: per-host groups pile up forever).
//!
//! Each removal is one Lua script that checks and deletes atomically: a consumer that reads
//! between a check and an `XGROUP DELCONSUMER` would lose its pending entries, so the check
//! and the delete cannot be two round trips. Anything with pending entries is never touched.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};
use serde::Serialize;

use super::status::streams_matching;
use crate::redis::replies::{as_text, field};

/// Deletes consumer ARGV[2] of group ARGV[1] on stream KEYS[1] if it has nothing pending and
/// has been idle at least ARGV[3] ms: 1 deleted, 0 kept, -1 gone already.
const DELETE_CONSUMER: &str = r"
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, consumer in ipairs(consumers) do
  local f = {}
  for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
  if f['name'] == ARGV[2] then
    if tonumber(f['pending']) == 0 and tonumber(f['idle']) >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return -1
";

/// Destroys group ARGV[1] on stream KEYS[1] if nothing is pending and every consumer has been
/// idle at least ARGV[2] ms: 1 destroyed, 0 kept, -1 gone already.
const DESTROY_GROUP: &str = r"
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, group in ipairs(groups) do
  local f = {}
  for i = 1, #group, 2 do f[group[i]] = group[i + 1] end
  if f['name'] == ARGV[1] then
    if tonumber(f['pending']) ~= 0 then return 0 end
    local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
    for _, consumer in ipairs(consumers) do
      local c = {}
      for i = 1, #consumer, 2 do c[consumer[i]] = consumer[i + 1] end
      if tonumber(c['idle']) < tonumber(ARGV[2]) then return 0 end
    end
    redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
    return 1
  end
end
return -1
";

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Removal {
    Consumer {
        stream: String,
        group: String,
        consumer: String,
        idle_ms: u64,
    },
    Group {
        stream: String,
        group: String,
    },
}

impl Removal {
    pub fn describe(&self, done: bool) -> String {
        let verb = if done { "removed" } else { "would remove" };
        match self {
            Removal::Consumer {
                stream,
                group,
                consumer,
                idle_ms,
            } => format!(
                "{verb} consumer {consumer} of {stream}/{group} (idle {}, nothing pending)",
                super::status::duration(*idle_ms)
            ),
            Removal::Group { stream, group } => format!(
                "{verb} broadcast group {stream}/{group} (its instance is gone: no active consumer, nothing pending)"
            ),
        }
    }
}

/// A broadcast group is named `<group>:<instance>`.
fn is_broadcast(group: &str) -> bool {
    group.contains(':')
}

fn number(value: Option<&redis::Value>) -> u64 {
    match value {
        Some(redis::Value::Int(n)) => (*n).max(0) as u64,
        Some(other) => as_text(other).and_then(|text| text.parse().ok()).unwrap_or(0),
        None => 0,
    }
}

/// Finds (and unless `dry_run`, removes) idle consumers and abandoned broadcast groups on
/// the streams matching `pattern`.
pub async fn collect(
    connection: &mut MultiplexedConnection,
    pattern: &str,
    idle: Duration,
    dry_run: bool,
) -> RedisResult<Vec<Removal>> {
    let limit = idle.as_millis() as u64;
    let delete_consumer = Script::new(DELETE_CONSUMER);
    let destroy_group = Script::new(DESTROY_GROUP);
    let mut removed = Vec::new();
    for stream in streams_matching(connection, pattern).await? {
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(connection)
            .await?;
        for group_info in &groups {
            let Some(group) = field(group_info, "name").and_then(as_text) else {
                continue;
            };
            let pending = number(field(group_info, "pending"));
            let consumers: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream)
                .arg(&group)
                .query_async(connection)
                .await?;
            let all_idle = consumers.iter().all(|c| number(field(c, "idle")) >= limit);
            if is_broadcast(&group) && pending == 0 && all_idle {
                let gone = dry_run
                    || destroy_group
                        .key(&stream)
                        .arg(&group)
                        .arg(limit)
                        .invoke_async::<i64>(connection)
                        .await?
                        == 1;
                if gone {
                    removed.push(Removal::Group {
                        stream: stream.clone(),
                        group: group.clone(),
                    });
                    continue;
                }
            }
            for consumer_info in &consumers {
                let Some(consumer) = field(consumer_info, "name").and_then(as_text) else {
                    continue;
                };
                let idle_ms = number(field(consumer_info, "idle"));
                if number(field(consumer_info, "pending")) > 0 || idle_ms < limit {
                    continue;
                }
                let gone = dry_run
                    || delete_consumer
                        .key(&stream)
                        .arg(&group)
                        .arg(&consumer)
                        .arg(limit)
                        .invoke_async::<i64>(connection)
                        .await?
                        == 1;
                if gone {
                    removed.push(Removal::Consumer {
                        stream: stream.clone(),
                        group: group.clone(),
                        consumer,
                        idle_ms,
                    });
                }
            }
        }
    }
    Ok(removed)
}
