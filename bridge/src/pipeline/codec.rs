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

    /// Decodes an uplink payload into its records. `fport` is `None` for Sigfox.
    pub fn decode_records(
        self,
        payload: &[u8],
        fport: Option<u8>,
    ) -> Result<Vec<Record>, CodecError> {
        match self {
            Codec::LongprotoV1 => telemetry::decode_uplink(payload, fport)?
                .map(|r| Ok(Record::Longproto(r?)))
                .collect(),
            Codec::CayenneLpp => cayenne::decode(payload)
                .map(|r| Ok(Record::Cayenne(r?)))
                .collect(),
            Codec::Raw => Ok(Vec::new()),
        }
    }

    /// Decodes an uplink payload into its records' JSON. `fport` is `None` for Sigfox.
    pub fn decode_uplink(
        self,
        payload: &[u8],
        fport: Option<u8>,
    ) -> Result<Vec<Value>, CodecError> {
        Ok(self
            .decode_records(payload, fport)?
            .iter()
            .map(to_json)
            .collect())
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

/// One decoded uplink record in its codec's own type: written once, straight into the
/// telemetry and the device state, with no JSON tree in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A longproto-v1 record (`kind` status, ack, event, boot or unknown).
    Longproto(telemetry::Record),
    /// A CayenneLPP item (`channel`, `type`, `value`).
    Cayenne(cayenne::LppRecord),
}

impl serde::Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Longproto(r) => r.serialize(s),
            Record::Cayenne(r) => r.serialize(s),
        }
    }
}

/// Where a record is kept in the device state: the last one of each kind (longproto),
/// or of each type and channel (CayenneLPP, `temperature/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKey {
    /// A longproto record's kind.
    Kind(&'static str),
    /// A CayenneLPP type name and channel.
    Lpp(&'static str, u8),
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateKey::Kind(k) => f.write_str(k),
            StateKey::Lpp(t, c) => write!(f, "{t}/{c}"),
        }
    }
}

impl serde::Serialize for StateKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Record {
    /// Its place in the device state.
    pub fn state_key(&self) -> StateKey {
        match self {
            Record::Longproto(r) => StateKey::Kind(match r {
                telemetry::Record::Status(_) => "status",
                telemetry::Record::Ack(_) => "ack",
                telemetry::Record::Event(_) => "event",
                telemetry::Record::Boot(_) => "boot",
                telemetry::Record::Unknown(_) => "unknown",
            }),
            Record::Cayenne(r) => StateKey::Lpp(r.value.name(), r.channel),
        }
    }

    /// The record as the device state keeps it: without `kind`, which is its key.
    pub fn in_state(&self) -> InState<'_> {
        InState(self)
    }

    /// Whether it is a device's acknowledgement of a command.
    pub fn is_ack(&self) -> bool {
        matches!(self, Record::Longproto(telemetry::Record::Ack(_)))
    }

    /// Its JSON.
    pub fn to_json(&self) -> Value {
        to_json(self)
    }
}

/// A record's JSON without its `kind` (see [`Record::in_state`]).
pub struct InState<'a>(&'a Record);

impl serde::Serialize for InState<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Record::Longproto(telemetry::Record::Status(r)) => r.serialize(s),
            Record::Longproto(telemetry::Record::Ack(r)) => r.serialize(s),
            Record::Longproto(telemetry::Record::Event(r)) => r.serialize(s),
            Record::Longproto(telemetry::Record::Boot(r)) => r.serialize(s),
            Record::Longproto(telemetry::Record::Unknown(r)) => r.serialize(s),
            Record::Cayenne(r) => r.serialize(s),
        }
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
