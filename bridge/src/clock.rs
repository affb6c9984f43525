//! Wall-clock time, behind a trait so that tests control expiry without sleeping.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// A clock that moves only when told to: for tests of expiry and quotas.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }

    /// Moves it forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    rfc3339_nanos(ms as i128 * 1_000_000)
}

/// Now, in RFC 3339 with the clock's full precision.
pub fn now_rfc3339() -> String {
    rfc3339_nanos(OffsetDateTime::now_utc().unix_timestamp_nanos())
}

/// RFC 3339 of a nanosecond timestamp in UTC, as the `time` crate writes it (fraction
/// without trailing zeros, `Z`); empty outside the years 0000–9999. Written by hand: it
/// runs for every uplink, and this is several times quicker than the general formatter.
pub fn rfc3339_nanos(nanos: i128) -> String {
    // 64-bit arithmetic from here (128-bit division is a library call)
    let Ok(secs) = i64::try_from(nanos.div_euclid(1_000_000_000)) else {
        return String::new();
    };
    let frac = nanos.rem_euclid(1_000_000_000) as u64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u64);
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u64;
    let year = yoe + era * 400 + (month <= 2) as i64;
    if !(0..=9999).contains(&year) {
        return String::new();
    }
    let year = year as u64;
    let mut out = Vec::with_capacity(30);
    push_digits(&mut out, year, 4);
    for (sep, v) in [
        (b'-', month),
        (b'-', day),
        (b'T', sod / 3600),
        (b':', sod / 60 % 60),
        (b':', sod % 60),
    ] {
        out.push(sep);
        push_digits(&mut out, v, 2);
    }
    if frac > 0 {
        out.push(b'.');
        let (mut f, mut width) = (frac, 9);
        while f % 10 == 0 {
            f /= 10;
            width -= 1;
        }
        push_digits(&mut out, f, width);
    }
    out.push(b'Z');
    String::from_utf8(out).unwrap_or_default()
}

/// `v` in `n` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, v: u64, n: u32) {
    for i in (0..n).rev() {
        out.push(b'0' + (v / 10u64.pow(i) % 10) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    /// The `time` crate's RFC 3339, which the hand-written formatter must equal.
    fn by_time(nanos: i128) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }

    proptest::proptest! {
        #[test]
        fn writes_what_the_time_crate_writes(
            nanos in -70_000_000_000_000_000_000i128..300_000_000_000_000_000_000i128,
            digits in 0u32..=9,
        ) {
            // also with few significant fraction digits, and on whole seconds
            let rounded = nanos - nanos.rem_euclid(10i128.pow(digits));
            proptest::prop_assert_eq!(rfc3339_nanos(nanos), by_time(nanos));
            proptest::prop_assert_eq!(rfc3339_nanos(rounded), by_time(rounded));
        }
    }

    #[test]
    fn writes_the_edges_as_the_time_crate_does() {
        for nanos in [
            0,
            -1,
            1,
            -62_167_219_200_000_000_000, // 0000-01-01
            -62_167_219_200_000_000_001,
            253_402_300_799_999_999_999, // 9999-12-31T23:59:59.999999999
            253_402_300_800_000_000_000,
            951_782_400_000_000_000,   // 2000-02-29
            4_107_542_400_000_000_000, // 2100-03-01
        ] {
            assert_eq!(rfc3339_nanos(nanos), by_time(nanos), "{nanos}");
        }
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn formats_and_moves() {
        assert_eq!(rfc3339(1_718_031_845_123), "2024-06-10T15:04:05.123Z");
        let c = ManualClock::at(1000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1500);
        assert!(SystemClock.now_ms() > 1_700_000_000_000);
    }
}
