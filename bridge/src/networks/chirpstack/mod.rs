//! The ChirpStack v4 adapter: reads the MQTT integration's events (JSON or Protobuf,
//! with `chirpstack_api`'s own types) and turns them into pipeline input.
pub mod uplink_json;

use crate::commands::model::CommandState;
use crate::commands::store::DeviceFacts;
use crate::commands::{Commands, DownlinkPlan, ReceiveWindow};
use crate::device::{DeviceClass, DeviceId, Network};
use crate::metrics::{EventLabels, Metrics};
use crate::mqtt::Publisher;
use crate::operators::Operators;
use crate::pipeline::{CodecKeys, Pipeline, RecentKeys, Uplink, lock};
use chirpstack_api::integration as ev;
use gateway_config::region::Region;
use gateway_config::{ChirpstackSettings, Marshaler};
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A topic template in ChirpStack's syntax: levels that are literals or `{{variables}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Var(String),
}

impl TopicTemplate {
    /// Parses a template; the configuration check has already vetted it.
    pub fn parse(template: &str) -> Self {
        let levels = template
            .split('/')
            .map(
                |l| match l.strip_prefix("{{").and_then(|l| l.strip_suffix("}}")) {
                    Some(var) => Level::Var(var.trim().to_owned()),
                    None => Level::Literal(l.to_owned()),
                },
            )
            .collect();
        TopicTemplate { levels }
    }

    /// The subscription filter: every variable becomes `+`.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Var(_) => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The variables of a topic, or `None` when it does not match.
    pub fn capture<'t>(&self, topic: &'t str) -> Option<HashMap<&str, &'t str>> {
        let parts: Vec<&str> = topic.split('/').collect();
        if parts.len() != self.levels.len() {
            return None;
        }
        let mut vars = HashMap::new();
        for (level, part) in self.levels.iter().zip(parts) {
            match level {
                Level::Literal(l) if l == part => {}
                Level::Literal(_) => return None,
                Level::Var(v) => {
                    vars.insert(v.as_str(), part);
                }
            }
        }
        Some(vars)
    }

    /// The topic with the variables filled in (missing ones stay empty).
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Var(v) => vars.iter().find(|(k, _)| k == v).map_or("", |(_, val)| val),
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Whether `s` can stand as one level of a topic the bridge publishes: not empty, and
/// no `/`, `+`, `#` or NUL (a level from input could otherwise name another topic or a
/// wildcard the broker refuses).
pub fn valid_topic_level(s: &str) -> bool {
    !s.is_empty() && !s.bytes().any(|b| matches!(b, b'/' | b'+' | b'#' | 0))
}

/// The event types the bridge reads; anything else is counted as `other`, so a topic
/// cannot create metric series.
const KNOWN_EVENTS: [&str; 9] = [
    "up",
    "join",
    "status",
    "ack",
    "txack",
    "log",
    "location",
    "integration",
    "other",
];

/// A ChirpStack integration event.
#[derive(Debug, Clone)]
pub enum Event {
    /// `up`
    Up(ev::UplinkEvent),
    /// `join`
    Join(ev::JoinEvent),
    /// `status`
    Status(ev::StatusEvent),
    /// `ack`
    Ack(ev::AckEvent),
    /// `txack`
    TxAck(ev::TxAckEvent),
    /// `log`
    Log(ev::LogEvent),
    /// `location`
    Location(ev::LocationEvent),
}

impl Event {
    /// The event's device info.
    pub fn device_info(&self) -> Option<&ev::DeviceInfo> {
        match self {
            Event::Up(e) => e.device_info.as_ref(),
            Event::Join(e) => e.device_info.as_ref(),
            Event::Status(e) => e.device_info.as_ref(),
            Event::Ack(e) => e.device_info.as_ref(),
            Event::TxAck(e) => e.device_info.as_ref(),
            Event::Log(e) => e.device_info.as_ref(),
            Event::Location(e) => e.device_info.as_ref(),
        }
    }
}

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// An event type the bridge does not read (e.g. `integration`).
    #[error("event type \"{0}\" is not read by the bridge")]
    Unhandled(String),
    /// The JSON does not parse as that event.
    #[error("not a valid JSON {event} event: {message}")]
    Json {
        /// The event type.
        event: String,
        /// serde's message, with line and column.
        message: String,
    },
    /// The bytes do not parse as that Protobuf event.
    #[error("not a valid Protobuf {event} event: {message}")]
    Protobuf {
        /// The event type.
        event: String,
        /// prost's message.
        message: String,
    },
}

impl EventError {
    /// A short reason for the malformed-message counter.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Unhandled(_) => "event_type",
            EventError::Json { .. } => "json",
            EventError::Protobuf { .. } => "protobuf",
        }
    }
}

fn is_json(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses an event of type `event` with the configured marshaler (`auto`: a payload
/// starting with `{` is JSON, anything else Protobuf).
pub fn parse_event(event: &str, payload: &[u8], marshaler: Marshaler) -> Result<Event, EventError> {
    let json = match marshaler {
        Marshaler::Json => true,
        Marshaler::Protobuf => false,
        Marshaler::Auto => is_json(payload),
    };
    macro_rules! read {
        ($variant:ident, $ty:ty) => {
            if json {
                serde_json::from_slice::<$ty>(payload)
                    .map(Event::$variant)
                    .map_err(|e| EventError::Json {
                        event: event.to_owned(),
                        message: name_the_number(payload, e.to_string()),
                    })
            } else {
                <$ty>::decode(payload)
                    .map(Event::$variant)
                    .map_err(|e| EventError::Protobuf {
                        event: event.to_owned(),
                        message: e.to_string(),
                    })
            }
        };
    }
    if json && event == "up" {
        // the common case without pbjson's slow number handling; anything unusual falls
        // through to chirpstack_api's own reader below
        if let Some(up) = crate::networks::chirpstack::uplink_json::read_up(payload) {
            return Ok(Event::Up(up));
        }
    }
    match event {
        "up" => read!(Up, ev::UplinkEvent),
        "join" => read!(Join, ev::JoinEvent),
        "status" => read!(Status, ev::StatusEvent),
        "ack" => read!(Ack, ev::AckEvent),
        "txack" => read!(TxAck, ev::TxAckEvent),
        "log" => read!(Log, ev::LogEvent),
        "location" => read!(Location, ev::LocationEvent),
        other => Err(EventError::Unhandled(other.to_owned())),
    }
}

/// The whole-number fields of ChirpStack's events and the range of each (protobuf's
/// uint32 or int32).
const WHOLE_NUMBERS: [(&str, i64, i64); 16] = [
    ("fPort", 0, u32::MAX as i64),
    ("fCnt", 0, u32::MAX as i64),
    ("fCntDown", 0, u32::MAX as i64),
    ("dr", 0, u32::MAX as i64),
    ("downlinkId", 0, u32::MAX as i64),
    ("uplinkId", 0, u32::MAX as i64),
    ("frequency", 0, u32::MAX as i64),
    ("bandwidth", 0, u32::MAX as i64),
    ("spreadingFactor", 0, u32::MAX as i64),
    ("preamble", 0, u32::MAX as i64),
    ("channel", 0, u32::MAX as i64),
    ("rfChain", 0, u32::MAX as i64),
    ("board", 0, u32::MAX as i64),
    ("antenna", 0, u32::MAX as i64),
    ("power", i32::MIN as i64, i32::MAX as i64),
    ("rssi", i32::MIN as i64, i32::MAX as i64),
];

/// pbjson reads numbers through an untagged enum, whose errors ("data did not match any
/// variant of untagged enum …", "invalid digit found in string") name no field: this
/// finds the whole-number field whose value is not one (or is out of its range) and says
/// so, keeping serde's position. Runs only for an event that did not read.
fn name_the_number(payload: &[u8], message: String) -> String {
    fn find(v: &Value, path: &str) -> Option<String> {
        match v {
            Value::Object(m) => m.iter().find_map(|(k, v)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(&(_, lo, hi)) = WHOLE_NUMBERS.iter().find(|(n, _, _)| n == k) {
                    let n = match v {
                        Value::Number(n) => n.as_i64().filter(|_| n.is_i64() || n.is_u64()),
                        Value::String(t) => t.trim().parse::<i64>().ok(),
                        _ => return find(v, &here),
                    };
                    if !n.is_some_and(|n| (lo..=hi).contains(&n)) {
                        return Some(format!(
                            "{here}: {} is not a whole number in {lo}..={hi}",
                            crate::device::excerpt(&v.to_string())
                        ));
                    }
                    return None;
                }
                find(v, &here)
            }),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| find(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return message;
    };
    match (find(&value, ""), message.rfind(" at line ")) {
        (Some(named), Some(at)) => format!("{named}{}", &message[at..]),
        (Some(named), None) => named,
        (None, _) => message,
    }
}

fn timestamp(t: &Option<chirpstack_api::pbjson_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null)
}

fn device_class(class: i32) -> DeviceClass {
    use chirpstack_api::common::DeviceClass as Class;
    match Class::try_from(class) {
        Ok(Class::ClassB) => DeviceClass::B,
        Ok(Class::ClassC) => DeviceClass::C,
        _ => DeviceClass::A,
    }
}

/// Network facts a device's events carry, kept in its state.
fn device_facts(info: &ev::DeviceInfo) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("application_id".into(), json!(info.application_id));
    m.insert("device_profile_id".into(), json!(info.device_profile_id));
    m.insert("device_name".into(), json!(info.device_name));
    m.insert(
        "class".into(),
        json!(device_class(info.device_class_enabled).as_str()),
    );
    m
}

/// The ChirpStack application of an event: from the topic it arrived on (ChirpStack
/// wrote it there, and the broker's ACL vouches for it), else, when the event topic has
/// no `{{application_id}}`, from its device info. Either way it must be a valid topic
/// level, since `command/down` topics are built from it.
fn application_of<'a>(
    info: Option<&'a ev::DeviceInfo>,
    vars: &HashMap<&str, &'a str>,
) -> Option<&'a str> {
    match vars.get("application_id") {
        Some(a) => Some(*a),
        None => info.map(|i| i.application_id.as_str()),
    }
    .filter(|a| valid_topic_level(a))
}

/// Why an event that parsed is still not acted upon: something ChirpStack always sends
/// is missing, or the body contradicts its topic.
fn incomplete(event: &Event, topic_eui: Option<&str>) -> Option<&'static str> {
    let Some(info) = event.device_info() else {
        return Some("no_device_info");
    };
    if info.dev_eui.is_empty() {
        return Some("no_dev_eui");
    }
    if topic_eui.is_some_and(|t| !t.eq_ignore_ascii_case(&info.dev_eui)) {
        return Some("dev_eui_mismatch");
    }
    match event {
        Event::Up(up) if up.deduplication_id.is_empty() => Some("no_deduplication_id"),
        Event::Up(up) if up.f_port > 255 => Some("f_port_out_of_range"),
        Event::Ack(a) if a.queue_item_id.is_empty() => Some("no_queue_item_id"),
        Event::TxAck(t) if t.queue_item_id.is_empty() => Some("no_queue_item_id"),
        _ => None,
    }
}

/// An uplink's `meta`, serialised straight from the event (the contract's field order).
#[derive(serde::Serialize)]
struct LorawanMeta<'a> {
    /// `null` when absent or outside what RFC 3339 can write (a protobuf event can say
    /// anything)
    time: Value,
    deduplication_id: &'a str,
    dev_addr: &'a str,
    f_cnt: u32,
    f_port: u32,
    dr: u32,
    adr: bool,
    confirmed: bool,
    frequency: Option<u32>,
    spreading_factor: Option<u32>,
    bandwidth: Option<u32>,
    rssi: Option<i32>,
    /// ChirpStack's own f32, written as the shortest decimal that reads back as it
    /// (9.8, not 9.800000190734863 as an f64 widened from it would print)
    snr: Option<f32>,
    gateway_id: Option<&'a str>,
    gateways: usize,
    region: &'a str,
    device_name: &'a str,
    application_id: &'a str,
    device_profile_id: &'a str,
    class: &'static str,
    tags: &'a HashMap<String, String>,
}

/// Turns an `up` event into pipeline input.
pub fn uplink_from_event(e: &ev::UplinkEvent, device: DeviceId, received: Instant) -> Uplink {
    let no_info = ev::DeviceInfo::default();
    let info = e.device_info.as_ref().unwrap_or(&no_info);
    // The best gateway: highest SNR, then highest RSSI.
    let best = e
        .rx_info
        .iter()
        .max_by(|a, b| a.snr.total_cmp(&b.snr).then(a.rssi.cmp(&b.rssi)));
    let (frequency, sf, bw) = match &e.tx_info {
        Some(tx) => {
            let lora = tx.modulation.as_ref().and_then(|m| match &m.parameters {
                Some(chirpstack_api::gw::modulation::Parameters::Lora(l)) => {
                    Some((l.spreading_factor, l.bandwidth))
                }
                _ => None,
            });
            (Some(tx.frequency), lora.map(|l| l.0), lora.map(|l| l.1))
        }
        None => (None, None, None),
    };
    let meta = LorawanMeta {
        time: timestamp(&e.time),
        deduplication_id: &e.deduplication_id,
        dev_addr: &e.dev_addr,
        f_cnt: e.f_cnt,
        f_port: e.f_port,
        dr: e.dr,
        adr: e.adr,
        confirmed: e.confirmed,
        frequency,
        spreading_factor: sf,
        bandwidth: bw,
        rssi: best.map(|g| g.rssi),
        snr: best.map(|g| g.snr),
        gateway_id: best.map(|g| g.gateway_id.as_str()),
        gateways: e.rx_info.len(),
        region: &e.region_config_id,
        device_name: &info.device_name,
        application_id: &info.application_id,
        device_profile_id: &info.device_profile_id,
        class: device_class(info.device_class_enabled).as_str(),
        tags: &info.tags,
    };
    let mut facts = device_facts(info);
    facts.insert("dev_addr".into(), json!(e.dev_addr));
    facts.insert("dr".into(), json!(e.dr));
    facts.insert("region".into(), json!(e.region_config_id));
    Uplink {
        device,
        payload: e.data.clone(),
        fport: u8::try_from(e.f_port).ok(),
        received,
        dedup_key: (!e.deduplication_id.is_empty()).then(|| e.deduplication_id.clone()),
        codec_keys: CodecKeys {
            application: Some(info.application_id.clone()).filter(|s| !s.is_empty()),
            device_profile: Some(info.device_profile_id.clone()).filter(|s| !s.is_empty()),
            sigfox_device_type: None,
        },
        meta: crate::pipeline::raw_json(&meta),
        network_facts: facts,
    }
}

/// Turns a [`DownlinkPlan`] into ChirpStack's `command/down`, with `chirpstack_api`'s own
/// `DownlinkCommand`: `id` = the plan's id (ChirpStack's queue item id), fPort 20,
/// `expiresAt` = the earliest expiry of its commands.
pub struct Downlinker {
    command_topic: TopicTemplate,
    marshaler: Marshaler,
    publisher: Publisher,
}

impl Downlinker {
    /// Hands a filled window's plan (if any) over, and times it from the uplink's
    /// arrival (`uplink_downlink_latency_seconds`).
    async fn hand_over_timed(
        &self,
        commands: &Commands,
        metrics: &Metrics,
        application_id: &str,
        plan: Option<DownlinkPlan>,
        received: Instant,
    ) {
        if let Some(plan) = plan {
            self.hand_over(commands, application_id, &plan).await;
            metrics
                .downlink_latency
                .observe(received.elapsed().as_secs_f64());
        }
    }

    /// Publishes the plan for a device of ChirpStack application `application_id`; an
    /// error names why it could not be handed over.
    pub async fn send(&self, application_id: &str, plan: &DownlinkPlan) -> Result<(), String> {
        if !valid_topic_level(application_id) {
            return Err(format!(
                "the application id {:?} cannot be a topic level",
                crate::device::excerpt(application_id)
            ));
        }
        let cmd = ev::DownlinkCommand {
            id: plan.id.clone(),
            dev_eui: plan.device.id.clone(),
            confirmed: plan.confirmed,
            f_port: device_node::COMMAND_FPORT as u32,
            data: plan.payload.clone(),
            object: None,
            expires_at: Some(chirpstack_api::pbjson_types::Timestamp {
                seconds: plan.expires_at.div_euclid(1000),
                nanos: (plan.expires_at.rem_euclid(1000) * 1_000_000) as i32,
            }),
        };
        let payload = match self.marshaler {
            Marshaler::Protobuf => cmd.encode_to_vec(),
            Marshaler::Json | Marshaler::Auto => serde_json::to_vec(&cmd).unwrap_or_default(),
        };
        let vars = [
            ("application_id", application_id),
            ("dev_eui", plan.device.id.as_str()),
            ("command", "down"),
        ];
        let topic = self.command_topic.render(&vars);
        tracing::debug!(
            topic,
            downlink = plan.id,
            commands = plan.commands.len(),
            "command/down"
        );
        self.publisher
            .try_publish(&topic, payload, false)
            .await
            .map_err(|e| format!("publishing command/down failed: {e}"))
    }

    /// Sends the plan; when it cannot be handed over, its commands go back to the queue
    /// (or end `failed`) with the reason, never left `scheduled`.
    async fn hand_over(&self, commands: &Commands, application_id: &str, plan: &DownlinkPlan) {
        if let Err(reason) = self.send(application_id, plan).await {
            tracing::warn!(device = %plan.device, downlink = plan.id, reason, "downlink not handed to ChirpStack");
            commands.handover_failed(plan, &reason).await;
        }
    }
}

/// Reads ChirpStack's events from MQTT and feeds the pipeline; fills each class A
/// uplink's receive window, and class B/C devices' queues at once.
pub struct ChirpstackAdapter {
    event_topic: TopicTemplate,
    marshaler: Marshaler,
    region: Region,
    repeater: bool,
    pipeline: Arc<Pipeline>,
    commands: Arc<Commands>,
    downlinker: Arc<Downlinker>,
    metrics: Arc<Metrics>,
    /// (application id, class) last stored per device, to write only changes.
    facts: Mutex<HashMap<DeviceId, (String, DeviceClass)>>,
    /// Where the facts are kept across restarts.
    facts_store: Arc<dyn DeviceFacts>,
    /// Receive windows being filled beside the dispatcher, and the facts writer.
    windows: TaskTracker,
    /// Uplinks whose window was filled as they arrived (deduplication ids), so the
    /// dispatcher does not fill it again.
    early_windows: Mutex<RecentKeys>,
    /// To the facts writer (taken on shutdown so that it drains and ends).
    facts_tx: Mutex<Option<mpsc::UnboundedSender<(DeviceId, String, DeviceClass)>>>,
    /// Stops taking due commands (on shutdown).
    closing: CancellationToken,
    /// Device groups, which follow the devices' tags.
    operators: Arc<Operators>,
    /// `chirpstack.group_tag` (empty: tags make no groups).
    group_tag: String,
}

impl ChirpstackAdapter {
    /// The adapter for `[chirpstack]`, taking the commands the queue announces as due
    /// ([`Commands::due`]) until [`ChirpstackAdapter::settle`].
    pub fn start(
        settings: &ChirpstackSettings,
        pipeline: Arc<Pipeline>,
        commands: Arc<Commands>,
        facts_store: Arc<dyn DeviceFacts>,
        metrics: Arc<Metrics>,
        operators: Arc<Operators>,
    ) -> Arc<Self> {
        let downlinker = Downlinker {
            command_topic: TopicTemplate::parse(&settings.command_topic),
            marshaler: settings.marshaler,
            publisher: pipeline.publisher().clone(),
        };
        let windows = TaskTracker::new();
        let (facts_tx, facts_rx) = mpsc::unbounded_channel();
        windows.spawn(Self::write_facts(facts_store.clone(), facts_rx));
        let due = commands.due(Network::Lorawan);
        let adapter = Arc::new(ChirpstackAdapter {
            event_topic: TopicTemplate::parse(&settings.event_topic),
            marshaler: settings.marshaler,
            region: settings.region,
            repeater: settings.repeater_compatible,
            pipeline,
            commands,
            downlinker: Arc::new(downlinker),
            metrics,
            facts: Mutex::new(HashMap::new()),
            facts_store,
            windows,
            early_windows: Mutex::new(RecentKeys::new(4096)),
            facts_tx: Mutex::new(Some(facts_tx)),
            closing: CancellationToken::new(),
            operators,
            group_tag: settings.group_tag.clone(),
        });
        adapter.windows.spawn(Self::take_due(
            Arc::downgrade(&adapter),
            adapter.closing.clone(),
            due,
        ));
        adapter
    }

    /// Takes the commands the queue announces as due until shutdown, in batches of what
    /// arrived together: a burst of 200 MQTT command requests for devices this process
    /// has not heard from, each looked up in the store at once, slowed an uplink behind
    /// the burst (docs/benchmarks.md, "One shape for every network").
    async fn take_due(
        this: std::sync::Weak<Self>,
        closing: CancellationToken,
        mut due: mpsc::UnboundedReceiver<DeviceId>,
    ) {
        while let Some(Some(device)) = closing.run_until_cancelled(due.recv()).await {
            let Some(adapter) = this.upgrade() else {
                return;
            };
            // what queued meanwhile goes with it: one store read for their facts
            let devices = crate::commands::take_batch(device, &mut due, 100);
            adapter.commands_due(devices).await;
        }
    }

    /// Stores the application and class of devices as they change, many per write. A
    /// fleet coming online sends a thousand first uplinks in a fraction of a second: one
    /// write each would queue the receive windows behind them on the store's writer.
    async fn write_facts(
        store: Arc<dyn DeviceFacts>,
        mut rx: mpsc::UnboundedReceiver<(DeviceId, String, DeviceClass)>,
    ) {
        while let Some(first) = rx.recv().await {
            // small batches (~1 ms of writing): a receive window's write queues behind
            // at most one of them
            let batch = crate::commands::take_batch(first, &mut rx, 100);
            if let Err(e) = store.set_device_facts(&batch).await {
                tracing::error!(devices = batch.len(), error = %e, "store failed saving device facts");
            }
        }
    }

    /// Called by the connection task as a message arrives, before it queues for the
    /// dispatcher: an `up` of a device with commands waiting has its receive window
    /// filled at once, so a backlog in the dispatcher (a burst of uplinks) never delays a
    /// downlink. Everything else about the uplink (telemetry, acknowledgement records,
    /// the PUBACK) stays with the dispatcher, in order. True when it started a window.
    pub fn early(&self, topic: &str, payload: &[u8], received: Instant) -> bool {
        // every message passes here: nothing waiting, nothing to look at
        if !self.commands.any_queued() {
            return false;
        }
        let Some(vars) = self.event_topic.capture(topic) else {
            return false;
        };
        if vars.get("event").copied() != Some("up") {
            return false;
        }
        let Some(Ok(device)) = vars
            .get("dev_eui")
            .map(|eui| DeviceId::new(Network::Lorawan, eui))
        else {
            return false;
        };
        if !self.commands.has_queued(&device) {
            return false;
        }
        let Ok(event) = parse_event("up", payload, self.marshaler) else {
            return false; // the dispatcher reports it
        };
        if incomplete(&event, Some(&device.id)).is_some() {
            return false; // the dispatcher reports it
        }
        let Event::Up(up) = event else { return false };
        let Some(window) = self.class_a_window(&up.region_config_id, up.dr) else {
            return false;
        };
        let Some(application_id) =
            application_of(up.device_info.as_ref(), &vars).map(str::to_owned)
        else {
            return false;
        };
        if !lock(&self.early_windows).first_time(&up.deduplication_id) {
            return false; // a copy of an uplink whose window is already filled
        }
        let (commands, downlinker, metrics) = (
            self.commands.clone(),
            self.downlinker.clone(),
            self.metrics.clone(),
        );
        self.windows.spawn(async move {
            let plan = commands.fill_window(&device, window).await;
            downlinker
                .hand_over_timed(&commands, &metrics, &application_id, plan, received)
                .await;
        });
        true
    }

    /// Waits for the receive windows being filled (on shutdown, before disconnecting).
    pub async fn settle(&self) {
        self.closing.cancel();
        lock(&self.facts_tx).take();
        self.windows.close();
        self.windows.wait().await;
    }

    /// The receive window a class A uplink opened: the maximum payload of its data rate
    /// in its region (ChirpStack's regionConfigId, else `chirpstack.region`).
    pub fn class_a_window(&self, region_config_id: &str, dr: u32) -> Option<ReceiveWindow> {
        let region = Region::from_name(region_config_id).unwrap_or(self.region);
        let n = region.max_payload(u8::try_from(dr).ok()?, self.repeater)?;
        Some(ReceiveWindow::of_bytes(n as usize))
    }

    /// Commands became due outside an uplink: class B and C devices take them at once
    /// (ChirpStack schedules them for the next ping slot or RX2), sized for the region's
    /// RX2 rate; class A devices wait for their next uplink.
    async fn commands_due(&self, mut devices: Vec<DeviceId>) {
        devices.retain(|d| d.network == Network::Lorawan);
        devices.sort();
        devices.dedup();
        let facts = self.known_facts(&devices).await;
        let Some(n) = self.region.max_payload(self.region.rx2().1, self.repeater) else {
            return;
        };
        let window = ReceiveWindow::of_bytes(n as usize);
        for device in &devices {
            let Some((application_id, class)) = facts.get(device) else {
                continue;
            };
            if !class.always_reachable() {
                continue;
            }
            if let Some(plan) = self.commands.fill_window(device, window).await {
                self.downlinker
                    .hand_over(&self.commands, application_id, &plan)
                    .await;
            }
        }
    }

    /// The application and class of the devices known: from memory, the others from
    /// the store in one read.
    async fn known_facts(&self, devices: &[DeviceId]) -> HashMap<DeviceId, (String, DeviceClass)> {
        let mut known = HashMap::new();
        let mut ask = Vec::new();
        {
            let cache = lock(&self.facts);
            for d in devices {
                match cache.get(d) {
                    Some(f) => {
                        known.insert(d.clone(), f.clone());
                    }
                    None => ask.push(d.clone()),
                }
            }
        }
        if ask.is_empty() {
            return known;
        }
        match self.facts_store.device_facts(&ask).await {
            Ok(stored) => {
                let mut cache = lock(&self.facts);
                for (d, app, class) in stored {
                    cache.insert(d.clone(), (app.clone(), class));
                    known.insert(d, (app, class));
                }
            }
            Err(e) => {
                tracing::error!(devices = ask.len(), error = %e, "store failed reading device facts");
            }
        }
        known
    }

    /// Stores the application and class of a device when they change. The write runs
    /// beside the event, not before it, batched with others (see `write_facts`): the
    /// facts are cached here already.
    async fn remember(&self, device: &DeviceId, application_id: &str, info: &ev::DeviceInfo) {
        if !self.group_tag.is_empty() {
            let tag = info.tags.get(&self.group_tag).map(String::as_str);
            self.operators.tagged(device, tag).await;
        }
        let class = device_class(info.device_class_enabled);
        let facts = (application_id.to_owned(), class);
        {
            let mut known = lock(&self.facts);
            if known.get(device) == Some(&facts) {
                return;
            }
            known.insert(device.clone(), facts.clone());
        }
        if let Some(tx) = lock(&self.facts_tx).as_ref() {
            let _ = tx.send((device.clone(), facts.0, facts.1));
        }
    }

    /// The subscription filter for ChirpStack's events.
    pub fn subscription(&self) -> String {
        self.event_topic.filter()
    }

    /// Whether a topic is one of ChirpStack's events.
    pub fn matches(&self, topic: &str) -> bool {
        self.event_topic.capture(topic).is_some()
    }

    /// Handles one message from the event topic. Malformed input is counted and logged
    /// with its topic; it never stops the bridge.
    pub async fn handle(&self, topic: &str, payload: &[u8], received: Instant) -> Option<Event> {
        let Some(vars) = self.event_topic.capture(topic) else {
            self.metrics.malformed("chirpstack", "topic");
            tracing::warn!(
                topic,
                "message on a topic that does not match chirpstack.event_topic"
            );
            return None;
        };
        let kind = vars.get("event").copied().unwrap_or("");
        let label = KNOWN_EVENTS
            .into_iter()
            .find(|k| *k == kind)
            .unwrap_or("other");
        self.metrics
            .chirpstack_events
            .get_or_create(&EventLabels { event: label })
            .inc();
        let event = match parse_event(kind, payload, self.marshaler) {
            Ok(e) => e,
            Err(EventError::Unhandled(_)) => {
                tracing::debug!(topic, "event type not read by the bridge");
                return None;
            }
            Err(e) => {
                self.metrics.malformed("chirpstack", e.reason());
                tracing::warn!(topic, error = %e, "malformed ChirpStack event");
                return None;
            }
        };
        if let Some(reason) = incomplete(&event, vars.get("dev_eui").copied()) {
            self.metrics.malformed("chirpstack", reason);
            tracing::warn!(
                topic,
                reason,
                "ChirpStack event lacks what ChirpStack always sends, or contradicts its topic; not acted upon"
            );
            return None;
        }
        let info = event.device_info()?;
        let device = match DeviceId::new(Network::Lorawan, &info.dev_eui) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.malformed("chirpstack", "dev_eui");
                tracing::warn!(topic, error = %e, "ChirpStack event without a valid DevEUI");
                return None;
            }
        };
        let Some(application_id) = application_of(Some(info), &vars).map(str::to_owned) else {
            self.metrics.malformed("chirpstack", "application_id");
            tracing::warn!(topic, "ChirpStack event without a usable application id");
            return None;
        };
        self.remember(&device, &application_id, info).await;
        match &event {
            Event::Up(up) => {
                let window = self.class_a_window(&up.region_config_id, up.dr);
                let uplink = uplink_from_event(up, device.clone(), received);
                let ingested = self.pipeline.ingest(uplink).await;
                // The window and the acknowledgement records need the store: they run
                // beside the dispatcher, so a device waiting on the store never holds up
                // the uplinks behind it (ChirpStack reads its queue ~100 ms after `up`).
                // (unless it was filled as the message arrived, see `early`)
                let filled_early = lock(&self.early_windows).contains(&up.deduplication_id);
                let window = window.filter(|_| {
                    !filled_early && ingested.is_some() && self.commands.has_queued(&device)
                });
                let acks: Vec<Value> = match ingested {
                    Some(ingested) if self.commands.has_open(&device) => ingested.acks,
                    _ => Vec::new(),
                };
                if window.is_some() || !acks.is_empty() {
                    let (commands, downlinker, metrics) = (
                        self.commands.clone(),
                        self.downlinker.clone(),
                        self.metrics.clone(),
                    );
                    self.windows.spawn(async move {
                        let plan = commands.after_uplink(&device, &acks, window).await;
                        downlinker
                            .hand_over_timed(&commands, &metrics, &application_id, plan, received)
                            .await;
                    });
                    // let it start now: a task spawned here waits in this worker's
                    // LIFO slot, which no other worker may steal from, until the
                    // dispatcher yields, and under load the dispatcher rarely does
                    tokio::task::yield_now().await;
                }
            }
            Event::Join(j) => {
                let mut facts = j.device_info.as_ref().map(device_facts).unwrap_or_default();
                facts.insert("dev_addr".into(), json!(j.dev_addr));
                facts.insert("joined_at".into(), timestamp(&j.time));
                facts.insert("region".into(), json!(j.region_config_id));
                self.pipeline.update_network_facts(&device, facts).await;
            }
            Event::Status(s) => {
                let mut facts = Map::new();
                facts.insert("margin".into(), json!(s.margin));
                facts.insert("external_power".into(), json!(s.external_power_source));
                let level = (!s.battery_level_unavailable && !s.external_power_source)
                    .then_some(s.battery_level);
                facts.insert("battery_level".into(), json!(level));
                facts.insert("status_at".into(), timestamp(&s.time));
                self.pipeline.update_network_facts(&device, facts).await;
            }
            Event::Location(l) => {
                if let Some(loc) = &l.location {
                    let mut facts = Map::new();
                    facts.insert(
                        "network_location".into(),
                        json!({"latitude": loc.latitude, "longitude": loc.longitude, "altitude": loc.altitude, "time": timestamp(&l.time)}),
                    );
                    self.pipeline.update_network_facts(&device, facts).await;
                }
            }
            Event::TxAck(t) => self.commands.network_sent(&device, &t.queue_item_id).await,
            Event::Ack(a) => {
                for retry in self
                    .commands
                    .network_ack(&device, &a.queue_item_id, a.acknowledged)
                    .await
                {
                    self.commands_due(vec![retry]).await;
                }
            }
            Event::Log(l) => {
                let Some(item) = l.context.get("queue_item_id") else {
                    return Some(event);
                };
                let code = ev::LogCode::try_from(l.code).unwrap_or(ev::LogCode::Unknown);
                let reason = format!("chirpstack: {}: {}", code.as_str_name(), l.description);
                match code {
                    ev::LogCode::Expired => {
                        self.commands
                            .network_dropped(&device, item, CommandState::Expired, &reason)
                            .await
                    }
                    ev::LogCode::DownlinkPayloadSize
                    | ev::LogCode::FCntDown
                    | ev::LogCode::DownlinkGateway => {
                        self.commands
                            .network_dropped(&device, item, CommandState::Failed, &reason)
                            .await
                    }
                    _ => tracing::info!(
                        queue_item_id = item,
                        reason,
                        "ChirpStack log about a queue item"
                    ),
                }
            }
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snr_is_written_as_chirpstack_wrote_it() {
        let e = ev::UplinkEvent {
            rx_info: vec![chirpstack_api::gw::UplinkRxInfo {
                snr: 9.8,
                rssi: -97,
                ..Default::default()
            }],
            ..Default::default()
        };
        let device = DeviceId::new(Network::Lorawan, "70b3d57ed0051a2b").unwrap();
        let up = uplink_from_event(&e, device, Instant::now());
        assert!(up.meta.get().contains("\"snr\":9.8,"), "{}", up.meta.get());
    }

    #[test]
    fn a_time_rfc_3339_cannot_write_is_null_in_meta_not_a_crash() {
        // protobuf can carry any seconds; chrono (under pbjson) cannot format this one
        let e = ev::UplinkEvent {
            time: Some(chirpstack_api::pbjson_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            deduplication_id: "d".into(),
            ..Default::default()
        };
        assert!(serde_json::to_value(e.time.as_ref().unwrap()).is_err());
        let device = DeviceId::new(Network::Lorawan, "70b3d57ed0051a2b").unwrap();
        let up = uplink_from_event(&e, device, Instant::now());
        let meta: Value = serde_json::from_str(up.meta.get()).unwrap();
        assert_eq!(meta["time"], Value::Null);
        assert_eq!(meta["deduplication_id"], "d");
    }

    #[test]
    fn templates() {
        let t = TopicTemplate::parse(
            "application/{{application_id}}/device/{{dev_eui}}/event/{{event}}",
        );
        assert_eq!(t.filter(), "application/+/device/+/event/+");
        let v = t
            .capture("application/abc/device/0102030405060708/event/up")
            .unwrap();
        assert_eq!(v["application_id"], "abc");
        assert_eq!(v["dev_eui"], "0102030405060708");
        assert_eq!(v["event"], "up");
        assert!(t.capture("application/abc/device/x/event").is_none());
        assert!(t.capture("application/abc/dev/x/event/up").is_none());
        let c = TopicTemplate::parse(
            "application/{{application_id}}/device/{{dev_eui}}/command/{{command}}",
        );
        assert_eq!(
            c.render(&[
                ("application_id", "a"),
                ("dev_eui", "d"),
                ("command", "down")
            ]),
            "application/a/device/d/command/down"
        );
    }

    #[test]
    fn reads_every_fixture_in_json() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chirpstack");
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("fixtures not found at {dir}");
        };
        let mut n = 0;
        for kind in entries.flatten() {
            let event = kind.file_name().to_string_lossy().into_owned();
            if event == "command_down" {
                continue;
            }
            for f in std::fs::read_dir(kind.path()).unwrap().flatten() {
                let bytes = std::fs::read(f.path()).unwrap();
                let parsed = parse_event(&event, &bytes, Marshaler::Auto);
                assert!(parsed.is_ok(), "{}: {:?}", f.path().display(), parsed.err());
                n += 1;
            }
        }
        assert!(n >= 11, "read {n} fixtures");
    }

    #[test]
    fn a_number_out_of_range_is_named() {
        for (body, named) in [
            (
                r#"{"deduplicationId":"d","fPort":-1}"#,
                "fPort: -1 is not a whole number in 0..=4294967295",
            ),
            (
                r#"{"deduplicationId":"d","fCnt":1e20}"#,
                "fCnt: 1e+20 is not a whole number",
            ),
            (
                r#"{"deduplicationId":"d","dr":1099511627776}"#,
                "dr: 1099511627776 is not",
            ),
            (
                r#"{"rxInfo":[{"rssi":-90},{"rssi":"x"}]}"#,
                "rxInfo[1].rssi: \"x\" is not",
            ),
        ] {
            let e = parse_event("up", body.as_bytes(), Marshaler::Json).unwrap_err();
            assert!(e.to_string().contains(named), "{body}: {e}");
            assert!(e.to_string().contains(" at line 1 column"), "{e}");
        }
    }

    #[test]
    fn malformed_events_are_errors_not_panics() {
        for bad in [
            &b"{"[..],
            b"{\"fPort\": \"ten\"}",
            b"{\"data\": \"!!notbase64\"}",
            b"\xff\xff\xff",
            b"[1,2]",
        ] {
            assert!(parse_event("up", bad, Marshaler::Auto).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_event("integration", b"{}", Marshaler::Auto)
                .unwrap_err()
                .reason(),
            "event_type"
        );
    }
}
