//! The Server-Sent Events wire format: encoding frames (what the server sends) and a
//! WHATWG-conformant parser (what a browser does with them), used by the simulator, the
//! fuzz oracle, the tests and the load generator.

pub mod frame;
pub mod parse;
