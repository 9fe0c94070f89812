//! The deterministic simulator (to be written).
