//! `flare-launcher events [JOB_ID]`: follows job events; `--all` replays the
//! stream from its start first.

use super::output::print_event;
use super::{CliError, client};
use crate::config::Settings;
use futures::StreamExt;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this job's events
    job_id: Option<String>,
    /// Replay every stored event first, then follow
    #[arg(long)]
    all: bool,
    /// Print events as JSON lines
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: EventsArgs) -> Result<i32, CliError> {
    let client = client(settings).await?;
    let mut events = Box::pin(client.events(args.job_id.as_deref(), args.all).await?);
    while let Some(event) = events.next().await {
        print_event(&event?, args.json);
    }
    Ok(0)
}
