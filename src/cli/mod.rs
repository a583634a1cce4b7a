//! The `flare-launcher` command line: argument parsing and one small function per
//! command over the library.

mod bench;
mod config_reference;
mod dev;
mod events;
mod launch;
mod logs;
mod output;
mod probe;
mod schemas;
mod secret_flags;
mod status;
mod supervise;
mod terminate;
mod top;
mod worker;
mod workers;

use crate::client::{Client, ClientError};
use crate::config::{ConfigError, GlobalArgs, Settings, WorkerArgs};
use crate::nats::connect::{self, ConnectError};
use crate::nats::subjects::Subjects;
use crate::worker::WorkerError;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use secret_flags::SecretFlag;

/// Runs NVIDIA FLARE jobs as processes, containers or pods, driven over NATS.
#[derive(Debug, Parser)]
#[command(name = "flare-launcher", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// Secrets whose value came from the command line (filled in by [`parse`]).
    #[arg(skip)]
    pub secrets_given_as_flags: Vec<SecretFlag>,
    /// The global options given on the command line, written out again for a
    /// child of the same program (filled in by [`parse`]).
    #[arg(skip)]
    pub global_flags: Vec<std::ffi::OsString>,
}

/// Parses the process's arguments (exiting with clap's message when they are
/// wrong), noting which secrets were given as flags.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.secrets_given_as_flags = secret_flags::given_as_flags(&matches);
    cli.global_flags = top::global_flags(&Cli::command(), &matches);
    cli
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: take launch requests of its pool, run the jobs, publish their events
    Worker(WorkerArgs),
    /// Publish a launch request, follow its events and exit with the job's return code
    Launch(launch::LaunchArgs),
    /// Ask the workers to terminate a job
    Terminate(terminate::TerminateArgs),
    /// Print a job's record
    Status(status::StatusArgs),
    /// Print a job's output, from whichever host runs it; -f follows it to the job's end
    Logs(logs::LogsArgs),
    /// Follow job events (of one job, or all)
    Events(events::EventsArgs),
    /// List the live workers of the pool, from their leases
    Workers(workers::WorkersArgs),
    /// A live view of the pool: workers, jobs by state, failures by reason (Enter: a job's output)
    Top(top::TopArgs),
    /// Start a local nats-server (if none is reachable) and a worker with the process backend
    Dev(WorkerArgs),
    /// Ask a worker's endpoint whether it is ready (exit 0) or not (exit 1): a container's health check
    Probe(probe::ProbeArgs),
    /// Drive a running system with many jobs and print latency, throughput and worker memory
    Bench(bench::BenchArgs),
    /// Write the protocol's JSON Schemas into a directory
    Schemas(schemas::SchemasArgs),
    /// The supervisor of a worker's process jobs (started by the worker itself)
    #[command(hide = true)]
    Supervise(supervise::SuperviseArgs),
    /// Rewrite docs/configuration.md's option tables and deploy/config.example.toml from the options' declarations
    #[command(hide = true)]
    ConfigReference(config_reference::ConfigReferenceArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The worker could not start.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Talking to the workers failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The configuration reference could not be written.
    #[error(transparent)]
    Reference(#[from] crate::config::reference::ReferenceError),
    /// The launch request built from the flags breaks a rule.
    #[error("invalid launch request: {0}")]
    InvalidRequest(#[from] crate::protocol::InvalidLaunch),
    /// A secret variable named on the command line is not in its environment.
    #[error(transparent)]
    MissingSecret(#[from] launch::MissingSecret),
    /// The live view could not go on.
    #[error(transparent)]
    Top(#[from] top::AppError),
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

/// Runs the commands that must run before any async runtime starts: the
/// supervisor forks, and a process with the runtime's threads must not. Returns
/// `None` for every other command, which [`run`] runs.
pub fn run_before_runtime(cli: &Cli) -> Option<i32> {
    match &cli.command {
        Command::Supervise(args) => Some(supervise::run(args)),
        _ => None,
    }
}

/// Runs a parsed command line; returns the process exit code.
///
/// # Errors
/// A [`CliError`] to print before exiting with status 2.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let worker_args = match &cli.command {
        Command::Worker(args) | Command::Dev(args) => args.clone(),
        _ => WorkerArgs::default(),
    };
    let settings = Settings::load(cli.global, worker_args)?;
    let long_running = matches!(cli.command, Command::Worker(_) | Command::Dev(_));
    // Log lines would be drawn over the live view: it shows problems itself.
    if !matches!(cli.command, Command::Top(_)) {
        crate::telemetry::init(
            settings.log_format,
            if long_running { "info" } else { "warn" },
        );
    }
    if long_running {
        secret_flags::warn(&cli.secrets_given_as_flags);
    }
    match cli.command {
        Command::Worker(_) => worker::run(&settings).await,
        Command::Dev(_) => dev::run(&settings).await,
        Command::Launch(args) => launch::run(&settings, args).await,
        Command::Terminate(args) => terminate::run(&settings, args).await,
        Command::Status(args) => status::run(&settings, args).await,
        Command::Logs(args) => logs::run(&settings, args).await,
        Command::Events(args) => events::run(&settings, args).await,
        Command::Workers(args) => workers::run(&settings, args).await,
        Command::Top(args) => top::run(&settings, args, cli.global_flags).await,
        Command::Bench(args) => bench::run(&settings, args).await,
        Command::Probe(args) => probe::run(args).await,
        Command::Schemas(args) => schemas::run(args),
        Command::ConfigReference(args) => config_reference::run(args),
        Command::Supervise(_) => Err(CliError::Other(
            "the supervise command runs before the async runtime starts".into(),
        )),
    }
}

/// Connects a client for the CLI's short-lived commands: fail fast when NATS is
/// not there.
async fn client(settings: &Settings) -> Result<Client, CliError> {
    let nats = connect::connect(&settings.nats, "flare-launcher cli", false).await?;
    Ok(Client::new(
        nats,
        Subjects::new(&settings.subject_prefix),
        &settings.pool,
    ))
}

/// SIGTERM and SIGINT, caught from the moment they are installed: a worker
/// installs them before it takes its first request, so a stop that comes at once
/// is an orderly one.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind)
                .map_err(|e| CliError::Other(format!("cannot listen for SIGTERM/SIGINT: {e}")))
        };
        Ok(ShutdownSignals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the first of the two.
    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_flags_and_the_global_nats_flags_of_the_same_field_name_both_parse() {
        let cli = Cli::try_parse_from([
            "fl",
            "worker",
            "--nats-user",
            "u",
            "--docker-user",
            "1:2",
            "--backends",
            "process,docker",
            "--docker-ulimits",
            "nofile=1:2,nproc=3",
        ])
        .unwrap();
        assert_eq!(cli.global.nats.user.as_deref(), Some("u"));
        let Command::Worker(worker) = cli.command else {
            panic!("the worker command");
        };
        assert_eq!(worker.docker.user.unwrap().to_string(), "1:2");
        let ulimits: Vec<String> = worker
            .docker
            .ulimits
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ulimits, ["nofile=1:2", "nproc=3:3"]);
        assert_eq!(
            worker.worker.backends.unwrap(),
            [
                crate::protocol::BackendKind::Process,
                crate::protocol::BackendKind::Docker
            ]
        );
    }
}
