//! `demo`: walkerOS's demo destination (`@walkeros/destination-demo`), so that walkerOS's
//! example flows run unchanged. Each event is logged to standard output as
//! `[<name>] <JSON.stringify(output, null, 2)>`, where the output is the event (after the
//! destination's policy and the rule's `name`), or, with `values`, an object of the chosen
//! dot paths (`{"data.title": "Home"}`, missing paths left out). Like walkerOS's, it ignores
//! mapped `data`. Unlike walkerOS's `console.log`, a line counts as delivered only once it
//! is written, and a closed stdout is an error, not a silent loss.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{ConfigErrors, typed};
use crate::delivery::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::mapping::NoRuleSettings;

#[derive(Debug, Deserialize)]
struct DemoSettings {
    /// The log prefix; walkerOS's default is `demo`.
    name: Option<String>,
    /// Dot paths to log instead of the whole event.
    values: Option<Vec<String>>,
}

pub struct DemoDestination {
    prefix: String,
    values: Option<Vec<Vec<String>>>,
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

impl DemoDestination {
    /// What walkerOS's demo logs for `event`.
    fn output<'e>(&self, event: &'e Value) -> std::borrow::Cow<'e, Value> {
        let Some(paths) = &self.values else {
            return std::borrow::Cow::Borrowed(event);
        };
        let mut chosen = Map::new();
        for path in paths {
            if let Some(value) = at_path(event, path) {
                chosen.insert(path.join("."), value.clone());
            }
        }
        std::borrow::Cow::Owned(Value::Object(chosen))
    }
}

/// JavaScript's `path.reduce((acc, key) => acc?.[key], event)` over JSON: object members and
/// array indexes (other property reads, such as `length`, give undefined here).
fn at_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key
            .parse::<usize>()
            .ok()
            .filter(|index| index.to_string() == *key)
            .and_then(|index| items.get(index)),
        _ => None,
    })
}

impl Destination for DemoDestination {
    type RuleSettings = NoRuleSettings;
    type Wire = Vec<u8>;
    type Error = std::io::Error;
    const KIND: &'static str = "demo";
    const PACKAGE: Option<&'static str> = Some("@walkeros/destination-demo");

    fn from_settings(settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        let settings = match settings {
            None | Some(Value::Null) => DemoSettings {
                name: None,
                values: None,
            },
            Some(value) => typed::parse::<DemoSettings>(value, path, errors)?,
        };
        let name = settings.name.unwrap_or_else(|| "demo".to_owned());
        Some(DemoDestination {
            prefix: format!("[{name}] "),
            values: settings.values.map(|paths| {
                paths
                    .iter()
                    .map(|p| p.split('.').map(str::to_owned).collect())
                    .collect()
            }),
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
        // walkerOS's demo logs this from its `init`.
        let line = format!("{}initialized\n", self.prefix);
        super::stdout::write_lines(&self.out, &[line.as_bytes()]).await
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<Vec<u8>>, RenderError> {
        if input.silent {
            return Ok(Rendered::Skip("the matching rule is silent".into()));
        }
        let mut line = self.prefix.clone().into_bytes();
        line.extend_from_slice(&crate::json::to_pretty(&self.output(input.event.tree())));
        line.push(b'\n');
        Ok(Rendered::Send(line))
    }

    fn explain(&self, wire: &Vec<u8>) -> Value {
        let text = String::from_utf8_lossy(wire);
        let logged = text
            .strip_prefix(&self.prefix)
            .and_then(|json| serde_json::from_str::<Value>(json).ok())
            .unwrap_or(Value::Null);
        json!({ "prefix": self.prefix.trim_end(), "logged": logged })
    }

    fn wire_size(&self, wire: &Vec<u8>) -> usize {
        wire.len()
    }

    async fn send(&self, batch: &[&Vec<u8>]) -> Result<Vec<Result<(), std::io::Error>>, std::io::Error> {
        let lines: Vec<&[u8]> = batch.iter().map(|line| line.as_slice()).collect();
        super::stdout::write_lines(&self.out, &lines).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn classify(&self, error: &std::io::Error) -> ErrorClass {
        super::stdout::classify(error)
    }

    async fn shutdown(&self) -> Result<(), std::io::Error> {
        use tokio::io::AsyncWriteExt;
        self.out.lock().await.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(settings: Value) -> DemoDestination {
        let mut errors = ConfigErrors::default();
        let destination = DemoDestination::from_settings(Some(&settings), "settings", &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors}");
        destination
    }

    #[test]
    fn values_pick_dot_paths_keyed_by_the_whole_path() {
        let event =
            json!({"name": "page view", "data": {"title": "Home", "n": 0}, "nested": [{"entity": "a"}], "user": {}});
        let chosen =
            demo(json!({"values": ["name", "data.title", "nested.0.entity", "data.missing", "user", "nested.01"]}))
                .output(&event);
        assert_eq!(
            *chosen,
            json!({"name": "page view", "data.title": "Home", "nested.0.entity": "a", "user": {}})
        );
        assert_eq!(*demo(json!({})).output(&event), event);
    }

    #[test]
    fn unknown_settings_are_named() {
        let mut errors = ConfigErrors::default();
        DemoDestination::from_settings(Some(&json!({"value": ["name"]})), "settings", &mut errors);
        assert!(errors.to_string().contains("settings.value: unknown key"), "{errors}");
    }
}
