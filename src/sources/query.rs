//! walkerOS's `requestToData`: a query string with bracket notation becomes an object
//! (`data[title]=Home&data[n]=3` → `{"data": {"title": "Home", "n": 3}}`), with values cast
//! as walkerOS's `castValue` does (`"true"`/`"false"` → booleans, numeric text → numbers).
//!
//! Written by hand because this is walkerOS's own format, not a standard one (`a[]=x` is a
//! scalar, later keys win, a scalar blocks a nested write). Two JavaScript hazards are not
//! reproduced: `__proto__` is an ordinary key here, and an array index above
//! [`MAX_INDEX`] is ignored instead of creating a huge sparse array. Because a request body
//! or URL is untrusted, a key may nest at most [`MAX_DEPTH`] levels and a query may create at
//! most [`MAX_VALUES`] values (array holes included): beyond that it is refused.

use serde_json::{Map, Number, Value};

/// Largest array index accepted from a query key.
pub const MAX_INDEX: usize = 1000;
/// Deepest bracket nesting accepted in one key.
pub const MAX_DEPTH: usize = 32;
/// Most values (including array holes) one query may create.
pub const MAX_VALUES: usize = 10_000;

/// Parses a query string (or form body) with bracket notation into an object.
pub fn parse_query(query: &str) -> Result<Map<String, Value>, String> {
    let mut root = Value::Object(Map::new());
    let mut budget = MAX_VALUES;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let parts: Vec<&str> = key.split(['[', ']']).filter(|part| !part.is_empty()).collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() > MAX_DEPTH {
            return Err(format!("query key nests deeper than {MAX_DEPTH} levels"));
        }
        assign(&mut root, &parts, cast_value(&value), &mut budget)?;
    }
    match root {
        Value::Object(map) => Ok(map),
        _ => unreachable!("the root stays an object"),
    }
}

fn spend(budget: &mut usize, count: usize) -> Result<(), String> {
    *budget = budget
        .checked_sub(count)
        .ok_or_else(|| format!("query creates more than {MAX_VALUES} values"))?;
    Ok(())
}

/// Writes `value` at `parts` below `node`, creating objects or arrays on the way as walkerOS
/// does: an array when the next part is a number, else an object; an existing truthy value is
/// reused, a falsy one replaced.
fn assign(node: &mut Value, parts: &[&str], value: Value, budget: &mut usize) -> Result<(), String> {
    let (part, rest) = (parts[0], &parts[1..]);
    let slot = match node {
        Value::Object(map) => {
            spend(budget, 1)?;
            if rest.is_empty() {
                map.insert(part.to_owned(), value);
                return Ok(());
            }
            map.entry(part.to_owned()).or_insert(Value::Null)
        }
        Value::Array(items) => {
            let Some(index) = parse_index(part) else { return Ok(()) };
            if index > MAX_INDEX {
                return Ok(());
            }
            if items.len() <= index {
                spend(budget, index + 1 - items.len())?;
                items.resize(index + 1, Value::Null);
            }
            if rest.is_empty() {
                items[index] = value;
                return Ok(());
            }
            &mut items[index]
        }
        // A scalar cannot hold a nested key: JavaScript drops the write silently.
        _ => return Ok(()),
    };
    if !crate::json::truthy(slot) {
        *slot = if parse_index(rest[0]).is_some() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
    }
    assign(slot, rest, value, budget)
}

/// JavaScript's `parseInt` for an index: leading decimal digits.
fn parse_index(part: &str) -> Option<usize> {
    let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    part[..digits].parse().ok()
}

/// walkerOS's `castValue`.
pub fn cast_value(text: &str) -> Value {
    match text {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "" => return Value::String(String::new()),
        _ => {}
    }
    match js_number(text) {
        Some(number) => number_value(number),
        None => Value::String(text.to_owned()),
    }
}

fn number_value(number: f64) -> Value {
    if number.fract() == 0.0 && number.abs() < 9.007_199_254_740_992e15 {
        Value::from(number as i64)
    } else {
        Number::from_f64(number).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript's `Number(text)` for finite results: surrounding whitespace ignored,
/// whitespace-only is 0, decimal with sign and exponent, or `0x` / `0o` / `0b` integers.
fn js_number(text: &str) -> Option<f64> {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace());
    if trimmed.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
        if let Some(digits) = trimmed.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix).ok().map(|n| n as f64);
        }
    }
    let unsigned = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    let valid = !unsigned.is_empty()
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if !valid {
        return None;
    }
    trimmed.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(query: &str) -> Value {
        Value::Object(parse_query(query).unwrap())
    }

    #[test]
    fn the_pixel_example_from_the_walkeros_docs() {
        assert_eq!(
            parsed("name=pixel%20view&data[title]=Home&data[n]=3&data[flag]=true"),
            json!({"name": "pixel view", "data": {"title": "Home", "n": 3, "flag": true}})
        );
    }

    #[test]
    fn casts_like_cast_value() {
        assert_eq!(
            parsed("a=z&b=0&c=1&h=1.1&d=true&e=false&f=&g=undefined&x=null&k=en%20coded&t=TRUE"),
            json!({"a": "z", "b": 0, "c": 1, "h": 1.1, "d": true, "e": false, "f": "", "g": "undefined",
                   "x": "null", "k": "en coded", "t": "TRUE"})
        );
        assert_eq!(
            parsed("n1=007&n2=1e3&n3=0x1A&n4=%2B5&n5=%201%20&n6=NaN&n7=1_000&n8=%20"),
            json!({"n1": 7, "n2": 1000, "n3": 26, "n4": 5, "n5": 1, "n6": "NaN", "n7": "1_000", "n8": 0})
        );
    }

    #[test]
    fn brackets_build_objects_and_arrays_with_walkeros_quirks() {
        assert_eq!(
            parsed("i[0]=1&i[1]=2&j[x]=1&j[y]=2"),
            json!({"i": [1, 2], "j": {"x": 1, "y": 2}})
        );
        assert_eq!(parsed("a[]=x&a[]=y"), json!({"a": "y"}));
        assert_eq!(parsed("a=1&a=2"), json!({"a": 2}));
        assert_eq!(parsed("a[2]=x"), json!({"a": [null, null, "x"]}));
        assert_eq!(parsed("a=2&a[b]=1"), json!({"a": 2}));
        assert_eq!(parsed("a=0&a[b]=1"), json!({"a": {"b": 1}}));
        assert_eq!(parsed("a[0]=1&a[x]=2"), json!({"a": [1]}));
        assert_eq!(parsed("a[5000]=x"), json!({"a": []}));
        assert_eq!(parsed("__proto__[x]=1"), json!({"__proto__": {"x": 1}}));
    }

    #[test]
    fn hostile_queries_are_refused_not_amplified() {
        let deep = format!("a{}=1", "[x]".repeat(MAX_DEPTH));
        assert_eq!(parse_query(&deep).unwrap_err(), "query key nests deeper than 32 levels");
        let ok = format!("a{}=1", "[x]".repeat(MAX_DEPTH - 1));
        assert!(parse_query(&ok).is_ok());
        let wide: Vec<String> = (0..20).map(|i| format!("k{i}[1000]=1")).collect();
        assert_eq!(
            parse_query(&wide.join("&")).unwrap_err(),
            "query creates more than 10000 values"
        );
    }
}
