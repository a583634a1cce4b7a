//! The `flare-launcher` binary: parses the command line and runs the command.

use flare_launcher::cli::{parse, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = parse();
    match run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("flare-launcher: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
