//! Prometheus metrics, served on GET /metrics.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Labels of uplink counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UplinkLabels {
    /// lorawan, sigfox, ...
    pub network: &'static str,
    /// The codec name.
    pub codec: &'static str,
}

/// Labels of failed decodes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// lorawan, sigfox, ...
    pub network: &'static str,
    /// The codec name.
    pub codec: &'static str,
    /// The error kind (truncated, unknown_kind, ...).
    pub kind: &'static str,
}

/// Labels naming a network.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabels {
    /// lorawan, sigfox, ...
    pub network: &'static str,
}

/// Labels of messages that could not be read.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MalformedLabels {
    /// Where it came from: chirpstack, command, sigfox.
    pub source: &'static str,
    /// Why: topic, json, protobuf, payload.
    pub reason: &'static str,
}

/// Labels of ChirpStack events.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// up, join, status, ack, txack, log, location, integration, or other (a closed
    /// set: a topic cannot create series)
    pub event: &'static str,
}

/// Labels of command state changes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// lorawan, sigfox, ...
    pub network: &'static str,
    /// The new state.
    pub state: &'static str,
}

/// Labels of cellular requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CellularLabels {
    /// How the request ended: frames, empty, replaced, unauthorized, replayed,
    /// bad_request, closed (the connection went away while it was held).
    pub outcome: &'static str,
}

/// Labels of commands counted by who asked.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// The token's name, or `mqtt`.
    pub origin: String,
}

/// Labels of an SMS family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SmsLabels {
    /// What happened (see each family's help text).
    pub outcome: &'static str,
}

/// Every metric of the bridge.
pub struct Metrics {
    registry: Registry,
    /// Uplinks that reached the pipeline.
    pub uplinks_received: Family<NetworkLabels, Counter>,
    /// Uplinks decoded.
    pub uplinks_decoded: Family<UplinkLabels, Counter>,
    /// Uplinks that did not decode.
    pub uplinks_failed: Family<FailureLabels, Counter>,
    /// Uplinks dropped as duplicates.
    pub duplicates: Family<NetworkLabels, Counter>,
    /// ChirpStack events by type.
    pub chirpstack_events: Family<EventLabels, Counter>,
    /// Messages that could not be read at all.
    pub malformed: Family<MalformedLabels, Counter>,
    /// 1 while connected to the broker.
    pub mqtt_connected: Gauge,
    /// Times an HTTP connection had to wait because `http.max_connections` were open.
    pub http_connection_limit: Counter,
    /// HTTP handlers that panicked (answered 500; the process lives on).
    pub http_panics: Counter,
    /// Connections to the broker after the first.
    pub mqtt_reconnects: Counter,
    /// From receiving an uplink to handing its telemetry to the MQTT client.
    pub ingest_latency: Histogram,
    /// From receiving a class A uplink to handing the downlink for its window to the client.
    pub downlink_latency: Histogram,
    /// Command state changes, by network and new state.
    pub command_states: Family<CommandLabels, Counter>,
    /// From a command's creation to its final state (executed, rejected, expired, ...).
    pub command_duration: Histogram,
    /// Transactions that stored new commands, each one fsync; creations arriving
    /// together share one (see `SqliteStore`).
    pub creation_commits: Counter,
    /// Cellular requests, by how they ended.
    pub cellular_requests: Family<CellularLabels, Counter>,
    /// Cellular requests held now.
    pub cellular_held: Gauge,
    /// Cellular connections open now.
    pub cellular_connections: Gauge,
    /// SMPP binds, by outcome.
    pub sms_bind_attempts: Family<SmsLabels, Counter>,
    /// Whether the SMPP bind is up (1) or not (0).
    pub sms_bound: Gauge,
    /// BIDIR windows left empty although a command was queued: the device's daily
    /// Sigfox downlink quota was used up.
    pub sigfox_quota_exhausted: Counter,
    /// Whether the command store answered its last probe (each `/metrics` scrape probes it).
    pub store_up: Gauge,
    /// Commands created, by origin (token name or `mqtt`).
    pub commands_by_origin: Family<OriginLabels, Counter>,
    /// submit_sm PDUs, by outcome.
    pub sms_submit_pdus: Family<SmsLabels, Counter>,
    /// Messages sent to devices, by kind (frames, wake).
    pub sms_sent: Family<SmsLabels, Counter>,
    /// Messages from the SMSC (device requests and receipts), by outcome.
    pub sms_received: Family<SmsLabels, Counter>,
    /// SMS held back by a daily cap, by cap (device, total).
    pub sms_capped: Family<SmsLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds of the uplink → downlink histogram's buckets, in ms.
pub const DOWNLINK_BUCKETS_MS: [f64; 22] = [
    0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0,
    90.0, 100.0, 250.0, 1000.0, 5000.0,
];

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("longproto");
        let m = Metrics {
            registry: Registry::default(),
            uplinks_received: Family::default(),
            uplinks_decoded: Family::default(),
            uplinks_failed: Family::default(),
            duplicates: Family::default(),
            chirpstack_events: Family::default(),
            malformed: Family::default(),
            mqtt_connected: Gauge::default(),
            http_connection_limit: Counter::default(),
            http_panics: Counter::default(),
            mqtt_reconnects: Counter::default(),
            // 100 µs .. ~0.6 s in steps of 25 %, fine enough to read a p99 against 5 ms
            ingest_latency: Histogram::new(exponential_buckets(0.000_1, 1.25, 40)),
            // bounds an operator alerts on: 5 ms (the bridge's own budget) and 90 ms (the
            // latest a command/down still rides the window on ChirpStack's defaults)
            downlink_latency: Histogram::new(DOWNLINK_BUCKETS_MS.iter().map(|ms| ms / 1000.0)),
            command_states: Family::default(),
            // 100 ms .. ~1 day
            command_duration: Histogram::new(exponential_buckets(0.1, 2.0, 20)),
            creation_commits: Counter::default(),
            cellular_requests: Family::default(),
            cellular_held: Gauge::default(),
            cellular_connections: Gauge::default(),
            sms_bind_attempts: Family::default(),
            sms_bound: Gauge::default(),
            sms_submit_pdus: Family::default(),
            sms_sent: Family::default(),
            sms_received: Family::default(),
            sms_capped: Family::default(),
            sigfox_quota_exhausted: Counter::default(),
            store_up: Gauge::default(),
            commands_by_origin: Family::default(),
        };
        registry.register(
            "uplinks_received",
            "Uplinks that reached the pipeline",
            m.uplinks_received.clone(),
        );
        registry.register(
            "uplinks_decoded",
            "Uplinks decoded",
            m.uplinks_decoded.clone(),
        );
        registry.register(
            "uplinks_failed",
            "Uplinks that did not decode",
            m.uplinks_failed.clone(),
        );
        registry.register(
            "uplink_duplicates",
            "Uplinks dropped as duplicates",
            m.duplicates.clone(),
        );
        registry.register(
            "chirpstack_events",
            "ChirpStack integration events received",
            m.chirpstack_events.clone(),
        );
        registry.register(
            "malformed_messages",
            "Messages that could not be read",
            m.malformed.clone(),
        );
        registry.register(
            "http_connection_limit_reached",
            "HTTP connections that waited because http.max_connections were open",
            m.http_connection_limit.clone(),
        );
        registry.register(
            "http_handler_panics",
            "HTTP handlers that panicked (answered 500)",
            m.http_panics.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "Reconnections to the MQTT broker",
            m.mqtt_reconnects.clone(),
        );
        registry.register(
            "ingest_publish_latency_seconds",
            "From receiving an uplink to publishing its telemetry",
            m.ingest_latency.clone(),
        );
        registry.register(
            "uplink_downlink_latency_seconds",
            "From receiving a class A uplink to publishing the downlink for its receive window",
            m.downlink_latency.clone(),
        );
        registry.register(
            "command_states",
            "Command state changes, by network and new state",
            m.command_states.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "From a command's creation to its final state",
            m.command_duration.clone(),
        );
        registry.register(
            "command_creation_commits",
            "Store transactions (one fsync each) that created commands; creations arriving together share one",
            m.creation_commits.clone(),
        );
        registry.register(
            "cellular_requests",
            "Cellular requests, by how they ended",
            m.cellular_requests.clone(),
        );
        registry.register(
            "cellular_held_requests",
            "Cellular requests held now, waiting for a command",
            m.cellular_held.clone(),
        );
        registry.register(
            "cellular_connections",
            "Cellular connections open now",
            m.cellular_connections.clone(),
        );
        for (name, help, family) in [
            (
                "sms_binds",
                "SMPP binds to the SMSC, by outcome: bound, refused (credentials), failed",
                &m.sms_bind_attempts,
            ),
            (
                "sms_submit_pdus",
                "submit_sm PDUs, by outcome: sent, accepted, throttled, refused, lost (no response)",
                &m.sms_submit_pdus,
            ),
            (
                "sms_sent",
                "SMS accepted by the SMSC for devices, by kind: frames, wake",
                &m.sms_sent,
            ),
            (
                "sms_received",
                "Messages from the SMSC, by outcome: request, receipt, unknown_number, bad_mac, replayed, malformed, unmatched_receipt",
                &m.sms_received,
            ),
            (
                "sms_capped",
                "SMS held back by a daily cap, by cap: device, total",
                &m.sms_capped,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "sms_bound",
            "Whether the SMPP bind to the SMSC is up",
            m.sms_bound.clone(),
        );
        registry.register(
            "sigfox_quota_exhausted",
            "BIDIR windows left empty with a command queued, the device's daily downlink quota used up",
            m.sigfox_quota_exhausted.clone(),
        );
        registry.register(
            "commands_created",
            "Commands created, by origin: the API token's name, or mqtt",
            m.commands_by_origin.clone(),
        );
        registry.register(
            "store_up",
            "Whether the command store answered (probed at each scrape of /metrics)",
            m.store_up.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Creates at zero the series that alerts count with `increase()`: a series that
    /// first appears at 1 shows no increase, so the first expiry or cap would go unseen.
    pub fn start_at_zero(&self, networks: &[&'static str], command_states: &[&'static str]) {
        for &network in networks {
            for &state in command_states {
                let _series = self
                    .command_states
                    .get_or_create(&CommandLabels { network, state });
            }
        }
        for outcome in ["device", "total"] {
            let _series = self.sms_capped.get_or_create(&SmsLabels { outcome });
        }
    }

    /// Counts a command created by `origin` (a token's name, or `mqtt`).
    pub fn commands_created(&self, origin: &str) {
        self.commands_by_origin
            .get_or_create(&OriginLabels {
                origin: origin.to_owned(),
            })
            .inc();
    }

    /// Counts an SMPP bind attempt.
    pub fn sms_binds(&self, outcome: &'static str) {
        self.sms_bind_attempts
            .get_or_create(&SmsLabels { outcome })
            .inc();
        self.sms_bound.set((outcome == "bound") as i64);
    }

    /// Counts a submit_sm by outcome.
    pub fn sms_submits(&self, outcome: &'static str) {
        self.sms_submit_pdus
            .get_or_create(&SmsLabels { outcome })
            .inc();
    }

    /// Counts in an SMS family.
    pub fn sms(family: &Family<SmsLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&SmsLabels { outcome }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// At most one log line per `every` through `gate`: true when this one may be
    /// logged (input that anyone can send must not flood the journal).
    pub fn throttle(gate: &Mutex<Option<Instant>>, every: Duration) -> bool {
        let now = Instant::now();
        let mut last = gate.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|l| now.duration_since(l) < every) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Counts a cellular request by how it ended.
    pub fn cellular(&self, outcome: &'static str) {
        self.cellular_requests
            .get_or_create(&CellularLabels { outcome })
            .inc();
    }

    /// Counts a message that could not be read.
    pub fn malformed(&self, source: &'static str, reason: &'static str) {
        self.malformed
            .get_or_create(&MalformedLabels { source, reason })
            .inc();
    }
}
