//! Authentication for the bearers whose link layer authenticates nothing (cellular TCP,
//! and SMS): a 4-byte truncated AES-CMAC, keyed per device.
//!
//! On LoRaWAN and Sigfox the network authenticates every frame; on a plain TCP
//! connection anyone on the path could inject an unlock. So on these bearers:
//! - every command frame travels **sealed**: the 8-byte frame, then the first 4 bytes of
//!   `AES-CMAC(key, "F" ‖ len(id) ‖ id ‖ frame)` ([`seal_frame`], [`open_frame`]); the
//!   frame's counter is inside the frame, so the MAC covers device, counter and frame;
//! - every request the device sends carries the first 4 bytes of
//!   `AES-CMAC(key, "R" ‖ len(id) ‖ id ‖ request)` over its request counter and body
//!   ([`request_mac`]);
//! - a wake-up SMS carries `AES-CMAC(key, "W" ‖ len(id) ‖ id ‖ wake)` ([`wake_mac`]).
//!
//! `id` is the device id as the bridge writes it: lowercase hex, ASCII. The one-letter
//! prefix keeps a request MAC from ever passing as a frame MAC. A 4-byte MAC gives a
//! forger one chance in 2³² per try; every try costs a request the bridge answers with
//! `401`, and a sealed frame with a bad MAC is dropped by the node unacknowledged.
//!
//! Replay: a captured sealed frame sent again is refused by the [`crate::replay`]
//! window (`already_executed`), and a captured request by the bridge's request counter.
//! `docs/wire-format.md`, "Sealed frames", has the layout and worked examples, and
//! `tools/wire_vectors.py` computes the vectors' MACs independently.
use crate::command::FRAME_LEN;
use aes::Aes128;
use cmac::{Cmac, Mac};

/// Bytes of a truncated MAC.
pub const MAC_LEN: usize = 4;
/// A sealed command frame: the 8-byte frame and its MAC.
pub const SEALED_FRAME_LEN: usize = FRAME_LEN + MAC_LEN;
/// The longest device id a MAC covers (a cellular device id: 1 to 32 hex digits).
pub const MAX_ID_LEN: usize = 32;

/// What a MAC authenticates; its byte starts the MAC's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// A command frame, bridge to device.
    Frame = b'F' as isize,
    /// A request, device to bridge.
    Request = b'R' as isize,
    /// A wake-up SMS, bridge to device.
    Wake = b'W' as isize,
}

/// A device's 128-bit key for sealed frames and requests.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey([u8; 16]);

impl core::fmt::Debug for DeviceKey {
    /// Never the key itself: it would end up in logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

impl DeviceKey {
    /// The key of these 16 bytes.
    pub const fn new(bytes: [u8; 16]) -> Self {
        DeviceKey(bytes)
    }

    fn mac(&self, domain: Domain, device_id: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut m = <Cmac<Aes128> as cmac::digest::KeyInit>::new(&self.0.into());
        m.update(&[domain as u8, device_id.len().min(255) as u8]);
        m.update(device_id);
        for p in parts {
            m.update(p);
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// Compares two MACs in constant time.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8]) -> bool {
    if b.len() != MAC_LEN {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The sealed form of a frame for the device `device_id`.
pub fn seal_frame(
    key: &DeviceKey,
    device_id: &[u8],
    frame: &[u8; FRAME_LEN],
) -> [u8; SEALED_FRAME_LEN] {
    let mut out = [0u8; SEALED_FRAME_LEN];
    out[..FRAME_LEN].copy_from_slice(frame);
    out[FRAME_LEN..].copy_from_slice(&key.mac(Domain::Frame, device_id, &[frame]));
    out
}

/// The frame inside a sealed frame, when its MAC is right for this device and key.
pub fn open_frame(
    key: &DeviceKey,
    device_id: &[u8],
    sealed: &[u8; SEALED_FRAME_LEN],
) -> Option<[u8; FRAME_LEN]> {
    let mut frame = [0u8; FRAME_LEN];
    frame.copy_from_slice(&sealed[..FRAME_LEN]);
    let expected = key.mac(Domain::Frame, device_id, &[&frame]);
    mac_eq(&expected, &sealed[FRAME_LEN..]).then_some(frame)
}

/// The MAC of a request: `request` is everything the device sends before the MAC.
pub fn request_mac(key: &DeviceKey, device_id: &[u8], request: &[u8]) -> [u8; MAC_LEN] {
    key.mac(Domain::Request, device_id, &[request])
}

/// The MAC of a wake-up SMS ([`crate::sms`]): `wake` is its bytes before the MAC.
pub fn wake_mac(key: &DeviceKey, device_id: &[u8], wake: &[u8]) -> [u8; MAC_LEN] {
    key.mac(Domain::Wake, device_id, &[wake])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: DeviceKey = DeviceKey::new([
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f,
        0x3c,
    ]);

    #[test]
    fn cmac_matches_rfc_4493() {
        // RFC 4493, example 2 (16 bytes), through the same primitive the MACs use
        let mut m = <Cmac<Aes128> as cmac::digest::KeyInit>::new(&KEY.0.into());
        m.update(&[
            0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93,
            0x17, 0x2a,
        ]);
        let t = m.finalize().into_bytes();
        assert_eq!(t[..4], [0x07, 0x0a, 0x16, 0xb4]);
    }

    #[test]
    fn a_sealed_frame_opens_only_for_its_device_and_key() {
        let frame = [0x02, 0x00, 0x2a, 0x00, 0x1e, 0, 0, 0];
        let sealed = seal_frame(&KEY, b"cafe01", &frame);
        assert_eq!(open_frame(&KEY, b"cafe01", &sealed), Some(frame));
        assert_eq!(open_frame(&KEY, b"cafe02", &sealed), None);
        let other = DeviceKey::new([7; 16]);
        assert_eq!(open_frame(&other, b"cafe01", &sealed), None);
        for i in 0..SEALED_FRAME_LEN {
            let mut bad = sealed;
            bad[i] ^= 0x01;
            assert_eq!(open_frame(&KEY, b"cafe01", &bad), None, "byte {i} flipped");
        }
    }

    #[test]
    fn request_and_frame_macs_differ_on_the_same_bytes() {
        let bytes = [0x02, 0x00, 0x2a, 0x00, 0x1e, 0, 0, 0];
        let frame_mac = &seal_frame(&KEY, b"cafe01", &bytes)[FRAME_LEN..];
        assert_ne!(frame_mac, request_mac(&KEY, b"cafe01", &bytes));
    }

    #[test]
    fn the_key_stays_out_of_debug_output() {
        assert_eq!(format!("{KEY:?}"), "DeviceKey(..)");
    }
}
