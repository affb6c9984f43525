//! The networks: one adapter per network, all of one shape.
//!
//! An adapter
//! - reads its network's input (ChirpStack's MQTT events, Sigfox's HTTP callbacks, the
//!   cellular devices' polls, the SMSC's messages) and
//!   turns each uplink into a [`crate::pipeline::Uplink`] for the one pipeline;
//! - asks the command queue to fill the receive window the uplink opened
//!   ([`crate::commands::Commands::after_uplink`] / `fill_window`), and turns the
//!   [`crate::commands::DownlinkPlan`] into its protocol (a `command/down`, a BIDIR
//!   reply);
//! - is told by the queue when a command becomes due outside an uplink
//!   ([`crate::commands::Commands::due`]): a device that can take a downlink at any time
//!   (LoRaWAN class B/C, a held cellular poll) takes it then; the others wait for their
//!   next uplink;
//! - reports what the network says of a downlink (sent, acknowledged, lost) back to the
//!   queue;
//! - reaches the store only through the trait of the facts it needs
//!   ([`crate::commands::store::DeviceFacts`], [`crate::commands::store::Quotas`],
//!   [`crate::commands::store::RequestCounters`]).
//!
//! Nothing else calls an adapter: the HTTP API and the MQTT command topic only talk to
//! the queue. A new network is one new folder here.
pub mod cellular;
pub mod chirpstack;
pub mod sigfox;
pub mod sms;
