//! Test harness: a real mosquitto on a free loopback port, an MQTT watcher, a small
//! HTTP/1.1 client over a real socket, and a bridge started in-process.
#![allow(dead_code)]

use longproto_bridge::app::Bridge;
use longproto_fleet::events;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A mosquitto broker of the test's own, with persistence, on 127.0.0.1.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Lines added to the listener (TLS files).
    listener_extra: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run ./tools/test.sh, which installs it");
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with_listener("")
    }

    /// A broker whose listener has these extra lines (e.g. `cafile`, `certfile`, `keyfile`).
    pub fn start_with_listener(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
            listener_extra: extra.to_owned(),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let running_as_root = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
        let user = if running_as_root.unwrap_or(false) {
            "user root\n"
        } else {
            ""
        };
        // in-flight window and TCP_NODELAY as deploy/mosquitto/longproto.conf sets them
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{extra}allow_anonymous true\npersistence true\npersistence_location {dir}/\n\
                 {user}max_inflight_messages 100\nset_tcp_nodelay true\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n",
                port = self.port,
                extra = self.listener_extra,
                dir = self.dir.path().display(),
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Stops the broker with SIGTERM, so it saves its persistence file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts it again on the same port, with the same persistence.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An MQTT client that records every message on the topics it subscribes to.
pub struct Watcher {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
}

pub fn client_options(broker: &Mosquitto, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(clean);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(1000);
    o
}

/// Drives a client's connection: subscribes to `filters` on every ConnAck and hands
/// each message to `on_publish` (false ends the loop). Returns once the first
/// subscription is acknowledged.
pub async fn subscriber(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    filters: &[&str],
    mut on_publish: impl FnMut(rumqttc::Publish) -> bool + Send + 'static,
) {
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in &filters {
                        let _ = client.try_subscribe(f, QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !on_publish(p) {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
        .await
        .expect("subscribed");
}

impl Watcher {
    /// Connects with a persistent session, subscribes, and waits for the subscription.
    pub async fn new(broker: &Mosquitto, id: &str, filters: &[&str]) -> Watcher {
        let (client, eventloop) = AsyncClient::new(client_options(broker, id, false), 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        subscriber(client.clone(), eventloop, filters, move |p| {
            tx.send((p.topic.clone(), p.payload.to_vec(), p.retain))
                .is_ok()
        })
        .await;
        Watcher { client, rx }
    }

    /// The next message whose topic satisfies `pred`, within `timeout`.
    pub async fn next_where(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(String, Vec<u8>, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m.0) => return Some(m),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next message on a topic ending with `suffix`, as JSON.
    pub async fn next_json(&mut self, suffix: &str) -> Value {
        let (topic, payload, _) = self
            .next_where(Duration::from_secs(10), |t| t.ends_with(suffix))
            .await
            .unwrap_or_else(|| panic!("no message on *{suffix} within 10 s"));
        serde_json::from_slice(&payload).unwrap_or_else(|e| panic!("{topic}: not JSON: {e}"))
    }

    /// Waits until nothing more arrives on topics ending with `suffix` for `quiet`.
    pub async fn none_on(&mut self, suffix: &str, quiet: Duration) -> Option<Value> {
        self.next_where(quiet, |t| t.ends_with(suffix))
            .await
            .map(|(_, p, _)| serde_json::from_slice(&p).unwrap_or(Value::Null))
    }
}

/// A publisher client, as ChirpStack's integration is one.
pub async fn publisher(broker: &Mosquitto, id: &str) -> AsyncClient {
    let (client, mut eventloop) = AsyncClient::new(client_options(broker, id, false), 10_000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    client
}

/// Settings for a bridge on this broker, HTTP on a free port.
pub fn settings(broker: &Mosquitto, client_id: &str) -> gateway_config::Settings {
    let mut s = gateway_config::Settings::default();
    s.mqtt.server = broker.url();
    s.mqtt.client_id = client_id.into();
    s.http.bind = "127.0.0.1:0".into();
    // a store of its own inside the broker's directory: it outlives the bridge, so that
    // a test can restart a bridge on the same store, and goes when the broker is dropped
    let dir = tempfile::Builder::new()
        .prefix("store-")
        .tempdir_in(broker.dir.path())
        .unwrap()
        .keep();
    s.storage.url = format!("sqlite://{}/bridge.db", dir.display());
    s.http.api_tokens = vec![TOKEN.into()];
    s.sigfox.secret = SIGFOX_SECRET.into();
    s
}

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const SIGFOX_SECRET: &str = "sigfox-secret-0123456789";

/// Starts a bridge and waits until its retained status is `online` (so its
/// subscriptions are in place).
pub async fn start_bridge(broker: &Mosquitto, settings: gateway_config::Settings) -> Bridge {
    let bridge = Bridge::start(settings).await.expect("bridge starts");
    wait_status(broker, b"online").await;
    bridge
}

pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One HTTP/1.1 exchange over a real socket (`longproto_fleet::http`, the one client):
/// status, headers (lowercase names), body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        longproto_fleet::http::request(addr, method, path, headers, body),
    )
    .await
    .expect("response in 10 s")
    .expect("a complete HTTP response");
    (r.status, r.headers, r.body)
}

/// The test vectors of a file.
pub fn vectors(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/../device-node/vectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An API call with the test token; the body parsed as JSON (Null when empty).
pub async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, body) = http(addr, method, path, &headers, &bytes).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Creates a command for a LoRaWAN device through the API; the `202` body.
pub async fn create_command(bridge: &Bridge, eui: &str, body: Value) -> Value {
    let path = format!("/v1/devices/lorawan/{eui}/commands");
    let (status, v) = api(bridge.http_addr(), "POST", &path, Some(&body)).await;
    assert_eq!(status, 202, "{v}");
    v
}

/// The bridge's `/metrics` text.
pub async fn metrics_text(bridge: &Bridge) -> String {
    let (status, _, body) = http(bridge.http_addr(), "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// POSTs a Sigfox callback body as it is written, with this Authorization header: the
/// status and the JSON answer (null when there is none).
pub async fn sigfox_callback(
    addr: SocketAddr,
    route: &str,
    authorization: &str,
    body: &[u8],
) -> (u16, Value) {
    let headers = [
        ("Authorization", authorization),
        ("Content-Type", "application/json"),
    ];
    let (status, _, b) = http(addr, "POST", route, &headers, body).await;
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The time the double's events carry.
const TIME: &str = "2025-06-13T12:51:07.118204+00:00";

/// Plays ChirpStack's side of the MQTT integration: publishes the events
/// `longproto_fleet::events` builds, reads `command/down`.
pub struct ChirpstackDouble {
    pub client: AsyncClient,
    pub downs: Watcher,
    pub app: String,
}

impl ChirpstackDouble {
    pub async fn new(broker: &Mosquitto, app: &str) -> Self {
        let client = publisher(broker, &format!("chirpstack-{}", uuid_like())).await;
        let downs = Watcher::new(
            broker,
            &format!("cs-downs-{}", uuid_like()),
            &["application/+/device/+/command/down"],
        )
        .await;
        ChirpstackDouble {
            client,
            downs,
            app: app.into(),
        }
    }

    fn device_info(&self, eui: &str, class: &str) -> Value {
        events::Device {
            application_id: &self.app,
            name: &format!("dev-{eui}"),
            dev_eui: eui,
            class,
        }
        .info()
    }

    pub async fn event(&self, eui: &str, event: &str, body: Value) {
        let topic = events::topic(&self.app, eui, event);
        self.client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&body).unwrap(),
            )
            .await
            .unwrap();
    }

    /// A class A uplink at a data rate, with a longproto payload (hex) on fPort 10.
    pub async fn up(&self, eui: &str, dr: u32, f_cnt: u32, hex_payload: &str) {
        self.up_with(eui, dr, f_cnt, hex_payload, None).await;
    }

    /// An `up` event whose deviceInfo carries these tags (ChirpStack's device tags).
    pub async fn up_tagged(&self, eui: &str, f_cnt: u32, hex_payload: &str, tags: Value) {
        self.up_with(eui, 5, f_cnt, hex_payload, Some(tags)).await;
    }

    async fn up_with(
        &self,
        eui: &str,
        dr: u32,
        f_cnt: u32,
        hex_payload: &str,
        tags: Option<Value>,
    ) {
        let mut info = self.device_info(eui, "CLASS_A");
        if let Some(tags) = tags {
            info["tags"] = tags;
        }
        let body = events::Up {
            deduplication_id: &format!("{eui}-{f_cnt}-{}", uuid_like()),
            time: TIME,
            dev_addr: "01a44c4c",
            dr,
            f_cnt,
            f_port: 10,
            data: &hex::decode(hex_payload).unwrap(),
            radio: events::Radio {
                gateway_id: "2cf7f11081400088",
                rssi: -90,
                snr: 7.0,
                ..Default::default()
            },
        }
        .to_json(info);
        self.event(eui, "up", body).await;
    }

    pub async fn txack(&self, eui: &str, queue_item_id: &str) {
        let body = events::txack(self.device_info(eui, "CLASS_A"), queue_item_id, TIME);
        self.event(eui, "txack", body).await;
    }

    pub async fn ack(&self, eui: &str, queue_item_id: &str, acknowledged: bool) {
        let info = self.device_info(eui, "CLASS_A");
        let body = events::ack(info, &uuid_like(), TIME, queue_item_id, acknowledged);
        self.event(eui, "ack", body).await;
    }

    pub async fn log(&self, eui: &str, queue_item_id: &str, code: &str, description: &str) {
        let info = self.device_info(eui, "CLASS_A");
        let body = events::log(info, TIME, queue_item_id, code, description);
        self.event(eui, "log", body).await;
    }

    pub async fn join(&self, eui: &str, class: &str) {
        let info = self.device_info(eui, class);
        let body = events::join(info, &uuid_like(), TIME, "00b1c2d3");
        self.event(eui, "join", body).await;
    }

    /// The next `command/down`: (topic, JSON, payload bytes).
    pub async fn next_down(&mut self, within: Duration) -> Option<(String, Value, Vec<u8>)> {
        let (topic, payload, _) = self.downs.next_where(within, |_| true).await?;
        let v: Value = serde_json::from_slice(&payload).unwrap();
        let data = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap()
        };
        Some((topic, v, data))
    }
}

/// Reads the command events of a device until one reaches `state`.
pub async fn wait_state(events: &mut Watcher, command_id: &str, state: &str) -> Value {
    loop {
        let (_, p, _) = events
            .next_where(Duration::from_secs(10), |t| t.ends_with("/command-events"))
            .await
            .unwrap_or_else(|| panic!("no \"{state}\" event for {command_id} within 10 s"));
        let e: Value = serde_json::from_slice(&p).unwrap();
        if e["command_id"] == command_id && e["state"] == state {
            return e;
        }
    }
}

/// One keep-alive HTTP/1.1 connection (`longproto_fleet::http::Conn`).
pub struct Conn(longproto_fleet::http::Conn);

impl Conn {
    pub async fn new(addr: SocketAddr) -> Self {
        Conn(longproto_fleet::http::Conn::new(addr).await.unwrap())
    }

    /// POSTs JSON with an Authorization header; returns the status and the body.
    pub async fn post(&mut self, path: &str, authorization: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.0.post(path, authorization, body).await.unwrap()
    }
}

/// Waits until the retained bridge status is `want` (`online` or `offline`).
pub async fn wait_status(broker: &Mosquitto, want: &[u8]) {
    let mut w = Watcher::new(
        broker,
        &format!("status-{}", uuid_like()),
        &["longproto/v1/bridge/status"],
    )
    .await;
    while w
        .next_where(Duration::from_secs(10), |_| true)
        .await
        .expect("a bridge status within 10 s")
        .1
        != want
    {}
}

/// Starts a bridge on a clock of the test's and waits until it is online.
pub async fn start_bridge_with_clock(
    broker: &Mosquitto,
    settings: gateway_config::Settings,
    clock: std::sync::Arc<dyn longproto_bridge::clock::Clock>,
) -> Bridge {
    let bridge = Bridge::start_with_clock(settings, clock)
        .await
        .expect("bridge starts");
    wait_status(broker, b"online").await;
    bridge
}

/// Writes a configuration file for the real binary: this broker, a client id, an HTTP
/// bind, the test token and a store in `dir`.
/// A configuration for the real binary on `broker`, its store and the file in a
/// directory of its own, HTTP on a free port: (config file, HTTP address, directory).
pub fn binary_config(
    broker: &Mosquitto,
    client_id: &str,
) -> (PathBuf, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), broker, client_id, &format!("127.0.0.1:{port}"));
    (config, ([127, 0, 0, 1], port).into(), dir)
}

pub fn write_config(
    dir: &std::path::Path,
    broker: &Mosquitto,
    client_id: &str,
    http_bind: &str,
) -> PathBuf {
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nserver = \"{}\"\nclient_id = \"{client_id}\"\n[http]\nbind = \"{http_bind}\"\napi_tokens = [\"{TOKEN}\"]\n[storage]\nurl = \"sqlite://{}/bridge.db\"\n",
            broker.url(),
            dir.display()
        ),
    )
    .unwrap();
    config
}

/// Of the observations of a Prometheus histogram in `/metrics` text, how many were at
/// most `bound` (which must be one of its bucket bounds), and how many there were.
pub fn histogram_within(metrics: &str, name: &str, bound: f64) -> Option<(u64, u64)> {
    let buckets = histogram_buckets(metrics, name);
    let within = buckets.iter().find(|(le, _)| *le == bound)?.1;
    Some((within, buckets.last()?.1))
}

fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((
                le.parse().unwrap_or(f64::INFINITY),
                count.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The upper bound of the bucket holding the `p`-th quantile of a Prometheus histogram in
/// `/metrics` text (`before`: an earlier reading to subtract, to look at one phase only).
pub fn histogram_quantile(metrics: &str, before: Option<&str>, name: &str, p: f64) -> Option<f64> {
    let buckets = |text: &str| histogram_buckets(text, name);
    let after = buckets(metrics);
    let before = before
        .map(buckets)
        .unwrap_or_else(|| after.iter().map(|(le, _)| (*le, 0)).collect());
    let diff: Vec<(f64, u64)> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    let total = diff.last()?.1;
    diff.iter()
        .find(|(_, c)| *c as f64 >= p * total as f64)
        .map(|(le, _)| *le)
}

/// Writes a devices' keys file (`cellular.keys_file`), readable by its owner alone as
/// the bridge requires.
pub fn write_keys(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A CA and a server certificate for `localhost`, in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, and a server certificate for `localhost` signed by it.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "longproto test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The lines of a mosquitto TLS listener with these files.
    pub fn listener(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            self.path("ca.pem"),
            self.path("server.pem"),
            self.path("server.key")
        )
    }
}

/// A new, empty PostgreSQL database on the test server (`LONGPROTO_TEST_POSTGRES`,
/// which ./tools/test.sh starts): its URL.
pub async fn postgres_database() -> String {
    use sqlx::Connection;
    let base = std::env::var("LONGPROTO_TEST_POSTGRES").expect(
        "LONGPROTO_TEST_POSTGRES is not set: ./tools/test.sh starts a PostgreSQL for the tests",
    );
    let name = format!("t_{}", uuid_like().replace('-', ""));
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A PostgreSQL for this run unless `LONGPROTO_TEST_POSTGRES` names one: its directory
/// (stopped by the caller's exit: tools/postgres.sh `stop`).
pub fn postgres_for_the_run() -> Option<PgRun> {
    if std::env::var("LONGPROTO_TEST_POSTGRES").is_ok() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/postgres.sh"))
        .arg("start")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    // SAFETY: set before the bridges and the fleet start their threads
    unsafe {
        std::env::set_var(
            "LONGPROTO_TEST_POSTGRES",
            url.trim().lines().last().unwrap(),
        )
    };
    Some(PgRun(dir))
}

/// A PostgreSQL started for the run, stopped when dropped.
pub struct PgRun(tempfile::TempDir);

impl Drop for PgRun {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/postgres.sh"))
            .arg("stop")
            .arg(self.0.path())
            .status();
    }
}

/// The real bridge binary with a configuration of its own: this broker, a client id,
/// HTTP on a free port, and its store (SQLite in its directory, unless `store` names
/// another). Killed when dropped.
pub struct BridgeProcess {
    pub config: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl BridgeProcess {
    pub fn new(broker: &Mosquitto, client_id: &str, store: Option<&str>) -> Self {
        let (config, addr, dir) = binary_config(broker, client_id);
        if let Some(url) = store {
            let sqlite = format!("sqlite://{}/bridge.db", dir.path().display());
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains(&sqlite), "{text}");
            std::fs::write(&config, text.replace(&sqlite, url)).unwrap();
        }
        BridgeProcess {
            config,
            addr,
            child: None,
            _dir: dir,
        }
    }

    /// Starts it, logging at `log` (RUST_LOG) to the test's stderr.
    pub fn start(&mut self, log: &str) {
        let child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
