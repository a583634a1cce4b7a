//! The `flare-launcher` binary: parses the command line and runs the command.

use clap::Parser;
use flare_launcher::cli::{Cli, run, run_before_runtime};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = run_before_runtime(&cli) {
        return exit_code(code);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flare-launcher: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => exit_code(code),
        Err(e) => {
            eprintln!("flare-launcher: {e}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
