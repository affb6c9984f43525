//! CayenneLPP (Low Power Payload), so that off-the-shelf devices can be bridged too.
//!
//! Each item is `channel (1 byte) · type (1 byte) · value (big-endian)`, with the type
//! table of myDevices' published specification (IPSO object ids − 3200). Values keep
//! their integer form here; the JSON form scales them (0.1 °C, 0.0001°, …).
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};

/// A CayenneLPP value, in its wire units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "type", content = "value", rename_all = "snake_case")
)]
pub enum LppValue {
    /// 0: digital input.
    DigitalInput(u8),
    /// 1: digital output.
    DigitalOutput(u8),
    /// 2: analog input, 0.01 signed.
    AnalogInput(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale100"))] i16),
    /// 3: analog output, 0.01 signed.
    AnalogOutput(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale100"))] i16),
    /// 100: generic sensor, unsigned.
    GenericSensor(u32),
    /// 101: illuminance, lux.
    Illuminance(u16),
    /// 102: presence.
    Presence(u8),
    /// 103: temperature, 0.1 °C signed.
    Temperature(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale10"))] i16),
    /// 104: relative humidity, 0.5 %.
    Humidity(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale2"))] u8),
    /// 113: accelerometer, 0.001 G per axis.
    Accelerometer(#[cfg_attr(feature = "serde", serde(with = "crate::json::xyz1000"))] [i16; 3]),
    /// 115: barometer, 0.1 hPa.
    Barometer(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale10"))] u16),
    /// 116: voltage, 0.01 V.
    Voltage(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale100"))] u16),
    /// 117: current, 0.001 A.
    Current(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale1000"))] u16),
    /// 118: frequency, Hz.
    Frequency(u32),
    /// 120: percentage.
    Percentage(u8),
    /// 121: altitude, m signed.
    Altitude(i16),
    /// 125: concentration, ppm.
    Concentration(u16),
    /// 128: power, W.
    Power(u16),
    /// 130: distance, 0.001 m.
    Distance(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale1000"))] u32),
    /// 131: energy, 0.001 kWh.
    Energy(#[cfg_attr(feature = "serde", serde(with = "crate::json::scale1000"))] u32),
    /// 132: direction, degrees.
    Direction(u16),
    /// 133: Unix time, seconds.
    UnixTime(u32),
    /// 134: gyrometer, 0.01 °/s per axis.
    Gyrometer(#[cfg_attr(feature = "serde", serde(with = "crate::json::xyz100"))] [i16; 3]),
    /// 135: colour, RGB.
    Colour(#[cfg_attr(feature = "serde", serde(with = "crate::json::rgb"))] [u8; 3]),
    /// 136: GPS: latitude and longitude 0.0001° signed, altitude 0.01 m signed (24 bits each).
    Gps(#[cfg_attr(feature = "serde", serde(with = "crate::json::gps"))] [i32; 3]),
    /// 142: switch.
    Switch(u8),
}

/// One CayenneLPP item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LppRecord {
    /// The channel.
    pub channel: u8,
    /// The value.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub value: LppValue,
}

const I24_MIN: i32 = -(1 << 23);
const I24_MAX: i32 = (1 << 23) - 1;

impl LppValue {
    /// The type byte.
    pub const fn type_id(&self) -> u8 {
        match self {
            LppValue::DigitalInput(_) => 0,
            LppValue::DigitalOutput(_) => 1,
            LppValue::AnalogInput(_) => 2,
            LppValue::AnalogOutput(_) => 3,
            LppValue::GenericSensor(_) => 100,
            LppValue::Illuminance(_) => 101,
            LppValue::Presence(_) => 102,
            LppValue::Temperature(_) => 103,
            LppValue::Humidity(_) => 104,
            LppValue::Accelerometer(_) => 113,
            LppValue::Barometer(_) => 115,
            LppValue::Voltage(_) => 116,
            LppValue::Current(_) => 117,
            LppValue::Frequency(_) => 118,
            LppValue::Percentage(_) => 120,
            LppValue::Altitude(_) => 121,
            LppValue::Concentration(_) => 125,
            LppValue::Power(_) => 128,
            LppValue::Distance(_) => 130,
            LppValue::Energy(_) => 131,
            LppValue::Direction(_) => 132,
            LppValue::UnixTime(_) => 133,
            LppValue::Gyrometer(_) => 134,
            LppValue::Colour(_) => 135,
            LppValue::Gps(_) => 136,
            LppValue::Switch(_) => 142,
        }
    }

    /// The type's name, as the JSON form's `type` writes it.
    pub const fn name(&self) -> &'static str {
        match self {
            LppValue::DigitalInput(_) => "digital_input",
            LppValue::DigitalOutput(_) => "digital_output",
            LppValue::AnalogInput(_) => "analog_input",
            LppValue::AnalogOutput(_) => "analog_output",
            LppValue::GenericSensor(_) => "generic_sensor",
            LppValue::Illuminance(_) => "illuminance",
            LppValue::Presence(_) => "presence",
            LppValue::Temperature(_) => "temperature",
            LppValue::Humidity(_) => "humidity",
            LppValue::Accelerometer(_) => "accelerometer",
            LppValue::Barometer(_) => "barometer",
            LppValue::Voltage(_) => "voltage",
            LppValue::Current(_) => "current",
            LppValue::Frequency(_) => "frequency",
            LppValue::Percentage(_) => "percentage",
            LppValue::Altitude(_) => "altitude",
            LppValue::Concentration(_) => "concentration",
            LppValue::Power(_) => "power",
            LppValue::Distance(_) => "distance",
            LppValue::Energy(_) => "energy",
            LppValue::Direction(_) => "direction",
            LppValue::UnixTime(_) => "unix_time",
            LppValue::Gyrometer(_) => "gyrometer",
            LppValue::Colour(_) => "colour",
            LppValue::Gps(_) => "gps",
            LppValue::Switch(_) => "switch",
        }
    }

    /// The size of a value of a type, or `None` for an unknown type.
    pub const fn size_of(type_id: u8) -> Option<usize> {
        Some(match type_id {
            0 | 1 | 102 | 104 | 120 | 142 => 1,
            2 | 3 | 101 | 103 | 115 | 116 | 117 | 121 | 125 | 128 | 132 => 2,
            135 => 3,
            100 | 118 | 130 | 131 | 133 => 4,
            113 | 134 => 6,
            136 => 9,
            _ => return None,
        })
    }

    fn decode(type_id: u8, b: &[u8]) -> Option<Self> {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let i16_at = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i24_at = |i: usize| (i32::from_be_bytes([b[i], b[i + 1], b[i + 2], 0])) >> 8;
        let xyz = || [i16_at(0), i16_at(2), i16_at(4)];
        Some(match type_id {
            0 => LppValue::DigitalInput(b[0]),
            1 => LppValue::DigitalOutput(b[0]),
            2 => LppValue::AnalogInput(i16_at(0)),
            3 => LppValue::AnalogOutput(i16_at(0)),
            100 => LppValue::GenericSensor(u32_at(0)),
            101 => LppValue::Illuminance(u16_at(0)),
            102 => LppValue::Presence(b[0]),
            103 => LppValue::Temperature(i16_at(0)),
            104 => LppValue::Humidity(b[0]),
            113 => LppValue::Accelerometer(xyz()),
            115 => LppValue::Barometer(u16_at(0)),
            116 => LppValue::Voltage(u16_at(0)),
            117 => LppValue::Current(u16_at(0)),
            118 => LppValue::Frequency(u32_at(0)),
            120 => LppValue::Percentage(b[0]),
            121 => LppValue::Altitude(i16_at(0)),
            125 => LppValue::Concentration(u16_at(0)),
            128 => LppValue::Power(u16_at(0)),
            130 => LppValue::Distance(u32_at(0)),
            131 => LppValue::Energy(u32_at(0)),
            132 => LppValue::Direction(u16_at(0)),
            133 => LppValue::UnixTime(u32_at(0)),
            134 => LppValue::Gyrometer(xyz()),
            135 => LppValue::Colour([b[0], b[1], b[2]]),
            136 => LppValue::Gps([i24_at(0), i24_at(3), i24_at(6)]),
            142 => LppValue::Switch(b[0]),
            _ => return None,
        })
    }

    fn encode(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let mut put = |i: usize, bytes: &[u8]| out[i..i + bytes.len()].copy_from_slice(bytes);
        match *self {
            LppValue::DigitalInput(v)
            | LppValue::DigitalOutput(v)
            | LppValue::Presence(v)
            | LppValue::Humidity(v)
            | LppValue::Percentage(v)
            | LppValue::Switch(v) => put(0, &[v]),
            LppValue::AnalogInput(v)
            | LppValue::AnalogOutput(v)
            | LppValue::Temperature(v)
            | LppValue::Altitude(v) => put(0, &v.to_be_bytes()),
            LppValue::Illuminance(v)
            | LppValue::Barometer(v)
            | LppValue::Voltage(v)
            | LppValue::Current(v)
            | LppValue::Concentration(v)
            | LppValue::Power(v)
            | LppValue::Direction(v) => put(0, &v.to_be_bytes()),
            LppValue::GenericSensor(v)
            | LppValue::Frequency(v)
            | LppValue::Distance(v)
            | LppValue::Energy(v)
            | LppValue::UnixTime(v) => put(0, &v.to_be_bytes()),
            LppValue::Accelerometer(a) | LppValue::Gyrometer(a) => {
                for (i, v) in a.iter().enumerate() {
                    put(2 * i, &v.to_be_bytes());
                }
            }
            LppValue::Colour(c) => put(0, &c),
            LppValue::Gps(g) => {
                for (i, (v, field)) in g
                    .iter()
                    .zip(["latitude", "longitude", "altitude"])
                    .enumerate()
                {
                    if !(I24_MIN..=I24_MAX).contains(v) {
                        return Err(EncodeError::ValueOutOfRange { field });
                    }
                    put(3 * i, &v.to_be_bytes()[1..]);
                }
            }
        }
        Ok(())
    }
}

impl LppRecord {
    /// Bytes on the wire.
    pub fn encoded_len(&self) -> usize {
        2 + LppValue::size_of(self.value.type_id()).unwrap_or(0)
    }

    /// Writes the item at the start of `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        let out = out
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { needed: len })?;
        out[0] = self.channel;
        out[1] = self.value.type_id();
        self.value.encode(&mut out[2..])?;
        Ok(len)
    }
}

/// The items of a CayenneLPP payload, in order. Stops after the first error.
pub fn decode(payload: &[u8]) -> LppRecords<'_> {
    LppRecords {
        payload,
        pos: 0,
        failed: false,
    }
}

/// Iterator of [`decode`].
#[derive(Debug, Clone)]
pub struct LppRecords<'a> {
    payload: &'a [u8],
    pos: usize,
    failed: bool,
}

impl Iterator for LppRecords<'_> {
    type Item = Result<LppRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.payload.len() {
            return None;
        }
        let offset = self.pos;
        let rest = &self.payload[offset..];
        let result = (|| {
            if rest.len() < 2 {
                return Err(DecodeError::new(
                    offset,
                    DecodeErrorKind::Truncated {
                        needed: 2,
                        available: rest.len(),
                    },
                ));
            }
            let type_id = rest[1];
            let size = LppValue::size_of(type_id).ok_or(DecodeError::new(
                offset + 1,
                DecodeErrorKind::UnknownKind { kind: type_id },
            ))?;
            let body = rest.get(2..2 + size).ok_or(DecodeError::new(
                offset,
                DecodeErrorKind::Truncated {
                    needed: 2 + size,
                    available: rest.len(),
                },
            ))?;
            let value = LppValue::decode(type_id, body).ok_or(DecodeError::new(
                offset + 1,
                DecodeErrorKind::UnknownKind { kind: type_id },
            ))?;
            Ok((
                LppRecord {
                    channel: rest[0],
                    value,
                },
                2 + size,
            ))
        })();
        match result {
            Ok((rec, len)) => {
                self.pos += len;
                Some(Ok(rec))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Encodes items one after another; returns the length written.
pub fn encode(records: &[LppRecord], out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut pos = 0;
    for r in records {
        let needed = pos + r.encoded_len();
        let start = pos.min(out.len());
        pos += r.encode(&mut out[start..]).map_err(|e| match e {
            EncodeError::BufferTooSmall { .. } => EncodeError::BufferTooSmall { needed },
            other => other,
        })?;
    }
    Ok(pos)
}
