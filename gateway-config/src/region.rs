//! LoRaWAN regional parameters the bridge's scheduler and the node need.
//!
//! Values from LoRa Alliance *RP002-1.0.4 LoRaWAN Regional Parameters* (2022), for the
//! regions longproto supports: EU863-870, US902-928, AU915-928 and AS923 (group 1), with
//! dwell-time limits off (their default in ChirpStack). `N` is the maximum application
//! payload (FRMPayload) with no FOpts; the "repeater compatible" column applies where a
//! LoRaWAN repeater may relay the frame.
use crate::airtime::{LoraParams, fsk_time_on_air};
use core::time::Duration;

/// A supported LoRaWAN region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub enum Region {
    /// EU863-870.
    #[cfg_attr(feature = "std", serde(rename = "EU868", alias = "eu868"))]
    Eu868,
    /// US902-928.
    #[cfg_attr(feature = "std", serde(rename = "US915", alias = "us915"))]
    Us915,
    /// AU915-928.
    #[cfg_attr(feature = "std", serde(rename = "AU915", alias = "au915"))]
    Au915,
    /// AS923 group 1 (AS923-1).
    #[cfg_attr(feature = "std", serde(rename = "AS923", alias = "as923"))]
    As923,
}

/// How a data rate modulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modulation {
    /// LoRa with a spreading factor and a bandwidth in Hz.
    Lora {
        /// Spreading factor 7..=12.
        spreading_factor: u8,
        /// Bandwidth in Hz.
        bandwidth_hz: u32,
    },
    /// FSK at a bit rate in bit/s.
    Fsk {
        /// Bit rate in bit/s.
        bitrate: u32,
    },
}

/// One row of a region's data-rate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    /// The DR index.
    pub index: u8,
    /// Its modulation.
    pub modulation: Modulation,
    /// Maximum application payload N, no repeater.
    pub max_payload: u8,
    /// Maximum application payload N, repeater compatible.
    pub max_payload_repeater: u8,
}

/// A band with a duty-cycle limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubBand {
    /// Lowest frequency in Hz.
    pub min_hz: u32,
    /// Highest frequency in Hz.
    pub max_hz: u32,
    /// Allowed share of air time, in parts per thousand (10 = 1 %).
    pub duty_cycle_permille: u16,
}

const fn lora(index: u8, sf: u8, bw: u32, n: u8, n_rep: u8) -> DataRate {
    DataRate {
        index,
        modulation: Modulation::Lora {
            spreading_factor: sf,
            bandwidth_hz: bw,
        },
        max_payload: n,
        max_payload_repeater: n_rep,
    }
}

const EU868_DR: &[DataRate] = &[
    lora(0, 12, 125_000, 51, 51),
    lora(1, 11, 125_000, 51, 51),
    lora(2, 10, 125_000, 51, 51),
    lora(3, 9, 125_000, 115, 115),
    lora(4, 8, 125_000, 242, 222),
    lora(5, 7, 125_000, 242, 222),
    lora(6, 7, 250_000, 242, 222),
    DataRate {
        index: 7,
        modulation: Modulation::Fsk { bitrate: 50_000 },
        max_payload: 242,
        max_payload_repeater: 222,
    },
];

// AS923 with DwellTime = 0 has the same modulation and payload table as EU868.
const AS923_DR: &[DataRate] = EU868_DR;

const US915_DR: &[DataRate] = &[
    lora(0, 10, 125_000, 11, 11),
    lora(1, 9, 125_000, 53, 53),
    lora(2, 8, 125_000, 125, 125),
    lora(3, 7, 125_000, 242, 242),
    lora(4, 8, 500_000, 242, 242),
    lora(8, 12, 500_000, 53, 33),
    lora(9, 11, 500_000, 129, 109),
    lora(10, 10, 500_000, 242, 222),
    lora(11, 9, 500_000, 242, 222),
    lora(12, 8, 500_000, 242, 222),
    lora(13, 7, 500_000, 242, 222),
];

const AU915_DR: &[DataRate] = &[
    lora(0, 12, 125_000, 51, 51),
    lora(1, 11, 125_000, 51, 51),
    lora(2, 10, 125_000, 51, 51),
    lora(3, 9, 125_000, 115, 115),
    lora(4, 8, 125_000, 242, 222),
    lora(5, 7, 125_000, 242, 222),
    lora(6, 8, 500_000, 242, 222),
    lora(8, 12, 500_000, 53, 33),
    lora(9, 11, 500_000, 129, 109),
    lora(10, 10, 500_000, 242, 222),
    lora(11, 9, 500_000, 242, 222),
    lora(12, 8, 500_000, 242, 222),
    lora(13, 7, 500_000, 242, 222),
];

// ETSI EN 300 220 sub-bands as RP002 lists them for EU863-870.
const EU868_SUB_BANDS: &[SubBand] = &[
    SubBand {
        min_hz: 863_000_000,
        max_hz: 865_000_000,
        duty_cycle_permille: 1,
    },
    SubBand {
        min_hz: 865_000_000,
        max_hz: 868_000_000,
        duty_cycle_permille: 10,
    },
    SubBand {
        min_hz: 868_000_000,
        max_hz: 868_600_000,
        duty_cycle_permille: 10,
    },
    SubBand {
        min_hz: 868_700_000,
        max_hz: 869_200_000,
        duty_cycle_permille: 1,
    },
    SubBand {
        min_hz: 869_400_000,
        max_hz: 869_650_000,
        duty_cycle_permille: 100,
    },
    SubBand {
        min_hz: 869_700_000,
        max_hz: 870_000_000,
        duty_cycle_permille: 10,
    },
];

// US915 RX1 downlink DR by uplink DR (rows, DR0..DR4) and RX1DROffset (columns, 0..3).
const US915_RX1: [[u8; 4]; 5] = [
    [10, 9, 8, 8],
    [11, 10, 9, 8],
    [12, 11, 10, 9],
    [13, 12, 11, 10],
    [13, 13, 12, 11],
];

// AU915 RX1 downlink DR by uplink DR (DR0..DR6) and RX1DROffset (0..5).
const AU915_RX1: [[u8; 6]; 7] = [
    [8, 8, 8, 8, 8, 8],
    [9, 8, 8, 8, 8, 8],
    [10, 9, 8, 8, 8, 8],
    [11, 10, 9, 8, 8, 8],
    [12, 11, 10, 9, 8, 8],
    [13, 12, 11, 10, 9, 8],
    [13, 13, 12, 11, 10, 9],
];

impl Region {
    /// Every supported region.
    pub const ALL: [Region; 4] = [Region::Eu868, Region::Us915, Region::Au915, Region::As923];

    /// The common name, as ChirpStack writes it in `region_common_name`.
    pub const fn name(self) -> &'static str {
        match self {
            Region::Eu868 => "EU868",
            Region::Us915 => "US915",
            Region::Au915 => "AU915",
            Region::As923 => "AS923",
        }
    }

    /// Parses a common name (`EU868`) or a ChirpStack region configuration id (`eu868`,
    /// `us915_0`, `as923_2`…), in any case. AS923-2/3/4 differ from AS923-1 only in
    /// frequencies, so they map to [`Region::As923`].
    pub fn from_name(name: &str) -> Option<Region> {
        let b = name.as_bytes();
        if b.len() < 5 {
            return None;
        }
        let (head, tail) = b.split_at(5);
        if !(tail.is_empty() || tail[0] == b'_' || tail[0] == b'-') {
            return None;
        }
        Region::ALL
            .into_iter()
            .find(|r| r.name().as_bytes().eq_ignore_ascii_case(head))
    }

    /// The data-rate table.
    pub const fn data_rates(self) -> &'static [DataRate] {
        match self {
            Region::Eu868 => EU868_DR,
            Region::Us915 => US915_DR,
            Region::Au915 => AU915_DR,
            Region::As923 => AS923_DR,
        }
    }

    /// One data rate, or `None` where the region does not define it.
    pub fn data_rate(self, dr: u8) -> Option<&'static DataRate> {
        self.data_rates().iter().find(|d| d.index == dr)
    }

    /// Maximum application payload N at a data rate.
    pub fn max_payload(self, dr: u8, repeater_compatible: bool) -> Option<u8> {
        self.data_rate(dr).map(|d| {
            if repeater_compatible {
                d.max_payload_repeater
            } else {
                d.max_payload
            }
        })
    }

    /// RECEIVE_DELAY1, the default RX1 delay (RX2 opens one second later).
    pub const fn rx1_delay(self) -> Duration {
        Duration::from_secs(1)
    }

    /// The default RX2 frequency in Hz and data rate.
    pub const fn rx2(self) -> (u32, u8) {
        match self {
            Region::Eu868 => (869_525_000, 0),
            Region::Us915 | Region::Au915 => (923_300_000, 8),
            Region::As923 => (923_200_000, 2),
        }
    }

    /// The data rate of RX1 for an uplink data rate and an RX1DROffset, or `None` when
    /// the pair is not valid in this region.
    pub fn rx1_data_rate(self, uplink_dr: u8, offset: u8) -> Option<u8> {
        let (dr, off) = (uplink_dr as usize, offset as usize);
        match self {
            Region::Eu868 => (dr <= 7 && off <= 5).then(|| uplink_dr.saturating_sub(offset)),
            Region::Us915 => US915_RX1.get(dr).and_then(|row| row.get(off)).copied(),
            Region::Au915 => AU915_RX1.get(dr).and_then(|row| row.get(off)).copied(),
            Region::As923 => {
                if dr > 7 || off > 7 {
                    return None;
                }
                // RP002 2.8.7, DownlinkDwellTime = 0: offsets 6 and 7 mean -1 and -2.
                let effective = match off {
                    6 => -1,
                    7 => -2,
                    o => o as i16,
                };
                Some((dr as i16 - effective).clamp(0, 5) as u8)
            }
        }
    }

    /// Duty-cycle limited sub-bands; empty where the region regulates by dwell time or
    /// listen-before-talk instead (US915, AU915; AS923 depends on the country).
    pub const fn sub_bands(self) -> &'static [SubBand] {
        match self {
            Region::Eu868 => EU868_SUB_BANDS,
            _ => &[],
        }
    }

    /// The duty-cycle limit in force at a frequency, in parts per thousand, or `None` where
    /// no duty-cycle limit applies.
    pub fn duty_cycle_permille(self, frequency_hz: u32) -> Option<u16> {
        self.sub_bands()
            .iter()
            .find(|b| (b.min_hz..b.max_hz).contains(&frequency_hz))
            .map(|b| b.duty_cycle_permille)
    }

    /// Time on air of an uplink of `app_payload` bytes on data rate `dr` (13 bytes of
    /// LoRaWAN header, FPort and MIC added, no FOpts).
    pub fn uplink_time_on_air(self, dr: u8, app_payload: usize) -> Option<Duration> {
        let phy = app_payload + LORAWAN_OVERHEAD;
        match self.data_rate(dr)?.modulation {
            Modulation::Lora {
                spreading_factor,
                bandwidth_hz,
            } => LoraParams::lorawan_uplink(spreading_factor, bandwidth_hz).time_on_air(phy),
            Modulation::Fsk { bitrate } => fsk_time_on_air(bitrate, phy),
        }
    }
}

/// Bytes a LoRaWAN data frame adds to its application payload with no FOpts: MHDR (1),
/// DevAddr (4), FCtrl (1), FCnt (2), FPort (1), MIC (4).
pub const LORAWAN_OVERHEAD: usize = 13;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_payload_table() {
        // (region, DR, N, N repeater-compatible), from RP002-1.0.4
        let cases = [
            (Region::Eu868, 0, 51, 51),
            (Region::Eu868, 2, 51, 51),
            (Region::Eu868, 3, 115, 115),
            (Region::Eu868, 5, 242, 222),
            (Region::Eu868, 7, 242, 222),
            (Region::Us915, 0, 11, 11),
            (Region::Us915, 1, 53, 53),
            (Region::Us915, 4, 242, 242),
            (Region::Us915, 8, 53, 33),
            (Region::Us915, 9, 129, 109),
            (Region::Au915, 0, 51, 51),
            (Region::Au915, 6, 242, 222),
            (Region::Au915, 8, 53, 33),
            (Region::As923, 2, 51, 51),
            (Region::As923, 3, 115, 115),
        ];
        for (region, dr, n, n_rep) in cases {
            assert_eq!(region.max_payload(dr, false), Some(n), "{region:?} DR{dr}");
            assert_eq!(
                region.max_payload(dr, true),
                Some(n_rep),
                "{region:?} DR{dr} rep"
            );
        }
        assert_eq!(Region::Eu868.max_payload(8, false), None);
        assert_eq!(Region::Us915.max_payload(5, false), None);
    }

    #[test]
    fn modulations() {
        assert_eq!(
            Region::Eu868.data_rate(0).unwrap().modulation,
            Modulation::Lora {
                spreading_factor: 12,
                bandwidth_hz: 125_000
            }
        );
        assert_eq!(
            Region::Eu868.data_rate(6).unwrap().modulation,
            Modulation::Lora {
                spreading_factor: 7,
                bandwidth_hz: 250_000
            }
        );
        assert_eq!(
            Region::Us915.data_rate(0).unwrap().modulation,
            Modulation::Lora {
                spreading_factor: 10,
                bandwidth_hz: 125_000
            }
        );
        assert_eq!(
            Region::Us915.data_rate(8).unwrap().modulation,
            Modulation::Lora {
                spreading_factor: 12,
                bandwidth_hz: 500_000
            }
        );
    }

    #[test]
    fn rx1_offsets() {
        assert_eq!(Region::Eu868.rx1_data_rate(5, 0), Some(5));
        assert_eq!(Region::Eu868.rx1_data_rate(5, 2), Some(3));
        assert_eq!(Region::Eu868.rx1_data_rate(1, 3), Some(0));
        assert_eq!(Region::Eu868.rx1_data_rate(1, 6), None);
        assert_eq!(Region::Us915.rx1_data_rate(0, 0), Some(10));
        assert_eq!(Region::Us915.rx1_data_rate(4, 3), Some(11));
        assert_eq!(Region::Us915.rx1_data_rate(5, 0), None);
        assert_eq!(Region::Au915.rx1_data_rate(6, 5), Some(9));
        assert_eq!(Region::Au915.rx1_data_rate(2, 0), Some(10));
        assert_eq!(Region::As923.rx1_data_rate(5, 7), Some(5));
        assert_eq!(Region::As923.rx1_data_rate(2, 6), Some(3));
        assert_eq!(Region::As923.rx1_data_rate(2, 4), Some(0));
    }

    #[test]
    fn rx2_defaults_and_delay() {
        assert_eq!(Region::Eu868.rx2(), (869_525_000, 0));
        assert_eq!(Region::Us915.rx2(), (923_300_000, 8));
        assert_eq!(Region::Au915.rx2(), (923_300_000, 8));
        assert_eq!(Region::As923.rx2(), (923_200_000, 2));
        assert_eq!(Region::Eu868.rx1_delay(), Duration::from_secs(1));
    }

    #[test]
    fn duty_cycle() {
        assert_eq!(Region::Eu868.duty_cycle_permille(868_100_000), Some(10));
        assert_eq!(Region::Eu868.duty_cycle_permille(869_525_000), Some(100));
        assert_eq!(Region::Eu868.duty_cycle_permille(868_900_000), Some(1));
        assert_eq!(Region::Us915.duty_cycle_permille(902_300_000), None);
    }

    #[test]
    fn names() {
        assert_eq!(Region::from_name("eu868"), Some(Region::Eu868));
        assert_eq!(Region::from_name("EU868"), Some(Region::Eu868));
        assert_eq!(Region::from_name("us915_1"), Some(Region::Us915));
        assert_eq!(Region::from_name("as923_2"), Some(Region::As923));
        assert_eq!(Region::from_name("eu86"), None);
        assert_eq!(Region::from_name("eu8680"), None);
        assert_eq!(Region::from_name("cn470"), None);
    }

    #[test]
    fn uplink_airtime_uses_the_table() {
        // 10-byte payload at EU868 DR5 (SF7/125) and DR0 (SF12/125)
        assert_eq!(
            Region::Eu868.uplink_time_on_air(5, 10),
            Some(Duration::from_micros(61_696))
        );
        assert_eq!(
            Region::Eu868.uplink_time_on_air(0, 10),
            Some(Duration::from_micros(1_482_752))
        );
        // the byte-budget figures of docs/wire-format.md: 12 and 40 bytes at DR5
        assert_eq!(
            Region::Eu868.uplink_time_on_air(5, 12),
            Some(Duration::from_micros(61_696))
        );
        assert_eq!(
            Region::Eu868.uplink_time_on_air(5, 40),
            Some(Duration::from_micros(102_656))
        );
        assert!(Region::Eu868.uplink_time_on_air(7, 10).is_some());
        assert!(Region::Eu868.uplink_time_on_air(9, 10).is_none());
    }
}
