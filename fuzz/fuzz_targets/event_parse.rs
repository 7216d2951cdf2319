//! Any request body: parsing, batch detection and enrichment must never panic, and every
//! event that enriches must serialize to JSON that parses back, to the same tree (numbers
//! compared as JavaScript compares them: `1.0` and `1` are one number).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::collector::Collector;
use weir::config::flow::CollectorConfig;

/// Every number as the f64 JavaScript holds.
fn as_js(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(as_js).collect()),
        Value::Object(members) => Value::Object(members.iter().map(|(k, v)| (k.clone(), as_js(v))).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let collector = Collector::new(&CollectorConfig::default());
    for form in [false, true] {
        if let Ok((events, _)) = weir::sources::http::parse_events(text, form) {
            for event in events {
                let enriched = match event {
                    weir::sources::http::EventInput::Json(text) => collector.enrich_json(text),
                    weir::sources::http::EventInput::Value(value) => collector.enrich(value),
                };
                if let Ok(event) = enriched {
                    let json = event.to_json();
                    let reparsed: serde_json::Value =
                        serde_json::from_slice(&json).expect("enriched events are valid JSON");
                    assert_eq!(as_js(&reparsed), as_js(event.tree()), "text and tree agree");
                }
            }
        }
    }
});
