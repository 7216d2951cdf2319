//! A running flow as its sources see it: the collector plus every destination's route, and
//! the one operation sources need — hand over a batch of events and (optionally) learn what
//! became of each. It knows no source or destination type: the assembly builds those and
//! hands each source an `Arc<Runtime>`.
//!
//! Dispatch is all-or-nothing per batch: events are mapped and rendered for every
//! destination first, then room is reserved in every destination's queue, and only when
//! all reservations succeed is anything queued. A full queue therefore rejects the batch as
//! a whole (the HTTP source answers 503) and never delivers half of it.

use std::sync::Arc;

use serde_json::Value;

use crate::collector::Collector;
use crate::delivery::ack::AckSet;
use crate::delivery::route::{Explained, QueueFull, Route};
use crate::event::Event;

/// Paths weir itself serves on every HTTP listener (health, readiness, metrics). Here, below
/// the sources and the assembly, because the HTTP source keeps its collect paths off them and
/// the assembly serves them.
pub const PROCESS_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub struct Runtime {
    pub collector: Collector,
    routes: Vec<Arc<dyn Route>>,
}

/// One line of `weir explain`: what happens to one event at one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainLine {
    pub destination: String,
    pub explained: Explained,
}

impl Runtime {
    pub fn new(collector: Collector, routes: Vec<Arc<dyn Route>>) -> Runtime {
        Runtime { collector, routes }
    }

    pub fn routes(&self) -> &[Arc<dyn Route>] {
        &self.routes
    }

    /// Queues `events` (each with its index in the source's batch) at every destination
    /// that takes `source`. With `acks`, each queued event gets a token in the set.
    pub fn dispatch(
        &self,
        source: &str,
        events: &[(usize, Arc<Event>)],
        acks: Option<&AckSet>,
    ) -> Result<(), QueueFull> {
        let mut staged = Vec::with_capacity(self.routes.len());
        for route in self.routes.iter().filter(|route| route.takes_source(source)) {
            staged.push(route.stage(events, &self.collector));
        }
        for stage in &mut staged {
            stage.reserve()?;
        }
        for stage in staged {
            stage.commit(acks);
        }
        Ok(())
    }

    /// What each destination taking `source` would do with `event`.
    pub fn explain(&self, source: &str, event: &Event) -> Vec<ExplainLine> {
        self.routes
            .iter()
            .filter(|route| route.takes_source(source))
            .map(|route| ExplainLine {
                destination: route.id().to_owned(),
                explained: route.explain(event, &self.collector),
            })
            .collect()
    }

    /// Every destination connected and checked; otherwise the first that is not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.routes.iter().find(|route| !route.is_ready()) {
            None => Ok(()),
            Some(route) => Err(format!("destination \"{}\" is not connected", route.id())),
        }
    }

    /// Destination ids and kinds, for the start-up log.
    pub fn describe(&self) -> Value {
        Value::Array(
            self.routes
                .iter()
                .map(|route| serde_json::json!({"id": route.id(), "type": route.kind()}))
                .collect(),
        )
    }
}
