//! walkerOS's `include`: whole event sections flattened into the mapped data
//! (`data_title`, `globals_pagegroup`, `context_shopping` = the context label...).
//!
//! As walkerOS 4.4's `flattenIncludeSections` (`packages/core/src/include.ts`) does when run:
//! nested objects are flattened all the way down, keys joined with `_`
//! (`context: {nestedctx: {a: 1}}` → `context_nestedctx_a`), so an empty object adds nothing;
//! arrays and `null` are leaves, kept whole; each `context` entry that is a `[label, order]`
//! tuple contributes its label; `event` is a synthesized section of the event's own scalar
//! fields; `all` means every section, in walkerOS's order.

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

/// The sections of an `include` list; a name walkerOS has no section for is skipped, as
/// walkerOS skips it, with a warning.
pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Vec<Section>> {
    let Some(names) = value.as_array().filter(|names| names.iter().all(Value::is_string)) else {
        errors.push(
            path,
            "must be a list of sections: data, globals, context, user, source, event, all",
        );
        return None;
    };
    let mut sections = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        match serde_json::from_value::<Section>(name.clone()) {
            Ok(section) => sections.push(section),
            Err(_) => errors.warn(
                crate::config::join(path, &index.to_string()),
                format!(
                    "{name} is not a section and adds nothing, as in walkerOS (sections: data, globals, context, user, source, event, all)"
                ),
            ),
        }
    }
    Some(sections)
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
                    Some(label) => label,
                    None => continue,
                },
                _ => value,
            };
            flatten_into(&mut out, format!("{prefix}_{key}"), value);
        }
    }
    out
}

/// A plain object's entries under `prefix_<key>`, recursively; anything else is a leaf.
fn flatten_into(out: &mut Object, prefix: String, value: &Value) {
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                flatten_into(out, format!("{prefix}_{key}"), value);
            }
        }
        leaf => {
            out.insert(prefix, leaf.clone());
        }
    }
}
