//! The running service: wires the MQTT connection, the adapters, the pipeline, the
//! command queue and the HTTP server together, and shuts them down in order.
//!
//! Shutdown follows mini-redis: one signal (`stop`) that every task watches. The
//! dispatcher closes its channel (the connection stops forwarding, and the broker keeps
//! what is left for the next session), finishes what it holds, pending states are
//! flushed, then `offline` is published and the client disconnects cleanly.
use crate::chirpstack::ChirpstackAdapter;
use crate::clock::{Clock, SystemClock};
use crate::commands::store::CommandStore;
use crate::commands::{Commands, Store};
use crate::device::DeviceId;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::mqtt::{self, ConnectionState, Incoming, Publisher};
use crate::pipeline::{CodecTable, Pipeline};
use anyhow::Context;
use gateway_config::Settings;
use rumqttc::{AsyncClient, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a clean shutdown may take before the bridge stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running bridge.
pub struct Bridge {
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    pipeline: Arc<Pipeline>,
    commands: Arc<Commands>,
    mqtt: ConnectionState,
}

/// What the dispatcher routes incoming messages to.
struct Routes {
    chirpstack: Arc<ChirpstackAdapter>,
    commands: Arc<Commands>,
    metrics: Arc<Metrics>,
    root: String,
    /// `mqtt.max_message_bytes`
    max_message_bytes: usize,
    /// When an oversized message was last logged.
    oversized_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Bridge {
    /// Starts every part of the bridge on the system clock.
    pub async fn start(settings: Settings) -> anyhow::Result<Bridge> {
        Self::start_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Starts every part of the bridge; `clock` decides expiry and quotas (tests move it
    /// by hand). It connects to the broker in the background and keeps trying until it
    /// can.
    pub async fn start_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Bridge> {
        // ring as the TLS provider; a second call (several bridges in one test) is a no-op
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let store = Store::open_counting(&settings.storage.url, metrics.creation_commits.clone())
            .await
            .with_context(|| format!("storage.url: cannot open {}", settings.storage.url))?;
        let listener = tokio::net::TcpListener::bind(&settings.http.bind)
            .await
            .with_context(|| format!("http.bind: cannot listen on {}", settings.http.bind))?;
        let http_addr = listener.local_addr()?;

        let options = mqtt::options(&settings.mqtt)?;
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        mqtt::no_delay(&mut eventloop);
        let root = settings.mqtt.topic_root.clone();
        let publisher = Publisher::new(client.clone(), &root);
        let pipeline = Arc::new(Pipeline::new(
            publisher.clone(),
            CodecTable::new(&settings.codecs),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.state_min_interval_ms as u64),
        ));
        let commands = Commands::new(
            store,
            clock,
            publisher,
            pipeline.clone(),
            settings.commands.clone(),
        )
        .await
        .context("reading the command queue")?;
        let chirpstack = Arc::new(ChirpstackAdapter::new(
            &settings.chirpstack,
            pipeline.clone(),
            commands.clone(),
            metrics.clone(),
        ));
        let routes = Arc::new(Routes {
            chirpstack: chirpstack.clone(),
            commands: commands.clone(),
            metrics: metrics.clone(),
            root: root.clone(),
            max_message_bytes: settings.mqtt.max_message_bytes as usize,
            oversized_logged: std::sync::Mutex::new(None),
        });

        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let connection_state = ConnectionState::default();
        let status_topic = mqtt::status_topic(&root);
        let connection = tokio::spawn(mqtt::run_connection(
            eventloop,
            client.clone(),
            vec![chirpstack.subscription(), format!("{root}/+/+/command")],
            status_topic.clone(),
            tx,
            {
                let cs = chirpstack.clone();
                let max = settings.mqtt.max_message_bytes as usize;
                Arc::new(move |p: &rumqttc::Publish, received| {
                    p.payload.len() <= max && cs.early(&p.topic, &p.payload, received)
                })
            },
            stop_rx.clone(),
            connection_state.clone(),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.reconnect_max_ms as u64),
            pipeline.publisher().ledger().clone(),
        ));
        let dispatcher = tokio::spawn(dispatch(rx, stop_rx.clone(), client.clone(), routes));
        let state_flusher = spawn_every(pipeline.state_flush_period(), stop_rx.clone(), {
            let p = pipeline.clone();
            move || {
                let p = p.clone();
                async move { p.flush_states(false).await }
            }
        });
        // events a stop left unpublished, then every 2 s: how far the broker holds them all
        tokio::spawn({
            let (c, p, m) = (commands.clone(), pipeline.clone(), settings.mqtt.clone());
            async move {
                let devices = c.republish_owed_events().await;
                correct_retained_states(&m, &p, &c, devices).await;
            }
        });
        let confirmer = spawn_every(Duration::from_secs(2), stop_rx.clone(), {
            let c = commands.clone();
            move || {
                let c = c.clone();
                async move { c.confirm_events(false).await }
            }
        });
        let handover_timeout_ms = settings.chirpstack.handover_timeout_s as i64 * 1000;
        let expiry = spawn_every(Duration::from_secs(1), stop_rx.clone(), {
            let (c, cs) = (commands.clone(), chirpstack.clone());
            move || {
                let (c, cs) = (c.clone(), cs.clone());
                async move {
                    c.expire_due().await;
                    for device in c.unconfirmed_handovers(handover_timeout_ms).await {
                        cs.command_created(&device).await; // class B/C: at once
                    }
                    c.store().maintain().await;
                }
            }
        });

        let app = http::router(AppState::new(
            &settings,
            metrics.clone(),
            connection_state.clone(),
            pipeline.clone(),
            commands.clone(),
            chirpstack.clone(),
        ));
        let mut http_stop = stop_rx.clone();
        let limits = http::ConnectionLimits::new(&settings.http);
        let server = tokio::spawn(http::serve(
            listener,
            app,
            limits,
            metrics.clone(),
            async move {
                let _ = http_stop.wait_for(|s| *s).await;
            },
        ));
        tracing::info!(http = %http_addr, mqtt = settings.mqtt.server, storage = settings.storage.url, "longproto-bridge started");

        let mut stopping = stop_rx;
        let flush_pipeline = pipeline.clone();
        let windows = chirpstack.clone();
        let queue = commands.clone();
        let task = tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            let orderly = async {
                let _ = server.await;
                let _ = dispatcher.await;
                windows.settle().await;
                // every window handed over is in the store, its events published
                queue.settled().await;
                let _ = state_flusher.await;
                let _ = expiry.await;
                flush_pipeline.flush_states(true).await;
                let _ = confirmer.await;
                let publisher = flush_pipeline.publisher();
                let _ = publisher
                    .try_publish(&status_topic, b"offline".to_vec(), true)
                    .await;
                // every message acknowledged before DISCONNECT; then, if the broker holds
                // every event, nothing is owed at the next start
                publisher.ledger().settle(Duration::from_secs(2)).await;
                queue.confirm_events(true).await;
                let _ = client.disconnect().await;
                let _ = connection.await;
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, orderly).await.is_err() {
                tracing::warn!(
                    "shutdown did not finish within {SHUTDOWN_GRACE:?}; stopping anyway"
                );
            }
        });
        Ok(Bridge {
            http_addr,
            stop,
            task,
            metrics,
            pipeline,
            commands,
            mqtt: connection_state,
        })
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The command queue.
    pub fn commands(&self) -> &Arc<Commands> {
        &self.commands
    }

    /// Whether the broker connection and the store are up.
    pub async fn healthy(&self) -> bool {
        self.mqtt.is_connected() && self.commands.store().ping().await
    }

    /// Stops taking messages and requests, finishes the ones in flight, publishes
    /// `offline`, disconnects, and returns when all of it is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        tracing::info!("longproto-bridge stopped");
    }
}

/// Runs `job` every `period` until stop.
fn spawn_every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, job: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            job().await;
        }
    })
}

/// Hands each incoming message to its handler, then acknowledges it to the broker, so a
/// message is only acknowledged once its results are queued for publishing (a command
/// request: once it is stored). On stop it closes the channel (the connection stops
/// forwarding) and finishes what it holds.
///
/// One message at a time: MQTT 3.1.1 requires PUBACKs in the order the messages arrived
/// (MQTT-4.6.0-2). mosquitto tolerates other orders, rumqttd closes the connection.
/// Command requests are the exception to "one at a time": storing one waits for an
/// fsync, and an uplink queued behind a burst of them would miss its receive window. So
/// they go to the command lane ([`command_lane`]) and the dispatcher goes on; their
/// acknowledgements wait in order ([`Ack`]), holding back the ones behind them but not
/// the work.
async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    mut stop: watch::Receiver<bool>,
    client: AsyncClient,
    routes: Arc<Routes>,
) {
    let (lane, lane_rx) = mpsc::unbounded_channel();
    let lane_task = tokio::spawn(command_lane(routes.clone(), lane_rx));
    let mut acks = std::collections::VecDeque::new();
    let mut slice = crate::timeslice::TimeSlice::default();
    loop {
        slice.tick().await;
        let waiting = matches!(acks.front(), Some(Ack::After(..)));
        let incoming = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => {
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
    After(tokio::sync::oneshot::Receiver<()>, rumqttc::Publish),
}

/// Resolves once the first acknowledgement waiting on the command lane is due, and
/// makes it [`Ack::Now`].
async fn front_stored(acks: &mut std::collections::VecDeque<Ack>) {
    if let Some(Ack::After(handled, _)) = acks.front_mut() {
        let _ = handled.await;
    }
    if let Some(Ack::After(_, p)) = acks.pop_front() {
        acks.push_front(Ack::Now(p));
    }
}

/// Sends the acknowledgements that are due, in order, up to the first that is not.
async fn ack_ready(client: &AsyncClient, acks: &mut std::collections::VecDeque<Ack>) {
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

/// A command request over MQTT, for the command lane.
struct CommandMessage {
    device: Result<DeviceId, (String, String)>,
    payload: bytes::Bytes,
    handled: tokio::sync::oneshot::Sender<()>,
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
                topic = crate::device::excerpt(&publish.topic).as_ref(),
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
    } else if let Some(device) = command_topic_device(&routes.root, &publish.topic) {
        let (handled, done) = tokio::sync::oneshot::channel();
        let message = CommandMessage {
            device: device.map_err(|(n, i)| (n.to_owned(), i.to_owned())),
            payload: publish.payload.clone(),
            handled,
        };
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

/// Handles MQTT command requests in the order they arrived. Whatever queued while the
/// last ones were stored is submitted together, in order, so that they share one commit
/// (see [`Commands::create`]); each is then finished in order.
async fn command_lane(routes: Arc<Routes>, mut rx: mpsc::UnboundedReceiver<CommandMessage>) {
    // as many as the store commits in one transaction
    const LANE_BATCH: usize = 64;
    while let Some(first) = rx.recv().await {
        let batch = crate::commands::take_batch(first, &mut rx, LANE_BATCH);
        let submitted: Vec<_> = batch
            .into_iter()
            .map(|m| (command_request(&routes, m.device, &m.payload), m.handled))
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
    routes: &'r Routes,
    device: Result<DeviceId, (String, String)>,
    payload: &[u8],
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'r>> {
    let device = match device {
        Ok(d) => d,
        Err((network, id)) => {
            routes.metrics.malformed("command", "device");
            tracing::warn!(network, id, "command request for an invalid device");
            return Box::pin(async {});
        }
    };
    let body = match crate::command_json::read_body(payload) {
        Ok(v) => v,
        Err(reason) => {
            routes.metrics.malformed("command", "json");
            return Box::pin(async move {
                routes
                    .commands
                    .announce_refused(&device, None, &reason)
                    .await;
            });
        }
    };
    let id = body.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    let created = routes.commands.create(&device, &body);
    Box::pin(async move {
        match created.await {
            Ok((_, true)) => routes.chirpstack.command_created(&device).await,
            Ok((_, false)) => {}
            Err(e) => {
                routes.metrics.malformed("command", "request");
                routes
                    .commands
                    .announce_refused(&device, id.as_deref(), &e.to_string())
                    .await;
            }
        }
    })
}

/// After events were published again at start, the retained states of their devices
/// still count the commands as they were then: each one the broker retains is published
/// again with the store's `pending_commands`, everything else in it as it was (this
/// process knows no records of the device yet). A short-lived connection of its own
/// (`{client_id}-restore`) reads them; devices that have sent an uplink since are left
/// alone, their state is already current.
async fn correct_retained_states(
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

/// Runs the service until SIGTERM or SIGINT; a second signal exits at once.
///
/// Under systemd (`Type=notify`) it reports `READY=1` once the broker and the store are
/// up, pets the watchdog while the store answers, and reports `STOPPING=1` on the way
/// out.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let bridge = Arc::new(Bridge::start(settings).await?);
    let health = {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            while !bridge.healthy().await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            crate::notify::notify("READY=1");
            tracing::info!("ready: connected to the broker, store open");
            let Some(interval) = crate::notify::watchdog_interval() else {
                return;
            };
            loop {
                tokio::time::sleep(interval / 2).await;
                // the broker may come and go (the bridge reconnects by itself); a store
                // that stops answering is what a restart can mend
                if bridge.commands().store().ping().await {
                    crate::notify::notify("WATCHDOG=1");
                }
            }
        })
    };
    wait_for_signal().await?;
    crate::notify::notify("STOPPING=1");
    health.abort();
    let _ = health.await;
    let bridge = Arc::into_inner(bridge).context("the bridge is still shared")?;
    tracing::info!("stopping: finishing messages in flight (a second signal exits at once)");
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    });
    bridge.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
