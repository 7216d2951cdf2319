//! Redis Streams: what the destination that writes them, the consumer that reads them and the
//! operations CLI share — message signing — and the CLI's own jobs: provisioning and
//! verifying streams and groups, showing their state, and judging whether a Redis is fit to
//! carry them.

pub mod doctor;
pub mod provision;
pub mod signing;
pub mod status;
