//! Log set-up: tracing with structured fields, readable on a terminal and under journald.
use gateway_config::{LogFormat, LoggingSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. RUST_LOG, when set, wins over `logging.level`.
pub fn init(s: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&s.level));
    let terminal = std::io::stderr().is_terminal();
    // journald stamps every line itself
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal && s.format == LogFormat::Auto);
    let result = match (s.format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (_, true) => builder.without_time().try_init(),
        _ => builder.try_init(),
    };
    // a second init (tests starting several bridges) keeps the first subscriber
    let _ = result;
}
