//! `longproto-bridge demo`: the bridge with embedded defaults and a simulated fleet.
//!
//! An embedded MQTT broker on loopback (unless `-c` names one), SQLite in a temporary
//! state directory, and simulated vehicles running the very node logic of the firmware
//! (`device_node::node`): LoRaWAN class A scooters and a class C lock behind a ChirpStack
//! double (uplinks, receive windows, txack and ack events, as ChirpStack's MQTT
//! integration sends them), a Sigfox vehicle using BIDIR callbacks, and a cellular
//! vehicle holding a long poll on the cellular listener. The demo sends unlocks, a
//! locate and a lock through the real HTTP API and prints every state change
//! with its latency, one line per event (the same on a terminal and in a file).
use crate::app::Bridge;
use crate::clock::rfc3339;
use anyhow::Context;
use device_node::node::Schedule;
use gateway_config::Settings;
use longproto_fleet::{Class, Fleet, Mode, Radio, SimDevice, Targets, Vehicle};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "demo-token-0123456789abcdef";
const SIGFOX_SECRET: &str = "demo-sigfox-secret-0123456789";
const APP: &str = "demo-app";
/// The cellular vehicle, and the seed its key derives from.
const CELLULAR: &str = "ce11000000000c01";
/// A cellular vehicle whose data session is down: its unlock falls back to SMS.
const CELLULAR_SMS: &str = "ce11000000000c02";
/// Its number at the test SMSC.
const SMS_NUMBER: &str = "491700000002";
/// The demo's account at its test SMSC.
const SMSC_ACCOUNT: (&str, &str) = ("longproto", "demo1234");
const SEED: u64 = 1;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// A configured broker to use instead of the embedded one.
    pub settings: Option<Settings>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts rumqttd on a loopback port in its own thread; returns the port.
fn embedded_broker() -> anyhow::Result<u16> {
    let port = free_port()?;
    let mut v4 = HashMap::new();
    v4.insert(
        "demo".to_owned(),
        rumqttd::ServerSettings {
            name: "demo".into(),
            listen: ([127, 0, 0, 1], port).into(),
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 256 * 1024,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 500,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the embedded broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(port)
}

fn demo_schedule() -> Schedule {
    // compressed time, so a minute shows the whole life of a command
    Schedule {
        normal_s: 8,
        active_s: 3,
        active_for_s: 30,
        storage_s: 60,
    }
}

fn demo_fleet() -> Vec<SimDevice> {
    const C: Radio = Radio::Lorawan(Class::C);
    const A: Radio = Radio::Lorawan(Class::A);
    [
        ("70b3d57ed0000a01", A, 38.7223, -9.1393),
        ("70b3d57ed0000a02", A, 38.7100, -9.1400),
        ("70b3d57ed0000a03", A, 38.7300, -9.1500),
        ("70b3d57ed0000c01", C, 38.7150, -9.1450),
        ("0051f0a1", Radio::Sigfox, 38.7200, -9.1300),
        (CELLULAR, Radio::Cellular, 38.7250, -9.1350),
        (CELLULAR_SMS, Radio::Cellular, 38.7270, -9.1370),
    ]
    .into_iter()
    .map(|(id, radio, lat, lon)| {
        let mut d = SimDevice::new(id, radio, demo_schedule(), Vehicle::parked(lat, lon, 87));
        if radio == Radio::Cellular {
            d.cellular = Some(longproto_fleet::cellular::client(SEED, id));
        }
        if id == CELLULAR_SMS {
            d.number = Some(SMS_NUMBER.into());
            d.data_session = false;
        }
        d
    })
    .collect()
}

fn clock_time() -> String {
    let now = rfc3339(crate::clock::Clock::now_ms(&crate::clock::SystemClock));
    now[11..19.min(now.len())].to_owned()
}

/// A command as the live view shows it.
#[derive(Debug, Clone)]
struct CommandRow {
    device: String,
    name: String,
    state: String,
    since_created: f64,
}

/// What the demo shows: plain lines when the output is not a terminal; on a terminal, a
/// screen redrawn twice a second with the fleet, the commands and the latest events.
#[derive(Default)]
struct Output {
    live: bool,
    header: Vec<String>,
    devices: std::collections::BTreeMap<String, (String, String)>,
    commands: Vec<(String, CommandRow)>,
    events: std::collections::VecDeque<String>,
}

type Shared = Arc<Mutex<Output>>;

impl Output {
    fn header(&mut self, line: String) {
        if !self.live {
            println!("{line}");
        }
        self.header.push(line);
    }

    fn event(&mut self, line: String) {
        let line = format!("{} {line}", clock_time());
        if self.live {
            self.events.push_back(line);
            while self.events.len() > 8 {
                self.events.pop_front();
            }
        } else {
            println!("{line}");
        }
    }

    fn telemetry(&mut self, device: &str, summary: String) {
        self.devices
            .insert(device.to_owned(), (clock_time(), summary.clone()));
        self.event(format!("telemetry {device}: {summary}"));
    }

    fn named(&mut self, id: &str, device: &str, name: &str) {
        self.row(id, device).name = name.to_owned();
    }

    fn row(&mut self, id: &str, device: &str) -> &mut CommandRow {
        let i = match self.commands.iter().position(|(k, _)| k == id) {
            Some(i) => i,
            None => {
                let row = CommandRow {
                    device: device.to_owned(),
                    name: "?".into(),
                    state: "queued".into(),
                    since_created: 0.0,
                };
                self.commands.push((id.to_owned(), row));
                if self.commands.len() > 10 {
                    self.commands.remove(0);
                }
                self.commands.len() - 1
            }
        };
        &mut self.commands[i].1
    }

    fn command(&mut self, device: &str, id: &str, state: &str, seconds: f64, reason: &str) {
        let row = self.row(id, device);
        row.state = state.to_owned();
        row.since_created = seconds;
        self.event(format!(
            "command   {device}: {id} {state} after {seconds:.1} s{reason}"
        ));
    }

    fn render(&self) -> String {
        let mut out = String::from("\x1b[H\x1b[2J");
        for h in &self.header {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str("\n  device                      last report  telemetry\n");
        for (device, (at, summary)) in &self.devices {
            out.push_str(&format!("  {device:27} {at:12} {summary}\n"));
        }
        out.push_str("\n  command                               device                      what      state       latency\n");
        for (id, r) in &self.commands {
            out.push_str(&format!(
                "  {id:37} {:27} {:9} {:11} {:.1} s\n",
                r.device, r.name, r.state, r.since_created
            ));
        }
        out.push_str("\n  latest\n");
        for e in &self.events {
            out.push_str(&format!("  {e}\n"));
        }
        out
    }
}

fn say(out: &Shared, line: String) {
    out.lock().unwrap_or_else(|e| e.into_inner()).event(line);
}

/// Runs the demo until Ctrl-C or the duration.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let state_dir = tempfile::Builder::new()
        .prefix("longproto-demo-")
        .tempdir()
        .context("a temporary state directory")?;
    let mut settings = opts.settings.clone().unwrap_or_default();
    if opts.settings.is_none() {
        let port = embedded_broker()?;
        settings.mqtt.server = format!("tcp://127.0.0.1:{port}");
        settings.mqtt.client_id = "longproto-demo".into();
    }
    settings.storage.url = format!("sqlite://{}/bridge.db", state_dir.path().display());
    // a named token with every scope over every device: the demo's commands record "demo"
    settings.operators.token.insert(
        "demo".into(),
        gateway_config::TokenSettings {
            secret_sha256: crate::operators::hash_secret(TOKEN),
            scopes: vec!["read".into(), "command".into()],
            devices: Vec::new(),
        },
    );
    settings.sigfox.secret = SIGFOX_SECRET.into();
    settings.mqtt.state_min_interval_ms = 0;
    // the cellular vehicle's key, in a file only this user reads
    let keys = state_dir.path().join("cellular-keys");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&keys)?
            .write_all(
                format!(
                    "{}{CELLULAR_SMS} {} {SMS_NUMBER}\n",
                    longproto_fleet::cellular::keys_file(SEED, &[CELLULAR]),
                    hex::encode(longproto_fleet::cellular::key_of(SEED, CELLULAR_SMS))
                )
                .as_bytes(),
            )?;
    }
    settings.cellular.keys_file = keys.display().to_string();
    // a test SMSC in the process, and SMS after 5 s (the demo's compressed time; 15 s
    // by default)
    let smsc = longproto_fleet::smsc::Smsc::start(SMSC_ACCOUNT.0, SMSC_ACCOUNT.1)
        .await
        .context("the demo's test SMSC")?;
    settings.sms.server = format!("smpp://{}", smsc.addr());
    settings.sms.system_id = SMSC_ACCOUNT.0.into();
    settings.sms.password = SMSC_ACCOUNT.1.into();
    settings.sms.source_addr = "LONGPROTO".into();
    settings.sms.source_ton = 5;
    settings.sms.sms_after_s = 5;
    if settings.cellular.bind.is_empty() {
        settings.cellular.bind = "127.0.0.1:0".into();
    }
    let broker_url = settings.mqtt.server.clone();
    // the configured port (8090) if it is free, else any free one: tried by binding, not
    // by checking first, so two demos starting together cannot both take it
    let bridge = match Bridge::start(settings.clone()).await {
        Ok(b) => b,
        Err(e) if format!("{e:#}").contains("Address already in use") => {
            settings.http.bind = "127.0.0.1:0".into();
            Bridge::start(settings).await?
        }
        Err(e) => return Err(e),
    };
    let http = bridge.http_addr();
    let cellular = bridge.cellular_addr().context("the cellular listener")?;
    use std::io::IsTerminal;
    let out: Shared = Arc::new(Mutex::new(Output {
        live: std::io::stdout().is_terminal(),
        ..Default::default()
    }));
    {
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        let port = broker_url.rsplit(':').next().unwrap_or("1883");
        let embedded = if opts.settings.is_none() {
            " (embedded)"
        } else {
            ""
        };
        o.header("longproto demo: the bridge and a simulated fleet (3 LoRaWAN class A scooters, a class C lock, a Sigfox vehicle, two cellular cars, one of them without a data session and reached by SMS)".into());
        o.header(format!("  MQTT broker  {broker_url}{embedded}"));
        o.header(format!("  HTTP API     http://{http}   token: {TOKEN}"));
        o.header(format!(
            "  cellular     {cellular}   (the vehicles' long poll)"
        ));
        o.header(format!(
            "  SMSC         smpp://{}   (a test SMSC; car {CELLULAR_SMS} has no data session)",
            smsc.addr()
        ));
        o.header(format!("  state        {}", state_dir.path().display()));
        o.header("play along:".into());
        o.header(format!("  mosquitto_sub -p {port} -v -t 'longproto/v1/#'"));
        o.header(format!("  mosquitto_pub -p {port} -t longproto/v1/lorawan/70b3d57ed0000a02/command -m '{{\"command\":\"unlock\"}}'"));
        o.header(format!(
            "  curl -s -H 'Authorization: Bearer {TOKEN}' --json '{{\"command\":\"locate\"}}' http://{http}/v1/devices/lorawan/70b3d57ed0000a03/commands"
        ));
        o.header("Ctrl-C stops it.".into());
    }
    let render = {
        let out = out.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let screen = {
                    let o = out.lock().unwrap_or_else(|e| e.into_inner());
                    if !o.live {
                        return;
                    }
                    o.render()
                };
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(screen.as_bytes());
                let _ = stdout.flush();
            }
        })
    };

    let (host, port) = broker_host_port(&broker_url);
    let fleet = Fleet::new(
        demo_fleet(),
        Targets {
            mqtt_host: host.clone(),
            mqtt_port: port,
            http: Some(http),
            sigfox_secret: SIGFOX_SECRET.into(),
            application_id: APP.into(),
            topic_root: "longproto/v1".into(),
            // RX1 opens a second after the uplink
            rx_delay: Duration::from_secs(1),
            cellular: Some(longproto_fleet::cellular::CellularTarget {
                addr: cellular,
                tls: None,
                max_wait_s: 240,
            }),
        },
    );
    let watcher = watch_events(&host, port, out.clone()).await?;
    let mut sim = fleet.start(Mode::Integration);
    sim.extend(fleet.start_sms(&smsc));
    let script = tokio::spawn(script(http, out.clone()));

    let stop = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    stop.await;
    for task in &sim {
        task.abort();
    }
    script.abort();
    watcher.abort();
    render.abort();
    {
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        if o.live {
            print!("{}", o.render());
            o.live = false;
        }
    }
    say(&out, "stopping".into());
    bridge.shutdown().await;
    Ok(())
}

fn broker_host_port(url: &str) -> (String, u16) {
    let u = url::Url::parse(url).ok();
    let host = u
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1".into());
    (host, u.and_then(|u| u.port()).unwrap_or(1883))
}

fn client(host: &str, port: u16, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 1000)
}

/// The operator's side: commands through the HTTP API, a few seconds apart.
async fn script(http: SocketAddr, out: Shared) {
    let steps: [(u64, &str, &str, Value); 6] = [
        (
            4,
            "lorawan",
            "70b3d57ed0000a01",
            json!({"command": "unlock", "args": {"auto_relock_s": 300}}),
        ),
        (
            6,
            "lorawan",
            "70b3d57ed0000c01",
            json!({"command": "locate"}),
        ),
        (8, "sigfox", "0051f0a1", json!({"command": "unlock"})),
        (10, "cellular", CELLULAR, json!({"command": "unlock"})),
        // its data session is down: sent by SMS after sms_after_s
        (12, "cellular", CELLULAR_SMS, json!({"command": "unlock"})),
        (
            30,
            "lorawan",
            "70b3d57ed0000a01",
            json!({"command": "lock"}),
        ),
    ];
    let start = Instant::now();
    for (at, network, id, body) in steps {
        tokio::time::sleep(Duration::from_secs(at).saturating_sub(start.elapsed())).await;
        let path = format!("/v1/devices/{network}/{id}/commands");
        let device = format!("{network}/{id}");
        let name = body["command"].as_str().unwrap_or("?");
        match longproto_fleet::post(http, &path, &format!("Bearer {TOKEN}"), &body).await {
            Ok((202, cmd)) => {
                let cid = cmd["id"].as_str().unwrap_or("?");
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                o.named(cid, &device, name);
                o.event(format!(
                    "operator  {device}: {name} → id {cid} (counter {})",
                    cmd["counter"]
                ));
            }
            Ok((status, v)) => say(&out, format!("operator  {device}: refused {status}: {v}")),
            Err(e) => say(&out, format!("operator  {device}: {e}")),
        }
    }
}

/// Prints telemetry and command events as they arrive.
async fn watch_events(
    host: &str,
    port: u16,
    out: Shared,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (c, mut eventloop) = client(host, port, "demo-watch");
    Ok(tokio::spawn(async move {
        let created: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = c
                        .subscribe("longproto/v1/+/+/telemetry", QoS::AtLeastOnce)
                        .await;
                    let _ = c
                        .subscribe("longproto/v1/+/+/command-events", QoS::AtLeastOnce)
                        .await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    let device = p
                        .topic
                        .split('/')
                        .skip(2)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join("/");
                    if p.topic.ends_with("/telemetry") {
                        out.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .telemetry(&device, summary(&v));
                    } else {
                        let id = v["command_id"].as_str().unwrap_or("?").to_owned();
                        let state = v["state"].as_str().unwrap_or("?");
                        let t0 = *created
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(id.clone())
                            .or_insert_with(Instant::now);
                        let reason = v["reason"]
                            .as_str()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        let seconds = t0.elapsed().as_secs_f64();
                        out.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .command(&device, &id, state, seconds, &reason);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }))
}

fn summary(t: &Value) -> String {
    let mut parts = Vec::new();
    for r in t["records"].as_array().into_iter().flatten() {
        match r["kind"].as_str() {
            Some("status") => parts.push(format!(
                "{} soc {}% {:.5},{:.5} {} km/h",
                if r["locked"] == true {
                    "locked"
                } else {
                    "unlocked"
                },
                r["soc_pct"],
                r["latitude"].as_f64().unwrap_or(0.0),
                r["longitude"].as_f64().unwrap_or(0.0),
                r["speed_kmh"]
            )),
            Some("ack") => parts.push(format!(
                "ack #{} {}",
                r["counter"],
                r["result"].as_str().unwrap_or("?")
            )),
            Some(k) => parts.push(k.to_owned()),
            None => {}
        }
    }
    if let Some(e) = t.get("error") {
        parts.push(format!("error: {}", e["message"]));
    }
    parts.join(", ")
}
