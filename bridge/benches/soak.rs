//! Soak with faults: the fleet simulator's LoRaWAN devices (ChirpStack's MQTT integration,
//! as the fleet's double plays it) against the real `longproto-bridge` binary, with
//! unlocks all along, while mosquitto is restarted every 5 minutes and the bridge is
//! killed with `kill -9` every 10 minutes and started again.
//!
//! cargo bench -p longproto-bridge --bench soak   (SOAK_MINUTES, default 60;
//! SOAK_DEVICES, default 1000; SOAK_UNLOCK_EVERY_MS, default 2000; SOAK_DRAIN_S, the quiet
//! spell at the end, default 180)
//!
//! Reported at the end, after a quiet spell without faults:
//! - uplinks: distinct `up` events the broker delivered (a tap on ChirpStack's topic, a
//!   persistent session of its own) against distinct telemetry the bridge published
//!   (another tap): lost, and duplicated;
//! - commands: every unlock answered `202` (ids of their own, retried while the bridge is
//!   down) with its end state read back from the API; lost (404), duplicated (command
//!   frames the vehicles received again and refused), executed twice (actuator runs
//!   beyond the distinct commands the bridge saw executed);
//! - the bridge's RSS and open files over time, per process.
//!
//! SOAK_STANDBY=1: two bridges on one PostgreSQL (`LONGPROTO_TEST_POSTGRES`, or one
//! started by tools/postgres.sh for the run) and one broker, an active one and a standby
//! (docs/deployment.md); the fault is then a `kill -9` of the active bridge every
//! SOAK_TAKEOVER_S (default 120), and no broker
//! restarts; the killed bridge is started again 2 s later (the unit's RestartSec), as
//! the next standby. Each takeover is timed from the kill to the standby's `/healthz`
//! answering `active`; unlocks go to whichever answers.
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use longproto_fleet::{self as fleet, FleetSpec, Mode, Targets};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// RSS (KiB) and open files of a process.
fn usage(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()?;
    let files = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, files))
}

/// Counts the distinct values `key` picks from each message on `filter`, and all of
/// them, on a persistent session that outlives broker restarts.
async fn tap(
    broker: &Mosquitto,
    id: &str,
    filter: &str,
    key: fn(&Value) -> Option<String>,
) -> Arc<Mutex<HashMap<String, u32>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let (client, eventloop) = rumqttc::AsyncClient::new(client_options(broker, id, false), 100_000);
    let s = seen.clone();
    subscriber(client, eventloop, &[filter], move |p| {
        if let Some(k) = serde_json::from_slice(&p.payload)
            .ok()
            .as_ref()
            .and_then(key)
        {
            *s.lock().unwrap().entry(k).or_insert(0) += 1;
        }
        true
    })
    .await;
    seen
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes = env_or("SOAK_MINUTES", 60);
    let devices = env_or("SOAK_DEVICES", 1000) as usize;
    let unlock_every = Duration::from_millis(env_or("SOAK_UNLOCK_EVERY_MS", 2000));
    let run_for = Duration::from_secs(minutes * 60);
    let drain = Duration::from_secs(env_or("SOAK_DRAIN_S", 180));
    let standby = env_or("SOAK_STANDBY", 0) == 1;
    let takeover_every = Duration::from_secs(env_or("SOAK_TAKEOVER_S", 120));
    let mut broker = Mosquitto::start();
    let (_pg, store) = match standby {
        true => {
            let pg = postgres_for_the_run();
            (pg, Some(postgres_database().await))
        }
        false => (None, None),
    };
    let mut nodes = vec![BridgeProcess::new(&broker, "bridge-soak", store.as_deref())];
    if standby {
        nodes.push(BridgeProcess::new(&broker, "bridge-soak", store.as_deref()));
    }
    nodes[0].start("error");
    wait_status(&broker, b"online").await;
    for standby in &mut nodes[1..] {
        standby.start("error");
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let mut active = 0;
    let mut takeovers: Vec<Duration> = Vec::new();

    let ups = tap(
        &broker,
        "soak-tap-up",
        "application/+/device/+/event/up",
        |v| v["deduplicationId"].as_str().map(str::to_owned),
    )
    .await;
    let telemetry = tap(
        &broker,
        "soak-tap-telemetry",
        "longproto/v1/+/+/telemetry",
        |v| v["meta"]["deduplication_id"].as_str().map(str::to_owned),
    )
    .await;

    let spec = FleetSpec {
        lorawan: devices,
        class_c_percent: 10,
        sigfox: 0,
        cellular: 0,
        interval_s: 60,
        seed: 7,
    };
    let fleet_devices = fleet::build(&spec);
    let ids: Vec<String> = fleet_devices.iter().map(|d| d.id.clone()).collect();
    let sim = fleet::Fleet::new(
        fleet_devices,
        Targets {
            mqtt_host: "127.0.0.1".into(),
            mqtt_port: broker.port,
            http: Some(addrs[0]),
            sigfox_secret: String::new(),
            application_id: "fleet".into(),
            topic_root: "longproto/v1".into(),
            rx_delay: Duration::from_millis(1000),
            cellular: None,
        },
    );
    let tasks = sim.start(Mode::Integration);

    // unlocks all along, each with an id of its own, retried until the bridge takes it
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_unlocks = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unlocks = {
        let (created, stop, addrs) = (created.clone(), stop_unlocks.clone(), addrs.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            for eui in ids.iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(unlock_every).await;
                n += 1;
                let id = format!("soak-{n}");
                let body = json!({"id": id, "command": "unlock", "args": {"auto_relock_s": 60}, "ttl_s": 900});
                let path = format!("/v1/devices/lorawan/{eui}/commands");
                // as a load balancer would: to whichever bridge takes it
                'posted: for addr in addrs.iter().cycle() {
                    let auth = format!("Bearer {TOKEN}");
                    let bytes = serde_json::to_vec(&body).unwrap();
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        try_post(*addr, &path, &auth, &bytes),
                    )
                    .await;
                    if let Ok(Some(202)) = r {
                        created.lock().unwrap().push(id.clone());
                        break 'posted;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
    };

    // faults: mosquitto restarted every 5 minutes, the bridge killed every 10 (offset
    // by 2.5 minutes, so that the two never coincide)
    let started = Instant::now();
    let mut samples: BTreeMap<u64, (u32, u64, usize)> = BTreeMap::new();
    let (mut broker_restarts, mut kills) = (0, 0);
    let mut next_broker = Duration::from_secs(300);
    let mut next_kill = match standby {
        true => takeover_every,
        false => Duration::from_secs(150),
    };
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < run_for {
        let t = started.elapsed();
        if t >= next_sample {
            let bridge = &nodes[active];
            if let Some((rss, files)) = bridge.pid().and_then(usage) {
                samples.insert(t.as_secs(), (bridge.pid().unwrap(), rss, files));
            }
            let s = sim.stats();
            println!(
                "{:>5} s  uplinks at the broker {}  telemetry {}  commands created {}  executed by vehicles {}  frames {}",
                t.as_secs(),
                ups.lock().unwrap().len(),
                telemetry.lock().unwrap().len(),
                created.lock().unwrap().len(),
                s.executed,
                s.frames
            );
            next_sample += Duration::from_secs(30);
        }
        if standby && t >= next_kill {
            // the active bridge dies; systemd starts it again 2 s later (RestartSec=2s),
            // as the standby
            let dead = active;
            nodes[dead].kill9();
            let killed = Instant::now();
            active = (active + 1) % nodes.len();
            let healthy = until_active(nodes[active].addr, Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
            nodes[dead].start("error");
            println!(
                "{:>5} s  takeover: kill -9 → the standby answers /healthz as active after {healthy:?}",
                t.as_secs()
            );
            takeovers.push(healthy);
            kills += 1;
            next_kill += takeover_every;
            continue;
        }
        if !standby && t >= next_broker {
            broker.stop();
            tokio::time::sleep(Duration::from_secs(2)).await;
            broker.start_again();
            broker_restarts += 1;
            next_broker += Duration::from_secs(300);
        }
        if !standby && t >= next_kill {
            let bridge = &mut nodes[active];
            bridge.kill9();
            tokio::time::sleep(Duration::from_secs(1)).await;
            bridge.start("error");
            kills += 1;
            next_kill += Duration::from_secs(600);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // a quiet spell: no more unlocks, no more faults; the open commands finish
    stop_unlocks.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = unlocks.await;
    println!(
        "faults over ({broker_restarts} broker restarts, {kills} kills); draining for {drain:?}"
    );
    tokio::time::sleep(drain).await;
    for t in &tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ups = ups.lock().unwrap().clone();
    let telemetry = telemetry.lock().unwrap().clone();
    let lost: Vec<&String> = ups.keys().filter(|k| !telemetry.contains_key(*k)).collect();
    let dup_telemetry: u32 = telemetry.values().map(|n| n - 1).sum();
    let dup_ups: u32 = ups.values().map(|n| n - 1).sum();
    let created = created.lock().unwrap().clone();
    let mut states: BTreeMap<String, u32> = BTreeMap::new();
    for id in &created {
        let (status, v) = api(
            nodes[active].addr,
            "GET",
            &format!("/v1/commands/{id}"),
            None,
        )
        .await;
        let state = if status == 404 {
            "LOST (404)".to_owned()
        } else {
            v["state"].as_str().unwrap_or("?").to_owned()
        };
        *states.entry(state).or_insert(0) += 1;
    }
    let stats = sim.stats();
    let executed_by_bridge = states.get("executed").copied().unwrap_or(0) as u64;
    println!(
        "\n== soak: {minutes} min, {devices} LoRaWAN devices (10 % class C, every 60 s), an unlock every {unlock_every:?}"
    );
    if standby {
        println!(
            "faults: {kills} takeovers (kill -9 of the active bridge every {takeover_every:?}, started again as the standby)"
        );
        takeovers.sort();
        println!(
            "takeover, kill -9 → the standby's /healthz active: min {:?} median {:?} max {:?} (the first window after a kill: --bench standby)",
            takeovers.first().copied().unwrap_or_default(),
            takeovers
                .get(takeovers.len() / 2)
                .copied()
                .unwrap_or_default(),
            takeovers.last().copied().unwrap_or_default(),
        );
    } else {
        println!(
            "faults: {broker_restarts} mosquitto restarts (SIGTERM, 2 s down), {kills} bridge kill -9 (1 s down)"
        );
    }
    println!(
        "uplinks: {} distinct at the broker ({dup_ups} repeats), {} distinct telemetry; lost {}, duplicated telemetry {dup_telemetry}",
        ups.len(),
        telemetry.len(),
        lost.len()
    );
    if !lost.is_empty() {
        println!("  lost, first ones: {:?}", &lost[..lost.len().min(10)]);
    }
    println!("commands: {} created; end states {states:?}", created.len());
    println!(
        "vehicles: {} command frames received, {} executed; frames refused as repeats {}; executed beyond the distinct commands the bridge saw executed: {}",
        stats.frames,
        stats.executed,
        stats.frames.saturating_sub(stats.executed),
        stats.executed.saturating_sub(executed_by_bridge)
    );
    println!("bridge process (seconds: pid, RSS KiB, open files):");
    for (t, (pid, rss, files)) in &samples {
        println!("  {t:>5}: {pid} {rss} {files}");
    }
    for mut n in nodes {
        n.kill9();
    }
}

/// Waits until the bridge at `addr` answers `/healthz` as the active one; how long.
async fn until_active(addr: SocketAddr, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        let r = longproto_fleet::http::request(addr, "GET", "/healthz", &[], b"");
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), r).await {
            if r.status == 200 {
                return start.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} did not become active within {within:?}");
}

/// POSTs JSON; the status, or None when the bridge does not answer.
async fn try_post(addr: SocketAddr, path: &str, auth: &str, body: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
