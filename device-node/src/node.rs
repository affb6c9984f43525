//! The node's logic, free of any HAL: what the firmware on the Pico and the fleet
//! simulator on the host both run.
//!
//! - commands: each frame's counter goes through the [`ReplayWindow`] (at most once),
//!   `locate`, `set_interval` and `set_mode` are handled here, the rest by the firmware's
//!   [`Executor`] (lock actuator, reboot, vendor commands); every frame yields an
//!   acknowledgement record for the next uplink;
//! - reporting: a normal interval, an *active* mode (after `unlock` or `set_mode active`,
//!   e.g. every 15 s for a few minutes, the wait a person at a vehicle accepts), a rare
//!   *storage* mode, and an immediate report after `locate` or any executed command;
//! - an airtime budget, from the one time-on-air implementation, before each uplink;
//! - [`NodeState`]: what must survive a reboot, as bytes the firmware can persist.
use crate::command::{Command, CommandFrame, FRAME_LEN, Mode};
use crate::replay::{ReplayWindow, Verdict};
use crate::telemetry::{Ack, AckResult, Record};
use gateway_config::region::Region;

/// What the firmware does for the commands that move hardware.
pub trait Executor {
    /// Executes `lock`, `unlock`, `reboot` or `raw`; returns the result to report.
    fn execute(&mut self, command: &Command) -> AckResult;
}

/// Reporting intervals, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Normal mode.
    pub normal_s: u32,
    /// Active mode.
    pub active_s: u32,
    /// How long active mode lasts by default.
    pub active_for_s: u32,
    /// Storage mode.
    pub storage_s: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            normal_s: 900,
            active_s: 15,
            active_for_s: 300,
            storage_s: 21_600,
        }
    }
}

/// What survives a reboot: the replay window and the reporting settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Counters executed.
    pub replay: ReplayWindow,
    /// The normal interval set by `set_interval`, or 0 for the schedule's default.
    pub interval_s: u32,
}

impl NodeState {
    /// 11 bytes to persist.
    pub fn to_bytes(&self) -> [u8; 11] {
        let mut b = [0u8; 11];
        b[..7].copy_from_slice(&self.replay.to_bytes());
        b[7..].copy_from_slice(&self.interval_s.to_be_bytes());
        b
    }

    /// The state persisted by [`NodeState::to_bytes`]; erased flash reads as fresh.
    pub fn from_bytes(b: &[u8; 11]) -> Self {
        let mut r = [0u8; 7];
        r.copy_from_slice(&b[..7]);
        let interval_s = u32::from_be_bytes([b[7], b[8], b[9], b[10]]);
        NodeState {
            replay: ReplayWindow::from_bytes(&r),
            interval_s: if interval_s == u32::MAX {
                0
            } else {
                interval_s
            },
        }
    }
}

/// Acknowledgements waiting for an uplink.
const MAX_PENDING_ACKS: usize = 8;

/// The node.
#[derive(Debug, Clone)]
pub struct Node {
    state: NodeState,
    schedule: Schedule,
    mode: Mode,
    mode_until_ms: Option<u64>,
    mode_interval_s: u32,
    pending: [Option<Ack>; MAX_PENDING_ACKS],
    report_now: bool,
    last_report_ms: Option<u64>,
    reboot_at_ms: Option<u64>,
}

impl Node {
    /// A node starting from persisted state.
    pub fn new(schedule: Schedule, state: NodeState) -> Self {
        Node {
            state,
            schedule,
            mode: Mode::Normal,
            mode_until_ms: None,
            mode_interval_s: 0,
            pending: [None; MAX_PENDING_ACKS],
            report_now: true, // a first report after boot
            last_report_ms: None,
            reboot_at_ms: None,
        }
    }

    /// What to persist.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// The reporting mode now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// When a `reboot` command asked to restart, if it did.
    pub fn reboot_at_ms(&self) -> Option<u64> {
        self.reboot_at_ms
    }

    /// The interval in force, seconds.
    pub fn interval_s(&self) -> u32 {
        match self.mode {
            Mode::Active if self.mode_interval_s > 0 => self.mode_interval_s,
            Mode::Active => self.schedule.active_s,
            Mode::Storage if self.mode_interval_s > 0 => self.mode_interval_s,
            Mode::Storage => self.schedule.storage_s,
            Mode::Normal if self.state.interval_s > 0 => self.state.interval_s,
            Mode::Normal => self.schedule.normal_s,
        }
    }

    fn update_mode(&mut self, now_ms: u64) {
        if self.mode_until_ms.is_some_and(|t| now_ms >= t) {
            self.mode = Mode::Normal;
            self.mode_until_ms = None;
            self.mode_interval_s = 0;
        }
    }

    fn enter(&mut self, mode: Mode, duration_s: u32, interval_s: u16, now_ms: u64) {
        self.mode = mode;
        self.mode_interval_s = interval_s as u32;
        self.mode_until_ms = (duration_s > 0).then(|| now_ms + duration_s as u64 * 1000);
    }

    /// Whether an uplink is due.
    pub fn uplink_due(&mut self, now_ms: u64) -> bool {
        self.update_mode(now_ms);
        self.report_now
            || self
                .last_report_ms
                .is_none_or(|t| now_ms >= t + self.interval_s() as u64 * 1000)
    }

    /// Handles a downlink of command frames (LoRaWAN fPort 20, or the 8 bytes of a Sigfox
    /// reply). Returns how many frames it read.
    pub fn handle_downlink(
        &mut self,
        payload: &[u8],
        now_ms: u64,
        exec: &mut impl Executor,
    ) -> usize {
        let mut n = 0;
        for chunk in payload.chunks_exact(FRAME_LEN) {
            n += 1;
            let mut bytes = [0u8; FRAME_LEN];
            bytes.copy_from_slice(chunk);
            let counter = u16::from_be_bytes([bytes[1], bytes[2]]);
            let result = match CommandFrame::decode(&bytes, 0) {
                Err(_) => AckResult::UnknownCommand, // not recorded: a later firmware may know it
                Ok(frame) => match self.state.replay.check(counter) {
                    Verdict::Repeat => AckResult::AlreadyExecuted,
                    Verdict::Stale => AckResult::Stale,
                    Verdict::Fresh => {
                        let r = self.run(&frame.command, now_ms, exec);
                        if r != AckResult::Stale {
                            self.state.replay.accept(counter);
                        }
                        r
                    }
                },
            };
            self.queue_ack(Ack {
                counter,
                opcode: bytes[0],
                result,
            });
            self.report_now = true;
        }
        n
    }

    fn run(&mut self, command: &Command, now_ms: u64, exec: &mut impl Executor) -> AckResult {
        match *command {
            Command::Locate => AckResult::Executed,
            Command::SetInterval { interval_s } => {
                self.state.interval_s = interval_s;
                AckResult::Executed
            }
            Command::SetMode {
                mode,
                duration_s,
                interval_s,
            } => {
                self.enter(mode, duration_s as u32, interval_s, now_ms);
                AckResult::Executed
            }
            Command::Reboot { delay_s } => {
                let r = exec.execute(command);
                if r.is_executed() {
                    self.reboot_at_ms = Some(now_ms + delay_s as u64 * 1000);
                }
                r
            }
            Command::Unlock { .. } => {
                let r = exec.execute(command);
                if r.is_executed() {
                    // someone is at the vehicle: report often for a while
                    self.enter(Mode::Active, self.schedule.active_for_s, 0, now_ms);
                }
                r
            }
            Command::Lock | Command::Raw { .. } => exec.execute(command),
        }
    }

    fn queue_ack(&mut self, ack: Ack) {
        match self.pending.iter_mut().find(|p| p.is_none()) {
            Some(slot) => *slot = Some(ack),
            None => {
                // full: the oldest gives way (the bridge learns it again from a repeat)
                self.pending.rotate_left(1);
                self.pending[MAX_PENDING_ACKS - 1] = Some(ack);
            }
        }
    }

    /// Writes the next uplink: the status record (if given), then as many waiting
    /// acknowledgements as fit `max_len` bytes (12 on Sigfox, the data rate's N on
    /// LoRaWAN). Returns the length. Acknowledgements written are forgotten: a lost one
    /// comes back as `already_executed` when the bridge sends the command again. On
    /// Sigfox a status fills the uplink, so the firmware sends `None` while
    /// acknowledgements wait.
    pub fn build_uplink(
        &mut self,
        status: Option<Record>,
        now_ms: u64,
        out: &mut [u8],
        max_len: usize,
    ) -> usize {
        let limit = max_len.min(out.len());
        let mut len = 0;
        if let Some(Ok((n, _))) = status.map(|s| s.encode(&mut out[..limit])) {
            len = n;
        }
        for slot in self.pending.iter_mut() {
            let Some(ack) = *slot else { continue };
            match Record::Ack(ack).encode(&mut out[len..limit]) {
                Ok((n, _)) => {
                    len += n;
                    *slot = None;
                }
                Err(_) => break,
            }
        }
        // keep the waiting ones at the front, in order
        let mut kept = [None; MAX_PENDING_ACKS];
        for (i, a) in self.pending.iter().flatten().enumerate() {
            kept[i] = Some(*a);
        }
        self.pending = kept;
        self.report_now = self.pending.iter().any(Option::is_some);
        self.last_report_ms = Some(now_ms);
        len
    }

    /// Acknowledgements still waiting for an uplink.
    pub fn pending_acks(&self) -> usize {
        self.pending.iter().flatten().count()
    }
}

/// A duty-cycle budget over a sliding hour: whether an uplink of `len` bytes at `dr` may
/// go now.
#[derive(Debug, Clone, Copy)]
pub struct AirtimeBudget {
    /// Allowed share of air time, parts per thousand (10 = 1 %).
    pub permille: u16,
    window_start_ms: u64,
    used_us: u64,
}

const HOUR_MS: u64 = 3_600_000;

impl AirtimeBudget {
    /// A budget of `permille` of each hour.
    pub const fn new(permille: u16) -> Self {
        AirtimeBudget {
            permille,
            window_start_ms: 0,
            used_us: 0,
        }
    }

    /// The budget of a region at a frequency (the sub-band's duty cycle), or unlimited.
    pub fn for_region(region: Region, frequency_hz: u32) -> Self {
        AirtimeBudget::new(region.duty_cycle_permille(frequency_hz).unwrap_or(1000))
    }

    /// Takes the time on air of the uplink from the budget if it fits; false otherwise.
    pub fn try_spend(&mut self, region: Region, dr: u8, len: usize, now_ms: u64) -> bool {
        if now_ms >= self.window_start_ms + HOUR_MS {
            self.window_start_ms = now_ms;
            self.used_us = 0;
        }
        let Some(toa) = region.uplink_time_on_air(dr, len) else {
            return false;
        };
        let allowed_us = HOUR_MS * 1000 * self.permille as u64 / 1000;
        let cost = toa.as_micros() as u64;
        if self.used_us + cost > allowed_us {
            return false;
        }
        self.used_us += cost;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{FixAge, Saturated, Status};

    struct Vehicle {
        locked: bool,
        moving: bool,
        executed: u32,
    }

    impl Executor for Vehicle {
        fn execute(&mut self, command: &Command) -> AckResult {
            match command {
                Command::Lock if self.moving => AckResult::NotNow,
                Command::Lock => {
                    self.locked = true;
                    self.executed += 1;
                    AckResult::Executed
                }
                Command::Unlock { .. } => {
                    self.locked = false;
                    self.executed += 1;
                    AckResult::Executed
                }
                _ => AckResult::Executed,
            }
        }
    }

    fn frame(counter: u16, command: Command) -> [u8; 8] {
        CommandFrame { counter, command }.encode().unwrap()
    }

    fn status() -> Record {
        Record::Status(Status {
            latitude_e7: 0,
            longitude_e7: 0,
            fix_age: FixAge::Under10s,
            soc_pct: Some(50),
            locked: true,
            ignition: false,
            charging: false,
            speed_kmh: 0,
            cabin_temp_c: 20,
            odometer_km: 1,
            saturated: Saturated::empty(),
        })
    }

    fn acks(payload: &[u8]) -> std::vec::Vec<Ack> {
        crate::telemetry::decode_uplink(payload, None)
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Ack(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn executes_once_and_acknowledges_in_the_next_uplink() {
        let mut v = Vehicle {
            locked: true,
            moving: false,
            executed: 0,
        };
        let mut node = Node::new(Schedule::default(), NodeState::default());
        let mut out = [0u8; 64];
        node.build_uplink(Some(status()), 0, &mut out, 64);
        assert!(!node.uplink_due(1000));
        assert_eq!(
            node.handle_downlink(
                &frame(7, Command::Unlock { auto_relock_s: 0 }),
                1000,
                &mut v
            ),
            1
        );
        assert!(node.uplink_due(1000), "an immediate report after a command");
        assert_eq!(node.mode(), Mode::Active);
        let n = node.build_uplink(Some(status()), 1000, &mut out, 64);
        assert_eq!(
            acks(&out[..n]),
            [Ack {
                counter: 7,
                opcode: 2,
                result: AckResult::Executed
            }]
        );
        // the same frame again (a retransmission): not executed, reported as such
        node.handle_downlink(
            &frame(7, Command::Unlock { auto_relock_s: 0 }),
            2000,
            &mut v,
        );
        assert_eq!(v.executed, 1);
        let n = node.build_uplink(Some(status()), 2000, &mut out, 64);
        assert_eq!(acks(&out[..n])[0].result, AckResult::AlreadyExecuted);
    }

    #[test]
    fn coalesced_frames_unknown_opcodes_and_refusals() {
        let mut v = Vehicle {
            locked: false,
            moving: true,
            executed: 0,
        };
        let mut node = Node::new(Schedule::default(), NodeState::default());
        let mut payload = std::vec::Vec::new();
        payload.extend_from_slice(&frame(1, Command::Lock));
        payload.extend_from_slice(&[0x07, 0, 2, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&frame(3, Command::Locate));
        assert_eq!(node.handle_downlink(&payload, 0, &mut v), 3);
        let mut out = [0u8; 64];
        let n = node.build_uplink(Some(status()), 0, &mut out, 64);
        let results: std::vec::Vec<_> = acks(&out[..n])
            .iter()
            .map(|a| (a.counter, a.result))
            .collect();
        assert_eq!(
            results,
            [
                (1, AckResult::NotNow),
                (2, AckResult::UnknownCommand),
                (3, AckResult::Executed)
            ]
        );
        // a refused lock was still "executed once": the node does not try it again
        node.handle_downlink(&frame(1, Command::Lock), 0, &mut v);
        assert_eq!(v.executed, 0);
    }

    #[test]
    fn sigfox_sized_uplinks_carry_what_fits_and_keep_the_rest() {
        let mut v = Vehicle {
            locked: false,
            moving: false,
            executed: 0,
        };
        let mut node = Node::new(Schedule::default(), NodeState::default());
        node.handle_downlink(&frame(1, Command::Locate), 0, &mut v);
        node.handle_downlink(&frame(2, Command::Locate), 0, &mut v);
        let mut out = [0u8; 12];
        // 12 bytes: the status fills a Sigfox uplink; the acks wait
        assert_eq!(node.build_uplink(Some(status()), 0, &mut out, 12), 12);
        assert_eq!(node.pending_acks(), 2);
        assert!(node.uplink_due(0));
        // an acks-only uplink: both fit (5 bytes each)
        let n = node.build_uplink(None, 0, &mut out, 12);
        assert_eq!(n, 10);
        assert_eq!(node.pending_acks(), 0);
        assert_eq!(
            acks(&out[..n])
                .iter()
                .map(|a| a.counter)
                .collect::<std::vec::Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn schedule_modes_and_persisted_state() {
        let mut v = Vehicle {
            locked: true,
            moving: false,
            executed: 0,
        };
        let mut node = Node::new(Schedule::default(), NodeState::default());
        assert_eq!(node.interval_s(), 900);
        node.handle_downlink(
            &frame(
                1,
                Command::SetMode {
                    mode: Mode::Active,
                    duration_s: 60,
                    interval_s: 15,
                },
            ),
            0,
            &mut v,
        );
        assert_eq!(node.interval_s(), 15);
        node.uplink_due(61_000);
        assert_eq!(
            node.mode(),
            Mode::Normal,
            "active mode ends after its duration"
        );
        node.handle_downlink(
            &frame(2, Command::SetInterval { interval_s: 3600 }),
            61_000,
            &mut v,
        );
        assert_eq!(node.interval_s(), 3600);
        let mut out = [0u8; 64];
        node.build_uplink(Some(status()), 61_000, &mut out, 64);
        assert!(!node.uplink_due(61_000 + 3_599_000));
        assert!(node.uplink_due(61_000 + 3_600_000));
        let saved = node.state().to_bytes();
        let mut rebooted = Node::new(Schedule::default(), NodeState::from_bytes(&saved));
        assert_eq!(rebooted.interval_s(), 3600);
        rebooted.handle_downlink(
            &frame(2, Command::SetInterval { interval_s: 60 }),
            0,
            &mut v,
        );
        assert_eq!(
            rebooted.interval_s(),
            3600,
            "a replayed frame after a reboot is not executed"
        );
        assert_eq!(NodeState::from_bytes(&[0xff; 11]), NodeState::default());
        node.handle_downlink(&frame(3, Command::Reboot { delay_s: 5 }), 70_000, &mut v);
        assert_eq!(node.reboot_at_ms(), Some(75_000));
    }

    #[test]
    fn airtime_budget_follows_the_duty_cycle() {
        // 1 % of an hour = 36 s; 51 bytes at SF12 are 2.79 s on air: 12 fit, not 13
        let mut b = AirtimeBudget::for_region(Region::Eu868, 868_100_000);
        assert_eq!(b.permille, 10);
        let sent = (0..20)
            .filter(|_| b.try_spend(Region::Eu868, 0, 51, 0))
            .count();
        assert_eq!(sent, 12);
        assert!(
            b.try_spend(Region::Eu868, 0, 51, HOUR_MS),
            "a new hour, a new budget"
        );
        let mut us = AirtimeBudget::for_region(Region::Us915, 902_300_000);
        assert!(
            (0..100).all(|_| us.try_spend(Region::Us915, 0, 11, 0)),
            "no duty cycle in US915"
        );
    }
}
