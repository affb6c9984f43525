//! LoRaWAN devices behind a ChirpStack double that speaks ChirpStack v4's MQTT
//! integration: `up` events (with an `ack` event first when the previous downlink was
//! confirmed), `command/down` taken into the device's queue and sent in the receive
//! window after its next uplink (class A) or at once (class C), then `txack`.
use super::rfc3339;
use super::{Class, Fleet, Radio, SimDevice, Stats, lock, now_ms};
use base64::Engine;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Connects the ChirpStack double and starts taking `command/down`.
pub(super) fn start(
    fleet: Arc<Fleet>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> AsyncClient {
    let id = format!("longproto-fleet-chirpstack-{}", std::process::id());
    let (cs, mut eventloop) = super::mqtt_client(&fleet.targets, &id);
    let filter = format!(
        "application/{}/device/+/command/down",
        fleet.targets.application_id
    );
    let client = cs.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(down) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    let eui = down["devEui"].as_str().unwrap_or_default().to_owned();
                    let id = down["id"].as_str().unwrap_or_default().to_owned();
                    let confirmed = down["confirmed"].as_bool().unwrap_or(false);
                    let Ok(data) = B64.decode(down["data"].as_str().unwrap_or_default()) else {
                        continue;
                    };
                    let class_c = fleet.with(&eui, |d, _| {
                        d.queued_down.push_back((id, data, confirmed));
                        d.radio == Radio::Lorawan(Class::C)
                    });
                    if class_c == Some(true) {
                        window(&fleet, &client, &eui).await;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }));
    cs
}

/// The `deviceInfo` ChirpStack puts in every event.
pub fn device_info(fleet: &Fleet, d: &SimDevice) -> Value {
    let class = match d.radio {
        Radio::Lorawan(Class::C) => "CLASS_C",
        _ => "CLASS_A",
    };
    json!({"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "fleet", "applicationId": fleet.targets.application_id,
        "applicationName": "simulated fleet", "deviceProfileId": "fleet-profile",
        "deviceProfileName": "longproto vehicle", "deviceName": format!("vehicle-{}", &d.id[10..]),
        "devEui": d.id, "deviceClassEnabled": class, "tags": {"fleet": "simulated"}})
}

async fn publish(fleet: &Fleet, cs: &AsyncClient, eui: &str, event: &str, body: Value) {
    let topic = format!(
        "application/{}/device/{eui}/event/{event}",
        fleet.targets.application_id
    );
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    if cs
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .is_err()
    {
        lock(&fleet.stats).errors += 1;
    }
}

/// A receive window: ChirpStack sends the first queued downlink and reports `txack`.
async fn window(fleet: &Fleet, cs: &AsyncClient, eui: &str) {
    let sent = fleet.with(eui, |d, stats: &mut Stats| {
        let (id, data, confirmed) = d.queued_down.pop_front()?;
        d.receive(&data, now_ms(), stats);
        if confirmed {
            d.unacked_down = Some(id.clone());
        }
        Some((id, device_info(fleet, d)))
    });
    if let Some(Some((id, info))) = sent {
        let body = json!({"downlinkId": 1, "time": rfc3339(now_ms() as i64), "deviceInfo": info,
            "queueItemId": id, "fCntDown": 1, "gatewayId": "0016c001f153a14c",
            "txInfo": {"frequency": 869525000, "power": 14}});
        publish(fleet, cs, eui, "txack", body).await;
    }
}

/// An uplink of the device, as ChirpStack publishes it after deduplication; its receive
/// window follows after the configured delay.
pub(super) async fn uplink(fleet: &Arc<Fleet>, cs: &AsyncClient, eui: &str, now: u64) {
    let Some((up, ack, joined)) = fleet.with(eui, |d, stats| {
        let joined = d.f_cnt == 0;
        let status = d.vehicle.status();
        let mut buf = [0u8; 242];
        // DR5 in EU868: 242 bytes
        let n = d.node.build_uplink(Some(status), now, &mut buf, 242);
        d.f_cnt += 1;
        stats.lorawan_uplinks += 1;
        let info = device_info(fleet, d);
        let ack = d.unacked_down.take().map(|id| {
            json!({"deduplicationId": format!("{eui}-{}-ack", d.f_cnt), "time": rfc3339(now as i64),
                "deviceInfo": info, "queueItemId": id, "acknowledged": true, "fCntDown": 1})
        });
        let up = json!({
            "deduplicationId": format!("{eui}-{}", d.f_cnt), "time": rfc3339(now as i64),
            "deviceInfo": info, "devAddr": format!("01{}", &d.id[10..]), "adr": true, "dr": 5,
            "fCnt": d.f_cnt, "fPort": device_node::TELEMETRY_FPORT, "confirmed": false,
            "data": B64.encode(&buf[..n]),
            "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": d.f_cnt, "rssi": -92, "snr": 7.5,
                "channel": 0, "context": "AAAAAA==", "crcStatus": "CRC_OK"}],
            "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000,
                "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
            "regionConfigId": "eu868"
        });
        (up, ack, joined.then_some(info))
    }) else {
        return;
    };
    if let Some(info) = joined {
        let join = json!({"deduplicationId": format!("{eui}-join"), "time": rfc3339(now as i64),
            "deviceInfo": info, "devAddr": format!("01{}", &eui[10..]), "regionConfigId": "eu868"});
        publish(fleet, cs, eui, "join", join).await;
    }
    if let Some(ack) = ack {
        publish(fleet, cs, eui, "ack", ack).await;
    }
    publish(fleet, cs, eui, "up", up).await;
    let (fleet, cs, eui) = (fleet.clone(), cs.clone(), eui.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(fleet.targets.rx_delay).await;
        window(&fleet, &cs, &eui).await;
    });
}
