//! HTTP/1.1 for an event-stream server: incremental request-head parsing with hard limits,
//! and the response heads and complete error responses we send.

pub mod chunked;
pub mod request;
pub mod response;
