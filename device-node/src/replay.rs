//! At-most-once execution of commands: the node's replay window.
//!
//! Command counters are 16 bits and wrap. They are compared with serial-number
//! arithmetic (RFC 1982): `a` is newer than `b` when `(a − b) mod 2¹⁶` is in 1..=32767.
//! The node remembers the highest counter it executed and which of the
//! [`WINDOW`] counters below it it executed, so that:
//! - a newer counter executes (and moves the window);
//! - a counter in the window executes once, even when it arrives late (a coalesced or
//!   retried command overtaken by a newer one);
//! - a counter already executed is a repeat: not executed again, acknowledged as
//!   `already_executed` so the bridge still learns the outcome;
//! - a counter older than the window, or exactly 32768 away (ambiguous), is stale: not
//!   executed.
//!
//! The bridge hands out counters in increasing order per device and never has more
//! than [`WINDOW`] commands in flight, so a legitimate command is never stale.
//!
//! The limit of any wrapping counter: a frame replayed after the counter has advanced by
//! 32768 or more looks new again. Replayed *radio* frames are refused before this, by
//! LoRaWAN's downlink frame counter and MIC (and Sigfox's own authentication); this window
//! guards the command layer, against the bridge's retransmissions and duplicates.

/// How many counters below the highest the node remembers.
pub const WINDOW: u16 = 32;

/// What the window says of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not executed before: execute it.
    Fresh,
    /// Executed before: do not execute again.
    Repeat,
    /// Too old to tell: do not execute.
    Stale,
}

/// The replay window. Persist it ([`ReplayWindow::to_bytes`]) across reboots, or a
/// reboot would let a replayed frame execute again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    highest: Option<u16>,
    /// Bit i set: counter `highest − i` executed.
    seen: u32,
}

impl ReplayWindow {
    /// A node that has executed nothing yet.
    pub const fn new() -> Self {
        ReplayWindow {
            highest: None,
            seen: 0,
        }
    }

    /// The highest counter executed.
    pub const fn highest(&self) -> Option<u16> {
        self.highest
    }

    /// What a counter would be, without recording it.
    pub fn check(&self, counter: u16) -> Verdict {
        let Some(highest) = self.highest else {
            return Verdict::Fresh;
        };
        let diff = counter.wrapping_sub(highest) as i16;
        if diff > 0 {
            Verdict::Fresh
        } else if diff == i16::MIN || -(diff as i32) >= WINDOW as i32 {
            Verdict::Stale
        } else if self.seen & (1 << -(diff as i32)) != 0 {
            Verdict::Repeat
        } else {
            Verdict::Fresh
        }
    }

    /// Checks a counter and, when fresh, records it as executed.
    pub fn accept(&mut self, counter: u16) -> Verdict {
        let verdict = self.check(counter);
        if verdict == Verdict::Fresh {
            match self.highest {
                None => {
                    self.highest = Some(counter);
                    self.seen = 1;
                }
                Some(highest) => {
                    let diff = counter.wrapping_sub(highest) as i16 as i32;
                    if diff > 0 {
                        self.seen = if diff >= 32 { 0 } else { self.seen << diff };
                        self.seen |= 1;
                        self.highest = Some(counter);
                    } else {
                        self.seen |= 1 << -diff;
                    }
                }
            }
        }
        verdict
    }

    /// 7 bytes to persist: a flag, the highest counter, the bitmap.
    pub fn to_bytes(&self) -> [u8; 7] {
        let mut b = [0u8; 7];
        if let Some(h) = self.highest {
            b[0] = 1;
            b[1..3].copy_from_slice(&h.to_be_bytes());
            b[3..7].copy_from_slice(&self.seen.to_be_bytes());
        }
        b
    }

    /// The window persisted by [`ReplayWindow::to_bytes`]; anything else (e.g. erased
    /// flash, all 0xFF) is a fresh window.
    pub fn from_bytes(b: &[u8; 7]) -> Self {
        if b[0] != 1 {
            return ReplayWindow::new();
        }
        ReplayWindow {
            highest: Some(u16::from_be_bytes([b[1], b[2]])),
            seen: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_counter_executes_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(5), Verdict::Fresh);
        assert_eq!(w.accept(5), Verdict::Repeat);
        assert_eq!(w.accept(6), Verdict::Fresh);
        assert_eq!(w.accept(5), Verdict::Repeat);
        assert_eq!(w.accept(6), Verdict::Repeat);
    }

    #[test]
    fn late_counters_in_the_window_execute_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(10), Verdict::Fresh);
        assert_eq!(w.accept(12), Verdict::Fresh);
        assert_eq!(w.accept(11), Verdict::Fresh);
        assert_eq!(w.accept(11), Verdict::Repeat);
        assert_eq!(w.accept(12u16.wrapping_sub(31)), Verdict::Fresh);
        assert_eq!(w.accept(12u16.wrapping_sub(32)), Verdict::Stale);
    }

    #[test]
    fn wraps_around() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(65_534), Verdict::Fresh);
        assert_eq!(w.accept(65_535), Verdict::Fresh);
        assert_eq!(w.accept(0), Verdict::Fresh);
        assert_eq!(w.accept(1), Verdict::Fresh);
        assert_eq!(w.accept(65_535), Verdict::Repeat);
        assert_eq!(w.accept(65_533), Verdict::Fresh);
        assert_eq!(w.highest(), Some(1));
        // exactly half the space away is ambiguous, so stale
        assert_eq!(w.check(1 + 32_768), Verdict::Stale);
        assert_eq!(w.check(1 + 32_767), Verdict::Fresh);
    }

    #[test]
    fn a_big_jump_forgets_the_bitmap() {
        let mut w = ReplayWindow::new();
        w.accept(100);
        w.accept(200);
        assert_eq!(w.check(100), Verdict::Stale);
        assert_eq!(w.check(199), Verdict::Fresh);
    }

    #[test]
    fn survives_a_reboot() {
        let mut w = ReplayWindow::new();
        w.accept(40);
        w.accept(38);
        let back = ReplayWindow::from_bytes(&w.to_bytes());
        assert_eq!(back, w);
        assert_eq!(back.check(38), Verdict::Repeat);
        assert_eq!(back.check(39), Verdict::Fresh);
        assert_eq!(ReplayWindow::from_bytes(&[0xff; 7]), ReplayWindow::new());
    }

    proptest! {
        /// New counters, late ones and replays of any earlier one, in any mix (and across
        /// the wrap): none executes twice while the counter advances by less than 32768.
        #[test]
        fn never_twice(
            start in any::<u16>(),
            ops in proptest::collection::vec((0u8..3, 1u16..40, any::<prop::sample::Index>()), 0..300),
        ) {
            let mut w = ReplayWindow::new();
            let mut issued = vec![start];
            let mut executed = std::collections::HashSet::new();
            w.accept(start);
            executed.insert(start);
            for (op, delta, pick) in ops {
                let c = match op {
                    0 => issued.last().unwrap().wrapping_add(delta), // a newer command
                    1 => issued.last().unwrap().wrapping_sub(delta), // a late one
                    _ => *pick.get(&issued),                          // a replay
                };
                issued.push(c);
                if w.accept(c) == Verdict::Fresh {
                    prop_assert!(executed.insert(c), "counter {} executed twice", c);
                }
            }
        }

        /// Counters handed out in order, delivered in any order within the window, all
        /// execute.
        #[test]
        fn in_window_reordering_loses_nothing(
            start in any::<u16>(),
            perm in Just((0u16..32).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut w = ReplayWindow::new();
            w.accept(start);
            let top = start.wrapping_add(32);
            proptest::prop_assert_eq!(w.accept(top), Verdict::Fresh);
            for i in perm {
                let c = start.wrapping_add(1 + i);
                if c != top {
                    proptest::prop_assert_eq!(w.accept(c), Verdict::Fresh);
                }
            }
        }
    }
}
