//! Payload codecs: which decoder reads a device's bytes, and the JSON it yields.
use device_node::{cayenne, command, telemetry};
use serde_json::Value;
use std::fmt;

/// A payload codec, by its configuration name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// This project's wire format (`docs/wire-format.md`).
    LongprotoV1,
    /// CayenneLPP.
    CayenneLpp,
    /// No decoding: the bytes are published as `raw_hex` only.
    Raw,
}

/// A payload that did not decode: what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    /// A short machine-readable kind (`truncated`, `unknown_kind`, …).
    pub kind: &'static str,
    /// What is wrong, with the byte offset.
    pub message: String,
}

impl From<device_node::DecodeError> for CodecError {
    fn from(e: device_node::DecodeError) -> Self {
        CodecError {
            kind: e.code(),
            message: e.to_string(),
        }
    }
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 3] = [Codec::LongprotoV1, Codec::CayenneLpp, Codec::Raw];

    /// The name used in configuration and on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::LongprotoV1 => "longproto-v1",
            Codec::CayenneLpp => "cayenne-lpp",
            Codec::Raw => "raw",
        }
    }

    /// The codec of a name.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Decodes an uplink payload into its records' JSON. `fport` is `None` for Sigfox.
    pub fn decode_uplink(
        self,
        payload: &[u8],
        fport: Option<u8>,
    ) -> Result<Vec<Value>, CodecError> {
        match self {
            Codec::LongprotoV1 => telemetry::decode_uplink(payload, fport)?
                .map(|r| Ok(to_json(&r?)))
                .collect(),
            Codec::CayenneLpp => cayenne::decode(payload).map(|r| Ok(to_json(&r?))).collect(),
            Codec::Raw => Ok(Vec::new()),
        }
    }

    /// Decodes a downlink payload (longproto command frames).
    pub fn decode_downlink(payload: &[u8]) -> Result<Vec<Value>, CodecError> {
        command::decode_downlink(payload)
            .map(|r| Ok(to_json(&r?)))
            .collect()
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    // Serialising these plain data types into a Value cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_configuration() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.name()), Some(c));
            assert!(gateway_config::CODEC_NAMES.contains(&c.name()));
        }
        assert_eq!(Codec::ALL.len(), gateway_config::CODEC_NAMES.len());
    }
}
