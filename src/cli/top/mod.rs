//! `flare-launcher top`: a live view of the pool in the terminal: the workers
//! with their capacity, running jobs and GPUs; the jobs by state with their
//! age, backend and worker; the failures by reason. It follows events and
//! leases ([`feed`]) into a view model ([`model`]) that [`draw`] shows and
//! [`app`] drives; Enter opens the selected job's output ([`child`]).

mod app;
mod child;
mod draw;
mod feed;
mod model;

use super::{CliError, client};
use crate::config::Settings;
use std::ffi::OsString;

pub use app::AppError;
pub use child::global_flags;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Most ended jobs kept in view (the most recent); failures are counted
    /// over every job seen
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    keep_ended: u32,
}

/// Runs the view until a quit key; `global_flags` are the global options given
/// on the command line, for the output command Enter runs.
pub async fn run(
    settings: &Settings,
    args: TopArgs,
    global_flags: Vec<OsString>,
) -> Result<i32, CliError> {
    let client = client(settings).await?;
    let updates = feed::start(client).await?;
    app::App {
        model: model::Model::new(args.keep_ended as usize),
        updates,
        scope: draw::Scope {
            prefix: &settings.subject_prefix,
        },
        global_flags,
    }
    .run()
    .await?;
    Ok(0)
}
