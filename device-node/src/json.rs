//! The JSON form (feature `serde`): scaled numbers, hex strings and flag lists.
//!
//! Numbers scaled on the wire (1e-7 degrees, 0.1 °C, …) appear in JSON in their natural
//! unit, and are rounded to the nearest wire step when read back, so that every value a
//! decoder produced encodes back to the same bytes.
use crate::telemetry::{EventCode, Saturated};
use core::fmt;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Rounds half away from zero; `None` when not finite or beyond ±2⁵³.
fn round(x: f64) -> Option<i64> {
    if !x.is_finite() || x.abs() > 9.0e15 {
        return None;
    }
    Some(if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    })
}

fn from_scaled<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
    scale: f64,
) -> Result<T, D::Error> {
    let x = f64::deserialize(d)?;
    round(x * scale)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| de::Error::custom(format_args!("{x} is out of range")))
}

macro_rules! scaled {
    ($name:ident, $scale:expr) => {
        #[doc = concat!("An integer in units of 1/", stringify!($scale), ", as a JSON number.")]
        pub mod $name {
            use serde::{Deserializer, Serializer};
            /// Serialises the scaled value.
            pub fn serialize<S: Serializer, T: Copy + Into<f64>>(
                v: &T,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.serialize_f64((*v).into() / $scale as f64)
            }
            /// Reads a number and rounds it to the wire step.
            pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
                d: D,
            ) -> Result<T, D::Error> {
                super::from_scaled(d, $scale as f64)
            }
        }
    };
}

scaled!(e7, 10_000_000);
scaled!(scale2, 2);
scaled!(scale10, 10);
scaled!(scale100, 100);
scaled!(scale1000, 1000);

macro_rules! xyz {
    ($name:ident, $scale:expr) => {
        #[doc = concat!("Three axes in units of 1/", stringify!($scale), ", as {x, y, z}.")]
        pub mod $name {
            use serde::{Deserialize, Deserializer, Serialize, Serializer};
            #[derive(Serialize, Deserialize)]
            struct Xyz {
                x: f64,
                y: f64,
                z: f64,
            }
            /// Serialises {x, y, z}.
            pub fn serialize<S: Serializer>(v: &[i16; 3], s: S) -> Result<S::Ok, S::Error> {
                let f = |i: usize| v[i] as f64 / $scale as f64;
                Xyz {
                    x: f(0),
                    y: f(1),
                    z: f(2),
                }
                .serialize(s)
            }
            /// Reads {x, y, z}.
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[i16; 3], D::Error> {
                let v = Xyz::deserialize(d)?;
                let f = |x: f64| {
                    super::round(x * $scale as f64)
                        .and_then(|r| i16::try_from(r).ok())
                        .ok_or_else(|| {
                            serde::de::Error::custom(format_args!("{x} is out of range"))
                        })
                };
                Ok([f(v.x)?, f(v.y)?, f(v.z)?])
            }
        }
    };
}

xyz!(xyz100, 100);
xyz!(xyz1000, 1000);

/// GPS as {latitude, longitude, altitude}: 0.0001°, 0.0001°, 0.01 m.
pub mod gps {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    #[derive(Serialize, Deserialize)]
    struct Gps {
        latitude: f64,
        longitude: f64,
        altitude: f64,
    }
    /// Serialises the position.
    pub fn serialize<S: Serializer>(v: &[i32; 3], s: S) -> Result<S::Ok, S::Error> {
        Gps {
            latitude: v[0] as f64 / 10_000.0,
            longitude: v[1] as f64 / 10_000.0,
            altitude: v[2] as f64 / 100.0,
        }
        .serialize(s)
    }
    /// Reads the position (each 24 bits on the wire).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[i32; 3], D::Error> {
        let g = Gps::deserialize(d)?;
        let f = |x: f64, scale: f64| {
            super::round(x * scale)
                .filter(|r| (-(1 << 23)..(1 << 23)).contains(r))
                .map(|r| r as i32)
                .ok_or_else(|| serde::de::Error::custom(format_args!("{x} is out of range")))
        };
        Ok([
            f(g.latitude, 1e4)?,
            f(g.longitude, 1e4)?,
            f(g.altitude, 1e2)?,
        ])
    }
}

/// A colour as {r, g, b}.
pub mod rgb {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    #[derive(Serialize, Deserialize)]
    struct Rgb {
        r: u8,
        g: u8,
        b: u8,
    }
    /// Serialises {r, g, b}.
    pub fn serialize<S: Serializer>(v: &[u8; 3], s: S) -> Result<S::Ok, S::Error> {
        Rgb {
            r: v[0],
            g: v[1],
            b: v[2],
        }
        .serialize(s)
    }
    /// Reads {r, g, b}.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 3], D::Error> {
        let c = Rgb::deserialize(d)?;
        Ok([c.r, c.g, c.b])
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Parses hex into `out`, returning the number of bytes.
fn parse_hex<E: de::Error>(s: &str, out: &mut [u8]) -> Result<usize, E> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 || b.len() / 2 > out.len() {
        return Err(E::custom(format_args!(
            "\"{s}\" must be an even number of hex digits, at most {}",
            2 * out.len()
        )));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(E::custom(format_args!("\"{s}\" is not hex")));
        };
        out[i] = hi << 4 | lo;
    }
    Ok(b.len() / 2)
}

struct HexVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for HexVisitor<N> {
    type Value = ([u8; N], usize);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a hex string of at most {N} bytes")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let mut out = [0u8; N];
        let n = parse_hex(s, &mut out)?;
        Ok((out, n))
    }
}

/// 5 bytes as hex (a raw command's data); shorter input is zero-padded.
pub mod hex5 {
    use super::*;
    /// Serialises as hex.
    pub fn serialize<S: Serializer>(v: &[u8; 5], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Hex(v))
    }
    /// Reads up to 10 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 5], D::Error> {
        Ok(d.deserialize_str(HexVisitor::<5>)?.0)
    }
}

/// An unknown record's body as hex.
pub mod hex_body {
    use super::*;
    use crate::telemetry::{Body, MAX_TAGGED_BODY};
    /// Serialises as hex.
    pub fn serialize<S: Serializer>(v: &Body, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Hex(v.as_slice()))
    }
    /// Reads up to 22 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        let (bytes, n) = d.deserialize_str(HexVisitor::<MAX_TAGGED_BODY>)?;
        Ok(Body::new(&bytes[..n]).unwrap_or_default())
    }
}

impl Serialize for Saturated {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Saturated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Flag(Saturated);
        impl<'de> Deserialize<'de> for Flag {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Flag;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<Flag, E> {
                        Saturated::NAMES
                            .iter()
                            .find(|(_, n)| *n == s)
                            .map(|(f, _)| Flag(*f))
                            .ok_or_else(|| {
                                E::custom(format_args!("\"{s}\" is not a field that saturates"))
                            })
                    }
                }
                d.deserialize_str(V)
            }
        }
        struct SeqV;
        impl<'de> Visitor<'de> for SeqV {
            type Value = Saturated;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of field names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Saturated, A::Error> {
                let mut s = Saturated::empty();
                while let Some(Flag(f)) = seq.next_element()? {
                    s.insert(f);
                }
                Ok(s)
            }
        }
        d.deserialize_seq(SeqV)
    }
}

impl Serialize for EventCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.collect_str(&format_args!("event_{}", self.0)),
        }
    }
}

impl<'de> Deserialize<'de> for EventCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EventCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event name such as \"crash\", or \"event_N\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EventCode, E> {
                if let Some((code, _)) = EventCode::NAMES.iter().find(|(_, n)| *n == s) {
                    return Ok(EventCode(*code));
                }
                s.strip_prefix("event_")
                    .and_then(|n| n.parse::<u8>().ok())
                    .map(EventCode)
                    .ok_or_else(|| E::custom(format_args!("unknown event \"{s}\"")))
            }
        }
        d.deserialize_str(V)
    }
}
