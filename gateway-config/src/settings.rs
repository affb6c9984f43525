//! The bridge's configuration, section by section.
//!
//! Every section is declared once with [`section!`]: its fields, their documentation and
//! their defaults. From that one declaration come the serde struct (`#[serde(default)]`,
//! so an empty file is valid), its `Default`, and the key list that the commented default
//! file and the unknown-key check use. A doc comment here is what a user reads in
//! `longproto-bridge configfile`.
use crate::region::Region;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a section knows about itself: its key, its doc lines and its fields' docs.
#[derive(Debug, Clone, Copy)]
pub struct SectionInfo {
    /// The TOML table name.
    pub key: &'static str,
    /// The section's doc lines.
    pub doc: &'static [&'static str],
    /// Each field's key and doc lines, in declaration order.
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// Fields that are free-form tables (any key is valid inside).
    pub open_tables: &'static [&'static str],
}

macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident ($key:literal) {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
        $(open: [$($open:literal),*])?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// This section's key, docs and fields.
            pub const INFO: SectionInfo = SectionInfo {
                key: $key,
                doc: &[$($sdoc),*],
                fields: &[$( (stringify!($field), &[$($doc),*]), )*],
                open_tables: &[$($($open),*)?],
            };
        }
    };
}

section! {
    /// The MQTT broker the bridge shares with ChirpStack and with the operators' tools.
    MqttSettings ("mqtt") {
        /// Broker URL: mqtt:// or tcp:// (plain), mqtts:// or ssl:// (TLS). The port
        /// defaults to 1883, or 8883 with TLS.
        server: String = "tcp://127.0.0.1:1883".into(),
        /// Client id. Keep it stable: with `clean_session = false` the broker keeps the
        /// bridge's subscriptions and queued messages under this id while it is away.
        client_id: String = "longproto-bridge".into(),
        /// User name; empty for an anonymous connection.
        username: String = String::new(),
        /// Password. Prefer `password_file`, which keeps it out of this file.
        password: String = String::new(),
        /// A file holding the password, e.g. a systemd credential
        /// ("/run/credentials/longproto-bridge.service/mqtt-password").
        password_file: String = String::new(),
        /// CA certificate (PEM) that signs the broker's certificate, for mqtts://.
        ca_cert: String = String::new(),
        /// Client certificate (PEM) for mutual TLS; needs `tls_key`.
        tls_cert: String = String::new(),
        /// Client private key (PEM) for mutual TLS; needs `tls_cert`.
        tls_key: String = String::new(),
        /// Keepalive interval in seconds (5..=65535).
        keepalive_s: u16 = 30,
        /// Start a fresh session on every connect. Off by default, so that messages
        /// published with QoS 1 while the bridge is away are delivered when it returns.
        clean_session: bool = false,
        /// Root of every topic the bridge publishes and reads:
        /// {root}/{network}/{id}/telemetry, .../state, .../command, .../command-events,
        /// and {root}/bridge/status.
        topic_root: String = "longproto/v1".into(),
        /// Longest wait between two reconnection attempts, in milliseconds; the wait
        /// starts at 50 ms and doubles up to this cap.
        reconnect_max_ms: u32 = 1000,
        /// QoS 1 messages the bridge may have in flight to the broker at once.
        max_inflight: u16 = 256,
        /// The retained state of a device is published at once after a change, then at
        /// most this often (milliseconds) during a burst of its uplinks; the last state
        /// is always published. 0 publishes it after every uplink.
        state_min_interval_ms: u32 = 1000,
        /// Largest message payload the bridge reads, in bytes (1024..=16777216). A
        /// larger one is acknowledged, counted in longproto_malformed_messages_total
        /// {source="mqtt",reason="too_large"} and dropped, and the connection stays up.
        /// Set the broker's own limit to match (mosquitto: max_packet_size).
        max_message_bytes: u32 = 256 * 1024,
    }
}

/// How ChirpStack's MQTT integration encodes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Marshaler {
    /// JSON, ChirpStack's default.
    Json,
    /// Protobuf.
    Protobuf,
    /// Tell them apart per message (a JSON event starts with `{`).
    Auto,
}

section! {
    /// The ChirpStack v4 MQTT integration: where its events arrive and where downlinks go.
    ChirpstackSettings ("chirpstack") {
        /// Event topic, in ChirpStack's own template syntax, so the line can be pasted
        /// from chirpstack.toml's [integration.mqtt] (event_topic).
        event_topic: String =
            "application/{{application_id}}/device/{{dev_eui}}/event/{{event}}".into(),
        /// Command topic, ChirpStack's template (command_topic); the bridge publishes
        /// with {{command}} = "down".
        command_topic: String =
            "application/{{application_id}}/device/{{dev_eui}}/command/{{command}}".into(),
        /// How events are encoded: "json", "protobuf", or "auto" (per message).
        marshaler: Marshaler = Marshaler::Auto,
        /// ChirpStack's get_downlink_data_delay, in milliseconds: after publishing an
        /// uplink event ChirpStack waits this long, then reads the device queue for that
        /// uplink's receive window. A class A downlink must be published within it.
        downlink_budget_ms: u32 = 100,
        /// The region assumed when an event does not name one (regionConfigId).
        region: Region = Region::Eu868,
        /// Size downlinks for a LoRaWAN repeater (the smaller repeater-compatible N).
        repeater_compatible: bool = false,
        /// Seconds ChirpStack has to confirm a command/down (a txack, ack or log event
        /// naming it) before its commands go back to the queue for the next window, or
        /// fail once their attempts are used up (5..=86400). ChirpStack drops a
        /// command/down it cannot take with nothing but a log line of its own.
        handover_timeout_s: u32 = 60,
        /// The ChirpStack device tag (deviceInfo.tags) whose value names the device's
        /// groups, comma-separated (e.g. a tag group = "lisbon,scooters"); read from every
        /// uplink event. Empty: tags make no groups.
        group_tag: String = "group".into(),
    }
}

section! {
    /// Sigfox backend callbacks (POST /v1/sigfox/uplink and /v1/sigfox/ack).
    SigfoxSettings ("sigfox") {
        /// The secret the callbacks carry in their Authorization header (Bearer or Basic).
        /// Empty: the Sigfox routes answer 401 to everything. Prefer `secret_file`.
        secret: String = String::new(),
        /// A file holding the secret.
        secret_file: String = String::new(),
        /// Downlinks a device may take per day (0..=4; 4 on a Platinum subscription).
        daily_downlinks: u8 = 4,
    }
}

section! {
    /// The cellular long poll: devices POST /c/{id} on a listener of their own, apart
    /// from the operator API, and wait there for their commands.
    CellularSettings ("cellular") {
        /// Address and port of the devices' listener; empty: no cellular listener. It
        /// may face the internet: it serves the poll route and nothing else.
        bind: String = String::new(),
        /// The devices' keys, one line per device: "<device id> <key, 32 hex digits>",
        /// then for a device reachable by SMS its number and "frames" (the default) or
        /// "wake" ('#' starts a comment). The file must not be readable by others (chmod 600
        /// or 640); it is read again when it changes, without a restart.
        keys_file: String = String::new(),
        /// The longest wait a device may ask for, in seconds (1..=3600).
        max_wait_s: u32 = 240,
        /// Idle seconds before a TCP keepalive probe on a device's connection (one
        /// probe: no answer closes it and releases its held request); 0: none. Each
        /// probe and its answer cost a vehicle 104 IP bytes: 15 s costs about 18 MB a
        /// month (docs/benchmarks.md). Keep it as long as the mobile network's NAT allows.
        tcp_keepalive_s: u32 = 120,
        /// Seconds a device has to acknowledge a frame with its next request; past it
        /// the frame counts as not delivered and goes back to the queue, to be sent again
        /// with the same counter (1..=3600).
        delivery_timeout_s: u32 = 15,
        /// Seconds a device has to send a request's head and body once it connects or
        /// its previous answer was written (1..=3600).
        request_timeout_s: u32 = 300,
        /// Connections at once (1..=1000000); one per vehicle holding a poll. With
        /// http.max_connections it must stay below the open-file limit (the systemd
        /// unit's LimitNOFILE, 65536).
        max_connections: u32 = 50_000,
        /// Certificate chain (PEM) for TLS 1.3 on the listener; needs tls_key. An ECDSA
        /// P-256 certificate keeps the handshake short.
        tls_cert: String = String::new(),
        /// Private key (PEM) of tls_cert.
        tls_key: String = String::new(),
        /// Where the TLS session-ticket keys are kept, so that tickets survive a restart
        /// (created when missing, mode 600; rotated every 12 hours, the previous key
        /// still accepted). Empty: keys live in memory and a restart voids every ticket.
        tls_ticket_keys_file: String = String::new(),
    }
}

section! {
    /// Binary SMS over SMPP 3.4, beside the cellular long poll: the bridge binds to the
    /// operator's SMSC (or an aggregator) as a transceiver. A device is reachable by
    /// SMS when its line in cellular.keys_file gives its number.
    SmsSettings ("sms") {
        /// smpp://host:port (2775 by convention) or smpps://host:port for TLS; empty:
        /// no SMS.
        server: String = String::new(),
        /// The account's system_id.
        system_id: String = String::new(),
        /// The account's password (SMPP allows 8 characters). Prefer `password_file`.
        password: String = String::new(),
        /// A file holding the password.
        password_file: String = String::new(),
        /// The bind's system_type, if the SMSC asks for one.
        system_type: String = String::new(),
        /// The sender address of each message: a number or a short code.
        source_addr: String = String::new(),
        /// The sender address's type of number (0 unknown, 1 international, 3 national,
        /// 5 alphanumeric).
        source_ton: u8 = 0,
        /// The application port both ends use (the user data header's 16-bit ports).
        port: u16 = 49_999,
        /// Submits per second at most, the account's allowed rate (1..=10000).
        submits_per_s: u32 = 10,
        /// Submits awaiting their response at once (1..=1000).
        window: u32 = 10,
        /// Seconds between enquire_link on an idle bind (5..=3600).
        enquire_link_s: u32 = 30,
        /// Seconds the SMSC has to answer a PDU (1..=300); past it a submit counts as
        /// lost (its command goes back to the queue with its counter).
        response_timeout_s: u32 = 10,
        /// Seconds a command may wait for the cellular long poll before it is also sent
        /// by SMS (1..=86400): the prototype's human wait at a car.
        sms_after_s: u32 = 15,
        /// Seconds a delivery receipt may take (10..=604800); past it the message counts
        /// as not delivered and its commands go back to the queue.
        receipt_timeout_s: u32 = 3600,
        /// SMS a device may be sent per day (UTC); 0: none.
        daily_per_device: u32 = 20,
        /// SMS the bridge may send per day (UTC), all devices together; 0: none.
        daily_total: u32 = 10_000,
        /// CA certificate (PEM) for smpps://; empty: the system's roots.
        ca_cert: String = String::new(),
    }
}

section! {
    /// The HTTP server: command API, Sigfox callbacks, /healthz and /metrics.
    HttpSettings ("http") {
        /// Address and port to listen on. ChirpStack's API holds 8080, mosquitto 1883.
        bind: String = "127.0.0.1:8090".into(),
        /// Deprecated: plain bearer tokens (16 characters or more), each with every scope
        /// over every device, recorded as "token-1", "token-2", ... Prefer
        /// [operators.token], whose secrets are stored only as hashes.
        api_tokens: Vec<String> = Vec::new(),
        /// Deprecated: a file with more plain tokens, one per line.
        api_tokens_file: String = String::new(),
        /// Largest request body accepted, in bytes; larger ones get 413.
        body_limit_bytes: u32 = 16 * 1024,
        /// Seconds a client has to send a request's headers, from the moment it
        /// connects or its previous response was written (1..=3600).
        header_timeout_s: u32 = 10,
        /// Seconds an idle keep-alive connection stays open (1..=3600).
        idle_timeout_s: u32 = 60,
        /// Connections served at once (1..=1000000); a connection past the limit waits
        /// to be accepted, logged at most every 10 s and counted in
        /// longproto_http_connection_limit_reached_total. Keep it below the process's
        /// open-file limit (the systemd unit's LimitNOFILE).
        max_connections: u32 = 4096,
    }
}

section! {
    /// Where commands and their history are kept.
    StorageSettings ("storage") {
        /// sqlite:///absolute/path.db (the embedded default) or sqlite://relative/path.db:
        /// beside a database file the bridge keeps "<file>-windows", the journal of
        /// receive windows not yet in the database: back it up and move it with the
        /// database. Or postgres://user[:password]@host[:port]/database (also
        /// postgresql://, with libpq's parameters such as ?sslmode=verify-full): two
        /// bridges on one database are an active and a standby (docs/deployment.md).
        url: String = "sqlite:///var/lib/longproto/bridge.db".into(),
    }
}

section! {
    /// The command queue.
    CommandSettings ("commands") {
        /// Time to live of a command that gives no ttl_s, in seconds.
        default_ttl_s: u32 = 300,
        /// The longest ttl_s a request may ask for, in seconds.
        max_ttl_s: u32 = 7 * 24 * 3600,
        /// Transmissions of one command before it fails (1..=10).
        max_attempts: u8 = 3,
    }
}

/// A named API token (`[operators.token]`, or a line of `operators.tokens_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The SHA-256 of the secret in hex (`longproto-bridge hash-token`): the secret
    /// itself is stored nowhere.
    pub secret_sha256: String,
    /// What it may do: "read" (states, commands, history), "command" (create, cancel).
    #[serde(default = "read_only")]
    pub scopes: Vec<String>,
    /// Which devices it may see: "lorawan/*" (a network), "sigfox/0051*" (an id
    /// prefix), "cellular/ce11000000000c01" (one device), "group:lisbon" (a group).
    /// Empty or left out: every device.
    #[serde(default)]
    pub devices: Vec<String>,
}

fn read_only() -> Vec<String> {
    vec!["read".into()]
}

/// The scopes a token can have.
pub const TOKEN_SCOPES: [&str; 2] = ["read", "command"];

section! {
    /// Operators: named API tokens, each with its scopes and the devices it may see, and
    /// device groups. The tokens of `http.api_tokens` still work, with every scope.
    OperatorSettings ("operators") {
        /// A TOML file of more tokens, written like [operators.token] below under a
        /// [token] table. It is read again within 2 s of a change, so tokens rotate
        /// without a restart; a file that does not read keeps the tokens it had.
        tokens_file: String = String::new(),
        /// Named tokens, e.g. ops-lisbon = { secret_sha256 = "<64 hex digits>",
        /// scopes = ["read", "command"], devices = ["group:lisbon"] }. The name is what
        /// commands, their history, events, logs and metrics record as their origin.
        token: BTreeMap<String, TokenSettings> = BTreeMap::new(),
        /// Device groups, e.g. depot-1 = ["lorawan/70b3d57ed0000001", "sigfox/0051aa01"].
        /// Devices also join groups through the API (PUT /v1/groups/{group}/devices/...)
        /// and through ChirpStack's device tags (chirpstack.group_tag).
        group: BTreeMap<String, Vec<String>> = BTreeMap::new(),
    }
    open: ["token", "group"]
}

section! {
    /// Which codec decodes which device's payloads: "longproto-v1", "cayenne-lpp" or
    /// "raw". The most specific match wins: device, then Sigfox device type or
    /// ChirpStack device profile, then application, then `default`.
    CodecSettings ("codecs") {
        /// The codec of devices that match nothing below.
        default: String = "longproto-v1".into(),
        /// By device: DevEUI or Sigfox device id = codec, e.g. "70b3d57ed0051a2b" = "cayenne-lpp".
        device: BTreeMap<String, String> = BTreeMap::new(),
        /// By ChirpStack device profile id = codec.
        device_profile: BTreeMap<String, String> = BTreeMap::new(),
        /// By ChirpStack application id = codec.
        application: BTreeMap<String, String> = BTreeMap::new(),
        /// By Sigfox device type id = codec.
        sigfox_device_type: BTreeMap<String, String> = BTreeMap::new(),
    }
    open: ["device", "device_profile", "application", "sigfox_device_type"]
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text, with colours only on a terminal (journald gets plain lines).
    Auto,
    /// Plain text.
    Text,
    /// One JSON object per line.
    Json,
}

section! {
    /// Logging.
    LoggingSettings ("logging") {
        /// Filter in RUST_LOG syntax, e.g. "info" or "info,longproto_bridge=debug".
        /// The RUST_LOG environment variable, when set, wins.
        level: String = "info".into(),
        /// "auto", "text" or "json".
        format: LogFormat = LogFormat::Auto,
    }
}

section! {
    /// Prometheus metrics.
    MetricsSettings ("metrics") {
        /// Serve GET /metrics on the HTTP server.
        enabled: bool = true,
    }
}

/// The bridge's whole configuration. `Settings::default()` is what an empty file means.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[mqtt]`
    pub mqtt: MqttSettings,
    /// `[chirpstack]`
    pub chirpstack: ChirpstackSettings,
    /// `[sigfox]`
    pub sigfox: SigfoxSettings,
    /// `[cellular]`
    pub cellular: CellularSettings,
    /// `[sms]`
    pub sms: SmsSettings,
    /// `[http]`
    pub http: HttpSettings,
    /// `[operators]`
    pub operators: OperatorSettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[commands]`
    pub commands: CommandSettings,
    /// `[codecs]`
    pub codecs: CodecSettings,
    /// `[logging]`
    pub logging: LoggingSettings,
    /// `[metrics]`
    pub metrics: MetricsSettings,
}

impl Settings {
    /// Every section, in the order the default file lists them.
    pub const SECTIONS: &'static [SectionInfo] = &[
        MqttSettings::INFO,
        ChirpstackSettings::INFO,
        SigfoxSettings::INFO,
        CellularSettings::INFO,
        SmsSettings::INFO,
        HttpSettings::INFO,
        OperatorSettings::INFO,
        StorageSettings::INFO,
        CommandSettings::INFO,
        CodecSettings::INFO,
        LoggingSettings::INFO,
        MetricsSettings::INFO,
    ];
}
