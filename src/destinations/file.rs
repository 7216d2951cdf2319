//! `file`: events as JSON lines in a local file, rotated by size. The embedded default
//! destination, so weir runs with no server at all.
//!
//! One line per event: the mapped `data` when the mapping produced a non-empty object
//! (as weir does for every destination), else the full event, written exactly as walkerOS
//! serializes it. A batch is one `write` call; with `fsync` on, the file is synced before
//! the batch counts as delivered (otherwise delivered means handed to the OS). When the
//! file would pass `maxBytes`, it is renamed to `<stem>.<unix ms>.<ext>` and a new one is
//! started; `maxFiles` keeps only that many rotated files.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::config::ConfigErrors;
use crate::config::typed;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderInput, Rendered};

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

fn default_path() -> PathBuf {
    PathBuf::from("weir-data/events.jsonl")
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

/// Rule settings: the file destination has none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoRuleSettings {}

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

struct OpenFile {
    file: tokio::fs::File,
    size: u64,
}

pub struct FileDestination {
    settings: FileSettings,
    open: Mutex<Option<OpenFile>>,
}

impl FileDestination {
    pub fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<FileDestination> {
        let settings = match settings {
            Some(value) => typed::parse::<FileSettings>(value, path, errors)?,
            None => FileSettings::default(),
        };
        Some(FileDestination::new(settings))
    }

    pub fn new(settings: FileSettings) -> FileDestination {
        FileDestination {
            settings,
            open: Mutex::new(None),
        }
    }

    fn error(&self, action: &'static str, source: io::Error) -> FileError {
        FileError {
            action,
            path: self.settings.path.clone(),
            source,
        }
    }

    async fn open(&self) -> Result<OpenFile, FileError> {
        let path = &self.settings.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.error("cannot create the directory of", e))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|e| self.error("cannot open", e))?;
        let size = file.metadata().await.map_err(|e| self.error("cannot stat", e))?.len();
        Ok(OpenFile { file, size })
    }

    async fn rotate(&self, current: OpenFile) -> Result<OpenFile, FileError> {
        let mut file = current.file;
        file.flush().await.map_err(|e| self.error("cannot flush", e))?;
        drop(file);
        let mut rotated = rotated_name(&self.settings.path, std::time::SystemTime::now());
        // Two rotations within one millisecond must not overwrite each other.
        let mut attempt = 1;
        while tokio::fs::try_exists(&rotated).await.unwrap_or(false) {
            let stem = rotated
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("events")
                .to_owned();
            let (base, _) = stem
                .rsplit_once('-')
                .filter(|(_, n)| n.parse::<u32>().is_ok())
                .unwrap_or((&stem, ""));
            let extension = rotated
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| format!(".{e}"))
                .unwrap_or_default();
            rotated = rotated.with_file_name(format!("{base}-{attempt}{extension}"));
            attempt += 1;
        }
        tokio::fs::rename(&self.settings.path, &rotated)
            .await
            .map_err(|e| self.error("cannot rotate", e))?;
        if let Some(keep) = self.settings.max_files {
            prune_rotated(&self.settings.path, keep).await;
        }
        self.open().await
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

/// Removes the oldest rotated files beyond `keep`. Best effort: a file that cannot be
/// removed is logged and left.
async fn prune_rotated(path: &Path, keep: usize) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("events").to_owned();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let mut rotated = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
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
        if let Err(error) = tokio::fs::remove_file(&old).await {
            tracing::warn!(file = %old.display(), error = %error, "cannot remove rotated file");
        }
    }
}

/// The line a destination writes for one mapped event: the mapped data when it is a
/// non-empty object, else the full event.
pub fn event_or_data_line(input: &RenderInput<'_, impl Sized>) -> Vec<u8> {
    match input.data {
        Some(Value::Object(data)) if !data.is_empty() => crate::json::to_vec(data),
        _ => crate::json::to_vec(input.event),
    }
}

impl Destination for FileDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = FileError;
    const KIND: &'static str = "file";

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 1000,
            concurrency: 1,
        }
    }

    async fn connect(&self) -> Result<(), FileError> {
        let mut open = self.open.lock().await;
        if open.is_none() {
            *open = Some(self.open().await?);
        }
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<Vec<u8>>, String> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let mut line = event_or_data_line(input);
        line.push(b'\n');
        Ok(Rendered::Send(line))
    }

    fn explain(&self, wire: &Vec<u8>) -> Value {
        let line = String::from_utf8_lossy(wire.strip_suffix(b"\n").unwrap_or(wire));
        json!({ "line": line })
    }

    fn wire_size(&self, wire: &Vec<u8>) -> usize {
        wire.len()
    }

    async fn send(&self, batch: &[&Vec<u8>]) -> Result<Vec<Result<(), FileError>>, FileError> {
        let total: usize = batch.iter().map(|line| line.len()).sum();
        let mut buffer = Vec::with_capacity(total);
        for line in batch {
            buffer.extend_from_slice(line);
        }
        let mut guard = self.open.lock().await;
        let mut current = match guard.take() {
            Some(current) => current,
            None => self.open().await?,
        };
        if self.settings.max_bytes > 0 && current.size > 0 && current.size + total as u64 > self.settings.max_bytes {
            current = self.rotate(current).await?;
        }
        let written = async {
            current.file.write_all(&buffer).await?;
            current.file.flush().await?;
            if self.settings.fsync {
                current.file.sync_data().await?;
            }
            Ok::<(), io::Error>(())
        }
        .await;
        match written {
            Ok(()) => {
                current.size += total as u64;
                *guard = Some(current);
                Ok(batch.iter().map(|_| Ok(())).collect())
            }
            // Drop the handle: the next attempt reopens (the file may have been removed).
            Err(error) => Err(self.error("cannot write", error)),
        }
    }

    fn classify(&self, error: &FileError) -> ErrorClass {
        match error.source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory => {
                ErrorClass::Fatal
            }
            _ => ErrorClass::Retryable,
        }
    }

    async fn shutdown(&self) -> Result<(), FileError> {
        if let Some(mut current) = self.open.lock().await.take() {
            current.file.flush().await.map_err(|e| self.error("cannot flush", e))?;
            current
                .file
                .sync_data()
                .await
                .map_err(|e| self.error("cannot sync", e))?;
        }
        Ok(())
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
    }
}
