//! The command line: `longproto-bridge [-c FILE]... [COMMAND]`.
use crate::commands::json::parse_frame;
use crate::pipeline::codec::Codec;
use clap::{Parser, Subcommand};
use gateway_config::{Settings, Sources};
use std::path::PathBuf;
use std::process::ExitCode;

/// Bridges ChirpStack and Sigfox to MQTT: decodes telemetry and fills each device's
/// receive windows with commands.
#[derive(Debug, Parser)]
#[command(name = "longproto-bridge", version, about)]
pub struct Cli {
    /// Configuration file (TOML); repeat to merge several, later ones win. Then
    /// LONGPROTO__SECTION__KEY environment variables override single keys.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Vec<PathBuf>,

    /// What to do; without a command, run the service.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands besides running the service.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration: exit 0 when valid, 1 listing every problem.
    CheckConfig,
    /// Print the fully commented default configuration.
    Configfile,
    /// Print the decoded JSON of one payload; exit 1 with the reason when it does not
    /// decode. fPort 20 with longproto-v1 decodes command frames (a downlink).
    Decode {
        /// longproto-v1, cayenne-lpp or raw.
        #[arg(long, default_value = "longproto-v1")]
        codec: String,
        /// The LoRaWAN fPort; leave out for a Sigfox payload.
        #[arg(long)]
        fport: Option<u8>,
        /// The payload in hex.
        hex: String,
    },
    /// Run the bridge with embedded defaults and a simulated fleet, for a first look:
    /// an embedded MQTT broker (unless -c names one), SQLite in a temporary directory,
    /// LoRaWAN class A and C vehicles and a Sigfox vehicle taking an unlock, a locate and
    /// a lock. Ctrl-C stops it.
    Demo {
        /// Stop after this many seconds.
        #[arg(long)]
        duration_s: Option<u64>,
    },
    /// Print the SHA-256 of an API token's secret, read from standard input (one line),
    /// as [operators.token] NAME = { secret_sha256 = "..." } wants it; the secret
    /// itself goes nowhere.
    HashToken,
    /// Print the hex of a command frame, from its JSON: the request body plus its
    /// counter, e.g. '{"command":"unlock","args":{"auto_relock_s":30},"counter":42}'.
    /// An array of them gives the frames one after another (a coalesced downlink).
    EncodeCommand {
        /// The command's JSON.
        json: String,
    },
}

/// Loads the configuration named on the command line.
pub fn load_settings(files: &[PathBuf]) -> Result<Settings, gateway_config::Problems> {
    gateway_config::load(&Sources::files(files.iter().cloned()))
}

/// Runs a command that is not the service; returns the process exit code.
pub fn run_tool(cli: &Cli, command: &Command) -> ExitCode {
    match command {
        Command::CheckConfig => match load_settings(&cli.config) {
            Ok(settings) => {
                if !settings.http.api_tokens.is_empty() {
                    eprintln!(
                        "note: http.api_tokens (and http.api_tokens_file) are deprecated: each \
                         token has every scope over every device and is stored in clear; \
                         give each operator a named token in [operators.token] \
                         (longproto-bridge hash-token prints its secret_sha256)"
                    );
                }
                let what = if cli.config.is_empty() {
                    "the defaults".to_string()
                } else {
                    cli.config
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!("configuration is valid ({what})");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprint!("{problems}");
                ExitCode::FAILURE
            }
        },
        Command::Configfile => {
            print!("{}", gateway_config::render_default());
            ExitCode::SUCCESS
        }
        Command::Decode { codec, fport, hex } => report(decode(codec, *fport, hex)),
        Command::EncodeCommand { json } => report(encode_command(json)),
        Command::HashToken => report(hash_token(std::io::stdin().lock())),
        Command::Demo { duration_s } => demo(cli, *duration_s),
    }
}

#[cfg(not(feature = "demo"))]
fn demo(_: &Cli, _: Option<u64>) -> ExitCode {
    eprintln!(
        "error: this longproto-bridge is built without the demo (cargo feature `demo`); \
         from the source tree: cargo run -p longproto-bridge -- demo"
    );
    ExitCode::FAILURE
}

#[cfg(feature = "demo")]
fn demo(cli: &Cli, duration_s: Option<u64>) -> ExitCode {
    let settings = if cli.config.is_empty() {
        None
    } else {
        match load_settings(&cli.config) {
            Ok(s) => Some(s),
            Err(problems) => {
                eprint!("{problems}");
                return ExitCode::FAILURE;
            }
        }
    };
    // warnings only (RUST_LOG wins); the embedded broker's own log stays quiet
    let logging = gateway_config::LoggingSettings {
        level: "warn,rumqttd=off".into(),
        ..Default::default()
    };
    crate::logging::init(&logging);
    let opts = crate::demo::DemoOptions {
        duration: duration_s.map(std::time::Duration::from_secs),
        settings,
    };
    let run = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(crate::demo::run(opts)));
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let clean: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    ::hex::decode(clean).map_err(|e| format!("\"{hex}\" is not hex: {e}"))
}

/// `decode`: the JSON of one payload.
pub fn decode(codec: &str, fport: Option<u8>, hex: &str) -> Result<String, String> {
    let codec = Codec::from_name(codec).ok_or_else(|| {
        let names: Vec<_> = Codec::ALL.iter().map(|c| c.name()).collect();
        format!(
            "unknown codec \"{codec}\"; expected one of {}",
            names.join(", ")
        )
    })?;
    let bytes = parse_hex(hex)?;
    let (direction, records) =
        if codec == Codec::LongprotoV1 && fport == Some(device_node::COMMAND_FPORT) {
            ("downlink", Codec::decode_downlink(&bytes))
        } else {
            ("uplink", codec.decode_uplink(&bytes, fport))
        };
    let records = records.map_err(|e| format!("{} payload does not decode: {e}", codec.name()))?;
    let out = serde_json::json!({
        "codec": codec.name(),
        "direction": direction,
        "fport": fport,
        "raw_hex": ::hex::encode(&bytes),
        "records": records,
    });
    Ok(serde_json::to_string_pretty(&out).unwrap_or_default())
}

/// `encode-command`: the hex of one or several command frames.
pub fn encode_command(json: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let frame = parse_frame(item).map_err(|e| {
            if items.len() > 1 {
                format!("[{i}] {e}")
            } else {
                e
            }
        })?;
        let bytes = frame.encode().map_err(|e| e.to_string())?;
        out.push_str(&::hex::encode(bytes));
    }
    Ok(out)
}

/// `hash-token`: the SHA-256 of the first line of `input`, in hex.
pub fn hash_token(mut input: impl std::io::BufRead) -> Result<String, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the secret from standard input: {e}"))?;
    let secret = line.trim_end_matches(['\n', '\r']);
    if secret.len() < 16 || secret.chars().any(char::is_whitespace) {
        return Err("a secret needs 16 characters or more and no white space".into());
    }
    Ok(crate::operators::hash_secret(secret))
}
