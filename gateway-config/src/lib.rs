//! longproto's configuration and radio facts.
//!
//! Two halves with different audiences:
//! - always available, `no_std`: [`region`] (LoRaWAN regional parameters), [`sigfox`]
//!   (Sigfox payload and message limits) and [`airtime`] (LoRa time on air). The node
//!   library and the bridge's scheduler use the very same tables and formula.
//! - with the `std` feature (default): [`Settings`], the bridge's whole configuration,
//!   loaded from TOML files and `LONGPROTO__SECTION__KEY` environment overrides,
//!   validated so that every problem is reported at once with its key path, and rendered
//!   as a commented default file.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod airtime;
pub mod region;
pub mod sigfox;

#[cfg(feature = "std")]
mod load;
#[cfg(feature = "std")]
mod render;
#[cfg(feature = "std")]
mod settings;
#[cfg(feature = "std")]
mod validate;

#[cfg(feature = "std")]
pub use load::{LoadError, Sources, load};
#[cfg(feature = "std")]
pub use render::render_default;
#[cfg(feature = "std")]
pub use settings::*;
#[cfg(feature = "std")]
pub use validate::{Problem, Problems, check_tokens, parse_tokens_file, valid_name};

/// Names of the payload codecs the bridge knows, as written in `[codecs]`.
pub const CODEC_NAMES: &[&str] = &["longproto-v1", "cayenne-lpp", "raw"];
