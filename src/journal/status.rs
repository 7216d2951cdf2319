//! What a journal directory holds, read without opening it for writing, so that
//! `weir journal status` works while weir runs: segments, bytes, and per consumer its cursor,
//! its lag in records and bytes, and the age of its oldest unresolved record.

use serde::Serialize;

use super::record::{self, Scan};
use super::storage::Storage;
use super::{CURSOR_SUFFIX, JournalError, SEGMENT_SUFFIX, Segment, cursor, io_error, writer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalStatus {
    pub segments: usize,
    pub bytes: u64,
    /// The first and last sequence numbers on disk (0 when there are none).
    pub first_seq: u64,
    pub last_seq: u64,
    pub consumers: Vec<ConsumerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub name: String,
    /// Every record up to here is delivered or dead-lettered; `None`: the cursor file is
    /// damaged (the consumer replays everything on disk at its next start).
    pub cursor: Option<u64>,
    pub lag_events: u64,
    pub lag_bytes: u64,
    /// Append time (ms since the epoch) of the oldest record not yet resolved.
    pub oldest_ms: Option<u64>,
}

/// Reads the state of the journal in `storage`.
pub fn inspect(storage: &dyn Storage) -> Result<JournalStatus, JournalError> {
    let names = storage.list().map_err(io_error("listing the directory"))?;
    let mut segments: Vec<Segment> = Vec::new();
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|name| name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
        .collect();
    bases.sort_unstable();
    for base in bases {
        let name = format!("{base:020}{SEGMENT_SUFFIX}");
        // A segment removed since the listing is simply gone.
        let Ok(len) = storage.open_read(&name).and_then(|file| file.size()) else {
            continue;
        };
        segments.push(Segment { base, name, len });
    }
    let last_seq = match segments.last() {
        Some(last) => writer::recover_tail(storage, last, usize::MAX >> 1)?
            .0
            .unwrap_or(last.base.saturating_sub(1)),
        None => 0,
    };
    let mut consumers = Vec::new();
    let mut cursor_files: Vec<&String> = names.iter().filter(|name| name.ends_with(CURSOR_SUFFIX)).collect();
    cursor_files.sort();
    for file in cursor_files {
        let Some(name) = cursor::consumer_name(file) else {
            continue;
        };
        let saved = cursor::load(storage, file);
        let acked = saved.map_or_else(
            || segments.first().map_or(0, |s| s.base.saturating_sub(1)),
            |saved| saved.acked,
        );
        let (lag_bytes, oldest_ms) = behind(storage, &segments, acked)?;
        consumers.push(ConsumerStatus {
            name,
            cursor: saved.map(|saved| saved.acked),
            lag_events: last_seq.saturating_sub(acked),
            lag_bytes,
            oldest_ms,
        });
    }
    Ok(JournalStatus {
        segments: segments.len(),
        bytes: segments.iter().map(|segment| segment.len).sum(),
        first_seq: segments.first().map_or(0, |segment| segment.base),
        last_seq,
        consumers,
    })
}

/// Bytes of records after `acked`, and the append time of the first of them.
fn behind(storage: &dyn Storage, segments: &[Segment], acked: u64) -> Result<(u64, Option<u64>), JournalError> {
    let at = segments.partition_point(|segment| segment.base <= acked + 1);
    let Some(index) = at.checked_sub(1) else {
        // The cursor is older than every segment: all of them are behind it.
        let oldest = match segments.first() {
            Some(first) => first_record_after(storage, first, 0)?.map(|(_, time)| time),
            None => None,
        };
        return Ok((segments.iter().map(|s| s.len).sum(), oldest));
    };
    let segment = &segments[index];
    let later: u64 = segments[index + 1..].iter().map(|s| s.len).sum();
    match first_record_after(storage, segment, acked)? {
        Some((offset, time)) => Ok((segment.len - offset + later, Some(time))),
        None => {
            let oldest = match segments.get(index + 1) {
                Some(next) => first_record_after(storage, next, acked)?.map(|(_, time)| time),
                None => None,
            };
            Ok((later, oldest))
        }
    }
}

/// Offset and time of the first record in `segment` numbered above `acked`.
fn first_record_after(
    storage: &dyn Storage,
    segment: &Segment,
    acked: u64,
) -> Result<Option<(u64, u64)>, JournalError> {
    let buf = storage
        .read(&segment.name)
        .map_err(io_error(format!("reading {}", segment.name)))?;
    let mut at = 0;
    loop {
        match record::scan(&buf, at, usize::MAX >> 1) {
            Scan::Record(found) if found.seq > acked => return Ok(Some((at as u64, found.time_ms))),
            Scan::Record(found) => at = found.end,
            Scan::Garbage { to } => at = to,
            Scan::Short => at = record::resync(&buf, at + 1),
            Scan::End => return Ok(None),
        }
    }
}
