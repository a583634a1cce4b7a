//! `flare-launcher terminate JOB_ID`: asks the workers to stop a job and prints
//! their reply; exits 0 when the terminate was accepted, 1 when not.

use super::{CliError, client};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct TerminateArgs {
    /// The job
    job_id: String,
    /// Seconds between the polite stop and the kill [default: 10]
    #[arg(long)]
    grace: Option<u64>,
}

pub async fn run(settings: &Settings, args: TerminateArgs) -> Result<i32, CliError> {
    let reply = client(settings)
        .await?
        .terminate(&args.job_id, args.grace)
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&reply).expect("replies serialize")
    );
    Ok(if reply.accepted { 0 } else { 1 })
}
