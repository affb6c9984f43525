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
use device_node::provision::Keys;
use device_node::{COMMAND_FPORT, TELEMETRY_FPORT, region::Region};
use embassy_executor::Spawner;
use embassy_rp::Peri;
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::Flash;
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{
    ADC, ADC_TEMP_SENSOR, DMA_CH0, DMA_CH1, FLASH, PIN_15, PIN_16, PIN_17, PIN_18, PIN_19, PIN_20,
    PIN_21, PIN_22, PIN_25, SPI0,
};
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

/// The SX1276 on SPI0, as lora-phy drives it.
type Chip = Sx127x<
    ExclusiveDevice<Spi<'static, SPI0, spi::Async>, Output<'static>, Delay>,
    Sx1276Pins<'static>,
    Sx1276,
>;
/// The LoRaWAN MAC over it.
type Lorawan = Device<
    LorawanRadio<Chip, Delay, { band::MAX_TX_POWER_DBM }>,
    DefaultFactory,
    LoraTimer,
    RoscRng,
>;

/// How often the main loop looks at the schedule.
const TICK: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

/// The peripherals, grouped by role (the wiring table above).
struct Resources {
    radio: RadioResources,
    vehicle: VehicleResources,
    flash: Peri<'static, FLASH>,
}

/// The SX1276 on SPI0, with DMA.
struct RadioResources {
    spi: Peri<'static, SPI0>,
    sck: Peri<'static, PIN_18>,
    mosi: Peri<'static, PIN_19>,
    miso: Peri<'static, PIN_16>,
    nss: Peri<'static, PIN_17>,
    reset: Peri<'static, PIN_20>,
    dio0: Peri<'static, PIN_21>,
    dio1: Peri<'static, PIN_22>,
    tx_dma: Peri<'static, DMA_CH0>,
    rx_dma: Peri<'static, DMA_CH1>,
}

/// The lock actuator, the LED, and the ADC for the status record.
struct VehicleResources {
    actuator: Peri<'static, PIN_15>,
    led: Peri<'static, PIN_25>,
    adc: Peri<'static, ADC>,
    temp_sensor: Peri<'static, ADC_TEMP_SENSOR>,
}

impl Resources {
    fn take() -> Self {
        let p = embassy_rp::init(Default::default());
        Resources {
            radio: RadioResources {
                spi: p.SPI0,
                sck: p.PIN_18,
                mosi: p.PIN_19,
                miso: p.PIN_16,
                nss: p.PIN_17,
                reset: p.PIN_20,
                dio0: p.PIN_21,
                dio1: p.PIN_22,
                tx_dma: p.DMA_CH0,
                rx_dma: p.DMA_CH1,
            },
            vehicle: VehicleResources {
                actuator: p.PIN_15,
                led: p.PIN_25,
                adc: p.ADC,
                temp_sensor: p.ADC_TEMP_SENSOR,
            },
            flash: p.FLASH,
        }
    }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let r = Resources::take();
    info!(
        "longproto node {} ({}), region {}",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_NAME"),
        band::REGION.name()
    );
    let mut storage = Storage::new(Flash::new_blocking(r.flash));
    let mut vehicle = vehicle(r.vehicle);
    let keys = keys_or_blink(&mut storage, &mut vehicle).await;
    let state = storage.load_state();
    match state.replay.highest() {
        Some(c) => info!("highest command counter executed: {}", c),
        None => info!("no command executed yet"),
    }
    let mut device: Lorawan = Device::new(
        region::Configuration::new(band::LORAWAN),
        radio(r.radio).await,
        LoraTimer::new(),
        RoscRng,
    );
    let join = JoinMode::OTAA {
        deveui: DevEui::from(keys.dev_eui_lsb()),
        appeui: AppEui::from(keys.join_eui_lsb()),
        appkey: AppKey::from(keys.app_key),
    };
    let mut node = Node::new(Schedule::default(), state);
    let mut budget = AirtimeBudget::for_region(band::REGION, band::BUDGET_FREQUENCY_HZ);
    loop {
        join_with_backoff(&mut device, &join).await;
        // report on schedule until the network ends the session
        loop {
            let now = now_ms();
            if vehicle.tick(now) {
                info!("auto-relocked");
            }
            if node.uplink_due(now) {
                let sent = report(&mut device, &mut node, &mut budget, &mut vehicle).await;
                match sent {
                    Report::Sent { downlink } if downlink => {
                        take_commands(&mut device, &mut node, &mut vehicle, &mut storage)
                    }
                    Report::SessionExpired => break,
                    _ => {}
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
}

/// The vehicle: locked, the LED off.
fn vehicle(r: VehicleResources) -> Vehicle<'static> {
    Vehicle {
        actuator: Output::new(r.actuator, Level::Low),
        led: Output::new(r.led, Level::Low),
        adc: adc::Adc::new_blocking(r.adc, adc::Config::default()),
        temp_sensor: adc::Channel::new_temp_sensor(r.temp_sensor),
        relock_at_ms: None,
    }
}

/// The LoRaWAN keys; without any there is nothing to join with: say why, forever, and
/// blink fast.
async fn keys_or_blink(storage: &mut Storage<'_>, vehicle: &mut Vehicle<'_>) -> Keys {
    match storage.keys() {
        Ok((keys, source)) => {
            info!(
                "DevEUI {=[u8]:02x} (keys from {})",
                keys.dev_eui[..],
                source
            );
            keys
        }
        Err(e) => loop {
            error!(
                "no LoRaWAN keys: key block at flash {:#x}: {}; build with LONGPROTO_DEV_EUI/JOIN_EUI/APP_KEY or write tools/keyblock.py's UF2",
                storage::KEY_PAGE,
                defmt::Debug2Format(&e)
            );
            for _ in 0..20 {
                vehicle.led.toggle();
                Timer::after_millis(100).await;
            }
        },
    }
}

/// The SX1276 on SPI0 at 8 MHz (it takes up to 10 MHz); a radio that does not answer
/// is reported, and the node waits for ever.
async fn radio(r: RadioResources) -> LorawanRadio<Chip, Delay, { band::MAX_TX_POWER_DBM }> {
    let mut spi_config = spi::Config::default();
    spi_config.frequency = 8_000_000;
    let spi = Spi::new(
        r.spi, r.sck, r.mosi, r.miso, r.tx_dma, r.rx_dma, Irqs, spi_config,
    );
    let nss = Output::new(r.nss, Level::High);
    let spi = ExclusiveDevice::new(spi, nss, Delay).unwrap();
    let pins = Sx1276Pins {
        reset: Output::new(r.reset, Level::High),
        dio0: Input::new(r.dio0, Pull::Down),
        dio1: Input::new(r.dio1, Pull::Down),
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
    lora.into()
}

/// Joins by OTAA, backing off from 10 s up to an hour between attempts, as LoRaWAN's
/// join duty-cycle rules expect; then sets the data rate for reports.
async fn join_with_backoff(device: &mut Lorawan, join: &JoinMode) {
    let mut backoff_s = 10u64;
    loop {
        info!("joining");
        match device.join(join).await {
            Ok(JoinResponse::JoinSuccess) => {
                info!("joined");
                device.set_datarate(band::DATA_RATE);
                return;
            }
            Ok(JoinResponse::NoJoinAccept) => warn!("no join accept"),
            Err(e) => warn!("join failed: {}", e),
        }
        Timer::after_secs(backoff_s).await;
        backoff_s = (backoff_s * 2).min(3600);
    }
}

/// What became of a report.
enum Report {
    /// On the air; whether a downlink came back in its receive windows.
    Sent { downlink: bool },
    /// Not sent (the duty-cycle budget, or the radio): the node is as before, and the
    /// acknowledgements wait for the next one.
    NotSent,
    /// The network ended the session: join again.
    SessionExpired,
}

/// Sends the status record and the acknowledgements due, if the duty-cycle budget
/// allows. The node's uplink is built on a copy, taken over only once it is on the air,
/// so an uplink not sent changes nothing.
async fn report(
    device: &mut Lorawan,
    node: &mut Node,
    budget: &mut AirtimeBudget,
    vehicle: &mut Vehicle<'_>,
) -> Report {
    let now = now_ms();
    let dr = device.get_datarate() as u8;
    let max_len = band::REGION.max_payload(dr, false).unwrap_or(11) as usize;
    let mut buf = [0u8; 64];
    let mut next = node.clone();
    let len = next.build_uplink(Some(vehicle.status()), now, &mut buf, max_len);
    if !budget.try_spend(band::REGION, dr, len, now) {
        warn!("duty-cycle budget used up: uplink postponed");
        return Report::NotSent;
    }
    match device.send(&buf[..len], TELEMETRY_FPORT, false).await {
        Ok(SendResponse::DownlinkReceived(fcnt)) => {
            info!("downlink, FCntDown {}", fcnt);
            *node = next;
            Report::Sent { downlink: true }
        }
        Ok(SendResponse::NoAck) | Ok(SendResponse::RxComplete) => {
            info!("uplink sent ({} bytes, DR{}), no downlink", len, dr);
            *node = next;
            Report::Sent { downlink: false }
        }
        Ok(SendResponse::SessionExpired) => {
            warn!("session expired: rejoining");
            Report::SessionExpired
        }
        Err(e) => {
            warn!("uplink failed: {}", e);
            Report::NotSent
        }
    }
}

/// Executes the command frames of the downlinks received (fPort 20), at most once each;
/// the replay window is saved to flash when it moved.
fn take_commands(
    device: &mut Lorawan,
    node: &mut Node,
    vehicle: &mut Vehicle<'_>,
    storage: &mut Storage<'_>,
) {
    while let Some(dl) = device.take_downlink() {
        if dl.fport != COMMAND_FPORT {
            continue;
        }
        let seen = node.state();
        let now = now_ms();
        let frames = node.handle_downlink(
            &dl.data,
            now,
            &mut Actions {
                vehicle,
                now_ms: now,
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
