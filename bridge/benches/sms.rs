//! SMS through the test SMSC (`longproto_fleet::smsc`, SMPP 3.4 over loopback TCP):
//!
//! 1. **Submits per second against the SMSC's limit.** 300 vehicles without a data
//!    session get one command each; the SMSC takes `L` submits a second and throttles
//!    the rest. Rows: the bridge's rate set to the limit, set to twice it (so the SMSC
//!    throttles), and the baseline in the same run: no limit on either side.
//! 2. **From creation to the vehicle.** One command at a time to a vehicle without a
//!    data session (`sms_after_s` = 1, the least), timed from the `POST` to the message
//!    at its handset; the baseline in the same run is the same to a vehicle holding a
//!    long poll.
//! 3. **SMS per executed command** in a fleet run: cellular vehicles of which a tenth
//!    have no data session, `sms_after_s` at its default (15 s), two rounds of commands.
//!
//! cargo bench -p longproto-bridge --bench sms
//! (`LONGPROTO_SMS_VEHICLES` sets the fleet of part 3, default 200.)
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use device_node::cellular::Client;
use device_node::seal::DeviceKey;
use longproto_bridge::app::Bridge;
use longproto_fleet::smsc::Smsc;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 19;

fn id(i: usize) -> String {
    format!("ce11{:012x}", i + 1)
}

/// The vehicle's number, as the simulator gives it.
fn number(i: usize) -> String {
    longproto_fleet::sms::number_of(&id(i))
}

/// A keys file giving `numbered` of the ids their numbers.
fn keys(dir: &std::path::Path, name: &str, n: usize, numbered: impl Fn(usize) -> bool) -> String {
    let path = dir.join(name);
    let text: String = (0..n)
        .map(|i| {
            let key = hex::encode(longproto_fleet::cellular::key_of(SEED, &id(i)));
            if numbered(i) {
                format!("{} {key} {}\n", id(i), number(i))
            } else {
                format!("{} {key}\n", id(i))
            }
        })
        .collect();
    write_keys(&path, &text);
    path.display().to_string()
}

async fn bridge(
    broker: &Mosquitto,
    name: &str,
    keys_file: String,
    smsc: &Smsc,
    tune: impl FnOnce(&mut gateway_config::Settings),
) -> Bridge {
    let mut s = settings(broker, name);
    s.logging.level = "error".into();
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = keys_file;
    s.sms.server = format!("smpp://{}", smsc.addr());
    s.sms.system_id = "bench".into();
    s.sms.password = "bench123".into();
    s.sms.daily_per_device = 1000;
    s.sms.daily_total = 1_000_000;
    tune(&mut s);
    let b = start_bridge(broker, s).await;
    assert!(smsc.wait(Duration::from_secs(10), |s| s.bound()).await);
    b
}

async fn post(bridge: &Bridge, device: &str, command: &str) -> u16 {
    let path = format!("/v1/devices/cellular/{device}/commands");
    api(
        bridge.http_addr(),
        "POST",
        &path,
        Some(&json!({"command": command})),
    )
    .await
    .0
}

/// Part 1: accepted submits per second, and throttles.
async fn rate(
    broker: &Mosquitto,
    dir: &std::path::Path,
    limit: Option<u32>,
    bridge_rate: u32,
) -> (f64, usize) {
    const N: usize = 300;
    let smsc = Smsc::start("bench", "bench123").await.unwrap();
    smsc.set(|k| k.max_per_s = limit);
    let keys = keys(dir, &format!("rate-{limit:?}-{bridge_rate}"), N, |_| true);
    let b = bridge(
        broker,
        &format!("sms-rate-{bridge_rate}"),
        keys,
        &smsc,
        |s| {
            s.sms.sms_after_s = 1;
            s.sms.submits_per_s = bridge_rate;
            s.sms.window = 50;
        },
    )
    .await;
    for i in 0..N {
        assert_eq!(post(&b, &id(i), "lock").await, 202);
    }
    let all = smsc
        .wait(Duration::from_secs(120), |s| {
            s.submits().iter().filter(|x| x.answer.is_ok()).count() >= N
        })
        .await;
    assert!(all, "every command submitted");
    let submits = smsc.submits();
    let accepted: Vec<Instant> = submits
        .iter()
        .filter(|x| x.answer.is_ok())
        .map(|x| x.at)
        .collect();
    let span = accepted
        .last()
        .unwrap()
        .duration_since(accepted[0])
        .as_secs_f64();
    let throttled = submits.len() - accepted.len();
    b.shutdown().await;
    ((accepted.len() - 1) as f64 / span, throttled)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Part 2: creation → the vehicle, by SMS and (the baseline) by a held poll.
async fn latency(broker: &Mosquitto, dir: &std::path::Path) -> (Vec<f64>, Vec<f64>) {
    const ROUNDS: usize = 30;
    let smsc = Smsc::start("bench", "bench123").await.unwrap();
    // vehicle 0 only by SMS, vehicle 1 holds a poll
    let keys = keys(dir, "latency", 2, |i| i == 0);
    let b = bridge(broker, "sms-latency", keys, &smsc, |s| {
        s.sms.sms_after_s = 1
    })
    .await;
    let mut inbox = smsc.handset(&number(0));
    let mut sms = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        assert_eq!(post(&b, &id(0), "locate").await, 202);
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        sms.push(t0.elapsed().as_secs_f64());
    }
    let addr = b.cellular_addr().unwrap();
    let mut client = Client::new(
        DeviceKey::new(longproto_fleet::cellular::key_of(SEED, &id(1))),
        &id(1),
        1,
    );
    let mut poll = Vec::new();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..ROUNDS {
        let mut out = [0u8; 128];
        let n = client.request(60, &[], &mut out).unwrap();
        stream.write_all(&out[..n]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        assert_eq!(post(&b, &id(1), "locate").await, 202);
        loop {
            stream.read_buf(&mut buf).await.unwrap();
            if let Some(h) = device_node::cellular::parse_response_head(&buf).unwrap() {
                if buf.len() >= h.head_len + h.body_len {
                    // acknowledge it with the next request
                    let body = buf[h.head_len..h.head_len + h.body_len].to_vec();
                    buf.drain(..h.head_len + h.body_len);
                    let mut node =
                        device_node::node::Node::new(Default::default(), Default::default());
                    let mut v = longproto_fleet::Vehicle::parked(0.0, 0.0, 50);
                    client.answer(&body, &mut node, 0, &mut v);
                    break;
                }
            }
        }
        poll.push(t0.elapsed().as_secs_f64());
    }
    b.shutdown().await;
    (sms, poll)
}

/// Part 3: a fleet with a tenth of its vehicles without a data session.
async fn fleet(broker: &Mosquitto, dir: &std::path::Path, n: usize) -> (usize, usize, usize, u64) {
    use longproto_fleet::{Fleet, Mode, Radio, SimDevice, Targets, Vehicle};
    let smsc = Smsc::start("bench", "bench123").await.unwrap();
    let keys = keys(dir, "fleet", n, |_| true);
    let b = bridge(broker, "sms-fleet", keys, &smsc, |s| {
        s.sms.submits_per_s = 100;
    })
    .await;
    let devices: Vec<SimDevice> = (0..n)
        .map(|i| {
            let mut d = SimDevice::new(
                &id(i),
                Radio::Cellular,
                Default::default(),
                Vehicle::parked(38.7, -9.1, 80),
            );
            d.cellular = Some(longproto_fleet::cellular::client(SEED, &id(i)));
            d.number = Some(number(i));
            d.data_session = i % 10 != 0;
            d
        })
        .collect();
    let (host, port) = broker
        .url()
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().unwrap()))
        .unwrap();
    let fleet = Fleet::new(
        devices,
        Targets {
            mqtt_host: host,
            mqtt_port: port,
            http: Some(b.http_addr()),
            sigfox_secret: String::new(),
            application_id: "bench".into(),
            topic_root: "longproto/v1".into(),
            rx_delay: Duration::from_secs(1),
            cellular: Some(longproto_fleet::cellular::CellularTarget {
                addr: b.cellular_addr().unwrap(),
                tls: None,
                max_wait_s: 240,
            }),
        },
    );
    let mut tasks = fleet.start(Mode::Integration);
    tasks.extend(fleet.start_sms(&smsc));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut created = 0;
    for round in ["unlock", "lock"] {
        for i in 0..n {
            assert_eq!(post(&b, &id(i), round).await, 202);
            created += 1;
        }
        tokio::time::sleep(Duration::from_secs(25)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (fleet.stats().executed as usize) < created && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let executed = fleet.stats().executed as usize;
    let sms = smsc.submits().iter().filter(|x| x.answer.is_ok()).count();
    let mo = fleet.stats().sms_sent;
    for t in tasks {
        t.abort();
    }
    b.shutdown().await;
    (created, executed, sms, mo)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sms: bench");
        return;
    }
    let n: usize = std::env::var("LONGPROTO_SMS_VEHICLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();

    println!("## 1. submits per second (300 messages)\n");
    println!("| SMSC limit | bridge's rate | accepted per second | of the limit | throttled |");
    println!("|---|---|---|---|---|");
    let (base, _) = rate(&broker, dir.path(), None, 10_000).await;
    println!("| none | 10,000 (baseline) | {base:.0} | | 0 |");
    for (limit, bridge_rate) in [(50, 50), (50, 100), (100, 100)] {
        let (r, t) = rate(&broker, dir.path(), Some(limit), bridge_rate).await;
        println!(
            "| {limit}/s | {bridge_rate}/s | {r:.1} | {:.2} | {t} |",
            r / limit as f64
        );
    }

    println!("\n## 2. from creation to the vehicle (30 each, sms_after_s = 1)\n");
    let (mut sms, mut poll) = latency(&broker, dir.path()).await;
    let (s50, s99, smax) = (pct(&mut sms, 0.5), pct(&mut sms, 0.99), pct(&mut sms, 1.0));
    let (p50, p99) = (pct(&mut poll, 0.5), pct(&mut poll, 0.99));
    println!("| bearer | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| held long poll (baseline) | {:.1} ms | {:.1} ms | |",
        p50 * 1e3,
        p99 * 1e3
    );
    println!(
        "| SMS after sms_after_s = 1 s | {:.0} ms | {:.0} ms | {:.0} ms |",
        s50 * 1e3,
        s99 * 1e3,
        smax * 1e3
    );
    println!(
        "| SMS, less sms_after_s | {:.0} ms | {:.0} ms | |",
        (s50 - 1.0) * 1e3,
        (s99 - 1.0) * 1e3
    );

    println!("\n## 3. fleet: {n} cellular vehicles, a tenth without a data session, 2 rounds\n");
    let (created, executed, sms, mo) = fleet(&broker, dir.path(), n).await;
    println!(
        "| commands | executed | SMS sent (MT) | SMS per executed command | SMS from vehicles (MO) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {created} | {executed} | {sms} | {:.3} | {mo} |",
        sms as f64 / executed.max(1) as f64
    );
}
