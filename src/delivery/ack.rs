//! End-to-end acknowledgements: a source learns, per event, what became of it at every
//! destination.
//!
//! A source creates one [`AckSet`] for the events of one request (or one stream read) and
//! hands an [`AckToken`] to every destination an event is queued for. Each token resolves
//! exactly once: delivered, dead-lettered, or failed. A token dropped without being resolved
//! (a worker torn down mid-flight) resolves itself as failed, so no path can leave a source
//! waiting forever or report an event as delivered that was not. When the last token of the
//! set resolves, the waiting source is woken with every event's outcome.
//!
//! A token for an event kept in the journal also carries the journal cursor of its
//! destination: delivered or dead-lettered, it lets the cursor pass the record; dropped
//! unresolved (a shutdown, an outage outlasting the process), it resolves as
//! [`Delivery::Held`] — the record stays in the journal and is delivered after a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::journal::CursorHandle;

/// What a destination finally did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The destination confirmed it (XADD reply, broker delivery report, 2xx, write done).
    Delivered,
    /// Retries were exhausted or the error was fatal; the event is in the dead-letter sink.
    DeadLettered { destination: Arc<str>, reason: String },
    /// Neither delivered nor dead-lettered (the dead-letter write itself failed, or the
    /// process stopped before it could do either). Always logged and counted.
    Failed { destination: Arc<str>, reason: String },
    /// Not delivered yet, and safe: the event stays in the journal and is delivered after
    /// a restart.
    Held { destination: Arc<str> },
}

/// Outcome of one event across all destinations, as the source sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventOutcome {
    /// Problems, one per destination that did not deliver; empty means every destination
    /// delivered the event or deliberately did not take it (ignored, consent, skipped).
    pub problems: Vec<String>,
    /// A destination neither delivered nor dead-lettered it: the event is not safe anywhere.
    pub failed: bool,
    /// A destination holds it in the journal, delivery not confirmed yet (not a problem).
    pub held: bool,
}

impl EventOutcome {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every destination delivered it or holds it in its dead-letter sink: a stream consumer
    /// may acknowledge the entry.
    pub fn is_accounted(&self) -> bool {
        !self.failed && !self.held
    }
}

struct AckState {
    /// Tokens not yet resolved, plus one held by the set until it is sealed.
    pending: AtomicUsize,
    outcomes: Mutex<Vec<EventOutcome>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl AckState {
    fn release(self: &Arc<Self>) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let sender = self.done.lock().expect("ack lock poisoned").take();
            if let Some(sender) = sender {
                let _ = sender.send(());
            }
        }
    }
}

/// The acknowledgements of one batch of events from a source.
pub struct AckSet {
    state: Arc<AckState>,
}

/// Resolves when every token of its [`AckSet`] has resolved and the set was sealed.
pub struct AckWait {
    state: Arc<AckState>,
    done: oneshot::Receiver<()>,
}

impl AckSet {
    /// A set for `events` events; outcomes are indexed by the event's position.
    pub fn new(events: usize) -> (AckSet, AckWait) {
        let (sender, receiver) = oneshot::channel();
        let state = Arc::new(AckState {
            pending: AtomicUsize::new(1),
            outcomes: Mutex::new(vec![EventOutcome::default(); events]),
            done: Mutex::new(Some(sender)),
        });
        (AckSet { state: state.clone() }, AckWait { state, done: receiver })
    }

    /// A token for event `index` at `destination`.
    pub fn token(&self, index: usize, destination: &Arc<str>) -> AckToken {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        AckToken {
            target: Some((self.state.clone(), index)),
            destination: Some(destination.clone()),
            journaled: false,
            cursor: None,
        }
    }

    /// No more tokens will be created; the wait can complete once the issued ones resolve.
    pub fn seal(self) {
        self.state.release();
    }
}

impl AckWait {
    /// Waits for every token and returns each event's outcome, in event order.
    pub async fn outcomes(self) -> Vec<EventOutcome> {
        // The sender lives in the shared state and is only taken by the last release, so the
        // receiver cannot observe a closed channel before completion.
        let _ = self.done.await;
        std::mem::take(&mut *self.state.outcomes.lock().expect("ack lock poisoned"))
    }
}

/// The acknowledgement owed for one event at one destination.
///
/// Tokens from [`AckToken::detached`] report to nobody (sources that answered before
/// delivery); the delivery machinery still counts and logs their outcome.
pub struct AckToken {
    target: Option<(Arc<AckState>, usize)>,
    destination: Option<Arc<str>>,
    /// The event is in the journal: dropped unresolved, it is held, not failed.
    journaled: bool,
    /// The journal record it stands for, and the cursor its outcome moves.
    cursor: Option<(CursorHandle, u64)>,
}

impl AckToken {
    pub fn detached() -> AckToken {
        AckToken {
            target: None,
            destination: None,
            journaled: false,
            cursor: None,
        }
    }

    /// This token's event is in the journal (it resolves as held when dropped).
    pub fn in_journal(mut self) -> AckToken {
        self.journaled = true;
        self
    }

    /// This token stands for journal record `seq`: delivered or dead-lettered, the cursor
    /// may pass it.
    pub fn for_record(mut self, cursor: CursorHandle, seq: u64) -> AckToken {
        self.journaled = true;
        self.cursor = Some((cursor, seq));
        self
    }

    /// Whether the event is in the journal: then an outage holds it instead of
    /// dead-lettering it.
    pub fn is_journaled(&self) -> bool {
        self.journaled
    }

    /// Gives up on delivering in this process: a journaled event is held (delivered after a
    /// restart), any other fails with `reason`.
    pub fn abandon(self, destination: &Arc<str>, reason: &str) {
        let delivery = if self.journaled {
            Delivery::Held {
                destination: destination.clone(),
            }
        } else {
            Delivery::Failed {
                destination: destination.clone(),
                reason: reason.to_owned(),
            }
        };
        self.resolve(delivery);
    }

    pub fn resolve(mut self, delivery: Delivery) {
        self.finish(delivery);
    }

    fn finish(&mut self, delivery: Delivery) {
        if let Some((cursor, seq)) = self.cursor.take()
            && matches!(delivery, Delivery::Delivered | Delivery::DeadLettered { .. })
        {
            cursor.resolve(seq);
        }
        let Some((state, index)) = self.target.take() else {
            return;
        };
        let failed = matches!(delivery, Delivery::Failed { .. });
        let held = matches!(delivery, Delivery::Held { .. });
        let problem = match delivery {
            Delivery::Delivered | Delivery::Held { .. } => None,
            Delivery::DeadLettered { destination, reason } => Some(format!(
                "destination \"{destination}\" dead-lettered the event: {reason}"
            )),
            Delivery::Failed { destination, reason } => {
                Some(format!("destination \"{destination}\" failed the event: {reason}"))
            }
        };
        if problem.is_some() || held {
            let mut outcomes = state.outcomes.lock().expect("ack lock poisoned");
            outcomes[index].failed |= failed;
            outcomes[index].held |= held;
            outcomes[index].problems.extend(problem);
        }
        state.release();
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if self.target.is_some() || self.cursor.is_some() {
            let destination = self.destination.take().unwrap_or_else(|| Arc::from("?"));
            self.finish(if self.journaled {
                Delivery::Held { destination }
            } else {
                Delivery::Failed {
                    destination,
                    reason: "the delivery was abandoned before it finished".to_owned(),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_completes_after_all_tokens_resolve_with_their_outcomes() {
        let (set, wait) = AckSet::new(3);
        let events: Arc<str> = Arc::from("events");
        let a = set.token(0, &events);
        let b = set.token(1, &events);
        let c = set.token(1, &events);
        set.seal();
        a.resolve(Delivery::Delivered);
        b.resolve(Delivery::Delivered);
        let waiter = tokio::spawn(wait.outcomes());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one token is still pending");
        c.resolve(Delivery::DeadLettered {
            destination: Arc::from("events"),
            reason: "WRONGTYPE".into(),
        });
        let outcomes = waiter.await.unwrap();
        assert!(outcomes[0].is_ok());
        assert_eq!(
            outcomes[1].problems,
            vec!["destination \"events\" dead-lettered the event: WRONGTYPE"]
        );
        assert!(outcomes[2].is_ok(), "no destination took event 2");
    }

    #[tokio::test]
    async fn a_dropped_token_counts_as_failed_never_as_delivered() {
        let (set, wait) = AckSet::new(1);
        let token = set.token(0, &Arc::from("events"));
        set.seal();
        drop(token);
        let outcomes = wait.outcomes().await;
        assert_eq!(
            outcomes[0].problems,
            vec!["destination \"events\" failed the event: the delivery was abandoned before it finished"]
        );
    }

    #[tokio::test]
    async fn a_dropped_journaled_token_is_held_and_leaves_the_cursor_where_it_was() {
        let (set, wait) = AckSet::new(1);
        let token = set.token(0, &Arc::from("events")).in_journal();
        assert!(token.is_journaled());
        set.seal();
        drop(token);
        let outcomes = wait.outcomes().await;
        assert!(outcomes[0].is_ok() && outcomes[0].held && !outcomes[0].is_accounted());
    }

    #[tokio::test]
    async fn a_set_without_tokens_completes_when_sealed() {
        let (set, wait) = AckSet::new(2);
        set.seal();
        assert_eq!(wait.outcomes().await.len(), 2);
    }
}
