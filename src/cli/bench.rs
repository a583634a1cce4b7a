//! `flare-launcher bench`: load tool.

use super::CliError;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_settings: &Settings, _args: BenchArgs) -> Result<i32, CliError> {
    Err(CliError::Other("bench: not yet".into()))
}
