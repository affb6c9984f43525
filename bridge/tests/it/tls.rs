//! mqtts:// through a real mosquitto with a TLS listener and a CA made for the test.
use crate::common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_speaks_mqtts_with_a_configured_ca() {
    let pki = Pki::new();
    let broker = Mosquitto::start_with_listener(&pki.listener());
    let mut s = settings(&broker, "bridge-tls");
    s.mqtt.server = format!("mqtts://localhost:{}", broker.port);
    s.mqtt.ca_cert = pki.path("ca.pem");
    let bridge = longproto_bridge::app::Bridge::start(s)
        .await
        .expect("starts");
    let started = std::time::Instant::now();
    while !bridge.healthy().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no TLS connection within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = api(
        bridge.http_addr(),
        "POST",
        "/v1/devices/lorawan/70b3d57ed0051a2b/commands",
        Some(&json!({"command": "lock"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let broker = Mosquitto::start_with_listener(&pki.listener());
    let mut s = settings(&broker, "bridge-tls-wrong");
    s.mqtt.server = format!("mqtts://localhost:{}", broker.port);
    s.mqtt.ca_cert = other.path("ca.pem");
    let bridge = longproto_bridge::app::Bridge::start(s)
        .await
        .expect("starts, and keeps trying");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !bridge.healthy().await,
        "connected to a broker it cannot trust"
    );
    let (status, _, _) = http(bridge.http_addr(), "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 503);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_is_a_clear_start_error() {
    let broker = Mosquitto::start();
    let mut s = settings(&broker, "bridge-tls-missing");
    s.mqtt.server = format!("mqtts://localhost:{}", broker.port);
    s.mqtt.ca_cert = "/nonexistent/ca.pem".into();
    let err = longproto_bridge::app::Bridge::start(s)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        format!("{err:#}").contains("mqtt.ca_cert: cannot read \"/nonexistent/ca.pem\""),
        "{err:#}"
    );
}
