//! longproto's wire format and node logic, shared by the firmware and the bridge.
//!
//! `no_std` and allocation-free, so the very same code runs on an RP2040 and in the
//! bridge. The format is specified in `docs/wire-format.md`; the test vectors in
//! `vectors/*.json` tie this implementation, the bridge and the specification together.
//!
//! - [`telemetry`]: uplink records (status, command acknowledgement, event, boot);
//! - [`command`]: 8-byte command frames (downlink);
//! - [`replay`]: the node's at-most-once rule for command counters;
//! - [`cayenne`]: CayenneLPP, for off-the-shelf devices;
//! - [`node`]: the node's logic (commands, reporting schedule, airtime budget);
//! - [`provision`]: the flash key block that gives a node its LoRaWAN identity;
//! - [`seal`]: per-device MACs on the bearers whose link authenticates nothing;
//! - [`cellular`]: the device's side of the cellular long poll, sans IO;
//! - with the `serde` feature, the JSON form the bridge publishes.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "serde")]
extern crate alloc;

pub mod cayenne;
pub mod cellular;
pub mod command;
pub mod error;
#[cfg(feature = "serde")]
pub mod json;
pub mod node;
pub mod provision;
pub mod replay;
pub mod seal;
pub mod sms;
pub mod telemetry;

pub use command::{COMMAND_FPORT, Command, CommandFrame, FRAME_LEN, Mode};
pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use telemetry::{Record, TELEMETRY_FPORT};

/// The radio facts the node shares with the bridge: regions and time on air.
pub use gateway_config::{airtime, region, sigfox};
