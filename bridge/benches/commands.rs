//! Command benchmarks, each against a baseline measured in the same run.
//!
//! cargo bench -p longproto-bridge --bench commands
//!
//! 1. uplink → `command/down` latency at 1,000 and 5,000 uplinks/s: a fleet whose devices
//!    have all been heard once (a warm-up round), then some get one queued command;
//!    uplinks round-robin for 2 s, so every commanded device's first uplink of the run
//!    releases its command, the rest are plain uplinks. Measured end to end (ChirpStack
//!    double publishes `up` → receives `command/down`) and by the bridge's own histogram,
//!    read exactly at its 5 ms and 90 ms bounds. ChirpStack reads its queue 100 ms after
//!    the uplink.
//! 2. durable command creation through HTTP (keep-alive, 8 and 64 connections), against
//!    the same axum stack answering 202 after parsing the same body, without storing.
//! 3. an uplink behind a burst of MQTT command requests: from publishing the `up` event
//!    to receiving its telemetry, with 200 requests published just before it on the
//!    same connection, against the same uplink with none before it.
//! 4. a command to a group of 10,000 devices (`POST /v1/batches`) posted as the uplink
//!    stream of (1) starts: the time until all are queued (its `202`), and the class A
//!    window latency of the uplinks sent meanwhile and of the whole stream, against the
//!    same stream with no batch, in the same run.
//! 5. `-- postgres`: (2) and the 5,000 uplinks/s window of (1) on SQLite and on
//!    PostgreSQL, side by side in the same run (PostgreSQL: `LONGPROTO_TEST_POSTGRES`, or
//!    one started by tools/postgres.sh for the run).
#[path = "../tests/it/common/mod.rs"]
mod common;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use rumqttc::{AsyncClient, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The allocator the `longproto-bridge` binary uses, so that this measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn eui(i: u64) -> String {
    format!("70b3d57e{i:08x}")
}

fn up(seq: u64, device: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "deduplicationId": format!("bench-{seq}"),
        "deviceInfo": {"applicationId": "app", "deviceName": "d", "devEui": device, "deviceClassEnabled": "CLASS_A"},
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

/// Publishes `n` uplinks at `rate` a second, round-robin over the fleet, as the
/// ChirpStack double; `seq` numbers them (deduplication ids). Returns when each device
/// first sent.
async fn uplinks(
    cs: &AsyncClient,
    rate: u64,
    fleet: u64,
    seq: std::ops::Range<u64>,
) -> HashMap<String, Instant> {
    let mut first: HashMap<String, Instant> = HashMap::new();
    let per_ms = rate / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = seq.peekable();
    while seq.peek().is_some() {
        tick.tick().await;
        for s in seq.by_ref().take(per_ms as usize) {
            let device = eui(s % fleet);
            let topic = format!("application/app/device/{device}/event/up");
            let payload = up(s, &device);
            first.entry(device).or_insert_with(Instant::now);
            cs.publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    }
    first
}

/// Section 1, and section 4 with `batch` > 0: a group of that many other devices takes
/// one command as the stream starts.
async fn downlink_latency(
    rate: u64,
    fleet: u64,
    with_commands: u64,
    batch: u64,
    store: Option<&str>,
) {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, &format!("bench-down-{rate}"));
    s.logging.level = "error".into();
    if let Some(url) = store {
        s.storage.url = url.into();
    }
    s.operators.group.insert(
        "batch".into(),
        (0..batch)
            .map(|i| format!("lorawan/{}", eui(1_000_000 + i)))
            .collect(),
    );
    let bridge = start_bridge(&broker, s).await;
    // the ChirpStack double on two connections: one receives the `command/down`s, the
    // other publishes the `up`s (on one connection, rumqttc's one packet per system call
    // for the uplinks delayed the downlinks it read: end-to-end p50 5-22 ms instead of ~2)
    let (receiver, receiver_loop) = AsyncClient::new(
        client_options(&broker, &format!("cs-rx-{rate}"), true),
        100_000,
    );
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let record = arrived.clone();
    // records when each device's first `command/down` arrives
    subscriber(
        receiver,
        receiver_loop,
        &["application/+/device/+/command/down"],
        move |p| {
            let device = p.topic.split('/').nth(3).unwrap_or("").to_owned();
            record
                .lock()
                .unwrap()
                .entry(device)
                .or_insert_with(Instant::now);
            true
        },
    )
    .await;
    let (cs, mut eventloop) = AsyncClient::new(
        client_options(&broker, &format!("cs-tx-{rate}"), true),
        100_000,
    );
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // warm-up: every device heard once (the bridge learns its application and class)
    uplinks(&cs, rate, fleet, 0..fleet).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in (0..fleet).step_by((fleet / with_commands) as usize) {
        let device = longproto_bridge::device::DeviceId::parse("lorawan", &eui(i)).unwrap();
        bridge
            .commands()
            .create(
                &device,
                &serde_json::json!({"command": "unlock", "ttl_s": 3600}),
                longproto_bridge::commands::model::Origin::Token("bench".into()),
            )
            .await
            .unwrap();
    }
    let batch_task = (batch > 0).then(|| {
        let addr = bridge.http_addr();
        tokio::spawn(async move {
            let mut conn = Conn::new(addr).await;
            let t0 = Instant::now();
            let body = br#"{"group":"batch","command":"lock","ttl_s":3600}"#;
            let (status, _) = conn
                .post("/v1/batches", &format!("Bearer {TOKEN}"), body)
                .await;
            assert_eq!(status, 202);
            (t0, Instant::now())
        })
    });
    let n = rate * 2; // two seconds: every commanded device's first uplink carries its command
    let sent_first = uplinks(&cs, rate, fleet, fleet..fleet + n).await;
    let batch_window = match batch_task {
        Some(t) => Some(t.await.unwrap()),
        None => None,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some((t0, t1)) = batch_window {
        let arrived = arrived.lock().unwrap();
        let mut during: Vec<Duration> = sent_first
            .iter()
            .filter(|(_, t)| **t >= t0 && **t <= t1)
            .filter_map(|(d, t)| arrived.get(d).map(|a| a.saturating_duration_since(*t)))
            .collect();
        println!(
            "      a batch of {batch}: all queued (its 202) after {} | {} windows opened meanwhile: p50 {} p99 {} max {}",
            ms(t1 - t0),
            during.len(),
            ms(pct(&mut during, 0.5)),
            ms(pct(&mut during, 0.99)),
            ms(during.iter().max().copied().unwrap_or_default()),
        );
    }
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
    let name = "longproto_uplink_downlink_latency_seconds";
    let own = |p| {
        histogram_quantile(&metrics, None, name, p)
            .map_or("?".into(), |s| format!("{:.2} ms", s * 1e3))
    };
    let share = |bound| {
        histogram_within(&metrics, name, bound).map_or("?".into(), |(w, n)| {
            format!("{w} of {n} ({:.2} %)", 100.0 * w as f64 / n.max(1) as f64)
        })
    };
    println!(
        "{rate:>5} uplinks/s, {with_commands:>5} of {fleet:>5} devices with a command: {} downlinks | end to end p50 {} p99 {} max {} | within 90 ms: {within}",
        lat.len(),
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99)),
        ms(lat.iter().max().copied().unwrap_or_default()),
    );
    println!(
        "      bridge's own: p50 ≤ {} p99 ≤ {} | within 5 ms: {} | within 90 ms: {}",
        own(0.5),
        own(0.99),
        share(0.005),
        share(0.09),
    );
    bridge.shutdown().await;
}

async fn creation_rate(addr: SocketAddr, conns: u64, secs: u64, label: &str) -> f64 {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
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
    // `cargo bench --bench commands -- creation` runs only the sections whose name
    // (`downlink`, `creation`, `burst`) contains one of the words given
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| words.is_empty() || words.iter().any(|w| section.contains(w));
    if run("downlink") {
        downlinks().await;
    }
    if run("creation") {
        creations(None).await;
    }
    if run("burst") {
        burst().await;
    }
    if run("batch") {
        batches().await;
    }
    if words.iter().any(|w| w == "postgres") {
        stores().await;
    }
}

/// Creations and the 5,000 uplinks/s window on SQLite, then on PostgreSQL, in one run.
async fn stores() {
    let _pg = postgres_for_the_run();
    for backend in ["SQLite", "PostgreSQL"] {
        let url = match backend {
            "SQLite" => None,
            _ => Some(postgres_database().await),
        };
        println!("== store: {backend}");
        creations(url.as_deref()).await;
        let url = match backend {
            "SQLite" => None,
            _ => Some(postgres_database().await),
        };
        println!("uplink → command/down on {backend}:");
        downlink_latency(5000, 1000, 1000, 0, url.as_deref()).await;
    }
}

async fn batches() {
    println!(
        "a command to a group of 10,000 devices posted as the stream starts, against the same stream without it:"
    );
    for rate in [1000, 5000] {
        downlink_latency(rate, 1000, 1000, 0, None).await;
        downlink_latency(rate, 1000, 1000, 10_000, None).await;
    }
}

async fn burst() {
    const BURST: usize = 200;
    const ROUNDS: usize = 7;
    println!(
        "an uplink behind {BURST} MQTT command requests on the same connection (up → its telemetry), {ROUNDS} rounds, alternating:"
    );
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bench-burst");
    s.logging.level = "error".into();
    let bridge = start_bridge(&broker, s).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    let device = "70b3d57ed0051a2b";
    let mut telemetry = Watcher::new(
        &broker,
        "bench-burst-watch",
        &[&format!("longproto/v1/lorawan/{device}/telemetry")],
    )
    .await;
    let (mut alone, mut behind) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS * 2 {
        let n = if round % 2 == 0 { 0 } else { BURST };
        for i in 0..n {
            let topic = format!(
                "longproto/v1/lorawan/{}/command",
                eui((round * BURST + i) as u64)
            );
            cs.client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    br#"{"command":"locate"}"#.to_vec(),
                )
                .await
                .unwrap();
        }
        let t0 = Instant::now();
        cs.up(device, 5, round as u32, "").await;
        telemetry
            .next_where(Duration::from_secs(30), |_| true)
            .await
            .expect("the uplink's telemetry");
        if n == 0 { &mut alone } else { &mut behind }.push(t0.elapsed());
        // the burst stored before the next round
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (a, b) = (pct(&mut alone, 0.5), pct(&mut behind, 0.5));
    println!(
        "alone (baseline): p50 {} max {} | behind {BURST} requests: p50 {} max {} | ratio of the p50s {:.1}",
        ms(a),
        ms(pct(&mut alone, 1.0)),
        ms(b),
        ms(pct(&mut behind, 1.0)),
        b.as_secs_f64() / a.as_secs_f64()
    );
    bridge.shutdown().await;
}

async fn downlinks() {
    println!("uplink → command/down, after a warm-up round, some devices with one queued unlock:");
    for (rate, fleet, with) in [
        (1000, 1000, 1000),
        (5000, 1000, 1000),
        (5000, 10_000, 1000),
        (5000, 10_000, 10_000),
    ] {
        downlink_latency(rate, fleet, with, 0, None).await;
    }
}

async fn creations(store: Option<&str>) {
    println!("durable command creation through HTTP, 8 and 64 keep-alive connections, 3 s each:");
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
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bench-create");
    s.logging.level = "error".into();
    if let Some(url) = store {
        s.storage.url = url.into();
    }
    let bridge = start_bridge(&broker, s).await;
    for conns in [8, 64] {
        let baseline = creation_rate(
            base_addr,
            conns,
            3,
            &format!("baseline, {conns} conns: axum, 202 unstored"),
        )
        .await;
        let stored = creation_rate(
            bridge.http_addr(),
            conns,
            3,
            &format!("longproto-bridge, {conns} conns: stored"),
        )
        .await;
        println!(
            "ratio stored / baseline, {conns} connections: {:.3}",
            stored / baseline
        );
    }
    bridge.shutdown().await;
}
