//! Operating Redis Streams, the `weir streams` and `weir doctor` jobs: provisioning and
//! verifying streams and groups, showing their state, replaying dead letters, removing what
//! is abandoned, and judging whether a Redis is fit to carry them. What they share with the
//! destination and the stream source lives in [`crate::redis`].

pub mod dlq;
pub mod doctor;
pub mod gc;
pub mod provision;
pub mod status;
