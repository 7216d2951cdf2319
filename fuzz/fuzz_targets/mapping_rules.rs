//! A destination's mapping (first line: its `config`, with `mapping` rules, `data`, `policy`,
//! `consent`, `include`) applied to any event (second line): rule lookup and the whole
//! mapping never panic, and mapped data is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::collector::Collector;
use weir::config::ConfigErrors;
use weir::config::flow::CollectorConfig;
use weir::mapping::{DestinationMapping, MappingOutcome};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, event) = text.split_once('\n').unwrap_or((text, r#"{"name":"page view"}"#));
    let (Ok(serde_json::Value::Object(config)), Ok(event)) = (
        serde_json::from_str::<serde_json::Value>(config),
        serde_json::from_str::<serde_json::Value>(event),
    ) else {
        return;
    };
    let mut errors = ConfigErrors::default();
    let mut slots = 0;
    let Some(mapping) =
        DestinationMapping::<serde::de::IgnoredAny>::from_config(&config, "fuzz", &mut errors, &mut |_| {
            slots += 1;
            slots
        })
    else {
        return;
    };
    let collector = Collector::new(&CollectorConfig::default());
    let Ok(event) = collector.enrich(event) else { return };
    if let MappingOutcome::Mapped(mapped) = mapping.apply(&event, &collector) {
        if let Some(data) = mapped.data {
            let text = weir::json::to_vec(&data);
            serde_json::from_slice::<serde_json::Value>(&text).expect("mapped data is JSON");
        }
        let _ = mapped.event.to_json();
    }
});
