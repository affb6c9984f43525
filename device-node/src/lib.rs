//! longproto's wire format and node logic.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
