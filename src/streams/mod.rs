//! Redis Streams: what the destination that writes them, the consumer that reads them and the
//! operations CLI share — message signing — and the CLI's own jobs: provisioning and
//! verifying streams and groups, showing their state, replaying dead letters, removing what
//! is abandoned, and judging whether a Redis is fit to carry them.

pub mod dlq;
pub mod doctor;
pub mod gc;
pub mod provision;
pub mod signing;
pub mod status;
