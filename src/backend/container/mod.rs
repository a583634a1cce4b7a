//! What the container backends (Docker, Kubernetes) share, written once: the
//! settings every one of them is started with ([`ContainerSettings`]), the
//! image a request must name ([`container_image`]), the jobs
//! that follow their workloads through the backend's one watch
//! ([`followers`]), what a request may mount and label ([`allowed`]), the launch given up half-way ([`given_up`]), the workloads
//! of ended jobs kept for a while ([`kept`]), a stop tried until the
//! workload's end is confirmed ([`stopping`]), a name already taken met as the
//! job's own workload ([`claim_existing`]), the labels and names of workloads
//! ([`workload`]) and the copy of their output into the job's log
//! ([`job_output`]). Each backend keeps only what is its own: its API calls, and
//! how it reads what its engine says into an [`super::Observation`].

pub mod allowed;
pub mod followers;
pub mod given_up;
pub mod job_output;
pub mod kept;
pub mod stopping;
pub mod workload;

use super::LaunchError;
use crate::observe::Metrics;
use crate::protocol::{BackendKind, LaunchRequest};
use allowed::LabelPolicy;
use std::path::PathBuf;
use std::sync::Arc;

/// What a container backend needs to know: `C` is its own configuration.
#[derive(Debug, Clone)]
pub struct ContainerSettings<C> {
    /// Job logs, `DAY/JOB_ID.log` (see [`crate::job_logs`]).
    pub log_dir: PathBuf,
    /// The worker's id, on its workloads' labels.
    pub worker_id: String,
    /// Its pool, on its workloads' labels.
    pub pool: String,
    /// The label keys a request may set on its workload.
    pub labels: LabelPolicy,
    /// The files of the worker's own credentials, each with the flag naming
    /// it: no mount may show them.
    pub worker_secrets: Vec<(PathBuf, &'static str)>,
    /// The worker's metrics, where the backend counts its API requests.
    pub metrics: Arc<Metrics>,
    /// The engine or cluster, and what workloads get.
    pub config: C,
}

impl ContainerSettings<()> {
    /// These settings, with a backend's own configuration.
    pub fn with<C>(&self, config: C) -> ContainerSettings<C> {
        ContainerSettings {
            log_dir: self.log_dir.clone(),
            worker_id: self.worker_id.clone(),
            pool: self.pool.clone(),
            labels: self.labels.clone(),
            worker_secrets: self.worker_secrets.clone(),
            metrics: self.metrics.clone(),
            config,
        }
    }
}

/// Whose a workload met under its job's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The job's own, from an earlier launch of it: adopted.
    Ours,
    /// Another job's.
    AnotherJob,
}

/// A launch met the workload `name` (a `kind`: container, pod) of the name its
/// job gives, whose it is as `claim` says: the job's own is adopted.
///
/// # Errors
/// [`LaunchError::Spawn`] when it is not the job's own.
pub fn claim_existing<T>(
    kind: &str,
    name: &str,
    claim: Claim,
    existing: T,
) -> Result<T, LaunchError> {
    match claim {
        Claim::Ours => {
            tracing::info!(workload = name, "adopting the job's existing {kind}");
            Ok(existing)
        }
        Claim::AnotherJob => Err(LaunchError::Spawn(
            format!("a {kind} named {name} exists and belongs to another job").into(),
        )),
    }
}

/// The image a container backend runs `request` from.
///
/// # Errors
/// [`LaunchError::Unsupported`] when the request names none.
pub fn container_image(request: &LaunchRequest, kind: BackendKind) -> Result<&str, LaunchError> {
    request
        .image
        .as_deref()
        .filter(|image| !image.is_empty())
        .ok_or_else(|| {
            LaunchError::Unsupported(format!("the {kind} backend needs an image").into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_met_under_the_jobs_name_is_adopted_only_when_it_is_the_jobs() {
        assert_eq!(
            claim_existing("pod", "flare-j", Claim::Ours, 7).ok(),
            Some(7)
        );
        let refused = claim_existing("pod", "flare-j", Claim::AnotherJob, 7).unwrap_err();
        assert_eq!(refused.reason(), crate::protocol::reason::SPAWN_FAILED);
        assert_eq!(
            refused.to_string(),
            "a pod named flare-j exists and belongs to another job"
        );
    }
}
