//! `flare-launcher worker`: runs a worker until SIGTERM or SIGINT.

use super::{CliError, ShutdownSignals};
use crate::config::Settings;
use crate::worker::Worker;

pub async fn run(settings: &Settings) -> Result<i32, CliError> {
    let signals = ShutdownSignals::install()?;
    Worker::run(settings.worker_config(), signals.received()).await?;
    Ok(0)
}
