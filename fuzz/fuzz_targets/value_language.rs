//! Any mapping value spec against any event: parsing reports errors instead of panicking,
//! and evaluation never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::config::ConfigErrors;
use weir::event::Object;
use weir::mapping::{ValueContext, ValueSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (spec, event) = text.split_once('\n').unwrap_or((text, "{}"));
    let (Ok(spec), Ok(event)) = (
        serde_json::from_str::<serde_json::Value>(spec),
        serde_json::from_str::<serde_json::Value>(event),
    ) else {
        return;
    };
    let mut errors = ConfigErrors::default();
    if let Some(spec) = ValueSpec::parse(&spec, "fuzz", &mut errors) {
        let consent = Object::new();
        let collector: std::sync::Arc<str> = std::sync::Arc::from("{}");
        let context = ValueContext {
            collector_consent: &consent,
            inherited_consent: None,
            event: &event,
            collector: &collector,
            owner: "fuzz",
        };
        let _ = spec.value(&event, &context);
    }
});
