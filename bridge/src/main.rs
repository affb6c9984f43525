use clap::Parser;
use longproto_bridge::cli::{Cli, run_tool};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(command) => run_tool(&cli, command),
        None => {
            eprintln!("error: running the service is not available in this build yet");
            ExitCode::FAILURE
        }
    }
}
