//! Keeps a busy message loop from holding a runtime thread for long.
//!
//! A loop that always finds its next message ready never returns to tokio on its own
//! (rumqttc hands out buffered packets without touching the socket; tokio's cooperative
//! budget only cuts in after 128 channel operations, several milliseconds of handling
//! here). Meanwhile tasks woken from outside the runtime, such as a receive window whose
//! store write just finished, wait for a free thread. On two cores that wait was the tail
//! of the uplink → downlink latency.
use std::time::{Duration, Instant};

/// How long a loop may run before it lets other tasks in.
pub const SLICE: Duration = Duration::from_micros(250);

/// Tracks how long a loop has been running since it last let other tasks run.
pub struct TimeSlice {
    since: Instant,
    slice: Duration,
}

impl Default for TimeSlice {
    fn default() -> Self {
        Self::new(SLICE)
    }
}

impl TimeSlice {
    /// A slice of `slice`, starting now.
    pub fn new(slice: Duration) -> Self {
        TimeSlice {
            since: Instant::now(),
            slice,
        }
    }

    /// Whether the slice is used up (and a new one starts): the caller should yield.
    pub fn used_up(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) < self.slice {
            return false;
        }
        self.since = now;
        true
    }

    /// Yields to the runtime when the slice is used up.
    pub async fn tick(&mut self) {
        if self.used_up() {
            tokio::task::yield_now().await;
            self.since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_used_up_only_after_its_time_and_then_starts_again() {
        let mut t = TimeSlice::new(Duration::from_millis(20));
        assert!(!t.used_up());
        std::thread::sleep(Duration::from_millis(25));
        assert!(t.used_up());
        assert!(!t.used_up(), "a new slice starts when one is used up");
    }
}
