//! What a broken or hostile peer can do to the bridge: each test sends the input that
//! once did harm, through a real mosquitto, a real HTTP socket or the real binary.
use crate::common::*;
use rumqttc::QoS;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EUI: &str = "70b3d57ed0051a2b";
const OTHER: &str = "70b3d57ed0051a2c";

async fn create(bridge: &longproto_bridge::app::Bridge, eui: &str, body: Value) -> String {
    create_command(bridge, eui, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dropped_and_the_connection_stays_up() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-big")).await;
    let mut events =
        Watcher::new(&broker, "events-big", &["longproto/v1/+/+/command-events"]).await;
    let operator = publisher(&broker, "operator-big").await;
    let topic = format!("longproto/v1/lorawan/{EUI}/command");
    operator
        .publish(&topic, QoS::AtLeastOnce, false, vec![b' '; 300 * 1024])
        .await
        .unwrap();
    operator
        .publish(
            &topic,
            QoS::AtLeastOnce,
            false,
            br#"{"id":"after-big","command":"locate"}"#.to_vec(),
        )
        .await
        .unwrap();
    // the request behind it is served: the connection survived the big one
    wait_state(&mut events, "after-big", "queued").await;
    let m = metrics_text(&bridge).await;
    assert!(
        m.contains(r#"longproto_malformed_messages_total{source="mqtt",reason="too_large"} 1"#),
        "{m}"
    );
    assert!(m.contains("longproto_mqtt_reconnects_total 0"), "{m}");
    assert!(bridge.healthy().await);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigfox_time_past_what_rfc_3339_can_write_is_a_400_not_a_panic() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-time")).await;
    let auth = format!("Bearer {SIGFOX_SECRET}");
    for time in ["9223372036854776", "-1", "\"99999999999999999\""] {
        let body = format!(r#"{{"device":"1A2B3C","time":{time},"data":"00","seqNumber":1}}"#);
        let (status, reply) = sigfox_callback(
            bridge.http_addr(),
            "/v1/sigfox/uplink",
            &auth,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 400, "time {time}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("time: "),
            "{reply}"
        );
    }
    assert!(bridge.healthy().await);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_down_goes_to_the_application_of_the_event_topic_not_of_its_body() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-topic")).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut downs = Watcher::new(&broker, "downs-topic", &["application/#"]).await;
    create(&bridge, EUI, json!({"command": "unlock"})).await;
    let body = json!({
        "deduplicationId": uuid_like(), "time": "2025-06-13T12:51:07Z",
        "deviceInfo": {"applicationId": "evil/level/x", "devEui": EUI, "deviceClassEnabled": "CLASS_A"},
        "devAddr": "01a44c4c", "dr": 5, "fCnt": 1, "fPort": 10, "data": "",
        "rxInfo": [], "txInfo": {"frequency": 868100000}, "regionConfigId": "eu868"
    });
    cs.event(EUI, "up", body).await;
    let (topic, _, _) = downs
        .next_where(Duration::from_secs(5), |t| t.ends_with("/command/down"))
        .await
        .expect("a command/down");
    assert_eq!(
        topic,
        format!("application/app-1/device/{EUI}/command/down")
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_chosen_id_reaches_chirpstack_as_a_uuid_and_an_unconfirmed_hand_over_is_retried() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-uuid");
    s.chirpstack.handover_timeout_s = 5;
    let bridge = start_bridge(&broker, s).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events =
        Watcher::new(&broker, "events-uuid", &["longproto/v1/+/+/command-events"]).await;
    let id = create(
        &bridge,
        EUI,
        json!({"id": "door-7-unlock-1", "command": "unlock"}),
    )
    .await;
    cs.up(EUI, 5, 1, "").await;
    let (_, down, _) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    let first = down["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
    wait_state(&mut events, &id, "scheduled").await;
    // ChirpStack dropped it (as it drops a command/down it cannot take): no txack, no log
    let e = wait_state(&mut events, &id, "queued").await;
    assert_eq!(
        e["reason"],
        "the network did not confirm the hand-over within 5 s"
    );
    cs.up(EUI, 5, 2, "").await;
    let (_, down, _) = cs
        .next_down(Duration::from_secs(5))
        .await
        .expect("the retry");
    let second = down["id"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    cs.txack(EUI, &second).await;
    wait_state(&mut events, &id, "sent").await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txack_or_ack_on_another_devices_topic_moves_nothing() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-cross")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut events = Watcher::new(
        &broker,
        "events-cross",
        &["longproto/v1/+/+/command-events"],
    )
    .await;
    let id = create(&bridge, EUI, json!({"command": "unlock"})).await;
    cs.up(EUI, 5, 1, "").await;
    let (_, down, _) = cs.next_down(Duration::from_secs(5)).await.unwrap();
    let item = down["id"].as_str().unwrap().to_owned();
    wait_state(&mut events, &id, "scheduled").await;
    cs.txack(OTHER, &item).await;
    cs.ack(OTHER, &item, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = api(
        bridge.http_addr(),
        "GET",
        &format!("/v1/commands/{id}"),
        None,
    )
    .await;
    assert_eq!(v["state"], "scheduled", "{v}");
    cs.txack(EUI, &item).await;
    wait_state(&mut events, &id, "sent").await;
    let m = metrics_text(&bridge).await;
    assert!(
        m.contains(r#"reason="downlink_of_another_device"} 2"#),
        "{m}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_partial_or_contradicting_events_are_not_acted_upon() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-partial")).await;
    let mut cs = ChirpstackDouble::new(&broker, "app-1").await;
    let mut telemetry = Watcher::new(&broker, "tm-partial", &["longproto/v1/+/+/telemetry"]).await;
    create(&bridge, EUI, json!({"command": "unlock"})).await;
    let info = json!({"applicationId": "app-1", "devEui": EUI});
    for body in [
        json!({}),
        json!({"deviceInfo": info, "fCnt": 1, "fPort": 10, "dr": 5, "data": ""}),
        json!({"deduplicationId": uuid_like(), "deviceInfo": {"applicationId": "app-1", "devEui": OTHER}, "fPort": 10, "dr": 5, "data": ""}),
        json!({"deduplicationId": uuid_like(), "deviceInfo": info, "fPort": 300, "dr": 5, "data": ""}),
    ] {
        cs.event(EUI, "up", body).await;
    }
    cs.client
        .publish(
            format!("application/app-1/device/{EUI}/event/up"),
            QoS::AtLeastOnce,
            false,
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(
        cs.next_down(Duration::from_secs(1)).await.is_none(),
        "a window was filled for an event that is not an uplink"
    );
    assert!(
        telemetry
            .none_on("/telemetry", Duration::from_millis(300))
            .await
            .is_none(),
        "telemetry was published for an event that is not an uplink"
    );
    let m = metrics_text(&bridge).await;
    // `{}` and the empty payload (an empty protobuf event) both lack the device info
    for (reason, n) in [
        ("no_device_info", 2),
        ("no_deduplication_id", 1),
        ("dev_eui_mismatch", 1),
        ("f_port_out_of_range", 1),
    ] {
        assert!(
            m.contains(&format!(r#"{{source="chirpstack",reason="{reason}"}} {n}"#)),
            "{reason}:\n{m}"
        );
    }
    // a whole uplink still opens the window
    cs.up(EUI, 5, 1, "").await;
    assert!(cs.next_down(Duration::from_secs(5)).await.is_some());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_names_from_topics_make_neither_bad_exposition_nor_new_series() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-labels")).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    cs.event(EUI, "quote\"x", json!({})).await;
    for i in 0..50 {
        cs.event(EUI, &format!("made-up-{i}"), json!({})).await;
    }
    cs.up(EUI, 5, 1, "").await;
    let mut m = String::new();
    for _ in 0..50 {
        m = metrics_text(&bridge).await;
        if m.contains(r#"longproto_chirpstack_events_total{event="other"} 51"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        m.contains(r#"longproto_chirpstack_events_total{event="other"} 51"#),
        "{m}"
    );
    assert!(!m.contains("quote") && !m.contains("made-up"), "{m}");
    // every sample line is `name{label="value",...} number`: nothing a parser chokes on
    let sample = unparsable_lines(&m);
    assert!(sample.is_empty(), "lines that do not parse: {sample:?}");
    bridge.shutdown().await;
}

/// The exposition lines that are neither comments nor well-formed samples.
fn unparsable_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(|l| {
            let Some((series, value)) = l.rsplit_once(' ') else {
                return true;
            };
            if value.parse::<f64>().is_err() {
                return true;
            }
            let Some(labels) = series.split_once('{').map(|(_, l)| l) else {
                return !series
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            };
            let Some(labels) = labels.strip_suffix('}') else {
                return true;
            };
            labels.split(',').any(|pair| {
                let Some((k, v)) = pair.split_once('=') else {
                    return true;
                };
                let name = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
                !name || !quoted || v[1..v.len() - 1].contains('"')
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_surplus_http_connections_are_bounded() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-conns");
    s.http.header_timeout_s = 1;
    s.http.idle_timeout_s = 2;
    s.http.max_connections = 3;
    let bridge = start_bridge(&broker, s).await;
    let addr = bridge.http_addr();

    // headers that never finish: closed after the header timeout
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server closes a slow header within its timeout")
        .unwrap_or(0);
    let _ = n;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // three idle connections fill the limit; a fourth waits until idling ends them
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    let (status, _, _) = http(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the fourth connection was served at once: {:?}",
        t.elapsed()
    );
    let m = metrics_text(&bridge).await;
    assert!(
        !m.contains("longproto_http_connection_limit_reached_total 0"),
        "{m}"
    );
    // and an idle keep-alive connection is closed after idle_timeout
    let mut keep = Conn::new(addr).await;
    let (status, _) = keep.post("/v1/sigfox/ack", "Bearer x", b"{}").await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(idle);
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = raw.read(&mut buf).await.unwrap();
    assert!(n > 0);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_refuse_ambiguity_and_are_json_everywhere() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-errors")).await;
    let addr = bridge.http_addr();
    let path = format!("/v1/devices/lorawan/{EUI}/commands");
    let auth = format!("Bearer {TOKEN}");
    let post = |body: &'static str| {
        let (path, auth) = (path.clone(), auth.clone());
        async move {
            let (status, _, b) = http(
                addr,
                "POST",
                &path,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await;
            (
                status,
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            )
        }
    };
    let (status, v) = post(r#"{"command":"unlock","ttl_s":"60"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["message"],
        "ttl_s: expected a whole number of seconds, found \"60\""
    );
    let (status, v) = post(r#"{"command":"unlock","command":"lock"}"#).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"command\" appears twice"),
        "{v}"
    );
    let (status, _) = post(r#"{"id":"order-1","command":"unlock"}"#).await;
    assert_eq!(status, 202);
    let (status, _) = post(r#"{"id":"order-1","command":"unlock"}"#).await;
    assert_eq!(status, 202, "the same request again is the same command");
    let (status, v) = post(r#"{"id":"order-1","command":"lock"}"#).await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"order-1\""),
        "{v}"
    );

    // a 10 KB id is not echoed back whole
    let long = "x".repeat(10_000);
    let (status, v) = api(addr, "GET", &format!("/v1/commands/{long}"), None).await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().len() < 200, "{v}");
    // JSON errors for a wrong method, too many headers and an id that is not UTF-8
    let (status, headers, body) = http(
        addr,
        "PUT",
        "/v1/commands/x",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 405);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        "method_not_allowed"
    );
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, body) = http(addr, "GET", "/healthz", &many, b"").await;
    assert_eq!(status, 431);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        "headers_too_large"
    );
    let (status, _, body) = http(
        addr,
        "GET",
        "/v1/commands/%FF%FE",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        "bad_path"
    );

    // Sigfox ids with and without leading zeros are one device
    let mut telemetry =
        Watcher::new(&broker, "tm-sigfox", &["longproto/v1/sigfox/+/telemetry"]).await;
    let sigfox = format!("Bearer {SIGFOX_SECRET}");
    for (device, seq) in [("1A2B3C", 1), ("001a2b3c", 2)] {
        let body =
            format!(r#"{{"device":"{device}","time":1718031845,"data":"00","seqNumber":{seq}}}"#);
        let (status, _) =
            sigfox_callback(addr, "/v1/sigfox/uplink", &sigfox, body.as_bytes()).await;
        assert_eq!(status, 204);
    }
    for _ in 0..2 {
        let (topic, _, _) = telemetry
            .next_where(Duration::from_secs(5), |_| true)
            .await
            .expect("telemetry");
        assert_eq!(topic, "longproto/v1/sigfox/001a2b3c/telemetry");
    }
    bridge.shutdown().await;
}

#[test]
fn check_config_refuses_a_storage_url_of_another_scheme_and_takes_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    let check = |url: &str| {
        std::fs::write(&file, format!("[storage]\nurl = \"{url}\"\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
            .args(["check-config", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let (code, stderr) = check("mysql://root@127.0.0.1:3306/longproto");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("storage.url") && stderr.contains("\"mysql\" is not supported"),
        "{stderr}"
    );
    let (code, stderr) = check("postgres:///longproto");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("storage.url: postgres:// needs a host"),
        "{stderr}"
    );
    for url in [
        "postgres://longproto@db.example.net/longproto",
        "postgresql://longproto:secret@10.0.0.5:5433/fleet?sslmode=verify-full",
    ] {
        let (code, stderr) = check(url);
        assert_eq!(code, Some(0), "{url}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_stop_left_unpublished_are_published_at_the_next_start() {
    let mut broker = Mosquitto::start();
    let s = settings(&broker, "bridge-owed");
    let bridge = start_bridge(&broker, s.clone()).await;
    let cs = ChirpstackDouble::new(&broker, "app-1").await;
    // a device with a retained state, and watchers on persistent sessions
    cs.up(EUI, 5, 1, "").await;
    let mut events =
        Watcher::new(&broker, "events-owed", &["longproto/v1/+/+/command-events"]).await;
    let mut states = Watcher::new(&broker, "states-owed", &["longproto/v1/+/+/state"]).await;
    states
        .next_where(Duration::from_secs(5), |t| t.ends_with("/state"))
        .await
        .expect("the device's state");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // the broker goes away; a command is created (the store has it), then SIGTERM
    broker.stop();
    let id = create(&bridge, EUI, json!({"command": "locate"})).await;
    bridge.shutdown().await;

    broker.start_again();
    let bridge = start_bridge(&broker, s).await;
    let e = wait_state(&mut events, &id, "queued").await;
    assert_eq!(e["command_id"], id.as_str());
    // the states the session holds, then the corrected one
    let state = loop {
        let (_, p, _) = states
            .next_where(Duration::from_secs(10), |t| t.ends_with("/state"))
            .await
            .expect("the state corrected to one pending command");
        let state: Value = serde_json::from_slice(&p).unwrap();
        if state["pending_commands"] == 1 {
            break state;
        }
    };
    assert_eq!(
        state["network_info"]["application_id"], "app-1",
        "the rest as it was: {state}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigfox_retry_that_leaves_out_time_takes_no_second_command() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-retry")).await;
    let addr = bridge.http_addr();
    for _ in 0..2 {
        let (status, v) = api(
            addr,
            "POST",
            "/v1/devices/sigfox/1a2b3c/commands",
            Some(&json!({"command": "unlock"})),
        )
        .await;
        assert_eq!(status, 202, "{v}");
    }
    let auth = format!("Bearer {SIGFOX_SECRET}");
    let with_time =
        br#"{"device":"1A2B3C","time":1718031845,"data":"00","seqNumber":17,"ack":true}"#;
    let without = br#"{"device":"1A2B3C","data":"00","seqNumber":17,"ack":true}"#;
    let (status, reply) = sigfox_callback(addr, "/v1/sigfox/uplink", &auth, with_time).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = sigfox_callback(addr, "/v1/sigfox/uplink", &auth, without).await;
    assert_eq!(status, 204, "a copy took a command: {reply}");
    // the other way round: a first callback without time, its copy with one
    let first = br#"{"device":"1A2B3C","data":"00","seqNumber":18,"ack":true}"#;
    let copy = br#"{"device":"1A2B3C","time":1718031905,"data":"00","seqNumber":18,"ack":true}"#;
    let (status, reply) = sigfox_callback(addr, "/v1/sigfox/uplink", &auth, first).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = sigfox_callback(addr, "/v1/sigfox/uplink", &auth, copy).await;
    assert_eq!(status, 204, "a copy took a command: {reply}");
    bridge.shutdown().await;
}
