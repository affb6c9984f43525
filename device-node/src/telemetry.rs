//! Telemetry records (uplink), longproto v1. The layout is specified, bit by bit, in
//! `docs/wire-format.md`; this module is its reference implementation.
//!
//! A payload is a sequence of records. A record's first bit tells its shape:
//! - `0`: a **status** record, 12 bytes, fixed layout, frozen for ever;
//! - `1`: a **tagged** record, one header byte `1 kkk llll` (kind `k`, body length `l`)
//!   and `l` body bytes. A decoder skips a tagged record of a kind it does not know
//!   (it comes out as [`Record::Unknown`]) and ignores body bytes past the fields it
//!   knows, so a newer device can add kinds and append fields without breaking it.
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};

/// The fPort of longproto v1 telemetry on LoRaWAN. fPorts 11..=19 are kept for later
/// versions of the format; a v1 decoder answers them with `UnknownVersion`.
pub const TELEMETRY_FPORT: u8 = 10;
/// Size of a status record.
pub const STATUS_LEN: usize = 12;
/// The longest body a tagged record can have, so that it fits a Sigfox uplink.
pub const MAX_TAGGED_BODY: usize = 11;

const KIND_ACK: u8 = 0;
const KIND_EVENT: u8 = 1;
const KIND_BOOT: u8 = 2;
const ACK_LEN: usize = 4;
const EVENT_LEN: usize = 5;
const BOOT_LEN: usize = 4;

// Status field widths and limits.
const LAT_MAX: u64 = (1 << 23) - 1;
const LON_MAX: u64 = (1 << 24) - 1;
const SOC_UNKNOWN: u32 = 127;
const SPEED_SAT: u32 = 255;
const ODO_SAT: u32 = (1 << 20) - 1;
const TEMP_MIN: i16 = -40;
const TEMP_MAX: i16 = 85;

/// How old the position fix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FixAge {
    /// Under 10 s.
    #[cfg_attr(feature = "serde", serde(rename = "<10s"))]
    Under10s,
    /// Under 1 min.
    #[cfg_attr(feature = "serde", serde(rename = "<1min"))]
    Under1min,
    /// Under 5 min.
    #[cfg_attr(feature = "serde", serde(rename = "<5min"))]
    Under5min,
    /// Under 30 min.
    #[cfg_attr(feature = "serde", serde(rename = "<30min"))]
    Under30min,
    /// Under 2 h.
    #[cfg_attr(feature = "serde", serde(rename = "<2h"))]
    Under2h,
    /// Under 12 h.
    #[cfg_attr(feature = "serde", serde(rename = "<12h"))]
    Under12h,
    /// 12 h or more.
    #[cfg_attr(feature = "serde", serde(rename = ">=12h"))]
    Over12h,
    /// No fix since boot: the position fields mean nothing.
    #[cfg_attr(feature = "serde", serde(rename = "none"))]
    NoFix,
}

impl FixAge {
    const ALL: [FixAge; 8] = [
        FixAge::Under10s,
        FixAge::Under1min,
        FixAge::Under5min,
        FixAge::Under30min,
        FixAge::Under2h,
        FixAge::Under12h,
        FixAge::Over12h,
        FixAge::NoFix,
    ];

    /// The class of a fix `seconds` old (`None`: no fix).
    pub fn from_secs(seconds: Option<u32>) -> FixAge {
        match seconds {
            None => FixAge::NoFix,
            Some(s) if s < 10 => FixAge::Under10s,
            Some(s) if s < 60 => FixAge::Under1min,
            Some(s) if s < 300 => FixAge::Under5min,
            Some(s) if s < 1800 => FixAge::Under30min,
            Some(s) if s < 7200 => FixAge::Under2h,
            Some(s) if s < 43_200 => FixAge::Under12h,
            Some(_) => FixAge::Over12h,
        }
    }
}

/// Fields whose value was beyond their range and was clamped to its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saturated(u8);

impl Saturated {
    /// Latitude beyond ±90° (encode side only: the wire cannot tell).
    pub const LATITUDE: Saturated = Saturated(1);
    /// Longitude beyond ±180° (encode side only).
    pub const LONGITUDE: Saturated = Saturated(2);
    /// State of charge above 100 % (encode side only).
    pub const SOC: Saturated = Saturated(4);
    /// Speed of 255 km/h or more.
    pub const SPEED: Saturated = Saturated(8);
    /// Cabin temperature below −40 °C or above +85 °C.
    pub const TEMPERATURE: Saturated = Saturated(16);
    /// Odometer of 1 048 575 km or more.
    pub const ODOMETER: Saturated = Saturated(32);

    pub(crate) const NAMES: [(Saturated, &'static str); 6] = [
        (Saturated::LATITUDE, "latitude"),
        (Saturated::LONGITUDE, "longitude"),
        (Saturated::SOC, "soc_pct"),
        (Saturated::SPEED, "speed_kmh"),
        (Saturated::TEMPERATURE, "cabin_temp_c"),
        (Saturated::ODOMETER, "odometer_km"),
    ];

    /// No field saturated.
    pub const fn empty() -> Self {
        Saturated(0)
    }
    /// Whether nothing is flagged.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Saturated) -> bool {
        self.0 & other.0 == other.0
    }
    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: Saturated) {
        self.0 |= other.0;
    }
    /// The flags set in both.
    pub const fn intersection(self, other: Saturated) -> Saturated {
        Saturated(self.0 & other.0)
    }
    /// The names of the flagged fields.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Saturated::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

/// The flags that the wire carries (the others exist only on the encoding side).
const ON_THE_WIRE: Saturated =
    Saturated(Saturated::SPEED.0 | Saturated::TEMPERATURE.0 | Saturated::ODOMETER.0);

/// A vehicle's status: where it is, its charge, lock and motion. One status record is
/// exactly one Sigfox uplink (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Status {
    /// Latitude in 1e-7 degrees (resolution on the wire: 2.39 m).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "latitude", with = "crate::json::e7")
    )]
    pub latitude_e7: i32,
    /// Longitude in 1e-7 degrees (resolution on the wire: 2.39 m at the equator).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "longitude", with = "crate::json::e7")
    )]
    pub longitude_e7: i32,
    /// Age of the position fix.
    pub fix_age: FixAge,
    /// State of charge, 0..=100 %, or unknown.
    pub soc_pct: Option<u8>,
    /// Locked.
    pub locked: bool,
    /// Ignition on / motor enabled.
    pub ignition: bool,
    /// Charging.
    pub charging: bool,
    /// Speed in km/h, 0..=255 (255 with `Saturated::SPEED`: 255 or more).
    pub speed_kmh: u16,
    /// Cabin temperature in °C, −40..=+85.
    pub cabin_temp_c: i16,
    /// Odometer in km, 0..=1 048 575.
    pub odometer_km: u32,
    /// Fields clamped to their limit.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Saturated::is_empty")
    )]
    pub saturated: Saturated,
}

/// The result a device reports for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AckResult {
    /// Executed now.
    Executed = 0,
    /// Executed before: this was a repeat of a command already executed.
    AlreadyExecuted = 1,
    /// Not executed: the device does not know the opcode.
    UnknownCommand = 2,
    /// Not executed: an argument is invalid.
    BadArguments = 3,
    /// Not executed: not possible now (e.g. locking while moving).
    NotNow = 4,
    /// Not executed: the counter is too old (outside the replay window).
    Stale = 5,
    /// Tried and failed (e.g. the actuator did not move).
    Failed = 6,
}

impl AckResult {
    const ALL: [AckResult; 7] = [
        AckResult::Executed,
        AckResult::AlreadyExecuted,
        AckResult::UnknownCommand,
        AckResult::BadArguments,
        AckResult::NotNow,
        AckResult::Stale,
        AckResult::Failed,
    ];

    /// Whether the command took effect (now or earlier).
    pub const fn is_executed(self) -> bool {
        matches!(self, AckResult::Executed | AckResult::AlreadyExecuted)
    }
}

/// A device's answer to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Ack {
    /// The command's counter.
    pub counter: u16,
    /// The command's opcode, echoed.
    pub opcode: u8,
    /// What happened.
    pub result: AckResult,
}

/// Something that happened on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// What happened.
    pub event: EventCode,
    /// An event-specific value: g-force ×10 for a crash, % for low battery, the geofence
    /// id for geofence events, 0 otherwise.
    pub value: u16,
    /// How many seconds ago, saturating at 65535.
    pub age_s: u16,
}

/// An event code. Codes the decoder does not know keep their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCode(pub u8);

impl EventCode {
    /// Someone tampered with the device or its enclosure.
    pub const TAMPER: EventCode = EventCode(1);
    /// An impact beyond the crash threshold.
    pub const CRASH: EventCode = EventCode(2);
    /// The battery fell below its threshold.
    pub const LOW_BATTERY: EventCode = EventCode(3);
    /// The vehicle left a geofence.
    pub const GEOFENCE_EXIT: EventCode = EventCode(4);
    /// The vehicle entered a geofence.
    pub const GEOFENCE_ENTER: EventCode = EventCode(5);
    /// The vehicle moves while locked (towing, theft).
    pub const UNAUTHORISED_MOVEMENT: EventCode = EventCode(6);
    /// The main battery was removed.
    pub const BATTERY_REMOVED: EventCode = EventCode(7);
    /// The vehicle fell over.
    pub const FALL: EventCode = EventCode(8);

    pub(crate) const NAMES: [(u8, &'static str); 8] = [
        (1, "tamper"),
        (2, "crash"),
        (3, "low_battery"),
        (4, "geofence_exit"),
        (5, "geofence_enter"),
        (6, "unauthorised_movement"),
        (7, "battery_removed"),
        (8, "fall"),
    ];

    /// The name in the JSON form, `None` for a code this version does not know.
    pub fn name(self) -> Option<&'static str> {
        EventCode::NAMES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map(|(_, n)| *n)
    }
}

/// Why the device last started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ResetReason {
    /// Power on.
    PowerOn = 0,
    /// The watchdog fired.
    Watchdog = 1,
    /// A `reboot` command or another software reset.
    Software = 2,
    /// Supply brown-out.
    BrownOut = 3,
    /// A panic or fault.
    Panic = 4,
    /// The reset pin.
    Pin = 5,
    /// Unknown.
    Unknown = 255,
}

impl ResetReason {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => ResetReason::PowerOn,
            1 => ResetReason::Watchdog,
            2 => ResetReason::Software,
            3 => ResetReason::BrownOut,
            4 => ResetReason::Panic,
            5 => ResetReason::Pin,
            255 => ResetReason::Unknown,
            _ => return None,
        })
    }
}

/// Sent once after every start: the firmware version and why it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Boot {
    /// Firmware version: major, minor, patch.
    pub firmware: [u8; 3],
    /// Why it started.
    pub reset_reason: ResetReason,
}

/// A tagged record of a kind this decoder does not know, kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Unknown {
    /// The kind, 0..=7.
    pub code: u8,
    /// The body.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "hex", with = "crate::json::hex_body")
    )]
    pub body: Body,
}

/// Up to [`MAX_TAGGED_BODY`] bytes, without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Body {
    len: u8,
    bytes: [u8; MAX_TAGGED_BODY],
}

impl Body {
    /// A body from bytes; `None` when longer than [`MAX_TAGGED_BODY`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut b = Body {
            len: bytes.len() as u8,
            bytes: [0; MAX_TAGGED_BODY],
        };
        b.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(b)
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One telemetry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum Record {
    /// Vehicle status.
    Status(Status),
    /// Command acknowledgement.
    Ack(Ack),
    /// Event or alarm.
    Event(Event),
    /// Start-up report.
    Boot(Boot),
    /// A kind this version does not know.
    Unknown(Unknown),
}

impl Record {
    /// Bytes this record takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Status(_) => STATUS_LEN,
            Record::Ack(_) => 1 + ACK_LEN,
            Record::Event(_) => 1 + EVENT_LEN,
            Record::Boot(_) => 1 + BOOT_LEN,
            Record::Unknown(u) => 1 + u.body.len as usize,
        }
    }

    /// Writes the record at the start of `out` and returns the bytes written and the
    /// fields that had to be clamped. Nothing wraps: an out-of-range value is written as
    /// its limit and flagged.
    pub fn encode(&self, out: &mut [u8]) -> Result<(usize, Saturated), EncodeError> {
        let len = self.encoded_len();
        let out = out
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { needed: len })?;
        let mut sat = Saturated::empty();
        match self {
            Record::Status(s) => {
                let bytes = encode_status(s, &mut sat);
                out.copy_from_slice(&bytes);
            }
            Record::Ack(a) => {
                out[0] = header(KIND_ACK, ACK_LEN);
                out[1..3].copy_from_slice(&a.counter.to_be_bytes());
                out[3] = a.opcode;
                out[4] = a.result as u8;
            }
            Record::Event(e) => {
                out[0] = header(KIND_EVENT, EVENT_LEN);
                out[1] = e.event.0;
                out[2..4].copy_from_slice(&e.value.to_be_bytes());
                out[4..6].copy_from_slice(&e.age_s.to_be_bytes());
            }
            Record::Boot(b) => {
                out[0] = header(KIND_BOOT, BOOT_LEN);
                out[1..4].copy_from_slice(&b.firmware);
                out[4] = b.reset_reason as u8;
            }
            Record::Unknown(u) => {
                out[0] = header(u.code & 7, u.body.len as usize);
                out[1..].copy_from_slice(u.body.as_slice());
            }
        }
        Ok((len, sat))
    }
}

const fn header(kind: u8, len: usize) -> u8 {
    0x80 | (kind << 4) | len as u8
}

fn encode_status(s: &Status, sat: &mut Saturated) -> [u8; STATUS_LEN] {
    let lat = quantize(
        s.latitude_e7,
        900_000_000,
        LAT_MAX,
        Saturated::LATITUDE,
        sat,
    );
    let lon = quantize(
        s.longitude_e7,
        1_800_000_000,
        LON_MAX,
        Saturated::LONGITUDE,
        sat,
    );
    let soc = match s.soc_pct {
        None => SOC_UNKNOWN,
        Some(v) if v > 100 => {
            sat.insert(Saturated::SOC);
            100
        }
        Some(v) => v as u32,
    };
    let speed = if s.speed_kmh >= SPEED_SAT as u16 || s.saturated.contains(Saturated::SPEED) {
        sat.insert(Saturated::SPEED);
        SPEED_SAT
    } else {
        s.speed_kmh as u32
    };
    let temp = if s.cabin_temp_c < TEMP_MIN
        || (s.cabin_temp_c == TEMP_MIN && s.saturated.contains(Saturated::TEMPERATURE))
    {
        sat.insert(Saturated::TEMPERATURE);
        0
    } else if s.cabin_temp_c > TEMP_MAX
        || (s.cabin_temp_c == TEMP_MAX && s.saturated.contains(Saturated::TEMPERATURE))
    {
        sat.insert(Saturated::TEMPERATURE);
        127
    } else {
        (s.cabin_temp_c - TEMP_MIN + 1) as u32
    };
    let odo = if s.odometer_km >= ODO_SAT {
        sat.insert(Saturated::ODOMETER);
        ODO_SAT
    } else {
        s.odometer_km
    };

    let mut v: u128 = 0; // the leading 0 bit: a status record
    let mut put = |width: u32, value: u32| v = (v << width) | value as u128;
    put(3, s.fix_age as u32);
    put(1, s.locked as u32);
    put(1, s.ignition as u32);
    put(1, s.charging as u32);
    put(23, lat);
    put(24, lon);
    put(7, soc);
    put(8, speed);
    put(7, temp);
    put(20, odo);
    let wide = v.to_be_bytes();
    let mut out = [0u8; STATUS_LEN];
    out.copy_from_slice(&wide[16 - STATUS_LEN..]);
    out
}

/// Maps `value` in [-half, +half] (1e-7 degrees) onto 0..=max, rounding to nearest.
fn quantize(value: i32, half: i64, max: u64, flag: Saturated, sat: &mut Saturated) -> u32 {
    let clamped = (value as i64).clamp(-half, half);
    if clamped != value as i64 {
        sat.insert(flag);
    }
    let shifted = (clamped + half) as u64; // 0..=2·half
    let span = 2 * half as u64;
    ((shifted * max + span / 2) / span) as u32
}

/// The inverse of [`quantize`]: the centre of the code's step, in 1e-7 degrees.
fn dequantize(code: u32, half: i64, max: u64) -> i32 {
    let span = 2 * half as u64;
    (((code as u64 * span + max / 2) / max) as i64 - half) as i32
}

#[inline]
fn decode_status(b: &[u8; STATUS_LEN], offset: usize) -> Result<Status, DecodeError> {
    let mut wide = [0u8; 16];
    wide[16 - STATUS_LEN..].copy_from_slice(b);
    let v = u128::from_be_bytes(wide);
    let field = |shift: u32, width: u32| ((v >> shift) & ((1u128 << width) - 1)) as u32;
    // bit offsets from the least significant end of the 96-bit record
    let odo = field(0, 20);
    let temp = field(20, 7);
    let speed = field(27, 8);
    let soc = field(35, 7);
    let lon = field(42, 24);
    let lat = field(66, 23);
    let flags = field(89, 3);
    let fix = field(92, 3);

    let soc_pct = match soc {
        0..=100 => Some(soc as u8),
        SOC_UNKNOWN => None,
        _ => {
            return Err(DecodeError::new(
                offset + 4,
                DecodeErrorKind::ValueOutOfRange { field: "soc_pct" },
            ));
        }
    };
    let mut saturated = Saturated::empty();
    if speed == SPEED_SAT {
        saturated.insert(Saturated::SPEED);
    }
    let cabin_temp_c = match temp {
        0 => {
            saturated.insert(Saturated::TEMPERATURE);
            TEMP_MIN
        }
        127 => {
            saturated.insert(Saturated::TEMPERATURE);
            TEMP_MAX
        }
        t => t as i16 - 1 + TEMP_MIN,
    };
    if odo == ODO_SAT {
        saturated.insert(Saturated::ODOMETER);
    }
    Ok(Status {
        latitude_e7: dequantize(lat, 900_000_000, LAT_MAX),
        longitude_e7: dequantize(lon, 1_800_000_000, LON_MAX),
        fix_age: FixAge::ALL[fix as usize],
        soc_pct,
        locked: flags & 4 != 0,
        ignition: flags & 2 != 0,
        charging: flags & 1 != 0,
        speed_kmh: speed as u16,
        cabin_temp_c,
        odometer_km: odo,
        saturated: saturated.intersection(ON_THE_WIRE),
    })
}

/// Decodes the records of an uplink payload. `fport` is the LoRaWAN fPort, or `None`
/// for Sigfox (which has none).
pub fn decode_uplink(payload: &[u8], fport: Option<u8>) -> Result<Records<'_>, DecodeError> {
    match fport {
        None | Some(TELEMETRY_FPORT) => Ok(Records {
            payload,
            pos: 0,
            failed: false,
        }),
        Some(p @ 11..=19) => Err(DecodeError::new(
            0,
            DecodeErrorKind::UnknownVersion { version: p - 9 },
        )),
        Some(p) => Err(DecodeError::new(
            0,
            DecodeErrorKind::UnexpectedPort { fport: p },
        )),
    }
}

/// The records of a payload, in order. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    payload: &'a [u8],
    pos: usize,
    failed: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.payload.len() {
            return None;
        }
        let r = decode_record(self.payload, &mut self.pos);
        self.failed = r.is_err();
        Some(r)
    }
}

fn truncated(offset: usize, needed: usize, available: usize) -> DecodeError {
    DecodeError::new(offset, DecodeErrorKind::Truncated { needed, available })
}

/// Decodes the record at `*pos` and moves `*pos` past it.
#[inline]
fn decode_record(payload: &[u8], pos: &mut usize) -> Result<Record, DecodeError> {
    let offset = *pos;
    let rest = &payload[offset..];
    let h = rest[0];
    if h & 0x80 == 0 {
        let bytes: &[u8; STATUS_LEN] = rest
            .get(..STATUS_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| truncated(offset, STATUS_LEN, rest.len()))?;
        let status = decode_status(bytes, offset)?;
        *pos += STATUS_LEN;
        return Ok(Record::Status(status));
    }
    let kind = (h >> 4) & 7;
    let len = (h & 0x0f) as usize;
    if len > MAX_TAGGED_BODY {
        return Err(DecodeError::new(
            offset,
            DecodeErrorKind::ValueOutOfRange { field: "length" },
        ));
    }
    let body = rest
        .get(1..1 + len)
        .ok_or_else(|| truncated(offset, 1 + len, rest.len()))?;
    let at = |i: usize| offset + 1 + i;
    let need = |n: usize| {
        if len < n {
            Err(DecodeError::new(
                offset,
                DecodeErrorKind::ValueOutOfRange { field: "length" },
            ))
        } else {
            Ok(())
        }
    };
    let record = match kind {
        KIND_ACK => {
            need(ACK_LEN)?;
            let result = AckResult::ALL
                .get(body[3] as usize)
                .copied()
                .ok_or(DecodeError::new(
                    at(3),
                    DecodeErrorKind::ValueOutOfRange { field: "result" },
                ))?;
            Record::Ack(Ack {
                counter: u16::from_be_bytes([body[0], body[1]]),
                opcode: body[2],
                result,
            })
        }
        KIND_EVENT => {
            need(EVENT_LEN)?;
            Record::Event(Event {
                event: EventCode(body[0]),
                value: u16::from_be_bytes([body[1], body[2]]),
                age_s: u16::from_be_bytes([body[3], body[4]]),
            })
        }
        KIND_BOOT => {
            need(BOOT_LEN)?;
            let reset_reason = ResetReason::from_u8(body[3]).ok_or(DecodeError::new(
                at(3),
                DecodeErrorKind::ValueOutOfRange {
                    field: "reset_reason",
                },
            ))?;
            Record::Boot(Boot {
                firmware: [body[0], body[1], body[2]],
                reset_reason,
            })
        }
        code => Record::Unknown(Unknown {
            code,
            body: Body::new(body).unwrap_or_default(),
        }),
    };
    *pos += 1 + len;
    Ok(record)
}

/// Encodes records one after another into `out`; returns the length and the clamped
/// fields of all of them. When `out` is too small, the error says how many bytes all the
/// records need, so that a buffer of that size takes them.
pub fn encode_uplink(
    records: &[Record],
    out: &mut [u8],
) -> Result<(usize, Saturated), EncodeError> {
    let mut pos = 0;
    let mut sat = Saturated::empty();
    for (i, r) in records.iter().enumerate() {
        let start = pos.min(out.len());
        let (n, s) = r.encode(&mut out[start..]).map_err(|_| {
            let rest: usize = records[i..].iter().map(Record::encoded_len).sum();
            EncodeError::BufferTooSmall { needed: pos + rest }
        })?;
        pos += n;
        sat.insert(s);
    }
    Ok((pos, sat))
}
