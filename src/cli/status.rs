//! `flare-launcher status JOB_ID`: prints a job's record as JSON.

use super::{CliError, client};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job
    job_id: String,
}

pub async fn run(settings: &Settings, args: StatusArgs) -> Result<i32, CliError> {
    let record = client(settings).await?.status(&args.job_id).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&record).expect("records serialize")
    );
    Ok(0)
}
