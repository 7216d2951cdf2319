//! `weir streams dlq list|show|replay|purge`: dead-letter streams, in the format of
//! [`crate::redis::dead_letters`], read by position. Replay adds the original fields back to the source stream (signed
//! afresh when a key is given) and deletes the dead letter only after that XADD succeeded.

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use serde::Serialize;

use crate::redis::dead_letters::METADATA;
use crate::redis::replies::as_text;
use crate::redis::signing::Signer;

/// One dead-letter entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The dead-letter entry's own id.
    pub id: String,
    pub reason: String,
    pub src_id: String,
    pub attempts: u64,
    pub consumer: String,
    pub received_at: u64,
    /// The failed entry's fields (values shown lossily as text).
    #[serde(serialize_with = "fields_as_text")]
    pub fields: Vec<(String, Vec<u8>)>,
}

fn fields_as_text<S: serde::Serializer>(fields: &[(String, Vec<u8>)], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(fields.len()))?;
    for (name, value) in fields {
        seq.serialize_element(&(name, String::from_utf8_lossy(value)))?;
    }
    seq.end()
}

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Reasons starting with this (`transient` matches `transient_exceeded…`).
    pub reason: Option<String>,
    /// Dead-lettered at or after this time (unix ms).
    pub since_ms: Option<u64>,
}

impl Filter {
    fn keeps(&self, letter: &DeadLetter) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|reason| letter.reason.starts_with(reason.as_str()))
            && self.since_ms.is_none_or(|since| id_ms(&letter.id) >= since)
    }
}

fn id_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        other => as_text(other).map(String::into_bytes),
    }
}

/// An XRANGE entry `[id, [f, v, …]]` as a dead letter; `None` for an entry that is not one.
fn parse_entry(entry: &Value) -> Option<DeadLetter> {
    let Value::Array(parts) = entry else { return None };
    let id = as_text(parts.first()?)?;
    let Value::Array(flat) = parts.get(1)? else { return None };
    let pairs: Vec<(String, Vec<u8>)> = flat
        .chunks(2)
        .filter_map(|pair| Some((as_text(pair.first()?)?, bytes(pair.get(1)?)?)))
        .collect();
    if pairs.len() < METADATA.len() || pairs.iter().zip(METADATA).any(|((name, _), expected)| name != expected) {
        return None;
    }
    let text = |index: usize| String::from_utf8_lossy(&pairs[index].1).into_owned();
    Some(DeadLetter {
        reason: text(0),
        src_id: text(1),
        attempts: text(2).parse().unwrap_or(0),
        consumer: text(3),
        received_at: text(4).parse().unwrap_or(0),
        fields: pairs[METADATA.len()..].to_vec(),
        id,
    })
}

/// The dead letters in `dlq` that `filter` keeps, oldest first; entries that are not dead
/// letters are counted in the second value and otherwise left alone.
pub async fn read(
    connection: &mut MultiplexedConnection,
    dlq: &str,
    filter: &Filter,
) -> RedisResult<(Vec<DeadLetter>, usize)> {
    let mut letters = Vec::new();
    let mut foreign = 0;
    let mut start = "-".to_owned();
    loop {
        let page: Vec<Value> = redis::cmd("XRANGE")
            .arg(dlq)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        let Some(last) = page.last().and_then(|entry| match entry {
            Value::Array(parts) => parts.first().and_then(as_text),
            _ => None,
        }) else {
            break;
        };
        for entry in &page {
            match parse_entry(entry) {
                Some(letter) if filter.keeps(&letter) => letters.push(letter),
                Some(_) => {}
                None => foreign += 1,
            }
        }
        // Exclusive start (Redis 6.2): the entry after the last one read.
        start = format!("({last}");
        if page.len() < 1000 {
            break;
        }
    }
    Ok((letters, foreign))
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("dead letter {id}: {reason}")]
    Unsignable {
        id: String,
        reason: crate::redis::signing::NoDataField,
    },
}

/// Adds each letter's original fields back to `stream` (without its old signature and with a
/// new one when `signer` is given; as it was otherwise), then deletes the dead letter. Stops at
/// the first failure: what was replayed is gone from `dlq`, the rest is still there.
/// `progress` is called after each.
pub async fn replay(
    connection: &mut MultiplexedConnection,
    stream: &str,
    dlq: &str,
    letters: &[DeadLetter],
    signer: Option<&Signer>,
    progress: &dyn Fn(),
) -> Result<u64, ReplayError> {
    let mut replayed = 0;
    for letter in letters {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(stream).arg("*");
        match signer {
            Some(signer) => {
                let unsigned: Vec<(&str, &[u8])> = letter
                    .fields
                    .iter()
                    .filter(|(name, _)| name != signer.field())
                    .map(|(name, value)| (name.as_str(), value.as_slice()))
                    .collect();
                let signature = signer
                    .sign(stream, &unsigned)
                    .map_err(|reason| ReplayError::Unsignable {
                        id: letter.id.clone(),
                        reason,
                    })?;
                for (name, value) in &unsigned {
                    xadd.arg(*name).arg(*value);
                }
                xadd.arg(signer.field()).arg(signature);
            }
            None => {
                for (name, value) in &letter.fields {
                    xadd.arg(name).arg(value.as_slice());
                }
            }
        }
        let _: String = xadd.query_async(connection).await?;
        let _: u64 = redis::cmd("XDEL")
            .arg(dlq)
            .arg(&letter.id)
            .query_async(connection)
            .await?;
        replayed += 1;
        progress();
    }
    Ok(replayed)
}

/// Deletes these dead letters; returns how many went.
pub async fn purge(connection: &mut MultiplexedConnection, dlq: &str, letters: &[DeadLetter]) -> RedisResult<u64> {
    let mut deleted = 0;
    for chunk in letters.chunks(500) {
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(dlq);
        for letter in chunk {
            xdel.arg(&letter.id);
        }
        deleted += xdel.query_async::<u64>(connection).await?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_by_position_so_original_fields_cannot_shadow_it() {
        let original = vec![
            ("id".to_owned(), b"evt-1".to_vec()),
            ("reason".to_owned(), b"theirs".to_vec()),
        ];
        let fields =
            crate::redis::dead_letters::entry_fields("max_deliveries", "1-0", 6, "c1", 1_700_000_000_000, &original);
        let flat: Vec<Value> = fields
            .iter()
            .flat_map(|(name, value)| {
                [
                    Value::BulkString(name.clone().into_bytes()),
                    Value::BulkString(value.clone()),
                ]
            })
            .collect();
        let entry = Value::Array(vec![Value::BulkString(b"5-0".to_vec()), Value::Array(flat)]);
        let letter = parse_entry(&entry).unwrap();
        assert_eq!(
            (
                letter.reason.as_str(),
                letter.src_id.as_str(),
                letter.attempts,
                letter.consumer.as_str()
            ),
            ("max_deliveries", "1-0", 6, "c1")
        );
        assert_eq!(letter.received_at, 1_700_000_000_000);
        assert_eq!(letter.fields, original);
    }
}
