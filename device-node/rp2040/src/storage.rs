//! The two flash pages outside the image (see `memory.x`): the key block, written once
//! per device, and the node state, rewritten after each executed command so a reboot
//! never executes a command twice.
use device_node::node::NodeState;
use device_node::provision::{KEY_BLOCK_LEN, KeyBlockError, Keys};
use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::peripherals::FLASH;

pub const FLASH_SIZE: usize = 2 * 1024 * 1024;
const SECTOR: u32 = 4096;
/// Offsets from the start of flash (0x10000000).
pub const KEY_PAGE: u32 = FLASH_SIZE as u32 - 2 * SECTOR;
pub const STATE_PAGE: u32 = FLASH_SIZE as u32 - SECTOR;

/// The state page: a magic, the 11 state bytes, and a CRC-32.
const STATE_MAGIC: [u8; 4] = *b"LPS1";
const STATE_LEN: usize = 4 + 11 + 4;

include!(concat!(env!("OUT_DIR"), "/build_keys.rs"));

pub struct Storage<'d> {
    flash: Flash<'d, FLASH, Blocking, FLASH_SIZE>,
}

/// Where the keys came from.
#[derive(defmt::Format)]
pub enum KeySource {
    Build,
    FlashBlock,
}

impl<'d> Storage<'d> {
    pub fn new(flash: Flash<'d, FLASH, Blocking, FLASH_SIZE>) -> Self {
        Storage { flash }
    }

    /// The keys baked in at build time, else the key block.
    pub fn keys(&mut self) -> Result<(Keys, KeySource), KeyBlockError> {
        if let Some(k) = BUILD_KEYS {
            return Ok((k, KeySource::Build));
        }
        let mut b = [0u8; KEY_BLOCK_LEN];
        if self.flash.blocking_read(KEY_PAGE, &mut b).is_err() {
            return Err(KeyBlockError::Erased);
        }
        Keys::from_block(&b).map(|k| (k, KeySource::FlashBlock))
    }

    /// The persisted state; erased flash or a damaged page is a fresh node.
    pub fn load_state(&mut self) -> NodeState {
        let mut b = [0u8; STATE_LEN];
        if self.flash.blocking_read(STATE_PAGE, &mut b).is_err() || b[..4] != STATE_MAGIC {
            return NodeState::default();
        }
        let crc = u32::from_le_bytes([b[15], b[16], b[17], b[18]]);
        if crc != device_node::provision::crc32(&b[..15]) {
            defmt::warn!("node state page damaged: starting fresh");
            return NodeState::default();
        }
        let mut s = [0u8; 11];
        s.copy_from_slice(&b[4..15]);
        NodeState::from_bytes(&s)
    }

    /// Writes the state (erase + one page program, ~50 ms with interrupts held off).
    pub fn save_state(&mut self, state: &NodeState) {
        let mut page = [0xFFu8; 256];
        page[..4].copy_from_slice(&STATE_MAGIC);
        page[4..15].copy_from_slice(&state.to_bytes());
        let crc = device_node::provision::crc32(&page[..15]);
        page[15..19].copy_from_slice(&crc.to_le_bytes());
        let r = self
            .flash
            .blocking_erase(STATE_PAGE, STATE_PAGE + SECTOR)
            .and_then(|()| self.flash.blocking_write(STATE_PAGE, &page));
        if let Err(e) = r {
            defmt::error!("saving the node state failed: {}", e);
        }
    }
}
