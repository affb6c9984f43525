//! Sigfox callbacks over real HTTP: uplinks, BIDIR replies, ACKNOWLEDGE, and every kind
//! of bad input.
use crate::common::*;
use longproto_bridge::app::Bridge;
use longproto_bridge::clock::ManualClock;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::time::Duration;

fn basic(secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("sigfox:{secret}"))
    )
}

async fn callback(addr: SocketAddr, route: &str, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    sigfox_callback(addr, route, &basic(SIGFOX_SECRET), &body).await
}

/// The fixture's BIDIR body, with its `_comment` left in (unknown fields are ignored).
fn bidir(seq: u16, data: &str, ack: bool) -> Value {
    let mut v: Value =
        serde_json::from_slice(&fixture("sigfox/sigfox_bidir_callback_request.json")).unwrap();
    v["seqNumber"] = json!(seq);
    v["data"] = json!(data);
    v["ack"] = json!(ack);
    v["time"] = json!(1_718_031_845 + seq as i64);
    v
}

/// The same body as a template that quotes every value.
fn all_strings(v: &Value) -> Value {
    let m: Map<String, Value> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string().trim_matches('"'))))
        .collect();
    Value::Object(m)
}

fn ack_body(code: u32, message: &str, acked: bool) -> Value {
    let mut v: Value =
        serde_json::from_slice(&fixture("sigfox/sigfox_service_acknowledge.json")).unwrap();
    v["infoCode"] = json!(code);
    v["infoMessage"] = json!(message);
    v["downlinkAck"] = json!(acked);
    v
}

const STATUS: &str = "096e24b5e600f6b803e03039";

async fn sigfox_bridge(
    broker: &Mosquitto,
    name: &str,
    clock: Option<std::sync::Arc<ManualClock>>,
    daily: u8,
) -> Bridge {
    let mut s = settings(broker, name);
    s.sigfox.daily_downlinks = daily;
    match clock {
        Some(c) => start_bridge_with_clock(broker, s, c).await,
        None => start_bridge(broker, s).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplinks_in_numbers_strings_and_forms_publish_telemetry_once() {
    let broker = Mosquitto::start();
    let bridge = sigfox_bridge(&broker, "bridge-sf-up", None, 4).await;
    let mut watch = Watcher::new(&broker, "watch-sf", &["longproto/v1/sigfox/+/telemetry"]).await;
    let addr = bridge.http_addr();

    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(2317, STATUS, false)).await;
    assert_eq!(status, 204);
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["device"], "sigfox/001a2b3c");
    assert_eq!(t["records"][0]["kind"], "status");
    assert_eq!(t["records"][0]["odometer_km"], 12345);
    assert_eq!(
        (
            t["meta"]["seq_number"].clone(),
            t["meta"]["station"].clone(),
            t["meta"]["rssi"].clone()
        ),
        (json!(2317), json!("4E2F"), json!(-121.5))
    );
    assert_eq!(t["meta"]["time"], "2024-06-10T15:42:42Z");
    assert_eq!(t["fport"], Value::Null);

    // the same callback again (a Sigfox retry, another base station): published once
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(2317, STATUS, false)).await;
    assert_eq!(status, 204);
    // quoted values, as a template that quotes everything writes them
    let (status, v) = callback(
        addr,
        "/v1/sigfox/uplink",
        &all_strings(&bidir(2318, "84002a0200", false)),
    )
    .await;
    assert_eq!(status, 204, "{v}");
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["meta"]["seq_number"], 2318, "the duplicate was dropped");
    assert_eq!(t["records"][0]["kind"], "ack");

    // a form-encoded body
    let auth = basic(SIGFOX_SECRET);
    let form =
        b"device=1A2B3C&data=a401040202&seqNumber=2319&time=1718040000&ack=false&rssi=-110.5";
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/sigfox/uplink",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form,
    )
    .await;
    assert_eq!(status, 204);
    let t = watch.next_json("/telemetry").await;
    assert_eq!(
        (
            t["meta"]["seq_number"].clone(),
            t["records"][0]["kind"].clone()
        ),
        (json!(2319), json!("boot"))
    );

    // the sequence number wraps (12 bits): the same number at another time is new
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &{
        let mut b = bidir(2317, STATUS, false);
        b["time"] = json!(1_800_000_000);
        b
    })
    .await;
    assert_eq!(status, 204);
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["meta"]["seq_number"], 2317);
    assert!(
        watch
            .none_on("/telemetry", Duration::from_millis(300))
            .await
            .is_none()
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callbacks_get_a_4xx() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-sf-bad");
    s.http.body_limit_bytes = 1500;
    let bridge = Bridge::start(s).await.unwrap();
    let addr = bridge.http_addr();
    let body = serde_json::to_vec(&bidir(1, STATUS, true)).unwrap();
    let json_type = ("Content-Type", "application/json");
    for auth in [
        None,
        Some("Bearer wrong-secret"),
        Some(basic("wrong").as_str()),
        Some("Basic !!!"),
    ]
    .map(|a| a.map(str::to_owned))
    {
        let mut h = vec![json_type];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        let (status, _, _) = http(addr, "POST", "/v1/sigfox/uplink", &h, &body).await;
        assert_eq!(status, 401, "{auth:?}");
    }
    let bearer = format!("Bearer {SIGFOX_SECRET}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/sigfox/uplink",
        &[("Authorization", &bearer), json_type],
        &serde_json::to_vec(&bidir(2, STATUS, false)).unwrap(),
    )
    .await;
    assert_eq!(status, 204, "Bearer works as well as Basic");
    let auth = basic(SIGFOX_SECRET);
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/sigfox/uplink",
        &[("Authorization", &auth), json_type],
        &vec![b' '; 4096],
    )
    .await;
    assert_eq!(status, 413);
    let cases = [
        (json!({"data": STATUS}), "device: missing"),
        (json!({"device": "XYZ!", "data": STATUS}), "device:"),
        (
            json!({"device": "1A2B3C", "data": "zz"}),
            "data: \"zz\" is not hex",
        ),
        (
            json!({"device": "1A2B3C", "data": "00112233445566778899aabbcc"}),
            "data: 13 bytes",
        ),
        (
            json!({"device": "1A2B3C", "data": STATUS, "seqNumber": "many"}),
            "seqNumber: \"many\" is not a number",
        ),
        (
            json!({"device": "1A2B3C", "data": STATUS, "seqNumber": 5000}),
            "seqNumber: out of range",
        ),
        (
            json!({"device": "1A2B3C", "data": STATUS, "ack": "maybe"}),
            "ack: \"maybe\" is not true or false",
        ),
        (json!([1, 2]), "expected a JSON object"),
    ];
    for (body, want) in cases {
        let (status, v) = callback(addr, "/v1/sigfox/uplink", &body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(want),
            "{body}: {v}"
        );
    }
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/sigfox/uplink",
        &[("Authorization", &auth), json_type],
        b"{nope",
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = callback(addr, "/v1/sigfox/ack", &json!({"device": "1A2B3C"})).await;
    assert_eq!(
        (status, v["error"]["message"].clone()),
        (400, json!("infoCode: missing"))
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_goes_round_trip_to_executed() {
    let broker = Mosquitto::start();
    let bridge = sigfox_bridge(&broker, "bridge-sf-rt", None, 4).await;
    let mut events = Watcher::new(&broker, "events-sf", &["longproto/v1/+/+/command-events"]).await;
    let addr = bridge.http_addr();
    let (status, cmd) = api(
        addr,
        "POST",
        "/v1/devices/sigfox/001a2b3c/commands",
        Some(&json!({"command": "unlock", "args": {"auto_relock_s": 30}})),
    )
    .await;
    assert_eq!(status, 202);
    let id = cmd["id"].as_str().unwrap().to_owned();

    // an UPLINK callback (ack false) opens no window
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(10, STATUS, false)).await;
    assert_eq!(status, 204);
    let started = std::time::Instant::now();
    let (status, reply) = callback(addr, "/v1/sigfox/uplink", &bidir(11, STATUS, true)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"1A2B3C": {"downlinkData": "020001001e000000"}}),
        "keyed by the device as written; one 8-byte frame"
    );
    assert!(took < Duration::from_secs(1), "the reply took {took:?}");
    wait_state(&mut events, &id, "scheduled").await;
    // the same callback retried: no second command
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(11, STATUS, true)).await;
    assert_eq!(status, 204);

    let (status, _) = callback(addr, "/v1/sigfox/ack", &ack_body(0, "Acked", true)).await;
    assert_eq!(status, 204);
    wait_state(&mut events, &id, "delivered").await;
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(12, "8400010200", false)).await;
    assert_eq!(status, 204);
    wait_state(&mut events, &id, "executed").await;
    let (_, one) = api(addr, "GET", &format!("/v1/commands/{id}"), None).await;
    let states: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "scheduled", "delivered", "executed"]);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledge_code_does_what_it_says() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-sf-codes");
    s.commands.max_attempts = 10;
    let bridge = start_bridge(&broker, s).await;
    let mut events = Watcher::new(
        &broker,
        "events-codes",
        &["longproto/v1/+/+/command-events"],
    )
    .await;
    let addr = bridge.http_addr();
    for (seq, (code, name, want)) in (100..).zip([
        (1, "NO_ANSWER", "queued"),
        (3, "OVERRUN_ERROR", "queued"),
        (4, "NETWORK_ERROR", "queued"),
        (5, "PENDING", "queued"),
        (7, "TOO_MANY_REQUESTS", "queued"),
        (2, "INVALID_PAYLOAD", "failed"),
        (6, "NO_DOWNLINK_CONTRACT", "failed"),
        (8, "INVALID_CONFIGURATION", "failed"),
    ]) {
        let device = format!("{code:06x}");
        let (_, cmd) = api(
            addr,
            "POST",
            &format!("/v1/devices/sigfox/{device}/commands"),
            Some(&json!({"command": "locate"})),
        )
        .await;
        let id = cmd["id"].as_str().unwrap().to_owned();
        let mut b = bidir(seq, STATUS, true);
        b["device"] = json!(device);
        let (status, _) = callback(addr, "/v1/sigfox/uplink", &b).await;
        assert_eq!(status, 200, "{name}");
        let mut a = ack_body(code, name, false);
        a["device"] = json!(device);
        callback(addr, "/v1/sigfox/ack", &a).await;
        let e = wait_state(&mut events, &id, want).await;
        let e = if e.get("reason").is_some() {
            e
        } else {
            wait_state(&mut events, &id, want).await
        };
        assert_eq!(e["reason"], format!("sigfox: {name}: {name}"), "{code}");
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_holds_commands_until_the_next_day() {
    let broker = Mosquitto::start();
    let clock = ManualClock::at(1_750_032_000_000); // 2025-06-16 00:00 UTC
    let bridge = sigfox_bridge(&broker, "bridge-sf-quota", Some(clock.clone()), 1).await;
    let addr = bridge.http_addr();
    let first = api(
        addr,
        "POST",
        "/v1/devices/sigfox/001a2b3c/commands",
        Some(&json!({"command": "lock", "ttl_s": 172800})),
    )
    .await
    .1;
    let second = api(
        addr,
        "POST",
        "/v1/devices/sigfox/001a2b3c/commands",
        Some(&json!({"command": "locate", "ttl_s": 172800})),
    )
    .await
    .1;
    let (status, reply) = callback(addr, "/v1/sigfox/uplink", &bidir(1, STATUS, true)).await;
    assert_eq!(status, 200);
    assert_eq!(
        &reply["1A2B3C"]["downlinkData"].as_str().unwrap()[..2],
        "01",
        "the lock first"
    );
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(2, STATUS, true)).await;
    assert_eq!(status, 204, "the quota of 1 a day is used up");
    let m = metrics_text(&bridge).await;
    assert!(
        m.contains("\nlongproto_sigfox_quota_exhausted_total 1\n"),
        "the empty window is counted"
    );
    let (_, one) = api(
        addr,
        "GET",
        &format!("/v1/commands/{}", second["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(one["state"], "queued");
    let reasons: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        ["waiting: the daily downlink quota (1) is used up"],
        "{one}"
    );
    clock.advance_ms(86_400_000);
    let (status, reply) = callback(addr, "/v1/sigfox/uplink", &bidir(3, STATUS, true)).await;
    assert_eq!(status, 200, "a new day, a new quota");
    assert_eq!(
        &reply["1A2B3C"]["downlinkData"].as_str().unwrap()[..2],
        "03"
    );
    let _ = first;
    // an expired command is never sent
    let (_, short) = api(
        addr,
        "POST",
        "/v1/devices/sigfox/001a2b3c/commands",
        Some(&json!({"command": "reboot", "ttl_s": 10})),
    )
    .await;
    clock.advance_ms(86_400_000 + 11_000);
    let (status, _) = callback(addr, "/v1/sigfox/uplink", &bidir(4, STATUS, true)).await;
    assert_eq!(status, 204);
    let (_, one) = api(
        addr,
        "GET",
        &format!("/v1/commands/{}", short["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(one["state"], "expired");
    bridge.shutdown().await;
}
