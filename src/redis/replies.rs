//! Reading Redis replies: text out of any string-like reply, a field of a map reply, and
//! stream entries out of XREADGROUP / XAUTOCLAIM replies.
//!
//! Stream entries are read by hand rather than through redis-rs's `StreamReadReply`: that
//! keeps an entry's fields in a `HashMap`, which loses their order — the order a dead letter
//! copies them in, and an entry written with a signature is compared field by field — and
//! has no place for an entry deleted while pending (nil fields), which must be acknowledged.

use redis::Value as Reply;

/// A field of a RESP2 flat map or RESP3 map reply.
pub fn field<'a>(reply: &'a redis::Value, name: &str) -> Option<&'a redis::Value> {
    match reply {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.len() == 2 && as_text(&pair[0]).as_deref() == Some(name))
            .map(|pair| &pair[1]),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(key, _)| as_text(key).as_deref() == Some(name))
            .map(|(_, value)| value),
        _ => None,
    }
}

/// The text of a string-like reply (an integer as its digits).
pub fn as_text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) => Some(text.clone()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One stream entry as read: its id and its fields, in the entry's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Entries of an XREADGROUP / XAUTOCLAIM reply list `[[id, [f, v, …]], …]`; entries
/// deleted meanwhile come back with nil fields and are skipped.
pub fn entries(list: &Reply) -> Vec<Entry> {
    let Reply::Array(items) = list else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Reply::Array(parts) = item else { return None };
            let id = as_text(parts.first()?)?;
            let Reply::Array(flat) = parts.get(1)? else { return None };
            let fields = flat
                .chunks(2)
                .filter_map(|pair| {
                    let name = as_text(pair.first()?)?;
                    let value = match pair.get(1)? {
                        Reply::BulkString(bytes) => bytes.clone(),
                        other => as_text(other)?.into_bytes(),
                    };
                    Some((name, value))
                })
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// The ids of the entries of a reply list that were deleted from the stream while pending
/// (nil fields): they can never be delivered.
pub fn deleted_ids(list: &Reply) -> Vec<String> {
    let Reply::Array(items) = list else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            Reply::Array(parts) if matches!(parts.get(1), Some(Reply::Nil) | None) => as_text(parts.first()?),
            _ => None,
        })
        .collect()
}

/// The id of the last entry of a reply list, deleted ones (nil fields) included.
pub fn last_id(list: &Reply) -> Option<String> {
    let Reply::Array(items) = list else { return None };
    let Reply::Array(parts) = items.last()? else {
        return None;
    };
    as_text(parts.first()?)
}
