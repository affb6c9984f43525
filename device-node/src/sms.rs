//! Binary SMS, both ends: the user data of a mobile-terminated (bridge to device) and a
//! mobile-originated (device to bridge) message, for a device that also has the cellular
//! long poll ([`crate::cellular`]): the same key, the same request counter, the same
//! sealed frames.
//!
//! Every message is 8-bit data (data coding `0x04`) with a user data header carrying 16-bit
//! application ports (TS 23.040 §9.2.3.24.4, IEI `0x05`), 7 of its 140 bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | UDHL `0x06` |
//! | 1 | IEI `0x05` (application port addressing, 16-bit) |
//! | 2 | IEDL `0x04` |
//! | 3–4 | destination port |
//! | 5–6 | originator port |
//!
//! The 133 bytes after it carry one of:
//! - **frames** (bridge to device): `0x01`, then up to 11 sealed frames of 12 bytes;
//! - **wake-up** (bridge to device): `0x02`, the bridge's time (u32 seconds), and a MAC
//!   under the device's key ([`crate::seal::wake_mac`]): the device polls at once;
//! - **request** (device to bridge): a poll body ([`crate::cellular`]) whose byte 0 is
//!   `0x02` (`0x82` with an acknowledged frame counter) instead of `0x01`; the MAC covers
//!   byte 0, so a poll can never pass as an SMS or the other way round.
use crate::cellular::{BufferTooSmall, Client, Poll, PollError, open_request};
use crate::seal::{DeviceKey, MAC_LEN, SEALED_FRAME_LEN, mac_eq, wake_mac};

/// Bytes of the user data header with 16-bit ports.
pub const UDH_LEN: usize = 7;
/// Bytes of 8-bit user data one SMS carries.
pub const USER_DATA_MAX: usize = 140;
/// What is left after the port header.
pub const PAYLOAD_MAX: usize = USER_DATA_MAX - UDH_LEN;
/// The data coding of 8-bit binary data.
pub const DATA_CODING_8BIT: u8 = 0x04;
/// `esm_class` bit: the user data starts with a header (UDHI).
pub const ESM_UDHI: u8 = 0x40;
/// The information element of 16-bit application port addressing.
pub const IEI_PORTS_16: u8 = 0x05;
/// A payload of sealed frames.
pub const MT_FRAMES: u8 = 0x01;
/// A wake-up payload.
pub const MT_WAKE: u8 = 0x02;
/// Byte 0 of a device's request sent by SMS.
pub const MO_VERSION: u8 = 0x02;
/// Sealed frames one SMS carries: (133 − 1) / 12.
pub const MAX_FRAMES: usize = (PAYLOAD_MAX - 1) / SEALED_FRAME_LEN;
/// Bytes of a wake-up payload.
pub const WAKE_LEN: usize = 1 + 4 + MAC_LEN;
/// The longest records an SMS request carries (header and MAC take 13 bytes).
pub const MAX_RECORDS: usize = PAYLOAD_MAX - crate::cellular::MIN_BODY_LEN;

/// What is wrong with an SMS's user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsError {
    /// Longer than 140 bytes.
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The header's length runs past the user data, or an element runs past the header.
    BadHeader {
        /// The byte offset at fault.
        offset: usize,
    },
    /// No 16-bit port element.
    NoPorts,
    /// The port is not the one expected.
    WrongPort {
        /// The destination port it names.
        port: u16,
    },
    /// The payload's first byte is no known kind.
    UnknownKind(u8),
    /// The payload's length does not fit its kind.
    BadLength {
        /// Its length.
        len: usize,
    },
    /// The wake-up's MAC is not this device's.
    BadMac,
}

impl core::fmt::Display for SmsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmsError::TooLong { len } => {
                write!(f, "user data of {len} bytes: an SMS carries at most 140")
            }
            SmsError::BadHeader { offset } => {
                write!(f, "user data header: byte {offset} runs past its length")
            }
            SmsError::NoPorts => {
                f.write_str("user data header has no 16-bit port element (IEI 0x05)")
            }
            SmsError::WrongPort { port } => {
                write!(f, "destination port {port} is not this application's")
            }
            SmsError::UnknownKind(k) => write!(
                f,
                "payload byte 0 is {k:#04x}: expected 0x01 (frames) or 0x02 (wake-up)"
            ),
            SmsError::BadLength { len } => {
                write!(f, "payload of {len} bytes does not fit its kind")
            }
            SmsError::BadMac => f.write_str("the MAC does not match"),
        }
    }
}

/// The port header: to `dest_port`, from `src_port`.
pub const fn udh(dest_port: u16, src_port: u16) -> [u8; UDH_LEN] {
    let d = dest_port.to_be_bytes();
    let s = src_port.to_be_bytes();
    [0x06, IEI_PORTS_16, 0x04, d[0], d[1], s[0], s[1]]
}

/// Ports of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The destination port.
    pub dest: u16,
    /// The originator port.
    pub src: u16,
}

/// Splits user data (with its header, UDHI set) into its ports and payload. Other
/// information elements in the header are skipped.
pub fn split_user_data(ud: &[u8]) -> Result<(Ports, &[u8]), SmsError> {
    if ud.len() > USER_DATA_MAX {
        return Err(SmsError::TooLong { len: ud.len() });
    }
    let udhl = *ud.first().ok_or(SmsError::BadHeader { offset: 0 })? as usize;
    if 1 + udhl > ud.len() {
        return Err(SmsError::BadHeader { offset: 0 });
    }
    let header = &ud[1..1 + udhl];
    let mut ports = None;
    let mut i = 0;
    while i < header.len() {
        if i + 2 > header.len() {
            return Err(SmsError::BadHeader { offset: 1 + i });
        }
        let (iei, len) = (header[i], header[i + 1] as usize);
        let body = header
            .get(i + 2..i + 2 + len)
            .ok_or(SmsError::BadHeader { offset: 2 + i })?;
        if iei == IEI_PORTS_16 && len == 4 {
            ports = Some(Ports {
                dest: u16::from_be_bytes([body[0], body[1]]),
                src: u16::from_be_bytes([body[2], body[3]]),
            });
        }
        i += 2 + len;
    }
    Ok((ports.ok_or(SmsError::NoPorts)?, &ud[1 + udhl..]))
}

/// What a device reads from a mobile-terminated SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mt<'a> {
    /// Sealed frames, to hand to [`Client::answer`].
    Frames(&'a [u8]),
    /// Poll now.
    Wake {
        /// The bridge's time when it sent it, seconds since the epoch.
        at_s: u32,
    },
}

/// Writes a frames payload: `0x01` and the sealed frames. Returns its length.
pub fn frames_payload(sealed: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let len = 1 + sealed.len();
    if sealed.len() > MAX_FRAMES * SEALED_FRAME_LEN || out.len() < len {
        return Err(BufferTooSmall);
    }
    out[0] = MT_FRAMES;
    out[1..len].copy_from_slice(sealed);
    Ok(len)
}

/// A wake-up payload for the device `device_id`.
pub fn wake_payload(key: &DeviceKey, device_id: &[u8], at_s: u32) -> [u8; WAKE_LEN] {
    let mut out = [0u8; WAKE_LEN];
    out[0] = MT_WAKE;
    out[1..5].copy_from_slice(&at_s.to_be_bytes());
    let mac = wake_mac(key, device_id, &out[..5]);
    out[5..].copy_from_slice(&mac);
    out
}

/// Reads a mobile-terminated payload (after the header). A wake-up must carry this
/// device's MAC; frames carry their own and are checked one by one by
/// [`Client::answer`].
pub fn parse_mt<'a>(
    key: &DeviceKey,
    device_id: &[u8],
    payload: &'a [u8],
) -> Result<Mt<'a>, SmsError> {
    match payload.first() {
        Some(&MT_FRAMES) => {
            let frames = &payload[1..];
            if frames.is_empty() || frames.len() % SEALED_FRAME_LEN != 0 {
                return Err(SmsError::BadLength { len: payload.len() });
            }
            Ok(Mt::Frames(frames))
        }
        Some(&MT_WAKE) => {
            if payload.len() != WAKE_LEN {
                return Err(SmsError::BadLength { len: payload.len() });
            }
            let expected = wake_mac(key, device_id, &payload[..5]);
            if !mac_eq(&expected, &payload[5..]) {
                return Err(SmsError::BadMac);
            }
            Ok(Mt::Wake {
                at_s: u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]),
            })
        }
        Some(&k) => Err(SmsError::UnknownKind(k)),
        None => Err(SmsError::BadLength { len: 0 }),
    }
}

impl Client {
    /// Writes the next request as an SMS payload (without the port header): the same
    /// counter as the polls, byte 0 [`MO_VERSION`]. Returns its length.
    pub fn sms_body(&mut self, records: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        if records.len() > MAX_RECORDS {
            return Err(BufferTooSmall);
        }
        self.body_of(MO_VERSION, 0, records, out)
    }
}

/// Reads a device's SMS request (payload after the header) and checks its MAC.
pub fn open_mo<'a>(
    key: &DeviceKey,
    device_id: &[u8],
    payload: &'a [u8],
) -> Result<Poll<'a>, PollError> {
    open_request(key, device_id, payload, MO_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cellular::open_poll;

    const KEY: DeviceKey = DeviceKey::new([7; 16]);

    #[test]
    fn the_header_is_ts_23_040_ports() {
        assert_eq!(
            udh(0x1234, 0xbeef),
            [0x06, 0x05, 0x04, 0x12, 0x34, 0xbe, 0xef]
        );
        let mut ud = udh(9200, 9201).to_vec();
        ud.extend_from_slice(b"xyz");
        let (ports, payload) = split_user_data(&ud).unwrap();
        assert_eq!((ports.dest, ports.src, payload), (9200, 9201, &b"xyz"[..]));
    }

    #[test]
    fn other_elements_are_skipped_and_bad_headers_named() {
        // a concatenation element (IEI 0x00, 3 bytes) before the ports
        let ud = [
            0x0b, 0x00, 0x03, 0x01, 0x02, 0x01, 0x05, 0x04, 0x00, 0x10, 0x00, 0x11, 0xaa,
        ];
        let (ports, payload) = split_user_data(&ud).unwrap();
        assert_eq!((ports.dest, payload), (16, &[0xaa][..]));
        assert_eq!(split_user_data(&[]), Err(SmsError::BadHeader { offset: 0 }));
        assert_eq!(
            split_user_data(&[0x06, 0x05]),
            Err(SmsError::BadHeader { offset: 0 })
        );
        assert_eq!(
            split_user_data(&[0x02, 0x05, 0x04]),
            Err(SmsError::BadHeader { offset: 2 })
        );
        assert_eq!(
            split_user_data(&[0x03, 0x00, 0x01, 0x00]),
            Err(SmsError::NoPorts)
        );
        assert_eq!(
            split_user_data(&[0u8; 141]),
            Err(SmsError::TooLong { len: 141 })
        );
    }

    #[test]
    fn eleven_frames_fill_an_sms() {
        assert_eq!(MAX_FRAMES, 11);
        let mut out = [0u8; PAYLOAD_MAX];
        let sealed = [0u8; 11 * 12];
        assert_eq!(frames_payload(&sealed, &mut out), Ok(PAYLOAD_MAX));
        assert_eq!(
            frames_payload(&[0u8; 12 * 12], &mut [0u8; 200]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn a_wake_up_opens_only_for_its_device() {
        let w = wake_payload(&KEY, b"ce11", 1_700_000_000);
        assert_eq!(
            parse_mt(&KEY, b"ce11", &w),
            Ok(Mt::Wake {
                at_s: 1_700_000_000
            })
        );
        assert_eq!(parse_mt(&KEY, b"ce12", &w), Err(SmsError::BadMac));
        assert_eq!(
            parse_mt(&KEY, b"ce11", &w[..8]),
            Err(SmsError::BadLength { len: 8 })
        );
        assert_eq!(
            parse_mt(&KEY, b"ce11", &[0x03]),
            Err(SmsError::UnknownKind(3))
        );
        assert_eq!(
            parse_mt(&KEY, b"ce11", &[0x01, 1, 2]),
            Err(SmsError::BadLength { len: 3 })
        );
    }

    #[test]
    fn an_sms_request_is_never_a_poll_nor_the_reverse() {
        let mut c = Client::new(KEY, "ce11", 5);
        let mut out = [0u8; 64];
        let n = c.sms_body(&[0x01, 0x02], &mut out).unwrap();
        let mo = open_mo(&KEY, b"ce11", &out[..n]).unwrap();
        assert_eq!((mo.counter, mo.records), (5, &[0x01, 0x02][..]));
        assert_eq!(
            open_poll(&KEY, b"ce11", &out[..n]),
            Err(PollError::UnknownVersion(2))
        );
        let n = c.body(0, &[], &mut out).unwrap();
        assert_eq!(c.counter(), 7, "one counter for both bearers");
        assert_eq!(
            open_mo(&KEY, b"ce11", &out[..n]),
            Err(PollError::UnknownVersion(1))
        );
    }
}
