//! References inside flow-file strings: walkerOS's (`$var.name`, `$env.NAME[:default]`,
//! `$secret.NAME`) and weir's shell-style `$VAR` / `${VAR}`.
//!
//! walkerOS resolves `$var` and `$env` at bundle time; weir does it at load. A whole-string
//! `$var.x` yields the variable's native value (object, number...); inside a longer string
//! only scalars substitute. `$secret.NAME` reads environment variable NAME (walkerOS's server
//! runtime does the same). `$code:` is JavaScript: in a mapping's `fn`, `condition` and
//! `validate` it stays for the mapping to compile (a function); anywhere else it is evaluated
//! once, here, and its result (JSON) takes its place, as walkerOS's bundler pastes the code
//! in and runs it at start. References weir cannot honour (`$flow`, `$contract`, `$store`)
//! are errors naming the key. `$$` is a literal `$`; any other `$`
//! not followed by a name stays as it is. An unset variable is always an error: silently
//! expanding to "" would, for example, send to the wrong stream.

use serde_json::{Map, Value};

use super::{ConfigErrors, join};

/// Variables visible at one place in the file, innermost scope first.
pub struct Scopes<'a> {
    pub variables: Vec<&'a Map<String, Value>>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The flow's `code` limits, which a `$code:` value runs under while the flow loads.
    pub code: crate::code::Limits,
}

impl Scopes<'_> {
    fn variable(&self, name: &str) -> Option<&Value> {
        self.variables.iter().find_map(|scope| scope.get(name))
    }

    /// `$var.name.deep.path` → the value, or an error message.
    fn resolve_var(&self, reference: &str) -> Result<Value, String> {
        let mut parts = reference.split('.');
        let name = parts.next().unwrap_or_default();
        let mut value = self
            .variable(name)
            .ok_or_else(|| format!("variable \"{name}\" is not defined in any `variables` block"))?;
        for part in parts {
            value = value
                .get(part)
                .ok_or_else(|| format!("variable \"{reference}\" has no key \"{part}\""))?;
        }
        Ok(value.clone())
    }
}

/// Resolves every reference in the strings of `value` (keys are never rewritten).
pub fn resolve(value: &mut Value, path: &str, scopes: &Scopes<'_>, errors: &mut ConfigErrors) {
    match value {
        Value::String(text) if text.contains('$') => match resolve_string(text, scopes) {
            Ok(resolved) => *value = resolved,
            Err(message) => errors.push(path, message),
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve(item, &join(path, &index.to_string()), scopes, errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let function =
                    CODE_SLOTS.contains(&key.as_str()) && item.as_str().is_some_and(|text| text.starts_with("$code:"));
                if !function {
                    resolve(item, &join(path, key), scopes, errors);
                }
            }
        }
        _ => {}
    }
}

/// Keys whose `$code:` is a function weir calls (the mapping's `fn`, `condition`, `validate`,
/// the API destination's `transform`), not a value to evaluate now.
pub const CODE_SLOTS: [&str; 4] = ["fn", "condition", "validate", "transform"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Length of a `[A-Za-z_][A-Za-z0-9_]*` name at the start of `text`.
fn name_length(text: &str) -> usize {
    match text.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => text.find(|c: char| !is_name_char(c)).unwrap_or(text.len()),
        _ => 0,
    }
}

/// Length of a dotted `name(.name)*` reference at the start of `text`.
fn dotted_length(text: &str) -> usize {
    let mut length = name_length(text);
    if length == 0 {
        return 0;
    }
    while text[length..].starts_with('.') {
        let next = name_length(&text[length + 1..]);
        if next == 0 {
            break;
        }
        length += 1 + next;
    }
    length
}

fn resolve_string(text: &str, scopes: &Scopes<'_>) -> Result<Value, String> {
    if let Some(code) = text.strip_prefix("$code:") {
        return crate::code::evaluate(code, scopes.code).map_err(|error| {
            let preview: String = code.chars().take(40).collect();
            format!("JavaScript `$code:{preview}` {error}")
        });
    }
    for unsupported in ["$flow.", "$contract.", "$store."] {
        if text.starts_with(unsupported) {
            return Err(format!("walkerOS reference `{text}` is not supported by weir"));
        }
    }
    if let Some(reference) = text.strip_prefix("$var.")
        && dotted_length(reference) == reference.len()
    {
        return scopes.resolve_var(reference);
    }
    if let Some(name) = text.strip_prefix("$secret.")
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return (scopes.env)(name)
            .filter(|v| !v.is_empty())
            .map(Value::String)
            .ok_or_else(|| format!("secret {name} is not set in the environment"));
    }

    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(reference) = after.strip_prefix("var.").filter(|r| dotted_length(r) > 0) {
            let length = dotted_length(reference);
            match scopes.resolve_var(&reference[..length])? {
                Value::String(s) => out.push_str(&s),
                scalar @ (Value::Number(_) | Value::Bool(_)) => out.push_str(&scalar.to_string()),
                _ => {
                    return Err(format!(
                        "variable \"{}\" is an object or array and cannot be part of a longer string",
                        &reference[..length]
                    ));
                }
            }
            rest = &reference[length..];
        } else if let Some(reference) = after.strip_prefix("secret.").filter(|r| name_length(r) > 0) {
            // walkerOS's docs write secrets inline: `"Bearer $secret.API_TOKEN"`.
            let length = name_length(reference);
            let name = &reference[..length];
            match (scopes.env)(name).filter(|value| !value.is_empty()) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("secret {name} is not set in the environment")),
            }
            rest = &reference[length..];
        } else if let Some(reference) = after.strip_prefix("env.").filter(|r| name_length(r) > 0) {
            let length = name_length(reference);
            let name = &reference[..length];
            let mut tail = &reference[length..];
            let default = match tail.strip_prefix(':') {
                Some(default_text) => {
                    let end = default_text
                        .find(|c: char| c == '"' || c == '}' || c.is_whitespace())
                        .unwrap_or(default_text.len());
                    tail = &default_text[end..];
                    Some(&default_text[..end])
                }
                None => None,
            };
            match (scopes.env)(name) {
                Some(value) => out.push_str(&value),
                None => match default {
                    Some(default) => out.push_str(default),
                    None => return Err(format!("environment variable {name} is not set")),
                },
            }
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let name = &braced[..end];
            let value = (scopes.env)(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &braced[end + 1..];
        } else {
            let length = name_length(after);
            if length == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let name = &after[..length];
            let value = (scopes.env)(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &after[length..];
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "REDIS_URL" => Some("redis://127.0.0.1:6379".into()),
            "PORT" => Some("8080".into()),
            "WRITE_KEY" => Some("wk".into()),
            _ => None,
        }
    }

    fn resolved(mut value: Value, variables: Value) -> (Value, ConfigErrors) {
        let variables = variables.as_object().cloned().unwrap_or_default();
        let scopes = Scopes {
            variables: vec![&variables],
            env: &env,
            code: crate::code::Limits::default(),
        };
        let mut errors = ConfigErrors::default();
        resolve(&mut value, "", &scopes, &mut errors);
        (value, errors)
    }

    #[test]
    fn expands_shell_style_and_walkeros_references() {
        let (value, errors) = resolved(
            json!({
                "url": "${REDIS_URL}/0",
                "listen": "127.0.0.1:$PORT",
                "price": "$$5",
                "plain": "cost in $",
                "stream": "$var.prefix:events",
                "whole": "$var.limits",
                "deep": "$var.limits.max",
                "env": "$env.PORT",
                "fallback": "$env.NOPE:6379",
                "secret": "$secret.WRITE_KEY",
                "bearer": "Bearer $secret.WRITE_KEY",
            }),
            json!({"prefix": "walkeros", "limits": {"max": 100}}),
        );
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(
            value,
            json!({
                "url": "redis://127.0.0.1:6379/0",
                "listen": "127.0.0.1:8080",
                "price": "$5",
                "plain": "cost in $",
                "stream": "walkeros:events",
                "whole": {"max": 100},
                "deep": 100,
                "env": "8080",
                "fallback": "6379",
                "secret": "wk",
                "bearer": "Bearer wk",
            })
        );
    }

    #[test]
    fn unresolvable_references_are_errors_with_their_path() {
        let (_, errors) = resolved(
            json!({"a": {"url": "${NOPE}"}, "b": "$var.missing", "c": {"x": "$code:(v) => v"}, "d": "x$var.obj", "e": "Bearer $secret.NOPE"}),
            json!({"obj": {"k": 1}}),
        );
        let text = errors.to_string();
        assert!(text.contains("a.url: environment variable NOPE is not set"), "{text}");
        assert!(text.contains("b: variable \"missing\" is not defined"), "{text}");
        assert!(
            text.contains("c.x: JavaScript `$code:(v) => v` does not give a JSON value: it evaluates to a function"),
            "{text}"
        );
        assert!(text.contains("d: variable \"obj\" is an object"), "{text}");
        assert!(text.contains("e: secret NOPE is not set in the environment"), "{text}");
    }

    /// `$code:` outside a function slot is evaluated once; inside one it stays for the
    /// mapping to compile.
    #[test]
    fn code_values_are_evaluated_and_functions_kept() {
        let (value, errors) = resolved(
            json!({"n": "$code:60 * 60", "list": "$code:['a', 'b'].map((s) => s.toUpperCase())", "map": {"fn": "$code:(v) => v", "condition": "$code:() => true"}}),
            json!({}),
        );
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(
            value,
            json!({"n": 3600, "list": ["A", "B"], "map": {"fn": "$code:(v) => v", "condition": "$code:() => true"}})
        );
    }
}
