//! longproto example node: a Raspberry Pi Pico (RP2040) with an SX1276 LoRa radio
//! (an RFM95W module or the Adafruit breakout) as a vehicle's telematics unit.
//!
//! It joins a LoRaWAN network by OTAA, reports a 12-byte status record on fPort 10 on the
//! node logic's schedule (every 15 min; every 15 s for 5 min after an unlock), takes
//! command frames on fPort 20 in the receive windows after each uplink, executes them at
//! most once (the counter window is kept in flash), and reports their acknowledgement
//! records in the next uplink, which it sends at once.
//!
//! Wiring (SPI0; the SX1276 at 3.3 V):
//!
//! | Pico | SX1276 / RFM95W |
//! |---|---|
//! | GP18 (SPI0 SCK) | SCK |
//! | GP19 (SPI0 TX) | MOSI |
//! | GP16 (SPI0 RX) | MISO |
//! | GP17 | NSS (chip select) |
//! | GP20 | RESET |
//! | GP21 | DIO0 (TxDone, RxDone) |
//! | GP22 | DIO1 (RxTimeout) |
//! | GP15 | the lock actuator's driver (high = unlocked) |
//! | GP25 | on-board LED, lit while unlocked |
//!
//! Keys: baked in from the environment at build time, or read from the flash key block
//! (see README.md).
#![no_std]
#![no_main]

mod radio;
mod storage;
mod vehicle;

use defmt::{error, info, warn};
use device_node::node::{AirtimeBudget, Node, Schedule};
use device_node::{COMMAND_FPORT, TELEMETRY_FPORT, region::Region};
use embassy_executor::Spawner;
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::Flash;
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1};
use embassy_rp::spi::{self, Spi};
use embassy_rp::{adc, bind_interrupts, dma};
use embassy_time::{Delay, Duration, Instant, Timer};
use embedded_hal_bus::spi::ExclusiveDevice;
use lora_phy::LoRa;
use lora_phy::lorawan_radio::LorawanRadio;
use lora_phy::sx127x::{self, Sx127x, Sx1276};
use lorawan_device::async_device::{Device, JoinMode, JoinResponse, SendResponse};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::region::{self, DR};
use lorawan_device::{AppEui, AppKey, DevEui};
use {defmt_rtt as _, panic_probe as _};

use crate::radio::{LoraTimer, Sx1276Pins};
use crate::storage::Storage;
use crate::vehicle::{Actions, Vehicle};

bind_interrupts!(struct Irqs {
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>, dma::InterruptHandler<DMA_CH1>;
    ADC_IRQ_FIFO => adc::InterruptHandler;
});

#[cfg(feature = "eu868")]
mod band {
    use super::*;
    pub const LORAWAN: region::Region = region::Region::EU868;
    pub const REGION: Region = Region::Eu868;
    /// SF7BW125 once joined (lorawan-device starts at DR0, SF12: over a second on air).
    pub const DATA_RATE: DR = DR::_5;
    /// A frequency of the default channels, for the sub-band's duty cycle (1 %).
    pub const BUDGET_FREQUENCY_HZ: u32 = 868_100_000;
    pub const MAX_TX_POWER_DBM: u8 = 14;
}
#[cfg(feature = "us915")]
mod band {
    use super::*;
    pub const LORAWAN: region::Region = region::Region::US915;
    pub const REGION: Region = Region::Us915;
    pub const DATA_RATE: DR = DR::_3;
    pub const BUDGET_FREQUENCY_HZ: u32 = 902_300_000;
    pub const MAX_TX_POWER_DBM: u8 = 20;
}
#[cfg(feature = "au915")]
mod band {
    use super::*;
    pub const LORAWAN: region::Region = region::Region::AU915;
    pub const REGION: Region = Region::Au915;
    pub const DATA_RATE: DR = DR::_5;
    pub const BUDGET_FREQUENCY_HZ: u32 = 915_200_000;
    pub const MAX_TX_POWER_DBM: u8 = 20;
}
#[cfg(feature = "as923")]
mod band {
    use super::*;
    pub const LORAWAN: region::Region = region::Region::AS923_1;
    pub const REGION: Region = Region::As923;
    pub const DATA_RATE: DR = DR::_5;
    pub const BUDGET_FREQUENCY_HZ: u32 = 923_200_000;
    pub const MAX_TX_POWER_DBM: u8 = 16;
}
#[cfg(not(any(
    feature = "eu868",
    feature = "us915",
    feature = "au915",
    feature = "as923"
)))]
compile_error!("choose a region: --features eu868 | us915 | au915 | as923");

/// How often the main loop looks at the schedule.
const TICK: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    info!(
        "longproto node {} ({}), region {}",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_NAME"),
        band::REGION.name()
    );

    let mut storage = Storage::new(Flash::new_blocking(p.FLASH));
    let mut led = Output::new(p.PIN_25, Level::Low);
    let (keys, source) = match storage.keys() {
        Ok(k) => k,
        Err(e) => {
            // Nothing to join with: say why, forever, and blink fast.
            loop {
                error!(
                    "no LoRaWAN keys: key block at flash {:#x}: {}; build with LONGPROTO_DEV_EUI/JOIN_EUI/APP_KEY or write tools/keyblock.py's UF2",
                    storage::KEY_PAGE,
                    defmt::Debug2Format(&e)
                );
                for _ in 0..20 {
                    led.toggle();
                    Timer::after_millis(100).await;
                }
            }
        }
    };
    info!(
        "DevEUI {=[u8]:02x} (keys from {})",
        keys.dev_eui[..],
        source
    );
    let state = storage.load_state();
    match state.replay.highest() {
        Some(c) => info!("highest command counter executed: {}", c),
        None => info!("no command executed yet"),
    }

    // The radio: SPI0 with DMA, 8 MHz (the SX1276 takes up to 10 MHz).
    let mut spi_config = spi::Config::default();
    spi_config.frequency = 8_000_000;
    let spi = Spi::new(
        p.SPI0, p.PIN_18, p.PIN_19, p.PIN_16, p.DMA_CH0, p.DMA_CH1, Irqs, spi_config,
    );
    let nss = Output::new(p.PIN_17, Level::High);
    let spi = ExclusiveDevice::new(spi, nss, Delay).unwrap();
    let pins = Sx1276Pins {
        reset: Output::new(p.PIN_20, Level::High),
        dio0: Input::new(p.PIN_21, Pull::Down),
        dio1: Input::new(p.PIN_22, Pull::Down),
    };
    let chip = Sx127x::new(
        spi,
        pins,
        sx127x::Config {
            chip: Sx1276,
            tcxo_used: false,
            tx_boost: true, // RFM95W modules have only the PA_BOOST output wired
            rx_boost: false,
        },
    );
    let lora = match LoRa::new(chip, true, Delay).await {
        Ok(l) => l,
        Err(e) => {
            error!("SX1276 does not answer on SPI0: {}; check the wiring", e);
            loop {
                Timer::after_secs(3600).await;
            }
        }
    };
    let radio: LorawanRadio<_, _, { band::MAX_TX_POWER_DBM }> = lora.into();
    let mut device: Device<_, DefaultFactory, _, _> = Device::new(
        region::Configuration::new(band::LORAWAN),
        radio,
        LoraTimer::new(),
        RoscRng,
    );
    let join = JoinMode::OTAA {
        deveui: DevEui::from(keys.dev_eui_lsb()),
        appeui: AppEui::from(keys.join_eui_lsb()),
        appkey: AppKey::from(keys.app_key),
    };

    let mut vehicle = Vehicle {
        actuator: Output::new(p.PIN_15, Level::Low),
        led,
        adc: adc::Adc::new_blocking(p.ADC, adc::Config::default()),
        temp_sensor: adc::Channel::new_temp_sensor(p.ADC_TEMP_SENSOR),
        relock_at_ms: None,
    };
    let mut node = Node::new(Schedule::default(), state);
    let mut budget = AirtimeBudget::for_region(band::REGION, band::BUDGET_FREQUENCY_HZ);
    let mut joined = false;
    let mut join_backoff_s = 10u64;
    let mut buf = [0u8; 64];

    loop {
        if !joined {
            info!("joining");
            match device.join(&join).await {
                Ok(JoinResponse::JoinSuccess) => {
                    info!("joined");
                    device.set_datarate(band::DATA_RATE);
                    joined = true;
                    join_backoff_s = 10;
                }
                Ok(JoinResponse::NoJoinAccept) => warn!("no join accept"),
                Err(e) => warn!("join failed: {}", e),
            }
            if !joined {
                // back off up to an hour, as LoRaWAN's join duty-cycle rules expect
                Timer::after_secs(join_backoff_s).await;
                join_backoff_s = (join_backoff_s * 2).min(3600);
                continue;
            }
        }

        let now = now_ms();
        if vehicle.tick(now) {
            info!("auto-relocked");
        }
        if node.uplink_due(now) {
            let dr = device.get_datarate() as u8;
            let max_len = band::REGION.max_payload(dr, false).unwrap_or(11) as usize;
            let before = node.clone();
            let status = vehicle.status();
            let len = node.build_uplink(Some(status), now, &mut buf, max_len);
            if !budget.try_spend(band::REGION, dr, len, now) {
                // keep the acknowledgements for when the budget allows
                node = before;
                warn!("duty-cycle budget used up: uplink postponed");
            } else {
                match device.send(&buf[..len], TELEMETRY_FPORT, false).await {
                    Ok(SendResponse::DownlinkReceived(fcnt)) => {
                        info!("downlink, FCntDown {}", fcnt);
                        while let Some(dl) = device.take_downlink() {
                            if dl.fport != COMMAND_FPORT {
                                continue;
                            }
                            let seen = node.state();
                            let frames = node.handle_downlink(
                                &dl.data,
                                now_ms(),
                                &mut Actions {
                                    vehicle: &mut vehicle,
                                    now_ms: now_ms(),
                                },
                            );
                            info!(
                                "{} command frame(s), {} ack(s) waiting",
                                frames,
                                node.pending_acks()
                            );
                            if node.state() != seen {
                                storage.save_state(&node.state());
                            }
                        }
                    }
                    Ok(SendResponse::SessionExpired) => {
                        warn!("session expired: rejoining");
                        joined = false;
                        node = before;
                        continue;
                    }
                    Ok(SendResponse::NoAck) | Ok(SendResponse::RxComplete) => {
                        info!("uplink sent ({} bytes, DR{}), no downlink", len, dr)
                    }
                    Err(e) => {
                        warn!("uplink failed: {}", e);
                        node = before;
                    }
                }
            }
        }
        if node.reboot_at_ms().is_some_and(|t| now_ms() >= t) {
            info!("rebooting as commanded");
            Timer::after_millis(100).await; // let the log drain
            cortex_m::peripheral::SCB::sys_reset();
        }
        Timer::after(TICK).await;
    }
}
