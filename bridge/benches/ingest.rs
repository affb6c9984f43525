//! Ingest benchmark through a real mosquitto, against a baseline measured in the same
//! run: a null forwarder that subscribes to the same ChirpStack topic and republishes
//! every message unchanged, with the same client library, QoS 1 and manual acks, and no
//! decoding.
//!
//! cargo bench -p longproto-bridge --bench ingest   (BENCH_ROUNDS, BENCH_BURST, BENCH_RATE,
//! BENCH_SECS, BENCH_ONLY adjust it)
//!
//! 1. throughput: N uplinks published as fast as the publisher can; time until the sink
//!    has N outputs;
//! 2. latency at a fixed rate (5,000 uplinks/s): publisher → broker → system under test
//!    → broker → sink, per message, p50/p99/max.
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The allocator the `longproto-bridge` binary uses, so that this measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Uplinks come round-robin from a fleet of this many devices.
const FLEET: u64 = 1000;

fn eui(seq: u64) -> String {
    format!("70b3d57e{:08x}", seq % FLEET)
}

fn uplink(seq: u64) -> Vec<u8> {
    // a real-size ChirpStack 4 up event carrying a longproto status + ack payload
    serde_json::to_vec(&serde_json::json!({
        "deduplicationId": format!("bench-{seq}"),
        "time": "2025-06-13T12:51:07.118204+00:00",
        "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
            "applicationId": "app", "applicationName": "fleet", "deviceProfileId": "profile",
            "deviceProfileName": "scooter", "deviceName": "scooter-0042", "devEui": eui(seq),
            "deviceClassEnabled": "CLASS_A", "tags": {"fleet": "lisbon"}},
        "devAddr": "01a44c4c", "adr": true, "dr": 5, "fCnt": seq, "fPort": 10, "confirmed": false,
        "data": "BYr4Sgaw0ehj0BQAhAAHAgA=",
        "rxInfo": [{"gatewayId": "2cf7f11081400088", "uplinkId": 3905, "rssi": -102, "snr": -12.0,
            "channel": 1, "context": "AAAbkw==", "metadata": {"region_config_id": "eu868"}, "crcStatus": "CRC_OK"}],
        "txInfo": {"frequency": 868300000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
        "regionConfigId": "eu868"
    }))
    .unwrap()
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    // both outputs carry "bench-<seq>": the forwarder in deduplicationId, the bridge in
    // meta.deduplication_id
    let s = std::str::from_utf8(payload).ok()?;
    let i = s.find("bench-")? + 6;
    s[i..].split('"').next()?.parse().ok()
}

fn options(broker: &Mosquitto, id: &str) -> MqttOptions {
    let mut o = client_options(broker, id, true);
    o.set_inflight(256);
    o
}

/// The baseline: subscribe, republish unchanged, acknowledge.
async fn null_forwarder(broker: &Mosquitto) -> tokio::task::JoinHandle<()> {
    let mut o = options(broker, &format!("null-{}", uuid_like()));
    o.set_manual_acks(true);
    o.set_clean_session(false);
    let (client, eventloop): (AsyncClient, EventLoop) = AsyncClient::new(o, 4096);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Publish>();
    subscriber(
        client.clone(),
        eventloop,
        &["application/+/device/+/event/+"],
        move |p| {
            let _ = tx.send(p);
            true
        },
    )
    .await;
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let device = p.topic.split('/').nth(3).unwrap_or("x").to_owned();
            client
                .publish(
                    format!("longproto/v1/null/{device}/telemetry"),
                    QoS::AtLeastOnce,
                    false,
                    p.payload.clone(),
                )
                .await
                .unwrap();
            client.ack(&p).await.unwrap();
        }
    })
}

/// Receives outputs and records when each sequence number arrived.
async fn sink(
    broker: &Mosquitto,
) -> (
    Arc<Mutex<HashMap<u64, Instant>>>,
    tokio::sync::watch::Receiver<usize>,
) {
    let (client, eventloop) =
        AsyncClient::new(options(broker, &format!("sink-{}", uuid_like())), 4096);
    let arrived = Arc::new(Mutex::new(HashMap::new()));
    let (count_tx, count_rx) = tokio::sync::watch::channel(0usize);
    let a = arrived.clone();
    subscriber(
        client,
        eventloop,
        &["longproto/v1/+/+/telemetry"],
        move |p| {
            let now = Instant::now();
            if let Some(seq) = seq_of(&p.payload) {
                let mut m = a.lock().unwrap();
                m.entry(seq).or_insert(now);
                let _ = count_tx.send(m.len());
            }
            true
        },
    )
    .await;
    (arrived, count_rx)
}

struct Run {
    internal_p99: Option<f64>,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    delivered: usize,
}

async fn measure(
    broker: &Mosquitto,
    n_burst: u64,
    rate: u64,
    secs: u64,
    bridge: Option<&longproto_bridge::app::Bridge>,
) -> Run {
    let (arrived, mut count) = sink(broker).await;
    let (publisher, mut eventloop) =
        AsyncClient::new(options(broker, &format!("pub-{}", uuid_like())), 100_000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    // 1. throughput
    let payloads: Vec<Vec<u8>> = (0..n_burst).map(uplink).collect();
    let start = Instant::now();
    for (seq, p) in payloads.into_iter().enumerate() {
        let topic = format!("application/app/device/{}/event/up", eui(seq as u64));
        publisher
            .publish(topic, QoS::AtLeastOnce, false, p)
            .await
            .unwrap();
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(120),
        count.wait_for(|c| *c as u64 >= n_burst),
    )
    .await;
    let elapsed = start.elapsed();
    let got = *count.borrow();
    let throughput = got as f64 / elapsed.as_secs_f64();
    arrived.lock().unwrap().clear();

    // 2. latency at a fixed rate
    let before = bridge.map(|b| b.metrics().render());
    let n = rate * secs;
    let mut sent = HashMap::with_capacity(n as usize);
    let base = n_burst + 1_000_000;
    let per_ms = rate / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = base;
    while seq < base + n {
        tick.tick().await;
        for _ in 0..per_ms {
            let payload = uplink(seq);
            sent.insert(seq, Instant::now());
            let topic = format!("application/app/device/{}/event/up", eui(seq));
            publisher
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
            seq += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let internal_p99 = bridge.zip(before).and_then(|(b, before)| {
        histogram_quantile(
            &b.metrics().render(),
            Some(&before),
            "longproto_ingest_publish_latency_seconds",
            0.99,
        )
    });
    let arrived = arrived.lock().unwrap();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(s, t0)| arrived.get(s).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Run {
        internal_p99,
        throughput,
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
        delivered: lat.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("ingest: bench");
        return;
    }
    let n_burst: u64 = std::env::var("BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "ingest through mosquitto: burst of {n_burst}, then {rate}/s for {secs} s; each system {rounds} times, alternating"
    );
    let mut rows = Vec::new();
    for round in 0..rounds {
        for name in [
            "null forwarder (baseline)",
            "longproto-bridge",
            "longproto-bridge, unpaced state",
        ] {
            if std::env::var("BENCH_ONLY").is_ok_and(|o| !name.starts_with(o.as_str())) {
                continue;
            }
            let broker = Mosquitto::start();
            let run = if name.starts_with("null") {
                let h = null_forwarder(&broker).await;
                let r = measure(&broker, n_burst, rate, secs, None).await;
                h.abort();
                r
            } else {
                let mut s = settings(&broker, &format!("bench-bridge-{round}"));
                s.logging.level = "error".into();
                if name.ends_with("unpaced state") {
                    s.mqtt.state_min_interval_ms = 0;
                }
                let bridge = start_bridge(&broker, s).await;
                let r = measure(&broker, n_burst, rate, secs, Some(&bridge)).await;
                bridge.shutdown().await;
                r
            };
            let internal = run.internal_p99.map_or(String::new(), |s| {
                format!(" | bridge's own ingest→publish p99 ≤ {:.3} ms", s * 1000.0)
            });
            println!(
                "round {round} {name:32} throughput {:>6.0} msg/s | at {rate}/s end to end: p50 {} p99 {} max {} ({} of {}){internal}",
                run.throughput,
                ms(run.p50),
                ms(run.p99),
                ms(run.max),
                run.delivered,
                rate * secs
            );
            rows.push((name, run));
        }
    }
    let best = |prefix: &str| {
        rows.iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, r)| r.throughput)
            .fold(0.0, f64::max)
    };
    let null = best("null");
    // The broker, the load and the system share two cores, and the baseline alone moves
    // by a third between rounds: each round's ratio compares neighbours in time.
    for name in ["longproto-bridge", "longproto-bridge, unpaced state"] {
        let mut ratios: Vec<f64> = (0..rounds)
            .filter_map(|round| {
                let of = |n: &str| {
                    rows.iter()
                        .filter(|(m, _)| *m == n)
                        .nth(round)
                        .map(|(_, r)| r.throughput)
                };
                Some(of(name)? / of("null forwarder (baseline)")?)
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        if !ratios.is_empty() {
            println!(
                "{name}: ratio to the null forwarder of the same round: {} (median {:.2})",
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                ratios[ratios.len() / 2]
            );
        }
    }
    for name in ["longproto-bridge", "longproto-bridge, unpaced state"] {
        let b = rows
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, r)| r.throughput)
            .fold(0.0, f64::max);
        println!(
            "best throughput {name}: {b:.0} msg/s vs null forwarder {null:.0} msg/s: ratio {:.2}",
            b / null
        );
    }
}
