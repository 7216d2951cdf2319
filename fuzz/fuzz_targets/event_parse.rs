//! Any request body: parsing, batch detection and enrichment must never panic, and every
//! event that enriches must serialize to JSON that parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::collector::Collector;
use weir::config::flow::CollectorConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let collector = Collector::new(&CollectorConfig::default());
    for form in [false, true] {
        if let Ok((events, _)) = weir::sources::http::parse_events(text, form) {
            for event in events {
                if let Ok(event) = collector.enrich(event) {
                    let json = event.to_json();
                    serde_json::from_slice::<serde_json::Value>(&json).expect("enriched events are valid JSON");
                }
            }
        }
    }
});
