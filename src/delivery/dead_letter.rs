//! The dead-letter sink: where an event goes when a destination cannot deliver it.
//!
//! Each entry carries the event (as the collector enriched it, so a replay maps it again),
//! the destination, the cause (a [`Cause`] label) and the reason in words, the number of
//! attempts and the time. The default sink is a
//! JSON-lines file, written with one `write` per batch and synced to disk before the event
//! is reported as dead-lettered: an entry here is the last copy of the event, so it must
//! survive a crash. Destinations that share a path share one writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot write dead-letter file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the machinery gave up on an event; `reason` says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The destination could not render it (a missing field, a value its target refuses).
    Unrenderable,
    /// The target refused it in a way retrying cannot fix.
    Fatal,
    /// Every retry failed.
    RetriesExhausted,
    /// The shutdown deadline passed before it was delivered.
    ShutdownDeadline,
    /// The destination never connected before shutdown.
    NeverConnected,
}

impl Cause {
    pub const ALL: [Cause; 5] = [
        Cause::Unrenderable,
        Cause::Fatal,
        Cause::RetriesExhausted,
        Cause::ShutdownDeadline,
        Cause::NeverConnected,
    ];

    /// Its name in the dead-letter entry and in `weir_dead_letters_total{cause}`.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Unrenderable => "unrenderable",
            Cause::Fatal => "fatal",
            Cause::RetriesExhausted => "retries_exhausted",
            Cause::ShutdownDeadline => "shutdown_deadline",
            Cause::NeverConnected => "never_connected",
        }
    }
}

/// One undeliverable event.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub destination: Arc<str>,
    pub cause: Cause,
    pub reason: String,
    pub attempts: u32,
    pub event: Arc<Event>,
    pub time: SystemTime,
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    time: String,
    destination: &'a str,
    cause: &'static str,
    reason: &'a str,
    attempts: u32,
    event: &'a Event,
    /// The request's ingest (kept so that a replay maps the event as it was first mapped).
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest: Option<&'a serde_json::value::RawValue>,
}

impl DeadLetter {
    /// The JSON line written for this entry (without the newline).
    pub fn to_json_line(&self) -> Vec<u8> {
        crate::json::to_vec(&DeadLetterLine {
            time: humantime::format_rfc3339_millis(self.time).to_string(),
            destination: &self.destination,
            cause: self.cause.label(),
            reason: &self.reason,
            attempts: self.attempts,
            event: &self.event,
            ingest: self
                .event
                .ingest()
                .and_then(|ingest| serde_json::from_str(&ingest.text).ok()),
        })
    }
}

/// A dead letter as the file holds it (what `weir dlq` reads).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredDeadLetter {
    pub time: String,
    pub destination: String,
    pub cause: String,
    pub reason: String,
    pub attempts: u32,
    pub event: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<serde_json::Value>,
}

/// One line of a dead-letter file: the text, and the letter it holds (`None`: a line weir
/// did not write, kept as it is).
pub type FileLine = (String, Option<StoredDeadLetter>);

/// Reads a dead-letter file line by line.
pub fn read_file(path: &Path) -> std::io::Result<Vec<FileLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| (line.to_owned(), serde_json::from_str(line).ok()))
        .collect())
}

/// Replaces the file with the lines `keep` says to keep, atomically and durably: written
/// aside, synced, renamed over, directory synced. A crash leaves the old file or the new.
pub fn rewrite_file(path: &Path, lines: &[FileLine], keep: impl Fn(usize) -> bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = String::new();
    for (index, (line, _)) in lines.iter().enumerate() {
        if keep(index) {
            text.push_str(line);
            text.push('\n');
        }
    }
    let aside = path.with_extension("rewrite");
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&aside, path)?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Where dead letters go.
#[derive(Clone, Debug)]
pub enum DeadLetterSink {
    /// Append to a JSON-lines file.
    File(Arc<FileDeadLetters>),
}

impl DeadLetterSink {
    /// The file sink for `path`, shared with every other destination using the same path.
    pub fn file(path: &Path) -> DeadLetterSink {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<FileDeadLetters>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .expect("dlq registry poisoned");
        // `dlq.jsonl` and `./dlq.jsonl` are one file and must share one writer.
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let sink = open
            .entry(key)
            .or_insert_with(|| {
                Arc::new(FileDeadLetters {
                    path: path.to_path_buf(),
                    file: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        DeadLetterSink::File(sink)
    }

    /// The file dead letters are appended to.
    pub fn file_path(&self) -> Option<&Path> {
        match self {
            DeadLetterSink::File(file) => Some(&file.path),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DeadLetterSink::File(file) => format!("file {}", file.path.display()),
        }
    }

    /// Stores the entries durably; returns only once they are safe.
    pub async fn write(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        match self {
            DeadLetterSink::File(file) => file.write(letters).await,
        }
    }
}

/// An append-only JSON-lines dead-letter file.
#[derive(Debug)]
pub struct FileDeadLetters {
    path: PathBuf,
    file: tokio::sync::Mutex<Option<tokio::fs::File>>,
}

impl FileDeadLetters {
    async fn write(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let error = |source| DeadLetterError::File {
            path: self.path.clone(),
            source,
        };
        let mut buffer = Vec::with_capacity(letters.len() * 512);
        for letter in letters {
            buffer.extend_from_slice(&letter.to_json_line());
            buffer.push(b'\n');
        }
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(parent).await.map_err(error)?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(error)?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("opened above");
        let result = async {
            file.write_all(&buffer).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        if result.is_err() {
            // Reopen next time: the handle may be in an unknown state.
            *guard = None;
        }
        result.map_err(error)
    }
}
