//! Any query string through walkerOS's `requestToData` parser: an object or a refusal, never
//! a panic, and never more values than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn count(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(count).sum::<usize>(),
        serde_json::Value::Object(members) => 1 + members.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(object) = weir::sources::query::parse_query(text) {
        let total: usize = object.values().map(count).sum();
        assert!(total <= 2 * weir::sources::query::MAX_VALUES, "{total} values");
    }
});
