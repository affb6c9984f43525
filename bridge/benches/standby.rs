//! Takeover time: from the `kill -9` of the active bridge to the first receive window
//! filled after it, with a vehicle sending an uplink every 20 ms and one command queued.
//!
//! cargo bench -p longproto-bridge --bench standby   (TAKEOVERS, default 10)
//!
//! - PostgreSQL: two bridge binaries, active and standby (docs/deployment.md); the killed
//!   one is started again 2 s after the kill (the unit's RestartSec) and becomes the next
//!   standby, so the roles alternate.
//! - Baseline, in the same run: one bridge binary on SQLite, killed and started again at
//!   once (what systemd's `Restart=` does with no delay): the same process start, store
//!   opening and session resumption, without the lock.
#[path = "../tests/it/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The bridge binary of the benchmark.
type Node = BridgeProcess;

/// Waits until `/healthz` of `node` answers `status`.
async fn until_health(node: &Node, status: u16) {
    let start = Instant::now();
    let mut last;
    loop {
        let r = longproto_fleet::http::request(node.addr, "GET", "/healthz", &[], b"");
        match tokio::time::timeout(Duration::from_secs(1), r).await {
            Ok(Ok(r)) if r.status == status => return,
            Ok(Ok(r)) => last = Some(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("no answer in 1 s".into()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {status} from {} (last: {last:?})",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const EUI: &str = "70b3d57ed00b0001";

/// One takeover: a command queued on `active`, which is killed (and started again at
/// once when `restart`, else 2 s after the kill); the time until the next
/// `command/down`.
async fn takeover(
    cs: &mut ChirpstackDouble,
    f_cnt: &mut u32,
    active: &mut Node,
    restart: bool,
) -> Duration {
    let (status, v) = api(
        active.addr,
        "POST",
        &format!("/v1/devices/lorawan/{EUI}/commands"),
        Some(&json!({"command": "locate", "ttl_s": 600})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    active.kill9();
    let killed = Instant::now();
    if restart {
        active.start("warn");
    }
    let took = loop {
        *f_cnt += 1;
        cs.up(EUI, 5, *f_cnt, "").await;
        if let Some((_, down, _)) = cs.next_down(Duration::from_millis(20)).await {
            let took = killed.elapsed();
            cs.txack(EUI, down["id"].as_str().unwrap()).await;
            break took;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no window after the kill"
        );
    };
    if !restart {
        // as systemd does, RestartSec=2s after the death
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
        active.start("warn");
    }
    took
}

fn summary(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!(
        "{label:58} n {:>2} | min {} median {} max {}",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("standby: bench");
        return;
    }
    let n: usize = std::env::var("TAKEOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let _pg = postgres_for_the_run();

    // the baseline: one bridge on SQLite, restarted in place
    let baseline = {
        let broker = Mosquitto::start();
        let mut cs = ChirpstackDouble::new(&broker, "app-takeover").await;
        let mut node = Node::new(&broker, "bridge-takeover", None);
        node.start("warn");
        wait_status(&broker, b"online").await;
        let mut f_cnt = 0;
        cs.up(EUI, 5, 0, "").await;
        let mut times = Vec::new();
        for _ in 0..n {
            times.push(takeover(&mut cs, &mut f_cnt, &mut node, true).await);
            until_health(&node, 200).await;
        }
        times
    };

    // PostgreSQL: active and standby, the roles alternating
    let broker = Mosquitto::start();
    let mut cs = ChirpstackDouble::new(&broker, "app-takeover").await;
    let db = postgres_database().await;
    let mut nodes = [
        Node::new(&broker, "bridge-takeover", Some(&db)),
        Node::new(&broker, "bridge-takeover", Some(&db)),
    ];
    nodes[0].start("warn");
    wait_status(&broker, b"online").await;
    until_health(&nodes[0], 200).await;
    nodes[1].start("warn");
    until_health(&nodes[1], 503).await;
    let mut f_cnt = 0;
    cs.up(EUI, 5, 0, "").await;
    let mut times = Vec::new();
    for i in 0..n {
        let (a, b) = nodes.split_at_mut(1);
        let (active, standby) = if i % 2 == 0 {
            (&mut a[0], &mut b[0])
        } else {
            (&mut b[0], &mut a[0])
        };
        times.push(takeover(&mut cs, &mut f_cnt, active, false).await);
        until_health(standby, 200).await;
        until_health(active, 503).await;
    }

    println!("takeover: kill -9 → first command/down after it (a vehicle uplinking every 20 ms):");
    summary(
        "baseline: SQLite, the bridge started again at once",
        baseline,
    );
    summary(
        "PostgreSQL: the standby takes over (0.5 s grace included)",
        times,
    );
}
