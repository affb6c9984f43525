//! longproto-bridge: ChirpStack and Sigfox on one side, MQTT and HTTP on the other.
//!
//! Every network gives a device a receive window at its own rhythm; the bridge fills
//! windows with commands from one durable queue (docs/architecture.md).
//!
//! `main.rs` is a thin shell over this library, so that the tests in `tests/` drive the
//! same code the service runs. The layout, in the order a message travels:
//!
//! - [`networks`]: one adapter per network ([`networks::chirpstack`],
//!   [`networks::sigfox`], [`networks::cellular`], [`networks::sms`]), each turning its
//!   protocol into [`pipeline::Uplink`]s and a
//!   [`commands::DownlinkPlan`] back into its protocol;
//! - [`pipeline`]: uplink → the device's codec → telemetry and retained state, duplicates
//!   dropped;
//! - [`commands`]: the durable command queue, its state machine, receive windows, the
//!   window journal, the MQTT command topic; `store/` behind traits split by concern;
//! - [`mqtt`]: the one broker connection, the publisher, TLS;
//! - [`http`]: the server, composing one router per area (command API, Sigfox
//!   callbacks, health and metrics) and one error type rendering the contract's errors;
//!   and the cellular devices' own listener;
//! - [`app`]: the wiring, the in-order dispatcher of MQTT messages, ordered shutdown,
//!   signals and systemd;
//! - [`cli`], `demo` (cargo feature `demo`), and the small shared pieces: [`device`],
//!   [`clock`], [`metrics`], [`logging`], [`secret`], [`timeslice`].
//!
//! The declarations below go from the bottom layer up, one group a layer: a module uses
//! only the layers declared before its own, and no modules anywhere import each other in
//! a circle (`tests/layers.rs` checks both).
#![forbid(unsafe_code)]

// shared pieces that use no other module
pub mod clock;
pub mod device;
pub mod logging;
pub mod metrics;
pub mod secret;
pub mod timeslice;

pub mod mqtt;

pub mod pipeline;

pub mod commands;

/// Who may do what: API tokens with scopes and the devices they see; device groups.
pub mod operators;

pub mod networks;

pub mod http;

pub mod app;

#[cfg(feature = "demo")]
pub mod demo;

pub mod cli;
