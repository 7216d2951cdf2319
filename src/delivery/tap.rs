//! The tap: what became of each event at each destination, as it happens, for whoever is
//! watching (`weir tap`, the admin listener's `/tap`). One process-wide broadcast ring, so a
//! slow watcher only loses records (it is told how many), never slows delivery: sending into
//! it never waits. With nobody watching it costs a few relaxed atomic loads per batch; the
//! records (and the wire forms in them) are built only while someone is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::event::Event;

/// Records a watcher may fall behind by before it loses the oldest.
const RING: usize = 4096;

/// What became of one event at one destination.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub time: SystemTime,
    /// The source that took the event in, when known.
    pub source: Option<Arc<str>>,
    pub destination: Arc<str>,
    pub event: Arc<Event>,
    /// `delivered`, `dead_lettered`, `failed`, `ignored`, `consent`, `skipped`, `held`.
    pub outcome: &'static str,
    pub reason: Option<String>,
    /// The wire form sent, as `weir explain` shows it.
    pub wire: Option<Value>,
}

struct Hub {
    sender: broadcast::Sender<Arc<Tapped>>,
    watching: AtomicUsize,
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        sender: broadcast::channel(RING).0,
        watching: AtomicUsize::new(0),
    })
}

/// Whether anyone is watching: records are built only then.
pub fn active() -> bool {
    hub().watching.load(Ordering::Relaxed) > 0
}

/// Hands a record of what became of `event` at `destination`, now, to every watcher
/// (dropped when nobody watches).
pub fn publish(
    source: Option<Arc<str>>,
    destination: &Arc<str>,
    event: Arc<Event>,
    outcome: &'static str,
    reason: Option<String>,
    wire: Option<Value>,
) {
    let record = Tapped {
        time: SystemTime::now(),
        source,
        destination: destination.clone(),
        event,
        outcome,
        reason,
        wire,
    };
    let _ = hub().sender.send(Arc::new(record));
}

/// One watcher's view; records flow while it lives.
pub struct Watch {
    pub receiver: broadcast::Receiver<Arc<Tapped>>,
}

/// Starts watching.
pub fn watch() -> Watch {
    let hub = hub();
    hub.watching.fetch_add(1, Ordering::Relaxed);
    Watch {
        receiver: hub.sender.subscribe(),
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        hub().watching.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tapped {
    /// The record as JSON (what `/tap` sends).
    pub fn to_json(&self) -> Value {
        let event: Value = serde_json::from_slice(&self.event.to_json()).unwrap_or(Value::Null);
        serde_json::json!({
            "time": self.time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64),
            "source": self.source.as_deref(),
            "destination": &*self.destination,
            "outcome": self.outcome,
            "reason": self.reason,
            "event": event,
            "wire": self.wire,
        })
    }
}
