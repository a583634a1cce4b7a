//! `flare-launcher logs JOB_ID [-f] [--tail N]`: prints a job's output, from
//! whichever host runs it; with `-f`, follows it until the job ends.

use super::{CliError, client};
use crate::client::output::{OutputReader, tail_start};
use crate::config::Settings;
use crate::protocol::MAX_OUTPUT_CHUNK;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long the job's worker holds a follower's request while nothing new
/// comes.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job
    job_id: String,
    /// Follow the output until the job ends (also when another worker takes the job over)
    #[arg(short, long)]
    follow: bool,
    /// Start with the last N lines
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
}

pub async fn run(settings: &Settings, args: LogsArgs) -> Result<i32, CliError> {
    let client = client(settings).await?;
    let mut reader = OutputReader::new(&client, &args.job_id);
    let mut offset = 0;
    if let Some(lines) = args.tail {
        let size = reader.read(0, 0, Duration::ZERO).await?.size;
        offset = tail_start(&mut reader, size, lines, MAX_OUTPUT_CHUNK).await?;
    }
    let wait = if args.follow {
        FOLLOW_WAIT
    } else {
        Duration::ZERO
    };
    let mut stdout = tokio::io::stdout();
    loop {
        let piece = reader.read(offset, MAX_OUTPUT_CHUNK, wait).await?;
        let printed = async {
            stdout.write_all(&piece.data).await?;
            stdout.flush().await
        };
        if let Err(e) = printed.await {
            // Closed by whoever reads it (`| head`): nothing more to do.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(0);
            }
            return Err(CliError::Other(format!("cannot write the output: {e}")));
        }
        offset = piece.next_offset;
        if piece.complete || (!args.follow && piece.data.is_empty()) {
            return Ok(0);
        }
    }
}
