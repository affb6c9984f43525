//! The two glue pieces between lora-phy, lorawan-device and embassy that the crates do not
//! provide for this combination.
use embassy_futures::select::{Either, select};
use embassy_rp::gpio::{Input, Output};
use embassy_time::{Duration, Instant};
use embedded_hal_async::delay::DelayNs;
use lora_phy::mod_params::RadioError;
use lora_phy::mod_traits::InterfaceVariant;

/// The SX1276's control lines: RESET, DIO0 and DIO1.
///
/// lora-phy's `GenericSx127xInterfaceVariant` waits on one pin, DIO0, which signals
/// TxDone and RxDone. But an *empty* receive window ends with RxTimeout, which the SX1276
/// signals on DIO1 (its reset mapping): waiting on DIO0 alone hangs the node in the first
/// RX1 window that brings no downlink, i.e. almost always. This variant waits on both;
/// the driver then reads the IRQ flags to see which event it was.
pub struct Sx1276Pins<'d> {
    pub reset: Output<'d>,
    pub dio0: Input<'d>,
    pub dio1: Input<'d>,
}

impl InterfaceVariant for Sx1276Pins<'_> {
    async fn reset(&mut self, delay: &mut impl DelayNs) -> Result<(), RadioError> {
        // datasheet 7.2.2: pull NRESET low for > 100 µs, then wait 5 ms
        self.reset.set_low();
        delay.delay_ms(1).await;
        self.reset.set_high();
        delay.delay_ms(10).await;
        Ok(())
    }

    async fn wait_on_busy(&mut self) -> Result<(), RadioError> {
        Ok(()) // the SX127x has no BUSY line
    }

    async fn await_irq(&mut self) -> Result<(), RadioError> {
        if cfg!(feature = "broken-wait-dio0-only") {
            self.dio0.wait_for_high().await;
            return Ok(());
        }
        match select(self.dio0.wait_for_high(), self.dio1.wait_for_high()).await {
            Either::First(()) | Either::Second(()) => Ok(()),
        }
    }

    // The usual SX1276 modules (RFM95W, Adafruit breakout) switch the antenna themselves.
    async fn enable_rf_switch_rx(&mut self) -> Result<(), RadioError> {
        Ok(())
    }

    async fn enable_rf_switch_tx(&mut self) -> Result<(), RadioError> {
        Ok(())
    }

    async fn disable_rf_switch(&mut self) -> Result<(), RadioError> {
        Ok(())
    }
}

/// lorawan-device's timer on embassy-time 0.5.
///
/// lorawan-device 0.12.2 ships one behind its `embassy-time` feature, but that feature
/// pins embassy-time 0.3, which cannot share a build with embassy-rp 0.10's 0.5.
pub struct LoraTimer {
    start: Instant,
}

impl LoraTimer {
    pub fn new() -> Self {
        LoraTimer {
            start: Instant::now(),
        }
    }
}

impl lorawan_device::async_device::radio::Timer for LoraTimer {
    fn reset(&mut self) {
        self.start = Instant::now();
    }

    async fn at(&mut self, millis: u64) {
        embassy_time::Timer::at(self.start + Duration::from_millis(millis)).await
    }

    async fn delay_ms(&mut self, millis: u64) {
        embassy_time::Timer::after_millis(millis).await
    }
}
