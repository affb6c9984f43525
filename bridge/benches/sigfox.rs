//! Sigfox BIDIR callbacks through real HTTP (keep-alive, 16 connections), against a
//! baseline in the same run: a minimal handler on the same HTTP stack answering 204.
//! Two floors are measured in the same run too: a handler that does nothing but publish
//! one telemetry-sized QoS 1 message per callback (through rumqttc, and through a
//! hand-written client that batches), which is what the contract costs at least.
//!
//! cargo bench -p longproto-bridge --bench sigfox
//! (`LONGPROTO_BENCH_SECS=10` runs each case longer, for a profiler)
#[path = "../tests/it/common/mod.rs"]
mod common;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `longproto-bridge` binary uses, so that this measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: u64 = 16;
/// A whole number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Seconds per case; `LONGPROTO_BENCH_SECS` sets it (longer for a profiler to attach).
fn secs() -> u64 {
    env_or("LONGPROTO_BENCH_SECS", 3)
}

fn body(device: u64, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "device": format!("{device:06X}"), "deviceTypeId": "5f1e8a2b9c3d4e0012ab34cd",
        "time": 1_718_031_845 + seq as i64, "data": "096e24b5e600f6b803e03039",
        "seqNumber": seq % 4096, "ack": true, "longPolling": false, "station": "4E2F", "rssi": -121.5, "snr": 11.87
    }))
    .unwrap()
}

/// Seconds of CPU (user and system) a process has used, from `/proc/{pid}/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name, which is in parentheses: utime is the 14th field
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0);
    ticks / 100.0 // USER_HZ
}

/// One run of a case.
#[derive(Clone, Copy)]
struct Measure {
    rate: f64,
    p99_ms: f64,
    /// CPU time of this process and the broker per callback, in µs: steady where
    /// throughput swings with the virtual machine's neighbours.
    cpu_us: f64,
}

/// `offset` keeps each run's messages new: a repeated device + seqNumber + time is a
/// duplicate, which the bridge answers early.
async fn run(addr: SocketAddr, label: &str, offset: u64, broker: Option<u32>) -> Measure {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs());
    let auth = format!("Bearer {SIGFOX_SECRET}");
    let cpu = || cpu_seconds(std::process::id()) + broker.map_or(0.0, cpu_seconds);
    let cpu0 = cpu();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (done, auth) = (done.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr).await;
            let (mut lat, mut seq, mut replies) = (Vec::new(), offset, 0u64);
            while Instant::now() < deadline {
                // 64 devices per connection, each callback a new message
                let t0 = Instant::now();
                let (status, _) = conn
                    .post("/v1/sigfox/uplink", &auth, &body(c * 64 + seq % 64, seq))
                    .await;
                lat.push(t0.elapsed());
                assert!(status == 204 || status == 200, "status {status}");
                replies += (status == 200) as u64;
                done.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            (lat, replies)
        }));
    }
    let (mut lat, mut replies) = (Vec::new(), 0);
    for t in tasks {
        let (l, r) = t.await.unwrap();
        lat.extend(l);
        replies += r;
    }
    let n = done.load(Ordering::Relaxed);
    let cpu_us = (cpu() - cpu0) * 1e6 / n as f64;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let m = Measure {
        rate: n as f64 / secs() as f64,
        p99_ms: pct(0.99).as_secs_f64() * 1e3,
        cpu_us,
    };
    println!(
        "{label:48} {:>7.0}/s | p50 {:.2} ms p99 {:.2} ms | {cpu_us:>5.1} µs CPU each | {replies} downlinks",
        m.rate,
        pct(0.5).as_secs_f64() * 1e3,
        m.p99_ms,
    );
    m
}

/// The size of the bridge's telemetry message for [`body`]'s callback (measured with
/// `mosquitto_sub` during a run).
const TELEMETRY_BYTES: usize = 546;

/// Hands one message to the broker; returns at once (as `Publisher::publish` does).
type Sink = Arc<dyn Fn(String, Vec<u8>) + Send + Sync>;

/// A handler that reads the body, publishes one telemetry-sized QoS 1 message through
/// `sink` and answers 204: no parsing, decoding or queue.
fn floor_app(sink: Sink) -> Router {
    let n = Arc::new(AtomicU64::new(0));
    Router::new().route(
        "/v1/sigfox/uplink",
        post(move |_body: axum::body::Bytes| {
            let (sink, n) = (sink.clone(), n.clone());
            async move {
                let i = n.fetch_add(1, Ordering::Relaxed) % 1024;
                sink(
                    format!("longproto/v1/sigfox/{i:06X}/telemetry"),
                    vec![b'x'; TELEMETRY_BYTES],
                );
                StatusCode::NO_CONTENT
            }
        }),
    )
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The bridge's MQTT client: rumqttc, QoS 1, `TCP_NODELAY`, one packet per write.
async fn rumqttc_sink(broker: &Mosquitto) -> Sink {
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(client_options(broker, "bench-floor", true), 10_000);
    longproto_bridge::mqtt::no_delay(&mut eventloop);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    Arc::new(move |topic, payload| {
        let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload);
    })
}

/// MQTT 3.1.1 written by hand: every PUBLISH waiting is written with one system call,
/// PUBACKs are read in bulk and dropped. The cheapest a client can be, so what is left
/// is the broker's own cost per message.
async fn raw_sink(broker: &Mosquitto) -> Sink {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let id = b"bench-raw";
    let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
    connect.extend(b"MQTT");
    connect.extend([4, 0x02, 0, 0, 0, id.len() as u8]); // clean session, no keep-alive
    connect.extend(id);
    s.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK");
    let (mut r, mut w) = s.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while r.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(p) = rx.recv().await {
            out.extend(p);
            while let Ok(p) = rx.try_recv() {
                out.extend(p);
            }
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
    let pkid = Arc::new(std::sync::atomic::AtomicU16::new(0));
    Arc::new(move |topic: String, payload: Vec<u8>| {
        let id = pkid.fetch_add(1, Ordering::Relaxed).max(1);
        let mut len = 2 + topic.len() + 2 + payload.len();
        let mut p = vec![0x32];
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            p.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        p.extend((topic.len() as u16).to_be_bytes());
        p.extend(topic.as_bytes());
        p.extend(id.to_be_bytes());
        p.extend(payload);
        let _ = tx.send(p);
    })
}

/// Interleaved rounds of every case; `LONGPROTO_BENCH_ROUNDS` sets it.
fn rounds() -> u64 {
    env_or("LONGPROTO_BENCH_ROUNDS", 3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sigfox: bench");
        return;
    }
    println!(
        "Sigfox BIDIR callbacks, {CONNECTIONS} keep-alive connections, {} rounds of {} s per case:",
        rounds(),
        secs()
    );
    let base = serve(Router::new().route(
        "/v1/sigfox/uplink",
        post(|| async { StatusCode::NO_CONTENT }),
    ))
    .await;
    let broker = Mosquitto::start();
    let pid = broker.pid();
    // What any implementation of the contract pays on this machine: one QoS 1 message
    // to the broker per callback, and nothing else.
    let floor_rumqttc = serve(floor_app(rumqttc_sink(&broker).await)).await;
    let floor_raw = serve(floor_app(raw_sink(&broker).await)).await;
    let mut s = settings(&broker, "bench-sigfox");
    s.logging.level = "error".into();
    let bridge = start_bridge(&broker, s).await;

    const CASES: [&str; 5] = [
        "baseline: minimal handler on the same stack, 204",
        "floor: one QoS 1 publish, 204 (rumqttc)",
        "floor: one QoS 1 publish, 204 (batched raw MQTT)",
        "longproto-bridge: no command due",
        "longproto-bridge: 1024 commands waiting",
    ];
    // rounds interleave the cases, so that a slow spell of the machine hits them alike
    let mut results: Vec<Vec<Measure>> = vec![Vec::new(); CASES.len()];
    for round in 0..rounds() {
        for (i, label) in CASES.iter().enumerate() {
            let offset = round * 100_000_000 + i as u64 * 10_000_000;
            let m = match i {
                0 => run(base, label, 0, None).await,
                1 => run(floor_rumqttc, label, 0, pid).await,
                2 => run(floor_raw, label, 0, pid).await,
                3 => run(bridge.http_addr(), label, offset, pid).await,
                _ => {
                    // every device of the fleet gets one command: the first callbacks
                    // take them
                    for d in 0..CONNECTIONS * 64 {
                        let device = longproto_bridge::device::DeviceId::parse(
                            "sigfox",
                            &format!("{d:06x}"),
                        )
                        .unwrap();
                        bridge
                            .commands()
                            .create(
                                &device,
                                &serde_json::json!({"command": "unlock"}),
                                longproto_bridge::commands::model::Origin::Token("bench".into()),
                            )
                            .await
                            .unwrap();
                    }
                    run(bridge.http_addr(), label, offset, pid).await
                }
            };
            results[i].push(m);
        }
    }
    let rate = |i: usize| median(results[i].iter().map(|m| m.rate).collect());
    let cpu = |i: usize| median(results[i].iter().map(|m| m.cpu_us).collect());
    println!("\nmedians of {} rounds:", rounds());
    for (i, label) in CASES.iter().enumerate() {
        println!(
            "{label:48} {:>7.0}/s ratio {:.2} | p99 {:.2} ms | {:>5.1} µs CPU each, ratio {:.2}",
            rate(i),
            rate(i) / rate(0),
            median(results[i].iter().map(|m| m.p99_ms).collect()),
            cpu(i),
            cpu(0) / cpu(i),
        );
    }
    bridge.shutdown().await;
}
