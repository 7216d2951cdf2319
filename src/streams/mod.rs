//! Redis Streams: what the destination that writes them and the consumer that reads them
//! share. Today: message signing.

pub mod signing;
