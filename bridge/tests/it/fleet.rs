//! The fleet simulator: its gateway-mode frames against LoRaWAN vectors computed
//! independently (tools/lorawan_vectors.py), and the `longproto-fleet` binary driving a
//! running bridge through mosquitto (ChirpStack integration) and HTTP (Sigfox) until
//! commands are executed by the simulated devices.
use crate::common::*;
use longproto_fleet::gateway::{self, FrameError, Session};
use prost::Message;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The simulator process, stopped however the test ends.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lorawan_vectors() -> Value {
    serde_json::from_slice(&fixture("lorawan-vectors.json")).unwrap()
}

fn bytes<const N: usize>(v: &Value) -> [u8; N] {
    let mut b = [0u8; N];
    hex::decode_to_slice(v.as_str().unwrap(), &mut b).unwrap();
    b
}

fn joined_session(v: &Value) -> Session {
    let mut s = Session::new(
        bytes(&v["dev_eui"]),
        bytes(&v["join_eui"]),
        bytes(&v["app_key"]),
    );
    assert_eq!(
        hex::encode(s.join_request()),
        v["join_request"].as_str().unwrap()
    );
    let accept = hex::decode(v["join_accept"]["phy"].as_str().unwrap()).unwrap();
    s.take_join_accept(&accept)
        .expect("the join accept verifies");
    s
}

#[test]
fn join_request_and_session_keys_match_the_vectors() {
    let v = lorawan_vectors();
    let s = joined_session(&v);
    assert_eq!(s.dev_nonce as u64, v["dev_nonce"].as_u64().unwrap());
    let j = s.joined.as_ref().unwrap();
    assert_eq!(hex::encode(j.dev_addr), v["join_accept"]["dev_addr"]);
    assert_eq!(hex::encode(j.nwk_skey), v["nwk_skey"]);
    assert_eq!(hex::encode(j.app_skey), v["app_skey"]);
}

#[test]
fn data_uplinks_are_encrypted_and_signed_as_the_vectors() {
    let v = lorawan_vectors();
    let mut s = joined_session(&v);
    for up in v["uplinks"].as_array().unwrap() {
        s.joined.as_mut().unwrap().f_cnt_up = up["f_cnt"].as_u64().unwrap() as u32;
        let payload = hex::decode(up["payload"].as_str().unwrap()).unwrap();
        let frame = s
            .data_up(up["f_port"].as_u64().unwrap() as u8, &payload, false)
            .unwrap();
        assert_eq!(
            hex::encode(frame),
            up["phy"].as_str().unwrap(),
            "FCnt {}",
            up["f_cnt"]
        );
    }
    assert!(
        Session::new([1; 8], [0; 8], [2; 16])
            .data_up(10, b"x", false)
            .is_none(),
        "no data frame before the join"
    );
}

#[test]
fn a_confirmed_downlink_is_acknowledged_in_the_next_uplink_only() {
    let v = lorawan_vectors();
    let mut s = joined_session(&v);
    let hex_of = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    // an unconfirmed downlink asks for no ACK
    s.take_data_down(&hex_of(&v["downlink"]["phy"])).unwrap();
    s.joined.as_mut().unwrap().f_cnt_up = 1;
    let status = hex_of(&v["uplinks"][1]["payload"]);
    let plain = s.data_up(10, &status, false).unwrap();
    assert_eq!(hex::encode(plain), v["uplinks"][1]["phy"].as_str().unwrap());

    let (port, payload) = s
        .take_data_down(&hex_of(&v["confirmed_downlink"]["phy"]))
        .unwrap();
    assert_eq!(port, 20);
    assert_eq!(hex::encode(payload), v["confirmed_downlink"]["payload"]);
    let up = &v["acknowledging_uplink"];
    let acked = s.data_up(10, &hex_of(&up["payload"]), false).unwrap();
    assert_eq!(
        hex::encode(&acked),
        up["phy"].as_str().unwrap(),
        "ACK bit set"
    );
    // once: the uplink after that carries no ACK
    let next = s.data_up(10, &hex_of(&up["payload"]), false).unwrap();
    assert_eq!(next[5] & 0x20, 0, "FCtrl of the uplink after: {next:02x?}");
}

#[test]
fn downlinks_are_verified_decrypted_and_taken_once() {
    let v = lorawan_vectors();
    let down = &v["downlink"];
    let phy = hex::decode(down["phy"].as_str().unwrap()).unwrap();

    let mut tampered = phy.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut s = joined_session(&v);
    assert_eq!(s.take_data_down(&tampered), Err(FrameError::BadMic));

    let (port, payload) = s.take_data_down(&phy).unwrap();
    assert_eq!(port as u64, down["f_port"].as_u64().unwrap());
    assert_eq!(hex::encode(payload), down["payload"].as_str().unwrap());
    assert_eq!(
        s.take_data_down(&phy),
        Err(FrameError::Replay { got: 0, last: 0 })
    );

    let mut other = joined_session(&v);
    other.joined.as_mut().unwrap().dev_addr = [0x26, 0, 0, 1];
    assert!(matches!(
        other.take_data_down(&phy),
        Err(FrameError::OtherDevice(_))
    ));

    let mut wrong_key = Session::new(bytes(&v["dev_eui"]), bytes(&v["join_eui"]), [9; 16]);
    wrong_key.join_request();
    let accept = hex::decode(v["join_accept"]["phy"].as_str().unwrap()).unwrap();
    assert_eq!(
        wrong_key.take_join_accept(&accept).err(),
        Some(FrameError::BadMic)
    );
    assert_eq!(
        Session::new([1; 8], [0; 8], [2; 16])
            .take_join_accept(&accept)
            .err(),
        Some(FrameError::NoJoinPending)
    );
}

#[test]
fn gateway_messages_are_chirpstacks_protobuf() {
    let up = gateway::uplink_frame(vec![0x40, 1, 2, 3], "0016c001f1500001", 7);
    let decoded = chirpstack_api::gw::UplinkFrame::decode(up.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.phy_payload, vec![0x40, 1, 2, 3]);
    let rx = decoded.rx_info.unwrap();
    assert_eq!(
        (rx.gateway_id.as_str(), rx.uplink_id),
        ("0016c001f1500001", 7)
    );
    assert_eq!(decoded.tx_info.unwrap().frequency, 868_100_000);

    let down = chirpstack_api::gw::DownlinkFrame {
        downlink_id: 42,
        items: vec![Default::default(), Default::default()],
        gateway_id: "0016c001f1500001".into(),
        ..Default::default()
    };
    let ack = gateway::tx_ack(&down, "0016c001f1500001");
    assert_eq!(ack.downlink_id, 42);
    let statuses: Vec<i32> = ack.items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            chirpstack_api::gw::TxAckStatus::Ok as i32,
            chirpstack_api::gw::TxAckStatus::Ignored as i32
        ]
    );
}

/// The `longproto-fleet` binary of this build, built first if it is not up to date: it is
/// another package's binary, which cargo builds only for that package's own tests.
pub(crate) fn fleet_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "longproto-fleet", "--bin", "longproto-fleet"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p longproto-fleet failed");
    // target/debug/deps/<this test> → target/debug/longproto-fleet
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    dir.join("longproto-fleet")
}

async fn wait_executed(http: std::net::SocketAddr, network: &str, device: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, c) = api(http, "GET", &format!("/v1/commands/{id}"), None).await;
        assert_eq!(status, 200, "{c}");
        if c["state"] == "executed" {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{network}/{device} command {id} is {} after 30 s: {c}",
            c["state"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_drives_the_bridge_until_commands_are_executed() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "fleet-e2e")).await;
    let http = bridge.http_addr();

    let mut child = std::process::Command::new(fleet_binary())
        .args(["--mqtt", &broker.url(), "--http", &http.to_string()])
        .args(["--sigfox-secret", SIGFOX_SECRET])
        .args(["--lorawan", "3", "--class-c", "34", "--sigfox", "1"])
        .args(["--interval", "2", "--rx-delay-ms", "300", "--seed", "3"])
        .args(["--duration", "60", "--report-every", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("longproto-fleet starts");
    let stdout = child.stdout.take().unwrap();
    let _sim = KillOnDrop(child);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    let first = lines.recv().await.expect("the simulator says what it runs");
    assert!(
        first.starts_with("fleet: 3 LoRaWAN (34% class C"),
        "{first}"
    );
    let class_c_line = lines.recv().await.unwrap();
    let class_c: Vec<String> = class_c_line
        .strip_prefix("class C:")
        .expect("the class C devices")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let class_a: Vec<String> = (1..=3)
        .map(|n| format!("70b3d57ed{n:07x}"))
        .filter(|id| !class_c.contains(id))
        .collect();
    assert!(
        !class_c.is_empty() && !class_a.is_empty(),
        "seed 3 mixes the classes: {class_c_line}"
    );

    // the fleet reports: every device's decoded telemetry comes out of the bridge
    let mut telemetry =
        Watcher::new(&broker, "fleet-e2e-watch", &["longproto/v1/+/+/telemetry"]).await;
    let mut seen = std::collections::BTreeSet::new();
    let want = [
        "longproto/v1/lorawan/70b3d57ed0000001/telemetry",
        "longproto/v1/lorawan/70b3d57ed0000002/telemetry",
        "longproto/v1/lorawan/70b3d57ed0000003/telemetry",
        "longproto/v1/sigfox/00510001/telemetry",
    ];
    while seen.len() < want.len() {
        let (topic, payload, _) = telemetry
            .next_where(Duration::from_secs(20), |t| want.contains(&t))
            .await
            .unwrap_or_else(|| panic!("telemetry only from {seen:?}"));
        let t: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(t["records"][0]["kind"], "status", "{topic}: {t}");
        assert!(t.get("error").is_none(), "{topic}: {t}");
        seen.insert(topic);
    }

    // an unlock for each network; the simulated devices execute them and say so
    let mut ids = Vec::new();
    for (network, device) in [
        ("lorawan", class_a[0].as_str()),
        ("lorawan", class_c[0].as_str()),
        ("sigfox", "00510001"),
    ] {
        let (status, c) = api(
            http,
            "POST",
            &format!("/v1/devices/{network}/{device}/commands"),
            Some(&json!({"command": "unlock"})),
        )
        .await;
        assert_eq!(status, 202, "{c}");
        ids.push((network, device, c["id"].as_str().unwrap().to_owned()));
    }
    for (network, device, id) in &ids {
        let c = wait_executed(http, network, device, id).await;
        let states: Vec<&str> = c["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].as_str().unwrap())
            .collect();
        // LoRaWAN: txack → sent, ack → delivered; Sigfox: the BIDIR reply → scheduled,
        // ACKNOWLEDGE → delivered; then the device's ack record → executed
        let path: &[&str] = if *network == "lorawan" {
            &["queued", "scheduled", "sent", "delivered", "executed"]
        } else {
            &["queued", "scheduled", "delivered", "executed"]
        };
        assert_eq!(states, path, "{network}");
    }

    // the simulator's own report counts them
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.recv())
            .await
            .expect("the simulator reports every second")
            .expect("the simulator is still running");
        if line.contains("commands: 3 executed") {
            assert!(line.contains("executed: 3"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no report of 3 executed commands; last: {line}"
        );
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_runs_cellular_vehicles_over_tls_until_their_unlocks_are_executed() {
    let broker = Mosquitto::start();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("cellular-keys");
    // the simulator writes the bridge's keys file for its vehicles, mode 600
    let status = std::process::Command::new(fleet_binary())
        .args([
            "--lorawan",
            "0",
            "--cellular",
            "3",
            "--seed",
            "5",
            "--duration",
            "0",
        ])
        .arg("--cellular-keys-out")
        .arg(&keys)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut s = settings(&broker, "fleet-cellular");
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = keys.display().to_string();
    s.cellular.tls_cert = pki.path("server.pem");
    s.cellular.tls_key = pki.path("server.key");
    let bridge = start_bridge(&broker, s).await;
    let http = bridge.http_addr();
    let child = std::process::Command::new(fleet_binary())
        .args(["--mqtt", &broker.url(), "--http", &http.to_string()])
        .args([
            "--lorawan",
            "0",
            "--cellular",
            "3",
            "--seed",
            "5",
            "--interval",
            "2",
        ])
        .args([
            "--cellular-addr",
            &bridge.cellular_addr().unwrap().to_string(),
        ])
        .args(["--cellular-ca", &pki.path("ca.pem")])
        .args(["--duration", "60", "--report-every", "1"])
        .stdout(Stdio::null())
        .spawn()
        .expect("longproto-fleet starts");
    let _sim = KillOnDrop(child);
    let mut ids = Vec::new();
    for n in 1..=3 {
        let device = format!("ce11{n:012x}");
        let path = format!("/v1/devices/cellular/{device}/commands");
        let (status, c) = api(http, "POST", &path, Some(&json!({"command": "unlock"}))).await;
        assert_eq!(status, 202, "{c}");
        ids.push((device, c["id"].as_str().unwrap().to_owned()));
    }
    for (device, id) in &ids {
        let c = wait_executed(http, "cellular", device, id).await;
        let states: Vec<&str> = c["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            ["queued", "scheduled", "sent", "delivered", "executed"],
            "{device}"
        );
    }
    let metrics = metrics_text(&bridge).await;
    assert!(
        metrics.contains("longproto_cellular_connections 3"),
        "{metrics}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vehicles_without_a_data_session_take_their_unlocks_by_sms_through_the_simulators_smsc() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("cellular-keys");
    let smsc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fleet_args = |extra: &[&str]| {
        let mut args: Vec<String> = ["--lorawan", "0", "--cellular", "4", "--seed", "6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--smsc-listen".into(), smsc.to_string()]);
        args.extend(["--no-data-percent".into(), "50".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let status = std::process::Command::new(fleet_binary())
        .args(fleet_args(&["--duration", "0"]))
        .arg("--cellular-keys-out")
        .arg(&keys)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.split_whitespace().count() == 3)
            .count()
            == 4,
        "{text}"
    );

    let mut s = settings(&broker, "fleet-sms");
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = keys.display().to_string();
    s.sms.server = format!("smpp://{smsc}");
    s.sms.system_id = "fleet".into();
    s.sms.password = "fleet123".into();
    s.sms.sms_after_s = 2;
    let bridge = start_bridge(&broker, s).await;
    let http = bridge.http_addr();
    let child = std::process::Command::new(fleet_binary())
        .args(fleet_args(&["--interval", "2", "--duration", "60"]))
        .args(["--mqtt", &broker.url(), "--http", &http.to_string()])
        .args([
            "--cellular-addr",
            &bridge.cellular_addr().unwrap().to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("longproto-fleet starts");
    let _sim = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.sms_bound() != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the bridge binds to the simulator's SMSC"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ids = Vec::new();
    for n in 1..=4 {
        let device = format!("ce11{n:012x}");
        let path = format!("/v1/devices/cellular/{device}/commands");
        let (status, c) = api(http, "POST", &path, Some(&json!({"command": "unlock"}))).await;
        assert_eq!(status, 202, "{c}");
        ids.push((n, device, c["id"].as_str().unwrap().to_owned()));
    }
    for (n, device, id) in &ids {
        let c = wait_executed(http, "cellular", device, id).await;
        let by_sms = c["history"].as_array().unwrap().iter().any(|h| {
            h["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("by SMS"))
        });
        // every second vehicle (2 and 4) has no data session
        assert_eq!(by_sms, n % 2 == 0, "{device}: {c}");
    }
    bridge.shutdown().await;
}
