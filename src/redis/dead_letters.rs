//! The dead-letter entry weir's stream source writes (and `weir streams dlq` reads).
//!
//! A dead-letter entry is `reason`, `src_id` (the failed entry's id), `attempts`, `consumer`,
//! `received_at` (unix ms), then the failed entry's own fields, in its order. The five come
//! first and are read by position, so an original field with the same name (an event's own
//! `id` or `reason`) can never shadow them — Caracal's `src_<field>` copy lets an `id` field
//! overwrite `src_id`.

/// The fixed fields, in order.
pub const METADATA: [&str; 5] = ["reason", "src_id", "attempts", "consumer", "received_at"];

/// The dead-letter stream of `stream` unless configured otherwise.
pub fn default_dlq(stream: &str) -> String {
    format!("{stream}.dlq")
}

/// The field/value pairs of a dead-letter entry, for the consumer to XADD.
pub fn entry_fields(
    reason: &str,
    src_id: &str,
    attempts: u64,
    consumer: &str,
    received_at_ms: u64,
    original: &[(String, Vec<u8>)],
) -> Vec<(String, Vec<u8>)> {
    let metadata = [
        reason.to_owned(),
        src_id.to_owned(),
        attempts.to_string(),
        consumer.to_owned(),
        received_at_ms.to_string(),
    ];
    METADATA
        .iter()
        .zip(metadata)
        .map(|(name, value)| ((*name).to_owned(), value.into_bytes()))
        .chain(original.iter().cloned())
        .collect()
}

/// Why the stream source dead-letters an entry: the entry's `reason` field (its text) and the
/// `reason` label of `weir_stream_dead_lettered_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Verification is on and the `_sig` is missing or wrong.
    BadSignature,
    /// No event can be made of it; the detail says why.
    Undecodable(String),
    /// Delivered more than `maxDeliveries` times without success.
    MaxDeliveries,
}

impl Reason {
    /// A bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::Undecodable(_) => "undecodable",
            Reason::MaxDeliveries => "max_deliveries",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Undecodable(detail) => write!(f, "undecodable: {detail}"),
            other => f.write_str(other.label()),
        }
    }
}
