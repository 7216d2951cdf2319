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
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

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

/// Appends the `JSON.stringify` text of `value` to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = Serializer::with_formatter(out, JsFormatter);
    // Serializing a `serde_json::Value` or plain data into a Vec cannot fail: there is no I/O
    // error and no non-string map key in the types weir passes here.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn floats_are_written_as_javascript_writes_them() {
        let value: Value =
            serde_json::from_str(r#"[1.0, 3.25, 0.0, -0.0, 1e21, 1e-7, 99.99, 1700000100, 2.5e-3]"#).unwrap();
        assert_eq!(to_string(&value), "[1,3.25,0,0,1e+21,1e-7,99.99,1700000100,0.0025]");
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
