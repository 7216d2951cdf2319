//! `weir dlq list|show|replay|purge FILE` (the dead-letter file) and `weir journal status`.
//!
//! Replay appends each letter to the flow's journal for the destination that dead-lettered
//! it (only that destination takes it), and removes the letters from the file only after
//! the append is fsynced: a crash in between delivers them twice, never loses them. Replay
//! and purge take the journal's lock, so they refuse to run while weir runs on it (weir
//! appends to the file meanwhile); the replayed letters are delivered at weir's next start.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Flow;
use crate::config::flow::JournalSettings;
use crate::delivery::dead_letter::{FileLine, StoredDeadLetter, read_file, rewrite_file};
use crate::delivery::feed::Journaled;
use crate::event::{Event, Ingest};

/// Which dead letters of which file.
#[derive(Args, Debug, Clone)]
pub struct Which {
    /// The dead-letter file.
    #[arg(default_value = crate::destinations::DEFAULT_DLQ_PATH)]
    file: PathBuf,
    /// Only this destination's.
    #[arg(long)]
    destination: Option<String>,
    /// Only this cause (`fatal`, `unrenderable`, `retries_exhausted`, `shutdown_deadline`,
    /// `never_connected`) or reasons starting with this.
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters this recent (`2h`) or since this time (`2026-11-24T10:00:00Z`).
    #[arg(long)]
    since: Option<String>,
}

/// The flow whose journal replay appends to (and whose lock purge takes).
#[derive(Args, Debug, Clone)]
pub struct FlowArgs {
    /// Flow file (default: the embedded default flow, journal weir-data/journal).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    flow: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// One line per dead letter: time, destination, cause, attempts, event name, reason.
    List {
        #[command(flatten)]
        which: Which,
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters in full, with their events.
    Show {
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// Append the letters to the journal for the destinations that dead-lettered them, then
    /// remove them from the file. Run it while weir is stopped; they are delivered when it
    /// starts.
    Replay {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Remove the letters from the file (asks for --yes).
    Purge {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        flow: FlowArgs,
        /// Really remove them.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Segments and bytes; per destination its cursor, lag in events and bytes, and the age
    /// of its oldest undelivered event. Works while weir runs.
    Status {
        #[command(flatten)]
        flow: FlowArgs,
        /// The journal directory (instead of the flow's).
        #[arg(long)]
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// `--since`: a duration ago or a time.
pub fn parse_since(text: &str) -> anyhow::Result<SystemTime> {
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(SystemTime::now() - ago),
        Err(_) => humantime::parse_rfc3339_weak(text)
            .map_err(|_| anyhow!("--since {text}: neither a duration (2h) nor a time (2026-11-24T10:00:00Z)")),
    }
}

impl Which {
    /// The file's lines and the indices of the letters this selects.
    fn select(&self) -> anyhow::Result<(Vec<FileLine>, Vec<usize>)> {
        let lines = match read_file(&self.file) {
            Ok(lines) => lines,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", self.file.display())),
        };
        let since = self.since.as_deref().map(parse_since).transpose()?;
        let selected = lines
            .iter()
            .enumerate()
            .filter_map(|(index, (_, letter))| Some((index, letter.as_ref()?)))
            .filter(|(_, letter)| self.destination.as_ref().is_none_or(|d| &letter.destination == d))
            .filter(|(_, letter)| {
                self.reason
                    .as_ref()
                    .is_none_or(|r| &letter.cause == r || letter.reason.starts_with(r.as_str()))
            })
            .filter(|(_, letter)| {
                since.is_none_or(|since| humantime::parse_rfc3339_weak(&letter.time).is_ok_and(|time| time >= since))
            })
            .map(|(index, _)| index)
            .collect();
        Ok((lines, selected))
    }
}

impl FlowArgs {
    fn load(&self) -> anyhow::Result<Flow> {
        match &self.config {
            None => Ok(crate::assembly::embedded_default()),
            Some(path) => crate::config::load_flow(path, self.flow.as_deref())
                .map_err(|errors| anyhow!("{}: {errors}", path.display())),
        }
    }
}

pub fn dlq(command: DlqCommand) -> ExitCode {
    let result = match command {
        DlqCommand::List { which, json } => list(&which, json, false),
        DlqCommand::Show { which, json } => list(&which, json, true),
        DlqCommand::Replay { which, flow } => replay(&which, &flow),
        DlqCommand::Purge { which, flow, yes } => purge(&which, &flow, yes),
    };
    result.unwrap_or_else(|error| {
        eprintln!("weir dlq: {error:#}");
        ExitCode::FAILURE
    })
}

fn letter(lines: &[FileLine], index: usize) -> &StoredDeadLetter {
    lines[index].1.as_ref().expect("selected lines hold letters")
}

fn list(which: &Which, json: bool, full: bool) -> anyhow::Result<ExitCode> {
    let (lines, selected) = which.select()?;
    let letters: Vec<&StoredDeadLetter> = selected.iter().map(|&index| letter(&lines, index)).collect();
    if json {
        println!("{}", json!({"file": which.file, "deadLetters": letters}));
        return Ok(ExitCode::SUCCESS);
    }
    for letter in &letters {
        let name = letter.event["name"].as_str().unwrap_or("?");
        if full {
            println!("{}  {}", letter.time, letter.destination);
            println!("  cause     {}", letter.cause);
            println!("  reason    {}", letter.reason);
            println!("  attempts  {}", letter.attempts);
            println!("  event     {}", letter.event);
        } else {
            println!(
                "{}  {:<16} {:<18} {:>3}  {:<20} {}",
                letter.time, letter.destination, letter.cause, letter.attempts, name, letter.reason
            );
        }
    }
    eprintln!("{} dead letters in {}", letters.len(), which.file.display());
    Ok(ExitCode::SUCCESS)
}

/// The flow's journal settings; replay and purge need it.
fn journal_settings(flow: &Flow) -> anyhow::Result<JournalSettings> {
    if !flow.journal.enabled {
        bail!("the flow has no journal (journal.enabled = false): replay appends to the journal");
    }
    Ok(flow.journal.clone())
}

fn replay(which: &Which, flow_args: &FlowArgs) -> anyhow::Result<ExitCode> {
    let flow = flow_args.load()?;
    let settings = journal_settings(&flow)?;
    let built = crate::assembly::build_flow(&flow).map_err(|errors| anyhow!("the flow is invalid:\n{errors}"))?;
    let journaled: Vec<String> = built
        .runtime
        .routes()
        .iter()
        .filter(|route| route.journaled())
        .map(|route| route.id().to_owned())
        .collect();
    let (lines, selected) = which.select()?;
    let (replayable, kept): (Vec<usize>, Vec<usize>) = selected
        .into_iter()
        .partition(|&index| journaled.contains(&letter(&lines, index).destination));
    for &index in &kept {
        eprintln!(
            "kept: a dead letter of \"{}\", which is not a journaled destination of this flow",
            letter(&lines, index).destination
        );
    }
    if replayable.is_empty() {
        eprintln!("nothing to replay from {}", which.file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let journal = crate::assembly::open_offline(&settings)
        .context("weir must be stopped to replay (it holds the journal while it runs)")?;
    // A destination that never read this journal (it was off, or is new) would start past
    // the replayed records: open its cursor first, at the journal's end.
    let mut targets: Vec<&str> = replayable
        .iter()
        .map(|&i| letter(&lines, i).destination.as_str())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        journal
            .consumer(target)
            .with_context(|| format!("cannot open the journal cursor of \"{target}\""))?;
    }
    let progress = progress_bar(replayable.len() as u64);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut replayed = Vec::new();
    let mut failure = None;
    for chunk in replayable.chunks(500) {
        let items = chunk
            .iter()
            .map(|&index| {
                let letter = letter(&lines, index);
                let mut event = Event::from_tree(letter.event.clone());
                if let Some(ingest) = &letter.ingest {
                    event.set_ingest(Arc::new(Ingest::new(ingest.clone())));
                }
                let entry = Journaled::for_destination(Arc::from(letter.destination.as_str()), Arc::new(event));
                (entry.encode(), Arc::new(entry))
            })
            .collect::<Vec<(Bytes, Arc<Journaled>)>>();
        match runtime.block_on(journal.append(items)) {
            Ok(_) => {
                replayed.extend_from_slice(chunk);
                progress.inc(chunk.len() as u64);
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    progress.finish_and_clear();
    journal.close();
    // Only what is on disk in the journal leaves the file.
    rewrite_file(&which.file, &lines, |index| !replayed.contains(&index))
        .with_context(|| format!("replayed into the journal, but cannot rewrite {}", which.file.display()))?;
    let mut per_destination: BTreeMap<&str, usize> = BTreeMap::new();
    for &index in &replayed {
        *per_destination.entry(&letter(&lines, index).destination).or_default() += 1;
    }
    let counts: Vec<String> = per_destination.iter().map(|(d, n)| format!("{d} {n}")).collect();
    println!(
        "replayed {} dead letters into {} ({}); delivered when weir starts",
        replayed.len(),
        settings.path.display(),
        counts.join(", ")
    );
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(error) => Err(anyhow!(
            "stopped after {} of {}: {error}; the rest stay in {}",
            replayed.len(),
            replayable.len(),
            which.file.display()
        )),
    }
}

fn purge(which: &Which, flow_args: &FlowArgs, yes: bool) -> anyhow::Result<ExitCode> {
    let (lines, selected) = which.select()?;
    if !yes {
        println!(
            "{} dead letters in {} would be removed; add --yes to remove them",
            selected.len(),
            which.file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    // The journal's lock says no weir runs on this flow (it would append to the file).
    let flow = flow_args.load()?;
    let _lock = match flow.journal.enabled {
        true => Some(
            crate::journal::storage::Disk::open(&flow.journal.path)
                .context("weir must be stopped to purge (it appends to the file while it runs)")?,
        ),
        false => None,
    };
    rewrite_file(&which.file, &lines, |index| !selected.contains(&index))
        .with_context(|| format!("cannot rewrite {}", which.file.display()))?;
    println!("removed {} dead letters from {}", selected.len(), which.file.display());
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replaying {bar:40} {pos}/{len} dead letters ({eta} left)")
            .expect("a valid template"),
    );
    bar
}

pub fn journal(command: JournalCommand) -> ExitCode {
    let JournalCommand::Status { flow, path, json } = command;
    let result = (|| -> anyhow::Result<ExitCode> {
        let path = match path {
            Some(path) => path,
            None => flow.load()?.journal.path,
        };
        let disk = crate::journal::storage::Disk::inspect(&path)?;
        let status = crate::journal::status::inspect(&disk)?;
        if json {
            println!("{}", serde_json::to_string(&status)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{}: {} segments, {} bytes, records {}..{}",
            path.display(),
            status.segments,
            status.bytes,
            status.first_seq,
            status.last_seq
        );
        let now_ms = crate::event::now_ms();
        println!(
            "{:<20} {:>12} {:>10} {:>12} {:>10}",
            "destination", "cursor", "lag", "lag bytes", "oldest"
        );
        for consumer in &status.consumers {
            let cursor = consumer.cursor.map_or("damaged".to_owned(), |c| c.to_string());
            let oldest = consumer.oldest_ms.map_or("-".to_owned(), |ms| {
                humantime::format_duration(std::time::Duration::from_secs(now_ms.saturating_sub(ms) / 1000)).to_string()
            });
            println!(
                "{:<20} {:>12} {:>10} {:>12} {:>10}",
                consumer.name, cursor, consumer.lag_events, consumer.lag_bytes, oldest
            );
        }
        Ok(ExitCode::SUCCESS)
    })();
    result.unwrap_or_else(|error| {
        eprintln!("weir journal: {error:#}");
        ExitCode::FAILURE
    })
}
