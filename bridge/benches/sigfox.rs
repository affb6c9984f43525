//! Sigfox BIDIR callbacks through real HTTP (keep-alive, 16 connections), against a
//! baseline in the same run: a minimal handler on the same HTTP stack answering 204.
//!
//! cargo bench -p longproto-bridge --bench sigfox
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
const SECS: u64 = 3;

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
    let deadline = Instant::now() + Duration::from_secs(SECS);
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
    let rate = done.load(Ordering::Relaxed) as f64 / SECS as f64;
    println!(
        "{label:52} {rate:>8.0} callbacks/s | p50 {:.2} ms p99 {:.2} ms | {replies} with a downlink",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sigfox: bench");
        return;
    }
    println!("Sigfox BIDIR callbacks, {CONNECTIONS} keep-alive connections, {SECS} s each:");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/sigfox/uplink",
        post(|| async { StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let baseline = run(base, "baseline: minimal handler on the same stack, 204", 0).await;

    let broker = Mosquitto::start();
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
        "ratio to baseline: {:.2} (no command due), {:.2} (commands waiting)",
        plain / baseline,
        with / baseline
    );
    bridge.shutdown().await;
}
