//! The journal: an append-only log on local disk that makes "accepted" mean "on disk".
//!
//! One writer thread appends with group commit: it takes every append request queued, writes
//! them with one `write`, calls `fdatasync`, and only then answers them all; requests that
//! arrive meanwhile form the next group. Each consumer (a journaled destination) reads
//! through its own [`Consumer`] from its own cursor; outcomes arrive out of order, and the
//! cursor advances over the contiguous resolved prefix. A keeper thread persists cursors
//! (atomically, synced) and then removes segments every cursor has passed.
//!
//! On disk (`path`): segments `<first seq, 20 digits>.wjl` of records framed as in
//! [`record`] (CRC-32C, a magic to resynchronise on), and one `<consumer>.cursor` file per
//! consumer. Recovery truncates a torn tail of the newest segment; damage inside a segment is
//! skipped by the reader that meets it and counted, never a crash loop. A failed `fdatasync`
//! is fatal ([`Journal::fatal`]): after one, the page cache may hold data the disk lost, so
//! retrying it would acknowledge data that is not there.
//!
//! Written here rather than taken from a crate: the maintained Rust WAL crates (okaywal,
//! simple_wal, commitlog) have one reader or none, sync on their own schedule or per call,
//! and none puts the storage behind a trait a test can crash at any operation, which is how
//! the promise "nothing acknowledged is lost" is tested here (`tests.rs`).
//!
//! A record holds bytes; the journal also keeps the newest records' in-memory form (`T`) in
//! a bounded cache, so consumers that keep up never read or decode from disk.

mod cursor;
mod reader;
pub mod record;
pub mod status;
pub mod storage;
mod writer;

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use cursor::CursorHandle;
pub use reader::Consumer;
use storage::Storage;

/// Segment file suffix.
const SEGMENT_SUFFIX: &str = ".wjl";
/// Cursor file suffix.
const CURSOR_SUFFIX: &str = ".cursor";

/// How the journal is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Disk the segments may take; an append past it is refused ([`AppendError::Full`]).
    pub max_bytes: u64,
    /// A segment is sealed and a new one begun when the next group would take it past this.
    pub segment_bytes: u64,
    /// In-memory form of the newest records kept for consumers that keep up.
    pub cache_bytes: usize,
    /// How often cursors are persisted (and segments removed).
    pub persist_every: Duration,
}

impl Default for JournalConfig {
    /// The sizes of a flow's `[journal]` block by default (`config::flow::JournalSettings`
    /// owns them; the assembly passes the flow's), a 64 MiB cache, cursors saved every 100 ms.
    fn default() -> Self {
        JournalConfig {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            cache_bytes: 64 << 20,
            persist_every: Duration::from_millis(100),
        }
    }
}

impl JournalConfig {
    /// The largest record payload: one must fit in a segment.
    fn max_payload(&self) -> usize {
        (self.segment_bytes as usize)
            .saturating_sub(record::HEADER)
            .min(u32::MAX as usize)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// `maxBytes` is reached, or the disk is full: try again once consumers have drained.
    #[error("the journal is full ({reason}); retry once destinations have caught up")]
    Full { reason: String },
    /// One record is larger than a segment.
    #[error("a record of {size} bytes is larger than a journal segment allows ({limit})")]
    TooLarge { size: usize, limit: usize },
    /// The journal stopped: a write or sync failed, or it was closed.
    #[error("the journal stopped: {reason}")]
    Stopped { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The message carries the I/O error itself (it is logged as one line).
    #[error("journal {what}: {error}")]
    Io { what: String, error: std::io::Error },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JournalError {
    let what = what.into();
    move |error| JournalError::Io { what, error }
}

/// One record as a consumer gets it.
#[derive(Debug, Clone)]
pub struct Record<T> {
    pub seq: u64,
    /// When it was appended, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub body: Body<T>,
}

/// A record's content: the in-memory form it was appended with (from the cache), or its
/// bytes from disk (after a restart, or for a consumer that fell behind the cache).
#[derive(Debug, Clone)]
pub enum Body<T> {
    Memory(Arc<T>),
    Disk(Bytes),
}

/// A segment as the journal tracks it.
#[derive(Debug, Clone)]
struct Segment {
    /// The first sequence number it may hold (its name).
    base: u64,
    name: String,
    /// Bytes committed (synced) in it.
    len: u64,
}

/// Segments and sizes, shared by the writer, the readers and the keeper.
#[derive(Debug, Default)]
struct Table {
    segments: Vec<Segment>,
    bytes: u64,
}

/// The newest records' in-memory forms, by sequence number (contiguous within one run).
struct Cache<T> {
    entries: VecDeque<(u64, u64, Arc<T>, usize)>,
    bytes: usize,
}

struct Shared<T> {
    storage: Arc<dyn Storage>,
    config: JournalConfig,
    table: Mutex<Table>,
    /// The last committed sequence number (0: none yet).
    committed: watch::Sender<u64>,
    cache: Mutex<Cache<T>>,
    cursors: Mutex<Vec<Arc<cursor::CursorState>>>,
    full: AtomicBool,
    /// Segments may be removed: every consumer of the flow has opened its cursor.
    collect: AtomicBool,
    /// Set with the reason when the journal can no longer be trusted (a failed sync).
    fatal: CancellationToken,
    fatal_reason: Mutex<Option<String>>,
    /// Groups committed (one write and one fdatasync each) and bytes written, since open.
    commits: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
    /// Damaged regions already counted, by (segment base, offset).
    damage_seen: Mutex<std::collections::HashSet<(u64, usize)>>,
}

impl<T> Shared<T> {
    fn fail(&self, reason: String) {
        tracing::error!(error = %reason, "the journal stopped accepting events");
        self.fatal_reason.lock().expect("journal lock").get_or_insert(reason);
        self.fatal.cancel();
    }

    fn segment_name(base: u64) -> String {
        format!("{base:020}{SEGMENT_SUFFIX}")
    }

    /// The last record every open consumer has resolved, once every consumer is open (before
    /// that, a consumer not yet open may still need any record).
    fn resolved_by_all(&self) -> Option<u64> {
        if !self.collect.load(Ordering::Acquire) {
            return None;
        }
        // Not waited for: a reload holds the list while it saves a cursor (a synced write),
        // and a commit must not wait on that; the keeper trims on its next round.
        let cursors = self.cursors.try_lock().ok()?;
        cursors.iter().map(|cursor| cursor.position().0).min()
    }

    /// Drops the cached records every open consumer has resolved. None of them is read from
    /// memory again (a consumer reopened starts after its resolved prefix), and an in-memory
    /// record — the event's parsed tree — is several times its bytes on disk: kept until the
    /// cache's byte bound pushed it out, a 64 MiB cache held some 320 MiB.
    fn trim_resolved(&self) {
        let Some(resolved) = self.resolved_by_all() else {
            return;
        };
        let mut cache = self.cache.lock().expect("journal lock");
        while cache.entries.front().is_some_and(|entry| entry.0 <= resolved) {
            let dropped = cache.entries.pop_front().expect("front exists");
            cache.bytes -= dropped.3;
        }
    }

    /// Counts a damaged region once, however many readers meet it.
    fn damage(&self, segment: u64, offset: usize, what: &str) {
        if self.damage_seen.lock().expect("journal lock").insert((segment, offset)) {
            metrics::counter!("weir_journal_corrupt_records_total").increment(1);
            tracing::warn!(segment = %Self::segment_name(segment), offset, "journal: {what}; skipped to the next good record");
        }
    }
}

struct Append<T> {
    items: Vec<(Bytes, Arc<T>)>,
    reply: oneshot::Sender<Result<RangeInclusive<u64>, AppendError>>,
}

/// A journal opened for writing.
pub struct Journal<T: Send + Sync + 'static> {
    shared: Arc<Shared<T>>,
    appends: Mutex<Option<mpsc::UnboundedSender<Append<T>>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop_keeper: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

/// What recovery found when the journal was opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub segments: usize,
    /// The last sequence number on disk (0: none).
    pub last_seq: u64,
    /// Bytes of a torn tail cut off the newest segment.
    pub truncated_bytes: u64,
    /// Damaged regions skipped in the newest segment.
    pub damaged: u64,
}

impl<T: Send + Sync + 'static> Journal<T> {
    /// Opens the journal on `storage`, recovering what a previous run left.
    pub fn open(storage: Arc<dyn Storage>, config: JournalConfig) -> Result<(Journal<T>, Recovered), JournalError> {
        let names = storage.list().map_err(io_error("listing the directory"))?;
        let mut bases: Vec<u64> = names
            .iter()
            .filter_map(|name| name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
            .collect();
        bases.sort_unstable();
        let mut cursor_max = 0;
        for name in names.iter().filter(|name| name.ends_with(CURSOR_SUFFIX)) {
            if let Some(saved) = cursor::load(storage.as_ref(), name) {
                cursor_max = cursor_max.max(saved.acked);
            }
        }

        let mut recovered = Recovered {
            segments: bases.len(),
            ..Recovered::default()
        };
        let mut table = Table::default();
        for &base in &bases {
            let name = Shared::<T>::segment_name(base);
            let len = storage
                .open_read(&name)
                .and_then(|file| file.size())
                .map_err(io_error(format!("reading {name}")))?;
            table.segments.push(Segment { base, name, len });
        }
        let mut next_seq = cursor_max + 1;
        if let Some(last) = table.segments.last_mut() {
            let (last_seq, good_len, damaged) = writer::recover_tail(storage.as_ref(), last, config.max_payload())?;
            recovered.damaged = damaged;
            if good_len < last.len {
                recovered.truncated_bytes = last.len - good_len;
                storage
                    .open_append(&last.name)
                    .and_then(|mut file| file.truncate(good_len))
                    .map_err(io_error(format!("truncating the torn tail of {}", last.name)))?;
                metrics::counter!("weir_journal_truncated_bytes_total").increment(recovered.truncated_bytes);
                tracing::warn!(segment = %last.name, bytes = recovered.truncated_bytes, "journal: cut a torn tail left by a crash");
                last.len = good_len;
            }
            recovered.last_seq = last_seq.unwrap_or(0);
            next_seq = next_seq.max(last.base).max(last_seq.map_or(0, |seq| seq + 1));
        }
        table.bytes = table.segments.iter().map(|segment| segment.len).sum();

        let active = match table.segments.last() {
            Some(last) => storage
                .open_append(&last.name)
                .map_err(io_error(format!("opening {}", last.name)))?,
            None => {
                let name = Shared::<T>::segment_name(next_seq);
                let file = storage.create(&name).map_err(io_error(format!("creating {name}")))?;
                table.segments.push(Segment {
                    base: next_seq,
                    name,
                    len: 0,
                });
                file
            }
        };
        let (committed, _) = watch::channel(next_seq - 1);
        let shared = Arc::new(Shared {
            storage,
            config,
            table: Mutex::new(table),
            committed,
            cache: Mutex::new(Cache {
                entries: VecDeque::new(),
                bytes: 0,
            }),
            cursors: Mutex::new(Vec::new()),
            full: AtomicBool::new(false),
            collect: AtomicBool::new(false),
            fatal: CancellationToken::new(),
            fatal_reason: Mutex::new(None),
            damage_seen: Mutex::new(Default::default()),
            commits: Default::default(),
            written: Default::default(),
        });
        let (sender, receiver) = mpsc::unbounded_channel();
        let stop_keeper = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("weir-journal".into())
                .spawn(move || writer::run(shared, active, next_seq, receiver))
                .map_err(io_error("starting the writer thread"))?
        };
        let keeper = {
            let shared = shared.clone();
            let stop = stop_keeper.clone();
            std::thread::Builder::new()
                .name("weir-journal-keeper".into())
                .spawn(move || cursor::keep(shared, stop))
                .map_err(io_error("starting the keeper thread"))?
        };
        let journal = Journal {
            shared,
            appends: Mutex::new(Some(sender)),
            threads: Mutex::new(vec![writer, keeper]),
            stop_keeper,
        };
        journal.publish_sizes();
        Ok((journal, recovered))
    }

    /// Appends records; resolves once they are on disk (or refused).
    pub async fn append(&self, items: Vec<(Bytes, Arc<T>)>) -> Result<RangeInclusive<u64>, AppendError> {
        let (reply, answer) = oneshot::channel();
        let sent = match &*self.appends.lock().expect("journal lock") {
            Some(sender) => sender.send(Append { items, reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> AppendError {
        AppendError::Stopped {
            reason: self
                .fatal_reason()
                .unwrap_or_else(|| "the journal is closed".to_owned()),
        }
    }

    /// Opens the consumer `name`: from its persisted cursor, or, the first time, from the
    /// journal's end (it takes what is appended from now on). Its cursor file is written
    /// before this returns, so nothing appended afterwards can be missed after a crash.
    pub fn consumer(&self, name: &str) -> Result<Consumer<T>, JournalError> {
        let (state, redeliver_until) = cursor::open(&self.shared, name)?;
        self.shared.cursors.lock().expect("journal lock").push(state.clone());
        Ok(reader::Consumer::new(self.shared.clone(), state, redeliver_until))
    }

    /// Hands consumer `name` to a new reader (its destination changed by a reload, its old
    /// reader finished): the cursor is saved as it stands and the new consumer continues from
    /// its resolved prefix, so what the old one left unresolved is read again. The swap holds
    /// the cursor list, so no segment the new consumer needs can go in between. Without an
    /// open consumer of that name, the same as [`Journal::consumer`].
    pub fn reopen_consumer(&self, name: &str) -> Result<Consumer<T>, JournalError> {
        let mut cursors = self.shared.cursors.lock().expect("journal lock");
        self.release(&mut cursors, name)?;
        let (state, redeliver_until) = cursor::open(&self.shared, name)?;
        cursors.push(state.clone());
        Ok(reader::Consumer::new(self.shared.clone(), state, redeliver_until))
    }

    /// Consumer `name` is gone (its destination removed by a reload, its reader finished):
    /// the cursor is saved and holds no segment back any more. Its file stays, as for a
    /// destination taken out of the flow across a restart.
    pub fn close_consumer(&self, name: &str) -> Result<(), JournalError> {
        let mut cursors = self.shared.cursors.lock().expect("journal lock");
        self.release(&mut cursors, name)?;
        Ok(())
    }

    /// Saves consumer `name`'s cursor and takes it out of `cursors` (the held cursor list).
    fn release(&self, cursors: &mut Vec<Arc<cursor::CursorState>>, name: &str) -> Result<(), JournalError> {
        if let Some(at) = cursors.iter().position(|cursor| cursor.name == name) {
            cursors[at]
                .persist(self.shared.storage.as_ref())
                .map_err(io_error(format!("saving the cursor of {name}")))?;
            cursors.remove(at);
        }
        Ok(())
    }

    /// Every consumer is open: from now on segments that every open cursor has passed are
    /// removed. Until then none is, so a segment a consumer still needs cannot go before that
    /// consumer's cursor is read. Cursor files of consumers not opened (a destination taken
    /// out of the flow) hold nothing back.
    pub fn consumers_opened(&self) {
        self.shared.collect.store(true, Ordering::Release);
    }

    /// Whether the last append was refused for space and nothing has been freed since
    /// (`/readyz` reports not ready).
    pub fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::Acquire)
    }

    /// Resolves when the journal has stopped for good (a failed write or sync): the process
    /// must stop accepting and exit.
    pub fn fatal(&self) -> CancellationToken {
        self.shared.fatal.clone()
    }

    pub fn fatal_reason(&self) -> Option<String> {
        self.shared.fatal_reason.lock().expect("journal lock").clone()
    }

    /// The last committed sequence number.
    pub fn committed(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    /// Groups committed (each one write and one fdatasync) and bytes written since open.
    pub fn commits(&self) -> (u64, u64) {
        (
            self.shared.commits.load(Ordering::Relaxed),
            self.shared.written.load(Ordering::Relaxed),
        )
    }

    /// Segments and bytes on disk.
    pub fn size(&self) -> (usize, u64) {
        let table = self.shared.table.lock().expect("journal lock");
        (table.segments.len(), table.bytes)
    }

    fn publish_sizes(&self) {
        let (segments, bytes) = self.size();
        metrics::gauge!("weir_journal_segments").set(segments as f64);
        metrics::gauge!("weir_journal_bytes").set(bytes as f64);
    }

    /// Stops the writer (appends queued before are still answered), persists every cursor a
    /// last time and waits for both threads.
    pub fn close(&self) {
        self.appends.lock().expect("journal lock").take();
        {
            let (stop, wake) = &*self.stop_keeper;
            *stop.lock().expect("journal lock") = true;
            wake.notify_all();
        }
        for thread in self.threads.lock().expect("journal lock").drain(..) {
            let _ = thread.join();
        }
    }
}

impl<T: Send + Sync + 'static> Drop for Journal<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
