//! After a stop that left command events unpublished: the retained states of their
//! devices are corrected.
use crate::commands::Commands;
use crate::device::DeviceId;
use crate::mqtt;
use crate::pipeline::Pipeline;
use rumqttc::{AsyncClient, QoS};
use std::time::Duration;

/// After events were published again at start, the retained states of their devices
/// still count the commands as they were then: each one the broker retains is published
/// again with the store's `pending_commands`, everything else in it as it was (this
/// process knows no records of the device yet). A short-lived connection of its own
/// (`{client_id}-restore`) reads them; devices that have sent an uplink since are left
/// alone, their state is already current.
pub async fn correct_retained_states(
    settings: &gateway_config::MqttSettings,
    pipeline: &Pipeline,
    commands: &Commands,
    devices: Vec<DeviceId>,
) {
    if devices.is_empty() {
        return;
    }
    let publisher = pipeline.publisher();
    let topics: Vec<String> = devices
        .iter()
        .map(|d| format!("{}/state", publisher.device_topic(d)))
        .collect();
    let id = format!("{}-restore", settings.client_id);
    let Ok(mut o) = mqtt::connection_options(settings, &id) else {
        return;
    };
    o.set_clean_session(true);
    // room for every SUBSCRIBE at once (up to 409,600 devices)
    let (client, mut eventloop) = AsyncClient::new(o, 4096);
    // a hundred topics a SUBSCRIBE, well within any packet size limit
    let chunks: Vec<Vec<rumqttc::SubscribeFilter>> = topics
        .chunks(100)
        .map(|c| {
            c.iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
                .collect()
        })
        .collect();
    let mut retained = std::collections::HashMap::new();
    let mut acked = 0;
    let read = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    acked = 0;
                    for c in &chunks {
                        let _ = client.try_subscribe_many(c.clone());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) if p.retain => {
                    retained.insert(p.topic.clone(), p.payload.clone());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))
                    if acked + 1 < chunks.len() =>
                {
                    acked += 1;
                }
                // retained messages come before the last SUBACK; a short wait covers a
                // broker that sends them after
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = tokio::time::timeout(Duration::from_millis(300), async {
                        while let Ok(ev) = eventloop.poll().await {
                            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                                if p.retain {
                                    retained.insert(p.topic.clone(), p.payload.clone());
                                }
                            }
                        }
                    })
                    .await;
                    return;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_err()
    {
        tracing::warn!("could not read the retained states to correct their pending commands");
    }
    let _ = client.try_disconnect();
    for (device, topic) in devices.iter().zip(&topics) {
        let Some(payload) = retained.get(topic) else {
            continue;
        };
        let Ok(mut state) = serde_json::from_slice::<serde_json::Value>(payload) else {
            continue;
        };
        if pipeline.state(device).is_some() {
            continue; // published since the start: current already
        }
        let Some(pending) = commands.pending_of(device).await else {
            continue;
        };
        if state["pending_commands"] != pending {
            state["pending_commands"] = pending.into();
            let bytes = serde_json::to_vec(&state).unwrap_or_default();
            publisher.publish(topic, bytes, true).await;
        }
    }
}
