//! The hand-written JSON scanner against serde_json: on any valid JSON text `scan` never
//! panics, its depth is the real nesting depth, and text it calls canonical is exactly what
//! weir writes for the parsed value (so storing it unparsed is safe), and text it calls
//! spaced compacts to exactly that. `members` splits any
//! object into the members serde_json sees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Deepest nesting of the text's brackets outside strings: the text's depth, duplicate keys
/// included (the parsed value keeps only the last of them, so its depth can be less).
fn depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth -= 1,
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let scan = weir::json::scan(text);
    if !text.starts_with(char::is_whitespace) && !text.ends_with(char::is_whitespace) {
        assert_eq!(scan.depth, depth(text), "depth of {text:?}");
    }
    if scan.canonical {
        assert_eq!(
            weir::json::to_string(&value),
            text,
            "canonical text is what weir writes"
        );
    }
    if scan.spaced {
        let mut compacted = String::new();
        weir::json::compact(text, &mut compacted);
        assert_eq!(
            weir::json::to_string(&value),
            compacted,
            "spaced text compacts to what weir writes"
        );
    }
    if let Value::Object(object) = &value {
        let members: Vec<(String, Value)> = weir::json::members(text.trim())
            .map(|(key, raw, scan)| {
                let key: String = serde_json::from_str(&format!("\"{key}\"")).expect("a member key is a JSON string");
                let member: Value = serde_json::from_str(raw).expect("a member value is JSON");
                if scan.canonical {
                    assert_eq!(
                        weir::json::to_string(&member),
                        raw,
                        "a canonical member is what weir writes"
                    );
                }
                if scan.spaced {
                    let mut compacted = String::new();
                    weir::json::compact(raw, &mut compacted);
                    assert_eq!(weir::json::to_string(&member), compacted, "a spaced member compacts");
                }
                (key, member)
            })
            .collect();
        // serde_json keeps the last of duplicate keys, in the first one's place.
        let mut last: serde_json::Map<String, Value> = serde_json::Map::new();
        for (key, member) in members {
            last.insert(key, member);
        }
        assert_eq!(&last, object, "members of {text:?}");
    }
});
