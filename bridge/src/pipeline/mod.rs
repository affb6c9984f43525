//! The one uplink pipeline every network adapter feeds:
//! decode (the device's codec) → publish telemetry and the retained state → (then the
//! scheduler fills the receive window the uplink opened).
pub mod codec;
pub mod state;

use crate::clock::now_rfc3339;
use crate::device::DeviceId;
use crate::metrics::{FailureLabels, Metrics, NetworkLabels, UplinkLabels};
use crate::mqtt::Publisher;
use crate::pipeline::codec::{Codec, Record};
use crate::pipeline::state::DeviceState;
use gateway_config::CodecSettings;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an adapter knows of one uplink.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// The device.
    pub device: DeviceId,
    /// The application payload.
    pub payload: Vec<u8>,
    /// LoRaWAN fPort; `None` on Sigfox.
    pub fport: Option<u8>,
    /// When the bridge received it (for latency).
    pub received: Instant,
    /// A key the network repeats for the same uplink (ChirpStack's deduplicationId,
    /// Sigfox's device + seqNumber): a second uplink with the same key is a duplicate.
    pub dedup_key: Option<String>,
    /// What selects the codec besides the device itself.
    pub codec_keys: CodecKeys,
    /// Network metadata, published as `meta`: a JSON object, serialised by the adapter
    /// straight from the network's event.
    pub meta: Box<RawValue>,
    /// Network facts kept in the device state.
    pub network_facts: Map<String, Value>,
}

/// A telemetry message, serialised from borrowed parts (the field order is the
/// contract's: device, network, received_at, codec, fport, records, raw_hex, meta, error).
#[derive(serde::Serialize)]
struct TelemetryOut<'a> {
    device: &'a str,
    network: &'static str,
    received_at: &'a str,
    codec: &'static str,
    fport: Option<u8>,
    records: &'a [Record],
    raw_hex: &'a str,
    meta: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut<'a>>,
}

/// The `error` of a payload that did not decode.
#[derive(serde::Serialize)]
struct ErrorOut<'a> {
    kind: &'static str,
    message: &'a str,
}

/// The keys `[codecs]` can match, besides the device.
#[derive(Debug, Clone, Default)]
pub struct CodecKeys {
    /// ChirpStack application id.
    pub application: Option<String>,
    /// ChirpStack device profile id.
    pub device_profile: Option<String>,
    /// Sigfox device type id.
    pub sigfox_device_type: Option<String>,
}

/// What the pipeline made of an uplink.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The codec used.
    pub codec: Codec,
    /// The device's acknowledgement records (`kind` `ack`) among the decoded ones: what
    /// the command queue needs; the rest went to telemetry and the state.
    pub acks: Vec<Value>,
}

/// The codec of each device, from `[codecs]`.
#[derive(Debug, Clone)]
pub struct CodecTable {
    default: Codec,
    device: HashMap<String, Codec>,
    device_profile: HashMap<String, Codec>,
    application: HashMap<String, Codec>,
    sigfox_device_type: HashMap<String, Codec>,
}

impl CodecTable {
    /// Builds the table; the configuration was validated, so every name is known.
    pub fn new(c: &CodecSettings) -> Self {
        let map = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), Codec::from_name(v)?)))
                .collect()
        };
        CodecTable {
            default: Codec::from_name(&c.default).unwrap_or(Codec::LongprotoV1),
            device: map(&c.device),
            device_profile: c
                .device_profile
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), Codec::from_name(v)?)))
                .collect(),
            application: c
                .application
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), Codec::from_name(v)?)))
                .collect(),
            sigfox_device_type: map(&c.sigfox_device_type),
        }
    }

    /// The most specific match: device, device profile or Sigfox device type,
    /// application, then the default.
    pub fn codec_for(&self, device: &DeviceId, keys: &CodecKeys) -> Codec {
        let by = |table: &HashMap<String, Codec>, key: &Option<String>| {
            key.as_ref().and_then(|k| table.get(k)).copied()
        };
        self.device
            .get(&device.id)
            .copied()
            .or_else(|| by(&self.device_profile, &keys.device_profile))
            .or_else(|| {
                by(
                    &self.sigfox_device_type,
                    &keys
                        .sigfox_device_type
                        .as_ref()
                        .map(|s| s.to_ascii_lowercase()),
                )
            })
            .or_else(|| by(&self.application, &keys.application))
            .unwrap_or(self.default)
    }
}

/// Remembers recent dedup keys, forgetting the oldest past a capacity.
///
/// A key is kept as its 64-bit fingerprint (SipHash): no copy of the key and a compact
/// table. Two different keys held at once share a fingerprint with probability about
/// capacity / 2^64 per key (5 × 10⁻¹⁵ at 100,000), which would drop an uplink as a
/// duplicate; that is far below any loss on the radio.
#[derive(Debug)]
pub(crate) struct RecentKeys {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

fn fingerprint(key: &(impl std::hash::Hash + ?Sized)) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // fixed keys: the same key has the same fingerprint for the life of the process
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

impl RecentKeys {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentKeys {
            set: HashSet::with_capacity(capacity.min(1 << 17)),
            order: VecDeque::with_capacity(capacity.min(1 << 17)),
            capacity,
        }
    }

    /// Whether the key is remembered.
    pub(crate) fn contains(&self, key: &(impl std::hash::Hash + ?Sized)) -> bool {
        self.set.contains(&fingerprint(key))
    }

    /// True the first time a key is seen.
    pub(crate) fn first_time(&mut self, key: &(impl std::hash::Hash + ?Sized)) -> bool {
        let fp = fingerprint(key);
        if !self.set.insert(fp) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(fp);
        true
    }
}

/// How many recent dedup keys are remembered: several minutes of a large fleet.
const DEDUP_CAPACITY: usize = 100_000;
/// At most one decode-failure log line per device per this long.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The shared uplink pipeline.
pub struct Pipeline {
    publisher: Publisher,
    codecs: CodecTable,
    metrics: Arc<Metrics>,
    states: Mutex<HashMap<DeviceId, DeviceState>>,
    recent: Mutex<RecentKeys>,
    failure_logged: Mutex<HashMap<DeviceId, Instant>>,
    state_pacing: Mutex<StatePacing>,
}

/// Paces retained-state publishes: at once after a quiet spell, then at most once per
/// interval during a burst, and always the last one.
#[derive(Debug, Default)]
struct StatePacing {
    interval: Duration,
    last: HashMap<DeviceId, Instant>,
    pending: HashSet<DeviceId>,
}

impl StatePacing {
    /// Whether to publish now; otherwise the device is left pending for
    /// [`Pipeline::flush_states`].
    fn publish_now(&mut self, device: &DeviceId, now: Instant) -> bool {
        let due = self
            .last
            .get(device)
            .is_none_or(|t| now.duration_since(*t) >= self.interval);
        if due {
            self.last.insert(device.clone(), now);
            self.pending.remove(device);
        } else if !self.pending.contains(device) {
            self.pending.insert(device.clone());
        }
        due
    }

    /// Pending devices whose interval has passed (all of them when `all`).
    fn due(&mut self, now: Instant, all: bool) -> Vec<DeviceId> {
        let interval = self.interval;
        let last = &self.last;
        let due: Vec<DeviceId> = self
            .pending
            .iter()
            .filter(|d| {
                all || last
                    .get(*d)
                    .is_none_or(|t| now.duration_since(*t) >= interval)
            })
            .cloned()
            .collect();
        for d in &due {
            self.pending.remove(d);
            self.last.insert(d.clone(), now);
        }
        // forget devices quiet for a while, so the map does not grow with the fleet's history
        if self.last.len() > 10_000 {
            self.last.retain(|_, t| now.duration_since(*t) < interval);
        }
        due
    }
}

/// A value as pre-serialised JSON for [`Uplink::meta`]; `{}` if it cannot be written.
pub fn raw_json(v: &impl serde::Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(v)
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("`{}` is JSON"))
}

impl Pipeline {
    /// A pipeline publishing through `publisher`; retained states are paced to one per
    /// device per `state_interval` during bursts.
    pub fn new(
        publisher: Publisher,
        codecs: CodecTable,
        metrics: Arc<Metrics>,
        state_interval: Duration,
    ) -> Self {
        Pipeline {
            publisher,
            codecs,
            metrics,
            states: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentKeys::new(DEDUP_CAPACITY)),
            failure_logged: Mutex::new(HashMap::new()),
            state_pacing: Mutex::new(StatePacing {
                interval: state_interval,
                ..Default::default()
            }),
        }
    }

    /// How often [`Pipeline::flush_states`] should run: often, so that each flush is a
    /// small slice of the fleet and never a burst that queues telemetry behind it.
    pub fn state_flush_period(&self) -> Duration {
        (lock(&self.state_pacing).interval / 4)
            .clamp(Duration::from_millis(1), Duration::from_millis(20))
    }

    /// Publishes the states left pending by pacing (all of them when `all`, at shutdown).
    pub async fn flush_states(&self, all: bool) {
        let due = lock(&self.state_pacing).due(Instant::now(), all);
        for device in due {
            self.publish_state(&device).await;
        }
    }

    async fn publish_state(&self, device: &DeviceId) {
        let Some(state) = lock(&self.states).get(device).map(|s| s.to_bytes(device)) else {
            return;
        };
        let topic = format!("{}/state", self.publisher.device_topic(device));
        self.publisher.publish(&topic, state, true).await;
    }

    /// Publishes a device's state now, or leaves it to the pacing.
    async fn state_changed(&self, device: &DeviceId) {
        let now = lock(&self.state_pacing).publish_now(device, Instant::now());
        if now {
            self.publish_state(device).await;
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The publisher, for adapters that publish network-specific topics.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Decodes an uplink and publishes its telemetry and the device's state. Returns
    /// `None` for a duplicate, which is published once only.
    pub async fn ingest(&self, up: Uplink) -> Option<Ingested> {
        let network = up.device.network.name();
        self.metrics
            .uplinks_received
            .get_or_create(&NetworkLabels { network })
            .inc();
        if let Some(key) = &up.dedup_key {
            let first = lock(&self.recent).first_time(&(&up.device, key));
            if !first {
                self.metrics
                    .duplicates
                    .get_or_create(&NetworkLabels { network })
                    .inc();
                tracing::debug!(device = %up.device, key, "duplicate uplink dropped");
                return None;
            }
        }
        let codec = self.codecs.codec_for(&up.device, &up.codec_keys);
        let received_at = now_rfc3339();
        let (records, error) = match codec.decode_records(&up.payload, up.fport) {
            Ok(records) => {
                let labels = UplinkLabels {
                    network,
                    codec: codec.name(),
                };
                self.metrics.uplinks_decoded.get_or_create(&labels).inc();
                (records, None)
            }
            Err(e) => {
                let labels = FailureLabels {
                    network,
                    codec: codec.name(),
                    kind: e.kind,
                };
                self.metrics.uplinks_failed.get_or_create(&labels).inc();
                self.log_failure(&up.device, codec, &e.message, &up.payload);
                (Vec::new(), Some(e))
            }
        };
        // serialised from borrowed parts: no Value tree, no copy of the records
        let device = up.device.to_string();
        let raw_hex = hex::encode(&up.payload);
        let telemetry = TelemetryOut {
            device: &device,
            network,
            received_at: &received_at,
            codec: codec.name(),
            fport: up.fport,
            records: &records,
            raw_hex: &raw_hex,
            meta: &up.meta,
            error: error.as_ref().map(|e| ErrorOut {
                kind: e.kind,
                message: &e.message,
            }),
        };
        let base = self.publisher.device_topic(&up.device);
        let mut bytes = Vec::with_capacity(768);
        if serde_json::to_writer(&mut bytes, &telemetry).is_err() {
            bytes.clear();
        }
        self.publisher
            .publish(&format!("{base}/telemetry"), bytes, false)
            .await;
        self.metrics
            .ingest_latency
            .observe(up.received.elapsed().as_secs_f64());

        let acks = records
            .iter()
            .filter(|r| r.is_ack())
            .map(Record::to_json)
            .collect();
        {
            let mut states = lock(&self.states);
            let st = states.entry(up.device.clone()).or_default();
            st.last_seen = Some(received_at);
            st.merge_records(&records);
            st.merge_network(up.network_facts);
        }
        self.state_changed(&up.device).await;
        Some(Ingested { codec, acks })
    }

    /// Updates a device's network facts (join, status events) and republishes its state.
    pub async fn update_network_facts(&self, device: &DeviceId, facts: Map<String, Value>) {
        {
            let mut states = lock(&self.states);
            let st = states.entry(device.clone()).or_default();
            st.last_seen = Some(now_rfc3339());
            st.merge_network(facts);
        }
        self.state_changed(device).await;
    }

    /// Sets how many commands of a device are on their way, and republishes its state.
    pub async fn set_pending(&self, device: &DeviceId, pending: u64) {
        {
            let mut states = lock(&self.states);
            let st = states.entry(device.clone()).or_default();
            if st.pending_commands == pending {
                return;
            }
            st.pending_commands = pending;
        }
        self.state_changed(device).await;
    }

    /// The last known state of a device, if the bridge has heard of it.
    pub fn state(&self, device: &DeviceId) -> Option<Value> {
        lock(&self.states).get(device).map(|s| s.to_json(device))
    }

    fn log_failure(&self, device: &DeviceId, codec: Codec, message: &str, payload: &[u8]) {
        let now = Instant::now();
        let mut logged = lock(&self.failure_logged);
        let due = logged
            .get(device)
            .is_none_or(|t| now.duration_since(*t) >= FAILURE_LOG_INTERVAL);
        if due {
            logged.insert(device.clone(), now);
            tracing::warn!(device = %device, codec = %codec, error = message, raw_hex = %hex::encode(payload),
                "uplink does not decode (published with its error; logged at most once a minute per device)");
        }
    }
}

/// Locks a mutex, going on with the data if a holder panicked: the maps hold plain
/// data that a panic cannot leave half-written in a way that matters here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_pacing_publishes_first_and_last() {
        let d = DeviceId::parse("lorawan", "0000000000000001").unwrap();
        let ms = Duration::from_millis;
        let mut p = StatePacing {
            interval: ms(100),
            ..Default::default()
        };
        let t0 = Instant::now();
        assert!(p.publish_now(&d, t0), "the first change goes out at once");
        assert!(!p.publish_now(&d, t0 + ms(10)));
        assert!(!p.publish_now(&d, t0 + ms(20)));
        assert!(
            p.due(t0 + ms(50), false).is_empty(),
            "not before the interval"
        );
        assert_eq!(
            p.due(t0 + ms(100), false),
            vec![d.clone()],
            "the last one, once"
        );
        assert!(p.due(t0 + ms(300), false).is_empty());
        assert!(
            p.publish_now(&d, t0 + ms(400)),
            "after a quiet spell: at once"
        );
        assert!(!p.publish_now(&d, t0 + ms(401)));
        assert_eq!(p.due(t0 + ms(402), true), vec![d], "shutdown flushes all");
        let mut zero = StatePacing::default();
        let s = DeviceId::parse("sigfox", "1").unwrap();
        assert!(zero.publish_now(&s, t0));
        assert!(zero.publish_now(&s, t0), "interval 0: every time");
    }

    #[test]
    fn recent_keys_forget_the_oldest() {
        let mut r = RecentKeys::new(2);
        assert!(r.first_time("a"));
        assert!(!r.first_time("a"));
        assert!(r.first_time("b"));
        assert!(r.first_time("c"));
        assert!(r.first_time("a"), "a was forgotten when c came");
        assert!(!r.first_time("c"));
    }

    #[test]
    fn codec_precedence() {
        let mut c = CodecSettings {
            default: "raw".into(),
            ..Default::default()
        };
        c.device
            .insert("70B3D57ED0051A2B".into(), "cayenne-lpp".into());
        c.device_profile
            .insert("prof".into(), "longproto-v1".into());
        c.application.insert("app".into(), "cayenne-lpp".into());
        c.sigfox_device_type
            .insert("TYPE".into(), "cayenne-lpp".into());
        let t = CodecTable::new(&c);
        let lw = |id: &str| DeviceId::parse("lorawan", id).unwrap();
        let keys = |a: Option<&str>, p: Option<&str>| CodecKeys {
            application: a.map(Into::into),
            device_profile: p.map(Into::into),
            sigfox_device_type: None,
        };
        assert_eq!(
            t.codec_for(&lw("70b3d57ed0051a2b"), &keys(Some("app"), Some("prof"))),
            Codec::CayenneLpp
        );
        assert_eq!(
            t.codec_for(&lw("0000000000000001"), &keys(Some("app"), Some("prof"))),
            Codec::LongprotoV1
        );
        assert_eq!(
            t.codec_for(&lw("0000000000000001"), &keys(Some("app"), None)),
            Codec::CayenneLpp
        );
        assert_eq!(
            t.codec_for(&lw("0000000000000001"), &keys(None, None)),
            Codec::Raw
        );
        let sf = DeviceId::parse("sigfox", "1a2b").unwrap();
        let k = CodecKeys {
            sigfox_device_type: Some("type".into()),
            ..Default::default()
        };
        assert_eq!(t.codec_for(&sf, &k), Codec::CayenneLpp);
    }
}
