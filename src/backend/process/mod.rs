//! The process backend: a job is a local process, started from its argv without a
//! shell as the leader of its own process group, with stdout and stderr in a log
//! file per job, under a job supervisor (see [`crate::supervisor`]; `supervisor_link` is the
//! worker's side of it) that contains
//! its whole tree and outlives a worker that dies. Stopping it sends SIGTERM to
//! the group and SIGKILL to the whole tree after the grace. A launch goes to the
//! supervisor only once the job's record says it does (see
//! [`LaunchProgress::starting_on_host`]): no other host can follow the process.

pub mod gpu_env;
pub mod job_env;
pub mod job_user;
mod supervisor_link;

use super::Leaving;
use super::{
    Adopt, Backend, Failure, GpuAssignment, LaunchError, LaunchProgress, Launched, LogDirError,
    Observation, Recover, Recovered, Sweep, WorkloadControl, create_log_dir, new_log_file,
};
use crate::config::resources::GpuNaming;
use crate::locked::lock;
use crate::protocol::{BackendKind, BackendRef, LaunchRequest, reason};
use crate::supervisor::job_file::JobFile;
use crate::supervisor::wire::{JobLimits, RunningJob, Spawn};
use async_trait::async_trait;
use job_env::JobEnvPolicy;
use job_user::JobUser;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use supervisor_link::{LaunchFailure, Supervisor, SupervisorError, observation_of};
use tokio::sync::mpsc;

/// Where a process backend keeps things, and who its jobs run as.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// Job logs, `JOB_ID.log`.
    pub log_dir: PathBuf,
    /// The supervisor's directory (socket, lock, job files).
    pub supervisor_dir: PathBuf,
    /// The program run in supervisor mode (this program).
    pub supervisor_program: PathBuf,
    /// The user jobs run as; `None`: the worker's.
    pub job_user: Option<JobUser>,
    /// Which of the worker's variables jobs inherit.
    pub env_policy: JobEnvPolicy,
    /// Each job in a cgroup of its own, where the host allows it.
    pub cgroups: bool,
    /// How jobs' GPU variables name the GPUs they were given.
    pub gpu_naming: GpuNaming,
}

/// Why a process backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessBackendError {
    /// The log directory cannot be created.
    #[error(transparent)]
    LogDir(#[from] LogDirError),
    /// The supervisor cannot be reached or started.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// Runs jobs as supervised local processes.
pub struct ProcessBackend {
    log_dir: PathBuf,
    gpu_naming: GpuNaming,
    supervisor: Supervisor,
    /// The jobs the supervisor ran when the worker started, until [`Recover::recover`] takes them.
    found_running: Mutex<Option<Vec<RunningJob>>>,
}

impl ProcessBackend {
    /// Prepares the log directory and connects to the worker's supervisor,
    /// starting it when none runs.
    ///
    /// # Errors
    /// A [`ProcessBackendError`] saying what is missing.
    pub async fn start(settings: ProcessSettings) -> Result<Self, ProcessBackendError> {
        create_log_dir(&settings.log_dir)?;
        let mut base_env = inherited_env(&settings.env_policy);
        if let Some(user) = &settings.job_user {
            base_env.retain(|(name, _)| !matches!(name.as_str(), "HOME" | "USER" | "LOGNAME"));
            base_env.extend(
                user.identity_env()
                    .map(|(name, value)| (name.to_owned(), value.to_string_lossy().into_owned())),
            );
        }
        let (supervisor, running) = Supervisor::start(
            &settings.supervisor_dir,
            &settings.supervisor_program,
            base_env,
            settings.job_user.as_ref().map(JobUser::ids),
            settings.cgroups,
        )
        .await?;
        Ok(ProcessBackend {
            log_dir: settings.log_dir,
            gpu_naming: settings.gpu_naming,
            supervisor,
            found_running: Mutex::new(Some(running)),
        })
    }

    fn control(&self, job_id: &str) -> Box<dyn WorkloadControl> {
        Box::new(SupervisedControl {
            supervisor: self.supervisor.clone(),
            job_id: job_id.to_owned(),
        })
    }
}

/// The worker's environment that jobs inherit under `policy` (never the worker's
/// own `FLARE_*` settings, NATS credentials among them), less variables that are
/// not UTF-8, which cannot travel to the supervisor.
fn inherited_env(policy: &JobEnvPolicy) -> Vec<(String, String)> {
    let withheld = job_env::withheld(std::env::vars_os().map(|(name, _)| name), policy);
    std::env::vars_os()
        .filter(|(name, _)| !withheld.contains(name))
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

#[async_trait]
impl Backend for ProcessBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    async fn launch(
        &self,
        request: &LaunchRequest,
        gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError> {
        if !request.mounts.is_empty() {
            return Err(LaunchError::Unsupported(
                "the process backend cannot mount volumes; use the docker or k8s backend".into(),
            ));
        }
        if let Some(workdir) = request.workdir.as_deref()
            && !Path::new(workdir).is_dir()
        {
            return Err(LaunchError::Spawn(
                format!(
                    "could not start the job: its working directory {workdir} is not a directory"
                )
                .into(),
            ));
        }
        let log = new_log_file(&self.log_dir, &request.job_id)?;
        let spawn = Spawn {
            job_id: request.job_id.clone(),
            argv: request.command.clone(),
            env: gpu_env::job_env(request, gpus, self.gpu_naming),
            workdir: request.workdir.clone(),
            log: log.clone(),
            limits: JobLimits::of(request.resources.as_ref()),
        };
        // Recorded first: a worker that finds the launch left by this one,
        // gone, then knows the process may run here, and does not start it again.
        progress
            .starting_on_host()
            .await
            .map_err(|unrecorded| LaunchError::Spawn(Failure::of(unrecorded)))?;
        let (pid, observations) = self.supervisor.launch(spawn).await.map_err(|e| match e {
            LaunchFailure::Spawn(refusal) => LaunchError::Spawn(Failure::of(refusal)),
            LaunchFailure::Unavailable(e) => LaunchError::Unavailable(Failure::of(e)),
        })?;
        Ok(Launched {
            backend_ref: BackendRef::Process { pid },
            detail: Some(format!("pid {pid}, output in {}", log.display())),
            observations,
            control: self.control(&request.job_id),
        })
    }

    async fn answers(&self) -> Result<(), Failure> {
        if self.supervisor.linked().await {
            return Ok(());
        }
        Err(format!(
            "no connection to the job supervisor in {}",
            self.supervisor.dir().display()
        )
        .into())
    }

    async fn release(&self, job_id: &str) {
        self.supervisor.forget(job_id).await;
    }

    async fn close(&self, leaving: Leaving) {
        match leaving {
            // The supervisor keeps the jobs for the worker that next starts
            // on this host, as it does when a worker dies.
            Leaving::HandingOver => self.supervisor.detach().await,
            Leaving::GivingUp => self.supervisor.leave().await,
        }
    }

    fn gives_secrets(&self) -> bool {
        true
    }

    fn recovery(&self) -> Option<&dyn Recover> {
        Some(self)
    }

    fn adoption(&self) -> Option<&dyn Adopt> {
        None
    }

    fn sweep(&self) -> Option<&dyn Sweep> {
        None
    }
}

#[async_trait]
impl Recover for ProcessBackend {
    async fn recover(&self) -> Vec<Recovered> {
        let running = lock(&self.found_running).take().unwrap_or_default();
        let files = JobFile::read_all(self.supervisor.dir());
        let mut recovered = Vec::new();
        for file in &files {
            let observations = if running.iter().any(|r| r.job_id == file.job_id) {
                self.supervisor.follow(&file.job_id)
            } else {
                let observation = match &file.end {
                    Some(end) => observation_of(end.clone()),
                    None => Observation::Vanished {
                        reason: reason::OWNER_LOST,
                        message: "its supervisor is gone (the host restarted, or the supervisor was killed)".into(),
                    },
                };
                let (observe, observations) = mpsc::channel(1);
                let _ = observe.try_send(observation);
                observations
            };
            recovered.push(self.recovered(&file.job_id, file.pid, observations));
        }
        // Launched an instant before the worker went: no file yet.
        for job in running
            .iter()
            .filter(|r| !files.iter().any(|f| f.job_id == r.job_id))
        {
            let observations = self.supervisor.follow(&job.job_id);
            recovered.push(self.recovered(&job.job_id, job.pid.unwrap_or(0), observations));
        }
        recovered
    }
}

impl ProcessBackend {
    fn recovered(
        &self,
        job_id: &str,
        pid: u32,
        observations: mpsc::Receiver<Observation>,
    ) -> Recovered {
        Recovered {
            job_id: job_id.to_owned(),
            launched: Launched {
                backend_ref: BackendRef::Process { pid },
                detail: None,
                observations,
                control: self.control(job_id),
            },
        }
    }
}

/// Stops one job through its supervisor.
struct SupervisedControl {
    supervisor: Supervisor,
    job_id: String,
}

#[async_trait]
impl WorkloadControl for SupervisedControl {
    async fn stop(&self, grace: Duration) {
        self.supervisor.stop(&self.job_id, grace).await;
    }
}
