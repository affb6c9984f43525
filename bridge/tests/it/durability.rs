//! `kill -9` at the worst moments: every command answered 202 survives, none is sent
//! twice, and counters carry on.
use crate::common::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Binary {
    config: std::path::PathBuf,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn new(broker: &Mosquitto) -> Self {
        let (config, addr, dir) = binary_config(broker, "bridge-kill9");
        Binary {
            config,
            addr,
            _dir: dir,
        }
    }

    async fn start(&self, broker: &Mosquitto) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_status(broker, b"online").await;
        child
    }
}

async fn kill9(broker: &Mosquitto, child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_status(broker, b"offline").await; // the last will
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_accepted_command_and_duplicates_none() {
    let broker = Mosquitto::start();
    let bin = Binary::new(&broker);
    let eui = "70b3d57ed0051a2b";
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;

    let mut child = bin.start(&broker).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, v) = api(
            bin.addr,
            "POST",
            &format!("/v1/devices/lorawan/{eui}/commands"),
            Some(&json!({"command": "set_interval", "args": {"interval_s": 100 + i}})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // killed right after the 202s: nothing was sent yet
    kill9(&broker, &mut child).await;

    let mut child = bin.start(&broker).await;
    cs.up(eui, 5, 1, "").await;
    let (_, down, data) = cs
        .next_down(Duration::from_secs(10))
        .await
        .expect("the queued commands after a restart");
    let item = down["id"].as_str().unwrap().to_owned();
    let counters: Vec<u16> = data
        .chunks(8)
        .map(|f| u16::from_be_bytes([f[1], f[2]]))
        .collect();
    assert_eq!(counters, [1, 2, 3, 4, 5], "all five, once each");
    // killed right after scheduling: they are with ChirpStack, and must not go again
    kill9(&broker, &mut child).await;

    let mut child = bin.start(&broker).await;
    cs.up(eui, 5, 2, "").await;
    assert!(
        cs.next_down(Duration::from_millis(800)).await.is_none(),
        "a scheduled command was sent again"
    );
    cs.txack(eui, &item).await;
    let mut sent = 0;
    for _ in 0..50 {
        let (_, list) = api(
            bin.addr,
            "GET",
            &format!("/v1/devices/lorawan/{eui}/commands?state=sent"),
            None,
        )
        .await;
        sent = list["commands"].as_array().map_or(0, |a| a.len());
        if sent == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent, 5, "the txack after the restart reached all five");
    let (_, v) = api(
        bin.addr,
        "POST",
        &format!("/v1/devices/lorawan/{eui}/commands"),
        Some(&json!({"command": "lock"})),
    )
    .await;
    assert_eq!(v["counter"], 6, "the counter carries on across restarts");
    kill9(&broker, &mut child).await;
}

/// The window journal: a window handed over to ChirpStack whose store write had not
/// happened when the process died is applied at start, so it is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_handed_over_before_its_store_write_is_not_sent_again() {
    let broker = Mosquitto::start();
    let bin = Binary::new(&broker);
    let eui = "70b3d57ed0051a2c";
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;

    let mut child = bin.start(&broker).await;
    let mut ids = Vec::new();
    for command in ["unlock", "locate"] {
        let (status, v) = api(
            bin.addr,
            "POST",
            &format!("/v1/devices/lorawan/{eui}/commands"),
            Some(&json!({"command": command})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    kill9(&broker, &mut child).await;
    // what the bridge writes as it hands a window over: here the unlock went out, and
    // the process died before the store recorded it
    let journal = bin._dir.path().join("bridge.db-windows");
    let taken_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 1000;
    std::fs::write(
        &journal,
        format!(
            "{}\n",
            json!({"at": taken_at, "downlink": ids[0], "commands": [ids[0]]})
        ),
    )
    .unwrap();

    let mut child = bin.start(&broker).await;
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        b"",
        "applied at start and emptied"
    );
    let (_, v) = api(bin.addr, "GET", &format!("/v1/commands/{}", ids[0]), None).await;
    assert_eq!(v["state"], "scheduled", "{v}");
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state"], "scheduled", "{v}");
    assert_eq!(
        last["at"].as_str(),
        Some(longproto_bridge::clock::rfc3339(taken_at).as_str()),
        "the time the window was taken, from the journal"
    );
    // the next window carries only the command that had not gone out
    cs.up(eui, 5, 3, "").await;
    let (_, down, data) = cs
        .next_down(Duration::from_secs(10))
        .await
        .expect("the command still queued");
    assert_ne!(down["id"], ids[0].as_str());
    assert_eq!(data.len(), 8, "one frame: the unlock is not sent again");
    // ChirpStack's txack for the journal's downlink finds its command
    cs.txack(eui, &ids[0]).await;
    let mut state = String::new();
    for _ in 0..50 {
        let (_, v) = api(bin.addr, "GET", &format!("/v1/commands/{}", ids[0]), None).await;
        state = v["state"].as_str().unwrap_or("").to_owned();
        if state == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "sent");
    kill9(&broker, &mut child).await;
}
