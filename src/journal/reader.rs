//! A consumer: reads committed records in order from its cursor, from the in-memory cache
//! while it keeps up and from the segments when it does not (after a restart, or when it fell
//! behind by more than the cache holds).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::cursor::{CursorHandle, CursorState};
use super::record::{self, HEADER, Scan};
use super::storage::ReadFile;
use super::{Body, JournalError, Record, Shared, io_error};

/// Bytes read from a segment at a time (more when one record is larger).
const CHUNK: usize = 1 << 20;

/// Where a consumer's disk reads are: a segment, an offset, and the sequence number the
/// record there should have at least.
struct DiskPos {
    base: u64,
    file: Box<dyn ReadFile>,
    offset: u64,
    next: u64,
}

/// One consumer of the journal.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    cursor: Arc<CursorState>,
    /// The next sequence number to hand out.
    pub(super) next: u64,
    committed: watch::Receiver<u64>,
    disk: Option<DiskPos>,
    /// Records up to here may have been delivered before the last restart.
    redeliver_until: u64,
    redelivered: metrics::Counter,
}

impl<T: Send + Sync + 'static> Consumer<T> {
    pub(super) fn new(shared: Arc<Shared<T>>, cursor: Arc<CursorState>, redeliver_until: u64) -> Consumer<T> {
        let next = cursor.position().0 + 1;
        let committed = shared.committed.subscribe();
        let redelivered = metrics::counter!("weir_journal_redelivered_total", "destination" => cursor.name.clone());
        Consumer {
            shared,
            cursor,
            next,
            committed,
            disk: None,
            redeliver_until,
            redelivered,
        }
    }

    /// The sequence number of the next record it hands out.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Resolves this consumer's records.
    pub fn handle(&self) -> CursorHandle {
        CursorHandle(self.cursor.clone())
    }

    /// The next up to `max` records, waiting until there is at least one. Each record handed
    /// out must be resolved through [`Consumer::handle`] for the cursor to pass it.
    /// Cancel-safe: dropping the future hands out nothing.
    pub async fn read(&mut self, max: usize) -> Result<Vec<Record<T>>, JournalError> {
        loop {
            let next = self.next;
            let committed = *self
                .committed
                .wait_for(|&committed| committed >= next)
                .await
                .expect("the journal outlives its consumers");
            let mut records = self.cached(max);
            if records.is_empty() {
                // What the cache still holds is read from it (with the tokens of a request
                // waiting for delivery), not from disk.
                let cached_from = self
                    .shared
                    .cache
                    .lock()
                    .expect("journal lock")
                    .entries
                    .front()
                    .map(|e| e.0);
                let shared = self.shared.clone();
                let disk = self.disk.take();
                let read = tokio::task::spawn_blocking(move || read_disk(&shared, disk, next, max, cached_from))
                    .await
                    .map_err(|error| JournalError::Io {
                        what: "reading a segment".into(),
                        error: std::io::Error::other(error),
                    })??;
                self.disk = read.1;
                records = read.0;
                if records.is_empty() {
                    // Everything before the cache (or up to `committed`) was damaged beyond
                    // reading (counted): go on from there.
                    self.next = match cached_from {
                        Some(front) if front <= committed => self.next.max(front),
                        _ => committed + 1,
                    };
                    continue;
                }
            }
            for record in &records {
                self.cursor.track(record.seq, record.time_ms);
                if record.seq <= self.redeliver_until {
                    self.redelivered.increment(1);
                }
            }
            self.next = records.last().map_or(self.next, |record| record.seq + 1);
            return Ok(records);
        }
    }

    /// Records from the cache, if it still holds the next one.
    fn cached(&self, max: usize) -> Vec<Record<T>> {
        let cache = self.shared.cache.lock().expect("journal lock");
        let Some(front) = cache.entries.front() else {
            return Vec::new();
        };
        let Some(index) = self.next.checked_sub(front.0) else {
            return Vec::new();
        };
        cache
            .entries
            .range((index as usize).min(cache.entries.len())..)
            .take(max)
            .map(|(seq, time_ms, item, _)| Record {
                seq: *seq,
                time_ms: *time_ms,
                body: Body::Memory(item.clone()),
            })
            .collect()
    }
}

/// Reads up to `max` committed records from `next` on, from the segments, stopping before
/// `cached_from` (those are read from the cache).
fn read_disk<T>(
    shared: &Shared<T>,
    mut pos: Option<DiskPos>,
    mut next: u64,
    max: usize,
    cached_from: Option<u64>,
) -> Result<(Vec<Record<T>>, Option<DiskPos>), JournalError> {
    let stop = cached_from.unwrap_or(u64::MAX);
    let max_payload = shared.config.max_payload();
    let mut out = Vec::new();
    loop {
        // The segment holding `next`, its committed length, and whether a newer one exists.
        let (base, len, sealed) = {
            let table = shared.table.lock().expect("journal lock");
            let Some(first) = table.segments.first() else {
                return Ok((out, None));
            };
            if next < first.base {
                next = first.base;
            }
            let at = table.segments.partition_point(|segment| segment.base <= next) - 1;
            let segment = &table.segments[at];
            (segment.base, segment.len, at + 1 < table.segments.len())
        };
        let mut current = match pos.take() {
            Some(pos) if pos.base == base && pos.next == next => pos,
            _ => DiskPos {
                base,
                file: shared
                    .storage
                    .open_read(&Shared::<T>::segment_name(base))
                    .map_err(io_error(format!("opening {}", Shared::<T>::segment_name(base))))?,
                offset: 0,
                next,
            },
        };
        while current.offset < len && out.len() < max {
            let want = (len - current.offset).min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let got = current
                .file
                .read_at(current.offset, &mut buf)
                .map_err(io_error(format!("reading {}", Shared::<T>::segment_name(base))))?;
            if got == 0 {
                // Shorter than what was committed to it: cut by something else.
                return Err(JournalError::Io {
                    what: format!("reading {}", Shared::<T>::segment_name(base)),
                    error: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the segment ends before byte {len} that was written to it"),
                    ),
                });
            }
            buf.truncate(got);
            let buf = Bytes::from(buf);
            let complete = current.offset + got as u64 >= len;
            let mut at = 0;
            while out.len() < max {
                match record::scan(&buf, at, max_payload) {
                    Scan::Record(found) if found.seq >= stop => return Ok((out, None)),
                    Scan::Record(found) => {
                        if found.seq >= next {
                            out.push(Record {
                                seq: found.seq,
                                time_ms: found.time_ms,
                                body: Body::Disk(buf.slice(found.payload.0..found.payload.1)),
                            });
                            next = found.seq + 1;
                        }
                        at = found.end;
                    }
                    Scan::Garbage { to } => {
                        shared.damage(base, current.offset as usize + at, "a damaged record");
                        at = to;
                    }
                    Scan::Short if !complete && at > 0 => break,
                    Scan::Short if !complete => {
                        // One record larger than a chunk: read it whole.
                        let header_len = buf
                            .get(4..8)
                            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
                        let mut whole = vec![0u8; (HEADER + header_len).min((len - current.offset) as usize)];
                        let got = current
                            .file
                            .read_at(current.offset, &mut whole)
                            .map_err(io_error(format!("reading {}", Shared::<T>::segment_name(base))))?;
                        whole.truncate(got);
                        match record::scan(&whole, 0, max_payload) {
                            Scan::Record(found) if found.seq >= stop => return Ok((out, None)),
                            Scan::Record(found) => {
                                if found.seq >= next {
                                    let whole = Bytes::from(whole);
                                    out.push(Record {
                                        seq: found.seq,
                                        time_ms: found.time_ms,
                                        body: Body::Disk(whole.slice(found.payload.0..found.payload.1)),
                                    });
                                    next = found.seq + 1;
                                }
                                at = found.end;
                            }
                            _ => {
                                shared.damage(base, current.offset as usize, "a damaged record");
                                at = record::resync(&buf, 1);
                            }
                        }
                        break;
                    }
                    Scan::Short => {
                        // Committed bytes that do not hold a whole record: damage.
                        shared.damage(base, current.offset as usize + at, "a damaged record");
                        at = record::resync(&buf, at + 1);
                    }
                    Scan::End => break,
                }
            }
            current.offset += at as u64;
        }
        current.next = next;
        if out.len() >= max || !sealed || current.offset < len {
            return Ok((out, Some(current)));
        }
        // This segment is done: on to the next.
        next = next.max(base + 1);
        let following = shared
            .table
            .lock()
            .expect("journal lock")
            .segments
            .iter()
            .find(|segment| segment.base > base)
            .map(|segment| segment.base);
        match following {
            Some(following) => next = next.max(following),
            None => return Ok((out, None)),
        }
    }
}
