//! The MQTT command API: a request on `{root}/{network}/{id}/command` takes the same
//! body as the HTTP POST; a refusal is published on the device's `command-events`.
use crate::commands::Commands;
use crate::device::DeviceId;
use crate::metrics::Metrics;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The subscription filter of the command topic under `root`.
pub fn subscription(root: &str) -> String {
    format!("{root}/+/+/command")
}

/// A command request over MQTT, for the command lane.
pub struct CommandMessage {
    device: Result<DeviceId, (String, String)>,
    payload: bytes::Bytes,
    handled: oneshot::Sender<()>,
}

impl CommandMessage {
    /// A request for the device of a command topic (or the invalid network and id it
    /// names), and what resolves once the lane has handled it (stored it, or refused it).
    pub fn new(
        device: Result<DeviceId, (&str, &str)>,
        payload: bytes::Bytes,
    ) -> (Self, oneshot::Receiver<()>) {
        let (handled, done) = oneshot::channel();
        let device = device.map_err(|(n, i)| (n.to_owned(), i.to_owned()));
        (
            CommandMessage {
                device,
                payload,
                handled,
            },
            done,
        )
    }
}

/// Handles MQTT command requests in the order they arrived. Whatever queued while the
/// last ones were stored is submitted together, in order, so that they share one commit
/// (see [`Commands::create`]); each is then finished in order.
pub async fn command_lane(
    commands: Arc<Commands>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<CommandMessage>,
) {
    // as many as the store commits in one transaction
    const LANE_BATCH: usize = 64;
    while let Some(first) = rx.recv().await {
        let batch = crate::commands::take_batch(first, &mut rx, LANE_BATCH);
        let submitted: Vec<_> = batch
            .into_iter()
            .map(|m| {
                (
                    command_request(&commands, &metrics, m.device, &m.payload),
                    m.handled,
                )
            })
            .collect();
        for (request, handled) in submitted {
            request.await;
            let _ = handled.send(());
        }
    }
}

/// The device of `{root}/{network}/{id}/command`, when the topic is one.
pub fn command_topic_device<'t>(
    root: &str,
    topic: &'t str,
) -> Option<Result<DeviceId, (&'t str, &'t str)>> {
    let rest = topic.strip_prefix(root)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (network, id, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if leaf != "command" || parts.next().is_some() {
        return None;
    }
    Some(DeviceId::parse(network, id).map_err(|_| (network, id)))
}

/// A command request over MQTT: the same body as the HTTP POST; a refusal is published
/// on the device's command-events topic. The request is submitted to the store when
/// this is called; the future finishes it.
fn command_request<'r>(
    commands: &'r Commands,
    metrics: &'r Metrics,
    device: Result<DeviceId, (String, String)>,
    payload: &[u8],
) -> Pin<Box<dyn Future<Output = ()> + Send + 'r>> {
    let device = match device {
        Ok(d) => d,
        Err((network, id)) => {
            metrics.malformed("command", "device");
            tracing::warn!(network, id, "command request for an invalid device");
            return Box::pin(async {});
        }
    };
    let body = match crate::commands::json::read_body(payload) {
        Ok(v) => v,
        Err(reason) => {
            metrics.malformed("command", "json");
            return Box::pin(async move {
                commands.announce_refused(&device, None, &reason).await;
            });
        }
    };
    let id = body.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    let created = commands.create(&device, &body, crate::commands::model::Origin::Mqtt(None));
    Box::pin(async move {
        match created.await {
            Ok(_) => {}
            Err(e) => {
                metrics.malformed("command", "request");
                commands
                    .announce_refused(&device, id.as_deref(), &e.to_string())
                    .await;
            }
        }
    })
}
