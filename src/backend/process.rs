//! The process backend: a job is a local process, started from its argv without a
//! shell as the leader of its own process group, with stdout and stderr in a log
//! file per job, which the worker opens itself (so a job user needs no access to the
//! data directory). Stopping it sends SIGTERM to the group and SIGKILL after the grace.

use super::job_env::{self, JobEnvPolicy};
use super::job_user::JobUser;
use super::{Backend, LaunchError, Launched, Observation, WorkloadControl};
use crate::protocol::{BackendKind, BackendRef, LaunchRequest};
use crate::state::Exit;
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

/// Runs jobs as local processes.
pub struct ProcessBackend {
    log_dir: PathBuf,
    /// The worker's variables its jobs go without (see [`job_env`]), computed once.
    withheld_env: Vec<OsString>,
    /// Whom jobs run as; `None`: the worker's user.
    job_user: Option<JobUser>,
}

impl ProcessBackend {
    /// A backend writing job logs to `log_dir/JOB_ID.log`, withholding from jobs
    /// what `env_policy` says of the worker's environment, running them as
    /// `job_user` when given.
    ///
    /// # Errors
    /// The I/O error when `log_dir` cannot be created.
    pub fn new(
        log_dir: PathBuf,
        env_policy: &JobEnvPolicy,
        job_user: Option<JobUser>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&log_dir)?;
        let withheld_env = job_env::withheld(std::env::vars_os().map(|(name, _)| name), env_policy);
        Ok(ProcessBackend {
            log_dir,
            withheld_env,
            job_user,
        })
    }

    /// Where a job's output goes.
    pub fn log_path(&self, job_id: &str) -> PathBuf {
        self.log_dir.join(format!("{job_id}.log"))
    }
}

#[async_trait]
impl Backend for ProcessBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Launched, LaunchError> {
        if !request.mounts.is_empty() {
            return Err(LaunchError::Unsupported(
                "the process backend cannot mount volumes; use the docker or k8s backend".into(),
            ));
        }
        let program = request.command[0].clone();
        let spawn_error = |source| LaunchError::Spawn {
            program: program.clone(),
            source,
        };
        if let Some(workdir) = request.workdir.as_deref()
            && !std::path::Path::new(workdir).is_dir()
        {
            return Err(spawn_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its working directory {workdir} is not a directory"),
            )));
        }
        let log_path = self.log_path(&request.job_id);
        let log = std::fs::File::create(&log_path).map_err(spawn_error)?;
        let log_err = log.try_clone().map_err(spawn_error)?;

        let mut command = Command::new(&program);
        for name in &self.withheld_env {
            command.env_remove(name);
        }
        if let Some(user) = &self.job_user {
            command.envs(user.identity_env());
            // SAFETY: the closure only makes system calls, allocates nothing and
            // touches no memory shared with the parent.
            unsafe { command.pre_exec(user.switch_in_child()) };
        }
        command
            .args(&request.command[1..])
            .envs(&request.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        if let Some(workdir) = &request.workdir {
            command.current_dir(workdir);
        }
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().ok_or_else(|| {
            spawn_error(std::io::Error::other(
                "the process ended before its pid was read",
            ))
        })?;

        let (observe, observations) = mpsc::channel(4);
        let (stop, stops) = mpsc::channel(1);
        // The channel has room, so this cannot fail or wait.
        let _ = observe.try_send(Observation::Running);
        tokio::spawn(watch(child, pid, stops, observe));
        Ok(Launched {
            backend_ref: BackendRef::Process { pid },
            detail: Some(format!("pid {pid}, output in {}", log_path.display())),
            observations,
            control: Box::new(ProcessControl { stop }),
        })
    }
}

/// Stops one process group through its watcher.
struct ProcessControl {
    stop: mpsc::Sender<Duration>,
}

#[async_trait]
impl WorkloadControl for ProcessControl {
    async fn stop(&self, grace: Duration) {
        // An error means the watcher is gone: the process has ended already.
        let _ = self.stop.send(grace).await;
    }
}

/// Waits for the process, signals its group when asked, and reports the exit.
/// When the leader has exited, whatever it left in its group is killed, as a
/// container's processes end with its main process.
async fn watch(
    mut child: Child,
    pid: u32,
    mut stops: mpsc::Receiver<Duration>,
    observe: mpsc::Sender<Observation>,
) {
    let group = Pid::from_raw(pid as i32);
    let mut kill_at: Option<Instant> = None;
    let mut stopped = false;
    let status = loop {
        tokio::select! {
            // An exit that is there already wins over a stop arriving with it.
            biased;
            status = child.wait() => break status,
            Some(grace) = stops.recv() => {
                stopped = true;
                signal_group(group, Signal::SIGTERM);
                let at = Instant::now() + grace;
                kill_at = Some(kill_at.map_or(at, |earlier| earlier.min(at)));
            }
            () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                signal_group(group, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    signal_group(group, Signal::SIGKILL);
    let observation = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Observation::Exited {
                exit: Exit::Code(code),
                stopped,
            },
            (None, Some(signal)) => Observation::Exited {
                exit: Exit::Signal(signal),
                stopped,
            },
            (None, None) => Observation::Vanished {
                message: format!("process {pid} ended without an exit code or signal"),
            },
        },
        Err(e) => Observation::Vanished {
            message: format!("could not wait for process {pid}: {e}"),
        },
    };
    // The job task may have gone already (e.g. after a start timeout); nobody is left to tell.
    let _ = observe.send(observation).await;
}

fn signal_group(group: Pid, signal: Signal) {
    if let Err(e) = killpg(group, signal) {
        // ESRCH: the group is gone already, which is what we wanted.
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pgid = group.as_raw(), ?signal, error = %e, "could not signal process group");
        }
    }
}
