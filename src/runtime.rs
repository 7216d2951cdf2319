//! A running flow as its sources see it: the collector plus every destination's route, and
//! the one operation sources need — hand over a batch of events and (optionally) learn what
//! became of each. It knows no source or destination type: the assembly builds those and
//! hands each source an `Arc<Runtime>`.
//!
//! Dispatch is all-or-nothing per batch: events are mapped and rendered for every
//! destination first, then room is reserved in every destination's queue, and only when
//! all reservations succeed is anything queued. A full queue therefore rejects the batch as
//! a whole (the HTTP source answers 503) and never delivers half of it.
//!
//! With a journal, [`Runtime::journal`] is how a durable source hands events over: they go
//! to the destinations that are not journaled as above, and are appended to the journal for
//! the rest (each reads it through its own feed); the call returns once the append is on
//! disk.
//!
//! The collector and the routes are one [`Generation`], replaced whole by a reload
//! ([`Runtime::replace`]): each dispatch takes the generation current when it starts and
//! keeps it to the end, so a batch goes to one flow's destinations, never half to each;
//! [`Runtime::settled`] tells when no dispatch holds an old generation any more.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use serde_json::Value;

use crate::collector::Collector;
use crate::delivery::ack::AckSet;
use crate::delivery::feed::Journaled;
use crate::delivery::route::{Explained, FromSource, QueueFull, Route};
use crate::event::Event;
use crate::journal::{AppendError, Journal};

/// Why events were not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The journal is full (`maxBytes` or the disk), or stopped: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// One event is larger than a journal segment.
    #[error("{0}")]
    TooLarge(String),
}

/// Paths weir itself serves on every HTTP listener (health, readiness, metrics; `/health` and
/// `/ready` are walkerOS's runner's names for the first two). Here, below the sources and the
/// assembly, because the HTTP source keeps its collect paths off them and the assembly serves
/// them.
pub const PROCESS_PATHS: [&str; 5] = ["/healthz", "/readyz", "/health", "/ready", "/metrics"];

pub struct Runtime {
    current: ArcSwap<Generation>,
    journal: OnceLock<Arc<Journal<Journaled>>>,
}

/// The collector and the destinations' routes of one version of the flow.
pub struct Generation {
    pub collector: Arc<Collector>,
    pub routes: Vec<Arc<dyn Route>>,
}

/// One line of `weir explain`: what happens to one event at one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainLine {
    pub destination: String,
    pub explained: Explained,
}

impl Runtime {
    pub fn new(collector: Collector, routes: Vec<Arc<dyn Route>>) -> Runtime {
        Runtime {
            current: ArcSwap::from_pointee(Generation {
                collector: Arc::new(collector),
                routes,
            }),
            journal: OnceLock::new(),
        }
    }

    /// The collector events are completed with now.
    pub fn collector(&self) -> Arc<Collector> {
        self.current.load().collector.clone()
    }

    /// Makes `next` the generation every dispatch from now on goes by; returns the one it
    /// replaces.
    pub fn replace(&self, next: Generation) -> Arc<Generation> {
        self.current.swap(Arc::new(next))
    }

    /// Waits until no dispatch holds `old` any more (the caller's own reference aside).
    pub async fn settled(old: &Arc<Generation>) {
        while Arc::strong_count(old) > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The journal journaled destinations read from (set once, before sources start).
    pub fn attach_journal(&self, journal: Arc<Journal<Journaled>>) {
        if self.journal.set(journal).is_err() {
            panic!("a runtime has one journal");
        }
    }

    pub fn has_journal(&self) -> bool {
        self.journal.get().is_some()
    }

    /// The current generation's routes.
    pub fn routes(&self) -> Vec<Arc<dyn Route>> {
        self.current.load().routes.clone()
    }

    /// Queues `events` (each with its index in the source's batch) at every destination
    /// that takes `source`. With `acks`, each queued event gets a token in the set.
    pub fn dispatch(
        &self,
        source: &str,
        events: &[(usize, Arc<Event>)],
        acks: Option<&AckSet>,
    ) -> Result<(), QueueFull> {
        // A guard, not a counted reference: a swap turns it into one before it returns, so
        // `settled` still sees this dispatch.
        let generation = self.current.load();
        let mut staged = Vec::with_capacity(generation.routes.len());
        for route in generation.routes.iter().filter(|route| route.takes_source(source)) {
            staged.push(route.stage(events, &generation.collector));
        }
        for stage in &mut staged {
            stage.reserve()?;
        }
        let mut tokens = FromSource::new(acks, source);
        for stage in staged {
            stage.commit(&mut tokens);
        }
        Ok(())
    }

    /// Hands `events` over durably: queued at the destinations that are not journaled,
    /// appended to the journal for the others; returns once the append is on disk. With
    /// `acks`, every destination's outcome reaches the set (journaled ones through their
    /// feeds). Without a journal, the same as [`Runtime::dispatch`].
    pub async fn journal(
        &self,
        source: &str,
        events: &[(usize, Arc<Event>)],
        acks: Option<&AckSet>,
    ) -> Result<(), Refused> {
        let Some(journal) = self.journal.get() else {
            return Ok(self.dispatch(source, events, acks)?);
        };
        let generation = self.current.load_full();
        let takers = || generation.routes.iter().filter(|route| route.takes_source(source));
        let mut staged = Vec::new();
        for route in takers().filter(|route| !route.journaled()) {
            staged.push(route.stage(events, &generation.collector));
        }
        for stage in &mut staged {
            stage.reserve()?;
        }
        let source: Arc<str> = Arc::from(source);
        let journaled: Vec<Arc<str>> = takers()
            .filter(|route| route.journaled())
            .map(|route| Arc::from(route.id()))
            .collect();
        let items: Vec<_> = events
            .iter()
            .filter(|_| !journaled.is_empty())
            .map(|(index, event)| {
                let waiting = match acks {
                    Some(acks) => journaled
                        .iter()
                        .map(|id| (id.clone(), acks.token(*index, id).in_journal()))
                        .collect(),
                    None => Vec::new(),
                };
                let entry = Journaled::new(source.clone(), event.clone(), waiting);
                (entry.encode(), Arc::new(entry))
            })
            .collect();
        if !journaled.is_empty() {
            // Queued in memory only once journaled: a refused request reaches nobody.
            match journal.append(items).await {
                Ok(_) => {}
                Err(error @ AppendError::TooLarge { .. }) => return Err(Refused::TooLarge(error.to_string())),
                Err(error) => return Err(Refused::Unavailable(error.to_string())),
            }
        }
        let mut tokens = FromSource::new(acks, &source);
        for stage in staged {
            stage.commit(&mut tokens);
        }
        Ok(())
    }

    /// What each destination taking `source` would do with `event`.
    pub fn explain(&self, source: &str, event: &Event) -> Vec<ExplainLine> {
        let generation = self.current.load();
        generation
            .routes
            .iter()
            .filter(|route| route.takes_source(source))
            .map(|route| ExplainLine {
                destination: route.id().to_owned(),
                explained: route.explain(event, &generation.collector),
            })
            .collect()
    }

    /// Every destination connected and checked and the journal taking appends; otherwise
    /// the first problem.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_with_error().map_err(|(reason, _)| reason)
    }

    /// [`Runtime::readiness`], with the last error of the destination it names as not
    /// connected (why it could not connect), if it tried since it was last up.
    pub fn readiness_with_error(&self) -> Result<(), (String, Option<String>)> {
        if let Some(journal) = self.journal.get() {
            if let Some(reason) = journal.fatal_reason() {
                return Err((format!("the journal stopped: {reason}"), None));
            }
            if journal.is_full() {
                return Err(("the journal is full".to_owned(), None));
            }
        }
        match self.current.load().routes.iter().find(|route| !route.is_ready()) {
            None => Ok(()),
            Some(route) => {
                // The last error, if it came after the destination last changed state (an
                // error from before a recovery is not why it is down now).
                let health = route.health();
                let error = health
                    .last_error
                    .filter(|(at, _)| health.since.is_none_or(|since| *at >= since))
                    .map(|(_, error)| error);
                Err((format!("destination \"{}\" is not connected", route.id()), error))
            }
        }
    }

    /// Destination ids and kinds, for the start-up log.
    pub fn describe(&self) -> Value {
        Value::Array(
            self.current
                .load()
                .routes
                .iter()
                .map(|route| serde_json::json!({"id": route.id(), "type": route.kind()}))
                .collect(),
        )
    }
}
