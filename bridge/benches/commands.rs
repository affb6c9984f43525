//! Command benchmarks, each against a baseline measured in the same run.
//!
//! cargo bench -p longproto-bridge --bench commands
//!
//! 1. uplink → `command/down` latency at 1,000 and 5,000 uplinks/s: a fleet of 1,000
//!    devices each with one queued command; uplinks round-robin, so every device's first
//!    uplink of the run releases its command, the rest are plain uplinks. Measured end to
//!    end (ChirpStack double publishes `up` → receives `command/down`) and by the
//!    bridge's own histogram. ChirpStack reads its queue 100 ms after the uplink.
//! 2. durable command creation through HTTP (keep-alive, 8 connections), against the
//!    same axum stack answering 202 after parsing the same body, without storing.
#[path = "../tests/common/mod.rs"]
mod common;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The allocator the `longproto-bridge` binary uses, so that this measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLEET: u64 = 1000;

fn eui(i: u64) -> String {
    format!("70b3d57e{:08x}", i % FLEET)
}

fn up(seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "deduplicationId": format!("bench-{seq}"),
        "deviceInfo": {"applicationId": "app", "deviceName": "d", "devEui": eui(seq), "deviceClassEnabled": "CLASS_A"},
        "devAddr": "01a44c4c", "dr": 5, "fCnt": seq, "fPort": 10, "data": "hAAqAgA=",
        "rxInfo": [{"gatewayId": "2cf7f11081400088", "rssi": -90, "snr": 7.0}], "regionConfigId": "eu868"
    }))
    .unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn downlink_latency(rate: u64, with_commands: u64) {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, &format!("bench-down-{rate}"));
    s.logging.level = "error".into();
    let bridge = start_bridge(&broker, s).await;
    for i in (0..FLEET).step_by((FLEET / with_commands) as usize) {
        let device = longproto_bridge::device::DeviceId::parse("lorawan", &eui(i)).unwrap();
        bridge
            .commands()
            .create(
                &device,
                &serde_json::json!({"command": "unlock", "ttl_s": 3600}),
            )
            .await
            .unwrap();
    }
    // the ChirpStack double: records when each device's command/down arrives
    let (cs, mut eventloop) = AsyncClient::new(
        client_options(&broker, &format!("cs-{rate}"), true),
        100_000,
    );
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let arrived = arrived.clone();
        let cs = cs.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        cs.subscribe("application/+/device/+/command/down", QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let device = p.topic.split('/').nth(3).unwrap_or("").to_owned();
                        arrived
                            .lock()
                            .unwrap()
                            .entry(device)
                            .or_insert_with(Instant::now);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    ready_rx.await.unwrap();
    let mut sent_first: HashMap<String, Instant> = HashMap::new();
    let n = rate * 2; // two seconds: every device's first uplink carries a command
    let per_ms = rate / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = 0;
    while seq < n {
        tick.tick().await;
        for _ in 0..per_ms {
            let topic = format!("application/app/device/{}/event/up", eui(seq));
            sent_first.entry(eui(seq)).or_insert_with(Instant::now);
            cs.publish(topic, QoS::AtLeastOnce, false, up(seq))
                .await
                .unwrap();
            seq += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lat: Vec<Duration> = {
        let arrived = arrived.lock().unwrap();
        sent_first
            .iter()
            .filter_map(|(d, t0)| arrived.get(d).map(|t| t.saturating_duration_since(*t0)))
            .collect()
    };
    let within = lat
        .iter()
        .filter(|d| **d <= Duration::from_millis(90))
        .count();
    let metrics = bridge.metrics().render();
    let own = |p| {
        histogram_quantile(
            &metrics,
            None,
            "longproto_uplink_downlink_latency_seconds",
            p,
        )
        .map_or("?".into(), |s| format!("{:.2} ms", s * 1e3))
    };
    println!(
        "{rate:>5} uplinks/s, {with_commands:>4} of {} devices with a command: {} downlinks | end to end p50 {} p99 {} max {} | within 90 ms: {within} | bridge's own p50 ≤ {} p99 ≤ {}",
        FLEET,
        lat.len(),
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99)),
        ms(lat.iter().max().copied().unwrap_or_default()),
        own(0.5),
        own(0.99),
    );
    bridge.shutdown().await;
}

async fn creation_rate(addr: SocketAddr, secs: u64, label: &str) -> f64 {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr).await;
            let mut i = 0u64;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let path = format!("/v1/devices/lorawan/{}/commands", eui(c * 100 + i % 100));
                let auth = format!("Bearer {TOKEN}");
                let body = br#"{"command":"unlock","args":{"auto_relock_s":30}}"#;
                let (status, _) = conn.post(&path, &auth, body).await;
                assert_eq!(status, 202);
                lat.push(t0.elapsed());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = done.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs as f64;
    println!(
        "{label:44} {rate:>8.0} creations/s | p50 {} p99 {}",
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99))
    );
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("commands: bench");
        return;
    }
    println!("uplink → command/down, fleet of {FLEET} devices, some with one queued unlock:");
    for (rate, with) in [(1000, 1000), (5000, 1000), (5000, 100)] {
        downlink_latency(rate, with).await;
    }

    println!("durable command creation through HTTP, 8 keep-alive connections, 3 s each:");
    // baseline: the same HTTP stack, the same body parsed, no store
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/devices/{network}/{id}/commands",
        post(|body: Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (StatusCode::ACCEPTED, axum::Json(v))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let baseline = creation_rate(
        base_addr,
        3,
        "baseline: same axum stack, 202 without storing",
    )
    .await;
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bench-create");
    s.logging.level = "error".into();
    let bridge = start_bridge(&broker, s).await;
    let stored = creation_rate(
        bridge.http_addr(),
        3,
        "longproto-bridge: stored (SQLite WAL, fsync)",
    )
    .await;
    println!("ratio stored / baseline: {:.3}", stored / baseline);
    bridge.shutdown().await;
}
