//! The vehicle side of the example: a lock actuator on GP15 and the Pico's LED on GP25
//! (lit while unlocked), and the status record the node reports.
use device_node::command::Command;
use device_node::node::Executor;
use device_node::telemetry::{AckResult, FixAge, Record, Saturated, Status};
use embassy_rp::adc::{self, Adc};
use embassy_rp::gpio::Output;

pub struct Vehicle<'d> {
    /// High drives the actuator to *unlocked*.
    pub actuator: Output<'d>,
    pub led: Output<'d>,
    pub adc: Adc<'d, adc::Blocking>,
    pub temp_sensor: adc::Channel<'d>,
    /// When an `unlock` with auto-relock should lock again, ms since boot.
    pub relock_at_ms: Option<u64>,
}

impl Vehicle<'_> {
    pub fn locked(&self) -> bool {
        self.actuator.is_set_low()
    }

    fn set_locked(&mut self, locked: bool) {
        if locked {
            self.actuator.set_low();
            self.led.set_low();
        } else {
            self.actuator.set_high();
            self.led.set_high();
        }
    }

    /// Locks again when an auto-relock is due; true when it did.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        if self.relock_at_ms.is_some_and(|t| now_ms >= t) {
            self.relock_at_ms = None;
            self.set_locked(true);
            return true;
        }
        false
    }

    /// The RP2040's own temperature sensor (RP2040 datasheet 4.9.5), whole °C.
    fn temperature_c(&mut self) -> i16 {
        match self.adc.blocking_read(&mut self.temp_sensor) {
            Ok(raw) => {
                let volts = raw as f32 * 3.3 / 4096.0;
                let c = 27.0 - (volts - 0.706) / 0.001721;
                c as i16
            }
            Err(_) => 0,
        }
    }

    /// The status record. This board has no GNSS, battery gauge or CAN bus: position,
    /// charge, speed and odometer say so (no fix, unknown, zero).
    pub fn status(&mut self) -> Record {
        Record::Status(Status {
            latitude_e7: 0,
            longitude_e7: 0,
            fix_age: FixAge::NoFix,
            soc_pct: None,
            locked: self.locked(),
            ignition: false,
            charging: false,
            speed_kmh: 0,
            cabin_temp_c: self.temperature_c(),
            odometer_km: 0,
            saturated: Saturated::default(),
        })
    }
}

/// Carries out what the node logic hands to the hardware.
pub struct Actions<'a, 'd> {
    pub vehicle: &'a mut Vehicle<'d>,
    pub now_ms: u64,
}

impl Executor for Actions<'_, '_> {
    fn execute(&mut self, command: &Command) -> AckResult {
        match *command {
            Command::Lock => {
                self.vehicle.relock_at_ms = None;
                self.vehicle.set_locked(true);
                defmt::info!("command: lock");
                AckResult::Executed
            }
            Command::Unlock { auto_relock_s } => {
                self.vehicle.set_locked(false);
                self.vehicle.relock_at_ms =
                    (auto_relock_s > 0).then(|| self.now_ms + auto_relock_s as u64 * 1000);
                defmt::info!("command: unlock (auto-relock {} s)", auto_relock_s);
                AckResult::Executed
            }
            Command::Reboot { delay_s } => {
                defmt::info!("command: reboot in {} s", delay_s);
                AckResult::Executed
            }
            // this example knows no vendor commands
            Command::Raw { opcode, .. } => {
                defmt::warn!("command: unknown vendor opcode {}", opcode);
                AckResult::UnknownCommand
            }
            // handled by the node logic itself
            Command::Locate | Command::SetInterval { .. } | Command::SetMode { .. } => {
                AckResult::Executed
            }
        }
    }
}
