//! LoRaWAN devices behind a ChirpStack double that speaks ChirpStack v4's MQTT
//! integration: `up` events (with an `ack` event first when the previous downlink was
//! confirmed), `command/down` taken into the device's queue and sent in the receive
//! window after its next uplink (class A) or at once (class C), then `txack`.
use super::events::{self, Up};
use super::rfc3339;
use super::{Class, Fleet, Radio, SimDevice, Stats, lock, now_ms};
use base64::Engine;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
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
    events::Device {
        application_id: &fleet.targets.application_id,
        name: &format!("vehicle-{}", &d.id[10..]),
        dev_eui: &d.id,
        class,
    }
    .info()
}

async fn publish(fleet: &Fleet, cs: &AsyncClient, eui: &str, event: &str, body: Value) {
    let topic = events::topic(&fleet.targets.application_id, eui, event);
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
        let body = events::txack(info, &id, &rfc3339(now_ms() as i64));
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
        let time = rfc3339(now as i64);
        let ack = d.unacked_down.take().map(|id| {
            let dedup = format!("{eui}-{}-ack", d.f_cnt);
            events::ack(info.clone(), &dedup, &time, &id, true)
        });
        let up = Up {
            deduplication_id: &format!("{eui}-{}", d.f_cnt),
            time: &time,
            dev_addr: &format!("01{}", &d.id[10..]),
            dr: 5,
            f_cnt: d.f_cnt,
            f_port: device_node::TELEMETRY_FPORT,
            data: &buf[..n],
            radio: events::Radio::default(),
        }
        .to_json(info.clone());
        (up, ack, joined.then_some(info))
    }) else {
        return;
    };
    if let Some(info) = joined {
        let join = events::join(
            info,
            &format!("{eui}-join"),
            &rfc3339(now as i64),
            &format!("01{}", &eui[10..]),
        );
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
