//! The command line of `longproto-fleet`, here so that its man page and shell
//! completions can be generated from the same definitions (`clap_mangen`).
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// LoRaWAN devices behind a ChirpStack double on ChirpStack's MQTT integration.
    Integration,
    /// LoRaWAN radio frames through a simulated gateway, for a real ChirpStack.
    Gateway,
}

/// Runs simulated vehicles (the firmware's node logic) against longproto-bridge: LoRaWAN
/// through ChirpStack's MQTT integration (or as gateway frames), Sigfox through callbacks.
#[derive(Debug, Parser)]
#[command(name = "longproto-fleet", version)]
pub struct Args {
    /// LoRaWAN path: `integration` needs only the broker; `gateway` needs a ChirpStack.
    #[arg(long, value_enum, default_value = "integration")]
    pub mode: ModeArg,
    /// The MQTT broker the bridge (and ChirpStack) use.
    #[arg(long, default_value = "tcp://127.0.0.1:1883")]
    pub mqtt: String,
    /// The bridge's HTTP server (Sigfox callbacks, and commands with --unlock-every).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub http: SocketAddr,
    /// The bridge's Sigfox callback secret.
    #[arg(long, env = "LONGPROTO_FLEET_SIGFOX_SECRET", default_value = "")]
    pub sigfox_secret: String,
    /// The ChirpStack application id in event topics.
    #[arg(long, default_value = "fleet")]
    pub application_id: String,
    /// The bridge's topic root.
    #[arg(long, default_value = "longproto/v1")]
    pub topic_root: String,
    /// LoRaWAN devices.
    #[arg(long, default_value_t = 10)]
    pub lorawan: usize,
    /// Share of the LoRaWAN devices that are class C, percent.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub class_c: u8,
    /// Sigfox devices.
    #[arg(long, default_value_t = 0)]
    pub sigfox: usize,
    /// Cellular devices: each a long poll on the bridge's cellular listener.
    #[arg(long, default_value_t = 0)]
    pub cellular: usize,
    /// The bridge's cellular listener.
    #[arg(long, default_value = "127.0.0.1:8091")]
    pub cellular_addr: SocketAddr,
    /// The longest wait a cellular device asks for, seconds.
    #[arg(long, default_value_t = 240)]
    pub cellular_wait: u16,
    /// Speak TLS to the cellular listener, trusting this CA certificate (PEM).
    #[arg(long)]
    pub cellular_ca: Option<std::path::PathBuf>,
    /// The name in the listener's certificate.
    #[arg(long, default_value = "localhost")]
    pub cellular_server_name: String,
    /// Write the cellular devices' keys here (mode 600), as the bridge's
    /// `[cellular] keys_file` reads them, and go on.
    #[arg(long)]
    pub cellular_keys_out: Option<std::path::PathBuf>,
    /// Start a test SMSC listening here (SMPP 3.4): every cellular vehicle gets a number
    /// and takes SMS through it. Point the bridge's `[sms] server` at smpp://this.
    #[arg(long)]
    pub smsc_listen: Option<SocketAddr>,
    /// The test SMSC's account: system_id.
    #[arg(long, default_value = "fleet")]
    pub smsc_system_id: String,
    /// The test SMSC's account: password.
    #[arg(
        long,
        env = "LONGPROTO_FLEET_SMSC_PASSWORD",
        default_value = "fleet123"
    )]
    pub smsc_password: String,
    /// Share of the cellular vehicles whose data session is down (they never poll; SMS
    /// only), percent; needs --smsc-listen.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub no_data_percent: u8,
    /// Normal reporting interval in seconds (a fifth of it while active after an unlock).
    #[arg(long, default_value_t = 60)]
    pub interval: u32,
    /// Seed for the fleet's make-up (positions, charge, class mix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// From an uplink to its receive window (ms).
    #[arg(long, default_value_t = 1000)]
    pub rx_delay_ms: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Print a summary line this often (seconds).
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// Ask the bridge for an `unlock` of the next device this often (seconds); needs
    /// --api-token.
    #[arg(long)]
    pub unlock_every: Option<u64>,
    /// A bearer token of the bridge's API.
    #[arg(long, env = "LONGPROTO_FLEET_API_TOKEN")]
    pub api_token: Option<String>,
    /// Gateway mode: ChirpStack's region topic prefix.
    #[arg(long, default_value = "eu868")]
    pub region_prefix: String,
    /// Gateway mode: the gateway id.
    #[arg(long, default_value = "0016c001f1500001")]
    pub gateway_id: String,
    /// Gateway mode: the devices' JoinEUI.
    #[arg(long, default_value = "0000000000000000")]
    pub join_eui: String,
}
