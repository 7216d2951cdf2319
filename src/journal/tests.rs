//! The journal against a storage that crashes, fills up and fails: every acknowledged record
//! survives, nothing is invented, order holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::storage::faulty::Faulty;
use super::*;

fn config() -> JournalConfig {
    JournalConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        cache_bytes: 1 << 16,
        persist_every: Duration::from_millis(5),
    }
}

fn open(storage: &Faulty, config: JournalConfig) -> (Journal<String>, Recovered) {
    Journal::open(Arc::new(storage.clone()), config).expect("journal opens")
}

fn item(text: &str) -> (Bytes, Arc<String>) {
    (Bytes::copy_from_slice(text.as_bytes()), Arc::new(text.to_owned()))
}

fn text(record: &Record<String>) -> String {
    match &record.body {
        Body::Memory(item) => (**item).clone(),
        Body::Disk(bytes) => String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

/// Reads until the consumer has everything committed (bounded in time).
async fn read_all(journal: &Journal<String>, consumer: &mut Consumer<String>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut last = consumer.next - 1;
    while last < journal.committed() {
        let records = tokio::time::timeout(Duration::from_secs(5), consumer.read(100))
            .await
            .expect("committed records are readable")
            .expect("reading works");
        for record in &records {
            out.push((record.seq, text(record)));
            last = record.seq;
        }
    }
    out
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn appends_are_read_in_order_resumed_after_a_restart_and_passed_segments_go() {
    let storage = Faulty::new(1);
    let (journal, recovered) = open(&storage, config());
    assert_eq!(recovered.last_seq, 0);
    let mut consumer = journal.consumer("events").unwrap();
    journal.consumers_opened();
    let mut appended = Vec::new();
    for group in 0..40 {
        let items: Vec<_> = (0..5)
            .map(|i| item(&format!("event {group}-{i} {}", "x".repeat(60))))
            .collect();
        appended.extend(items.iter().map(|(_, text)| (**text).clone()));
        let range = journal.append(items).await.unwrap();
        assert_eq!(range, group * 5 + 1..=group * 5 + 5);
    }
    let read = read_all(&journal, &mut consumer).await;
    assert_eq!(read.iter().map(|(_, text)| text.clone()).collect::<Vec<_>>(), appended);
    assert!(journal.size().0 > 3, "4 KiB segments roll: {:?}", journal.size());

    // Half resolved, out of order; the cursor passes only the contiguous prefix.
    let handle = consumer.handle();
    for seq in (1..=100).rev() {
        handle.resolve(seq);
    }
    handle.resolve(150);
    assert_eq!(handle.acked(), 100);
    let before = journal.size();
    eventually("passed segments are removed", || journal.size().0 < before.0).await;
    drop(consumer);
    journal.close();

    // A restart resumes after the persisted cursor, from disk.
    let (journal, recovered) = open(&storage, config());
    assert_eq!(recovered.last_seq, 200);
    assert_eq!(recovered.truncated_bytes, 0);
    let mut consumer = journal.consumer("events").unwrap();
    let read = read_all(&journal, &mut consumer).await;
    assert_eq!(read.first().map(|(seq, _)| *seq), Some(101));
    assert_eq!(read.len(), 100);
    assert_eq!(read.last().unwrap().1, appended[199]);

    // A consumer seen for the first time starts at the end; appends go on from 201.
    let mut late = journal.consumer("late").unwrap();
    let range = journal.append(vec![item("after restart")]).await.unwrap();
    assert_eq!(range, 201..=201);
    assert_eq!(
        read_all(&journal, &mut late).await,
        vec![(201, "after restart".to_owned())]
    );
}

fn cached_seqs(journal: &Journal<String>) -> (Vec<u64>, usize) {
    let cache = journal.shared.cache.lock().unwrap();
    (cache.entries.iter().map(|entry| entry.0).collect(), cache.bytes)
}

/// The memory cache holds records some open consumer has not resolved yet, and nothing
/// every consumer is done with (once every consumer is open).
#[tokio::test]
async fn records_every_consumer_resolved_leave_the_memory_cache() {
    let storage = Faulty::new(3);
    let (journal, _) = open(&storage, config());
    let mut fast = journal.consumer("fast").unwrap();
    let mut slow = journal.consumer("slow").unwrap();
    let texts: Vec<String> = (1..=10).map(|i| format!("event {i}")).collect();
    journal
        .append(texts.iter().map(|text| item(text)).collect())
        .await
        .unwrap();
    assert_eq!(read_all(&journal, &mut fast).await.len(), 10);
    assert_eq!(read_all(&journal, &mut slow).await.len(), 10);
    for seq in 1..=10 {
        fast.handle().resolve(seq);
    }
    for seq in 1..=5 {
        slow.handle().resolve(seq);
    }
    // Not every consumer is open yet: a consumer still to come may need any of them.
    journal.append(vec![item("event 11")]).await.unwrap();
    assert_eq!(cached_seqs(&journal).0, (1..=11).collect::<Vec<_>>());

    journal.consumers_opened();
    journal.append(vec![item("event 12")]).await.unwrap();
    // Trimmed at the commit, or (if the keeper held the consumer list then) at the keeper's
    // next round, 5 ms on.
    eventually("the commit or the keeper trims", || {
        cached_seqs(&journal).0.first() == Some(&6)
    })
    .await;
    let (seqs, bytes) = cached_seqs(&journal);
    assert_eq!(seqs, (6..=12).collect::<Vec<_>>(), "the slow consumer resolved up to 5");
    let expected: usize = (6..=12).map(|i| format!("event {i}").len()).sum();
    assert_eq!(bytes, expected, "the cache's byte count follows what it holds");

    // Without further appends the keeper trims too.
    read_all(&journal, &mut fast).await;
    read_all(&journal, &mut slow).await;
    for seq in 6..=12 {
        slow.handle().resolve(seq);
    }
    for seq in 11..=12 {
        fast.handle().resolve(seq);
    }
    eventually("the keeper drops what both resolved", || {
        cached_seqs(&journal) == (Vec::new(), 0)
    })
    .await;

    // What a reopened consumer reads next is still served from memory.
    drop(slow);
    let mut slow = journal.reopen_consumer("slow").unwrap();
    journal.append(vec![item("event 13")]).await.unwrap();
    let records = slow.read(10).await.unwrap();
    assert_eq!(records.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![13]);
    assert!(
        matches!(records[0].body, Body::Memory(_)),
        "read from memory, not from disk"
    );
}

/// A reload hands a consumer to a new reader: it continues from the resolved prefix, the
/// segments it needs stay meanwhile; a closed consumer holds nothing back any more.
#[tokio::test]
async fn a_consumer_is_handed_over_and_a_closed_one_holds_nothing_back() {
    let storage = Faulty::new(1);
    let (journal, _) = open(&storage, config());
    let mut events = journal.consumer("events").unwrap();
    let removed = journal.consumer("removed").unwrap();
    journal.consumers_opened();
    for group in 0..20 {
        let items: Vec<_> = (0..5)
            .map(|i| item(&format!("event {group}-{i} {}", "x".repeat(60))))
            .collect();
        journal.append(items).await.unwrap();
    }
    assert_eq!(read_all(&journal, &mut events).await.len(), 100);
    let handle = events.handle();
    for seq in 1..=40 {
        handle.resolve(seq);
    }
    handle.resolve(60);
    drop(events);

    let mut handed = journal.reopen_consumer("events").unwrap();
    let read = read_all(&journal, &mut handed).await;
    assert_eq!(read.first().map(|(seq, _)| *seq), Some(41), "from the resolved prefix");
    assert_eq!(read.len(), 60);
    // The removed consumer resolved nothing: while open it kept every segment.
    let segments = journal.size().0;
    let handle = handed.handle();
    for seq in 41..=100 {
        handle.resolve(seq);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(journal.size().0, segments, "the removed consumer still holds them");
    drop(removed);
    journal.close_consumer("removed").unwrap();
    eventually("a closed consumer holds nothing back", || journal.size().0 < segments).await;
}

#[tokio::test]
async fn max_bytes_refuses_appends_until_consumers_drain() {
    let storage = Faulty::new(2);
    let config = JournalConfig {
        max_bytes: 8192,
        segment_bytes: 2048,
        ..config()
    };
    let (journal, _) = open(&storage, config);
    let mut consumer = journal.consumer("events").unwrap();
    journal.consumers_opened();
    let payload = "y".repeat(200);
    let mut accepted = 0;
    let refused = loop {
        match journal.append(vec![item(&payload)]).await {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 100, "maxBytes never refused");
    };
    assert!(matches!(refused, AppendError::Full { .. }), "{refused}");
    assert!(journal.is_full());
    assert!(journal.size().1 <= 8192, "{:?}", journal.size());

    let read = read_all(&journal, &mut consumer).await;
    assert_eq!(read.len(), accepted);
    for (seq, _) in &read {
        consumer.handle().resolve(*seq);
    }
    eventually("segments are removed", || !journal.is_full()).await;
    journal.append(vec![item(&payload)]).await.expect("accepted again");
}

#[tokio::test]
async fn a_full_disk_refuses_the_group_and_cuts_its_partial_write() {
    let storage = Faulty::new(3);
    let (journal, _) = open(&storage, config());
    let mut consumer = journal.consumer("events").unwrap();
    journal.append(vec![item("first")]).await.unwrap();
    storage.space(Some(10));
    let refused = journal.append(vec![item("does not fit")]).await.unwrap_err();
    assert!(matches!(refused, AppendError::Full { .. }), "{refused}");
    storage.space(None);
    let range = journal.append(vec![item("second")]).await.unwrap();
    assert_eq!(range, 2..=2, "the refused record's number is reused");
    assert_eq!(
        read_all(&journal, &mut consumer).await,
        vec![(1, "first".to_owned()), (2, "second".to_owned())]
    );
    drop(consumer);
    journal.close();
    let (_, recovered) = open(&storage, config());
    assert_eq!(recovered.truncated_bytes, 0, "the partial write was cut at once");
    assert_eq!(recovered.last_seq, 2);
}

#[tokio::test]
async fn a_failed_fdatasync_stops_the_journal_for_good() {
    let storage = Faulty::new(4);
    let (journal, _) = open(&storage, config());
    journal.append(vec![item("kept")]).await.unwrap();
    storage.fail_sync(true);
    let error = journal.append(vec![item("lost?")]).await.unwrap_err();
    assert!(matches!(error, AppendError::Stopped { .. }), "{error}");
    assert!(journal.fatal().is_cancelled());
    assert!(journal.fatal_reason().unwrap().contains("fdatasync failed"));
    storage.fail_sync(false);
    let error = journal.append(vec![item("later")]).await.unwrap_err();
    assert!(
        matches!(error, AppendError::Stopped { .. }),
        "no retried fsync: {error}"
    );
}

#[tokio::test]
async fn a_flipped_bit_in_a_sealed_segment_skips_one_record_and_a_torn_cursor_replays() {
    let storage = Faulty::new(5);
    let (journal, _) = open(&storage, config());
    // No `consumers_opened`: nothing is removed, so the replay can reach record 1.
    let mut consumer = journal.consumer("events").unwrap();
    for i in 0..60 {
        journal
            .append(vec![item(&format!("record {i:02} {}", "z".repeat(100)))])
            .await
            .unwrap();
    }
    for (seq, _) in read_all(&journal, &mut consumer).await.iter().take(30) {
        consumer.handle().resolve(*seq);
    }
    let cursor_file = cursor::file_name("events");
    eventually("the cursor is saved", || {
        cursor::load(&storage, &cursor_file).is_some_and(|saved| saved.acked == 30)
    })
    .await;
    drop(consumer);
    journal.close();
    // Damage the first (sealed) segment's third record, and tear the cursor file.
    let first = Shared::<String>::segment_name(1);
    let record_len = record::HEADER + "record 00 ".len() + 100;
    storage.flip_bit(&first, 2 * record_len + record::HEADER + 5, 3);
    storage.put(&cursor_file, b"wjc1\x01\x02");

    let (journal, _) = open(&storage, config());
    let mut consumer = journal.consumer("events").unwrap();
    let read = read_all(&journal, &mut consumer).await;
    let seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=60).filter(|&seq| seq != 3).collect();
    assert_eq!(
        seqs, expected,
        "replayed from the oldest record, the damaged one skipped"
    );
    assert!(
        read.iter()
            .all(|(seq, text)| text.starts_with(&format!("record {:02}", seq - 1)))
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_at_recovery() {
    let storage = Faulty::new(6);
    let (journal, _) = open(&storage, config());
    journal.append(vec![item("one"), item("two")]).await.unwrap();
    journal.close();
    let name = Shared::<String>::segment_name(1);
    let mut content = storage.content(&name).unwrap();
    let good = content.len();
    let mut torn = Vec::new();
    record::encode(&mut torn, 3, 0, b"three, half written");
    content.extend_from_slice(&torn[..torn.len() / 2]);
    storage.put(&name, &content);
    let (journal, recovered) = open(&storage, config());
    assert_eq!(recovered.truncated_bytes, (torn.len() / 2) as u64);
    assert_eq!(recovered.last_seq, 2);
    assert_eq!(storage.content(&name).unwrap().len(), good);
    assert_eq!(journal.append(vec![item("three")]).await.unwrap(), 3..=3);
}

#[tokio::test]
async fn status_reads_lag_and_age_from_the_files_while_the_journal_runs() {
    let storage = Faulty::new(7);
    let (journal, _) = open(&storage, config());
    let mut fast = journal.consumer("fast").unwrap();
    let _slow = journal.consumer("slow one").unwrap();
    journal.consumers_opened();
    for i in 0..50 {
        journal
            .append(vec![item(&format!("{i:02}{}", "w".repeat(98)))])
            .await
            .unwrap();
    }
    for (seq, _) in read_all(&journal, &mut fast).await {
        fast.handle().resolve(seq);
    }
    eventually("the fast cursor is saved", || {
        cursor::load(&storage, &cursor::file_name("fast")).is_some_and(|saved| saved.acked == 50)
    })
    .await;
    let status = status::inspect(&storage).unwrap();
    assert_eq!(status.last_seq, 50);
    assert_eq!(status.first_seq, 1, "the slow consumer holds every segment");
    assert_eq!(status.bytes, journal.size().1);
    let by_name: HashMap<&str, &status::ConsumerStatus> =
        status.consumers.iter().map(|c| (c.name.as_str(), c)).collect();
    let (fast, slow) = (by_name["fast"], by_name["slow one"]);
    assert_eq!(
        (fast.cursor, fast.lag_events, fast.lag_bytes, fast.oldest_ms),
        (Some(50), 0, 0, None)
    );
    assert_eq!((slow.cursor, slow.lag_events), (Some(0), 50));
    assert_eq!(slow.lag_bytes, 50 * (record::HEADER as u64 + 100));
    assert!(slow.oldest_ms.is_some());
}

/// One round of the property: appends racing a crash, a consumer resolving part of what it
/// read, then the crash.
#[derive(Debug, Clone)]
struct Round {
    appends: Vec<(usize, usize)>,
    /// Which of the records read the consumer resolves (in any order: out of order too).
    resolve: Vec<bool>,
    crash_after: u64,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec((1usize..6, 0usize..300), 1..12),
        prop::collection::vec(any::<bool>(), 0..40),
        0u64..60,
    )
        .prop_map(|(appends, resolve, crash_after)| Round {
            appends,
            resolve,
            crash_after,
        })
}

fn check_crash_rounds(seed: u64, rounds: Vec<Round>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let storage = Faulty::new(seed);
        let config = JournalConfig {
            segment_bytes: 1024,
            ..config()
        };
        // Every payload appended (acknowledged or not), and the acknowledged ones by number.
        let mut appended: HashMap<String, Option<u64>> = HashMap::new();
        let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
        // Acknowledged records the consumer has not resolved: the cursor must never pass them.
        let mut unresolved: BTreeMap<u64, String> = BTreeMap::new();
        for (number, round) in rounds.iter().enumerate() {
            let (journal, _) = open(&storage, config);
            let journal = Arc::new(journal);
            let mut consumer = journal.consumer("c").unwrap();
            journal.consumers_opened();
            let start = consumer.next;

            // What survived: in order, nothing invented, every acknowledged record from the
            // consumer's start on.
            let read = read_all(&journal, &mut consumer).await;
            assert!(read.windows(2).all(|w| w[0].0 < w[1].0), "order holds: {read:?}");
            for (seq, text) in &read {
                match appended.get(text) {
                    None => panic!("record {seq} {text:?} was never appended"),
                    Some(Some(acked)) => assert_eq!(acked, seq, "{text} kept its number"),
                    Some(None) => {}
                }
            }
            let present: std::collections::HashSet<u64> = read.iter().map(|(seq, _)| *seq).collect();
            for (seq, text) in acknowledged.range(start..) {
                assert!(
                    present.contains(seq),
                    "acknowledged record {seq} {text:?} lost (round {number})"
                );
            }
            if let Some((seq, text)) = unresolved.range(..start).next() {
                panic!("the cursor passed unresolved record {seq} {text:?}");
            }
            unresolved = acknowledged.range(start..).map(|(s, t)| (*s, t.clone())).collect();

            // The consumer resolves some of what it read, last first.
            let handle = consumer.handle();
            for ((seq, _), _) in read.iter().zip(&round.resolve).filter(|(_, resolve)| **resolve).rev() {
                handle.resolve(*seq);
                unresolved.remove(seq);
            }
            let acked = handle.acked();
            eventually("the cursor is saved", || {
                cursor::load(&storage, &cursor::file_name("c")).is_some_and(|saved| saved.acked == acked)
            })
            .await;

            storage.crash_after(round.crash_after);
            let mut tasks = Vec::new();
            for (i, &(count, size)) in round.appends.iter().enumerate() {
                let items: Vec<_> = (0..count)
                    .map(|j| item(&format!("{number}.{i}.{j}:{}", "p".repeat(size))))
                    .collect();
                for (_, text) in &items {
                    appended.insert((**text).clone(), None);
                }
                let texts: Vec<String> = items.iter().map(|(_, text)| (**text).clone()).collect();
                let journal = journal.clone();
                tasks.push(tokio::spawn(async move { (texts, journal.append(items).await) }));
            }
            for task in tasks {
                let (texts, result) = task.await.unwrap();
                if let Ok(range) = result {
                    for (seq, text) in range.zip(texts) {
                        appended.insert(text.clone(), Some(seq));
                        acknowledged.insert(seq, text.clone());
                        unresolved.insert(seq, text);
                    }
                }
            }
            storage.crash();
            drop(consumer);
            journal.close();
            storage.restart();
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_records_survive_any_crash(seed in any::<u64>(), rounds in prop::collection::vec(round(), 1..6)) {
        check_crash_rounds(seed, rounds);
    }
}
