use clap::Parser;
use longproto_bridge::cli::{Cli, load_settings, run_tool};
use std::process::ExitCode;

/// mimalloc: the ingest path allocates small strings and maps per message, and glibc
/// malloc spent a sixth of the CPU in them (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return run_tool(&cli, command);
    }
    let settings = match load_settings(&cli.config) {
        Ok(s) => s,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    longproto_bridge::logging::init(&settings.logging);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(longproto_bridge::app::run_until_signal(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
