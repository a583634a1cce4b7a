//! `flare-launcher status JOB_ID`: prints a job's record as JSON;
//! `flare-launcher status --worker WORKER`: a worker's resources (policy, GPUs,
//! allocations, what is free); `flare-launcher status --pool-resources`: those of
//! every worker of the pool that answers.

use super::{CliError, client};
use crate::config::Settings;
use std::time::Duration;

/// How long the answers of a pool's workers are collected.
const POOL_ANSWER_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct StatusArgs {
    /// The job
    job_id: Option<String>,
    /// Print this worker's resources instead: its policy, GPUs, which job holds which, and what is free
    #[arg(long)]
    worker: Option<String>,
    /// Print the resources of every worker of the pool that answers within a second
    #[arg(long)]
    pool_resources: bool,
}

pub async fn run(settings: &Settings, args: StatusArgs) -> Result<i32, CliError> {
    let client = client(settings).await?;
    let text = if let Some(worker) = &args.worker {
        to_json(&client.worker_resources(worker).await?)
    } else if args.pool_resources {
        to_json(&client.pool_resources(POOL_ANSWER_WINDOW).await?)
    } else {
        let job_id = args.job_id.unwrap_or_default();
        to_json(&client.status(&job_id).await?)
    };
    println!("{text}");
    Ok(0)
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("replies serialize")
}
