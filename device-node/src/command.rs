//! Command frames (downlink), longproto v1.
//!
//! Every frame is exactly 8 bytes, one Sigfox downlink:
//!
//! ```text
//! byte 0     opcode (0x01..=0x06; 0x80..=0xFF: raw, vendor opcode = byte & 0x7F)
//! bytes 1-2  counter, big-endian: the per-device command counter
//! bytes 3-7  arguments, zero-padded; a decoder ignores reserved argument bytes
//! ```
//!
//! On LoRaWAN (fPort 20) several frames may follow one another in one downlink.
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};

/// The fPort of command frames on LoRaWAN.
pub const COMMAND_FPORT: u8 = 20;
/// The size of every command frame.
pub const FRAME_LEN: usize = 8;
/// Largest `set_interval` interval: 24 bits of seconds (194 days).
pub const MAX_INTERVAL_S: u32 = (1 << 24) - 1;

/// Opcodes of the commands.
pub mod opcode {
    /// `lock`
    pub const LOCK: u8 = 0x01;
    /// `unlock`
    pub const UNLOCK: u8 = 0x02;
    /// `locate`
    pub const LOCATE: u8 = 0x03;
    /// `set_interval`
    pub const SET_INTERVAL: u8 = 0x04;
    /// `set_mode`
    pub const SET_MODE: u8 = 0x05;
    /// `reboot`
    pub const REBOOT: u8 = 0x06;
    /// The first raw (vendor) opcode.
    pub const RAW_BASE: u8 = 0x80;
}

/// A reporting mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Mode {
    /// The normal reporting interval.
    Normal = 0,
    /// Frequent reports, e.g. every 15 s while a person waits at the vehicle.
    Active = 1,
    /// Rare reports, for a vehicle out of service.
    Storage = 2,
}

/// What a command asks the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "command",
        content = "args",
        rename_all = "snake_case",
        deny_unknown_fields
    )
)]
pub enum Command {
    /// Lock the vehicle.
    Lock,
    /// Unlock it.
    Unlock {
        /// Lock again after this many seconds unless a ride starts; 0: never.
        #[cfg_attr(feature = "serde", serde(default))]
        auto_relock_s: u16,
    },
    /// Report status now.
    Locate,
    /// Change the normal reporting interval.
    SetInterval {
        /// Seconds, 1..=16 777 215.
        interval_s: u32,
    },
    /// Change the reporting mode.
    SetMode {
        /// The mode.
        mode: Mode,
        /// For how long, in seconds, before going back to normal; 0: until changed.
        #[cfg_attr(feature = "serde", serde(default))]
        duration_s: u16,
        /// The interval in this mode, in seconds; 0: the mode's default.
        #[cfg_attr(feature = "serde", serde(default))]
        interval_s: u16,
    },
    /// Restart the device.
    Reboot {
        /// After this many seconds.
        #[cfg_attr(feature = "serde", serde(default))]
        delay_s: u16,
    },
    /// A vendor command: opcode 0..=127 and 5 bytes for the vendor's firmware.
    Raw {
        /// The vendor opcode.
        opcode: u8,
        /// The vendor data.
        #[cfg_attr(feature = "serde", serde(with = "crate::json::hex5", default))]
        data: [u8; 5],
    },
}

impl Command {
    /// The opcode byte on the wire.
    pub const fn opcode(&self) -> u8 {
        match self {
            Command::Lock => opcode::LOCK,
            Command::Unlock { .. } => opcode::UNLOCK,
            Command::Locate => opcode::LOCATE,
            Command::SetInterval { .. } => opcode::SET_INTERVAL,
            Command::SetMode { .. } => opcode::SET_MODE,
            Command::Reboot { .. } => opcode::REBOOT,
            Command::Raw { opcode, .. } => opcode::RAW_BASE | (*opcode & 0x7f),
        }
    }

    /// The command's name in the JSON form and the API.
    pub const fn name(&self) -> &'static str {
        match self {
            Command::Lock => "lock",
            Command::Unlock { .. } => "unlock",
            Command::Locate => "locate",
            Command::SetInterval { .. } => "set_interval",
            Command::SetMode { .. } => "set_mode",
            Command::Reboot { .. } => "reboot",
            Command::Raw { .. } => "raw",
        }
    }

    /// Lock and unlock go first when several commands wait for one window: a person
    /// may be standing at the vehicle.
    pub const fn is_urgent(&self) -> bool {
        matches!(self, Command::Lock | Command::Unlock { .. })
    }
}

/// A command with its counter: one 8-byte frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CommandFrame {
    /// The per-device counter (see [`crate::replay`]).
    pub counter: u16,
    /// The command.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub command: Command,
}

impl CommandFrame {
    /// The 8 bytes of this frame. Fails for arguments outside their range: a command is
    /// never altered to fit.
    pub fn encode(&self) -> Result<[u8; FRAME_LEN], EncodeError> {
        let mut f = [0u8; FRAME_LEN];
        f[0] = self.command.opcode();
        f[1..3].copy_from_slice(&self.counter.to_be_bytes());
        let a = &mut f[3..];
        match self.command {
            Command::Lock | Command::Locate => {}
            Command::Unlock { auto_relock_s } => {
                a[..2].copy_from_slice(&auto_relock_s.to_be_bytes())
            }
            Command::SetInterval { interval_s } => {
                if interval_s == 0 || interval_s > MAX_INTERVAL_S {
                    return Err(EncodeError::ValueOutOfRange {
                        field: "interval_s",
                    });
                }
                a[..3].copy_from_slice(&interval_s.to_be_bytes()[1..]);
            }
            Command::SetMode {
                mode,
                duration_s,
                interval_s,
            } => {
                a[0] = mode as u8;
                a[1..3].copy_from_slice(&duration_s.to_be_bytes());
                a[3..5].copy_from_slice(&interval_s.to_be_bytes());
            }
            Command::Reboot { delay_s } => a[..2].copy_from_slice(&delay_s.to_be_bytes()),
            Command::Raw { opcode, data } => {
                if opcode > 0x7f {
                    return Err(EncodeError::ValueOutOfRange { field: "opcode" });
                }
                a.copy_from_slice(&data);
            }
        }
        Ok(f)
    }

    /// Decodes one frame; `offset` is where it starts in the payload, for errors.
    pub fn decode(f: &[u8; FRAME_LEN], offset: usize) -> Result<Self, DecodeError> {
        let counter = u16::from_be_bytes([f[1], f[2]]);
        let a = &f[3..];
        let u16_at = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        let out_of_range = |i: usize, field| {
            DecodeError::new(offset + 3 + i, DecodeErrorKind::ValueOutOfRange { field })
        };
        let command = match f[0] {
            opcode::LOCK => Command::Lock,
            opcode::UNLOCK => Command::Unlock {
                auto_relock_s: u16_at(0),
            },
            opcode::LOCATE => Command::Locate,
            opcode::SET_INTERVAL => {
                let interval_s = u32::from_be_bytes([0, a[0], a[1], a[2]]);
                if interval_s == 0 {
                    return Err(out_of_range(0, "interval_s"));
                }
                Command::SetInterval { interval_s }
            }
            opcode::SET_MODE => {
                let mode = match a[0] {
                    0 => Mode::Normal,
                    1 => Mode::Active,
                    2 => Mode::Storage,
                    _ => return Err(out_of_range(0, "mode")),
                };
                Command::SetMode {
                    mode,
                    duration_s: u16_at(1),
                    interval_s: u16_at(3),
                }
            }
            opcode::REBOOT => Command::Reboot { delay_s: u16_at(0) },
            op if op >= opcode::RAW_BASE => {
                let mut data = [0u8; 5];
                data.copy_from_slice(a);
                Command::Raw {
                    opcode: op & 0x7f,
                    data,
                }
            }
            op => {
                return Err(DecodeError::new(
                    offset,
                    DecodeErrorKind::UnknownKind { kind: op },
                ));
            }
        };
        Ok(CommandFrame { counter, command })
    }
}

/// The frames of a downlink payload, in order. Stops after the first error.
pub fn decode_downlink(
    payload: &[u8],
) -> impl Iterator<Item = Result<CommandFrame, DecodeError>> + '_ {
    let whole = payload.len() / FRAME_LEN * FRAME_LEN;
    let frames = payload[..whole]
        .chunks_exact(FRAME_LEN)
        .enumerate()
        .map(|(i, c)| CommandFrame::decode(c.try_into().unwrap_or(&[0; FRAME_LEN]), i * FRAME_LEN));
    let trailing = (whole < payload.len()).then(|| {
        Err(DecodeError::new(
            whole,
            DecodeErrorKind::TrailingBytes {
                count: payload.len() - whole,
            },
        ))
    });
    let mut failed = false;
    frames.chain(trailing).take_while(move |r| {
        let go = !failed;
        failed |= r.is_err();
        go
    })
}
