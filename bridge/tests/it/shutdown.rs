//! The real binary under SIGTERM: finishes what it has, publishes `offline`, exits 0,
//! and leaves unprocessed messages with the broker for its next run.
use crate::common::*;
use rumqttc::QoS;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_bridge(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the bridge starts")
}

fn sigterm(child: &std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then an exit with status 0 within 10 s.
fn stop_cleanly(child: &mut std::process::Child) {
    sigterm(child);
    let status = wait_exit(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

/// Across a stop and a restart, every expected key was seen, and none twice.
fn assert_each_once<K: Ord + std::fmt::Debug>(
    seen: &BTreeMap<K, u32>,
    expected: impl IntoIterator<Item = K>,
    first_run: usize,
) {
    let missing: Vec<K> = expected
        .into_iter()
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "lost across a clean restart: {missing:?}"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seen twice across a clean restart (first run: {first_run}): {twice:?}"
    );
}

fn count(seen: &mut BTreeMap<u64, u32>, payload: &[u8]) {
    let t: Value = serde_json::from_slice(payload).unwrap();
    *seen
        .entry(t["meta"]["f_cnt"].as_u64().unwrap())
        .or_default() += 1;
}

/// Counts a `queued` command event by its command id.
fn count_queued(seen: &mut BTreeMap<String, u32>, payload: &[u8]) {
    let e: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(e["state"], "queued", "{e}");
    *seen
        .entry(e["command_id"].as_str().unwrap().to_owned())
        .or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_publishes_offline_and_exits_0() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &broker, "bridge-sigterm", "127.0.0.1:0");
    let mut watch = Watcher::new(&broker, "watch-sigterm", &["longproto/v1/+/+/telemetry"]).await;
    let mut child = spawn_bridge(&config);
    wait_status(&broker, b"online").await;

    let cs = publisher(&broker, "chirpstack-sigterm").await;
    let total = 4000u32;
    // A steady stream (about 4000/s), so that the stop lands in the middle of it.
    let stream = tokio::spawn(async move {
        for i in 0..total {
            let body = serde_json::json!({
                "deduplicationId": format!("sigterm-{i}"),
                "deviceInfo": {"devEui": "70b3d57ed0051a2b", "applicationId": "app"},
                "fCnt": i, "fPort": 10, "dr": 5, "data": "hAAqAgA="
            });
            let topic = "application/app/device/70b3d57ed0051a2b/event/up";
            cs.publish(
                topic,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&body).unwrap(),
            )
            .await
            .unwrap();
            if i % 40 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        let (_, p, _) = watch
            .next_where(Duration::from_secs(10), |t| t.ends_with("/telemetry"))
            .await
            .expect("telemetry");
        count(&mut seen, &p);
    }
    stop_cleanly(&mut child);
    wait_status(&broker, b"offline").await;
    while let Some((_, p, _)) = watch
        .next_where(Duration::from_millis(500), |t| t.ends_with("/telemetry"))
        .await
    {
        count(&mut seen, &p);
    }
    stream.await.unwrap();
    let first_run = seen.len();
    assert!(
        first_run < total as usize,
        "the first run took everything: the stop did not come mid-stream"
    );

    // What it had not taken stayed with the broker: a second run gets the rest.
    let mut child = spawn_bridge(&config);
    while seen.len() < total as usize {
        let Some((_, p, _)) = watch
            .next_where(Duration::from_secs(10), |t| t.ends_with("/telemetry"))
            .await
        else {
            break;
        };
        count(&mut seen, &p);
    }
    stop_cleanly(&mut child);
    // published once each
    assert_each_once(&seen, (0..total).map(u64::from), first_run);
}

/// Command requests over MQTT are stored by the command lane while the dispatcher goes
/// on; a stop in the middle of a stream of them must store every one it acknowledged,
/// and leave the others with the broker: across a restart, each request becomes
/// exactly one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_amid_mqtt_command_requests_stores_each_exactly_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &broker, "bridge-lane-stop", "127.0.0.1:0");
    let mut watch = Watcher::new(
        &broker,
        "watch-lane-stop",
        &["longproto/v1/+/+/command-events"],
    )
    .await;
    let mut child = spawn_bridge(&config);
    wait_status(&broker, b"online").await;

    let op = publisher(&broker, "operator-lane-stop").await;
    let total = 600u32;
    // 100 devices, 6 requests each, about 1,000 a second: the stop lands mid-stream
    let stream = tokio::spawn(async move {
        for i in 0..total {
            let topic = format!("longproto/v1/lorawan/{:016x}/command", 0xc000 + i % 100);
            let body = format!(r#"{{"id":"stop-{i}","command":"locate"}}"#);
            op.publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
                .await
                .unwrap();
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let mut queued: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..50 {
        let (_, p, _) = watch
            .next_where(Duration::from_secs(10), |_| true)
            .await
            .expect("a queued command");
        count_queued(&mut queued, &p);
    }
    stop_cleanly(&mut child);
    while let Some((_, p, _)) = watch.next_where(Duration::from_millis(500), |_| true).await {
        count_queued(&mut queued, &p);
    }
    stream.await.unwrap();
    let first_run = queued.len();
    assert!(
        first_run < total as usize,
        "the first run took everything: the stop did not come mid-stream"
    );

    // the second run gets what the first did not acknowledge
    let mut child = spawn_bridge(&config);
    while let Some((_, p, _)) = watch.next_where(Duration::from_secs(5), |_| true).await {
        count_queued(&mut queued, &p);
    }
    stop_cleanly(&mut child);
    // stored once each
    let ids = (0..total).map(|i| format!("stop-{i}"));
    assert_each_once(&queued, ids, first_run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = write_config(dir.path(), &broker, "bridge-notify", "127.0.0.1:0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .arg("-c")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(
        next(),
        "READY=1",
        "readiness first, once broker and store are up"
    );
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    sigterm(&child);
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}
