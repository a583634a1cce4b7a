//! The `flare-launcher` binary: parses the command line, runs the command, and prints
//! a failure with its causes.

use clap::Parser;
use flare_launcher::cli::{Cli, run};
use flare_launcher::report::error_chain;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("flare-launcher: {}", error_chain(&e));
            std::process::ExitCode::from(2)
        }
    }
}
