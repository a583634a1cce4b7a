//! `flare-launcher dev`: a local system in one command.

use super::CliError;
use crate::config::Settings;

pub async fn run(_settings: &Settings) -> Result<i32, CliError> {
    Err(CliError::Other("dev: not yet".into()))
}
