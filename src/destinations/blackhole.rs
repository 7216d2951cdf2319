//! `blackhole`: renders every event exactly as `file` would, then accepts it without
//! writing anything. Used to measure weir itself (ingest, mapping, serialization and the
//! delivery machinery) with no target system in the way.

use serde_json::{Value, json};

use super::file::{NoRuleSettings, event_or_data_line};
use crate::config::ConfigErrors;
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderInput, Rendered};

pub struct BlackholeDestination;

impl BlackholeDestination {
    pub fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        if let Some(Value::Object(map)) = settings {
            for key in map.keys() {
                errors.push(
                    crate::config::join(path, key),
                    "unknown key (blackhole has no settings)",
                );
            }
        }
        Some(BlackholeDestination)
    }
}

/// Never constructed: the blackhole cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
pub enum Never {}

impl Destination for BlackholeDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = Never;
    const KIND: &'static str = "blackhole";

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults {
            batch_size: 1000,
            concurrency: 2,
        }
    }

    async fn connect(&self) -> Result<(), Never> {
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<Vec<u8>>, String> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        Ok(Rendered::Send(event_or_data_line(input)))
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
