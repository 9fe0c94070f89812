//! sse-server: a Server-Sent Events broadcast server on one mio (epoll) reactor.
//!
//! All protocol logic lives in [`core`], a state machine that does no I/O; [`driver`] is the
//! thin mio reactor around it, and [`sim`] (always built; the `sim` feature only adds
//! `arbitrary` derives for the fuzz targets) a deterministic
//! simulated network around the same core.

pub mod auth;
pub mod bus;
pub mod config;
pub mod core;
pub mod driver;
pub mod http;
pub mod json;
pub mod os;
pub mod sim;
pub mod sse;
pub mod supervisor;
pub mod timefmt;
