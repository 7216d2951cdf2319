//! `stdout`: events as JSON lines on standard output, for trying flows out and for piping
//! into other tools. Same line format as `file`.

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::file::{explain_json_line, render_json_line};
use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::mapping::NoRuleSettings;

pub struct StdoutDestination {
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

impl Destination for StdoutDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = std::io::Error;
    const KIND: &'static str = "stdout";

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        super::no_settings("stdout", settings, path, errors);
        Some(StdoutDestination {
            out: tokio::sync::Mutex::new(tokio::io::stdout()),
        })
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 1000,
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
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

    async fn send(&self, batch: &[&Vec<u8>]) -> Result<Vec<Result<(), std::io::Error>>, std::io::Error> {
        let lines: Vec<&[u8]> = batch.iter().map(|line| line.as_slice()).collect();
        write_lines(&self.out, &lines).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &std::io::Error) -> ErrorClass {
        classify(error)
    }

    async fn shutdown(&self) -> Result<(), std::io::Error> {
        self.out.lock().await.flush().await
    }
}

/// Writes `lines` to `out` in one write, and flushes: a batch is on stdout, or an error.
pub(super) async fn write_lines(out: &tokio::sync::Mutex<tokio::io::Stdout>, lines: &[&[u8]]) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(lines.iter().map(|line| line.len()).sum());
    for line in lines {
        buffer.extend_from_slice(line);
    }
    let mut out = out.lock().await;
    out.write_all(&buffer).await?;
    out.flush().await
}

/// A closed stdout (the reader went away) will not come back; anything else may.
pub(super) fn classify(error: &std::io::Error) -> ErrorClass {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe => ErrorClass::Fatal,
        _ => ErrorClass::Retryable,
    }
}
