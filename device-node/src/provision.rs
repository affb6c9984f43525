//! The key block: how a node learns its LoRaWAN identity without keys in the firmware.
//!
//! The firmware image is the same for every node; each node's DevEUI, JoinEUI and AppKey
//! live in one flash page the image never covers (on the Pico: 0x101FE000, see the
//! firmware's `memory.x`). `tools/keyblock.py` writes that page as a UF2 file to drop on
//! the board after the firmware.
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `LPK1` |
//! | 4..12 | DevEUI, most significant byte first (as network servers print it) |
//! | 12..20 | JoinEUI (AppEUI), most significant byte first |
//! | 20..36 | AppKey |
//! | 36..40 | CRC-32 (IEEE 802.3, as zlib's `crc32`) of bytes 0..36, little-endian |
//!
//! Erased flash (all `0xFF`) and a block with a wrong CRC are told apart, so the firmware
//! can say which one it found.

/// The block's length in bytes.
pub const KEY_BLOCK_LEN: usize = 40;
/// The block's first four bytes.
pub const KEY_BLOCK_MAGIC: [u8; 4] = *b"LPK1";

/// A node's OTAA identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// DevEUI, most significant byte first.
    pub dev_eui: [u8; 8],
    /// JoinEUI (AppEUI), most significant byte first.
    pub join_eui: [u8; 8],
    /// AppKey.
    pub app_key: [u8; 16],
}

/// Why a key block was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBlockError {
    /// The page is erased: no keys were ever written.
    Erased,
    /// The first four bytes are not `LPK1`: something else is stored there.
    BadMagic,
    /// The CRC does not match: the block is damaged or half written.
    BadCrc {
        /// The CRC stored in the block.
        stored: u32,
        /// The CRC of its contents.
        computed: u32,
    },
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl Keys {
    /// The block to write to flash.
    pub fn to_block(&self) -> [u8; KEY_BLOCK_LEN] {
        let mut b = [0u8; KEY_BLOCK_LEN];
        b[..4].copy_from_slice(&KEY_BLOCK_MAGIC);
        b[4..12].copy_from_slice(&self.dev_eui);
        b[12..20].copy_from_slice(&self.join_eui);
        b[20..36].copy_from_slice(&self.app_key);
        let crc = crc32(&b[..36]);
        b[36..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a block written by [`Keys::to_block`] (or `tools/keyblock.py`).
    pub fn from_block(b: &[u8; KEY_BLOCK_LEN]) -> Result<Keys, KeyBlockError> {
        if b.iter().all(|&x| x == 0xFF) {
            return Err(KeyBlockError::Erased);
        }
        if b[..4] != KEY_BLOCK_MAGIC {
            return Err(KeyBlockError::BadMagic);
        }
        let stored = u32::from_le_bytes([b[36], b[37], b[38], b[39]]);
        let computed = crc32(&b[..36]);
        if stored != computed {
            return Err(KeyBlockError::BadCrc { stored, computed });
        }
        let mut k = Keys {
            dev_eui: [0; 8],
            join_eui: [0; 8],
            app_key: [0; 16],
        };
        k.dev_eui.copy_from_slice(&b[4..12]);
        k.join_eui.copy_from_slice(&b[12..20]);
        k.app_key.copy_from_slice(&b[20..36]);
        Ok(k)
    }

    /// The DevEUI least significant byte first, as LoRaWAN frames (and the `lorawan`
    /// crate's `DevEui::from([u8; 8])`) carry it.
    pub fn dev_eui_lsb(&self) -> [u8; 8] {
        let mut e = self.dev_eui;
        e.reverse();
        e
    }

    /// The JoinEUI least significant byte first.
    pub fn join_eui_lsb(&self) -> [u8; 8] {
        let mut e = self.join_eui;
        e.reverse();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Keys {
        Keys {
            dev_eui: [0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x01],
            join_eui: [0; 8],
            app_key: [
                0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF,
                0x4F, 0x3C,
            ],
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // the CRC-32 catalogue's check value for "123456789"
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn block_matches_the_one_tools_keyblock_py_writes() {
        // `python3 tools/keyblock.py --hex 70B3D57ED0000001 0000000000000000
        //  2B7E151628AED2A6ABF7158809CF4F3C` (zlib computes the CRC there)
        let expected = "4c504b3170b3d57ed000000100000000000000002b7e151628aed2a6abf7158809cf4f3c\
                        a6a82a11";
        let block = example().to_block();
        let hex: String = block.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_eq!(Keys::from_block(&block), Ok(example()));
    }

    #[test]
    fn erased_foreign_and_damaged_blocks_are_told_apart() {
        assert_eq!(
            Keys::from_block(&[0xFF; KEY_BLOCK_LEN]),
            Err(KeyBlockError::Erased)
        );
        let mut b = example().to_block();
        b[0] = b'X';
        assert_eq!(Keys::from_block(&b), Err(KeyBlockError::BadMagic));
        let mut b = example().to_block();
        b[25] ^= 0x01;
        assert!(matches!(
            Keys::from_block(&b),
            Err(KeyBlockError::BadCrc { .. })
        ));
    }

    #[test]
    fn euis_go_on_the_air_least_significant_byte_first() {
        let k = example();
        assert_eq!(
            k.dev_eui_lsb(),
            [0x01, 0x00, 0x00, 0xD0, 0x7E, 0xD5, 0xB3, 0x70]
        );
    }
}
