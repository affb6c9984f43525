//! longproto-fleet: N simulated vehicles running the firmware's node logic
//! (`device_node::node`), driving the bridge as real networks would. It serves the
//! `longproto-fleet` binary, the bridge's demo, and the bridge's tests: it is the one
//! network double they use.
//!
//! - [`integration`]: LoRaWAN devices behind a ChirpStack double that speaks ChirpStack's
//!   MQTT integration (`up`, `join`, `txack`, `ack` events; `command/down` taken into each
//!   device's queue and delivered in its next receive window, or at once for class C);
//! - [`sigfox`]: Sigfox devices whose uplinks are the backend's DATA callbacks (BIDIR),
//!   taking the 8-byte downlink from the reply and confirming it with ACKNOWLEDGE;
//! - [`cellular`]: cellular vehicles, each a long poll over its own TCP or TLS
//!   connection, on the device side of `device_node::cellular`;
//! - [`gateway`]: genuine LoRaWAN frames (OTAA join, encrypted uplinks with MICs) as a
//!   ChirpStack gateway bridge sends them, to drive a real ChirpStack.
//!
//! Every device's vehicle executes what its node logic hands it; the simulator counts
//! what it sent and received and, watching the bridge's `command-events`, how long each
//! command took from `queued` to `executed`.
pub mod cellular;
pub mod cli;
pub mod events;
pub mod gateway;
pub mod http;
pub mod integration;
pub mod sigfox;
pub mod sms;
pub mod smsc;

use device_node::command::Command;
use device_node::node::{Executor, Node, NodeState, Schedule};
use device_node::telemetry::{AckResult, FixAge, Record, Saturated, Status};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A LoRaWAN device class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Receive windows only after its uplinks.
    A,
    /// Always listening.
    C,
}

/// How a simulated device reaches the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Radio {
    /// LoRaWAN through ChirpStack.
    Lorawan(Class),
    /// Sigfox through the backend's callbacks.
    Sigfox,
    /// The cellular long poll.
    Cellular,
}

/// A simulated vehicle's hardware.
#[derive(Debug, Clone)]
pub struct Vehicle {
    /// Locked.
    pub locked: bool,
    /// State of charge, %.
    pub soc: u8,
    /// Position.
    pub lat_e7: i32,
    /// Position.
    pub lon_e7: i32,
    /// Odometer, km.
    pub odometer: u32,
    /// Commands its actuators carried out.
    pub executed: u32,
}

impl Executor for Vehicle {
    fn execute(&mut self, command: &Command) -> AckResult {
        match command {
            Command::Lock => self.locked = true,
            Command::Unlock { .. } => self.locked = false,
            Command::Raw { .. } => return AckResult::UnknownCommand,
            _ => {}
        }
        self.executed += 1;
        AckResult::Executed
    }
}

impl Vehicle {
    /// A parked, locked vehicle at a position.
    pub fn parked(lat: f64, lon: f64, soc: u8) -> Self {
        Vehicle {
            locked: true,
            soc,
            lat_e7: (lat * 1e7) as i32,
            lon_e7: (lon * 1e7) as i32,
            odometer: 12_345,
            executed: 0,
        }
    }

    /// Its status record now; an unlocked vehicle is being ridden.
    pub fn status(&mut self) -> Record {
        if !self.locked {
            self.lat_e7 += 300;
            self.lon_e7 += 300;
            self.odometer += 1;
            self.soc = self.soc.saturating_sub(1).max(5);
        }
        Record::Status(Status {
            latitude_e7: self.lat_e7,
            longitude_e7: self.lon_e7,
            fix_age: FixAge::Under10s,
            soc_pct: Some(self.soc),
            locked: self.locked,
            ignition: !self.locked,
            charging: false,
            speed_kmh: if self.locked { 0 } else { 14 },
            cabin_temp_c: 19,
            odometer_km: self.odometer,
            saturated: Saturated::empty(),
        })
    }
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// DevEUI (16 hex digits) or Sigfox id (8 hex digits), lower case.
    pub id: String,
    /// Its network.
    pub radio: Radio,
    /// The node logic, as on the Pico.
    pub node: Node,
    /// Its hardware.
    pub vehicle: Vehicle,
    /// Uplink frame counter (LoRaWAN FCnt; Sigfox seqNumber, 12 bits).
    pub f_cnt: u32,
    /// ChirpStack's queue for this device: (queue item id, payload, confirmed).
    pub queued_down: VecDeque<(String, Vec<u8>, bool)>,
    /// A confirmed downlink received and not yet acknowledged by an uplink.
    pub unacked_down: Option<String>,
    /// A cellular vehicle's side of the long poll.
    pub cellular: Option<device_node::cellular::Client>,
    /// A cellular vehicle's number: it takes SMS through the test SMSC
    /// ([`Fleet::start_sms`]).
    pub number: Option<String>,
    /// False: the vehicle's data session is down, it never polls (SMS only).
    pub data_session: bool,
}

impl SimDevice {
    /// A device starting fresh.
    pub fn new(id: &str, radio: Radio, schedule: Schedule, vehicle: Vehicle) -> Self {
        SimDevice {
            id: id.to_ascii_lowercase(),
            radio,
            node: Node::new(schedule, NodeState::default()),
            vehicle,
            f_cnt: 0,
            queued_down: VecDeque::new(),
            unacked_down: None,
            cellular: None,
            number: None,
            data_session: true,
        }
    }

    /// Hands a downlink to the node, as the radio would, and counts it.
    fn receive(&mut self, payload: &[u8], now_ms: u64, stats: &mut Stats) {
        let mut vehicle = self.vehicle.clone();
        let frames = self.node.handle_downlink(payload, now_ms, &mut vehicle);
        stats.executed += (vehicle.executed - self.vehicle.executed) as u64;
        self.vehicle = vehicle;
        stats.downlinks += 1;
        stats.frames += frames as u64;
    }
}

/// What the fleet is made of.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// LoRaWAN devices.
    pub lorawan: usize,
    /// Of which class C, in percent.
    pub class_c_percent: u8,
    /// Sigfox devices.
    pub sigfox: usize,
    /// Cellular devices.
    pub cellular: usize,
    /// Normal reporting interval, s (active mode: a fifth of it, at least 1 s).
    pub interval_s: u32,
    /// Seed for positions, charge and the mix.
    pub seed: u64,
}

/// splitmix64: a small, reproducible generator for the fleet's make-up.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The reporting schedule for an interval in seconds.
pub fn schedule(interval_s: u32) -> Schedule {
    let interval_s = interval_s.max(1);
    Schedule {
        normal_s: interval_s,
        active_s: (interval_s / 5).max(1),
        active_for_s: interval_s * 4,
        storage_s: interval_s * 24,
    }
}

/// Builds the fleet: DevEUIs `70b3d57ed0000000` + n, Sigfox ids `00510000` + n, cellular
/// ids `ce11000000000000` + n (keys from [`cellular::key_of`]); the seed places the
/// vehicles around a city and picks which ones are class C.
pub fn build(spec: &FleetSpec) -> Vec<SimDevice> {
    let mut rng = SplitMix::new(spec.seed);
    let mut out = Vec::with_capacity(spec.lorawan + spec.sigfox + spec.cellular);
    let vehicle = |rng: &mut SplitMix| {
        Vehicle::parked(
            38.70 + rng.unit() * 0.05,
            -9.20 + rng.unit() * 0.08,
            40 + (rng.next_u64() % 60) as u8,
        )
    };
    for n in 0..spec.lorawan {
        let class = if rng.unit() * 100.0 < spec.class_c_percent as f64 {
            Class::C
        } else {
            Class::A
        };
        let v = vehicle(&mut rng);
        out.push(SimDevice::new(
            &format!("70b3d57ed{:07x}", n + 1),
            Radio::Lorawan(class),
            schedule(spec.interval_s),
            v,
        ));
    }
    for n in 0..spec.sigfox {
        let v = vehicle(&mut rng);
        out.push(SimDevice::new(
            &format!("{:08x}", 0x0051_0000 + n + 1),
            Radio::Sigfox,
            schedule(spec.interval_s),
            v,
        ));
    }
    for n in 0..spec.cellular {
        let v = vehicle(&mut rng);
        let id = format!("ce11{:012x}", n + 1);
        let mut d = SimDevice::new(&id, Radio::Cellular, schedule(spec.interval_s), v);
        d.cellular = Some(cellular::client(spec.seed, &id));
        out.push(d);
    }
    out
}

/// Where the simulated fleet sends its traffic.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The MQTT broker ChirpStack and the bridge share.
    pub mqtt_host: String,
    /// Its port.
    pub mqtt_port: u16,
    /// The bridge's HTTP server, for Sigfox callbacks.
    pub http: Option<SocketAddr>,
    /// The Sigfox callback secret.
    pub sigfox_secret: String,
    /// The ChirpStack application id in event topics.
    pub application_id: String,
    /// The bridge's topic root, to watch `command-events`.
    pub topic_root: String,
    /// From an uplink to the receive window in which ChirpStack's queue goes down
    /// (LoRaWAN RX1: 1 s; ChirpStack reads the queue at 100 ms).
    pub rx_delay: Duration,
    /// The bridge's cellular listener, for cellular vehicles.
    pub cellular: Option<cellular::CellularTarget>,
}

/// What the simulator saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// LoRaWAN uplinks sent.
    pub lorawan_uplinks: u64,
    /// Sigfox callbacks posted.
    pub sigfox_uplinks: u64,
    /// Downlinks received (LoRaWAN frames, Sigfox replies with data).
    pub downlinks: u64,
    /// Command frames in them.
    pub frames: u64,
    /// Commands the vehicles' actuators carried out.
    pub executed: u64,
    /// Cellular requests sent.
    pub cellular_requests: u64,
    /// Cellular connections lost and made again.
    pub cellular_reconnects: u64,
    /// TLS handshakes in full, and resumed with a ticket.
    pub tls_full: u64,
    /// TLS handshakes resumed with a ticket.
    pub tls_resumed: u64,
    /// Sealed frames refused for a wrong MAC.
    pub refused_frames: u64,
    /// SMS the vehicles received.
    pub sms_received: u64,
    /// SMS the vehicles sent (their acknowledgements, without a data session).
    pub sms_sent: u64,
    /// Sigfox callbacks the bridge refused, MQTT publishes that failed.
    pub errors: u64,
    /// Commands seen in `command-events`: id → (first seen, final state, seconds).
    pub commands: HashMap<String, CommandSeen>,
}

/// A command as the simulator saw it in the bridge's events.
#[derive(Debug, Clone)]
pub struct CommandSeen {
    /// When its first event arrived.
    pub first: Instant,
    /// Its latest state.
    pub state: String,
    /// Seconds from the first event to `executed`, when it got there.
    pub round_trip_s: Option<f64>,
}

impl Stats {
    /// Round trips to `executed`, sorted, in seconds.
    pub fn round_trips(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .commands
            .values()
            .filter_map(|c| c.round_trip_s)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let rt = self.round_trips();
        let q = |p: f64| {
            rt.get(((rt.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        let open = self
            .commands
            .values()
            .filter(|c| c.round_trip_s.is_none())
            .count();
        format!(
            "uplinks: {} lorawan, {} sigfox, {} cellular, {} SMS; downlinks: {} (and {} SMS) ({} command frames), executed: {}; errors: {}; commands: {} executed (round trip p50 {:.2} s, max {:.2} s), {} open",
            self.lorawan_uplinks,
            self.sigfox_uplinks,
            self.cellular_requests,
            self.sms_sent,
            self.downlinks,
            self.sms_received,
            self.frames,
            self.executed,
            self.errors,
            rt.len(),
            q(0.5),
            rt.last().copied().unwrap_or(0.0),
            open
        )
    }
}

/// The running fleet.
pub struct Fleet {
    devices: Mutex<Vec<SimDevice>>,
    index: HashMap<String, usize>,
    targets: Targets,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, as ChirpStack writes event times.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Fleet {
    /// A fleet of these devices sending to these targets.
    pub fn new(devices: Vec<SimDevice>, targets: Targets) -> Arc<Self> {
        let index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Arc::new(Fleet {
            devices: Mutex::new(devices),
            index,
            targets,
            stats: Mutex::new(Stats::default()),
        })
    }

    /// What it saw so far.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Runs `f` on a device.
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut SimDevice, &mut Stats) -> R) -> Option<R> {
        let i = *self.index.get(id)?;
        let mut devices = lock(&self.devices);
        let mut stats = lock(&self.stats);
        Some(f(&mut devices[i], &mut stats))
    }

    /// Starts the handsets of the vehicles with a number at this SMSC: each message's
    /// frames go to the node, and a vehicle without a data session answers by SMS.
    pub fn start_sms(self: &Arc<Self>, smsc: &Arc<smsc::Smsc>) -> Vec<tokio::task::JoinHandle<()>> {
        let handsets: Vec<(String, String)> = lock(&self.devices)
            .iter()
            .filter_map(|d| Some((d.id.clone(), d.number.clone()?)))
            .collect();
        handsets
            .into_iter()
            .map(|(id, number)| tokio::spawn(sms::run(self.clone(), id, number, smsc.clone())))
            .collect()
    }

    /// The devices whose node wants to report now.
    fn due(&self, now: u64) -> Vec<(String, Radio)> {
        lock(&self.devices)
            .iter_mut()
            .filter_map(|d| d.node.uplink_due(now).then(|| (d.id.clone(), d.radio)))
            .collect()
    }

    /// Starts the simulation: the `command-events` watcher, the devices' reporting, and
    /// for LoRaWAN either the ChirpStack double or the gateway. Abort the returned tasks
    /// to stop it.
    pub fn start(self: &Arc<Self>, mode: Mode) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(watch_commands(self.clone()))];
        let cs = match mode {
            Mode::Integration => Some(integration::start(self.clone(), &mut tasks)),
            Mode::Gateway(opts) => {
                tasks.push(tokio::spawn(gateway::run(self.clone(), opts)));
                None
            }
        };
        if let Some(target) = &self.targets.cellular {
            for d in lock(&self.devices)
                .iter()
                .filter(|d| d.radio == Radio::Cellular && d.data_session)
            {
                let run = cellular::run(self.clone(), d.id.clone(), target.clone());
                tasks.push(tokio::spawn(run));
            }
        }
        let fleet = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now = now_ms();
                for (id, radio) in fleet.due(now) {
                    match (radio, &cs) {
                        (Radio::Lorawan(_), Some(cs)) => {
                            integration::uplink(&fleet, cs, &id, now).await
                        }
                        (Radio::Lorawan(_), None) => {} // the gateway reports these
                        (Radio::Sigfox, _) => {
                            let fleet = fleet.clone();
                            tokio::spawn(async move { sigfox::uplink(&fleet, &id, now).await });
                        }
                        (Radio::Cellular, _) => {} // each polls on its own task
                    }
                }
            }
        }));
        tasks
    }
}

/// How LoRaWAN devices reach the network.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Behind a ChirpStack double on ChirpStack's MQTT integration (no ChirpStack needed).
    Integration,
    /// As radio frames through a simulated gateway, for a real ChirpStack.
    Gateway(gateway::GatewayOptions),
}

/// An MQTT client of the simulator.
pub(crate) fn mqtt_client(t: &Targets, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, t.mqtt_host.clone(), t.mqtt_port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 10_000)
}

/// Follows `{root}/+/+/command-events` and times each command to `executed`.
async fn watch_commands(fleet: Arc<Fleet>) {
    let id = format!("longproto-fleet-watch-{}", std::process::id());
    let (c, mut eventloop) = mqtt_client(&fleet.targets, &id);
    let filter = format!("{}/+/+/command-events", fleet.targets.topic_root);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = c.subscribe(filter.clone(), QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let (Some(id), Some(state)) = (v["command_id"].as_str(), v["state"].as_str())
                else {
                    continue;
                };
                let mut stats = lock(&fleet.stats);
                let seen = stats
                    .commands
                    .entry(id.to_owned())
                    .or_insert_with(|| CommandSeen {
                        first: Instant::now(),
                        state: String::new(),
                        round_trip_s: None,
                    });
                seen.state = state.to_owned();
                if state == "executed" && seen.round_trip_s.is_none() {
                    seen.round_trip_s = Some(seen.first.elapsed().as_secs_f64());
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// POSTs JSON to the bridge: the status and the JSON answer (`null` if none).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    auth: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let body = serde_json::to_vec(body)?;
    let headers = [
        ("Authorization", auth),
        ("Content-Type", "application/json"),
    ];
    let r = http::request(addr, "POST", path, &headers, &body).await?;
    Ok((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(1_718_031_845_123), "2024-06-10T15:04:05.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_same_seed_builds_the_same_fleet() {
        let spec = FleetSpec {
            lorawan: 50,
            class_c_percent: 20,
            sigfox: 5,
            cellular: 0,
            interval_s: 60,
            seed: 7,
        };
        let a = build(&spec);
        let b = build(&spec);
        assert_eq!(a.len(), 55);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.id, x.radio, x.vehicle.lat_e7),
                (&y.id, y.radio, y.vehicle.lat_e7)
            );
        }
        let c = build(&FleetSpec { seed: 8, ..spec });
        assert_ne!(
            a.iter().map(|d| d.vehicle.lat_e7).collect::<Vec<_>>(),
            c.iter().map(|d| d.vehicle.lat_e7).collect::<Vec<_>>()
        );
        let class_c = a
            .iter()
            .filter(|d| d.radio == Radio::Lorawan(Class::C))
            .count();
        assert!(
            (3..=20).contains(&class_c),
            "{class_c} of 50 class C at 20 %"
        );
        assert_eq!(a[0].id, "70b3d57ed0000001");
        assert_eq!(a[50].id, "00510001");
        assert_eq!(a[50].radio, Radio::Sigfox);
    }
}
