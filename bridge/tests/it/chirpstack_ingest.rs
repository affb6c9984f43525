//! ChirpStack ingest through a real mosquitto: events in, telemetry and state out.
use crate::common::*;
use chirpstack_api::{common as cs_common, gw, integration};
use prost::Message;
use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use std::time::Duration;

const APP: &str = "8d4bb3b4-5f04-4a53-9e0e-0b5b2c1f6a10";
const PROFILE: &str = "c1a2e7d0-6f3b-4b8e-9d2a-3e4f5a6b7c8d";

fn up_event(
    dev_eui: &str,
    dedup: &str,
    f_cnt: u32,
    f_port: u32,
    data: Vec<u8>,
) -> integration::UplinkEvent {
    integration::UplinkEvent {
        deduplication_id: dedup.into(),
        time: Some(chirpstack_api::pbjson_types::Timestamp {
            seconds: 1_749_819_067,
            nanos: 118_204_000,
        }),
        device_info: Some(integration::DeviceInfo {
            tenant_id: "52f14cd4-c6f1-4fbd-8f87-4025e1d49242".into(),
            tenant_name: "ChirpStack".into(),
            application_id: APP.into(),
            application_name: "fleet".into(),
            device_profile_id: PROFILE.into(),
            device_profile_name: "scooter-eu868-classA".into(),
            device_name: "scooter-0042".into(),
            dev_eui: dev_eui.into(),
            device_class_enabled: cs_common::DeviceClass::ClassA as i32,
            tags: [("fleet".to_string(), "lisbon".to_string())].into(),
        }),
        dev_addr: "01a44c4c".into(),
        adr: true,
        dr: 5,
        f_cnt,
        f_port,
        confirmed: false,
        data,
        rx_info: vec![
            gw::UplinkRxInfo {
                gateway_id: "2cf7f11081400088".into(),
                uplink_id: 1,
                rssi: -102,
                snr: -3.5,
                ..Default::default()
            },
            gw::UplinkRxInfo {
                gateway_id: "0016c001f153a14c".into(),
                uplink_id: 2,
                rssi: -90,
                snr: 7.25,
                ..Default::default()
            },
        ],
        tx_info: Some(gw::UplinkTxInfo {
            frequency: 868_300_000,
            modulation: Some(gw::Modulation {
                parameters: Some(gw::modulation::Parameters::Lora(gw::LoraModulationInfo {
                    bandwidth: 125_000,
                    spreading_factor: 7,
                    code_rate: gw::CodeRate::Cr45 as i32,
                    ..Default::default()
                })),
            }),
        }),
        region_config_id: "eu868".into(),
        ..Default::default()
    }
}

fn topic(dev_eui: &str, event: &str) -> String {
    format!("application/{APP}/device/{dev_eui}/event/{event}")
}

async fn send(client: &AsyncClient, topic: String, payload: Vec<u8>) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplinks_in_both_marshalers_publish_the_vectors_records() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-vectors");
    s.mqtt.state_min_interval_ms = 0; // a state after every uplink, to check each one
    let bridge = start_bridge(&broker, s).await;
    let mut watch = Watcher::new(&broker, "watch-vectors", &["longproto/v1/#"]).await;
    let cs = publisher(&broker, "chirpstack").await;

    let vectors: Vec<Value> = vectors("longproto-v1.json")
        .into_iter()
        .filter(|v| v["fport"] == 10)
        .collect();
    assert!(vectors.len() >= 10);
    let eui = "70B3D57ED0051A2B"; // upper case in, lower case out
    for (i, v) in vectors.iter().enumerate() {
        let data = hex::decode(v["hex"].as_str().unwrap()).unwrap();
        let ev = up_event(eui, &format!("dedup-{i}"), i as u32, 10, data);
        let payload = if i % 2 == 0 {
            serde_json::to_vec(&ev).unwrap()
        } else {
            ev.encode_to_vec()
        };
        send(&cs, topic(eui, "up"), payload).await;

        let t = watch.next_json("/telemetry").await;
        let name = &v["name"];
        assert_eq!(t["device"], "lorawan/70b3d57ed0051a2b", "{name}");
        assert_eq!(t["network"], "lorawan");
        assert_eq!(t["codec"], "longproto-v1");
        assert_eq!(
            t["records"],
            v["json"],
            "{name} ({})",
            if i % 2 == 0 { "json" } else { "protobuf" }
        );
        assert_eq!(t["raw_hex"], v["hex"], "{name}");
        assert!(t.get("error").is_none(), "{name}: {t}");
        let m = &t["meta"];
        assert_eq!(m["f_cnt"], i as u64);
        assert_eq!(m["dr"], 5);
        assert_eq!(m["frequency"], 868_300_000);
        assert_eq!(m["spreading_factor"], 7);
        assert_eq!(m["gateways"], 2);
        assert_eq!(
            (m["rssi"].clone(), m["snr"].clone(), m["gateway_id"].clone()),
            (json!(-90), json!(7.25), json!("0016c001f153a14c")),
            "the best gateway"
        );
        assert_eq!(m["deduplication_id"], format!("dedup-{i}"));
        assert_eq!(m["device_name"], "scooter-0042");
        assert_eq!(m["tags"], json!({"fleet": "lisbon"}));
        assert_eq!(m["time"], "2025-06-13T12:51:07.118204+00:00");
        assert_eq!(m["region"], "eu868");

        let s = watch.next_json("/state").await;
        assert_eq!(s["device"], "lorawan/70b3d57ed0051a2b");
        assert_eq!(s["network_info"]["application_id"], APP);
        assert_eq!(s["network_info"]["class"], "A");
    }
    // the state merged the last record of each kind
    let state = bridge
        .pipeline()
        .state(&longproto_bridge::device::DeviceId::parse("lorawan", eui).unwrap())
        .unwrap();
    for kind in ["status", "ack", "event", "boot"] {
        assert!(
            state["records"].get(kind).is_some(),
            "state lacks {kind}: {state}"
        );
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_fixtures_are_read_old_and_new() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-fixtures")).await;
    let mut watch = Watcher::new(&broker, "watch-fixtures", &["longproto/v1/#"]).await;
    let cs = publisher(&broker, "chirpstack").await;

    // The docs example predates v4.1 (zero scalars left out); its data is not a
    // longproto frame, so it is published with its error and raw bytes.
    send(
        &cs,
        topic("0101010101010101", "up"),
        fixture("chirpstack/up/01_docs_example.json"),
    )
    .await;
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["device"], "lorawan/0101010101010101");
    assert_eq!(t["raw_hex"], "aa");
    assert_eq!(t["fport"], 1);
    assert_eq!(t["error"]["kind"], "unexpected_port", "{t}");
    assert_eq!(t["records"], json!([]));
    assert_eq!(t["meta"]["f_cnt"], 0, "missing scalars read as zero");
    assert_eq!(t["meta"]["rssi"], -36);

    send(
        &cs,
        topic("70b3d57ed0051a2b", "up"),
        fixture("chirpstack/up/03_confirmed_with_codec_object.json"),
    )
    .await;
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["raw_hex"], "cce109a901c40108f57fff");
    assert_eq!(t["meta"]["confirmed"], true);
    assert_eq!(t["meta"]["class"], "A");
    assert!(
        t["error"]["message"].as_str().unwrap().contains("fPort 10")
            || t["error"]["kind"] == "truncated"
            || t["error"]["kind"] == "value_out_of_range",
        "{t}"
    );

    send(
        &cs,
        topic("0101010101010101", "status"),
        fixture("chirpstack/status/01_docs_example.json"),
    )
    .await;
    let s = watch.next_json("/state").await;
    let s = if s["network_info"].get("margin").is_some() {
        s
    } else {
        watch.next_json("/state").await
    };
    assert_eq!(s["network_info"]["margin"], 10);
    let level = s["network_info"]["battery_level"].as_f64().unwrap();
    assert!((level - 88.3).abs() < 1e-4, "{level}");

    send(
        &cs,
        topic("70b3d57ed0051a99", "join"),
        fixture("chirpstack/join/03_class_c.json"),
    )
    .await;
    let s = watch.next_json("/state").await;
    assert_eq!(s["device"], "lorawan/70b3d57ed0051a99");
    assert_eq!(s["network_info"]["class"], "C");
    assert_eq!(s["network_info"]["dev_addr"], "00b1c2d3");

    for f in [
        "ack/01_docs_example.json",
        "txack/01_docs_example.json",
        "log/02_downlink_payload_size.json",
        "location/01_docs_example.json",
    ] {
        let event = f.split('/').next().unwrap();
        send(
            &cs,
            topic("0101010101010101", event),
            fixture(&format!("chirpstack/{f}")),
        )
        .await;
    }
    let s = watch.next_json("/state").await; // the location event updates the state
    assert_eq!(s["network_info"]["network_location"]["latitude"], 37.344214);
    let metrics = bridge.metrics().render();
    for event in ["up", "status", "join", "ack", "txack", "log", "location"] {
        assert!(
            metrics.contains(&format!(
                "longproto_chirpstack_events_total{{event=\"{event}\"}}"
            )),
            "{event}: {metrics}"
        );
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_published_once() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-dup")).await;
    let mut watch = Watcher::new(&broker, "watch-dup", &["longproto/v1/+/+/telemetry"]).await;
    let cs = publisher(&broker, "chirpstack").await;
    let eui = "70b3d57ed0051a2b";
    let data = hex::decode("84002a0200").unwrap();
    let first = up_event(eui, "same-dedup-id", 1, 10, data.clone());
    send(&cs, topic(eui, "up"), serde_json::to_vec(&first).unwrap()).await;
    // the same uplink again, once as JSON and once as Protobuf (a shared subscription
    // or a QoS 1 redelivery)
    send(&cs, topic(eui, "up"), serde_json::to_vec(&first).unwrap()).await;
    send(&cs, topic(eui, "up"), first.encode_to_vec()).await;
    send(
        &cs,
        topic(eui, "up"),
        serde_json::to_vec(&up_event(eui, "next-dedup-id", 2, 10, data)).unwrap(),
    )
    .await;

    let a = watch.next_json("/telemetry").await;
    let b = watch.next_json("/telemetry").await;
    assert_eq!(a["meta"]["deduplication_id"], "same-dedup-id");
    assert_eq!(
        b["meta"]["deduplication_id"], "next-dedup-id",
        "the duplicates were not dropped"
    );
    assert!(
        watch
            .none_on("/telemetry", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        bridge
            .metrics()
            .render()
            .contains("longproto_uplink_duplicates_total{network=\"lorawan\"} 2")
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_counted_and_the_bridge_goes_on() {
    let broker = Mosquitto::start();
    let bridge = start_bridge(&broker, settings(&broker, "bridge-malformed")).await;
    let mut watch = Watcher::new(&broker, "watch-malformed", &["longproto/v1/+/+/telemetry"]).await;
    let cs = publisher(&broker, "chirpstack").await;
    let eui = "70b3d57ed0051a2b";
    let bad: Vec<(String, Vec<u8>)> = vec![
        (topic(eui, "up"), b"not json at all".to_vec()),
        (
            topic(eui, "up"),
            b"{\"fPort\": \"ten\", \"deviceInfo\": 5}".to_vec(),
        ),
        (
            topic(eui, "up"),
            b"{\"data\": \"%%% not base64 %%%\"}".to_vec(),
        ),
        (topic(eui, "up"), b"{".to_vec()),
        (topic(eui, "up"), vec![0xff, 0xff, 0xff, 0x01]),
        (
            topic("nothex", "up"),
            serde_json::to_vec(&up_event("nothex", "x", 1, 10, vec![])).unwrap(),
        ),
        (topic(eui, "integration"), b"{}".to_vec()),
        // outside the subscription filter: the broker never delivers it
        (
            format!("application/{APP}/device/{eui}/event"),
            b"{}".to_vec(),
        ),
    ];
    for (t, p) in bad {
        send(&cs, t, p).await;
    }
    let good = up_event(
        eui,
        "after-the-garbage",
        7,
        10,
        hex::decode("84002a0200").unwrap(),
    );
    send(&cs, topic(eui, "up"), serde_json::to_vec(&good).unwrap()).await;
    let t = watch.next_json("/telemetry").await;
    assert_eq!(t["meta"]["deduplication_id"], "after-the-garbage", "{t}");

    let m = metrics_text(&bridge).await;
    let count = |reason: &str| -> u64 {
        m.lines()
            .find(|l| {
                l.starts_with("longproto_malformed_messages_total")
                    && l.contains(&format!("reason=\"{reason}\""))
                    && l.contains("source=\"chirpstack\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    // marshaler = auto: a payload not starting with '{' is read as Protobuf
    assert_eq!(count("json"), 3, "{m}");
    assert_eq!(count("protobuf"), 2, "{m}");
    assert_eq!(count("dev_eui"), 1, "{m}");
    assert!(
        m.contains("longproto_uplinks_decoded_total{network=\"lorawan\",codec=\"longproto-v1\"} 1"),
        "{m}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_follows_the_device_profile() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-codec");
    s.codecs
        .device_profile
        .insert(PROFILE.into(), "cayenne-lpp".into());
    let bridge = start_bridge(&broker, s).await;
    let mut watch = Watcher::new(&broker, "watch-codec", &["longproto/v1/+/+/telemetry"]).await;
    let cs = publisher(&broker, "chirpstack").await;
    for (i, v) in vectors("cayenne-lpp.json").iter().enumerate() {
        let ev = up_event(
            "0011223344556677",
            &format!("lpp-{i}"),
            i as u32,
            1,
            hex::decode(v["hex"].as_str().unwrap()).unwrap(),
        );
        send(&cs, topic("0011223344556677", "up"), ev.encode_to_vec()).await;
        let t = watch.next_json("/telemetry").await;
        assert_eq!(t["codec"], "cayenne-lpp");
        assert_eq!(t["records"], v["json"], "{}", v["name"]);
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let mut broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-restart");
    s.mqtt.reconnect_max_ms = 500;
    let bridge = start_bridge(&broker, s).await;
    let mut watch = Watcher::new(&broker, "watch-restart", &["longproto/v1/+/+/telemetry"]).await;
    let cs = publisher(&broker, "chirpstack-restart").await;
    let eui = "70b3d57ed0051a2b";
    let data = hex::decode("84002a0200").unwrap();
    let total = 60u32;
    for i in 0..total {
        if i == 20 {
            broker.stop();
            // the outage is real: the bridge itself has seen the broker go
            let mut down = false;
            for _ in 0..200 {
                if http(bridge.http_addr(), "GET", "/healthz", &[], b"")
                    .await
                    .0
                    == 503
                {
                    down = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(down, "the bridge never noticed the broker was down");
        }
        if i == 40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            broker.start_again();
        }
        // While the broker is down the publisher queues these, as ChirpStack's client does.
        let ev = up_event(eui, &format!("restart-{i}"), i, 10, data.clone());
        send(&cs, topic(eui, "up"), serde_json::to_vec(&ev).unwrap()).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < total as usize {
        let Some((_, p, _)) = watch
            .next_where(Duration::from_secs(15), |t| t.ends_with("/telemetry"))
            .await
        else {
            break;
        };
        let t: Value = serde_json::from_slice(&p).unwrap();
        seen.insert(t["meta"]["f_cnt"].as_u64().unwrap());
    }
    let missing: Vec<u32> = (0..total)
        .filter(|i| !seen.contains(&(*i as u64)))
        .collect();
    assert!(missing.is_empty(), "lost uplinks {missing:?}");
    assert!(
        bridge
            .metrics()
            .render()
            .contains("longproto_mqtt_reconnects_total 1"),
        "{}",
        bridge.metrics().render()
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_broker_connection() {
    let mut broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-health");
    s.mqtt.reconnect_max_ms = 200;
    let bridge = start_bridge(&broker, s).await;
    let (status, _, body) = http(bridge.http_addr(), "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    broker.stop();
    let mut status = 200;
    for _ in 0..100 {
        status = http(bridge.http_addr(), "GET", "/healthz", &[], b"")
            .await
            .0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 503);
    broker.start_again();
    let started = std::time::Instant::now();
    while http(bridge.http_addr(), "GET", "/healthz", &[], b"")
        .await
        .0
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not reconnected within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // reconnected within the backoff cap plus a connect: well inside a second
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "reconnect took {:?}",
        started.elapsed()
    );
    let (status, _, _) = http(bridge.http_addr(), "GET", "/nope", &[], b"").await;
    assert_eq!(status, 404);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_publishes_the_first_and_the_last_state() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-pacing");
    s.mqtt.state_min_interval_ms = 400;
    let bridge = start_bridge(&broker, s).await;
    let mut watch = Watcher::new(&broker, "watch-pacing", &["longproto/v1/+/+/state"]).await;
    let cs = publisher(&broker, "chirpstack").await;
    let eui = "70b3d57ed0051a2b";
    for i in 0..20u32 {
        // an ack record with counter i, so each state says which uplink it reflects
        let data = vec![0x84, 0, i as u8, 2, 0];
        let ev = up_event(eui, &format!("burst-{i}"), i, 10, data);
        send(&cs, topic(eui, "up"), serde_json::to_vec(&ev).unwrap()).await;
    }
    let started = std::time::Instant::now();
    let first = watch.next_json("/state").await;
    assert!(
        first["records"]["ack"]["counter"].as_u64().unwrap() < 19,
        "{first}"
    );
    let mut states = 1;
    loop {
        let s = watch.next_json("/state").await;
        states += 1;
        if s["records"]["ack"]["counter"] == 19 {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the last state came after {:?}",
        started.elapsed()
    );
    assert!(
        states <= 4,
        "{states} state publishes for a 20-uplink burst"
    );
    assert!(
        watch
            .none_on("/state", Duration::from_millis(600))
            .await
            .is_none(),
        "nothing after the last state"
    );
    bridge.shutdown().await;
}
