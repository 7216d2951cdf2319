//! `weir streams provision` and `verify`: streams and consumer groups from a declarative file,
//! the job Caracal does with two shell scripts (github.com/Garudex-Labs/caracal `infra/redis/provision-streams.sh` and
//! `infra/redis/scripts/verify.sh`), done idempotently.
//!
//! The file (TOML, YAML or JSON) lists streams by name, each with its consumer groups (a list
//! of names starting at `$`, or a table of name → start id), an intended length bound
//! (`maxLen`: a warning, never a trim) and an optional seed entry, written only while the
//! stream is empty (Caracal's provisioner appends one on every run). Provisioning creates
//! what is missing and never trims, deletes or recreates anything.

use std::path::Path;

use indexmap::IndexMap;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigErrors, Format, join, parse_text, typed};
use crate::redis::replies::{as_text, field};

/// A provisioning file.
// Unknown keys are reported by `typed::parse`, every one with its path.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamsFile {
    pub streams: IndexMap<String, StreamSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    #[serde(default)]
    pub groups: Groups,
    /// The length the stream is meant to stay under: provisioning warns beyond it.
    pub max_len: Option<u64>,
    /// Field → value of an entry written when the stream is empty.
    pub seed: Option<IndexMap<String, Value>>,
}

/// `groups = ["a", "b"]` (created at `$`) or `groups = { a = "0", b = "$" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Groups {
    Names(Vec<String>),
    WithStart(IndexMap<String, String>),
}

impl Default for Groups {
    fn default() -> Self {
        Groups::Names(Vec::new())
    }
}

impl Groups {
    /// (group, start id) pairs in file order.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        match self {
            Groups::Names(names) => names.iter().map(|name| (name.as_str(), "$")).collect(),
            Groups::WithStart(map) => map
                .iter()
                .map(|(name, start)| (name.as_str(), start.as_str()))
                .collect(),
        }
    }
}

impl StreamsFile {
    /// Reads and checks a file; every problem is reported with its path.
    pub fn load(path: &Path) -> Result<StreamsFile, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let fail = |message: String| {
            let mut errors = ConfigErrors::default();
            errors.push("", message);
            errors
        };
        let format =
            Format::from_path(path).ok_or_else(|| fail("the file must end in .toml, .yaml, .yml or .json".into()))?;
        let text = std::fs::read_to_string(path).map_err(|error| fail(format!("cannot read it: {error}")))?;
        let value = parse_text(&text, format).map_err(fail)?;
        let file = typed::parse::<StreamsFile>(&value, "", &mut errors);
        if let Some(file) = &file {
            for (name, spec) in &file.streams {
                let at = join("streams", name);
                if spec.groups.pairs().is_empty() && spec.seed.is_none() {
                    errors.push(
                        &at,
                        "has neither groups nor a seed entry: Redis has no empty streams, so there is nothing to create",
                    );
                }
                if let Some(seed) = &spec.seed
                    && seed.is_empty()
                {
                    errors.push(join(&at, "seed"), "needs at least one field");
                }
            }
        }
        match file {
            Some(file) if errors.is_empty() => Ok(file),
            _ => Err(errors),
        }
    }
}

/// One thing provisioning does, or found done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    CreateGroup {
        stream: String,
        group: String,
        start: String,
    },
    GroupExists {
        stream: String,
        group: String,
    },
    Seed {
        stream: String,
    },
    SeedSkipped {
        stream: String,
        length: u64,
    },
}

impl Action {
    pub fn changes(&self) -> bool {
        matches!(self, Action::CreateGroup { .. } | Action::Seed { .. })
    }

    /// The line printed for it; `done` says whether it was carried out or only planned.
    pub fn describe(&self, done: bool) -> String {
        match (self, done) {
            (Action::CreateGroup { stream, group, start }, true) => {
                format!("created  group {group} on {stream} (from {start})")
            }
            (Action::CreateGroup { stream, group, start }, false) => {
                format!("would create group {group} on {stream} (from {start})")
            }
            (Action::GroupExists { stream, group }, _) => format!("exists   group {group} on {stream}"),
            (Action::Seed { stream }, true) => format!("seeded   {stream}"),
            (Action::Seed { stream }, false) => format!("would seed {stream}"),
            (Action::SeedSkipped { stream, length }, _) => {
                format!("not seeded {stream}: it holds {length} entries")
            }
        }
    }
}

/// What a run found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub actions: Vec<Action>,
    /// Streams longer than their bound: `warn: <stream> length <n> exceeds intended bound <b>`.
    pub warnings: Vec<String>,
    /// Problems that stopped a stream's provisioning (a key that is not a stream).
    pub errors: Vec<String>,
}

impl Report {
    pub fn changes(&self) -> usize {
        self.actions.iter().filter(|action| action.changes()).count()
    }
}

/// The key's type, `none` when missing.
pub async fn key_type(connection: &mut MultiplexedConnection, key: &str) -> RedisResult<String> {
    redis::cmd("TYPE").arg(key).query_async(connection).await
}

/// Names of a stream's consumer groups (none when it is missing).
pub async fn group_names(connection: &mut MultiplexedConnection, stream: &str) -> RedisResult<Vec<String>> {
    let groups: Vec<redis::Value> = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(connection)
        .await
    {
        Ok(groups) => groups,
        Err(error) if error.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    Ok(groups
        .iter()
        .filter_map(|group| field(group, "name").and_then(as_text))
        .collect())
}

/// A seed value as a stream field value: strings as they are, anything else as JSON.
fn seed_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Provisions every stream of `file`; with `dry_run`, only finds out what it would do.
pub async fn provision(
    connection: &mut MultiplexedConnection,
    file: &StreamsFile,
    dry_run: bool,
) -> RedisResult<Report> {
    let mut report = Report::default();
    for (stream, spec) in &file.streams {
        let kind = key_type(connection, stream).await?;
        if kind != "stream" && kind != "none" {
            report
                .errors
                .push(format!("{stream} is a {kind}, not a stream: left as it is"));
            continue;
        }
        let existing = group_names(connection, stream).await?;
        for (group, start) in spec.groups.pairs() {
            let exists = existing.iter().any(|name| name == group);
            let created = if exists || dry_run {
                !exists
            } else {
                create_group(connection, stream, group, start).await?
            };
            report.actions.push(if created {
                Action::CreateGroup {
                    stream: stream.clone(),
                    group: group.to_owned(),
                    start: start.to_owned(),
                }
            } else {
                Action::GroupExists {
                    stream: stream.clone(),
                    group: group.to_owned(),
                }
            });
        }
        let length: u64 = redis::cmd("XLEN").arg(stream).query_async(connection).await?;
        if let Some(seed) = &spec.seed {
            if length == 0 {
                if !dry_run {
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(stream).arg("*");
                    for (name, value) in seed {
                        xadd.arg(name).arg(seed_value(value));
                    }
                    let _: String = xadd.query_async(connection).await?;
                }
                report.actions.push(Action::Seed { stream: stream.clone() });
            } else {
                report.actions.push(Action::SeedSkipped {
                    stream: stream.clone(),
                    length,
                });
            }
        }
        if let Some(bound) = spec.max_len
            && length > bound
        {
            // Caracal's wording; trimming is the operator's decision, never provisioning's.
            report
                .warnings
                .push(format!("warn: {stream} length {length} exceeds intended bound {bound}"));
        }
    }
    Ok(report)
}

/// `XGROUP CREATE … MKSTREAM`: true when created, false when it existed (BUSYGROUP).
async fn create_group(
    connection: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    start: &str,
) -> RedisResult<bool> {
    let created: Result<(), RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Ok(()) => Ok(true),
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(false),
        Err(error) => Err(error),
    }
}

/// One check of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    /// What is wrong, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Check {
    fn new(check: String, problem: Option<String>) -> Check {
        Check {
            check,
            ok: problem.is_none(),
            problem,
        }
    }

    pub fn line(&self) -> String {
        match &self.problem {
            None => format!("ok   {}", self.check),
            Some(problem) => format!("FAIL {}: {problem}", self.check),
        }
    }
}

/// Each stream exists and is a stream, each group exists (exact name), and provisioning
/// again would change nothing.
pub async fn verify(connection: &mut MultiplexedConnection, file: &StreamsFile) -> RedisResult<Vec<Check>> {
    let mut checks = Vec::new();
    for (stream, spec) in &file.streams {
        let kind = key_type(connection, stream).await?;
        let problem = match kind.as_str() {
            "stream" => None,
            "none" => Some("missing".to_owned()),
            other => Some(format!("type {other} (expected stream)")),
        };
        checks.push(Check::new(format!("stream {stream}"), problem));
        let existing = if kind == "stream" {
            group_names(connection, stream).await?
        } else {
            Vec::new()
        };
        for (group, _) in spec.groups.pairs() {
            let found = existing.iter().any(|name| name == group);
            checks.push(Check::new(
                format!("group {stream}/{group}"),
                (!found).then(|| "not found".to_owned()),
            ));
        }
    }
    let again = provision(connection, file, true).await?;
    let pending: Vec<String> = again
        .actions
        .iter()
        .filter(|action| action.changes())
        .map(|action| action.describe(false))
        .chain(again.errors.iter().cloned())
        .collect();
    checks.push(Check::new(
        "provisioning again changes nothing".to_owned(),
        (!pending.is_empty()).then(|| pending.join("; ")),
    ));
    Ok(checks)
}
