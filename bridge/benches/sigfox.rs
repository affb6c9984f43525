//! Sigfox BIDIR callbacks through real HTTP (keep-alive, 16 connections), against a
//! baseline in the same run: a minimal handler on the same HTTP stack answering 204.
//! Two floors are measured in the same run too: a handler that does nothing but publish
//! one telemetry-sized QoS 1 message per callback (through rumqttc, and through a
//! hand-written client that batches), which is what the contract costs at least.
//!
//! cargo bench -p longproto-bridge --bench sigfox
//! (`LONGPROTO_BENCH_SECS=10` runs each case longer, for a profiler)
#[path = "../tests/common/mod.rs"]
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
/// Seconds per case; `LONGPROTO_BENCH_SECS` sets it (longer for a profiler to attach).
fn secs() -> u64 {
    std::env::var("LONGPROTO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn body(device: u64, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "device": format!("{device:06X}"), "deviceTypeId": "5f1e8a2b9c3d4e0012ab34cd",
        "time": 1_718_031_845 + seq as i64, "data": "096e24b5e600f6b803e03039",
        "seqNumber": seq % 4096, "ack": true, "longPolling": false, "station": "4E2F", "rssi": -121.5, "snr": 11.87
    }))
    .unwrap()
}

/// `offset` keeps each run's messages new: a repeated device + seqNumber + time is a
/// duplicate, which the bridge answers early.
async fn run(addr: SocketAddr, label: &str, offset: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs());
    let auth = format!("Bearer {SIGFOX_SECRET}");
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
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let rate = done.load(Ordering::Relaxed) as f64 / secs() as f64;
    println!(
        "{label:52} {rate:>8.0} callbacks/s | p50 {:.2} ms p99 {:.2} ms | {replies} with a downlink",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    rate
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sigfox: bench");
        return;
    }
    println!("Sigfox BIDIR callbacks, {CONNECTIONS} keep-alive connections, {} s each:", secs());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/sigfox/uplink",
        post(|| async { StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let baseline = run(base, "baseline: minimal handler on the same stack, 204", 0).await;

    let broker = Mosquitto::start();
    // What any implementation of the contract pays on this machine: one QoS 1 message
    // to the broker per callback, and nothing else.
    let floor_rumqttc = run(
        serve(floor_app(rumqttc_sink(&broker).await)).await,
        "floor: 204 after one QoS 1 publish (rumqttc)",
        0,
    )
    .await;
    let floor_raw = run(
        serve(floor_app(raw_sink(&broker).await)).await,
        "floor: 204 after one QoS 1 publish (batched raw MQTT)",
        0,
    )
    .await;
    let mut s = settings(&broker, "bench-sigfox");
    s.logging.level = "error".into();
    let bridge = start_bridge(&broker, s).await;
    let plain = run(
        bridge.http_addr(),
        "longproto-bridge: decode, publish, no command due",
        0,
    )
    .await;
    // every device of the fleet gets one command: the first callbacks take them
    for d in 0..CONNECTIONS * 64 {
        let device =
            longproto_bridge::device::DeviceId::parse("sigfox", &format!("{d:06x}")).unwrap();
        bridge
            .commands()
            .create(&device, &serde_json::json!({"command": "unlock"}))
            .await
            .unwrap();
    }
    let with = run(
        bridge.http_addr(),
        "longproto-bridge: with 1024 commands waiting",
        10_000_000,
    )
    .await;
    println!(
        "ratio to baseline: {:.2} (no command due), {:.2} (commands waiting); \
         floors {:.2} (rumqttc), {:.2} (batched raw MQTT)",
        plain / baseline,
        with / baseline,
        floor_rumqttc / baseline,
        floor_raw / baseline
    );
    bridge.shutdown().await;
}
