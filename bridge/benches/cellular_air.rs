//! Bytes on the air per cellular vehicle, counted as real packets.
//!
//! Each case gets a network namespace of its own and a veth pair at MTU 1500 (loopback's
//! 64 KB MTU would hide segmentation): the vehicle runs inside the namespace (this very
//! binary, started again with `ip netns exec`), the bridge (or mosquitto) outside. The
//! veth's own counters give packets and bytes; IPv6 is off and the neighbours are
//! static, so every frame is one of the vehicle's IP packets, and its IP bytes are the
//! frame's bytes less the 14-byte Ethernet header a cellular link does not carry.
//!
//! Cases (each with no command, one unlock in the hour, and telemetry every 5 minutes):
//! - `plain`: the long poll over one TCP connection, the prototype's parameters (a
//!   240 s wait, TCP keepalive every 15 s);
//! - `tls-full`: TLS 1.3, a new connection and a full handshake for every poll;
//! - `tls-resumed`: the same, each reconnection resumed with a ticket;
//! - `mqtt-tls`: what a user would pick instead: rumqttc over TLS to mosquitto, keepalive
//!   240 s, QoS 1 both ways;
//!
//! and the keepalive curve: `plain` with TCP keepalive every 60 s and 240 s, and a
//! longer wait.
//!
//! With `LONGPROTO_AIR_DROP=1` it measures the time to unlock after a silent drop
//! instead: each vehicle holds a poll with its own TCP keepalive (15, 60 or 240 s, one
//! probe, 1 s for its answer); its address changes under it (a NAT rebinding: nothing is
//! said to either end), then an unlock is created. The vehicle finds out by its failed
//! probe, reconnects and polls; the bridge finds out when the frame is not acknowledged
//! within `delivery_timeout_s` (15 s), where a fallback to SMS would start.
//!
//! Needs root (namespaces). `LONGPROTO_AIR_MINUTES` (default 60) sets how long every case
//! is counted, all at once, after a 30 s warm-up (the connection and the first poll,
//! which a vehicle pays once, not every hour: printed apart); the figures are scaled to
//! an hour and a 30-day month. 60 minutes are whole poll cycles of 240 and 900 s.
//!
//! cargo bench -p longproto-bridge --bench cellular_air
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use device_node::cellular::{Client, parse_response_head};
use device_node::node::{Node, NodeState, Schedule};
use device_node::seal::DeviceKey;
use longproto_fleet::Vehicle;
use serde::{Deserialize, Serialize};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const SEED: u64 = 9;
const CELL_PORT: u16 = 8091;
/// Seconds before the hour starts: the connection and the first poll.
const WARM_UP_S: u64 = 30;
const MQTT_TLS_PORT: u16 = 8883;

/// How a vehicle talks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
enum Bearer {
    Plain,
    TlsFull,
    TlsResumed,
    MqttTls,
}

/// What else happens in the hour.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
enum Load {
    Idle,
    UnlockPerHour,
    TelemetryEvery5Min,
}

/// One case, as the vehicle process gets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Case {
    n: u8,
    bearer: Bearer,
    load: Load,
    wait_s: u16,
    keepalive_s: u32,
    id: String,
    ca_pem: String,
}

impl Case {
    fn server_ip(&self) -> String {
        format!("10.99.{}.1", self.n)
    }
    fn vehicle_ip(&self) -> String {
        format!("10.99.{}.2", self.n)
    }
    fn name(&self) -> String {
        let bearer = match self.bearer {
            Bearer::Plain => "plain long poll",
            Bearer::TlsFull => "TLS, full handshake per poll",
            Bearer::TlsResumed => "TLS, resumed per poll",
            Bearer::MqttTls => "MQTT over TLS",
        };
        let load = match self.load {
            Load::Idle => "no command",
            Load::UnlockPerHour => "one unlock an hour",
            Load::TelemetryEvery5Min => "telemetry every 5 min",
        };
        match self.bearer {
            Bearer::MqttTls => format!("{bearer}, keepalive 240 s; {load}"),
            _ => format!(
                "{bearer}, wait {} s, TCP keepalive {} s; {load}",
                self.wait_s, self.keepalive_s
            ),
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac_of(netns: Option<&str>, dev: &str) -> String {
    let out = match netns {
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .arg(format!("/sys/class/net/{dev}/address"))
            .output(),
        None => Command::new("cat")
            .arg(format!("/sys/class/net/{dev}/address"))
            .output(),
    }
    .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The namespace and veth pair of a case: `lpa{n}` here, `lpb{n}` in `lpair{n}`.
fn make_link(c: &Case) {
    let (ns, a, b) = (
        format!("lpair{}", c.n),
        format!("lpa{}", c.n),
        format!("lpb{}", c.n),
    );
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let _ = Command::new("ip").args(["link", "del", &a]).output();
    sh(&["ip", "netns", "add", &ns]);
    sh(&[
        "ip", "link", "add", &a, "mtu", "1500", "type", "veth", "peer", "name", &b, "mtu", "1500",
        "netns", &ns,
    ]);
    // no IPv6 (router solicitations, neighbour discovery) and static neighbours (no
    // ARP): every frame on the pair is one of the case's IP packets
    sh(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{a}.disable_ipv6=1"),
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{b}.disable_ipv6=1"),
    ]);
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", c.server_ip()),
        "dev",
        &a,
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "ip",
        "addr",
        "add",
        &format!("{}/24", c.vehicle_ip()),
        "dev",
        &b,
    ]);
    let (mac_a, mac_b) = (mac_of(None, &a), mac_of(Some(&ns), &b));
    sh(&[
        "ip",
        "neigh",
        "replace",
        &c.vehicle_ip(),
        "lladdr",
        &mac_b,
        "dev",
        &a,
        "nud",
        "permanent",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "ip",
        "neigh",
        "replace",
        &c.server_ip(),
        "lladdr",
        &mac_a,
        "dev",
        &b,
        "nud",
        "permanent",
    ]);
    sh(&["ip", "link", "set", &a, "up"]);
    sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &b, "up"]);
    sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
}

fn drop_link(c: &Case) {
    let _ = Command::new("ip")
        .args(["netns", "del", &format!("lpair{}", c.n)])
        .output();
    let _ = Command::new("ip")
        .args(["link", "del", &format!("lpa{}", c.n)])
        .output();
}

/// (packets, bytes) both ways on the root side of the pair.
fn counters(c: &Case) -> (u64, u64) {
    let read = |what: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/lpa{}/statistics/{what}", c.n))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        read("rx_packets") + read("tx_packets"),
        read("rx_bytes") + read("tx_bytes"),
    )
}

fn tls_client(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The vehicle of a case, inside its namespace, until killed.
async fn vehicle(c: Case) {
    if c.bearer == Bearer::MqttTls {
        return mqtt_vehicle(c).await;
    }
    let key = DeviceKey::new(longproto_fleet::cellular::key_of(SEED, &c.id));
    let mut client = Client::new(key, &c.id, 1);
    let mut node = Node::new(Schedule::default(), NodeState::default());
    let mut car = Vehicle::parked(38.72, -9.14, 80);
    // one configuration for every reconnection: its ticket cache is what resumes
    let resumed = Arc::new(tls_client(&c.ca_pem));
    let addr = format!("{}:{CELL_PORT}", c.server_ip());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connect = async || -> Box<dyn Stream> {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let config = match c.bearer {
            Bearer::Plain => return Box::new(tcp) as Box<dyn Stream>,
            Bearer::TlsFull => Arc::new(tls_client(&c.ca_pem)), // a new one: no ticket
            _ => resumed.clone(),
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        Box::new(tls) as Box<dyn Stream>
    };
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    let mut stream = connect().await;
    let mut buf = Vec::new();
    loop {
        let now = started.elapsed();
        let mut records = [0u8; 64];
        let mut n = node.build_uplink(None, 0, &mut records, 64);
        if c.load == Load::TelemetryEvery5Min && now >= next_report {
            n += car.status().encode(&mut records[n..]).unwrap().0;
            next_report = now + Duration::from_secs(300);
        }
        let wait = match c.load {
            Load::TelemetryEvery5Min => {
                (next_report.saturating_sub(now).as_secs() as u16).clamp(1, c.wait_s)
            }
            _ => c.wait_s,
        };
        let mut out = [0u8; 256];
        let len = client.request(wait, &records[..n], &mut out).unwrap();
        stream.write_all(&out[..len]).await.unwrap();
        let (status, body) = loop {
            if let Some(h) = parse_response_head(&buf).unwrap() {
                while buf.len() < h.head_len + h.body_len {
                    stream.read_buf(&mut buf).await.unwrap();
                }
                let body = buf[h.head_len..h.head_len + h.body_len].to_vec();
                buf.drain(..h.head_len + h.body_len);
                break (h.status, body);
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "the bridge closed"
            );
        };
        if status == 200 {
            client.answer(&body, &mut node, 0, &mut car);
        }
        if c.bearer != Bearer::Plain {
            // one poll per connection: close it (close_notify and FIN), then a new one
            let _ = stream.shutdown().await;
            drop(stream);
            buf.clear();
            stream = connect().await;
        }
    }
}

async fn mqtt_vehicle(c: Case) {
    let mut o = rumqttc::MqttOptions::new(&c.id, c.server_ip(), MQTT_TLS_PORT);
    o.set_keep_alive(Duration::from_secs(240));
    o.set_clean_session(false);
    let mut config = tls_client(&c.ca_pem);
    config.resumption = rustls::client::Resumption::in_memory_sessions(4);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 100);
    let mut node = Node::new(Schedule::default(), NodeState::default());
    let mut car = Vehicle::parked(38.72, -9.14, 80);
    let (cmd, tel) = (format!("v/{}/c", c.id), format!("v/{}/t", c.id));
    client
        .subscribe(&cmd, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut report = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = report.tick(), if c.load == Load::TelemetryEvery5Min => {
                let mut b = [0u8; 12];
                let n = car.status().encode(&mut b).unwrap().0;
                client.publish(&tel, rumqttc::QoS::AtLeastOnce, false, b[..n].to_vec()).await.unwrap();
            }
            e = events.poll() => {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = e {
                    node.handle_downlink(&p.payload, 0, &mut car);
                    let mut b = [0u8; 16];
                    let n = node.build_uplink(None, 0, &mut b, 16);
                    client.publish(&tel, rumqttc::QoS::AtLeastOnce, false, b[..n].to_vec()).await.unwrap();
                } else if e.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

struct Running {
    case: Case,
    child: Child,
    before: (u64, u64),
    /// after the warm-up: the connection and the first poll are behind
    warm: (u64, u64),
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cellular_air: bench");
        return;
    }
    if let Ok(json) = std::env::var("LP_AIR_VEHICLE") {
        let case: Case = serde_json::from_str(&json).unwrap();
        return vehicle(case).await;
    }
    if let Ok(json) = std::env::var("LP_DROP_VEHICLE") {
        let case: Case = serde_json::from_str(&json).unwrap();
        return drop_vehicle(case).await;
    }
    if std::env::var("LONGPROTO_AIR_DROP").is_ok_and(|v| v == "1") {
        return silent_drops().await;
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1);
    if uid != 0 {
        println!("cellular_air: needs root for its network namespaces; skipped");
        return;
    }
    let minutes = std::env::var("LONGPROTO_AIR_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let _ = rustls::crypto::ring::default_provider().install_default();

    // a CA, and a certificate (ECDSA P-256) for localhost and every case's address
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut names = vec!["localhost".to_string()];
    names.extend((0..32).map(|n| format!("10.99.{n}.1")));
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    let mut cases = Vec::new();
    let mut add = |bearer, load, wait_s, keepalive_s| {
        let n = cases.len() as u8;
        cases.push(Case {
            n,
            bearer,
            load,
            wait_s,
            keepalive_s,
            id: format!("ce11{:012x}", n + 1),
            ca_pem: ca.pem(),
        });
    };
    for bearer in [
        Bearer::Plain,
        Bearer::TlsFull,
        Bearer::TlsResumed,
        Bearer::MqttTls,
    ] {
        for load in [Load::Idle, Load::UnlockPerHour, Load::TelemetryEvery5Min] {
            add(bearer, load, 240, 15);
        }
    }
    add(Bearer::Plain, Load::Idle, 240, 60);
    add(Bearer::Plain, Load::Idle, 240, 240);
    add(Bearer::Plain, Load::Idle, 900, 240);
    add(Bearer::Plain, Load::UnlockPerHour, 900, 240);
    add(Bearer::TlsResumed, Load::Idle, 900, 240);

    // the broker: the bridges' listener on loopback, the vehicles' TLS listener on all
    let broker = Mosquitto::start_with_listener(&format!(
        "listener {MQTT_TLS_PORT} 0.0.0.0\ncafile {}\ncertfile {}\nkeyfile {}\n",
        path("ca.pem"),
        path("server.pem"),
        path("server.key")
    ));
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let keys = dir.path().join("keys");
    write_keys(&keys, &longproto_fleet::cellular::keys_file(SEED, &ids));

    let mut bridges = Vec::new();
    for c in &cases {
        make_link(c);
        if c.bearer == Bearer::MqttTls {
            bridges.push(None);
            continue;
        }
        let mut s = settings(&broker, &format!("air-{}", c.n));
        s.logging.level = "error".into();
        s.http.bind = "127.0.0.1:0".into();
        s.cellular.bind = format!("{}:{CELL_PORT}", c.server_ip());
        s.cellular.keys_file = keys.display().to_string();
        s.cellular.tcp_keepalive_s = c.keepalive_s;
        s.cellular.max_wait_s = 3600;
        s.commands.default_ttl_s = 3600;
        if c.bearer != Bearer::Plain {
            s.cellular.tls_cert = path("server.pem");
            s.cellular.tls_key = path("server.key");
            s.cellular.tls_ticket_keys_file = path(&format!("tickets-{}", c.n));
        }
        s.mqtt.topic_root = format!("air{}", c.n);
        bridges.push(Some(longproto_bridge::app::Bridge::start(s).await.unwrap()));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!(
        "cellular_air: {} cases for {minutes} min each, all at once",
        cases.len()
    );
    let exe = std::env::current_exe().unwrap();
    let mut running = Vec::new();
    for c in &cases {
        let before = counters(c);
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("lpair{}", c.n)])
            .arg(&exe)
            .env("LP_AIR_VEHICLE", serde_json::to_string(c).unwrap())
            .spawn()
            .unwrap();
        running.push(Running {
            case: c.clone(),
            child,
            before,
            warm: (0, 0),
        });
    }
    let publisher = publisher(&broker, "air-operator").await;
    // the warm-up: each vehicle connects (a TCP and TLS handshake, an MQTT session) and
    // polls; a vehicle does that once, not every hour, so the hour is counted after it
    tokio::time::sleep(Duration::from_secs(WARM_UP_S)).await;
    for r in &mut running {
        r.warm = counters(&r.case);
    }
    let started = Instant::now();
    let half = Duration::from_secs(minutes * 30);
    tokio::time::sleep(half).await;
    // one unlock, halfway, for the cases that take one
    for (c, b) in cases.iter().zip(&bridges) {
        if c.load != Load::UnlockPerHour {
            continue;
        }
        match b {
            Some(bridge) => {
                let path = format!("/v1/devices/cellular/{}/commands", c.id);
                let (status, v) = api(
                    bridge.http_addr(),
                    "POST",
                    &path,
                    Some(&serde_json::json!({"command": "unlock"})),
                )
                .await;
                assert_eq!(status, 202, "{v}");
            }
            None => {
                let frame = device_node::Command::Unlock { auto_relock_s: 0 };
                let bytes = device_node::CommandFrame {
                    counter: 1,
                    command: frame,
                }
                .encode()
                .unwrap();
                publisher
                    .publish(
                        format!("v/{}/c", c.id),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        bytes.to_vec(),
                    )
                    .await
                    .unwrap();
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(minutes * 60).saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed().as_secs_f64();
    let scale = 3600.0 / elapsed;
    println!(
        "| case | first {WARM_UP_S} s: packets, IP bytes | then {:.0} min: packets, IP bytes | IP bytes an hour | MB a 30-day month |",
        elapsed / 60.0,
    );
    println!("|---|---|---|---|---|");
    // IP bytes: the veth's frame bytes less a 14-byte Ethernet header each
    let ip = |from: (u64, u64), to: (u64, u64)| {
        let packets = to.0 - from.0;
        (packets, (to.1 - from.1) - 14 * packets)
    };
    for r in &mut running {
        let after = counters(&r.case);
        let (warm_packets, warm_bytes) = ip(r.before, r.warm);
        let (packets, ip_bytes) = ip(r.warm, after);
        let hour = ip_bytes as f64 * scale;
        println!(
            "| {} | {warm_packets}, {warm_bytes} | {packets}, {ip_bytes} | {:.0} | {:.2} |",
            r.case.name(),
            hour,
            hour * 24.0 * 30.0 / 1e6
        );
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    for b in bridges.into_iter().flatten() {
        b.shutdown().await;
    }
    for c in &cases {
        drop_link(c);
    }
}

/// A vehicle with its own TCP keepalive (`keepalive_s`, one probe, 1 s for its answer):
/// holds polls; prints "frame <unix ns>" when a frame arrives, and reconnects at once
/// when its connection fails.
async fn drop_vehicle(c: Case) {
    let key = DeviceKey::new(longproto_fleet::cellular::key_of(SEED, &c.id));
    let mut client = Client::new(key, &c.id, 1);
    let mut node = Node::new(Schedule::default(), NodeState::default());
    let mut car = Vehicle::parked(38.72, -9.14, 80);
    let addr = format!("{}:{CELL_PORT}", c.server_ip());
    loop {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(c.keepalive_s as u64))
            .with_interval(Duration::from_secs(1))
            .with_retries(1);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&ka)
            .unwrap();
        let mut buf = Vec::new();
        'polls: loop {
            let mut records = [0u8; 64];
            let n = node.build_uplink(None, 0, &mut records, 64);
            let mut out = [0u8; 256];
            let len = client.request(c.wait_s, &records[..n], &mut out).unwrap();
            println!("poll {}", unix_ns());
            if stream.write_all(&out[..len]).await.is_err() {
                break;
            }
            loop {
                if let Some(h) = parse_response_head(&buf).unwrap() {
                    if buf.len() >= h.head_len + h.body_len {
                        let body = buf[h.head_len..h.head_len + h.body_len].to_vec();
                        buf.drain(..h.head_len + h.body_len);
                        if h.status == 200 {
                            println!("frame {}", unix_ns());
                            client.answer(&body, &mut node, 0, &mut car);
                        }
                        continue 'polls;
                    }
                }
                match stream.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => break 'polls, // the keepalive found it dead: reconnect
                }
            }
        }
        println!("reconnect {}", unix_ns());
    }
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Time to unlock after a silent drop, for each vehicle keepalive, all at once.
async fn silent_drops() {
    use std::io::BufRead;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let cases: Vec<Case> = [15u32, 60, 240]
        .iter()
        .enumerate()
        .map(|(i, &k)| Case {
            n: 20 + i as u8,
            bearer: Bearer::Plain,
            load: Load::UnlockPerHour,
            wait_s: 240,
            keepalive_s: k,
            id: format!("ce11{:012x}", 100 + i),
            ca_pem: String::new(),
        })
        .collect();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let keys = dir.path().join("keys");
    write_keys(&keys, &longproto_fleet::cellular::keys_file(SEED, &ids));
    let mut runs = Vec::new();
    for c in &cases {
        make_link(c);
        let mut s = settings(&broker, &format!("drop-{}", c.n));
        s.logging.level = "error".into();
        s.http.bind = "127.0.0.1:0".into();
        s.cellular.bind = format!("{}:{CELL_PORT}", c.server_ip());
        s.cellular.keys_file = keys.display().to_string();
        s.cellular.tcp_keepalive_s = 0; // the vehicle's own keepalive is what is measured
        s.cellular.delivery_timeout_s = 15;
        s.mqtt.topic_root = format!("drop{}", c.n);
        let bridge = longproto_bridge::app::Bridge::start(s).await.unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &format!("lpair{}", c.n)])
            .arg(std::env::current_exe().unwrap())
            .env("LP_DROP_VEHICLE", serde_json::to_string(c).unwrap())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        runs.push((c.clone(), bridge, child, rx));
    }
    // every vehicle holds its first poll
    for (_, _, _, rx) in &mut runs {
        let line = rx.recv().await.unwrap();
        assert!(line.starts_with("poll"), "{line}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // the drop: each vehicle's address changes, nobody is told
    for (c, _, _, _) in &runs {
        let ns = format!("lpair{}", c.n);
        let (b, new_ip) = (format!("lpb{}", c.n), format!("10.99.{}.3", c.n));
        // deleted first: deleting a primary address takes its secondaries with it
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "del",
            &format!("{}/24", c.vehicle_ip()),
            "dev",
            &b,
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{new_ip}/24"),
            "dev",
            &b,
        ]);
        let mac_b = mac_of(Some(&ns), &b);
        sh(&[
            "ip",
            "neigh",
            "replace",
            &new_ip,
            "lladdr",
            &mac_b,
            "dev",
            &format!("lpa{}", c.n),
            "nud",
            "permanent",
        ]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut results = Vec::new();
    for (c, bridge, _, _) in &runs {
        let events = Watcher::new(
            &broker,
            &format!("drop-watch-{}", c.n),
            &[&format!("drop{}/cellular/+/command-events", c.n)],
        )
        .await;
        let path = format!("/v1/devices/cellular/{}/commands", c.id);
        let t0 = unix_ns();
        let (status, v) = api(
            bridge.http_addr(),
            "POST",
            &path,
            Some(&serde_json::json!({"command": "unlock"})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        results.push((t0, events, v["id"].as_str().unwrap().to_owned()));
    }
    println!(
        "| vehicle TCP keepalive | the bridge knows the frame was lost (delivery timeout) | the vehicle reconnects | time to unlock |"
    );
    println!("|---|---|---|---|");
    // every case watched at once, so that each time is read when it happens
    let mut watched = Vec::new();
    for ((c, bridge, mut child, mut rx), (t0, mut events, id)) in runs.into_iter().zip(results) {
        watched.push(tokio::spawn(async move {
            let mut requeued = None;
            let deadline = Instant::now() + Duration::from_secs(c.keepalive_s as u64 + 60);
            while requeued.is_none() && Instant::now() < deadline {
                if let Some((_, p, _)) = events
                    .next_where(Duration::from_secs(1), |t| t.ends_with("command-events"))
                    .await
                {
                    let e: serde_json::Value = serde_json::from_slice(&p).unwrap();
                    if e["command_id"] == id.as_str()
                        && e["state"] == "queued"
                        && e["reason"].is_string()
                    {
                        requeued = Some(unix_ns());
                    }
                }
            }
            let (mut reconnect, mut frame) = (None, None);
            while frame.is_none() && Instant::now() < deadline {
                let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                else {
                    continue;
                };
                let t: u128 = line
                    .split(' ')
                    .nth(1)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if line.starts_with("reconnect") && reconnect.is_none() {
                    reconnect = Some(t);
                } else if line.starts_with("frame") {
                    frame = Some(t);
                }
            }
            let s = |t: Option<u128>| {
                t.map(|t| format!("{:.1} s", (t.saturating_sub(t0)) as f64 / 1e9))
                    .unwrap_or_else(|| "—".into())
            };
            let row = format!(
                "| {} s | {} | {} | {} |",
                c.keepalive_s,
                s(requeued),
                s(reconnect),
                s(frame)
            );
            let _ = child.kill();
            let _ = child.wait();
            bridge.shutdown().await;
            drop_link(&c);
            row
        }));
    }
    for w in watched {
        println!("{}", w.await.unwrap());
    }
}
