//! `blackhole`: renders every event exactly as `file` would, then accepts it without
//! writing anything. Used to measure weir itself (ingest, mapping, serialization and the
//! delivery machinery) with no target system in the way.

use serde_json::{Value, json};

use super::file::render_json_line;
use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::mapping::NoRuleSettings;

pub struct BlackholeDestination;

/// Never constructed: the blackhole cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
pub enum Never {}

impl Destination for BlackholeDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = Never;
    const KIND: &'static str = "blackhole";

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        super::no_settings("blackhole", settings, path, errors);
        Some(BlackholeDestination)
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 1000,
            batch_bytes: None,
            concurrency: 2,
            ..DeliveryDefaults::default()
        }
    }

    async fn connect(&self) -> Result<(), Never> {
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<Vec<u8>>, RenderError> {
        Ok(render_json_line(input))
    }

    fn explain(&self, wire: &Vec<u8>) -> Value {
        json!({ "bytes": wire.len() })
    }

    fn wire_size(&self, wire: &Vec<u8>) -> usize {
        wire.len()
    }

    async fn send(&self, batch: &[&Vec<u8>]) -> Result<Vec<Result<(), Never>>, Never> {
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &Never) -> ErrorClass {
        match *error {}
    }

    async fn shutdown(&self) -> Result<(), Never> {
        Ok(())
    }
}
