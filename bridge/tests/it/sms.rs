//! SMS over SMPP through real sockets: the bridge binds to the test SMSC
//! (`longproto_fleet::smsc`, whose PDUs the `smpp34` crate reads and writes, not the
//! bridge's codec); a handset here is the device side of `device_node::sms` and
//! `device_node::cellular`.
use crate::common::*;
use device_node::cellular::Client;
use device_node::node::{Node, NodeState, Schedule};
use device_node::seal::DeviceKey;
use device_node::sms::{Mt, parse_mt, split_user_data, udh};
use longproto_bridge::app::Bridge;
use longproto_fleet::Vehicle;
use longproto_fleet::cellular::key_of;
use longproto_fleet::smsc::{Receipts, Smsc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const SEED: u64 = 7;
const PORT: u16 = 49_999;

/// A vehicle reached by SMS: its handset at the test SMSC, its node and client.
struct Handset {
    id: String,
    number: String,
    inbox: mpsc::UnboundedReceiver<Vec<u8>>,
    client: Client,
    node: Node,
    vehicle: Vehicle,
}

impl Handset {
    fn new(smsc: &Smsc, id: &str, number: &str) -> Handset {
        Handset {
            id: id.into(),
            number: number.into(),
            inbox: smsc.handset(number),
            client: Client::new(DeviceKey::new(key_of(SEED, id)), id, 1),
            node: Node::new(Schedule::default(), NodeState::default()),
            vehicle: Vehicle::parked(38.72, -9.14, 80),
        }
    }

    /// The next message's user data.
    async fn next(&mut self, within: Duration) -> Vec<u8> {
        tokio::time::timeout(within, self.inbox.recv())
            .await
            .expect("an SMS in time")
            .unwrap()
    }

    /// Hands a message's frames to the node; returns how many opened.
    fn take(&mut self, ud: &[u8]) -> usize {
        let (ports, payload) = split_user_data(ud).unwrap();
        assert_eq!(ports.dest, PORT);
        let key = DeviceKey::new(key_of(SEED, &self.id));
        match parse_mt(&key, self.id.as_bytes(), payload).unwrap() {
            Mt::Frames(sealed) => {
                let a = self
                    .client
                    .answer(sealed, &mut self.node, 0, &mut self.vehicle);
                assert_eq!(a.refused, 0);
                a.frames
            }
            Mt::Wake { .. } => 0,
        }
    }

    /// Sends the node's acknowledgements back by SMS.
    fn reply(&mut self, smsc: &Smsc) {
        let mut records = [0u8; 64];
        let n = self.node.build_uplink(None, 0, &mut records, 64);
        let mut ud = udh(PORT, PORT).to_vec();
        let mut body = [0u8; 133];
        let len = self.client.sms_body(&records[..n], &mut body).unwrap();
        ud.extend_from_slice(&body[..len]);
        assert!(smsc.mobile_originated(&self.number, &ud), "ESME bound");
    }
}

struct Setup {
    bridge: Bridge,
    smsc: Arc<Smsc>,
    events: Watcher,
    /// The bridge's settings, to start it again on the same store.
    settings: gateway_config::Settings,
    _keys: tempfile::TempDir,
}

/// A bridge with `[sms]` on a test SMSC and a cellular listener; `lines` are the
/// devices: (id, number, mode).
async fn sms_bridge(
    broker: &Mosquitto,
    name: &str,
    lines: &[(&str, &str, &str)],
    tune: impl FnOnce(&mut gateway_config::Settings),
) -> Setup {
    if std::env::var_os("LONGPROTO_TEST_LOG").is_some() {
        longproto_bridge::logging::init(&Default::default());
    }
    let smsc = Smsc::start("longproto", "secret12").await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys");
    let text: String = lines
        .iter()
        .map(|(id, number, mode)| {
            format!("{id} {} {number} {mode}\n", hex::encode(key_of(SEED, id)))
        })
        .collect();
    write_keys(&path, &text);
    let mut s = settings(broker, name);
    s.cellular.bind = "127.0.0.1:0".into();
    s.cellular.keys_file = path.display().to_string();
    s.sms.server = format!("smpp://{}", smsc.addr());
    s.sms.system_id = "longproto".into();
    s.sms.password = "secret12".into();
    s.sms.source_addr = "LONGPROTO".into();
    s.sms.source_ton = 5;
    s.sms.sms_after_s = 1;
    tune(&mut s);
    let events = Watcher::new(
        broker,
        &format!("{name}-events"),
        &["longproto/v1/cellular/+/command-events"],
    )
    .await;
    let bridge = start_bridge(broker, s.clone()).await;
    assert!(
        smsc.wait(Duration::from_secs(10), |s| s.bound()).await,
        "the bridge binds"
    );
    Setup {
        bridge,
        smsc,
        events,
        settings: s,
        _keys: keys,
    }
}

async fn create(bridge: &Bridge, id: &str, body: Value) -> String {
    let path = format!("/v1/devices/cellular/{id}/commands");
    let (status, v) = api(bridge.http_addr(), "POST", &path, Some(&body)).await;
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Reads command events until every one of `ids` has reached `state`.
async fn wait_all(events: &mut Watcher, ids: &[&String], state: &str) {
    let mut left: Vec<&String> = ids.to_vec();
    while !left.is_empty() {
        let (_, p, _) = events
            .next_where(Duration::from_secs(10), |t| t.ends_with("/command-events"))
            .await
            .unwrap_or_else(|| panic!("{left:?} not {state} within 10 s"));
        let e: Value = serde_json::from_slice(&p).unwrap();
        if e["state"] == state {
            left.retain(|id| e["command_id"] != id.as_str());
        }
    }
}

/// The next `queued` event of a command with a reason: back in the queue.
async fn requeued(events: &mut Watcher, id: &str) -> Value {
    loop {
        let e = wait_state(events, id, "queued").await;
        if e.get("reason").is_some() {
            return e;
        }
    }
}

/// The history once `check` holds of it (at most 5 s).
async fn history_where(
    bridge: &Bridge,
    id: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    for _ in 0..50 {
        let h = history(bridge, id).await;
        if check(&h) {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = history(bridge, id).await;
    panic!("history of {id} never as expected: {h:?}");
}

async fn history(bridge: &Bridge, id: &str) -> Vec<(String, String)> {
    let (status, v) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap().to_owned(),
                h["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const CAR: &str = "ce11000000000c01";
const CAR_NUMBER: &str = "491700000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_without_a_data_session_goes_by_sms_and_is_acknowledged_by_sms() {
    let broker = Mosquitto::start();
    let mut setup = sms_bridge(
        &broker,
        "sms-fallback",
        &[(CAR, "+491700000001", "frames")],
        |_| {},
    )
    .await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    let id = create(
        &setup.bridge,
        CAR,
        json!({"command": "unlock", "args": {"auto_relock_s": 30}}),
    )
    .await;
    let ud = car.next(Duration::from_secs(10)).await;

    // the bytes on the air: TS 23.040 ports as the vectors' independent encoder wrote
    // them, then one sealed frame
    let sub = setup.smsc.submits()[0].clone();
    assert_eq!(
        (sub.to.as_str(), sub.from.as_str()),
        (CAR_NUMBER, "LONGPROTO")
    );
    assert_eq!(
        (sub.data_coding, sub.esm_class, sub.registered_delivery),
        (0x04, 0x40, 0x01)
    );
    // valid until the command expires (ttl 300 s by default), not the SMSC's days
    assert!(
        ["000000000459000R", "000000000458000R", "000000000457000R"]
            .contains(&sub.validity_period.as_str()),
        "{}",
        sub.validity_period
    );
    let vector = vectors("sms.json")
        .into_iter()
        .find(|v| v["name"] == "frames_one_unlock")
        .unwrap();
    let vector_ud = hex::decode(vector["user_data"].as_str().unwrap()).unwrap();
    assert_eq!(ud[..7], vector_ud[..7], "the port header");
    assert_eq!(ud.len(), 7 + 1 + 12);
    assert_eq!(car.take(&ud), 1);
    assert!(!car.vehicle.locked, "the vehicle unlocked");

    wait_state(&mut setup.events, &id, "delivered").await;
    car.reply(&setup.smsc);
    wait_state(&mut setup.events, &id, "executed").await;
    let h = history(&setup.bridge, &id).await;
    let sent = h.iter().find(|(s, _)| s == "sent").unwrap();
    assert!(sent.1.starts_with("by SMS, message m"), "{h:?}");
    assert!(
        h.iter()
            .any(|(s, r)| s == "delivered" && r.contains("SMS delivered")),
        "{h:?}"
    );
    assert_eq!(
        setup.smsc.mo_answers(),
        vec![0],
        "the ESME answered ESME_ROK"
    );
    let m = metrics_text(&setup.bridge).await;
    assert_eq!(
        metric(&m, "longproto_sms_sent_total{outcome=\"frames\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "longproto_sms_received_total{outcome=\"request\"}"),
        1.0
    );
    assert_eq!(metric(&m, "longproto_sms_bound "), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_waiting_together_share_one_sms() {
    let broker = Mosquitto::start();
    let setup = sms_bridge(
        &broker,
        "sms-coalesce",
        &[(CAR, CAR_NUMBER, "frames")],
        |s| {
            s.sms.sms_after_s = 2;
        },
    )
    .await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    for c in ["lock", "locate", "unlock"] {
        create(&setup.bridge, CAR, json!({"command": c})).await;
    }
    let ud = car.next(Duration::from_secs(10)).await;
    assert_eq!(ud.len(), 7 + 1 + 3 * 12, "three sealed frames in one SMS");
    assert_eq!(car.take(&ud), 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(setup.smsc.submits().len(), 1, "nothing sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failing_receipt_sends_the_command_back_to_the_queue() {
    let broker = Mosquitto::start();
    let mut setup = sms_bridge(
        &broker,
        "sms-receipts",
        &[(CAR, CAR_NUMBER, "frames")],
        |s| {
            s.commands.max_attempts = 10;
        },
    )
    .await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    let id = create(&setup.bridge, CAR, json!({"command": "locate"})).await;
    for stat in ["UNDELIV", "EXPIRED", "REJECTD"] {
        setup.smsc.set(|k| k.receipts = Receipts::Now(stat));
        let _ = car.next(Duration::from_secs(10)).await;
        let e = requeued(&mut setup.events, &id).await;
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("SMS {stat}")),
            "{e}"
        );
    }
    // the next one is delivered, with the same counter each time
    setup.smsc.set(|k| k.receipts = Receipts::Now("DELIVRD"));
    wait_state(&mut setup.events, &id, "delivered").await;
    let counters: Vec<Vec<u8>> = setup
        .smsc
        .submits()
        .iter()
        .map(|s| s.user_data[8..11].to_vec())
        .collect();
    assert_eq!(counters.len(), 4);
    assert!(
        counters.windows(2).all(|w| w[0] == w[1]),
        "one frame, one counter: {counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_receipt_or_none_leaves_the_command_sent_until_the_receipt_timeout() {
    let broker = Mosquitto::start();
    let mut setup = sms_bridge(&broker, "sms-late", &[(CAR, CAR_NUMBER, "frames")], |s| {
        s.sms.receipt_timeout_s = 3;
    })
    .await;
    let _car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    setup
        .smsc
        .set(|k| k.receipts = Receipts::After(Duration::from_secs(3), "DELIVRD"));
    let late = create(&setup.bridge, CAR, json!({"command": "locate"})).await;
    wait_state(&mut setup.events, &late, "sent").await;
    wait_state(&mut setup.events, &late, "delivered").await;

    setup.smsc.set(|k| k.receipts = Receipts::Never);
    let never = create(&setup.bridge, CAR, json!({"command": "lock"})).await;
    wait_state(&mut setup.events, &never, "sent").await;
    let e = requeued(&mut setup.events, &never).await;
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("no delivery receipt"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_fallback_races_a_late_cellular_answer_and_the_vehicle_executes_once() {
    use tokio::io::AsyncWriteExt;
    let broker = Mosquitto::start();
    let mut setup = sms_bridge(&broker, "sms-race", &[(CAR, CAR_NUMBER, "frames")], |s| {
        s.sms.sms_after_s = 2;
        s.cellular.delivery_timeout_s = 60;
    })
    .await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    // the vehicle's poll is held; the answer reaches the socket, but the vehicle reads
    // it only later (a slow cell): the bridge has no acknowledgement
    let addr = setup.bridge.cellular_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = [0u8; 256];
    let n = car.client.request(60, &[], &mut out).unwrap();
    stream.write_all(&out[..n]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = create(
        &setup.bridge,
        CAR,
        json!({"command": "unlock", "args": {"auto_relock_s": 30}}),
    )
    .await;
    wait_state(&mut setup.events, &id, "sent").await;

    // sms_after_s later the copy goes by SMS, same counter, and arrives first; no
    // receipt comes, and the copy is not sent again while the cellular answer waits
    // for its acknowledgement
    setup.smsc.set(|k| k.receipts = Receipts::Never);
    let ud = car.next(Duration::from_secs(10)).await;
    assert_eq!(car.take(&ud), 1);
    assert_eq!(car.vehicle.executed, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        setup.smsc.submits().len(),
        1,
        "one copy per cellular answer"
    );
    let mut buf = Vec::new();
    let body = loop {
        use tokio::io::AsyncReadExt;
        stream.read_buf(&mut buf).await.unwrap();
        if let Some(h) = device_node::cellular::parse_response_head(&buf).unwrap() {
            if buf.len() >= h.head_len + h.body_len {
                break buf[h.head_len..h.head_len + h.body_len].to_vec();
            }
        }
    };
    assert_eq!(&body[..], &ud[8..], "the same sealed frame on both bearers");
    car.client.answer(&body, &mut car.node, 0, &mut car.vehicle);
    assert_eq!(
        car.vehicle.executed, 1,
        "the second copy is refused by the replay window"
    );
    car.reply(&setup.smsc);
    wait_state(&mut setup.events, &id, "executed").await;
    let h = history(&setup.bridge, &id).await;
    assert!(
        h.iter().any(|(_, r)| r.contains("also sent by SMS")),
        "both attempts: {h:?}"
    );
    assert_eq!(
        h.iter().filter(|(s, _)| s == "executed").count(),
        1,
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bind_is_kept_rebound_after_a_drop_and_a_refusal_is_no_storm() {
    let broker = Mosquitto::start();
    let setup = sms_bridge(&broker, "sms-bind", &[(CAR, CAR_NUMBER, "frames")], |s| {
        s.sms.enquire_link_s = 5;
    })
    .await;
    setup.smsc.drop_connection();
    assert!(
        setup
            .smsc
            .wait(Duration::from_secs(10), |s| s.binds().len() == 2
                && s.bound())
            .await,
        "bound again: {:?}",
        setup.smsc.binds()
    );
    // refused credentials: one try, an error, and no second within seconds
    setup.smsc.set(|k| k.refuse_binds = true);
    setup.smsc.drop_connection();
    assert!(
        setup
            .smsc
            .wait(Duration::from_secs(10), |s| s.binds().len() == 3)
            .await
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(setup.smsc.binds().len(), 3, "{:?}", setup.smsc.binds());
    assert!(!setup.smsc.binds()[2].1);
    let m = metrics_text(&setup.bridge).await;
    assert_eq!(
        metric(&m, "longproto_sms_binds_total{outcome=\"refused\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "longproto_sms_bound "), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_lost_responses_and_a_drop_mid_window_lose_nothing() {
    let broker = Mosquitto::start();
    let cars: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("ce1100000000{i:04x}"), format!("4917000001{i:02}")))
        .collect();
    let lines: Vec<(&str, &str, &str)> = cars
        .iter()
        .map(|(i, n)| (i.as_str(), n.as_str(), "frames"))
        .collect();
    let mut setup = sms_bridge(&broker, "sms-throttle", &lines, |s| {
        s.sms.submits_per_s = 100;
        s.sms.response_timeout_s = 2;
    })
    .await;
    setup.smsc.set(|k| k.max_per_s = Some(2));
    let mut ids = Vec::new();
    for (car, _) in &cars {
        ids.push(create(&setup.bridge, car, json!({"command": "lock"})).await);
    }
    wait_all(
        &mut setup.events,
        &ids.iter().collect::<Vec<_>>(),
        "delivered",
    )
    .await;
    let throttled = setup
        .smsc
        .submits()
        .iter()
        .filter(|s| s.answer == Err(0x58))
        .count();
    assert!(throttled > 0, "the SMSC throttled some");
    let m = metrics_text(&setup.bridge).await;
    assert!(
        metric(&m, "longproto_sms_submit_pdus_total{outcome=\"throttled\"}") >= throttled as f64
    );

    // a lost response: the command goes back to the queue, then again with its counter
    setup.smsc.set(|k| {
        k.max_per_s = None;
        k.lose_responses = 1;
    });
    let lost = create(&setup.bridge, &cars[0].0, json!({"command": "locate"})).await;
    let e = requeued(&mut setup.events, &lost).await;
    assert!(
        e["reason"].as_str().unwrap().contains("may have gone out"),
        "{e}"
    );
    wait_state(&mut setup.events, &lost, "delivered").await;

    // the connection dropped with two submits awaiting their responses
    setup.smsc.set(|k| k.drop_after = Some(2));
    let a = create(&setup.bridge, &cars[1].0, json!({"command": "locate"})).await;
    let b = create(&setup.bridge, &cars[2].0, json!({"command": "locate"})).await;
    wait_all(&mut setup.events, &[&a, &b], "delivered").await;
    assert!(setup.smsc.binds().len() >= 2, "bound again after the drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_caps_hold_sms_back_and_say_so() {
    let broker = Mosquitto::start();
    let other = "ce11000000000c02";
    let setup = sms_bridge(
        &broker,
        "sms-caps",
        &[
            (CAR, CAR_NUMBER, "frames"),
            (other, "491700000002", "frames"),
        ],
        |s| {
            s.sms.daily_per_device = 1;
            s.sms.daily_total = 2;
        },
    )
    .await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    create(&setup.bridge, CAR, json!({"command": "locate"})).await;
    let _ = car.next(Duration::from_secs(10)).await;
    let held = create(&setup.bridge, CAR, json!({"command": "lock"})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = history(&setup.bridge, &held).await;
    assert!(
        h.iter()
            .any(|(s, r)| s == "queued" && r.contains("daily cap of 1 SMS is reached")),
        "{h:?}"
    );
    assert_eq!(setup.smsc.submits().len(), 1);
    let m = metrics_text(&setup.bridge).await;
    assert!(
        metric(&m, "longproto_sms_capped_total{outcome=\"device\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_in_all_outlives_a_restart() {
    let broker = Mosquitto::start();
    let Setup {
        bridge,
        smsc,
        settings,
        _keys,
        ..
    } = sms_bridge(&broker, "sms-total", &[(CAR, CAR_NUMBER, "frames")], |s| {
        s.sms.daily_total = 1;
    })
    .await;
    let mut car = Handset::new(&smsc, CAR, CAR_NUMBER);
    create(&bridge, CAR, json!({"command": "locate"})).await;
    let _ = car.next(Duration::from_secs(10)).await;
    bridge.shutdown().await;

    let bridge = start_bridge(&broker, settings).await;
    assert!(
        smsc.wait(Duration::from_secs(10), |s| s.binds().len() == 2
            && s.bound())
            .await
    );
    let held = create(&bridge, CAR, json!({"command": "lock"})).await;
    history_where(&bridge, &held, |h| {
        h.iter()
            .any(|(s, r)| s == "queued" && r.contains("daily cap of 1 SMS in all is reached"))
    })
    .await;
    assert_eq!(smsc.submits().len(), 1, "the restart gave no new allowance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_makes_the_device_poll_and_strangers_are_dropped() {
    let broker = Mosquitto::start();
    let setup = sms_bridge(&broker, "sms-wake", &[(CAR, CAR_NUMBER, "wake")], |_| {}).await;
    let mut car = Handset::new(&setup.smsc, CAR, CAR_NUMBER);
    let id = create(&setup.bridge, CAR, json!({"command": "unlock"})).await;
    let ud = car.next(Duration::from_secs(10)).await;
    let (_, payload) = split_user_data(&ud).unwrap();
    let key = DeviceKey::new(key_of(SEED, CAR));
    assert!(matches!(
        parse_mt(&key, CAR.as_bytes(), payload),
        Ok(Mt::Wake { .. })
    ));
    history_where(&setup.bridge, &id, |h| {
        h.iter()
            .any(|(s, r)| s == "queued" && r.contains("wake-up SMS sent"))
    })
    .await;

    // strangers: an unknown number, a bad MAC, a replay; all answered, none in the pipeline
    let mut ud = udh(PORT, PORT).to_vec();
    let mut body = [0u8; 64];
    let n = car.client.sms_body(&[], &mut body).unwrap();
    ud.extend_from_slice(&body[..n]);
    assert!(setup.smsc.mobile_originated("15550000000", &ud));
    let mut forged = ud.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(setup.smsc.mobile_originated(CAR_NUMBER, &forged));
    assert!(setup.smsc.mobile_originated(CAR_NUMBER, &ud));
    assert!(setup.smsc.mobile_originated(CAR_NUMBER, &ud));
    assert!(
        setup
            .smsc
            .wait(Duration::from_secs(5), |s| s.mo_answers().len() == 4)
            .await
    );
    let m = metrics_text(&setup.bridge).await;
    for (outcome, n) in [
        ("unknown_number", 1.0),
        ("bad_mac", 1.0),
        ("request", 1.0),
        ("replayed", 1.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("longproto_sms_received_total{{outcome=\"{outcome}\"}}")
            ),
            n,
            "{outcome}: {m}"
        );
    }
}

/// A TLS front for the test SMSC (as an operator's SMPP-over-TLS port, or stunnel):
/// terminates TLS with the test PKI's `localhost` certificate and relays to `to`.
async fn tls_front(pki: &Pki, to: std::net::SocketAddr) -> std::net::SocketAddr {
    let pem = |n: &str| std::fs::read(pki.path(n)).unwrap();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem("server.pem").as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem("server.key").as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut smsc = tokio::net::TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut smsc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpps_binds_over_tls_and_refuses_an_smsc_it_cannot_verify() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let broker = Mosquitto::start();
    let pki = Pki::new();
    let smsc = Smsc::start("longproto", "secret12").await.unwrap();
    let front = tls_front(&pki, smsc.addr()).await;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys");
    write_keys(
        &path,
        &format!("{CAR} {} {CAR_NUMBER}\n", hex::encode(key_of(SEED, CAR))),
    );
    let tls_settings = |name: &str, ca: String| {
        let mut s = settings(&broker, name);
        s.cellular.keys_file = path.display().to_string();
        s.sms.server = format!("smpps://localhost:{}", front.port());
        s.sms.system_id = "longproto".into();
        s.sms.password = "secret12".into();
        s.sms.sms_after_s = 1;
        s.sms.ca_cert = ca;
        s
    };
    // a CA that did not sign the SMSC's certificate: no bind
    let other = Pki::new();
    let wrong = start_bridge(&broker, tls_settings("sms-tls-wrong", other.path("ca.pem"))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wrong.sms_bound(), Some(false));
    assert!(smsc.binds().is_empty(), "no bind reached the SMSC");
    let m = metrics_text(&wrong).await;
    assert!(
        metric(&m, "longproto_sms_binds_total{outcome=\"failed\"}") >= 1.0,
        "{m}"
    );
    wrong.shutdown().await;

    let bridge = start_bridge(&broker, tls_settings("sms-tls", pki.path("ca.pem"))).await;
    assert!(
        smsc.wait(Duration::from_secs(10), |s| s.bound()).await,
        "bound over TLS"
    );
    let mut car = Handset::new(&smsc, CAR, CAR_NUMBER);
    create(&bridge, CAR, json!({"command": "unlock"})).await;
    let ud = car.next(Duration::from_secs(10)).await;
    assert_eq!(car.take(&ud), 1);
}
