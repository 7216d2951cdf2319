//! The writer thread (group commit) and the recovery of the newest segment's tail.

use std::io;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::record::{self, HEADER, Scan};
use super::storage::{AppendFile, Storage};
use super::{Append, AppendError, JournalError, Segment, Shared, io_error};

/// A group takes what is queued up to about this many bytes, so one commit's latency stays
/// bounded under a flood.
const GROUP_BYTES: usize = 8 << 20;

type Reply = oneshot::Sender<Result<RangeInclusive<u64>, AppendError>>;

/// Records encoded for the next write, with whom to answer.
struct Pending<T> {
    buf: Vec<u8>,
    /// Sequence number of the first record in `buf`.
    first: u64,
    answers: Vec<(Reply, RangeInclusive<u64>)>,
    items: Vec<(u64, u64, Arc<T>, usize)>,
}

/// Runs until every sender is gone, or until a write or sync fails (then the journal is
/// fatal and every request, queued or later, is refused).
pub(super) fn run<T: Send + Sync + 'static>(
    shared: Arc<Shared<T>>,
    mut active: Box<dyn AppendFile>,
    mut next_seq: u64,
    mut receiver: mpsc::UnboundedReceiver<Append<T>>,
) {
    let mut group = Vec::new();
    let mut pending = Pending {
        buf: Vec::with_capacity(1 << 20),
        first: next_seq,
        answers: Vec::new(),
        items: Vec::new(),
    };
    while let Some(first) = receiver.blocking_recv() {
        let mut bytes = request_bytes(&first);
        group.push(first);
        while bytes < GROUP_BYTES {
            match receiver.try_recv() {
                Ok(append) => {
                    bytes += request_bytes(&append);
                    group.push(append);
                }
                Err(_) => break,
            }
        }
        let result = group
            .drain(..)
            .try_for_each(|append| take(&shared, &mut active, &mut next_seq, &mut pending, append))
            .and_then(|()| commit(&shared, active.as_mut(), &mut next_seq, &mut pending));
        if let Err(reason) = result {
            shared.fail(reason);
            let stopped = || AppendError::Stopped {
                reason: shared
                    .fatal_reason
                    .lock()
                    .expect("journal lock")
                    .clone()
                    .unwrap_or_default(),
            };
            for (reply, _) in pending.answers.drain(..) {
                let _ = reply.send(Err(stopped()));
            }
            for append in group.drain(..) {
                let _ = append.reply.send(Err(stopped()));
            }
            receiver.close();
            while let Ok(append) = receiver.try_recv() {
                let _ = append.reply.send(Err(stopped()));
            }
            return;
        }
    }
}

fn request_bytes<T>(append: &Append<T>) -> usize {
    append.items.iter().map(|(bytes, _)| HEADER + bytes.len()).sum()
}

/// Encodes one request into the pending write, committing first (and rolling to a new
/// segment) when it would not fit the active segment, or refuses it.
fn take<T>(
    shared: &Shared<T>,
    active: &mut Box<dyn AppendFile>,
    next_seq: &mut u64,
    pending: &mut Pending<T>,
    append: Append<T>,
) -> Result<(), String> {
    let config = &shared.config;
    let limit = config.max_payload();
    if let Some((big, _)) = append.items.iter().find(|(bytes, _)| bytes.len() > limit) {
        let _ = append.reply.send(Err(AppendError::TooLarge { size: big.len(), limit }));
        return Ok(());
    }
    let size = request_bytes(&append) as u64;
    let segment_len = shared
        .table
        .lock()
        .expect("journal lock")
        .segments
        .last()
        .map_or(0, |s| s.len);
    let unwritten = pending.buf.len() as u64;
    // Roll first: the sealed segment can then be removed once passed, even if this request
    // is refused for space (the active one never is).
    if segment_len + unwritten + size > config.segment_bytes && segment_len + unwritten > 0 {
        commit(shared, active.as_mut(), next_seq, pending)?;
        match roll(shared, *next_seq) {
            Ok(file) => *active = file,
            Err(error) if is_disk_full(&error) => {
                refuse_full(shared, append.reply, format!("the disk is full: {error}"));
                return Ok(());
            }
            Err(error) => return Err(format!("cannot create a new segment: {error}")),
        }
    }
    let disk_bytes = shared.table.lock().expect("journal lock").bytes;
    if disk_bytes + pending.buf.len() as u64 + size > config.max_bytes {
        refuse_full(shared, append.reply, format!("maxBytes ({}) reached", config.max_bytes));
        return Ok(());
    }
    let time_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let first = *next_seq;
    for (bytes, item) in append.items {
        record::encode(&mut pending.buf, *next_seq, time_ms, &bytes);
        pending.items.push((*next_seq, time_ms, item, bytes.len()));
        *next_seq += 1;
    }
    pending.answers.push((append.reply, first..=*next_seq - 1));
    Ok(())
}

fn refuse_full<T>(shared: &Shared<T>, reply: Reply, reason: String) {
    shared.full.store(true, Ordering::Release);
    metrics::counter!("weir_journal_full_total").increment(1);
    let _ = reply.send(Err(AppendError::Full { reason }));
}

fn is_disk_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(28)
}

/// Writes and syncs the pending records, publishes them to consumers, answers their
/// requests. A full disk refuses them (the partial write is cut off again); any other write
/// error, and every sync error, is fatal.
fn commit<T>(
    shared: &Shared<T>,
    active: &mut dyn AppendFile,
    next_seq: &mut u64,
    pending: &mut Pending<T>,
) -> Result<(), String> {
    if pending.buf.is_empty() {
        for (reply, range) in pending.answers.drain(..) {
            let _ = reply.send(Ok(range));
        }
        pending.first = *next_seq;
        return Ok(());
    }
    let segment_len = shared
        .table
        .lock()
        .expect("journal lock")
        .segments
        .last()
        .map_or(0, |s| s.len);
    if let Err(error) = active.append(&pending.buf) {
        if !is_disk_full(&error) {
            return Err(format!("write failed: {error}"));
        }
        active
            .truncate(segment_len)
            .map_err(|cut| format!("the disk is full ({error}) and cutting the partial write failed: {cut}"))?;
        for (reply, _) in pending.answers.drain(..) {
            refuse_full(shared, reply, format!("the disk is full: {error}"));
        }
        pending.buf.clear();
        pending.items.clear();
        *next_seq = pending.first;
        return Ok(());
    }
    let started = Instant::now();
    active
        .sync_data()
        .map_err(|error| format!("fdatasync failed: {error}"))?;
    metrics::histogram!("weir_journal_fsync_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("weir_journal_commit_events").record(pending.items.len() as f64);

    let written = pending.buf.len() as u64;
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared.written.fetch_add(written, Ordering::Relaxed);
    {
        let mut table = shared.table.lock().expect("journal lock");
        if let Some(segment) = table.segments.last_mut() {
            segment.len += written;
        }
        table.bytes += written;
        metrics::gauge!("weir_journal_bytes").set(table.bytes as f64);
    }
    let last = *next_seq - 1;
    shared.trim_resolved();
    {
        let mut cache = shared.cache.lock().expect("journal lock");
        for entry in pending.items.drain(..) {
            cache.bytes += entry.3;
            cache.entries.push_back(entry);
        }
        while cache.bytes > shared.config.cache_bytes {
            let Some(evicted) = cache.entries.pop_front() else {
                break;
            };
            cache.bytes -= evicted.3;
        }
    }
    shared.full.store(false, Ordering::Release);
    shared.committed.send_replace(last);
    for (reply, range) in pending.answers.drain(..) {
        let _ = reply.send(Ok(range));
    }
    pending.buf.clear();
    pending.first = *next_seq;
    Ok(())
}

/// Seals the active segment (its data is synced) and begins a new one, whose name is durable
/// before anything in it is acknowledged.
fn roll<T>(shared: &Shared<T>, base: u64) -> io::Result<Box<dyn AppendFile>> {
    let name = Shared::<T>::segment_name(base);
    let file = shared.storage.create(&name)?;
    let mut table = shared.table.lock().expect("journal lock");
    table.segments.push(Segment { base, name, len: 0 });
    metrics::gauge!("weir_journal_segments").set(table.segments.len() as f64);
    Ok(file)
}

/// Scans the newest segment: its last good record's sequence number, where the good part
/// ends (the rest is a torn tail), and how many damaged regions lie before that end.
pub(super) fn recover_tail(
    storage: &dyn Storage,
    segment: &Segment,
    max_payload: usize,
) -> Result<(Option<u64>, u64, u64), JournalError> {
    let buf: Bytes = storage
        .read(&segment.name)
        .map_err(io_error(format!("reading {}", segment.name)))?
        .into();
    let (mut at, mut good, mut last) = (0, 0, None::<u64>);
    let (mut damage_starts, mut in_damage) = (Vec::new(), false);
    loop {
        match record::scan(&buf, at, max_payload) {
            Scan::Record(found) if found.seq >= segment.base && last.is_none_or(|seq| found.seq > seq) => {
                last = Some(found.seq);
                at = found.end;
                good = found.end;
                in_damage = false;
            }
            Scan::End => break,
            // A record out of order, damage, or a record cut by the end of the file.
            _ => {
                if !in_damage {
                    damage_starts.push(at);
                    in_damage = true;
                }
                at = record::resync(&buf, at + 1);
            }
        }
    }
    let damaged = damage_starts.iter().filter(|&&start| start < good).count() as u64;
    if damaged > 0 {
        metrics::counter!("weir_journal_corrupt_records_total").increment(damaged);
        tracing::warn!(segment = %segment.name, regions = damaged, "journal: damaged records in the newest segment skipped");
    }
    Ok((last, good as u64, damaged))
}
