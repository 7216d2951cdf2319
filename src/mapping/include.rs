//! walkerOS's `include`: whole event sections flattened into the mapped data
//! (`data_title`, `globals_pagegroup`, `context_shopping` = the context label...).
//!
//! One level only, values raw (nested objects stay objects); the `context` section takes the
//! label (element 0) of each `[label, order]` tuple; `event` is a synthesized section of the
//! event's own scalar fields; `all` means every section. This is what walkerOS's
//! `flattenIncludeSections` does when run (checked against the published @walkeros/core
//! package); systems.md §C.1's summary ("nested objects flattened with `_`") does not match
//! the code, and weir follows the code.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::ConfigErrors;
use crate::event::Object;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Data,
    Globals,
    Context,
    User,
    Source,
    Event,
    All,
}

const ALL: [Section; 6] = [
    Section::Data,
    Section::Globals,
    Section::Context,
    Section::User,
    Section::Source,
    Section::Event,
];

/// The fields of the synthesized `event` section, in walkerOS's order.
const EVENT_FIELDS: [&str; 7] = ["entity", "action", "id", "timestamp", "name", "trigger", "timing"];

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Data => "data",
            Section::Globals => "globals",
            Section::Context => "context",
            Section::User => "user",
            Section::Source => "source",
            Section::Event => "event",
            Section::All => "all",
        }
    }
}

pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Vec<Section>> {
    match serde_json::from_value::<Vec<Section>>(value.clone()) {
        Ok(sections) => Some(sections),
        Err(_) => {
            errors.push(
                path,
                "must be a list of sections: data, globals, context, user, source, event, all",
            );
            None
        }
    }
}

/// The flattened sections of `event`.
pub fn flatten(sections: &[Section], event: &Value) -> Object {
    let sections: &[Section] = if sections.contains(&Section::All) {
        &ALL
    } else {
        sections
    };
    let mut out = Map::new();
    for section in sections {
        let prefix = section.name();
        if *section == Section::Event {
            for field in EVENT_FIELDS {
                if let Some(value) = event.get(field) {
                    out.insert(format!("event_{field}"), value.clone());
                }
            }
            continue;
        }
        let Some(Value::Object(fields)) = event.get(prefix) else {
            continue;
        };
        for (key, value) in fields {
            let value = match (section, value) {
                (Section::Context, Value::Array(tuple)) => match tuple.first() {
                    Some(label) => label.clone(),
                    None => continue,
                },
                _ => value.clone(),
            };
            out.insert(format!("{prefix}_{key}"), value);
        }
    }
    out
}
