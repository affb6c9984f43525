//! The running service: wires the MQTT connection, the adapters, the pipeline and the
//! HTTP server together, and shuts them down in order.
//!
//! Shutdown follows mini-redis: one signal (`stop`) that every task watches. The
//! connection stops forwarding new messages (the broker keeps them for the next
//! session), the dispatcher finishes what it has, then `offline` is published and the
//! client disconnects cleanly.
use crate::chirpstack::ChirpstackAdapter;
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
}

impl Bridge {
    /// Starts every part of the bridge. It connects to the broker in the background and
    /// keeps trying until it can.
    pub async fn start(settings: Settings) -> anyhow::Result<Bridge> {
        // ring as the TLS provider; a second call (several bridges in one test) is a no-op
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind(&settings.http.bind)
            .await
            .with_context(|| format!("http.bind: cannot listen on {}", settings.http.bind))?;
        let http_addr = listener.local_addr()?;

        let options = mqtt::options(&settings.mqtt)?;
        let (client, eventloop) = AsyncClient::new(options, 4096);
        let root = settings.mqtt.topic_root.clone();
        let publisher = Publisher::new(client.clone(), &root);
        let pipeline = Arc::new(Pipeline::new(
            publisher,
            CodecTable::new(&settings.codecs),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.state_min_interval_ms as u64),
        ));
        let chirpstack = Arc::new(ChirpstackAdapter::new(
            &settings.chirpstack,
            pipeline.clone(),
            metrics.clone(),
        ));

        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let connection_state = ConnectionState::default();
        let status_topic = mqtt::status_topic(&root);
        let connection = tokio::spawn(mqtt::run_connection(
            eventloop,
            client.clone(),
            vec![chirpstack.subscription()],
            status_topic.clone(),
            tx,
            stop_rx.clone(),
            connection_state.clone(),
            metrics.clone(),
            Duration::from_millis(settings.mqtt.reconnect_max_ms as u64),
        ));
        let dispatcher = tokio::spawn(dispatch(
            rx,
            stop_rx.clone(),
            client.clone(),
            chirpstack,
            metrics.clone(),
        ));
        let pacing = pipeline.clone();
        let mut pacing_stop = stop_rx.clone();
        let state_flusher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(pacing.state_flush_period());
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = pacing_stop.wait_for(|s| *s) => return,
                }
                pacing.flush_states(false).await;
            }
        });

        let app = http::router(
            AppState {
                metrics: metrics.clone(),
                mqtt: connection_state,
            },
            settings.metrics.enabled,
        );
        let mut http_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(http = %http_addr, mqtt = settings.mqtt.server, "longproto-bridge started");

        let mut stopping = stop_rx;
        let flush_pipeline = pipeline.clone();
        let task = tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            let orderly = async {
                let _ = dispatcher.await;
                let _ = state_flusher.await;
                flush_pipeline.flush_states(true).await;
                let _ = client
                    .publish(&status_topic, QoS::AtLeastOnce, true, "offline")
                    .await;
                let _ = client.disconnect().await;
                let _ = connection.await;
                let _ = server.await;
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

    /// Stops taking messages, finishes the ones in flight, publishes `offline`,
    /// disconnects, and returns when all of it is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        tracing::info!("longproto-bridge stopped");
    }
}

/// Hands each incoming message to its adapter, then acknowledges it to the broker, so a
/// message is only acknowledged once its results are queued for publishing. On stop it
/// closes the channel (the connection stops forwarding) and finishes what it holds.
async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    mut stop: watch::Receiver<bool>,
    client: AsyncClient,
    chirpstack: Arc<ChirpstackAdapter>,
    metrics: Arc<Metrics>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => {
                rx.close();
                break;
            }
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        handle(&incoming, &client, &chirpstack, &metrics).await;
    }
    // closed: what was already forwarded is finished; the rest stays with the broker
    while let Some(incoming) = rx.recv().await {
        handle(&incoming, &client, &chirpstack, &metrics).await;
    }
}

async fn handle(
    incoming: &Incoming,
    client: &AsyncClient,
    chirpstack: &ChirpstackAdapter,
    metrics: &Metrics,
) {
    let publish = &incoming.publish;
    if chirpstack.matches(&publish.topic) {
        chirpstack
            .handle(&publish.topic, &publish.payload, incoming.received)
            .await;
    } else {
        metrics.malformed("mqtt", "topic");
        tracing::warn!(
            topic = publish.topic,
            "message on a topic the bridge does not read"
        );
    }
    if let Err(e) = client.ack(publish).await {
        tracing::error!(error = %e, "acknowledging a message failed");
    }
}

/// Runs the service until SIGTERM or SIGINT; a second signal exits at once.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let bridge = Bridge::start(settings).await?;
    wait_for_signal().await?;
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
