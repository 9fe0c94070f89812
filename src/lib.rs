//! sse-server: a Server-Sent Events broadcast server on one mio (epoll) reactor.
//!
//! All protocol logic lives in [`core`], a state machine that does no I/O; [`driver`] is the
//! thin mio reactor around it, and `sim` (feature `sim`, and in tests) a deterministic
//! simulated network around the same core.

pub mod bus;
pub mod config;
pub mod core;
pub mod driver;
pub mod http;
pub mod sim;
pub mod sse;
pub mod timefmt;
