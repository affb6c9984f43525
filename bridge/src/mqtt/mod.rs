//! The bridge's one MQTT connection: options from `[mqtt]`, the connection loop
//! (re-subscribe on every ConnAck, capped backoff, retained `online`/`offline`), and the
//! publisher every part of the bridge uses.
use crate::device::DeviceId;
use crate::metrics::Metrics;
use anyhow::{Context, bail};
use gateway_config::MqttSettings;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The retained status topic: `{root}/bridge/status`.
pub fn status_topic(root: &str) -> String {
    format!("{root}/bridge/status")
}

/// Counts the QoS 1 messages handed to the client and the broker's PUBACKs: when they
/// are level, everything handed over so far is with the broker (see
/// `Commands::confirm_events`, and "Events owed to MQTT" in docs/architecture.md).
#[derive(Debug, Default)]
pub struct Ledger {
    handed: AtomicU64,
    acknowledged: AtomicU64,
}

impl Ledger {
    /// Whether the broker has acknowledged every message handed over before this call.
    pub fn level(&self) -> bool {
        // `handed` first: a message handed over meanwhile can only make this say no
        let handed = self.handed.load(Ordering::Acquire);
        self.acknowledged.load(Ordering::Acquire) >= handed
    }

    /// Waits up to `limit` for the broker to acknowledge everything handed over; whether
    /// it did. At shutdown, before DISCONNECT: mosquitto drops the PUBACK of a PUBLISH
    /// that arrives together with the DISCONNECT.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.level() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// (handed over, acknowledged) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.handed.load(Ordering::Acquire),
            self.acknowledged.load(Ordering::Acquire),
        )
    }

    fn handed(&self) {
        self.handed.fetch_add(1, Ordering::AcqRel);
    }

    fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::AcqRel);
    }
}

/// Publishes JSON with QoS 1. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    root: Arc<str>,
    ledger: Arc<Ledger>,
}

impl Publisher {
    /// A publisher under `root`.
    pub fn new(client: AsyncClient, root: &str) -> Self {
        Publisher {
            client,
            root: root.into(),
            ledger: Arc::default(),
        }
    }

    /// Messages handed over and acknowledged.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// `{root}/{network}/{id}`.
    pub fn device_topic(&self, device: &DeviceId) -> String {
        format!("{}/{}/{}", self.root, device.network, device.id)
    }

    /// `{root}/batches/{batch_id}`: a batch's progress (the id is a checked id).
    pub fn batch_topic(&self, batch_id: &str) -> String {
        format!("{}/batches/{}", self.root, batch_id)
    }

    /// Publishes a JSON value with QoS 1. The client queues it while the broker is away;
    /// it only fails once the connection task is gone (shutdown), which is logged.
    pub async fn publish_json(&self, topic: &str, value: &Value, retain: bool) {
        let payload = serde_json::to_vec(value).unwrap_or_default();
        self.publish(topic, payload, retain).await;
    }

    /// Publishes raw bytes with QoS 1.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        if let Err(e) = self.try_publish(topic, payload, retain).await {
            tracing::error!(topic, error = %e, "publish failed");
        }
    }

    /// Publishes raw bytes with QoS 1, saying why when the client refuses it: a topic
    /// it cannot publish to, or a connection task that has stopped (shutdown).
    pub async fn try_publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(format!("{topic:?} is not a topic one can publish to"));
        }
        // counted before it can be acknowledged, and taken back if the client refuses it
        self.ledger.handed();
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| {
                self.ledger.handed.fetch_sub(1, Ordering::AcqRel);
                format!("the MQTT connection task has stopped: {e}")
            })
    }
}

/// The largest packet MQTT 3.1.1 can encode: 268,435,455 bytes of remaining length
/// after a fixed header of at most 5 bytes.
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Builds the client options from `[mqtt]`.
pub fn options(s: &MqttSettings) -> anyhow::Result<MqttOptions> {
    let mut o = connection_options(s, &s.client_id)?;
    o.set_clean_session(s.clean_session);
    o.set_manual_acks(true);
    o.set_inflight(s.max_inflight.max(1));
    o.set_last_will(LastWill::new(
        status_topic(&s.topic_root),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    Ok(o)
}

/// The broker, credentials, TLS, keepalive and packet sizes of `[mqtt]`, for a
/// connection with this client id (the bridge's own, or a short-lived helper's).
pub fn connection_options(s: &MqttSettings, client_id: &str) -> anyhow::Result<MqttOptions> {
    let url = url::Url::parse(&s.server)
        .with_context(|| format!("mqtt.server: \"{}\" is not a URL", s.server))?;
    let tls = matches!(url.scheme(), "mqtts" | "ssl");
    let host = url
        .host_str()
        .context("mqtt.server has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(s.keepalive_s.max(5) as u64));
    // Incoming: the largest packet MQTT can carry, so that no message can break the
    // connection (rumqttc drops the connection on a packet over its limit, and the
    // broker redelivers it to the persistent session for ever); the dispatcher drops a
    // payload over `max_message_bytes` itself (see docs/architecture.md).
    o.set_max_packet_size(MQTT_MAX_PACKET, 256 * 1024);
    if !s.username.is_empty() {
        o.set_credentials(s.username.clone(), s.password.clone());
    }
    if tls {
        o.set_transport(Transport::Tls(tls_config(s)?));
    }
    Ok(o)
}

/// Sends each packet as it is written (`TCP_NODELAY`): a `command/down` must not wait
/// behind Nagle's algorithm for the acknowledgement of the previous packet (rumqttc
/// leaves Nagle on by default).
pub fn no_delay(eventloop: &mut EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
}

/// The CA certificates a TLS client of section `section` (`mqtt`, `sms`) trusts: its
/// `ca_cert` (PEM), or the system's when that is empty; `scheme` names the URL scheme
/// that asked for TLS in the error.
pub fn trusted_roots(
    section: &str,
    scheme: &str,
    ca_cert: &str,
) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_cert.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            bail!(
                "{section}.server is {scheme}:// but no system CA certificates were found; set {section}.ca_cert"
            );
        }
    } else {
        let pem = std::fs::read(ca_cert)
            .with_context(|| format!("{section}.ca_cert: cannot read \"{ca_cert}\""))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.with_context(|| format!("{section}.ca_cert: not a PEM certificate"))?)
                .with_context(|| format!("{section}.ca_cert"))?;
        }
        if roots.is_empty() {
            bail!("{section}.ca_cert: \"{ca_cert}\" holds no PEM certificate");
        }
    }
    Ok(roots)
}

fn tls_config(s: &MqttSettings) -> anyhow::Result<TlsConfiguration> {
    let read = |key: &str, path: &str| {
        std::fs::read(path).with_context(|| format!("mqtt.{key}: cannot read \"{path}\""))
    };
    let roots = trusted_roots("mqtt", "mqtts", &s.ca_cert)?;
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = if s.tls_cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        let cert_pem = read("tls_cert", &s.tls_cert)?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .context("mqtt.tls_cert: not a PEM certificate")?;
        let key_pem = read("tls_key", &s.tls_key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .context("mqtt.tls_key: not a PEM key")?
            .context("mqtt.tls_key: holds no private key")?;
        builder
            .with_client_auth_cert(certs, key)
            .context("mqtt.tls_cert/tls_key")?
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// An incoming message, with the instant it arrived.
pub struct Incoming {
    /// The message; acknowledge it with [`AsyncClient::ack`] once handled.
    pub publish: Publish,
    /// When the connection task received it.
    pub received: Instant,
}

/// Looks at each message as it arrives, before it queues for the dispatcher; true when it
/// started work of its own. Time-critical work only (see `ChirpstackAdapter::early`).
pub type EarlyHook = Arc<dyn Fn(&Publish, Instant) -> bool + Send + Sync>;

/// Shared view of the connection, for /healthz.
#[derive(Clone, Default)]
pub struct ConnectionState(Arc<AtomicBool>);

impl ConnectionState {
    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Drives the connection until the broker closes it after the client's disconnect:
/// forwards incoming
/// messages to `tx`, re-subscribes and publishes `online` on every ConnAck, and
/// reconnects with a backoff from 50 ms doubling to `max_backoff`.
///
/// `eventloop.poll()` is never cancelled (it is not cancel-safe: an interrupted flush
/// would write a packet twice). Shutdown reaches this loop through the channel instead:
/// once the dispatcher closes it, messages still arriving are neither forwarded nor
/// acknowledged, and the broker redelivers them to the next session.
#[allow(clippy::too_many_arguments)]
pub async fn run_connection(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Vec<String>,
    status_topic: String,
    tx: mpsc::UnboundedSender<Incoming>,
    early: EarlyHook,
    stopping: CancellationToken,
    state: ConnectionState,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
    ledger: Arc<Ledger>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connections = 0u64;
    let mut disconnecting = false;
    let mut slice = crate::timeslice::TimeSlice::default();
    loop {
        slice.tick().await;
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connections += 1;
                if connections > 1 {
                    metrics.mqtt_reconnects.inc();
                }
                state.0.store(true, Ordering::Relaxed);
                metrics.mqtt_connected.set(1);
                backoff = Duration::from_millis(50);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                // Re-subscribe every time: the broker may have lost the session.
                for topic in &subscriptions {
                    if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                        tracing::error!(topic, error = %e, "subscribe failed");
                    }
                }
                ledger.handed();
                if client
                    .try_publish(&status_topic, QoS::AtLeastOnce, true, "online")
                    .is_err()
                {
                    ledger.handed.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = Instant::now();
                if early(&publish, received) {
                    // it spawned work (a receive window): let it start before reading on
                    tokio::task::yield_now().await;
                }
                if let Err(unsent) = tx.send(Incoming { publish, received }) {
                    tracing::debug!(
                        topic = unsent.0.publish.topic,
                        "shutting down: left for redelivery"
                    );
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => ledger.acknowledged(),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing a socket
                // with unread data sends RST, and an RST makes the broker drop what it has
                // not read yet, such as the last acknowledgements.
                disconnecting = true;
                state.0.store(false, Ordering::Relaxed);
                metrics.mqtt_connected.set(0);
            }
            Ok(_) => {}
            Err(_) if disconnecting => {
                tracing::info!("disconnected from the MQTT broker");
                return;
            }
            Err(e) => {
                if state.0.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                } else {
                    tracing::debug!(error = %e, ?backoff, "MQTT connection attempt failed");
                }
                metrics.mqtt_connected.set(0);
                if stopping.is_cancelled() {
                    // shutting down and the broker is gone: nothing left to deliver
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
