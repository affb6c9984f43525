//! Sigfox payload and message limits.
//!
//! From Sigfox's technical overview and subscription terms: an uplink carries 0 to 12
//! bytes, a downlink exactly 8 bytes, and a subscription level caps messages per day.

/// Largest uplink payload, in bytes.
pub const MAX_UPLINK_BYTES: usize = 12;
/// Size of every downlink payload, in bytes.
pub const DOWNLINK_BYTES: usize = 8;
/// How long the Sigfox backend waits for the reply to a BIDIR callback.
pub const BIDIR_REPLY_DEADLINE_S: u32 = 10;
/// Sequence numbers are 12 bits and wrap at this value.
pub const SEQ_NUMBER_MODULUS: u16 = 4096;

/// A Sigfox subscription level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// One: 1–2 uplinks a day, no downlink.
    One,
    /// Silver: up to 50 uplinks and 1 downlink a day.
    Silver,
    /// Gold: up to 100 uplinks and 2 downlinks a day.
    Gold,
    /// Platinum: up to 140 uplinks and 4 downlinks a day.
    Platinum,
}

impl Subscription {
    /// Uplinks allowed per day.
    pub const fn uplinks_per_day(self) -> u16 {
        match self {
            Subscription::One => 2,
            Subscription::Silver => 50,
            Subscription::Gold => 100,
            Subscription::Platinum => 140,
        }
    }

    /// Downlinks allowed per day.
    pub const fn downlinks_per_day(self) -> u8 {
        match self {
            Subscription::One => 0,
            Subscription::Silver => 1,
            Subscription::Gold => 2,
            Subscription::Platinum => 4,
        }
    }
}

/// The largest daily downlink quota any subscription has.
pub const MAX_DOWNLINKS_PER_DAY: u8 = Subscription::Platinum.downlinks_per_day();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(MAX_UPLINK_BYTES, 12);
        assert_eq!(DOWNLINK_BYTES, 8);
        assert_eq!(MAX_DOWNLINKS_PER_DAY, 4);
        assert_eq!(Subscription::Platinum.uplinks_per_day(), 140);
        assert_eq!(Subscription::Gold.downlinks_per_day(), 2);
        assert_eq!(Subscription::One.downlinks_per_day(), 0);
    }
}
