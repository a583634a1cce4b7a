//! `flare-launcher dev`: a local system in one command, for a person trying
//! flare-launcher on their own machine.
//!
//! If nothing accepts connections at the first NATS URL, dev starts a
//! JetStream-enabled `nats-server` there as its child (store and log under
//! `DATA_DIR/nats`), prints how to send a first job, runs a worker with the process
//! backend until SIGTERM or SIGINT, and then stops the server it started.

use super::{CliError, ShutdownSignals};
use crate::config::{DEFAULT_POOL, DEFAULT_SUBJECT_PREFIX, Settings, WorkerConfig};
use crate::nats::connect::DEFAULT_URL;
use crate::nats::subjects::Subjects;
use crate::protocol::BackendKind;
use crate::report::error_chain;
use crate::worker::Worker;
use async_nats::ServerAddr;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The server binary looked up on `PATH`.
const NATS_SERVER_BIN: &str = "nats-server";
/// How long the started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one probe of the NATS port may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between probes while the server starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long the server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the server's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// Runs dev until SIGTERM or SIGINT; returns the exit code.
pub async fn run(settings: &Settings) -> Result<i32, CliError> {
    let mut config = settings.worker_config();
    if config.backend != BackendKind::Process {
        tracing::warn!(backend = %config.backend, "dev runs the process backend; the configured backend is ignored");
    }
    config.backend = BackendKind::Process;
    // A lone worker has no pool to hand its jobs to: Ctrl-C ends them.
    config.drain = true;
    let url = settings
        .nats
        .urls()
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Other("no NATS URL is configured".into()))?;
    let address: ServerAddr = url
        .parse()
        .map_err(|e| CliError::Other(format!("NATS URL {url:?}: {e}")))?;
    let (host, port) = (address.host().to_owned(), address.port());

    let server = if accepts_connections(&host, port).await {
        tracing::info!(%url, "a NATS server is already listening; using it");
        None
    } else {
        Some(LocalNatsServer::start(&host, port, &config.data_dir.join("nats")).await?)
    };
    let result = run_worker(config, &url, server.as_ref()).await;
    if let Some(mut server) = server {
        server.stop().await;
    }
    result?;
    Ok(0)
}

/// Starts the worker, tells how to use it, and runs it until SIGTERM or SIGINT
/// (what [`Worker::run`] does, with the hints printed once the worker is ready).
async fn run_worker(
    config: WorkerConfig,
    url: &str,
    server: Option<&LocalNatsServer>,
) -> Result<(), CliError> {
    let hints = first_job_hints(&config, url, server);
    let signals = ShutdownSignals::install()?;
    let worker = Worker::start(config).await?;
    eprintln!("{hints}");
    signals.received().await;
    worker.shutdown().await;
    Ok(())
}

async fn accepts_connections(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// Why a started `nats-server` did not come up.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    /// It exited.
    #[error("exited at start ({0})")]
    Exited(std::process::ExitStatus),
    /// Its state could not be read.
    #[error("cannot be watched: {0}")]
    Unwatchable(#[source] std::io::Error),
    /// It did not listen in time.
    #[error("did not accept connections within {secs} s", secs = READY_TIMEOUT.as_secs())]
    Timeout,
}

/// A `nats-server` child of this process.
struct LocalNatsServer {
    /// `None` once stopped.
    child: Option<Child>,
    log: PathBuf,
    store: PathBuf,
}

impl LocalNatsServer {
    /// Starts `nats-server -js` on `host:port` with its store in `dir`, and waits
    /// until it accepts connections.
    async fn start(host: &str, port: u16, dir: &Path) -> Result<LocalNatsServer, CliError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::Other(format!(
                "cannot create the NATS store {}: {e}",
                dir.display()
            ))
        })?;
        let log = dir.join("nats-server.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| CliError::Other(format!("cannot create {}: {e}", log.display())))?;
        let mut command = Command::new(NATS_SERVER_BIN);
        command
            .args(["-js", "-a", host, "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal reaches dev only,
            // so the worker drains while the server is still up.
            .process_group(0);
        // SAFETY: the closure only makes the prctl system call, which is
        // async-signal-safe, and touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                // Stop the server if dev dies without cleaning up (SIGKILL, SIGHUP).
                // The signal is tied to the spawning thread, a runtime thread that
                // lives as long as dev does.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::Other(format!(
                "nothing accepts connections at {host}:{port} and {NATS_SERVER_BIN} is not on PATH; \
                 run `source scripts/ensure-nats-server.sh` (it installs nats-server into the project's \
                 virtual environment and puts it on PATH), or scripts/run-worker.sh (which does the same), \
                 or start a NATS server with JetStream yourself"
            )),
            _ => CliError::Other(format!("cannot start {NATS_SERVER_BIN}: {e}")),
        })?;
        let mut server = LocalNatsServer {
            child: Some(child),
            log,
            store: dir.to_owned(),
        };
        match server.wait_ready(host, port).await {
            Ok(()) => {
                tracing::info!(address = %format!("{host}:{port}"), store = %dir.display(), "nats-server started");
                Ok(server)
            }
            Err(problem) => {
                server.stop().await;
                Err(CliError::Other(format!(
                    "{NATS_SERVER_BIN} on {host}:{port} {problem}; its log ({}):\n{}",
                    server.log.display(),
                    server.log_tail()
                )))
            }
        }
    }

    /// Waits until the server accepts connections; on failure says what happened.
    async fn wait_ready(&mut self, host: &str, port: u16) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => return Err(NotReady::Exited(status)),
                    Ok(None) => {}
                    Err(e) => return Err(NotReady::Unwatchable(e)),
                }
            }
            if accepts_connections(host, port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn log_tail(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(e) => format!("(unreadable: {e})"),
        }
    }

    /// Sends SIGTERM and waits for the server to exit; kills it if it takes too long.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id()
            && let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        {
            tracing::warn!(error = %error_chain(&e), "cannot send SIGTERM to nats-server");
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => tracing::info!(%status, "nats-server stopped"),
            Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "cannot wait for nats-server"),
            Err(_) => {
                tracing::warn!("nats-server did not stop after SIGTERM; killing it");
                if let Err(e) = child.kill().await {
                    tracing::warn!(error = %error_chain(&e), "cannot kill nats-server");
                }
            }
        }
    }
}

impl Drop for LocalNatsServer {
    /// The exit paths that skip [`LocalNatsServer::stop`] (a panic, a cancelled
    /// future) still ask the server to stop; the runtime reaps it.
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

/// How to send a first job to this system, with the CLI and with the `nats` tool.
fn first_job_hints(config: &WorkerConfig, url: &str, server: Option<&LocalNatsServer>) -> String {
    let subjects = Subjects::new(&config.subject_prefix);
    let mut flags = String::new();
    if url != DEFAULT_URL {
        flags.push_str(&format!(" --nats-url {url}"));
    }
    if config.subject_prefix != DEFAULT_SUBJECT_PREFIX {
        flags.push_str(&format!(" --subject-prefix {}", config.subject_prefix));
    }
    if config.pool != DEFAULT_POOL {
        flags.push_str(&format!(" --pool {}", config.pool));
    }
    let cli = format!("flare-launcher{flags}");
    let nats = format!("nats -s {url}");
    let server_line = match server {
        Some(server) => format!(
            "nats-server started here on {url} (store {}, log {})",
            server.store.display(),
            server.log.display()
        ),
        None => format!("using the NATS server already listening on {url}"),
    };
    format!(
        "
flare-launcher dev is ready: worker {worker} serves pool {pool:?} with the process backend.
{server_line}
Job output goes to {logs}/DAY/JOB.log (DAY: the UTC date it started). Stop with Ctrl-C.

Send a first job from another terminal:

  {cli} launch -- sh -c 'echo hello; sleep 2'   # follows the job, exits with its return code
  {cli} events --all                            # every job's events
  {cli} status JOB                              # JOB: the id printed by launch
  {cli} terminate JOB

or with the nats tool:

  {nats} pub {launch} '{{\"job_id\":\"j1\",\"command\":[\"sleep\",\"5\"]}}'
  {nats} sub '{events}'
  {nats} req {status} ''
  {nats} req {terminate} ''
",
        worker = config.worker_id,
        pool = config.pool,
        logs = config.data_dir.join("logs").display(),
        launch = subjects.launch(&config.pool),
        events = subjects.all("events"),
        status = subjects.status("j1"),
        terminate = subjects.terminate("j1"),
    )
}
