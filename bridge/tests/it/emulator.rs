//! The firmware a user flashes, running in an emulated RP2040, takes an unlock through the
//! running bridge.
//!
//! `device-node/rp2040/emulator/harness.mjs` runs the release UF2 (and a key-page UF2 from
//! `tools/keyblock.py`, as a user would drop both on the board) in rp2040js, with a
//! simulated SX1276 on the firmware's SPI0 and DIO pins, in virtual time. This file plays
//! the rest of the radio path: a network-server double built on the `lorawan` crate that
//! answers the OTAA join, checks MICs and frame counters, decrypts uplinks and publishes
//! them as ChirpStack `up` events to a real mosquitto, takes the bridge's `command/down`
//! and transmits it in the device's next RX1, and reports `txack`/`ack` as ChirpStack does.
//! The firmware's defmt log is read from its RTT buffer, decoded by `defmt-print` with
//! the firmware's ELF, and shown on failure.
//!
//! The UF2s come from `./tools/test.sh`, which builds the firmware (and the deliberately
//! broken variant), installs rp2040js and defmt-print, before it runs these tests.
use crate::common::*;
use gateway_config::airtime::LoraParams;
use lorawan::creator::{DataPayloadCreator, JoinAcceptCreator};
use lorawan::keys::{AppKey, AppSKey, NewSKey};
use lorawan::parser::{
    DataHeader, DataPayload, DevNonce, FRMPayload, JoinAcceptPayload, MHDRAble, MType, PhyPayload,
    parse,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const DEV_EUI: &str = "70b3d57ed00e0001";
const JOIN_EUI: &str = "70b3d57ed0000000";
const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const DEV_ADDR: [u8; 4] = [0x26, 0x0b, 0x4e, 0x01];
/// What ChirpStack waits, after it publishes an `up`, before it reads the device queue
/// (`get_downlink_data_delay`, 100 ms by default).
const DOWNLINK_DATA_DELAY: Duration = Duration::from_millis(100);
/// LoRaWAN 1.0.x: RX1 opens 5 s after a join request, 1 s after a data uplink (the join
/// accept below keeps RxDelay 1).
const JOIN_ACCEPT_DELAY_MS: u64 = 5_000;
const RX1_DELAY_MS: u64 = 1_000;
/// Wall-clock limit for any one step of the emulation.
const STEP_WALL: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

struct Firmware {
    elf: PathBuf,
    uf2: PathBuf,
}

/// A firmware build in the target directory, as `./tools/test.sh` leaves it.
fn firmware(name: &str) -> Firmware {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("thumbv6m-none-eabi/release");
    let elf = dir.join(name);
    let uf2 = dir.join(format!("{name}.uf2"));
    for f in [&elf, &uf2] {
        assert!(
            f.exists(),
            "{} is missing: ./tools/test.sh builds the firmware, its UF2 and rp2040js before the host tests",
            f.display()
        );
    }
    Firmware { elf, uf2 }
}

fn key_uf2(dir: &Path) -> PathBuf {
    let out = dir.join("keys.uf2");
    let status = Command::new("python3")
        .arg(repo().join("tools/keyblock.py"))
        .args([DEV_EUI, JOIN_EUI, APP_KEY, "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs tools/keyblock.py");
    assert!(status.success(), "tools/keyblock.py failed");
    out
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn lsb<const N: usize>(mut b: [u8; N]) -> [u8; N] {
    b.reverse();
    b
}

// --- the emulated node -------------------------------------------------------------------

/// The harness process: the firmware in rp2040js, its radio, its log.
struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    /// defmt-print, decoding the RTT bytes with the firmware's ELF.
    printer: Child,
    printer_in: Option<ChildStdin>,
    log: Arc<Mutex<Vec<String>>>,
    /// Changes of the actuator output (GP15): (virtual ms, high).
    actuator: Vec<(f64, bool)>,
    /// Receive windows as the radio saw them.
    windows: Vec<Value>,
    t_ms: f64,
    /// Device time of the last transmission's end.
    last_tx_ms: f64,
}

/// Collects a child's output lines in the background.
fn collect(out: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
}

impl Node {
    fn start(fw: &Firmware, keys: &Path, seed: u32) -> Node {
        let dir = repo().join("device-node/rp2040/emulator");
        assert!(
            dir.join("node_modules/rp2040js").exists(),
            "rp2040js is not installed: run `npm ci` in {} (./tools/test.sh does)",
            dir.display()
        );
        let mut printer = Command::new("defmt-print")
            .arg("-e")
            .arg(&fw.elf)
            .arg("stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("defmt-print runs (cargo install --locked defmt-print; ./tools/test.sh does)");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect(printer.stdout.take().unwrap(), log.clone());
        collect(printer.stderr.take().unwrap(), log.clone());
        let printer_in = printer.stdin.take();
        let mut child = Command::new("node")
            .arg(dir.join("harness.mjs"))
            .arg("--uf2")
            .arg(&fw.uf2)
            .arg("--uf2")
            .arg(keys)
            .args(["--seed", &seed.to_string(), "--max-seconds", "21600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (Node.js) runs the emulator harness");
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Node {
            child,
            stdin,
            lines,
            stderr,
            printer,
            printer_in,
            log,
            actuator: Vec::new(),
            windows: Vec::new(),
            t_ms: 0.0,
            last_tx_ms: 0.0,
        }
    }

    fn take_log(&mut self, bytes: &[u8]) {
        if let Some(p) = self.printer_in.as_mut() {
            p.write_all(bytes).expect("defmt-print takes the log");
        }
    }

    /// Every log line so far, once defmt-print has been quiet for 300 ms (it does not
    /// exit at the end of its input).
    fn finish_log(&mut self) -> Vec<String> {
        if let Some(p) = self.printer_in.as_mut() {
            let _ = p.flush();
        }
        let mut seen = usize::MAX;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            let n = self.log.lock().unwrap().len();
            if n == seen {
                break;
            }
            seen = n;
        }
        self.log.lock().unwrap().clone()
    }

    /// The next transmission, handling every other event on the way. `Err` says why none
    /// came: the firmware stuck, out of time, or the harness gone.
    async fn next_tx(&mut self, virtual_limit_ms: f64) -> Result<Value, String> {
        loop {
            let line = match tokio::time::timeout(STEP_WALL, self.lines.recv()).await {
                Ok(Some(l)) => l,
                Ok(None) => return Err("the emulator harness exited".into()),
                Err(_) => return Err(format!("no event from the emulator within {STEP_WALL:?}")),
            };
            let ev: Value = serde_json::from_str(&line)
                .map_err(|e| format!("harness wrote a line that is not JSON ({e}): {line}"))?;
            if let Some(t) = ev["t_ms"].as_f64() {
                self.t_ms = t;
            }
            match ev["ev"].as_str().unwrap_or("") {
                "log" => self.take_log(&hex::decode(ev["hex"].as_str().unwrap()).unwrap()),
                "gpio" if ev["pin"] == 15 => self
                    .actuator
                    .push((self.t_ms, ev["high"].as_bool().unwrap())),
                "window" => {
                    self.t_ms = ev["close_ms"].as_f64().unwrap_or(self.t_ms);
                    self.windows.push(ev)
                }
                "tx" => {
                    self.last_tx_ms = self.t_ms;
                    return Ok(ev);
                }
                "end" => {
                    return Err(format!(
                        "the emulation ended at {:.3} s of device time: {}",
                        self.t_ms / 1000.0,
                        ev["reason"].as_str().unwrap_or("?")
                    ));
                }
                _ => {}
            }
            if self.t_ms > virtual_limit_ms {
                return Err(format!(
                    "no transmission by {:.1} s of device time",
                    virtual_limit_ms / 1000.0
                ));
            }
        }
    }

    fn reply(&mut self, id: u64, down: Option<Value>) {
        let line = json!({"cmd": "reply", "id": id, "down": down}).to_string();
        writeln!(self.stdin, "{line}").expect("harness takes the reply");
    }

    /// What the radio saw last, when it explains a silent node.
    fn diagnosis(&self) -> Option<String> {
        let last = self.windows.last()?;
        let closed = last["close_ms"].as_f64()?;
        if last["result"] != "timeout" || closed < self.last_tx_ms {
            return None;
        }
        Some(format!(
            "The last receive window ({} at {} Hz, SF{}, opened {:.3} s) ended empty at {:.3} s: the SX1276 raised RxTimeout, which it signals on DIO1. The firmware did nothing with the radio after it: it is still waiting for that window to end (does it wait on DIO1 too?).",
            last["mode"].as_str().unwrap_or("?"),
            last["freq"],
            last["sf"],
            last["open_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            closed / 1000.0
        ))
    }

    /// `reason`, then the firmware's log and the harness's stderr.
    fn failure(&mut self, reason: &str) -> String {
        let reason = match self.diagnosis() {
            Some(d) if reason.starts_with("no transmission") || reason.contains("ended") => {
                format!("{reason}\n{d}")
            }
            _ => reason.to_owned(),
        };
        let log = self.finish_log();
        let tail: Vec<&str> = log
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(String::as_str)
            .collect();
        format!(
            "{reason}\n--- firmware log (defmt over RTT, last {} lines, device uptime in s) ---\n{}\n--- receive windows ---\n{}\n--- harness stderr ---\n{}",
            tail.len(),
            tail.join("\n"),
            self.windows
                .iter()
                .rev()
                .take(6)
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.printer_in.take());
        let _ = self.printer.kill();
        let _ = self.printer.wait();
    }
}

// --- the network-server double -------------------------------------------------------------

struct Session {
    nwk_skey: [u8; 16],
    app_skey: [u8; 16],
    f_cnt_up: Option<u32>,
    f_cnt_down: u32,
}

/// One `command/down` in the device queue, as ChirpStack keeps it.
#[derive(Clone)]
struct QueueItem {
    id: String,
    f_port: u8,
    data: Vec<u8>,
    confirmed: bool,
}

/// What a data uplink carried.
struct Uplink {
    f_cnt: u32,
    f_port: u8,
    data: Vec<u8>,
    ack: bool,
}

struct NetworkServer {
    app_key: [u8; 16],
    session: Option<Session>,
    cs: ChirpstackDouble,
    queue: VecDeque<QueueItem>,
    /// A confirmed downlink sent and not yet acknowledged.
    awaiting_ack: Option<String>,
}

impl NetworkServer {
    fn app_key(&self) -> AppKey {
        AppKey::from(self.app_key)
    }

    /// A join request: MIC checked with the AppKey; returns the join accept and keeps the
    /// session keys derived from it.
    fn join(&mut self, phy: &[u8]) -> Result<Vec<u8>, String> {
        let Ok(PhyPayload::JoinRequest(req)) = parse(phy.to_vec()) else {
            return Err(format!("not a join request: {}", hex::encode(phy)));
        };
        if !req.validate_mic(self.app_key().inner()) {
            return Err("join request MIC does not verify with the AppKey".into());
        }
        let dev_eui = lsb::<8>(req.dev_eui().as_ref().try_into().unwrap());
        if hex::encode(dev_eui) != DEV_EUI {
            return Err(format!("join request from DevEUI {}", hex::encode(dev_eui)));
        }
        let nonce: [u8; 2] = req.dev_nonce().as_ref().try_into().unwrap();
        let mut accept = JoinAcceptCreator::new();
        accept
            .set_app_nonce(&[0x5a, 0x11, 0x03])
            .set_net_id(&[0x13, 0, 0])
            .set_dev_addr(&lsb(DEV_ADDR))
            .set_dl_settings(0) // RX1 DR offset 0, RX2 DR0
            .set_rx_delay(1);
        // `build` hands back its whole 33-byte buffer; without a CFList the frame is 17
        let phy = accept.build(self.app_key().inner()).unwrap()[..17].to_vec();
        // the session keys, derived from the accept as the device will
        let Ok(PhyPayload::JoinAccept(JoinAcceptPayload::Encrypted(enc))) = parse(phy.clone())
        else {
            unreachable!("a join accept just built parses")
        };
        let dec = enc.decrypt(&self.app_key());
        let nonce = DevNonce::new(&nonce[..]).unwrap();
        let nwk = dec.derive_newskey(&nonce, &self.app_key());
        let app = dec.derive_appskey(&nonce, &self.app_key());
        self.session = Some(Session {
            nwk_skey: nwk.as_ref().try_into().unwrap(),
            app_skey: app.as_ref().try_into().unwrap(),
            f_cnt_up: None,
            f_cnt_down: 0,
        });
        Ok(phy)
    }

    /// A data uplink: DevAddr, frame counter (16 bits on the air, extended) and MIC checked,
    /// FRMPayload decrypted.
    fn uplink(&mut self, phy: &[u8]) -> Result<Uplink, String> {
        let s = self
            .session
            .as_mut()
            .ok_or("a data uplink before any join")?;
        let Ok(PhyPayload::Data(DataPayload::Encrypted(enc))) = parse(phy.to_vec()) else {
            return Err(format!("not a data frame: {}", hex::encode(phy)));
        };
        if !enc.is_uplink() {
            return Err("a downlink-direction frame from the node".into());
        }
        if enc.mhdr().mtype() == MType::ConfirmedDataUp {
            return Err("a confirmed uplink: the firmware sends unconfirmed telemetry".into());
        }
        let fhdr = enc.fhdr();
        let addr = lsb::<4>(fhdr.dev_addr().as_ref().try_into().unwrap());
        if addr != DEV_ADDR {
            return Err(format!("uplink from DevAddr {}", hex::encode(addr)));
        }
        let low = fhdr.fcnt();
        let f_cnt = match s.f_cnt_up {
            None => low as u32,
            Some(last) => {
                let ahead = low.wrapping_sub(last as u16) as u32;
                if ahead == 0 || ahead > 16_384 {
                    return Err(format!(
                        "FCntUp {low} replayed or out of range (last {last})"
                    ));
                }
                last + ahead
            }
        };
        let ack = fhdr.fctrl().ack();
        let nwk = NewSKey::from(s.nwk_skey);
        let app = AppSKey::from(s.app_skey);
        let dec = enc
            .decrypt_if_mic_ok(nwk.inner(), app.inner(), f_cnt)
            .map_err(|_| format!("uplink FCnt {f_cnt}: MIC does not verify"))?;
        s.f_cnt_up = Some(f_cnt);
        let data = match dec.frm_payload() {
            FRMPayload::Data(d) => d.to_vec(),
            _ => Vec::new(),
        };
        Ok(Uplink {
            f_cnt,
            f_port: dec.f_port().unwrap_or(0),
            data,
            ack,
        })
    }

    /// A data downlink with the next FCntDown.
    fn downlink(&mut self, item: &QueueItem) -> Vec<u8> {
        let s = self.session.as_mut().unwrap();
        let mut phy = DataPayloadCreator::new();
        phy.set_confirmed(item.confirmed)
            .set_uplink(false)
            .set_f_port(item.f_port)
            .set_dev_addr(&lsb(DEV_ADDR))
            .set_fcnt(s.f_cnt_down);
        s.f_cnt_down += 1;
        phy.build(
            &item.data,
            &[],
            &NewSKey::from(s.nwk_skey),
            &AppSKey::from(s.app_skey),
        )
        .unwrap()
        .to_vec()
    }

    async fn publish_up(&self, tx: &Value, up: &Uplink) {
        let sf = tx["sf"].as_u64().unwrap() as u32;
        let device = longproto_fleet::events::Device {
            application_id: &self.cs.app,
            name: "pico-1",
            dev_eui: DEV_EUI,
            class: "CLASS_A",
        };
        let body = longproto_fleet::events::Up {
            deduplication_id: &format!("emu-{}", uuid_like()),
            time: "2026-11-28T09:00:00Z",
            dev_addr: &hex::encode(DEV_ADDR),
            dr: 12 - sf,
            f_cnt: up.f_cnt,
            f_port: up.f_port,
            data: &up.data,
            radio: longproto_fleet::events::Radio {
                gateway_id: "0016c001ff10a235",
                rssi: -97,
                snr: 7.0,
                frequency: tx["freq"].as_u64().unwrap() as u32,
                spreading_factor: sf,
            },
        }
        .to_json(device.info());
        self.cs.event(DEV_EUI, "up", body).await;
    }

    /// Moves every `command/down` the bridge has published into the device queue.
    async fn take_enqueued(&mut self) {
        while let Some((topic, v, data)) = self.cs.next_down(Duration::from_millis(1)).await {
            assert!(
                topic.contains(&format!("/device/{DEV_EUI}/")),
                "command/down for another device: {topic}"
            );
            self.queue.push_back(QueueItem {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                f_port: v["fPort"].as_u64().unwrap() as u8,
                data,
                confirmed: v["confirmed"].as_bool().unwrap_or(false),
            });
        }
    }
}

/// RX1 in EU868 with RX1DROffset 0: the uplink's channel and data rate.
fn rx1(tx: &Value, phy: &[u8], delay_ms: u64) -> Value {
    json!({"phy": hex::encode(phy), "delay_ms": delay_ms, "freq": tx["freq"], "sf": tx["sf"], "bw": tx["bw"]})
}

/// RX2 in EU868 as the join accept set it: 869.525 MHz, DR0 (SF12, 125 kHz), 1 s after RX1.
fn rx2(phy: &[u8]) -> Value {
    json!({"phy": hex::encode(phy), "delay_ms": RX1_DELAY_MS + 1_000, "freq": 869_525_000, "sf": 12, "bw": 125_000})
}

/// Every transmission's time on air must be what gateway-config computes.
fn check_time_on_air(tx: &Value) -> Result<(), String> {
    let len = tx["phy"].as_str().unwrap().len() / 2;
    let mut params = LoraParams::lorawan_uplink(
        tx["sf"].as_u64().unwrap() as u8,
        tx["bw"].as_u64().unwrap() as u32,
    );
    params.crc = tx["crc"].as_bool().unwrap();
    params.explicit_header = tx["explicit_header"].as_bool().unwrap();
    params.low_data_rate_optimize = Some(tx["ldro"].as_bool().unwrap());
    params.preamble_symbols = tx["preamble"].as_u64().unwrap() as u16;
    let ours = params.time_on_air(len).unwrap().as_micros() as i64;
    let model = tx["toa_us"].as_i64().unwrap();
    if (ours - model).abs() > 1 {
        return Err(format!(
            "time on air of a {len}-byte frame: the radio model says {model} µs, gateway-config {ours} µs"
        ));
    }
    if tx["invert_iq"] == true {
        return Err("an uplink sent with inverted IQ: no gateway would hear it".into());
    }
    Ok(())
}

// --- the scenario ----------------------------------------------------------------------------

/// The actuator went to unlocked and back (auto-relock): a replay executed after this
/// would move it again.
fn relocked(actuator: &[(f64, bool)]) -> bool {
    actuator
        .iter()
        .skip_while(|(_, high)| !high)
        .any(|(_, high)| !high)
}

/// What the run showed.
struct Report {
    uplinks: u32,
    empty_windows: usize,
    /// Frames received in RX2 (869.525 MHz).
    rx2_received: usize,
    actuator_rises: usize,
    relocked: bool,
    /// Device time covered, in seconds.
    device_s: f64,
    command_state: String,
    /// The command's states, oldest first.
    history: Vec<String>,
    /// Every telemetry record the bridge published, in order.
    records: Vec<Value>,
}

/// Boot, join, report, take an unlock through the bridge, execute it once, acknowledge it;
/// then a replayed frame and a replayed command that must change nothing. `Err` carries a
/// readable reason with the firmware's log.
async fn unlock_through_the_bridge(fw: &Firmware) -> Result<Report, String> {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-emulator")).await;
    let mut telemetry = Watcher::new(
        &broker,
        "emu-telemetry",
        &[&format!("longproto/v1/lorawan/{DEV_EUI}/telemetry")],
    )
    .await;
    let mut events = Watcher::new(
        &broker,
        "emu-events",
        &[&format!("longproto/v1/lorawan/{DEV_EUI}/command-events")],
    )
    .await;
    let mut ns = NetworkServer {
        app_key: unhex(APP_KEY),
        session: None,
        cs: ChirpstackDouble::new(&broker, "9a3c0c43-8ef3-4f38-9a2f-1d5a3e0b7c21").await,
        queue: VecDeque::new(),
        awaiting_ack: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(fw, &key_uf2(dir.path()), 7);

    let mut command_id: Option<String> = None;
    let mut executed_frame: Option<QueueItem> = None;
    let mut replayed_phy: Option<Vec<u8>> = None;
    let mut uplinks = 0u32;
    let mut state = String::from("none");
    let mut replays_sent = 0;
    let mut records: Vec<Value> = Vec::new();

    // Each step: the node transmits, the double answers. Ends when the command is executed
    // and both replays have been offered.
    loop {
        let tx = node
            .next_tx(node.t_ms + 1_000_000.0)
            .await
            .map_err(|e| node.failure(&e))?;
        if replays_sent == 2 {
            // the node transmitted again after the second replay's window: done
            break;
        }
        check_time_on_air(&tx).map_err(|e| node.failure(&e))?;
        let id = tx["id"].as_u64().unwrap();
        let phy = hex::decode(tx["phy"].as_str().unwrap()).unwrap();
        if phy.first().map(|b| b >> 5) == Some(0) {
            let accept = ns.join(&phy).map_err(|e| node.failure(&e))?;
            node.reply(id, Some(rx1(&tx, &accept, JOIN_ACCEPT_DELAY_MS)));
            ns.cs.join(DEV_EUI, "CLASS_A").await;
            continue;
        }
        let up = ns.uplink(&phy).map_err(|e| node.failure(&e))?;
        uplinks += 1;
        if let Some(item) = ns.awaiting_ack.take() {
            ns.cs.ack(DEV_EUI, &item, up.ack).await;
        }
        ns.publish_up(&tx, &up).await;
        if up.f_port == 10 {
            let t = telemetry
                .next_where(Duration::from_secs(10), |_| true)
                .await
                .ok_or_else(|| node.failure("the bridge published no telemetry for an uplink"))?;
            let t: Value = serde_json::from_slice(&t.1).unwrap();
            records.extend(t["records"].as_array().unwrap().iter().cloned());
            if t.get("error").is_some() || t["records"].as_array().is_none_or(|r| r.is_empty()) {
                return Err(node.failure(&format!("telemetry did not decode: {t}")));
            }
        }
        if command_id.is_none() {
            // the first report is through: ask for an unlock, for the next window
            let (status, v) = api(
                bridge.http_addr(),
                "POST",
                &format!("/v1/devices/lorawan/{DEV_EUI}/commands"),
                Some(&json!({"command": "unlock", "args": {"auto_relock_s": 30}, "ttl_s": 3600})),
            )
            .await;
            if status != 202 {
                return Err(node.failure(&format!("creating the unlock: {status} {v}")));
            }
            command_id = Some(v["id"].as_str().unwrap().to_owned());
        }
        // as ChirpStack: wait get_downlink_data_delay, then take the queue's head
        tokio::time::sleep(DOWNLINK_DATA_DELAY).await;
        ns.take_enqueued().await;
        let down = if let Some(item) = ns.queue.pop_front() {
            let phy = ns.downlink(&item);
            ns.cs.txack(DEV_EUI, &item.id).await;
            if item.confirmed {
                ns.awaiting_ack = Some(item.id.clone());
            }
            replayed_phy = Some(phy.clone());
            executed_frame = Some(item);
            Some(phy)
        } else if state == "executed" && relocked(&node.actuator) && replays_sent == 0 {
            // the very frame again (same FCntDown): the LoRaWAN layer must drop it
            replays_sent = 1;
            replayed_phy.clone()
        } else if state == "executed" && replays_sent == 1 {
            // the same command in a new, valid frame, in RX2 this time: the replay window
            // must refuse it
            replays_sent = 2;
            let mut item = executed_frame.clone().unwrap();
            item.confirmed = false;
            let phy = ns.downlink(&item);
            node.reply(id, Some(rx2(&phy)));
            continue;
        } else {
            None
        };
        node.reply(id, down.map(|p| rx1(&tx, &p, RX1_DELAY_MS)));

        // follow the command's state
        while let Some((_, p, _)) = events.next_where(Duration::from_millis(1), |_| true).await {
            let v: Value = serde_json::from_slice(&p).unwrap();
            if Some(v["command_id"].as_str().unwrap_or_default()) == command_id.as_deref() {
                state = v["state"].as_str().unwrap_or_default().to_owned();
            }
        }
        if uplinks > 40 {
            return Err(node.failure(&format!("the command is {state} after {uplinks} uplinks")));
        }
    }
    let (_, cmd) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{}", command_id.as_deref().unwrap()),
        None,
    )
    .await;
    Ok(Report {
        uplinks,
        rx2_received: node
            .windows
            .iter()
            .filter(|w| w["result"] == "received" && w["freq"] == 869_525_000)
            .count(),
        empty_windows: node
            .windows
            .iter()
            .filter(|w| w["result"] == "timeout")
            .count(),
        actuator_rises: node.actuator.iter().filter(|(_, high)| *high).count(),
        relocked: relocked(&node.actuator),
        device_s: node.t_ms / 1000.0,
        command_state: cmd["state"].as_str().unwrap_or_default().to_owned(),
        history: cmd["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["state"].as_str().unwrap_or_default().to_owned())
            .collect(),
        records,
    })
    .and_then(|r| {
        if r.command_state != "executed" {
            Err(node.failure(&format!("the command ended {}", r.command_state)))
        } else {
            Ok(r)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_uf2_joins_reports_and_executes_an_unlock_once() {
    let fw = firmware("longproto-node-rp2040");
    let wall = std::time::Instant::now();
    let report = unlock_through_the_bridge(&fw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{:.0} s of device time in {:.2} s of wall time, {} uplinks",
        report.device_s,
        wall.elapsed().as_secs_f64(),
        report.uplinks
    );
    assert_eq!(
        report.history,
        ["queued", "scheduled", "sent", "delivered", "executed"],
        "the command's path"
    );
    // the vehicle's own reports tell the story: locked, the unlock executed, unlocked,
    // and the replayed command answered as already executed
    let status: Vec<&Value> = report
        .records
        .iter()
        .filter(|r| r["kind"] == "status")
        .collect();
    assert_eq!(
        status.first().unwrap()["locked"],
        true,
        "{:?}",
        report.records
    );
    assert!(
        status.iter().any(|s| s["locked"] == false),
        "no report showed the vehicle unlocked: {:?}",
        report.records
    );
    assert_eq!(
        status.first().unwrap()["cabin_temp_c"],
        27,
        "the RP2040's temperature sensor"
    );
    let acks: Vec<&str> = report
        .records
        .iter()
        .filter(|r| r["kind"] == "ack" && r["opcode"] == 2)
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(acks.first(), Some(&"executed"), "{:?}", report.records);
    assert!(
        acks[1..].iter().all(|a| *a == "already_executed") && acks.len() >= 2,
        "acks for the unlock: {acks:?}"
    );
    assert_eq!(
        report.actuator_rises, 1,
        "the actuator unlocked {} times: a replay was executed",
        report.actuator_rises
    );
    assert!(report.relocked, "the unlock's auto-relock did not happen");
    assert!(
        report.empty_windows >= 2,
        "the node never had an empty receive window to survive"
    );
    assert_eq!(
        report.rx2_received, 1,
        "the replay sent in RX2 was not received"
    );
    assert!(report.uplinks >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_that_waits_only_on_dio0_fails_with_a_reason() {
    let fw = firmware("longproto-node-rp2040-dio0-only");
    let err = match unlock_through_the_bridge(&fw).await {
        Ok(r) => panic!(
            "the broken firmware passed ({} uplinks, command {})",
            r.uplinks, r.command_state
        ),
        Err(e) => e,
    };
    eprintln!("the broken firmware failed, as it must:\n{err}");
    // the reason names where it stopped, and the log shows the node's last words
    assert!(
        err.contains("the emulation ended") || err.contains("no transmission"),
        "{err}"
    );
    assert!(err.contains("firmware log"), "{err}");
    assert!(err.contains("RxTimeout, which it signals on DIO1"), "{err}");
}
