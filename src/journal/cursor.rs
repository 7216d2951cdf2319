//! Cursors: how far each consumer has resolved the journal, kept in memory as outcomes
//! arrive (in any order) and persisted by the keeper thread, which then removes the segments
//! every cursor has passed.
//!
//! A cursor file holds two 24-byte slots, each `wjc1`, the resolved prefix's last sequence
//! number, the highest sequence number resolved at all (records between the two are
//! delivered again after a crash: counted as redelivered), and a CRC-32C of the three. Saves
//! overwrite the slots in turn in place and sync: no new space is needed, so a cursor moves
//! — and segments are freed — on a full disk too, and a save torn by a crash leaves the other
//! slot; the valid slot further on wins. The file is created whole (written aside, synced,
//! renamed, directory synced).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use super::storage::Storage;
use super::{CURSOR_SUFFIX, JournalError, Shared, io_error};

const MAGIC: [u8; 4] = *b"wjc1";
const SLOT: usize = 24;

/// What a cursor file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Saved {
    pub(super) acked: u64,
    pub(super) high_water: u64,
}

fn encode(saved: Saved) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&saved.acked.to_le_bytes());
    out[12..20].copy_from_slice(&saved.high_water.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_slot(bytes: &[u8]) -> Option<Saved> {
    if bytes.len() != SLOT || bytes[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
    (crc32c::crc32c(&bytes[..20]) == crc).then(|| Saved {
        acked: u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
        high_water: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
    })
}

/// The file name of consumer `name`'s cursor: the name with anything but `[A-Za-z0-9_.-]`
/// written as `%XX`, so any destination id makes one flat, reversible file name.
pub(super) fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + CURSOR_SUFFIX.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.push_str(CURSOR_SUFFIX);
    out
}

/// The consumer name a cursor file belongs to.
pub(super) fn consumer_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(CURSOR_SUFFIX)?;
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' && tail.len() >= 2 {
            bytes.push(u8::from_str_radix(std::str::from_utf8(&tail[..2]).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// A whole cursor file: both slots.
fn encode_file(saved: Saved) -> [u8; 2 * SLOT] {
    let mut out = [0u8; 2 * SLOT];
    out[..SLOT].copy_from_slice(&encode(saved));
    out[SLOT..].copy_from_slice(&encode(saved));
    out
}

/// The further valid slot of a cursor file; `None` if neither is valid.
fn decode(bytes: &[u8]) -> Option<Saved> {
    let slot = |at: usize| bytes.get(at..at + SLOT).and_then(decode_slot);
    match (slot(0), slot(SLOT)) {
        (Some(a), Some(b)) => Some(if b.acked > a.acked { b } else { a }),
        (one, other) => one.or(other),
    }
}

/// Reads a cursor file; `None` if it is missing or damaged.
pub(super) fn load(storage: &dyn Storage, file: &str) -> Option<Saved> {
    decode(&storage.read(file).ok()?)
}

/// One consumer's position.
pub(super) struct CursorState {
    pub(super) name: String,
    file: String,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Every record up to here is resolved.
    acked: u64,
    /// The highest record resolved.
    high_water: u64,
    /// What the cursor file says.
    persisted: Saved,
    /// The slot the next save overwrites.
    next_slot: usize,
    /// Records handed out and not yet part of the resolved prefix, in order: (seq, append
    /// time, resolved).
    outstanding: VecDeque<(u64, u64, bool)>,
}

/// Resolves records of one consumer: clone it to wherever outcomes arrive.
#[derive(Clone)]
pub struct CursorHandle(pub(super) Arc<CursorState>);

impl CursorHandle {
    /// The record `seq` was delivered or dead-lettered: the cursor may pass it.
    pub fn resolve(&self, seq: u64) {
        self.0.resolve(seq);
    }

    /// Every record up to here is resolved.
    pub fn acked(&self) -> u64 {
        self.0.inner.lock().expect("cursor lock").acked
    }
}

impl CursorState {
    /// A record was handed to the consumer (in sequence order).
    pub(super) fn track(&self, seq: u64, time_ms: u64) {
        self.inner
            .lock()
            .expect("cursor lock")
            .outstanding
            .push_back((seq, time_ms, false));
    }

    fn resolve(&self, seq: u64) {
        let mut inner = self.inner.lock().expect("cursor lock");
        let Ok(at) = inner.outstanding.binary_search_by_key(&seq, |entry| entry.0) else {
            return;
        };
        inner.outstanding[at].2 = true;
        inner.high_water = inner.high_water.max(seq);
        while inner.outstanding.front().is_some_and(|entry| entry.2) {
            let (seq, _, _) = inner.outstanding.pop_front().expect("front exists");
            inner.acked = seq;
        }
    }

    /// (resolved prefix, append time of the oldest record handed out and unresolved).
    pub(super) fn position(&self) -> (u64, Option<u64>) {
        let inner = self.inner.lock().expect("cursor lock");
        (inner.acked, inner.outstanding.front().map(|entry| entry.1))
    }

    pub(super) fn persisted(&self) -> u64 {
        self.inner.lock().expect("cursor lock").persisted.acked
    }

    /// Writes the cursor file if the position moved; returns whether it did.
    pub(super) fn persist(&self, storage: &dyn Storage) -> Result<bool, std::io::Error> {
        let saved = {
            let inner = self.inner.lock().expect("cursor lock");
            Saved {
                acked: inner.acked,
                high_water: inner.high_water.max(inner.acked),
            }
        };
        let slot = {
            let inner = self.inner.lock().expect("cursor lock");
            if saved == inner.persisted {
                return Ok(false);
            }
            inner.next_slot
        };
        storage.overwrite(&self.file, (slot * SLOT) as u64, &encode(saved))?;
        let mut inner = self.inner.lock().expect("cursor lock");
        inner.persisted = saved;
        inner.next_slot = 1 - slot;
        Ok(true)
    }
}

/// Opens consumer `name`'s cursor: returns it and the sequence number up to which records
/// may have been delivered before (redeliveries).
pub(super) fn open<T>(shared: &Shared<T>, name: &str) -> Result<(Arc<CursorState>, u64), JournalError> {
    let file = file_name(name);
    let storage = shared.storage.as_ref();
    let committed = *shared.committed.borrow();
    let oldest = shared
        .table
        .lock()
        .expect("journal lock")
        .segments
        .first()
        .map_or(committed + 1, |segment| segment.base);
    let mut first_slot = 0;
    let (saved, write_now) = match storage.read(&file) {
        // Only the current file shape; anything else is rewritten whole below.
        Ok(bytes) if bytes.len() != 2 * SLOT => match decode(&bytes) {
            Some(saved) => (saved, true),
            None => damaged(name, &file, oldest, committed),
        },
        Ok(bytes) => match decode(&bytes) {
            Some(saved) => {
                // The first save overwrites the slot that does not hold the winner.
                first_slot = usize::from(decode_slot(&bytes[..SLOT]) == Some(saved));
                (saved, false)
            }
            None => damaged(name, &file, oldest, committed),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (
            Saved {
                acked: committed,
                high_water: committed,
            },
            true,
        ),
        Err(error) => return Err(io_error(format!("reading {file}"))(error)),
    };
    if write_now {
        storage
            .replace(&file, &encode_file(saved))
            .map_err(io_error(format!("writing {file}")))?;
    }
    let state = Arc::new(CursorState {
        name: name.to_owned(),
        file,
        inner: Mutex::new(Inner {
            acked: saved.acked,
            high_water: saved.acked,
            persisted: saved,
            next_slot: first_slot,
            outstanding: VecDeque::new(),
        }),
    });
    Ok((state, saved.high_water))
}

/// A cursor file that cannot be read: start from the oldest record still on disk
/// (duplicates, never a loss).
fn damaged(name: &str, file: &str, oldest: u64, committed: u64) -> (Saved, bool) {
    metrics::counter!("weir_journal_corrupt_records_total").increment(1);
    tracing::warn!(consumer = name, file = %file, "journal: damaged cursor file; replaying every record still on disk");
    let saved = Saved {
        acked: oldest.saturating_sub(1),
        high_water: committed,
    };
    (saved, true)
}

/// The keeper: persists cursors every `persist_every`, then removes the segments every
/// cursor has passed, and publishes sizes and lags. A last round runs when it is stopped.
pub(super) fn keep<T>(shared: Arc<Shared<T>>, stop: Arc<(Mutex<bool>, Condvar)>) {
    loop {
        let stopping = {
            let (flag, wake) = &*stop;
            let guard = flag.lock().expect("keeper lock");
            let (guard, _) = wake
                .wait_timeout_while(guard, shared.config.persist_every, |stop| !*stop)
                .expect("keeper lock");
            *guard
        };
        round(&shared);
        if stopping {
            return;
        }
    }
}

fn round<T>(shared: &Shared<T>) {
    let cursors = shared.cursors.lock().expect("journal lock").clone();
    for cursor in &cursors {
        if let Err(error) = cursor.persist(shared.storage.as_ref()) {
            tracing::warn!(consumer = %cursor.name, error = %error, "journal: cannot save the cursor; will retry");
        }
    }
    let committed = *shared.committed.borrow();
    if shared.collect.load(std::sync::atomic::Ordering::Acquire) {
        let passed = cursors
            .iter()
            .map(|cursor| cursor.persisted())
            .min()
            .unwrap_or(committed);
        remove_passed(shared, passed);
    }
    // Between commits too: when appends stop, delivered records do not stay in memory.
    shared.trim_resolved();

    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    for cursor in &cursors {
        let (acked, oldest) = cursor.position();
        let lag = committed.saturating_sub(acked);
        let oldest = oldest.or_else(|| {
            (lag > 0).then(|| {
                let cache = shared.cache.lock().expect("journal lock");
                let front = cache.entries.front()?;
                let index = (acked + 1).checked_sub(front.0)? as usize;
                cache.entries.get(index).map(|entry| entry.1)
            })?
        });
        let age = oldest.map_or(0.0, |time| now_ms.saturating_sub(time) as f64 / 1000.0);
        let label = [("destination", cursor.name.clone())];
        metrics::gauge!("weir_journal_lag_events", &label).set(lag as f64);
        metrics::gauge!("weir_journal_oldest_seconds", &label).set(age);
    }
}

/// Removes every sealed segment whose records are all at or below `passed`.
fn remove_passed<T>(shared: &Shared<T>, passed: u64) {
    loop {
        let doomed = {
            let table = shared.table.lock().expect("journal lock");
            match table.segments.get(..2) {
                Some([first, second]) if second.base.saturating_sub(1) <= passed => first.name.clone(),
                _ => return,
            }
        };
        if let Err(error) = shared.storage.remove(&doomed) {
            tracing::warn!(segment = %doomed, error = %error, "journal: cannot remove a passed segment; will retry");
            return;
        }
        let mut table = shared.table.lock().expect("journal lock");
        let removed = table.segments.remove(0);
        table.bytes -= removed.len;
        metrics::gauge!("weir_journal_bytes").set(table.bytes as f64);
        metrics::gauge!("weir_journal_segments").set(table.segments.len() as f64);
        shared.full.store(false, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_slots_round_trip_and_a_torn_slot_leaves_the_other() {
        let saved = Saved {
            acked: 41,
            high_water: 57,
        };
        let slot = encode(saved);
        assert_eq!(decode_slot(&slot), Some(saved));
        for at in 0..SLOT {
            let mut torn = slot;
            torn[at] ^= 0x04;
            assert_eq!(decode_slot(&torn), None, "flip at {at}");
        }
        // Two slots: the further valid one wins; a torn one leaves the other.
        let mut file = encode_file(saved);
        let later = Saved {
            acked: 50,
            high_water: 60,
        };
        file[SLOT..].copy_from_slice(&encode(later));
        assert_eq!(decode(&file), Some(later));
        file[SLOT + 7] ^= 1;
        assert_eq!(decode(&file), Some(saved));
        file[3] ^= 1;
        assert_eq!(decode(&file), None);
    }

    #[test]
    fn names_become_flat_reversible_file_names() {
        for name in ["events", "a/b c", "ünï", "%41", "x.y-z_1"] {
            let file = file_name(name);
            assert!(!file.contains('/'));
            assert_eq!(consumer_name(&file).as_deref(), Some(name));
        }
        assert_eq!(file_name("a/b"), "a%2Fb.cursor");
    }
}
