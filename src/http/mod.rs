//! HTTP/1.1 for an event-stream server: incremental request-head parsing with hard limits,
//! request bodies framed by their heads (kept or discarded, whatever the method), and the
//! response heads and complete responses we send.

pub mod body;
pub mod chunked;
pub mod pipeline;
pub mod request;
pub mod response;
pub mod target;
