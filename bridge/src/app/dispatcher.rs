//! The in-order dispatcher of MQTT messages: each to its handler (ChirpStack's events to
//! the ChirpStack adapter, command requests to the command lane), then its PUBACK.
use crate::commands::Commands;
use crate::commands::mqtt_api::{self, CommandMessage};
use crate::device::excerpt;
use crate::metrics::Metrics;
use crate::mqtt::Incoming;
use crate::networks::chirpstack::ChirpstackAdapter;
use rumqttc::AsyncClient;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the dispatcher routes incoming messages to.
pub struct Routes {
    /// ChirpStack's events.
    pub chirpstack: Arc<ChirpstackAdapter>,
    /// Command requests on `{root}/{network}/{id}/command`.
    pub commands: Arc<Commands>,
    /// Counts what is dropped.
    pub metrics: Arc<Metrics>,
    /// `mqtt.topic_root`.
    pub root: String,
    /// `mqtt.max_message_bytes`.
    pub max_message_bytes: usize,
    /// When an oversized message was last logged.
    pub oversized_logged: Mutex<Option<Instant>>,
}

/// Hands each incoming message to its handler, then acknowledges it to the broker, so a
/// message is only acknowledged once its results are queued for publishing (a command
/// request: once it is stored). On stop it closes the channel (the connection stops
/// forwarding) and finishes what it holds.
///
/// One message at a time, except command requests, which go to the command lane
/// ([`mqtt_api::command_lane`]) while their acknowledgements wait in order ([`Ack`]).
/// Why: docs/architecture.md, "One dispatcher, in order".
pub async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    stop: CancellationToken,
    client: AsyncClient,
    routes: Arc<Routes>,
) {
    let (lane, lane_rx) = mpsc::unbounded_channel();
    let lane_task = tokio::spawn(mqtt_api::command_lane(
        routes.commands.clone(),
        routes.metrics.clone(),
        lane_rx,
    ));
    let mut acks = VecDeque::new();
    let mut slice = crate::timeslice::TimeSlice::default();
    loop {
        slice.tick().await;
        let waiting = matches!(acks.front(), Some(Ack::After(..)));
        let incoming = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                rx.close();
                break;
            }
            _ = front_stored(&mut acks), if waiting => None,
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => break,
            },
        };
        if let Some(incoming) = incoming {
            acks.push_back(handle(incoming, &routes, &lane).await);
        }
        ack_ready(&client, &mut acks).await;
    }
    // closed: what was already forwarded is finished; the rest stays with the broker
    while let Some(incoming) = rx.recv().await {
        acks.push_back(handle(incoming, &routes, &lane).await);
    }
    drop(lane);
    let _ = lane_task.await;
    ack_ready(&client, &mut acks).await;
}

/// An acknowledgement waiting its turn.
enum Ack {
    /// Due as soon as the ones before it are sent.
    Now(rumqttc::Publish),
    /// Due once the command lane has handled the request (stored it, or refused it).
    After(oneshot::Receiver<()>, rumqttc::Publish),
}

/// Resolves once the first acknowledgement waiting on the command lane is due, and
/// makes it [`Ack::Now`].
async fn front_stored(acks: &mut VecDeque<Ack>) {
    if let Some(Ack::After(handled, _)) = acks.front_mut() {
        let _ = handled.await;
    }
    if let Some(Ack::After(_, p)) = acks.pop_front() {
        acks.push_front(Ack::Now(p));
    }
}

/// Sends the acknowledgements that are due, in order, up to the first that is not.
async fn ack_ready(client: &AsyncClient, acks: &mut VecDeque<Ack>) {
    use tokio::sync::oneshot::error::TryRecvError;
    while let Some(front) = acks.front_mut() {
        if let Ack::After(handled, _) = front {
            // `Closed`: the lane dropped it without an answer (it stopped); no reason
            // to hold the others back
            if let Err(TryRecvError::Empty) = handled.try_recv() {
                return;
            }
        }
        let (Some(Ack::Now(p)) | Some(Ack::After(_, p))) = acks.pop_front() else {
            return;
        };
        if let Err(e) = client.ack(&p).await {
            tracing::error!(error = %e, "acknowledging a message failed");
        }
    }
}

async fn handle(
    incoming: Incoming,
    routes: &Routes,
    lane: &mpsc::UnboundedSender<CommandMessage>,
) -> Ack {
    let publish = incoming.publish;
    if publish.payload.len() > routes.max_message_bytes {
        // acknowledged and dropped: the broker would otherwise redeliver it for ever
        routes.metrics.malformed("mqtt", "too_large");
        if Metrics::throttle(&routes.oversized_logged, Duration::from_secs(10)) {
            tracing::warn!(
                topic = excerpt(&publish.topic).as_ref(),
                bytes = publish.payload.len(),
                limit = routes.max_message_bytes,
                "message over mqtt.max_message_bytes dropped (logged at most every 10 s)"
            );
        }
        return Ack::Now(publish);
    }
    if routes.chirpstack.matches(&publish.topic) {
        routes
            .chirpstack
            .handle(&publish.topic, &publish.payload, incoming.received)
            .await;
    } else if let Some(device) = mqtt_api::command_topic_device(&routes.root, &publish.topic) {
        let (message, done) = CommandMessage::new(device, publish.payload.clone());
        if lane.send(message).is_ok() {
            return Ack::After(done, publish);
        }
    } else {
        routes.metrics.malformed("mqtt", "topic");
        tracing::warn!(
            topic = publish.topic,
            "message on a topic the bridge does not read"
        );
    }
    Ack::Now(publish)
}
