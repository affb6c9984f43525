//! longproto-bridge: ChirpStack and Sigfox on one side, MQTT and HTTP on the other.
//!
//! `main.rs` is a thin shell over this library, so that the tests in `tests/` drive the
//! same code the service runs. The shape: network adapters ([`chirpstack`]) turn their
//! protocol into [`pipeline::Uplink`]s; the one [`pipeline`] decodes them with the
//! device's [`codec`] and publishes telemetry and state through [`mqtt`]; [`service`]
//! wires it all together with the [`http`] server.
#![forbid(unsafe_code)]

pub mod api;
pub mod chirpstack;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod command_json;
pub mod commands;
#[cfg(feature = "demo")]
pub mod demo;
pub mod device;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod pipeline;
pub mod service;
pub mod sigfox;
pub mod state;
pub mod timeslice;
pub mod uplink_json;
