//! The journal of a running flow: opened (locked, recovered) before any source starts, one
//! consumer per journaled destination, each with its feed spawned, then handed to the
//! runtime so that durable sources append to it.

use std::sync::Arc;

use super::BuiltFlow;
use crate::config::flow::JournalSettings;
use crate::delivery::feed::Journaled;
use crate::journal::storage::Disk;
use crate::journal::{Journal, JournalConfig, JournalError, Recovered};

#[derive(Debug, thiserror::Error)]
pub enum JournalStartError {
    #[error("cannot open the journal at {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot recover the journal at {path}")]
    Recover {
        path: String,
        #[source]
        source: JournalError,
    },
}

/// Opens (locks, recovers) the journal of `settings`.
fn open(settings: &JournalSettings) -> Result<(Journal<Journaled>, Recovered), JournalStartError> {
    let path = settings.path.display().to_string();
    let disk = Disk::open(&settings.path).map_err(|source| JournalStartError::Open {
        path: path.clone(),
        source,
    })?;
    let config = JournalConfig {
        max_bytes: settings.max_bytes,
        segment_bytes: settings.segment_bytes,
        ..JournalConfig::default()
    };
    Journal::open(Arc::new(disk), config).map_err(|source| JournalStartError::Recover { path, source })
}

/// Opens a journal to append to while no weir runs on it (`weir dlq replay`): locked, no
/// consumers, so nothing in it is removed. The lock fails while weir runs.
pub fn open_offline(settings: &JournalSettings) -> Result<Journal<Journaled>, JournalStartError> {
    Ok(open(settings)?.0)
}

/// Opens the flow's journal (locked, recovered); `None` when the flow has no journal. The
/// caller opens its consumers, then calls `consumers_opened` and attaches it to the runtime.
pub fn open_journal(built: &BuiltFlow) -> Result<Option<Arc<Journal<Journaled>>>, JournalStartError> {
    let Some(settings) = &built.journal else {
        return Ok(None);
    };
    let (journal, recovered) = open(settings)?;
    tracing::info!(
        path = %settings.path.display(), segments = recovered.segments, last = recovered.last_seq,
        truncated_bytes = recovered.truncated_bytes, "journal opened"
    );
    Ok(Some(Arc::new(journal)))
}
