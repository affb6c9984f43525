//! Time on air of a LoRa (or FSK) frame.
//!
//! The one implementation of the formula in Semtech's application note AN1200.13
//! ("LoRa Modem Designer's Guide") and the SX1276 datasheet (section 4.1.1.7):
//!
//! ```text
//! T_sym      = 2^SF / BW
//! T_preamble = (n_preamble + 4.25) · T_sym
//! n_payload  = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))) · (CR + 4), 0)
//! T_packet   = T_preamble + n_payload · T_sym
//! ```
//!
//! Integer arithmetic only (in quarter symbols), so it is exact, `no_std` and cheap enough
//! for the node to run before every uplink.
use core::time::Duration;

/// LoRa coding rate 4/5 … 4/8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodingRate {
    /// 4/5, LoRaWAN's rate.
    Cr45 = 1,
    /// 4/6.
    Cr46 = 2,
    /// 4/7.
    Cr47 = 3,
    /// 4/8.
    Cr48 = 4,
}

/// Everything the LoRa time-on-air formula depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraParams {
    /// Spreading factor, 6..=12.
    pub spreading_factor: u8,
    /// Bandwidth in Hz (125 000, 250 000, 500 000, …).
    pub bandwidth_hz: u32,
    /// Coding rate.
    pub coding_rate: CodingRate,
    /// Programmed preamble length in symbols (LoRaWAN: 8).
    pub preamble_symbols: u16,
    /// Explicit header (LoRaWAN: always).
    pub explicit_header: bool,
    /// Payload CRC (LoRaWAN: on for uplinks, off for downlinks).
    pub crc: bool,
    /// Low data rate optimisation; `None` enables it, as LoRaWAN does, when a symbol
    /// lasts 16 ms or more (SF11 and SF12 at 125 kHz).
    pub low_data_rate_optimize: Option<bool>,
}

impl LoraParams {
    /// LoRaWAN uplink parameters for a spreading factor and bandwidth: CR 4/5, preamble 8,
    /// explicit header, CRC on, LDRO automatic.
    pub const fn lorawan_uplink(spreading_factor: u8, bandwidth_hz: u32) -> Self {
        LoraParams {
            spreading_factor,
            bandwidth_hz,
            coding_rate: CodingRate::Cr45,
            preamble_symbols: 8,
            explicit_header: true,
            crc: true,
            low_data_rate_optimize: None,
        }
    }

    /// The same for a downlink: no payload CRC.
    pub const fn lorawan_downlink(spreading_factor: u8, bandwidth_hz: u32) -> Self {
        let mut p = Self::lorawan_uplink(spreading_factor, bandwidth_hz);
        p.crc = false;
        p
    }

    fn ldro(&self) -> bool {
        match self.low_data_rate_optimize {
            Some(v) => v,
            // T_sym >= 16 ms  <=>  2^SF * 1000 >= 16 * BW
            None => (1u64 << self.spreading_factor) * 1000 >= 16 * self.bandwidth_hz as u64,
        }
    }

    /// Number of payload symbols for a PHY payload of `len` bytes.
    pub fn payload_symbols(&self, len: usize) -> u32 {
        let sf = self.spreading_factor as i64;
        let num = 8 * len as i64 - 4 * sf + 28 + if self.crc { 16 } else { 0 }
            - if self.explicit_header { 0 } else { 20 };
        let den = 4 * (sf - if self.ldro() { 2 } else { 0 });
        let blocks = if num <= 0 || den <= 0 {
            0
        } else {
            (num + den - 1) / den
        };
        8 + (blocks * (self.coding_rate as i64 + 4)) as u32
    }

    /// Time on air of a frame whose PHY payload is `len` bytes.
    ///
    /// Returns `None` for parameters outside the formula's domain (SF outside 6..=12,
    /// zero bandwidth).
    pub fn time_on_air(&self, len: usize) -> Option<Duration> {
        if !(6..=12).contains(&self.spreading_factor) || self.bandwidth_hz == 0 {
            return None;
        }
        // in quarter symbols: preamble + 4.25 + payload symbols
        let quarters = 4 * self.preamble_symbols as u64 + 17 + 4 * self.payload_symbols(len) as u64;
        // T = quarters/4 * 2^SF / BW seconds, in nanoseconds
        let num = quarters * (1u64 << self.spreading_factor) * 1_000_000_000;
        let den = 4 * self.bandwidth_hz as u64;
        Some(Duration::from_nanos((num + den / 2) / den))
    }
}

/// Time on air of a LoRaWAN FSK frame (50 kbit/s in EU868 DR7): 5 bytes preamble, 3 bytes
/// sync word, 1 byte length, the payload and a 2-byte CRC, as RP002 specifies.
pub fn fsk_time_on_air(bitrate: u32, len: usize) -> Option<Duration> {
    if bitrate == 0 {
        return None;
    }
    let bits = (5 + 3 + 1 + len as u64 + 2) * 8;
    Some(Duration::from_nanos(bits * 1_000_000_000 / bitrate as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_nanos() as f64 / 1e6
    }

    /// Worked values: Semtech's LoRa Calculator and the formula of AN1200.13 / the SX1276
    /// datasheet, for LoRaWAN frames (13 bytes of header and MIC + the application payload).
    #[test]
    fn matches_published_values() {
        let cases: &[(u8, u32, usize, f64)] = &[
            // SF, BW, PHY payload bytes, time on air in ms
            (7, 125_000, 23, 61.696), // 10-byte application payload at SF7
            (12, 125_000, 23, 1482.752), // the same at SF12 (LDRO on)
            (9, 125_000, 13, 164.864), // empty frame at SF9
            (7, 125_000, 13, 46.336), // empty frame at SF7
            (7, 250_000, 64, 59.008), // SF7/250 kHz (EU868 DR6), 51-byte app payload
            (12, 125_000, 64, 2793.472), // 51 bytes at SF12: the EU868 DR0 maximum
            (10, 500_000, 24, 92.672), // SF10 at 500 kHz
        ];
        for &(sf, bw, len, want) in cases {
            let got = ms(LoraParams::lorawan_uplink(sf, bw).time_on_air(len).unwrap());
            assert!(
                (got - want).abs() < 0.001,
                "SF{sf}/{bw} {len} bytes: {got} ms, expected {want} ms"
            );
        }
    }

    #[test]
    fn ldro_is_automatic_for_long_symbols_only() {
        assert!(LoraParams::lorawan_uplink(11, 125_000).ldro());
        assert!(LoraParams::lorawan_uplink(12, 125_000).ldro());
        assert!(!LoraParams::lorawan_uplink(10, 125_000).ldro());
        assert!(!LoraParams::lorawan_uplink(12, 500_000).ldro());
    }

    #[test]
    fn downlink_without_crc_is_shorter_or_equal() {
        for sf in 7..=12 {
            for len in 0..64 {
                let up = LoraParams::lorawan_uplink(sf, 125_000)
                    .time_on_air(len)
                    .unwrap();
                let down = LoraParams::lorawan_downlink(sf, 125_000)
                    .time_on_air(len)
                    .unwrap();
                assert!(down <= up);
            }
        }
    }

    #[test]
    fn out_of_domain_is_none() {
        assert!(
            LoraParams::lorawan_uplink(13, 125_000)
                .time_on_air(10)
                .is_none()
        );
        assert!(
            LoraParams::lorawan_uplink(5, 125_000)
                .time_on_air(10)
                .is_none()
        );
        assert!(LoraParams::lorawan_uplink(7, 0).time_on_air(10).is_none());
        assert!(fsk_time_on_air(0, 10).is_none());
    }

    #[test]
    fn fsk_50kbps() {
        // 11 bytes overhead + 20 bytes = 248 bits at 50 kbit/s = 4.96 ms
        assert_eq!(
            fsk_time_on_air(50_000, 20).unwrap(),
            Duration::from_micros(4960)
        );
    }
}
