//! The delivery machinery against a scripted destination: each `send` answers as the test's
//! script says, so retries, classification, partial failures, dead-lettering, batching and
//! backpressure can be checked exactly. (Destinations themselves are tested against the
//! real systems they talk to.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::ack::{AckSet, EventOutcome};
use super::dead_letter::DeadLetterSink;
use super::policy::{BatchPolicy, DeliveryPolicy, RetryPolicy};
use super::route::{self, PipelineConfig, Route};
use super::worker::{self, Lifecycle};
use super::{DeliveryDefaults, Destination, ErrorClass, RenderError, RenderInput, Rendered};
use crate::collector::Collector;
use crate::config::ConfigErrors;
use crate::config::flow::CollectorConfig;
use crate::event::Event;
use crate::mapping::DestinationMapping;
use crate::mapping::NoRuleSettings;

/// How one `send` call answers.
#[derive(Clone)]
enum Answer {
    AllOk,
    Batch(ErrorClass),
    /// Per event, in batch order: `None` = delivered.
    PerEvent(Vec<Option<ErrorClass>>),
    /// Never answers (until the shutdown deadline aborts it).
    Hang,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted {0:?} failure")]
struct ScriptedError(ErrorClass);

#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    /// The `data.n` of every event of every `send`, in call order.
    calls: Mutex<Vec<Vec<u64>>>,
}

impl Scripted {
    fn new(answers: Vec<Answer>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers.into()),
            calls: Mutex::default(),
        }
    }
}

impl Destination for Arc<Scripted> {
    type RuleSettings = NoRuleSettings;
    type Wire = u64;
    type Error = ScriptedError;
    const KIND: &'static str = "scripted";

    /// Built by each test with its script, never from a flow file.
    fn from_settings(_settings: Option<&Value>, path: &str, errors: &mut ConfigErrors) -> Option<Self> {
        errors.push(path, "the scripted destination is built by its test");
        None
    }

    fn delivery_defaults(&self) -> DeliveryDefaults {
        DeliveryDefaults::default()
    }

    async fn connect(&self) -> Result<(), ScriptedError> {
        Ok(())
    }

    fn render(&self, input: &RenderInput<'_, NoRuleSettings>) -> Result<Rendered<u64>, RenderError> {
        match input.event.tree()["data"].get("n").and_then(Value::as_u64) {
            Some(n) => Ok(Rendered::Send(n)),
            None => Err(RenderError::Missing { field: "data.n" }),
        }
    }

    fn explain(&self, wire: &u64) -> Value {
        json!(wire)
    }

    fn wire_size(&self, _: &u64) -> usize {
        8
    }

    async fn send(&self, batch: &[&u64]) -> Result<Vec<Result<(), ScriptedError>>, ScriptedError> {
        self.calls.lock().unwrap().push(batch.iter().map(|n| **n).collect());
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Answer::AllOk);
        match answer {
            Answer::AllOk => Ok(batch.iter().map(|_| Ok(())).collect()),
            Answer::Batch(class) => Err(ScriptedError(class)),
            Answer::PerEvent(results) => Ok(results
                .into_iter()
                .map(|r| r.map_or(Ok(()), |class| Err(ScriptedError(class))))
                .collect()),
            Answer::Hang => std::future::pending().await,
        }
    }

    fn classify(&self, error: &ScriptedError) -> ErrorClass {
        error.0
    }

    async fn shutdown(&self) -> Result<(), ScriptedError> {
        Ok(())
    }
}

struct Harness {
    scripted: Arc<Scripted>,
    pipeline: Arc<dyn Route>,
    collector: Collector,
    lifecycle: Lifecycle,
    worker: tokio::task::JoinHandle<worker::WorkerReport>,
    dlq: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn policy(batch: BatchPolicy, max_retries: u32, queue_max: usize) -> DeliveryPolicy {
    DeliveryPolicy {
        batch,
        retry: RetryPolicy {
            max_retries,
            retry_delay: Duration::from_millis(1),
            max_retry_delay: Duration::from_millis(5),
        },
        timeout: Duration::from_secs(10),
        queue_max,
        concurrency: 1,
    }
}

fn harness(answers: Vec<Answer>, delivery: DeliveryPolicy) -> Harness {
    harness_with_mapping(answers, delivery, json!({}))
}

/// A harness whose destination has the mapping `config` (rules with their own `batch` get
/// their own buffers, as the flow-file wiring gives them).
fn harness_with_mapping(answers: Vec<Answer>, delivery: DeliveryPolicy, config: Value) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let scripted = Arc::new(Scripted::new(answers));
    let mut errors = ConfigErrors::default();
    let mut rule_batches = Vec::new();
    let mapping = DestinationMapping::<NoRuleSettings>::from_config(
        config.as_object().unwrap(),
        "config",
        &mut errors,
        &mut |spec| {
            rule_batches.push(spec.policy(None));
            rule_batches.len()
        },
    )
    .unwrap();
    let (pipeline, worker) = route::build(
        scripted.clone(),
        PipelineConfig {
            id: "scripted".into(),
            mapping,
            sources: None,
            rule_batches,
            delivery,
            dead_letters: DeadLetterSink::file(&dlq),
        },
    );
    let lifecycle = Lifecycle::default();
    let worker = tokio::spawn(worker.run(lifecycle.clone()));
    Harness {
        scripted,
        pipeline: Arc::new(pipeline),
        collector: Collector::new(&CollectorConfig::default()),
        lifecycle,
        worker,
        dlq,
        _dir: dir,
    }
}

impl Harness {
    fn events(&self, numbers: &[u64]) -> Vec<(usize, Arc<Event>)> {
        numbers
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    i,
                    Arc::new(self.collector.enrich(json!({"name": "a b", "data": {"n": n}})).unwrap()),
                )
            })
            .collect()
    }

    /// Queues the events and waits for their outcomes.
    async fn deliver(&self, numbers: &[u64]) -> Vec<EventOutcome> {
        let events = self.events(numbers);
        let (acks, wait) = AckSet::new(events.len());
        let mut staged = self.pipeline.stage(&events, &self.collector);
        staged.reserve().unwrap();
        staged.commit(&mut Some(&acks));
        acks.seal();
        wait.outcomes().await
    }

    fn dead_letters(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.dlq)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        self.scripted.calls.lock().unwrap().clone()
    }

    async fn stop(self) -> worker::WorkerReport {
        self.lifecycle.drain.cancel();
        self.worker.await.unwrap()
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_until_delivered() {
    let h = harness(
        vec![
            Answer::Batch(ErrorClass::Retryable),
            Answer::Batch(ErrorClass::Retryable),
        ],
        policy(BatchPolicy::immediate(100), 5, 100),
    );
    let outcomes = h.deliver(&[1, 2]).await;
    assert!(outcomes.iter().all(EventOutcome::is_ok), "{outcomes:?}");
    assert_eq!(h.calls(), vec![vec![1, 2], vec![1, 2], vec![1, 2]]);
    assert!(h.dead_letters().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn fatal_errors_are_dead_lettered_at_once_with_reason_and_attempts() {
    let h = harness(
        vec![Answer::Batch(ErrorClass::Fatal)],
        policy(BatchPolicy::immediate(100), 5, 100),
    );
    let outcomes = h.deliver(&[7]).await;
    assert_eq!(
        outcomes[0].problems,
        vec!["destination \"scripted\" dead-lettered the event: scripted Fatal failure"]
    );
    assert_eq!(h.calls().len(), 1, "a fatal error is not retried");
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["destination"], "scripted");
    assert_eq!(letters[0]["reason"], "scripted Fatal failure");
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["event"]["data"], json!({"n": 7}));
    assert!(letters[0]["time"].as_str().unwrap().ends_with('Z'));
    h.stop().await;
}

#[tokio::test]
async fn exhausted_retries_are_dead_lettered_saying_so() {
    let h = harness(
        vec![Answer::Batch(ErrorClass::Retryable); 10],
        policy(BatchPolicy::immediate(100), 2, 100),
    );
    let outcomes = h.deliver(&[1]).await;
    assert!(!outcomes[0].is_ok());
    assert_eq!(h.calls().len(), 3, "first attempt plus maxRetries = 2");
    let letters = h.dead_letters();
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(
        letters[0]["reason"],
        "gave up after 3 attempts: scripted Retryable failure"
    );
    h.stop().await;
}

#[tokio::test]
async fn only_the_failed_events_of_a_batch_are_retried_or_dead_lettered() {
    let h = harness(
        vec![Answer::PerEvent(vec![
            None,
            Some(ErrorClass::Retryable),
            Some(ErrorClass::Fatal),
        ])],
        policy(BatchPolicy::immediate(100), 3, 100),
    );
    let outcomes = h.deliver(&[1, 2, 3]).await;
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    assert!(!outcomes[2].is_ok());
    assert_eq!(h.calls(), vec![vec![1, 2, 3], vec![2]]);
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event"]["data"]["n"], 3);
    h.stop().await;
}

#[tokio::test]
async fn an_event_that_cannot_be_rendered_is_dead_lettered_not_dropped() {
    let h = harness(vec![], policy(BatchPolicy::immediate(100), 3, 100));
    let events = vec![(0, Arc::new(h.collector.enrich(json!({"name": "a b"})).unwrap()))];
    let (acks, wait) = AckSet::new(1);
    let mut staged = h.pipeline.stage(&events, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut Some(&acks));
    acks.seal();
    assert!(!wait.outcomes().await[0].is_ok());
    assert_eq!(h.dead_letters()[0]["reason"], "cannot render: data.n is missing");
    assert!(h.calls().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_batch_and_queues_nothing() {
    // The first send hangs, so the worker holds one batch and the queue fills up behind it.
    let h = harness(vec![Answer::Hang], policy(BatchPolicy::immediate(1), 0, 3));
    let first = h.events(&[1]);
    let mut staged = h.pipeline.stage(&first, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut None::<&AckSet>);
    // Wait until the worker has taken the first event off the queue.
    while h.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fits = h.events(&[2, 3, 4]);
    let mut staged = h.pipeline.stage(&fits, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut None::<&AckSet>);
    let too_many = h.events(&[5]);
    let mut staged = h.pipeline.stage(&too_many, &h.collector);
    let full = staged.reserve().unwrap_err();
    assert_eq!(full.to_string(), "destination \"scripted\" queue is full (3 events)");
    drop(staged);
    // Shutdown with an immediate deadline: everything still owed is dead-lettered.
    h.lifecycle.abort.cancel();
    let report = h.stop_now().await;
    assert_eq!(report.dead_lettered_at_shutdown, 4);
}

impl Harness {
    async fn stop_now(self) -> worker::WorkerReport {
        self.lifecycle.drain.cancel();
        let report = self.worker.await.unwrap();
        let letters: Vec<Value> = std::fs::read_to_string(&self.dlq)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut numbers: Vec<u64> = letters
            .iter()
            .map(|l| l["event"]["data"]["n"].as_u64().unwrap())
            .collect();
        numbers.sort();
        assert_eq!(numbers, vec![1, 2, 3, 4], "nothing queued is lost at shutdown");
        assert!(
            letters
                .iter()
                .all(|l| l["reason"].as_str().unwrap().starts_with("shutdown deadline"))
        );
        report
    }
}

#[tokio::test]
async fn batches_fill_up_to_size_and_wait_for_stragglers() {
    let linger = BatchPolicy {
        size: 3,
        max_bytes: None,
        wait: Duration::from_millis(300),
        age: Duration::from_secs(30),
    };
    let h = harness(vec![], policy(linger, 0, 100));
    let first = h.events(&[1, 2, 3, 4]);
    let mut staged = h.pipeline.stage(&first, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut None::<&AckSet>);
    // Size 3 flushes at once; the fourth waits for `wait` to pass.
    while h.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(h.calls(), vec![vec![1, 2, 3]]);
    let more = h.events(&[5]);
    let mut staged = h.pipeline.stage(&more, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut None::<&AckSet>);
    while h.calls().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.calls(), vec![vec![1, 2, 3], vec![4, 5]]);
    h.stop().await;
}

#[tokio::test]
async fn draining_flushes_buffers_that_would_otherwise_wait() {
    let linger = BatchPolicy {
        size: 100,
        max_bytes: None,
        wait: Duration::from_secs(60),
        age: Duration::from_secs(60),
    };
    let h = harness(vec![], policy(linger, 0, 100));
    let events = h.events(&[1, 2]);
    let (acks, wait) = AckSet::new(2);
    let mut staged = h.pipeline.stage(&events, &h.collector);
    staged.reserve().unwrap();
    staged.commit(&mut Some(&acks));
    acks.seal();
    let waiter = tokio::spawn(wait.outcomes());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(h.calls().is_empty(), "lingering for the batch to fill");
    h.lifecycle.drain.cancel();
    let outcomes = waiter.await.unwrap();
    assert!(outcomes.iter().all(EventOutcome::is_ok));
    assert_eq!(h.calls(), vec![vec![1, 2]]);
    let report = h.worker.await.unwrap();
    assert_eq!(report.dead_lettered_at_shutdown, 0);
}

/// A rule with its own `batch` gets its own buffer (walkerOS keys buffers by rule), so its
/// events wait for their batch while the others go out at once.
#[tokio::test]
async fn a_rule_with_its_own_batch_gets_its_own_buffer() {
    let h = harness_with_mapping(
        vec![],
        policy(BatchPolicy::immediate(100), 0, 100),
        json!({"mapping": {"order": {"complete": {"batch": {"size": 2, "wait": 60000}}}}}),
    );
    let event = |name: &str, n: u64| Arc::new(h.collector.enrich(json!({"name": name, "data": {"n": n}})).unwrap());
    let queue = |events: Vec<(usize, Arc<Event>)>| {
        let mut staged = h.pipeline.stage(&events, &h.collector);
        staged.reserve().unwrap();
        staged.commit(&mut None::<&AckSet>);
    };
    queue(vec![(0, event("order complete", 1)), (1, event("page view", 2))]);
    while h.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        h.calls(),
        vec![vec![2]],
        "the page view goes at once; the order waits for its batch"
    );
    queue(vec![(0, event("order complete", 3))]);
    while h.calls().len() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(h.calls(), vec![vec![2], vec![1, 3]]);
    h.stop().await;
}
