//! `flare-launcher probe`: asks a worker's endpoint (`--metrics-listen`) whether
//! it is ready (or alive, or for its metrics) and exits 0 when it answers 200,
//! 1 otherwise, printing what it said: the health check of the worker's
//! container, whose image holds nothing else to ask with.

use super::CliError;
use crate::observe::ask;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The worker's endpoint, as given to its --metrics-listen (0.0.0.0 is asked on 127.0.0.1)
    #[arg(long, default_value = "127.0.0.1:9464")]
    address: SocketAddr,
    /// What to ask: /readyz, /healthz or /metrics
    #[arg(long, default_value = "/readyz")]
    path: String,
    /// Seconds the answer may take
    #[arg(long, default_value_t = 5)]
    timeout_s: u64,
}

pub async fn run(args: ProbeArgs) -> Result<i32, CliError> {
    let mut address = args.address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let limit = Duration::from_secs(args.timeout_s);
    match ask::get(address, &args.path, limit).await {
        Ok((200, body)) => {
            print!("{body}");
            Ok(0)
        }
        Ok((status, body)) => {
            eprint!("{status} {body}");
            Ok(1)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}
