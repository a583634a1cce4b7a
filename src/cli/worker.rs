//! `flare-launcher worker`: runs a worker until SIGTERM or SIGINT.

use super::{CliError, shutdown_signal};
use crate::config::Settings;
use crate::worker::Worker;

pub async fn run(settings: &Settings) -> Result<i32, CliError> {
    Worker::run(settings.worker_config(), shutdown_signal()).await?;
    Ok(0)
}
