//! Held cellular requests: time to unlock with many held, and memory per held request.
//!
//! The vehicles run in a child process (this binary again), one TCP (or TLS) connection
//! each, every one holding a poll; the bridge runs here, so that this process's RSS is
//! the bridge's. For each phase:
//! - RSS before the vehicles connect and once every request is held (the gauge
//!   `longproto_cellular_held_requests` says so): bytes per held request;
//! - unlocks through the HTTP API to vehicles picked at random, 200 a second: from
//!   sending the `POST` to the frame read at the vehicle (both clocks are this
//!   machine's). The baseline in the same run is the same with 100 vehicles held.
//!
//! `LONGPROTO_CELL_HELD` (default 10000) sets the vehicles of the big phases,
//! `LONGPROTO_CELL_MAX` (default 50000) the last, plain, phase that looks for a limit.
//! It tries to raise its own open-file limit (as root); where it cannot, the last phase
//! holds as many as that limit allows, and says so. `LONGPROTO_CELL_PHASE=10000:tls` (or
//! `:plain`) runs one phase alone in a fresh process, for its RSS.
//!
//! cargo bench -p longproto-bridge --bench cellular
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use device_node::cellular::{Client, parse_response_head};
use device_node::seal::DeviceKey;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The allocator the `longproto-bridge` binary uses, so that this measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 11;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vehicles {
    addr: SocketAddr,
    n: usize,
    ca_pem: Option<String>,
}

fn id(i: usize) -> String {
    format!("ce11{:012x}", i + 1)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// This process's soft limit on open files.
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The child: n vehicles, each holding a poll; prints "held N" once all are sent, then
/// "<vehicle> <unix ns>" for each frame that arrives.
async fn vehicles(v: Vehicles) {
    let tls = v.ca_pem.as_ref().map(|pem| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..v.n {
        let (tls, tx, gate, sent) = (tls.clone(), tx.clone(), gate.clone(), sent.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let tcp = match tokio::net::TcpStream::connect(v.addr).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(format!("error {i} connect: {e}"));
                    return;
                }
            };
            let mut stream: Box<dyn Stream> = match tls {
                None => Box::new(tcp),
                Some(c) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    match c.connect(name, tcp).await {
                        Ok(t) => Box::new(t),
                        Err(e) => {
                            let _ = tx.send(format!("error {i} tls: {e}"));
                            return;
                        }
                    }
                }
            };
            let mut client = Client::new(
                DeviceKey::new(longproto_fleet::cellular::key_of(SEED, &id(i))),
                &id(i),
                1,
            );
            let mut out = [0u8; 128];
            let n = client.request(3600, &[], &mut out).unwrap();
            if stream.write_all(&out[..n]).await.is_err() {
                let _ = tx.send(format!("error {i} write"));
                return;
            }
            drop(permit);
            if sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == v.n {
                let _ = tx.send(format!("held {}", v.n));
            }
            let mut buf = Vec::new();
            loop {
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Ok(Some(h)) = parse_response_head(&buf) {
                    if buf.len() >= h.head_len + h.body_len {
                        let _ = tx.send(format!("{i} {}", unix_ns()));
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    while let Some(line) = rx.recv().await {
        println!("{line}");
    }
    // keep the connections' tasks alive until killed
    std::future::pending::<()>().await;
}

struct Phase {
    name: String,
    rss_per_held: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    note: String,
}

async fn phase(
    broker: &Mosquitto,
    dir: &std::path::Path,
    n: usize,
    tls: bool,
    unlocks: usize,
) -> Phase {
    let name = format!("{n} held, {}", if tls { "TLS" } else { "plain TCP" });
    let keys = dir.join(format!("keys-{n}"));
    if !keys.exists() {
        let ids: Vec<String> = (0..n).map(id).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        write_keys(&keys, &longproto_fleet::cellular::keys_file(SEED, &ids));
    }
    let mut s = settings(broker, &format!("bench-cell-{n}-{tls}"));
    s.logging.level = "error".into();
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = keys.display().to_string();
    s.cellular.max_wait_s = 3600;
    s.cellular.max_connections = 1_000_000;
    if tls {
        s.cellular.tls_cert = dir.join("server.pem").display().to_string();
        s.cellular.tls_key = dir.join("server.key").display().to_string();
    }
    let bridge = start_bridge(broker, s).await;
    let addr = bridge.cellular_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib();
    let ca_pem = tls.then(|| std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(
            "LP_CELL_VEHICLES",
            serde_json::to_string(&Vehicles { addr, n, ca_pem }).unwrap(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // every request held, or the limit found
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        while let Ok(line) = rx.try_recv() {
            if line.starts_with("error") {
                errors.push(line);
            }
        }
        let held = bridge.metrics().cellular_held.get() as usize;
        if held != last {
            last = held;
            last_change = Instant::now();
        }
        if held >= n
            || last_change.elapsed() > Duration::from_secs(20)
            || started.elapsed() > Duration::from_secs(600)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = bridge.metrics().cellular_held.get() as usize;
    let setup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss_kib();
    let rss_per_held = (rss1.saturating_sub(rss0) as f64 * 1024.0) / held.max(1) as f64;

    // unlocks at 200 a second to vehicles at random, each once
    let mut rng = longproto_fleet::SplitMix::new(n as u64);
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < unlocks.min(held) {
        picked.insert((rng.next_u64() % held.max(1) as u64) as usize);
    }
    let mut sent_at = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let http = bridge.http_addr();
    for &i in &picked {
        tick.tick().await;
        let path = format!("/v1/devices/cellular/{}/commands", id(i));
        let t0 = unix_ns();
        let (status, v) = api(
            http,
            "POST",
            &path,
            Some(&serde_json::json!({"command": "unlock"})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        sent_at.insert(i, t0);
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while latencies.len() < sent_at.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(line)) => {
                let mut parts = line.split(' ');
                let (Some(i), Some(t)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(i), Ok(t1)) = (i.parse::<usize>(), t.parse::<u128>()) else {
                    continue;
                };
                if let Some(t0) = sent_at.get(&i) {
                    latencies.push((t1.saturating_sub(*t0)) as f64 / 1e6);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let _ = child.kill();
    let _ = child.wait();
    bridge.shutdown().await;
    let mut note = format!(
        "{held} of {n} held after {setup_s:.1} s; {} of {} unlocks arrived",
        latencies.len(),
        sent_at.len()
    );
    if let Some(e) = errors.first() {
        note += &format!("; {} vehicles failed, first: {e}", errors.len());
    }
    Phase {
        name,
        rss_per_held,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        note,
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cellular: bench");
        return;
    }
    if let Ok(json) = std::env::var("LP_CELL_VEHICLES") {
        return vehicles(serde_json::from_str(&json).unwrap()).await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_or("LONGPROTO_CELL_HELD", 10_000);
    let max = env_or("LONGPROTO_CELL_MAX", 50_000);
    // the open-file limit: two descriptors a vehicle (its socket on each side), and room
    let pid = std::process::id().to_string();
    let nofile = format!("--nofile={0}:{0}", 2 * max + 10_000);
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, &nofile])
        .status()
        .is_ok_and(|s| s.success());
    // each process (the bridge here, the vehicles in the child) holds a socket a vehicle,
    // so the limit of one process is the limit of the phase
    let limit = open_file_limit();
    let max = if raised {
        max
    } else {
        max.min(limit.saturating_sub(500) as usize)
    };
    if !raised {
        println!(
            "cannot raise the open-file limit past {limit} (needs root, and a hard limit that allows it); the last phase holds {max}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();

    let broker = Mosquitto::start();
    let mut phases = vec![
        (100, false, 100),
        (n, false, 1000),
        (100, true, 100),
        (n, true, 1000),
    ];
    if max > n {
        phases.push((max, false, 1000));
    }
    // one phase alone, e.g. `10000:tls`: its RSS is not lowered by memory that an earlier
    // phase freed and the allocator kept
    if let Ok(only) = std::env::var("LONGPROTO_CELL_PHASE") {
        let (held, tls) = only
            .split_once(':')
            .expect("LONGPROTO_CELL_PHASE=N:plain|tls");
        let held: usize = held.parse().expect("LONGPROTO_CELL_PHASE=N:plain|tls");
        phases = vec![(held.min(max), tls == "tls", 1000)];
    }
    println!("| phase | RSS per held request | unlock p50 | p99 | max | |");
    println!("|---|---|---|---|---|---|");
    for (held, tls, unlocks) in phases {
        let p = phase(&broker, dir.path(), held, tls, unlocks).await;
        println!(
            "| {} | {:.0} B | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            p.name, p.rss_per_held, p.p50_ms, p.p99_ms, p.max_ms, p.note
        );
    }
}
