//! longproto-bridge: ChirpStack and Sigfox on one side, MQTT and HTTP on the other.
//!
//! `main.rs` is a thin shell over this library, so that the tests in `tests/` drive the
//! same code the service runs.
#![forbid(unsafe_code)]

pub mod cli;
pub mod codec;
pub mod command_json;
