//! JSON text exactly as JavaScript's `JSON.stringify` writes it.
//!
//! walkerOS stores events with `JSON.stringify`, and weir promises byte-identical output, so
//! the one place JSON text is produced for the wire goes through here. serde_json already
//! escapes strings the same way (`"`, `\\`, control characters as `\b \f \n \r \t` or
//! lowercase `\u00xx`, nothing else) and keeps object key order (feature `preserve_order`).
//! Numbers differ: serde_json writes the float `1.0` as `1.0`, JavaScript as `1`, and large or
//! small magnitudes use a different exponent style. The formatter below swaps in `ryu-js`,
//! which implements ECMAScript's Number-to-String algorithm, for every float.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter, Serializer};
use serde_json::{Map, Value};

/// `CompactFormatter` with JavaScript's number formatting for floats.
#[derive(Clone, Copy, Default)]
struct JsFormatter;

impl Formatter for JsFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut buffer = ryu_js::Buffer::new();
        writer.write_all(buffer.format(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        CompactFormatter.write_null(writer)
    }
}

/// Appends the `JSON.stringify` text of `value` to `out` (a Vec, or any writer into memory).
pub fn write<T: Serialize + ?Sized, W: io::Write>(out: &mut W, value: &T) {
    let mut serializer = Serializer::with_formatter(out, JsFormatter);
    // Serializing a `serde_json::Value` or plain data into memory cannot fail: there is no
    // I/O error and no non-string map key in the types weir passes here.
    value
        .serialize(&mut serializer)
        .expect("serializing JSON into memory cannot fail");
}

/// The `JSON.stringify` text of `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, value);
    out
}

/// The `JSON.stringify` text of `value` as a `String`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    String::from_utf8(to_vec(value)).expect("serde_json writes UTF-8")
}

/// `JSON.stringify(value, null, 2)`: two-space indents (serde_json's pretty layout is
/// JavaScript's, `{}` and `[]` for empty ones included), JavaScript's numbers.
pub fn to_pretty<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = Serializer::with_formatter(&mut out, JsPretty(PrettyFormatter::new()));
    value
        .serialize(&mut serializer)
        .expect("serializing JSON into memory cannot fail");
    out
}

/// `PrettyFormatter` with JavaScript's number formatting for floats.
struct JsPretty<'a>(PrettyFormatter<'a>);

/// Forwards the layout calls to the pretty formatter (they carry its indent state).
macro_rules! pretty_layout {
    ($($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $name<W: ?Sized + io::Write>(&mut self, writer: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            self.0.$name(writer $(, $arg)*)
        })*
    };
}

impl Formatter for JsPretty<'_> {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        JsFormatter.write_f64(writer, value)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        JsFormatter.write_f32(writer, value)
    }

    pretty_layout!(
        begin_array(),
        end_array(),
        begin_array_value(first: bool),
        end_array_value(),
        begin_object(),
        end_object(),
        begin_object_key(first: bool),
        begin_object_value(),
        end_object_value(),
    );
}

/// JavaScript's `String(value)` (what walkerOS's Redis flat serialization stores): strings
/// as they are, numbers as JavaScript writes them, `null` as `"null"`, objects and arrays as
/// JSON.
pub fn js_string(value: &serde_json::Value) -> Vec<u8> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Null => b"null".to_vec(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Number(n) if n.is_f64() => ryu_js::Buffer::new()
            .format(n.as_f64().unwrap_or_default())
            .as_bytes()
            .to_vec(),
        Value::Number(n) => n.to_string().into_bytes(),
        Value::Array(_) | Value::Object(_) => to_vec(value),
    }
}

/// The text Go's `encoding/json` `Marshal` writes for `value` once Go has read it into an
/// `interface{}` — what Optimizely Agent does to every notification before it frames it, so
/// weir's Agent-mode frames are byte for byte Agent's. Written here because no crate writes
/// Go's form: object keys sorted by byte order, every number a float64 (`'f'` form from 1e-6
/// to below 1e21, else `1e+21` / `1e-7`), and `<`, `>`, `&`, U+2028 and U+2029 escaped as
/// `\u003c`-style sequences (Marshal's HTML escaping); other string escapes are serde_json's,
/// which are Go's since Go 1.22 (`\b`, `\f`, lowercase `\u00xx`).
pub fn to_go_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_go(&mut out, value);
    out
}

fn write_go(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => go_float(out, n.as_f64().unwrap_or_default()),
        Value::String(text) => go_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_string(out, key);
                out.push(b':');
                write_go(out, member);
            }
            out.push(b'}');
        }
    }
}

fn go_float(out: &mut Vec<u8>, value: f64) {
    use std::io::Write;
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-6..1e21).contains(&magnitude) {
        // Rust's Display is the shortest round-trip digits without an exponent: Go's 'f', -1.
        let _ = write!(out, "{value}");
        return;
    }
    // Go writes the exponent with a sign and at least two digits, then trims a leading zero
    // from a negative one: 1e+21, 1.5e-07 → 1.5e-7.
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').expect("{:e} has an exponent");
    match exponent.strip_prefix('-') {
        Some(digits) => {
            let _ = write!(out, "{mantissa}e-{digits}");
        }
        None => {
            let _ = write!(out, "{mantissa}e+{exponent:0>2}");
        }
    }
}

fn go_string(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    write(out, text);
    if !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return;
    }
    let written = out.split_off(start);
    let written = String::from_utf8(written).expect("serde_json writes UTF-8");
    for c in written.chars() {
        match c {
            '<' => out.extend_from_slice(b"\\u003c"),
            '>' => out.extend_from_slice(b"\\u003e"),
            '&' => out.extend_from_slice(b"\\u0026"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buffer = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
}

// JavaScript semantics on JSON values, shared by the collector, the mapping and the sources.

/// JavaScript truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// walkerOS's `assign(target, source)`: target's keys, then the source's new keys; source
/// values win, except that two arrays are concatenated without duplicate scalars.
pub fn assign(target: &Map<String, Value>, source: &Map<String, Value>) -> Map<String, Value> {
    let mut out = target.clone();
    for (key, value) in source {
        match (out.get_mut(key), value) {
            (Some(Value::Array(existing)), Value::Array(incoming)) => {
                for item in incoming {
                    let scalar = !matches!(item, Value::Array(_) | Value::Object(_));
                    if !(scalar && existing.contains(item)) {
                        existing.push(item.clone());
                    }
                }
            }
            (Some(slot), _) => *slot = value.clone(),
            (None, _) => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Expected: Go 1.24's `json.Marshal` of what `json.Unmarshal` made of the same text into
    /// an `interface{}` (keys sorted, every number a float64, HTML characters escaped).
    #[test]
    fn go_text_is_what_encoding_json_writes_after_a_round_trip() {
        let value: Value = serde_json::from_str(
            r#"{"b":1,"a":[1.5,100,1e21,1e20,0.0000001,0.000001,1.2e-7,-0.5,123456789012345678901234],
               "c":"<a&b> \u2028\u0001\n\"x\"","Z":{"y":false,"x":null},"é":"ü"}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(to_go_vec(&value)).unwrap(),
            r#"{"Z":{"x":null,"y":false},"a":[1.5,100,1e+21,100000000000000000000,1e-7,0.000001,1.2e-7,-0.5,1.2345678901234569e+23],"b":1,"c":"\u003ca\u0026b\u003e \u2028\u0001\n\"x\"","é":"ü"}"#
        );
    }

    #[test]
    fn floats_are_written_as_javascript_writes_them() {
        let value: Value =
            serde_json::from_str(r#"[1.0, 3.25, 0.0, -0.0, 1e21, 1e-7, 99.99, 1700000100, 2.5e-3]"#).unwrap();
        assert_eq!(to_string(&value), "[1,3.25,0,0,1e+21,1e-7,99.99,1700000100,0.0025]");
    }

    #[test]
    fn pretty_text_is_what_json_stringify_with_two_spaces_writes() {
        // Expected: node -e 'console.log(JSON.stringify({a:1.0,b:[],c:{},d:[1,{e:"x"}],f:1e21,g:null},null,2))'
        let value: Value =
            serde_json::from_str(r#"{"a":1.0,"b":[],"c":{},"d":[1,{"e":"x"}],"f":1e21,"g":null}"#).unwrap();
        let expected = "{\n  \"a\": 1,\n  \"b\": [],\n  \"c\": {},\n  \"d\": [\n    1,\n    {\n      \"e\": \"x\"\n    }\n  ],\n  \"f\": 1e+21,\n  \"g\": null\n}";
        assert_eq!(String::from_utf8(to_pretty(&value)).unwrap(), expected);
    }

    #[test]
    fn js_string_coerces_like_the_string_constructor() {
        let show = |v: Value| String::from_utf8(js_string(&v)).unwrap();
        assert_eq!(show(json!(3.25)), "3.25");
        assert_eq!(show(json!(1700000100)), "1700000100");
        assert_eq!(show(json!(1.0)), "1");
        assert_eq!(show(json!(null)), "null");
        assert_eq!(show(json!("")), "");
        assert_eq!(show(json!({"a": [1, "x"]})), "{\"a\":[1,\"x\"]}");
    }

    #[test]
    fn strings_and_key_order_match_json_stringify() {
        let value = json!({"b": "a\"b\\c\n\u{1}\u{7f}é/", "a": [true, null]});
        assert_eq!(
            to_string(&value),
            "{\"b\":\"a\\\"b\\\\c\\n\\u0001\u{7f}é/\",\"a\":[true,null]}"
        );
    }
}

/// How deeply objects and arrays nest in JSON `text` (strings skipped). serde_json limits
/// depth when it builds trees but not when it only checks text, so the HTTP source asks
/// this before taking a body apart.
pub fn depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let mut ignored = true;
                i = string_end(bytes, i, &mut ignored);
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The members of a JSON object given as valid text: each key's raw text (without its
/// quotes, escapes left as they are), the raw text of its value, and the [`Scan`] of the
/// value. Allocates nothing; reading an event's top level this way scans each field once.
pub fn members(object: &str) -> Members<'_> {
    let bytes = object.as_bytes();
    let start = if bytes.first() == Some(&b'{') { 1 } else { bytes.len() };
    Members {
        text: object,
        at: start,
    }
}

pub struct Members<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a str, Scan);

    fn next(&mut self) -> Option<(&'a str, &'a str, Scan)> {
        let bytes = self.text.as_bytes();
        let mut i = self.at;
        while i < bytes.len() && matches!(bytes[i], b',' | b' ' | b'\n' | b'\r' | b'\t') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'"' {
            self.at = bytes.len();
            return None;
        }
        let mut ignored = true;
        let key_end = string_end(bytes, i, &mut ignored);
        let key = &self.text[i + 1..key_end.saturating_sub(1).max(i + 1)];
        let mut j = key_end;
        while j < bytes.len() && matches!(bytes[j], b':' | b' ' | b'\n' | b'\r' | b'\t') {
            j += 1;
        }
        let (value_end, found) = scan_at(self.text, j);
        self.at = value_end;
        Some((key, &self.text[j..value_end], found))
    }
}

/// What [`scan`] found in a piece of JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The text is exactly what `JSON.stringify(JSON.parse(text))` writes, so it can be
    /// stored as it is, byte for byte, without building a tree.
    pub canonical: bool,
    /// Not canonical only for the whitespace between its tokens (what pretty-printers and
    /// Python's `json.dumps` write): [`compact`] makes the canonical text without a tree.
    pub spaced: bool,
    /// Deepest nesting of objects and arrays (a scalar is 0).
    pub depth: usize,
}

/// Most keys an object may have for its keys to be checked for duplicates; a bigger object
/// is simply treated as not canonical (and goes through the parser).
const MAX_CHECKED_KEYS: usize = 64;

/// Scans syntactically valid JSON `text` (serde_json has checked it): whether it is
/// canonical (no whitespace, `JSON.stringify`'s string escapes and number forms, no
/// duplicate keys, no integer-like keys, which JavaScript would move to the front of their
/// object) and how deep it nests.
///
/// Written by hand: this is what lets weir pass an event's untouched parts through from the
/// request body to the wire without parsing them into trees and writing them out again.
pub fn scan(text: &str) -> Scan {
    let (end, mut found) = scan_at(text, 0);
    if end != text.len() {
        found.canonical = false;
        found.spaced = false;
    }
    found
}

/// Appends `text` — JSON that [`scan`] found `spaced` — to `out` without the whitespace
/// between its tokens, which is then canonical JSON.
pub fn compact(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut ignored = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let end = string_end(bytes, i, &mut ignored);
                out.push_str(&text[i..end]);
                i = end;
            }
            _ => {
                // A run of tokens up to the next string or whitespace, copied whole.
                let run = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'"' | b' ' | b'\t' | b'\n' | b'\r'))
                    .map_or(bytes.len(), |offset| i + offset);
                out.push_str(&text[i..run]);
                i = run;
            }
        }
    }
}

/// Keys of the open objects and the frame stack of [`scan_value`].
type ScanStacks = (Vec<(usize, usize)>, Vec<usize>);

thread_local! {
    /// Reused stacks: scanning runs for every field of every event.
    static SCRATCH: std::cell::RefCell<ScanStacks> = Default::default();
}

/// [`scan`] of the one value that starts at `start` in `text`; also returns where it ends.
pub fn scan_at(text: &str, start: usize) -> (usize, Scan) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (keys, frames) = &mut *scratch;
        keys.clear();
        frames.clear();
        scan_value(text, start, keys, frames)
    })
}

fn scan_value(text: &str, start: usize, keys: &mut Vec<(usize, usize)>, frames: &mut Vec<usize>) -> (usize, Scan) {
    let bytes = text.as_bytes();
    let mut canonical = true;
    let mut spaced = false;
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    // Keys of the open objects (offsets without the quotes), with a frame marker per open
    // object (the index where its keys begin) or array (usize::MAX).
    let mut expect_key = false;
    let mut i = start;
    let mut started = false;
    while i < bytes.len() {
        if started && depth == 0 {
            break;
        }
        match bytes[i] {
            b'{' => {
                started = true;
                depth += 1;
                max_depth = max_depth.max(depth);
                frames.push(keys.len());
                expect_key = true;
                i += 1;
            }
            b'[' => {
                started = true;
                depth += 1;
                max_depth = max_depth.max(depth);
                frames.push(usize::MAX);
                expect_key = false;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if let Some(frame) = frames.pop()
                    && frame != usize::MAX
                {
                    keys.truncate(frame);
                }
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = frames.last().is_some_and(|frame| *frame != usize::MAX);
                i += 1;
            }
            b':' => {
                expect_key = false;
                i += 1;
            }
            b'"' => {
                started = true;
                let end = string_end(bytes, i, &mut canonical);
                if expect_key {
                    let key = &bytes[i + 1..end - 1];
                    if is_array_index(key) {
                        canonical = false;
                    }
                    if canonical {
                        let first = *frames.last().expect("a key is inside an object");
                        let own = &keys[first..];
                        if own.len() >= MAX_CHECKED_KEYS || own.iter().any(|&(a, b)| &bytes[a..b] == key) {
                            canonical = false;
                        }
                        keys.push((i + 1, end - 1));
                    }
                    expect_key = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                started = true;
                let first = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                if canonical && !canonical_number(&text[first..i]) {
                    canonical = false;
                }
            }
            b't' | b'n' => {
                started = true;
                i += 4;
            }
            b'f' => {
                started = true;
                i += 5;
            }
            // Whitespace between tokens: JSON.stringify writes none.
            b' ' | b'\t' | b'\n' | b'\r' => {
                spaced = true;
                i += 1;
            }
            _ => {
                canonical = false;
                i += 1;
            }
        }
    }
    (
        i.min(bytes.len()),
        Scan {
            canonical: canonical && !spaced,
            spaced: canonical && spaced,
            depth: max_depth,
        },
    )
}

/// The offset just past the closing quote of the string opening at `start`; clears
/// `canonical` on an escape JSON.stringify would not write.
fn string_end(bytes: &[u8], start: usize, canonical: &mut bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        // Jump to the next quote or backslash (SIMD): strings are mostly plain text.
        match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
            None => return bytes.len(),
            Some(offset) => i += offset,
        }
        match bytes[i] {
            b'"' => return i + 1,
            _ => {
                match bytes.get(i + 1) {
                    Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = &bytes[(i + 2).min(bytes.len())..(i + 6).min(bytes.len())];
                        let lowercase = hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u32::from_str_radix(h, 16).ok());
                        // Only control characters without a short escape are written as \u00xx.
                        let needed = code.is_some_and(|c| c < 0x20 && !matches!(c, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d));
                        if !(lowercase && needed) {
                            *canonical = false;
                        }
                        i += 6;
                    }
                    _ => {
                        *canonical = false;
                        i += 2;
                    }
                }
            }
        }
    }
    bytes.len()
}

/// A key JavaScript treats as an array index (`"0"`, `"17"`, below 2^32 - 1).
fn is_array_index(key: &[u8]) -> bool {
    !key.is_empty()
        && key.iter().all(u8::is_ascii_digit)
        && (key == b"0" || key[0] != b'0')
        && key.len() <= 10
        && std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.parse::<u64>().ok())
            .is_some_and(|n| n < u32::MAX as u64)
}

/// Whether a JSON number token is written as JavaScript writes its value.
fn canonical_number(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let plain_integer = !digits.is_empty()
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if plain_integer {
        return token != "-0";
    }
    match token.parse::<f64>() {
        Ok(value) if value.is_finite() => ryu_js::Buffer::new().format(value) == token,
        _ => false,
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn what_json_stringify_writes_is_canonical() {
        for text in [
            r#"{"name":"page view","data":{"n":1,"x":-2.5,"big":1e+21,"small":1e-7},"list":[true,false,null,"é\n\u0001"]}"#,
            r#"[]"#,
            r#"{}"#,
            r#""plain""#,
            r#"12345678901234"#,
            r#"{"a":{"b":[{"c":"d\"e\\f"}]}}"#,
        ] {
            assert!(scan(text).canonical, "{text}");
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(to_string(&value), text, "the scanner and the writer agree");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for text in [
            r#"{ "a":1}"#,
            r#"{"a": 1}"#,
            r#"[1, 2]"#,
            r#"{"a":1.0}"#,
            r#"{"a":1E+21}"#,
            r#"{"a":-0}"#,
            r#"{"a":0.10}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\u000A"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"b":1,"1":2}"#,
            "{\"a\":1}\n",
        ] {
            assert!(!scan(text).canonical, "{text}");
        }
    }

    #[test]
    fn whitespace_alone_is_compacted_anything_else_is_parsed() {
        for (text, compacted) in [
            (r#"{ "a": 1, "b": [true, null] }"#, r#"{"a":1,"b":[true,null]}"#),
            (
                "{\n  \"s\": \"a b\\\" c\",\r\n\t\"n\": -2.5\n}",
                r#"{"s":"a b\" c","n":-2.5}"#,
            ),
            (r#"[ "x" , { } ]"#, r#"["x",{}]"#),
        ] {
            let found = scan(text);
            assert!(found.spaced && !found.canonical, "{text}");
            let mut out = String::new();
            compact(text, &mut out);
            assert_eq!(out, compacted);
            assert!(scan(&out).canonical);
        }
        for text in [
            r#"{"a": 1.0}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{ "a":"\u0061"}"#,
            "{\"a\":1}\n",
        ] {
            let found = scan(text);
            assert!(!found.spaced && !found.canonical, "{text}");
        }
        assert!(!scan(r#"{"a":1}"#).spaced, "canonical text is not also spaced");
    }

    #[test]
    fn members_walks_the_top_level_of_an_object() {
        let members: Vec<(&str, &str)> =
            members(r#"{"type":"browser","release":{"web":"1","x":[1,{"a":"}"}]},"n":-1.5,"s":"a\"b","t":true}"#)
                .map(|(key, value, _)| (key, value))
                .collect();
        assert_eq!(
            members,
            [
                ("type", r#""browser""#),
                ("release", r#"{"web":"1","x":[1,{"a":"}"}]}"#),
                ("n", "-1.5"),
                ("s", r#""a\"b""#),
                ("t", "true"),
            ]
        );
        assert_eq!(super::members("{}").count(), 0);
        assert_eq!(super::members("[1]").count(), 0);
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert_eq!(depth(r#"{"a":"[[[\"]]","b":[{}]}"#), 3);
        assert_eq!(scan("1").depth, 0);
        assert_eq!(scan(r#"{"a":[{"b":[]}]}"#).depth, 4);
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(scan(&deep).depth, 500);
    }
}

#[cfg(test)]
mod scan_properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e30f64..1e30).prop_map(Value::from),
            "[a-z0-9 \"\\\\\u{1}\u{7f}é/\n]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-z0-9]{0,4}", inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// `text` as a pretty-printer writes it: whitespace after every `{`, `[`, `:` and `,`
    /// outside strings, and before every `}` and `]`.
    fn spread(text: &str) -> String {
        let bytes = text.as_bytes();
        let (mut out, mut i, mut ignored) = (String::new(), 0, true);
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    let end = string_end(bytes, i, &mut ignored);
                    out.push_str(&text[i..end]);
                    i = end;
                    continue;
                }
                b'{' | b'[' => out.push_str(&format!("{}\n  ", bytes[i] as char)),
                b':' => out.push_str(": "),
                b',' => out.push_str(",\r\n\t"),
                b'}' | b']' => out.push_str(&format!(" {}", bytes[i] as char)),
                _ => out.push_str(&text[i..i + 1]),
            }
            i += 1;
        }
        out
    }

    /// Ways a client may write the same value differently from JSON.stringify.
    fn perturb(text: &str, choice: u8) -> String {
        match choice % 5 {
            0 => text.to_owned(),
            1 => text.replacen(':', ": ", 1),
            2 => text.replacen(',', " ,", 1),
            3 => text.replacen("a", "\\u0061", 1),
            _ => text.replacen('1', "1.0", 1),
        }
    }

    proptest! {
        /// Whatever the scanner calls canonical really is what the writer produces, so
        /// passing it through unparsed stores the same bytes.
        #[test]
        fn canonical_text_round_trips(value in json_value(), choice in any::<u8>()) {
            let text = perturb(&to_string(&value), choice);
            if let Ok(parsed) = serde_json::from_str::<Value>(&text)
                && scan(&text).canonical
            {
                prop_assert_eq!(to_string(&parsed), text);
            }
        }

        /// Text the scanner calls spaced compacts to exactly what the writer produces.
        #[test]
        fn spaced_text_compacts_to_the_canonical_text(value in json_value(), choice in any::<u8>()) {
            let canonical = to_string(&value);
            let text = perturb(&spread(&canonical), choice);
            if let Ok(parsed) = serde_json::from_str::<Value>(&text)
                && scan(&text).spaced
            {
                let mut out = String::new();
                compact(&text, &mut out);
                prop_assert_eq!(out, to_string(&parsed));
            }
            if scan(&canonical).canonical && canonical != spread(&canonical) {
                prop_assert!(scan(&spread(&canonical)).spaced, "{}", spread(&canonical));
            }
        }

        /// And the writer's own output is recognised (unless it has keys JavaScript reorders).
        #[test]
        fn the_writers_output_is_canonical(value in json_value()) {
            let text = to_string(&value);
            let reordered_keys = text.contains("\"0\":") || (0..10).any(|d| text.contains(&format!("\"{d}")));
            // JavaScript numbers are doubles: integers beyond 2^53 are written rounded.
            let big_integers = text
                .split(|c: char| !c.is_ascii_digit())
                .any(|digits| digits.len() > 15);
            if !reordered_keys && !big_integers {
                prop_assert!(scan(&text).canonical, "{}", text);
            }
        }
    }
}
