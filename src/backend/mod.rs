//! The seam between the worker and the places jobs run: a [`Backend`] launches a
//! workload and hands back a [`Launched`] with the workload's name, a channel of
//! [`Observation`]s and a [`WorkloadControl`] to stop it.
//!
//! Observations are pushed by the backend (a process watcher here; a shared Docker
//! event stream or Kubernetes watch for the container backends), so a job task
//! costs nothing while its workload runs.
//!
//! Besides launching, a backend tells the job how its launch goes ([`LaunchProgress`]:
//! the workload's name as soon as it exists, what it is doing meanwhile) and lets
//! go of a workload once its job's end is recorded. What else it can do (find its
//! workloads again after a restart, adopt one by name, list them and remove those
//! nobody claims) it declares as [`capabilities`]. The worker builds its backends
//! through the [`registry`].

pub mod capabilities;
pub mod container;
pub mod docker;
mod gpu_assignment;
pub mod k8s;
mod launch_error;
mod launch_progress;
pub mod process;
pub mod registry;

pub use capabilities::{Adopt, AdoptionScope, Recover, Sweep};
pub use gpu_assignment::GpuAssignment;
pub use launch_error::{Cause, Failure, LaunchError};
pub use launch_progress::{LaunchProgress, Progress, ProgressReports, Unrecorded, started_on_host};

use crate::protocol::bounded::bounded;
use crate::protocol::{BackendKind, BackendRef, LaunchRequest};
use crate::state::Exit;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// What a backend saw happen to a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The workload runs.
    Running,
    /// The workload ended.
    Exited {
        /// How it ended.
        exit: Exit,
        /// Whether the backend had asked it to stop (polite stop or kill) before
        /// it ended: then it ended because it was told to, whatever its code.
        stopped: bool,
        /// Why it ended, when the backend knows more than the code tells (e.g.
        /// `OOMKilled`).
        reason: Option<&'static str>,
    },
    /// The workload will never run (e.g. its image cannot be pulled).
    StartFailed {
        /// Machine-readable cause, e.g. `ImagePullBackOff`.
        reason: String,
        /// Human-readable detail.
        message: String,
    },
    /// The workload is gone and nobody can tell how it ended.
    Vanished {
        /// Machine-readable cause, e.g. `OwnerLost`.
        reason: &'static str,
        /// What is known.
        message: String,
    },
}

impl Observation {
    /// Whether this ends a workload that runs (a start failure does not: it
    /// concerns a workload that never ran).
    pub fn ends_running_workload(&self) -> bool {
        matches!(
            self,
            Observation::Exited { .. } | Observation::Vanished { .. }
        )
    }
}

/// A workload that was created.
pub struct Launched {
    /// Names the workload.
    pub backend_ref: BackendRef,
    /// Human-readable detail for the `running` event (e.g. where the log goes).
    pub detail: Option<String>,
    /// What happens to it, in order; closed after the last observation.
    pub observations: mpsc::Receiver<Observation>,
    /// How to stop it.
    pub control: Box<dyn WorkloadControl>,
}

/// Stops a workload.
#[async_trait]
pub trait WorkloadControl: Send + Sync {
    /// Asks the workload to stop politely now and kills it after `grace`. Returns
    /// once the stop is under way; the exit arrives as an [`Observation`].
    async fn stop(&self, grace: Duration);

    /// Why the workload has not started running yet, when its backend knows
    /// more than that time ran out (the scheduler's or the node's words): the
    /// reason and message of the job's `error` event when `start_s` runs out.
    async fn start_blocker(&self) -> Option<(String, String)> {
        None
    }
}

/// A workload a backend found carrying this worker's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Its job.
    pub job_id: String,
    /// Its name.
    pub backend_ref: BackendRef,
    /// When it was created, if the backend knows.
    pub created: Option<SystemTime>,
    /// Whether the backend still follows it or keeps it on purpose (a job of
    /// this worker's, or an ended one kept for debugging).
    pub held: bool,
}

/// Why a backend cannot tell which workloads exist (its engine or API does not
/// answer): the caller leaves things as they are and tries again later.
#[derive(Debug, thiserror::Error)]
#[error("cannot look up the workloads: {}", bounded(&.0.to_string()))]
pub struct LookupError(#[source] pub Cause);

/// The directory of the jobs' logs cannot be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the job log directory {path}: {source}")]
pub struct LogDirError {
    /// The directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Creates `dir`, where the jobs' logs go, when a backend starts.
///
/// # Errors
/// [`LogDirError`] when it cannot be created.
pub fn create_log_dir(dir: &std::path::Path) -> Result<(), LogDirError> {
    std::fs::create_dir_all(dir).map_err(|source| LogDirError {
        path: dir.to_owned(),
        source,
    })
}

/// The log file of a job whose workload starts now (see [`crate::job_logs`]).
///
/// # Errors
/// [`LaunchError::Spawn`] when its directory cannot be created.
pub fn new_log_file(log_dir: &std::path::Path, job_id: &str) -> Result<PathBuf, LaunchError> {
    crate::job_logs::of_job_starting(log_dir, job_id).map_err(|e| {
        LaunchError::Spawn(Failure::because(
            "could not create the job's log directory",
            e,
        ))
    })
}

/// A place to run jobs.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Creates the workload for `request`, with the GPUs the worker's resource
    /// policy gave it (`gpus`; see [`GpuAssignment`]), reporting on `progress`
    /// as it goes (at least [`LaunchProgress::created`] as soon as the workload
    /// exists, when that comes before it runs).
    ///
    /// # Errors
    /// A [`LaunchError`] when no workload could be created.
    async fn launch(
        &self,
        request: &LaunchRequest,
        gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError>;

    /// Whether it gives a job its request's `secret_env`. A request with
    /// secrets never reaches a backend that does not: the job would run
    /// without them (see [`Backends::for_request`]).
    fn gives_secrets(&self) -> bool;

    /// Finding this backend's workloads again after a restart, if it can.
    fn recovery(&self) -> Option<&dyn Recover>;

    /// Adopting one job's workload by its name, if it can.
    fn adoption(&self) -> Option<&dyn Adopt>;

    /// Whether any worker of the pool can adopt this backend's workloads
    /// ([`AdoptionScope::AnyWorker`]); one no other can is bound to its
    /// worker's host.
    fn adoptable_anywhere(&self) -> bool {
        self.adoption()
            .is_some_and(|adopt| adopt.scope() == AdoptionScope::AnyWorker)
    }

    /// Listing its workloads and removing those no job claims, if it can.
    fn sweep(&self) -> Option<&dyn Sweep>;

    /// Lets go of a job's workload once its end is recorded.
    async fn release(&self, job_id: &str);

    /// Whether the backend can run jobs now: its supervisor linked, its engine
    /// or API server answering (for the worker's readiness).
    ///
    /// # Errors
    /// A [`Failure`] saying what does not answer.
    async fn answers(&self) -> Result<(), Failure>;

    /// The worker leaves in order, `leaving` its workloads to the pool or giving
    /// them up: the backend lets go of whatever it still holds.
    async fn close(&self, leaving: Leaving);
}

/// How a worker leaves its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// It handed its jobs over: their workloads go on for whoever follows them
    /// next (another worker of the pool, or the next worker on this host).
    HandingOver,
    /// It drained, and gives up on whatever still runs.
    GivingUp,
}

/// A workload found again after the worker restarted. The GPUs it was given
/// are in its job's record (`gpus`), from which the worker rebuilds its
/// allocation.
pub struct Recovered {
    /// Its job.
    pub job_id: String,
    /// The workload, as if just launched: observations start with its state now.
    pub launched: Launched,
}

/// The backends a worker has, and the one used when a request names none.
#[derive(Clone)]
pub struct Backends {
    available: HashMap<BackendKind, Arc<dyn Backend>>,
    default: BackendKind,
}

impl Backends {
    /// A set with only `default`.
    pub fn new(default: Arc<dyn Backend>) -> Self {
        let kind = default.kind();
        Backends {
            available: HashMap::from([(kind, default)]),
            default: kind,
        }
    }

    /// The set with `backend` added (replacing one of the same kind).
    pub fn with(mut self, backend: Arc<dyn Backend>) -> Self {
        self.available.insert(backend.kind(), backend);
        self
    }

    /// The backend used when a request names none.
    pub fn default_kind(&self) -> BackendKind {
        self.default
    }

    /// The kinds of this worker's backends, comma-separated, the default first.
    fn names(&self) -> String {
        let mut kinds: Vec<BackendKind> = self.available.keys().copied().collect();
        kinds.sort_by_key(|kind| (*kind != self.default, kind.as_str()));
        let names: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        names.join(", ")
    }

    /// Every backend of this worker.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.available.values()
    }

    /// The backend of `kind`, if this worker has it.
    pub fn get(&self, kind: BackendKind) -> Option<Arc<dyn Backend>> {
        self.available.get(&kind).cloned()
    }

    /// The backend a request runs on.
    pub fn kind_for(&self, request: &LaunchRequest) -> BackendKind {
        request.backend.unwrap_or(self.default)
    }

    /// The backend for `request`.
    ///
    /// # Errors
    /// [`LaunchError::Unavailable`] when this worker does not have it;
    /// [`LaunchError::Unsupported`] when the request has secrets the backend
    /// cannot give the job.
    pub fn for_request(&self, request: &LaunchRequest) -> Result<Arc<dyn Backend>, LaunchError> {
        let kind = self.kind_for(request);
        let backend = self.available.get(&kind).cloned().ok_or_else(|| {
            LaunchError::Unavailable(
                format!(
                    "this worker has no {kind} backend (it runs {})",
                    self.names()
                )
                .into(),
            )
        })?;
        if !request.secret_env.is_empty() && !backend.gives_secrets() {
            return Err(LaunchError::Unsupported(
                format!("the {kind} backend of this worker cannot give a job its secret_env; the job was not started").into(),
            ));
        }
        Ok(backend)
    }
}
