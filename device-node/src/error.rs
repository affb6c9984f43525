//! Errors of decoding and encoding, each with the byte offset at fault.
use core::fmt;

/// Why a payload did not decode. `offset` is the byte where the problem starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the payload.
    pub offset: usize,
    /// What is wrong there.
    pub kind: DecodeErrorKind,
}

/// What is wrong with a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// A record or frame needs more bytes than remain.
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the payload.
        available: usize,
    },
    /// The fPort names a version of the format this decoder does not know.
    UnknownVersion {
        /// The version the fPort names.
        version: u8,
    },
    /// A command opcode or CayenneLPP type this decoder does not know.
    UnknownKind {
        /// The opcode or type byte.
        kind: u8,
    },
    /// A field holds a value its definition does not allow.
    ValueOutOfRange {
        /// The field's name, as in the JSON form.
        field: &'static str,
    },
    /// Bytes left over that cannot form a whole frame.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The fPort carries no longproto payload.
    UnexpectedPort {
        /// The fPort.
        fport: u8,
    },
}

impl DecodeError {
    pub(crate) const fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        DecodeError { offset, kind }
    }

    /// A short machine-readable name of the kind, as the bridge publishes it.
    pub const fn code(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::Truncated { .. } => "truncated",
            DecodeErrorKind::UnknownVersion { .. } => "unknown_version",
            DecodeErrorKind::UnknownKind { .. } => "unknown_kind",
            DecodeErrorKind::ValueOutOfRange { .. } => "value_out_of_range",
            DecodeErrorKind::TrailingBytes { .. } => "trailing_bytes",
            DecodeErrorKind::UnexpectedPort { .. } => "unexpected_port",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match self.kind {
            DecodeErrorKind::Truncated { needed, available } => {
                write!(f, "truncated: needs {needed} bytes, {available} remain")
            }
            DecodeErrorKind::UnknownVersion { version } => {
                write!(f, "unknown format version {version}")
            }
            DecodeErrorKind::UnknownKind { kind } => write!(f, "unknown kind 0x{kind:02x}"),
            DecodeErrorKind::ValueOutOfRange { field } => write!(f, "{field} is out of range"),
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes do not form a whole frame")
            }
            DecodeErrorKind::UnexpectedPort { fport } => {
                write!(f, "fPort {fport} carries no longproto payload")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A command argument outside its range (commands are exact: they never saturate).
    ValueOutOfRange {
        /// The field's name.
        field: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} bytes needed")
            }
            EncodeError::ValueOutOfRange { field } => write!(f, "{field} is out of range"),
        }
    }
}

impl core::error::Error for EncodeError {}
