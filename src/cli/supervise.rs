//! `flare-launcher supervise --dir DIR`: the supervisor of a worker's process
//! jobs. A worker starts it itself; it is not meant to be run by hand.

use crate::supervisor::server;
use std::path::PathBuf;

/// Arguments of `supervise`.
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// The supervisor's directory (socket, lock, job files)
    #[arg(long)]
    pub dir: PathBuf,
}

/// Serves until nothing is left to supervise; returns the exit code.
pub fn run(args: &SuperviseArgs) -> i32 {
    match server::serve(&args.dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flare-launcher supervise: {e}");
            2
        }
    }
}
