//! `file`: events as JSON lines in a local file, rotated by size. The embedded default
//! destination, so weir runs with no server at all.
//!
//! One line per event: the mapped `data` when the mapping produced a non-empty object
//! (as weir does for every destination), else the full event, written exactly as walkerOS
//! serializes it. A batch is one `write` call; with `fsync` on, the file is synced before
//! the batch counts as delivered (otherwise delivered means handed to the OS). When the
//! file would pass `maxBytes`, it is renamed to `<stem>.<unix ms>.<ext>` and a new one is
//! started; `maxFiles` keeps only that many rotated files.
//!
//! Writes run on the blocking pool as one unit: write the batch, or on failure cut the file
//! back to where it was, so a retry never finds half a batch (a truncated line glued to
//! the next). The unit runs to its end even when the caller stops waiting (a timeout), so
//! the file is never left mid-line; a batch that timed out may then be written twice, which
//! is the at-least-once the retrier promises.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ConfigErrors;
use crate::config::typed;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::mapping::NoRuleSettings;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSettings {
    /// Default `weir-data/events.jsonl`.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes. Default 100 MiB; 0 = never.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files to keep (oldest removed first). Default: keep all.
    pub max_files: Option<usize>,
    /// Sync to disk before a batch counts as delivered. Default false.
    #[serde(default)]
    pub fsync: bool,
}

/// Where `file` writes unless told otherwise.
pub const DEFAULT_PATH: &str = "weir-data/events.jsonl";

fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_PATH)
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            path: default_path(),
            max_bytes: default_max_bytes(),
            max_files: None,
            fsync: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

struct OpenFile {
    file: File,
    size: u64,
}

/// The file and what is known about it; used on the blocking pool only.
struct Writer {
    settings: FileSettings,
    open: Mutex<Option<OpenFile>>,
}

pub struct FileDestination {
    writer: Arc<Writer>,
}

impl FileDestination {
    pub fn new(settings: FileSettings) -> FileDestination {
        FileDestination {
            writer: Arc::new(Writer {
                settings,
                open: Mutex::new(None),
            }),
        }
    }

    /// Runs `work` on the blocking pool with the writer.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Writer) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        let writer = self.writer.clone();
        match tokio::task::spawn_blocking(move || work(&writer)).await {
            Ok(result) => result,
            Err(join) => Err(writer_error(
                &self.writer,
                "lost the writer for",
                io::Error::other(join.to_string()),
            )),
        }
    }
}

fn writer_error(writer: &Writer, action: &'static str, source: io::Error) -> FileError {
    FileError {
        action,
        path: writer.settings.path.clone(),
        source,
    }
}

impl Writer {
    fn error(&self, action: &'static str, source: io::Error) -> FileError {
        writer_error(self, action, source)
    }

    fn open_file(&self) -> Result<OpenFile, FileError> {
        let path = &self.settings.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| self.error("cannot create the directory of", e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| self.error("cannot open", e))?;
        let size = file.metadata().map_err(|e| self.error("cannot stat", e))?.len();
        Ok(OpenFile { file, size })
    }

    fn rotate(&self, current: OpenFile) -> Result<OpenFile, FileError> {
        drop(current);
        let path = &self.settings.path;
        let mut rotated = rotated_name(path, std::time::SystemTime::now());
        // Two rotations within one millisecond must not overwrite each other.
        let mut sequence = 1;
        while rotated.exists() {
            rotated = with_sequence(&rotated_name(path, std::time::SystemTime::now()), sequence);
            sequence += 1;
        }
        std::fs::rename(path, &rotated).map_err(|e| self.error("cannot rotate", e))?;
        if let Some(keep) = self.settings.max_files {
            prune_rotated(path, keep);
        }
        self.open_file()
    }

    /// Appends `buffer` whole, or leaves the file as it was.
    fn write(&self, buffer: &[u8]) -> Result<(), FileError> {
        let mut guard = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut current = match guard.take() {
            Some(current) => current,
            None => self.open_file()?,
        };
        let length = buffer.len() as u64;
        if self.settings.max_bytes > 0 && current.size > 0 && current.size + length > self.settings.max_bytes {
            current = self.rotate(current)?;
        }
        let written = current.file.write_all(buffer).and_then(|()| {
            if self.settings.fsync {
                current.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                current.size += length;
                *guard = Some(current);
                Ok(())
            }
            Err(error) => {
                // Undo a partial write. The handle is dropped: the next attempt reopens (the
                // file may have been removed or replaced).
                let _ = current.file.set_len(current.size);
                Err(self.error("cannot write", error))
            }
        }
    }
}

/// `dir/events.jsonl` → `dir/events.<unix ms>.jsonl`.
fn rotated_name(path: &Path, time: std::time::SystemTime) -> PathBuf {
    let millis = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("events");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{millis}.{ext}"),
        None => format!("{stem}.{millis}"),
    };
    path.with_file_name(name)
}

/// `events.<ms>.jsonl` → `events.<ms>-<n>.jsonl`.
fn with_sequence(rotated: &Path, sequence: u32) -> PathBuf {
    let stem = rotated.file_stem().and_then(|s| s.to_str()).unwrap_or("events");
    let name = match rotated.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}-{sequence}.{ext}"),
        None => format!("{stem}-{sequence}"),
    };
    rotated.with_file_name(name)
}

/// Removes the oldest rotated files beyond `keep`. Best effort: a file that cannot be
/// removed is logged and left.
fn prune_rotated(path: &Path, keep: usize) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("events").to_owned();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut rotated = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{stem}.")) else {
            continue;
        };
        // `<stem>.<ms>[-<n>].<ext>`
        let stamp = rest.split('.').next().unwrap_or("");
        let (millis, sequence) = stamp.split_once('-').unwrap_or((stamp, "0"));
        if let (Ok(millis), Ok(sequence)) = (millis.parse::<u128>(), sequence.parse::<u32>()) {
            rotated.push((millis, sequence, entry.path()));
        }
    }
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep);
    for (_, _, old) in rotated.into_iter().take(excess) {
        if let Err(error) = std::fs::remove_file(&old) {
            tracing::warn!(file = %old.display(), error = %error, "cannot remove rotated file");
        }
    }
}

/// The JSON line `file`, `stdout` and `blackhole` write for one mapped event: the mapped
/// data when it is a non-empty object, else the full event; nothing for a `silent` rule.
pub fn render_json_line(input: &RenderInput<'_, impl Sized>) -> Rendered<Vec<u8>> {
    if input.silent {
        return Rendered::Skip("the matching rule is silent".into());
    }
    let mut line = match input.data {
        Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(data),
        _ => input.event.to_json(),
    };
    line.push(b'\n');
    Rendered::Send(line)
}

/// `weir explain`'s view of a JSON line.
pub fn explain_json_line(wire: &[u8]) -> Value {
    json!({ "line": String::from_utf8_lossy(wire.strip_suffix(b"\n").unwrap_or(wire)) })
}

impl Destination for FileDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = FileError;
    const KIND: &'static str = "file";

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let settings = match settings {
            Some(value) => typed::parse::<FileSettings>(value, path, errors)?,
            None => FileSettings::default(),
        };
        Some(FileDestination::new(settings))
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 1000,
            ..DeliveryDefaults::default()
        }
    }

    fn written_files(&self) -> Vec<PathBuf> {
        vec![self.writer.settings.path.clone()]
    }

    async fn connect(&self) -> Result<(), FileError> {
        self.blocking(|writer| {
            let mut open = writer.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if open.is_none() {
                *open = Some(writer.open_file()?);
            }
            Ok(())
        })
        .await
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<Vec<u8>>, RenderError> {
        Ok(render_json_line(input))
    }

    fn explain(&self, wire: &Vec<u8>) -> Value {
        explain_json_line(wire)
    }

    fn wire_size(&self, wire: &Vec<u8>) -> usize {
        wire.len()
    }

    async fn send(&self, batch: &[&Vec<u8>]) -> Result<Vec<Result<(), FileError>>, FileError> {
        let mut buffer = Vec::with_capacity(batch.iter().map(|line| line.len()).sum());
        for line in batch {
            buffer.extend_from_slice(line);
        }
        self.blocking(move |writer| writer.write(&buffer)).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &FileError) -> ErrorClass {
        match error.source.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory => ErrorClass::Fatal,
            // Full disks, missing directories and permissions can all be fixed while weir
            // keeps retrying; the retry horizon bounds the wait.
            _ => ErrorClass::Retryable,
        }
    }

    async fn shutdown(&self) -> Result<(), FileError> {
        self.blocking(|writer| {
            let mut open = writer.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(current) = open.take() {
                current.file.sync_data().map_err(|e| writer.error("cannot sync", e))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_keep_stem_and_extension() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            rotated_name(Path::new("weir-data/events.jsonl"), time),
            PathBuf::from("weir-data/events.1700000000123.jsonl")
        );
        assert_eq!(
            with_sequence(Path::new("weir-data/events.1700000000123.jsonl"), 2),
            PathBuf::from("weir-data/events.1700000000123-2.jsonl")
        );
    }
}
