//! `weir streams …` and `weir doctor`: operations on the Redis that carries the streams.
//!
//! The connection comes from `--url` (else `REDIS_URL`, else Caracal's `REDIS_HOST` and
//! `REDIS_PORT`, else `redis://127.0.0.1:6379`; a `rediss://` URL is TLS, `--tls-ca` names a
//! private CA), the password from the URL or `REDIS_PASSWORD` / `REDIS_PASSWORD_FILE`: the
//! Redis destination's connection code. Every
//! command prints readable lines, or one JSON document with `--json`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::redis::parse_connection;
use crate::streams::doctor::{self, Verdict};
use crate::streams::provision::{self, StreamsFile};
use crate::streams::{dlq, gc, status};

#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL (redis:// or rediss://); without it, `REDIS_HOST` and `REDIS_PORT` (as
    /// Caracal's scripts take them), else redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL")]
    url: Option<String>,
    /// PEM file of the CA that signed the server's certificate (rediss:// only).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// One JSON document instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum StreamsCommand {
    /// Create the file's streams and consumer groups; idempotent, never trims or deletes.
    Provision {
        file: PathBuf,
        /// Show what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Check that the file's streams and groups exist and that provisioning again would
    /// change nothing; exits 1 naming what failed.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Dead letters of a stream: list, show, replay into the stream, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Remove consumers idle past --idle with nothing pending, and broadcast groups
    /// (`<group>:<instance>`) whose instance is gone; never anything with pending entries.
    Gc {
        /// Which streams (a glob, default all).
        #[arg(default_value = "*")]
        pattern: String,
        /// How long a consumer must have been idle, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        idle: std::time::Duration,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Length, first/last entry and memory per stream; consumers, pending, lag, last
    /// delivered id and oldest pending age per group; pending, idle and inactive per
    /// consumer. A table on a terminal, key=value lines when piped.
    Status {
        /// Which streams (a glob, default all).
        #[arg(default_value = "*")]
        pattern: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

/// Which dead letters, of which dead-letter stream.
#[derive(Args, Debug, Clone)]
pub struct DlqArgs {
    /// The source stream.
    stream: String,
    /// The dead-letter stream (default `<stream>.dlq`).
    #[arg(long)]
    dlq: Option<String>,
    /// Only reasons starting with this.
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters this recent (`2h`) or since this time (`2026-11-24T10:00:00Z`).
    #[arg(long)]
    since: Option<String>,
}

impl DlqArgs {
    fn dlq(&self) -> String {
        self.dlq
            .clone()
            .unwrap_or_else(|| crate::redis::dead_letters::default_dlq(&self.stream))
    }

    fn filter(&self) -> anyhow::Result<dlq::Filter> {
        let since_ms = match &self.since {
            None => None,
            Some(text) => Some(
                super::dlq::parse_since(text)?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
        };
        Ok(dlq::Filter {
            reason: self.reason.clone(),
            since_ms,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// One line per dead letter: id, age, reason, source entry, attempts, consumer.
    List {
        #[command(flatten)]
        which: DlqArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Dead letters in full, with the failed entry's fields.
    Show {
        #[command(flatten)]
        which: DlqArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Add the failed entries back to the stream, then delete their dead letters.
    Replay {
        #[command(flatten)]
        which: DlqArgs,
        /// Sign the replayed entries afresh: `--sign` or `--sign=stream` (`_sig`, key from
        /// STREAMS_HMAC_KEY / STREAMS_HMAC_KEY_FILE), `--sign=audit` (`sig` over `data`, key
        /// from AUDIT_HMAC_KEY / AUDIT_HMAC_KEY_FILE).
        #[arg(long, value_name = "SCHEME", num_args = 0..=1, require_equals = true, default_missing_value = "stream")]
        sign: Option<String>,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Delete dead letters (asks for --yes).
    Purge {
        #[command(flatten)]
        which: DlqArgs,
        /// Really delete them.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

impl RedisArgs {
    /// The URL to connect to: `--url` / `REDIS_URL`, else `REDIS_HOST` and `REDIS_PORT` (each
    /// defaulting to 127.0.0.1 and 6379), else the local default.
    fn url(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let host = env("REDIS_HOST").filter(|host| !host.is_empty());
        let port = env("REDIS_PORT").filter(|port| !port.is_empty());
        let host = host.unwrap_or_else(|| "127.0.0.1".to_owned());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        format!("redis://{host}:{}", port.as_deref().unwrap_or("6379"))
    }
}

/// A current-thread runtime and a connection to the first node.
fn connect(args: &RedisArgs) -> anyhow::Result<(tokio::runtime::Runtime, redis::aio::MultiplexedConnection)> {
    let mut block = json!({"url": args.url(&|name| std::env::var(name).ok())});
    if let Some(ca) = &args.tls_ca {
        block["options"] = json!({"tls": {"caFile": ca}});
    }
    let mut errors = crate::config::ConfigErrors::default();
    let connection = parse_connection(&block, "--url", &|name| std::env::var(name).ok(), &mut errors)
        .ok_or_else(|| anyhow!("{errors}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let redis = runtime
        .block_on(connection.connect_first())
        .with_context(|| format!("cannot connect to {}", connection.describe))?;
    Ok((runtime, redis))
}

fn load(file: &Path) -> anyhow::Result<StreamsFile> {
    StreamsFile::load(file).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|error| format!("{}: {error}", file.display()))
            .collect();
        anyhow!(lines.join("\n"))
    })
}

pub fn streams(command: StreamsCommand) -> ExitCode {
    let result = match command {
        StreamsCommand::Provision { file, dry_run, redis } => provision_command(&file, dry_run, &redis),
        StreamsCommand::Verify { file, redis } => verify_command(&file, &redis),
        StreamsCommand::Status { pattern, redis } => status_command(&pattern, &redis),
        StreamsCommand::Dlq { command } => dlq_command(command),
        StreamsCommand::Gc {
            pattern,
            idle,
            dry_run,
            redis,
        } => gc_command(&pattern, idle, dry_run, &redis),
    };
    result.unwrap_or_else(|error| {
        eprintln!("weir streams: {error:#}");
        ExitCode::FAILURE
    })
}

fn provision_command(file: &Path, dry_run: bool, args: &RedisArgs) -> anyhow::Result<ExitCode> {
    let file = load(file)?;
    let (runtime, mut redis) = connect(args)?;
    let report = runtime.block_on(provision::provision(&mut redis, &file, dry_run))?;
    if args.json {
        let mut document = serde_json::to_value(&report)?;
        document["changes"] = json!(report.changes());
        document["dryRun"] = json!(dry_run);
        println!("{document}");
    } else {
        for action in &report.actions {
            println!("{}", action.describe(!dry_run));
        }
        for warning in &report.warnings {
            eprintln!("{warning}");
        }
        for error in &report.errors {
            eprintln!("error: {error}");
        }
        let changes = match report.changes() {
            1 => "1 change".to_owned(),
            n => format!("{n} changes"),
        };
        match dry_run {
            true => println!("dry run: {changes} to make"),
            false => println!("redis streams provisioned: {changes}"),
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify_command(file: &Path, args: &RedisArgs) -> anyhow::Result<ExitCode> {
    let file = load(file)?;
    let (runtime, mut redis) = connect(args)?;
    let checks = runtime.block_on(provision::verify(&mut redis, &file))?;
    let failed: Vec<&provision::Check> = checks.iter().filter(|check| !check.ok).collect();
    if args.json {
        println!("{}", json!({"ok": failed.is_empty(), "checks": checks}));
    } else {
        for check in &checks {
            println!("{}", check.line());
        }
        if failed.is_empty() {
            println!("verified: {} checks passed", checks.len());
        } else {
            let names: Vec<&str> = failed.iter().map(|check| check.check.as_str()).collect();
            eprintln!("verify failed: {}", names.join(", "));
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn dlq_command(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (which, redis_args) = match &command {
        DlqCommand::List { which, redis }
        | DlqCommand::Show { which, redis }
        | DlqCommand::Replay { which, redis, .. }
        | DlqCommand::Purge { which, redis, .. } => (which, redis),
    };
    let filter = which.filter()?;
    let dead_letters = which.dlq();
    let (runtime, mut redis) = connect(redis_args)?;
    let (letters, foreign) = runtime.block_on(dlq::read(&mut redis, &dead_letters, &filter))?;
    if foreign > 0 {
        eprintln!("{dead_letters}: {foreign} entries are not weir dead letters; left alone");
    }
    let now_ms = crate::event::now_ms();
    match &command {
        DlqCommand::List { .. } | DlqCommand::Show { .. } if redis_args.json => {
            println!("{}", json!({"dlq": dead_letters, "deadLetters": letters}));
        }
        DlqCommand::List { .. } => {
            for letter in &letters {
                let age =
                    now_ms.saturating_sub(letter.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0));
                println!(
                    "{}  {:>8} ago  {}  src {}  attempts {}  consumer {}",
                    letter.id,
                    status::duration(age),
                    letter.reason,
                    letter.src_id,
                    letter.attempts,
                    letter.consumer
                );
            }
            eprintln!("{} dead letters in {dead_letters}", letters.len());
        }
        DlqCommand::Show { .. } => {
            for letter in &letters {
                println!("{}", letter.id);
                println!("  reason       {}", letter.reason);
                println!("  src_id       {}", letter.src_id);
                println!("  attempts     {}", letter.attempts);
                println!("  consumer     {}", letter.consumer);
                println!("  received_at  {}", letter.received_at);
                for (name, value) in &letter.fields {
                    println!("  | {name} = {}", String::from_utf8_lossy(value));
                }
            }
        }
        DlqCommand::Replay { sign, .. } => {
            let key = match sign {
                None => None,
                Some(scheme) => {
                    let mut errors = crate::config::ConfigErrors::default();
                    let key = crate::redis::signing::signing_key(
                        &serde_json::Value::from(scheme.as_str()),
                        "--sign",
                        &|name| std::env::var(name).ok(),
                        &mut errors,
                    );
                    Some(key.ok_or_else(|| anyhow!("{errors}"))?)
                }
            };
            let bar = indicatif::ProgressBar::new(letters.len() as u64);
            if letters.len() < 100 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let outcome = runtime.block_on(dlq::replay(
                &mut redis,
                &which.stream,
                &dead_letters,
                &letters,
                key.as_ref(),
                &|| bar.inc(1),
            ));
            bar.finish_and_clear();
            let replayed = outcome.with_context(|| {
                format!(
                    "replay stopped after {} of {}; the rest is still in {dead_letters}",
                    bar.position(),
                    letters.len()
                )
            })?;
            if redis_args.json {
                println!(
                    "{}",
                    json!({"replayed": replayed, "stream": which.stream, "dlq": dead_letters})
                );
            } else {
                println!(
                    "replayed {replayed} entries into {} and removed them from {dead_letters}",
                    which.stream
                );
            }
        }
        DlqCommand::Purge { yes, .. } => {
            if !*yes {
                eprintln!(
                    "{} dead letters match in {dead_letters}; add --yes to delete them",
                    letters.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            let deleted = runtime.block_on(dlq::purge(&mut redis, &dead_letters, &letters))?;
            if redis_args.json {
                println!("{}", json!({"deleted": deleted, "dlq": dead_letters}));
            } else {
                println!("deleted {deleted} dead letters from {dead_letters}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gc_command(pattern: &str, idle: std::time::Duration, dry_run: bool, args: &RedisArgs) -> anyhow::Result<ExitCode> {
    let (runtime, mut redis) = connect(args)?;
    let removed = runtime.block_on(gc::collect(&mut redis, pattern, idle, dry_run))?;
    if args.json {
        println!("{}", json!({"dryRun": dry_run, "removed": removed}));
    } else {
        for removal in &removed {
            println!("{}", removal.describe(!dry_run));
        }
        let verb = if dry_run { "would remove" } else { "removed" };
        println!(
            "gc: {verb} {} (idle limit {})",
            removed.len(),
            humantime::format_duration(idle)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status_command(pattern: &str, args: &RedisArgs) -> anyhow::Result<ExitCode> {
    let (runtime, mut redis) = connect(args)?;
    let all = runtime.block_on(status::status(&mut redis, pattern))?;
    if args.json {
        println!("{}", json!({ "streams": all }));
    } else if std::io::stdout().is_terminal() {
        let rows = status::rows(&all);
        let widths: Vec<usize> = (0..6)
            .map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            println!("{}", cells.join("  ").trim_end());
        }
    } else {
        for line in status::plain_lines(&all) {
            println!("{line}");
        }
    }
    if all.is_empty() {
        eprintln!("no stream matches {pattern}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir doctor`: exit 0 when every verdict is OK (or unknown), 1 with a WARN, 2 with a FAIL.
pub fn doctor(args: &RedisArgs) -> ExitCode {
    let run = || -> anyhow::Result<ExitCode> {
        let (runtime, mut redis) = connect(args)?;
        let findings = runtime.block_on(doctor::examine(&mut redis))?;
        let worst = findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Ok);
        if args.json {
            println!("{}", json!({"worst": worst, "findings": findings}));
        } else {
            for finding in &findings {
                println!(
                    "{:<7} {:<17} {}",
                    finding.verdict.label(),
                    finding.check,
                    finding.detail
                );
            }
        }
        Ok(match worst {
            Verdict::Ok | Verdict::Unknown => ExitCode::SUCCESS,
            Verdict::Warn => ExitCode::from(1),
            Verdict::Fail => ExitCode::from(2),
        })
    };
    run().unwrap_or_else(|error| {
        eprintln!("weir doctor: {error:#}");
        ExitCode::from(3)
    })
}

#[cfg(test)]
mod tests {
    use super::RedisArgs;

    #[test]
    fn the_url_comes_from_the_flag_then_caracal_s_host_and_port() {
        let args = |url: Option<&str>| RedisArgs {
            url: url.map(str::to_owned),
            tls_ca: None,
            json: false,
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let caracal = env(&[("REDIS_HOST", "redis"), ("REDIS_PORT", "6380")]);
        assert_eq!(args(Some("redis://a:1")).url(&caracal), "redis://a:1");
        assert_eq!(args(None).url(&caracal), "redis://redis:6380");
        assert_eq!(
            args(None).url(&env(&[("REDIS_PORT", "7000")])),
            "redis://127.0.0.1:7000"
        );
        assert_eq!(args(None).url(&env(&[("REDIS_HOST", "::1")])), "redis://[::1]:6379");
        assert_eq!(args(None).url(&env(&[])), "redis://127.0.0.1:6379");
    }
}
