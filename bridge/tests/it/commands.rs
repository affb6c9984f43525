//! The command queue end to end: HTTP and MQTT in, ChirpStack's `command/down` out,
//! through a real mosquitto, real HTTP and a real SQLite file.
use crate::common::*;
use longproto_bridge::app::Bridge;
use longproto_bridge::clock::ManualClock;
use serde_json::{Value, json};
use std::time::Duration;

const EUI: &str = "70b3d57ed0051a2b";
const ACK_NONE: &str = ""; // an uplink with no records

fn path(eui: &str) -> String {
    format!("/v1/devices/lorawan/{eui}/commands")
}

async fn create(bridge: &Bridge, eui: &str, body: Value) -> Value {
    create_command(bridge, eui, body).await
}

/// The device's last known state, as `GET /v1/devices/lorawan/{eui}` answers it.
async fn device_state(bridge: &Bridge, eui: &str) -> Value {
    let path = format!("/v1/devices/lorawan/{eui}");
    api(bridge.http_addr(), "GET", &path, None).await.1
}

/// The hex of an ack record: counter, opcode, result (0 executed, 4 not_now).
fn ack_record(counter: u16, opcode: u8, result: u8) -> String {
    hex::encode([0x84, (counter >> 8) as u8, counter as u8, opcode, result])
}

fn command_vector(name: &str) -> String {
    vectors("commands.json")
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap()["hex"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_a_uplink_takes_the_command_to_executed() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-classa")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events = Watcher::new(
        &broker,
        "events-classa",
        &["longproto/v1/+/+/command-events"],
    )
    .await;

    let cmd = create(&bridge, EUI, json!({"command": "lock", "ttl_s": 600})).await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            cmd["state"].clone(),
            cmd["counter"].clone(),
            cmd["confirmed"].clone()
        ),
        (json!("queued"), json!(1), json!(true))
    );
    wait_state(&mut events, &id, "queued").await;
    // the device's state counts it from the 202 on
    let state = device_state(&bridge, EUI).await;
    assert_eq!(state["pending_commands"], 1, "{state}");
    assert!(
        cs.next_down(Duration::from_millis(300)).await.is_none(),
        "class A: nothing before an uplink"
    );

    cs.up(EUI, 5, 1, ACK_NONE).await;
    let (topic, down, data) = cs
        .next_down(Duration::from_secs(5))
        .await
        .expect("a command/down after the uplink");
    assert_eq!(
        topic,
        format!("application/app-1/device/{EUI}/command/down")
    );
    // ChirpStack's queue item id is a UUID of the window's own, whatever the command id
    let item = down["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&item).is_ok(), "{item}");
    assert_eq!(down["devEui"], EUI);
    assert_eq!(down["fPort"], 20);
    assert_eq!(down["confirmed"], true);
    assert_eq!(
        down["expiresAt"].as_str().unwrap()[..19],
        cmd["expires_at"].as_str().unwrap()[..19]
    );
    assert_eq!(
        hex::encode(&data),
        command_vector("lock"),
        "the frame of the vectors"
    );
    wait_state(&mut events, &id, "scheduled").await;

    cs.txack(EUI, &item).await;
    wait_state(&mut events, &id, "sent").await;
    cs.ack(EUI, &item, true).await;
    wait_state(&mut events, &id, "delivered").await;
    cs.up(EUI, 5, 2, &ack_record(1, 0x01, 0)).await;
    wait_state(&mut events, &id, "executed").await;

    let (status, one) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let states: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["queued", "scheduled", "sent", "delivered", "executed"]
    );
    assert_eq!(one["history"][1]["attempt"], 1);
    let state = device_state(&bridge, EUI).await;
    assert_eq!(state["pending_commands"], 0, "{state}");
    let metrics = metrics_text(&bridge).await;
    for state in ["queued", "scheduled", "sent", "delivered", "executed"] {
        let line =
            format!("longproto_command_states_total{{network=\"lorawan\",state=\"{state}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("longproto_command_duration_seconds_count 1"),
        "{metrics}"
    );
    // one creation, one store transaction
    assert!(
        metrics.contains("longproto_command_creation_commits_total 1"),
        "{metrics}"
    );
    // nothing more goes out: a delivered command is never resent
    cs.up(EUI, 5, 3, ACK_NONE).await;
    assert!(cs.next_down(Duration::from_millis(500)).await.is_none());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_coalesce_by_data_rate_with_lock_and_unlock_first() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-coalesce")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create(
                &bridge,
                EUI,
                json!({"command": "set_interval", "args": {"interval_s": 60 + i}}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let unlock = create(
        &bridge,
        EUI,
        json!({"command": "unlock", "args": {"auto_relock_s": 30}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // EU868 DR0: N = 51 bytes, 6 frames; the unlock, created last, goes first
    cs.up(EUI, 0, 1, ACK_NONE).await;
    let (_, down, data) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    assert_eq!(data.len(), 48, "6 frames at DR0");
    let first = down["id"].as_str().unwrap().to_owned();
    assert_eq!(data[0], 0x02, "unlock first");
    let counters: Vec<u16> = data
        .chunks(8)
        .map(|f| u16::from_be_bytes([f[1], f[2]]))
        .collect();
    assert_eq!(counters, [8, 1, 2, 3, 4, 5], "then oldest first");

    // EU868 DR5: N = 242 bytes, room for the rest (2)
    cs.up(EUI, 5, 2, ACK_NONE).await;
    let (_, down, data) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    assert_eq!(data.len(), 16);
    assert_ne!(down["id"], first.as_str(), "each window has its own id");
    // the txack of a coalesced downlink moves all its commands
    cs.txack(EUI, &first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, list) = api(
        bridge.http_addr(),
        "GET",
        &format!("{}?state=sent", path(EUI)),
        None,
    )
    .await;
    assert_eq!(list["commands"].as_array().unwrap().len(), 6, "{list}");
    assert!(
        list["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == unlock.as_str()),
        "the unlock rode the first window: {list}"
    );
    let (_, list) = api(
        bridge.http_addr(),
        "GET",
        &format!("{}?state=scheduled", path(EUI)),
        None,
    )
    .await;
    assert_eq!(list["commands"].as_array().unwrap().len(), 2);
    bridge.shutdown().await;
}

/// The window is filled as the `up` arrives, ahead of the dispatcher; a second copy of
/// the same uplink (QoS 1 redelivery, a shared subscription) opens no second window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_uplink_opens_one_window() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-repeat")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    for i in 0..2 {
        create(
            &bridge,
            EUI,
            json!({"command": "set_interval", "args": {"interval_s": 60 + i}}),
        )
        .await;
    }
    let body = json!({
        "deduplicationId": "7b3ce1c3-2c7e-4f0f-9a43-5f0d1b6f2a11",
        "time": "2025-06-13T12:51:07.118204+00:00",
        "deviceInfo": {"applicationId": "app-1", "devEui": EUI, "deviceClassEnabled": "CLASS_A"},
        "devAddr": "01a44c4c", "dr": 5, "fCnt": 1, "fPort": 10, "data": "",
        "rxInfo": [{"gatewayId": "2cf7f11081400088", "rssi": -90, "snr": 7.0}],
        "regionConfigId": "eu868"
    });
    cs.event(EUI, "up", body.clone()).await;
    let (_, _, data) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    assert_eq!(data.len(), 16, "both commands in the one window");
    // a third command waits; a copy of the same uplink must not open a window for it
    create(&bridge, EUI, json!({"command": "locate"})).await;
    cs.event(EUI, "up", body).await;
    assert!(
        cs.next_down(Duration::from_millis(500)).await.is_none(),
        "a repeated uplink opened a second window"
    );
    cs.up(EUI, 5, 2, ACK_NONE).await;
    let (_, _, data) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    assert_eq!(data.len(), 8, "the next uplink takes it");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_c_devices_take_a_command_at_once() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-classc")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-c").await;
    let eui = "70b3d57ed0051a99";
    cs.join(eui, "CLASS_C").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cmd = create(&bridge, eui, json!({"command": "unlock"})).await;
    let (topic, down, data) = cs
        .next_down(Duration::from_secs(5))
        .await
        .expect("class C: at once, no uplink");
    assert_eq!(
        topic,
        format!("application/app-c/device/{eui}/command/down")
    );
    assert!(
        uuid::Uuid::parse_str(down["id"].as_str().unwrap()).is_ok(),
        "{down}"
    );
    assert_ne!(down["id"], cmd["id"], "a queue item id of the window's own");
    assert_eq!(data, hex::decode("0200010000000000").unwrap());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_requeues_until_the_attempts_run_out() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-nack");
    s.commands.max_attempts = 2;
    let bridge = start_bridge(&broker, s).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events =
        Watcher::new(&broker, "events-nack", &["longproto/v1/+/+/command-events"]).await;
    let id = create(&bridge, EUI, json!({"command": "locate"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    cs.up(EUI, 5, 1, ACK_NONE).await;
    let (_, down, _) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    cs.ack(EUI, down["id"].as_str().unwrap(), false).await;
    let e = wait_state(&mut events, &id, "queued").await;
    let e = if e.get("reason").is_some() {
        e
    } else {
        wait_state(&mut events, &id, "queued").await
    };
    assert_eq!(e["reason"], "not acknowledged; queued for the next window");

    cs.up(EUI, 5, 2, ACK_NONE).await;
    let (_, down, _) = cs
        .next_down(Duration::from_secs(5))
        .await
        .expect("the retry");
    let retry = down["id"].as_str().unwrap().to_owned();
    let e = wait_state(&mut events, &id, "scheduled").await;
    let e = if e["attempt"] == 2 {
        e
    } else {
        wait_state(&mut events, &id, "scheduled").await
    };
    assert_eq!(e["attempt"], 2);
    cs.ack(EUI, &retry, false).await;
    let e = wait_state(&mut events, &id, "failed").await;
    assert_eq!(e["reason"], "not acknowledged after 2 attempts");
    cs.up(EUI, 5, 3, ACK_NONE).await;
    assert!(cs.next_down(Duration::from_millis(500)).await.is_none());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_logs_expire_or_fail_a_downlink_and_device_acks_reject() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-logs")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events =
        Watcher::new(&broker, "events-logs", &["longproto/v1/+/+/command-events"]).await;
    for (code, state, why) in [
        (
            "EXPIRED",
            "expired",
            "Device queue-item discarded because it expired",
        ),
        (
            "DOWNLINK_PAYLOAD_SIZE",
            "failed",
            "Device queue-item discarded because it exceeds the max. payload size",
        ),
        ("F_CNT_DOWN", "failed", "Downlink frame-counter mismatch"),
    ] {
        let id = create(&bridge, EUI, json!({"command": "locate"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        cs.up(EUI, 5, 1, ACK_NONE).await;
        let (_, down, _) = cs.next_down(Duration::from_secs(5)).await.unwrap();
        cs.log(EUI, down["id"].as_str().unwrap(), code, why).await;
        let e = wait_state(&mut events, &id, state).await;
        assert_eq!(e["reason"], format!("chirpstack: {code}: {why}"));
    }
    // the device's own acknowledgement: rejected, with its reason
    let id = create(&bridge, EUI, json!({"command": "lock"})).await;
    let (counter, id) = (
        id["counter"].as_u64().unwrap() as u16,
        id["id"].as_str().unwrap().to_owned(),
    );
    cs.up(EUI, 5, 2, ACK_NONE).await;
    cs.next_down(Duration::from_secs(5)).await.unwrap();
    cs.up(EUI, 5, 3, &ack_record(counter, 0x01, 4)).await;
    let e = wait_state(&mut events, &id, "rejected").await;
    assert_eq!(e["reason"], "device: not_now");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_command_is_never_handed_to_chirpstack() {
    let broker = Mosquitto::start();
    let clock = ManualClock::at(1_750_000_000_000);
    let bridge =
        start_bridge_with_clock(&broker, settings(&broker, "bridge-expiry"), clock.clone()).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events = Watcher::new(
        &broker,
        "events-expiry",
        &["longproto/v1/+/+/command-events"],
    )
    .await;
    let cmd = create(&bridge, EUI, json!({"command": "unlock", "ttl_s": 60})).await;
    assert_eq!(cmd["expires_at"], "2025-06-15T15:07:40Z");
    let id = cmd["id"].as_str().unwrap().to_owned();
    clock.advance_ms(59_000);
    let short = create(&bridge, EUI, json!({"command": "locate", "ttl_s": 1})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance_ms(1_000); // 60 s: the unlock is due now, the locate too
    cs.up(EUI, 5, 1, ACK_NONE).await;
    for expected in [&id, &short] {
        let e = wait_state(&mut events, expected, "expired").await;
        assert_eq!(e["reason"], "expired before a receive window opened");
        assert_eq!(e["at"], "2025-06-15T15:07:40Z");
    }
    assert!(
        cs.next_down(Duration::from_millis(500)).await.is_none(),
        "an expired command went out"
    );

    // and the sweeper expires queued commands with no uplink at all
    let lone = create(&bridge, EUI, json!({"command": "locate", "ttl_s": 5})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance_ms(6_000);
    wait_state(&mut events, &lone, "expired").await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_idempotency_keys_and_only_queued_commands_cancel() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-idem")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let a = create(&bridge, EUI, json!({"id": "order-42", "command": "unlock"})).await;
    let b = create(
        &bridge,
        "70B3D57ED0051A2B",
        json!({"id": "order-42", "command": "unlock"}),
    )
    .await;
    assert_eq!(a, b, "the same id twice is one command");
    let (status, v) = api(
        bridge.http_addr(),
        "POST",
        &path("0000000000000001"),
        Some(&json!({"id": "order-42", "command": "lock"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("id_conflict"))
    );

    let (status, v) = api(bridge.http_addr(), "DELETE", "/v1/commands/order-42", None).await;
    assert_eq!((status, v["state"].clone()), (200, json!("cancelled")));
    let (status, v) = api(bridge.http_addr(), "DELETE", "/v1/commands/order-42", None).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("not_cancellable"))
    );
    let (status, _) = api(bridge.http_addr(), "DELETE", "/v1/commands/nope", None).await;
    assert_eq!(status, 404);

    let sched = create(&bridge, EUI, json!({"command": "locate"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cs.up(EUI, 5, 1, ACK_NONE).await;
    cs.next_down(Duration::from_secs(5)).await.unwrap();
    let (status, v) = api(
        bridge.http_addr(),
        "DELETE",
        &format!("/v1/commands/{sched}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is scheduled")
    );

    let (status, list) = api(bridge.http_addr(), "GET", &path(EUI), None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [sched.as_str(), "order-42"], "newest first");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_naming_the_field() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-bad");
    s.http.body_limit_bytes = 1024;
    let bridge = start_bridge(&broker, s).await;
    let addr = bridge.http_addr();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"command": "fly"}),
            400,
            "command: unknown variant `fly`",
        ),
        (
            json!({"command": "set_interval"}),
            400,
            "args: missing field `interval_s`",
        ),
        (
            json!({"command": "set_interval", "args": {"interval_s": 0}}),
            400,
            "args: interval_s is out of range",
        ),
        (
            json!({"command": "unlock", "ttl_s": 0}),
            400,
            "ttl_s: 0 is out of range",
        ),
        (
            json!({"command": "unlock", "confirmed": "yes"}),
            400,
            "confirmed: expected true or false",
        ),
        (
            json!({"command": "unlock", "colour": "red"}),
            400,
            "colour: unknown field",
        ),
        (
            json!({"command": "unlock", "id": "has spaces"}),
            400,
            "id: \"has spaces\" is not an id",
        ),
        (json!(["unlock"]), 400, "expected a JSON object"),
    ];
    for (body, want_status, want) in cases {
        let (status, v) = api(addr, "POST", &path(EUI), Some(&body)).await;
        assert_eq!(status, want_status, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(want),
            "{body}: {v}"
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let (status, _, b) = http(
        addr,
        "POST",
        &path(EUI),
        &[("Authorization", &auth)],
        b"{not json",
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&b));
    let big = vec![b' '; 4096];
    let (status, _, b) = http(addr, "POST", &path(EUI), &[("Authorization", &auth)], &big).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("body_too_large"));
    let (status, _, _) = http(
        addr,
        "POST",
        &path(EUI),
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        b"{}",
    )
    .await;
    assert_eq!(status, 415);
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
        vec![("Authorization", "Basic eDp5")],
    ] {
        let (status, h, _) = http(addr, "GET", &path(EUI), &headers, b"").await;
        assert_eq!(status, 401);
        assert!(
            h.iter()
                .any(|(k, v)| k == "www-authenticate" && v == "Bearer")
        );
    }
    for (p, code) in [
        ("/v1/devices/lorawan/xyz/commands", "bad_device"),
        ("/v1/devices/lora/70b3d57ed0051a2b/commands", "bad_device"),
        (
            "/v1/devices/lorawan/70b3d57ed0051a2b/commands?state=done",
            "bad_state",
        ),
        (
            "/v1/devices/lorawan/70b3d57ed0051a2b/commands?limit=0",
            "bad_limit",
        ),
    ] {
        let (status, v) = api(addr, "GET", p, None).await;
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (400, json!(code)),
            "{p}"
        );
    }
    let (status, v) = api(addr, "GET", "/v1/devices/lorawan/0000000000000009", None).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (404, json!("unknown_device"))
    );
    bridge.shutdown().await;
}

/// Storing a command request waits for the disk; an uplink that arrives behind a burst
/// of them must not wait too, or its receive window closes. Here another process holds
/// the database's write lock while MQTT command requests and then an uplink arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_is_not_held_up_by_mqtt_command_requests_waiting_for_the_store() {
    use sqlx::ConnectOptions;
    let broker = Mosquitto::start();
    let s = settings(&broker, "bridge-lane");
    let url = s.storage.url.clone();
    let bridge = start_bridge(&broker, s).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut watch = Watcher::new(
        &broker,
        "watch-lane",
        &[
            "longproto/v1/+/+/telemetry",
            "longproto/v1/+/+/command-events",
        ],
    )
    .await;
    let mut other = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    // the requests and then the uplink over one connection: the broker keeps their order
    let devices: Vec<String> = (0..5).map(|i| format!("00000000000000a{i}")).collect();
    for d in &devices {
        let topic = format!("longproto/v1/lorawan/{d}/command");
        let body = format!(r#"{{"id":"lane-{d}","command":"locate"}}"#);
        cs.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, body.into_bytes())
            .await
            .unwrap();
    }
    cs.up(EUI, 5, 1, ACK_NONE).await;
    let (topic, _, _) = watch
        .next_where(Duration::from_secs(3), |_| true)
        .await
        .expect("the uplink's telemetry while the command requests wait for the store");
    assert_eq!(topic, format!("longproto/v1/lorawan/{EUI}/telemetry"));

    // the store is free again: every request is stored and announced, in arrival order
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let mut queued = Vec::new();
    while queued.len() < devices.len() {
        let (_, payload, _) = watch
            .next_where(Duration::from_secs(10), |t| t.ends_with("/command-events"))
            .await
            .expect("every command request stored");
        let e: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(e["state"], "queued", "{e}");
        queued.push(e["command_id"].as_str().unwrap().to_owned());
    }
    let ids: Vec<String> = devices.iter().map(|d| format!("lane-{d}")).collect();
    assert_eq!(queued, ids);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_arrive_over_mqtt_too() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-mqttcmd")).await;
    let mut events = Watcher::new(
        &broker,
        "events-mqttcmd",
        &["longproto/v1/+/+/command-events"],
    )
    .await;
    let op = publisher(&broker, "operator").await;
    let topic = format!("longproto/v1/lorawan/{}/command", EUI.to_uppercase());
    op.publish(
        &topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        br#"{"id":"mqtt-1","command":"unlock","args":{"auto_relock_s":30}}"#.to_vec(),
    )
    .await
    .unwrap();
    wait_state(&mut events, "mqtt-1", "queued").await;
    op.publish(
        &topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        br#"{"id":"mqtt-2","command":"fly"}"#.to_vec(),
    )
    .await
    .unwrap();
    let e = wait_state(&mut events, "mqtt-2", "refused").await;
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .starts_with("command: unknown variant `fly`"),
        "{e}"
    );
    op.publish(
        &topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        b"not json".to_vec(),
    )
    .await
    .unwrap();
    let (_, p, _) = events
        .next_where(Duration::from_secs(5), |t| t.ends_with("/command-events"))
        .await
        .unwrap();
    let e: Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(
        (e["state"].clone(), e["command_id"].clone()),
        (json!("refused"), Value::Null)
    );
    let (status, v) = api(bridge.http_addr(), "GET", "/v1/commands/mqtt-1", None).await;
    assert_eq!(
        (status, v["args"]["auto_relock_s"].clone()),
        (200, json!(30))
    );
    bridge.shutdown().await;
}

/// A window hands its commands over before the store records them (the journal covers a
/// crash): a cancel, an expiry or a network event that comes in between waits for that
/// record, so it never finds a command on its way to the device still `queued`. One
/// thread, so that nothing else runs between the window and the cancel.
#[tokio::test(flavor = "current_thread")]
async fn a_cancel_right_after_a_window_finds_the_command_scheduled() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-race")).await;
    let id = create(&bridge, EUI, json!({"command": "unlock"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device = longproto_bridge::device::DeviceId::parse("lorawan", EUI).unwrap();
    let window = longproto_bridge::commands::ReceiveWindow { frames: 1 };
    let plan = bridge
        .commands()
        .fill_window(&device, window)
        .await
        .expect("the queued unlock");
    assert_eq!(plan.commands, [id.as_str()]);
    match bridge
        .commands()
        .cancel(
            &id,
            &longproto_bridge::commands::model::Origin::Token("test".into()),
        )
        .await
    {
        Err(longproto_bridge::commands::CommandError::NotCancellable { state, .. }) => {
            assert_eq!(state.name(), "scheduled")
        }
        other => panic!("a command already handed over was cancelled: {other:?}"),
    }
    bridge.shutdown().await;
}
