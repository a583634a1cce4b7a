//! Jobs found again at start-up: the workloads a worker with the same id left
//! when it died. A job whose record this worker still owns and that has not
//! ended is followed on (its `seq` continues, a terminate reaches it); a job whose
//! end the record holds has its final event published if the stream lacks it;
//! anything else (no record, another owner) is stopped and let go.
//!
//! Then every record this worker owns that has not ended and whose workload no
//! backend found (the worker died between the claim and the workload's creation,
//! or the workload carries other labels) is settled: a backend that can adopt
//! re-attaches to the workload by name when there is one, and otherwise (or when
//! its backend cannot adopt: a Kubernetes pod, a local process) the job ends at
//! once with what is true of it (it never ran; or it was stopped; or its
//! workload is gone, `lost`).
//!
//! The GPUs a job's record says it was given are held again before any new
//! request is taken, until its workload has ended, so a restart never hands out
//! a GPU a workload still uses.

use super::job::{Job, JobSupport};
use super::registry::Registry;
use super::story::{Author, Change, Story};
use crate::backend::{Backend, Recovered};
use crate::protocol::{JobId, JobRecord, reason};
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use crate::state::JobState;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What recovery needs of its worker.
pub struct Recovery {
    /// Reads and goes on with the jobs' stories.
    pub author: Arc<Author>,
    /// What the jobs' tasks need (the backends among it).
    pub jobs: Arc<JobSupport>,
    /// The jobs this worker runs.
    pub registry: Registry,
    /// Which job holds which GPU.
    pub resources: ResourcePolicy,
}

/// Takes over every workload the backends found again, before any new request
/// is taken. Re-attached jobs take their share of `capacity` while it lasts.
pub async fn resume_jobs(recovery: &Recovery, capacity: &Arc<Semaphore>, tracker: &TaskTracker) {
    let backends: Vec<Arc<dyn Backend>> = recovery.jobs.backends.all().cloned().collect();
    let mut found_jobs = HashSet::new();
    for backend in backends {
        let Some(recover) = backend.recovery() else {
            continue;
        };
        for found in recover.recover().await {
            let Ok(job_id) = JobId::new(found.job_id.as_str()) else {
                tracing::warn!(job_id = %found.job_id, "a workload whose job id is not one is left as it is");
                continue;
            };
            found_jobs.insert(job_id.clone());
            let span = recovery.author.span(&job_id, Some(backend.kind()));
            resume(recovery, job_id, backend.clone(), found, capacity, tracker)
                .instrument(span)
                .await;
        }
    }
    settle_unfound(recovery, capacity, tracker, &found_jobs).await;
}

/// Re-attaches or ends the jobs this worker's records hold that are not among
/// `found_jobs`.
async fn settle_unfound(
    recovery: &Recovery,
    capacity: &Arc<Semaphore>,
    tracker: &TaskTracker,
    found_jobs: &HashSet<JobId>,
) {
    let stories = match recovery.author.unfinished().await {
        Ok(stories) => stories,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot list this worker's unfinished jobs; those without a workload found stay as they are");
            return;
        }
    };
    for story in stories {
        if found_jobs.contains(story.job_id()) {
            continue;
        }
        let span = story.span();
        settle(recovery, story, capacity, tracker)
            .instrument(span)
            .await;
    }
}

/// Re-attaches to the workload of an unfinished job no backend found, or ends
/// the job.
async fn settle(
    recovery: &Recovery,
    story: Story,
    capacity: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    let record = story.record();
    let Some(backend) = record
        .backend
        .and_then(|kind| recovery.jobs.backends.get(kind))
    else {
        tracing::warn!(backend = ?record.backend, "an unfinished job of a backend this worker does not have; left as it is");
        return;
    };
    let adoption = backend.adoption();
    let adopted = match adoption.map(|adoption| adoption.adopt(record)) {
        None => None,
        Some(adopting) => match adopting.await {
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot tell whether an unfinished job's workload exists; left as it is");
                return;
            }
        },
    };
    let Some(registration) = recovery.registry.register(story.job_id()) else {
        return;
    };
    let span = tracing::Span::current();
    match adopted {
        Some(launched) => {
            tracing::info!(state = %record.state, "re-attached to a job's workload found by its name after a restart");
            let permit = capacity.clone().try_acquire_owned().ok();
            let gpus = recovery
                .resources
                .hold(story.job_id().as_str(), record.gpus.as_deref());
            let job = Job::new(recovery.jobs.clone(), story, registration, permit).holding(gpus);
            tracker.spawn(job.resume(backend, launched).instrument(span));
        }
        None => {
            let (to, change) = end_of_unfound(record, adoption.is_some());
            tracing::warn!(state = %record.state, ended = %to, "a job's workload is not there after a restart; the job ends");
            let job = Job::new(recovery.jobs.clone(), story, registration, None);
            tracker.spawn(job.end(to, change).instrument(span));
        }
    }
}

/// The true end of a job whose workload is not there: never created (the worker
/// went away while launching it), stopped before it ran, or gone. A backend
/// that cannot adopt a workload by name (`adoptable` false) found again all it
/// can at start: the job ends at once, its message saying so.
fn end_of_unfound(record: &JobRecord, adoptable: bool) -> (JobState, Change) {
    match (
        record.state,
        &record.backend_ref,
        record.stop_reason.as_deref(),
    ) {
        (JobState::Starting, _, Some(stop)) => (
            JobState::Terminated,
            Change::because(stop, "stopped before its workload ran"),
        ),
        (JobState::Starting, None, None) => (
            JobState::Error,
            Change::because(
                reason::LAUNCH_INTERRUPTED,
                "the worker went away while launching the job, before its workload existed; it never ran",
            ),
        ),
        _ if adoptable => (
            JobState::Lost,
            Change::because(
                reason::WORKLOAD_VANISHED,
                "its workload was not there when its worker restarted",
            ),
        ),
        _ => (
            JobState::Lost,
            Change::because(
                reason::WORKLOAD_VANISHED,
                "its workload was not among those found again when its worker restarted, and its backend cannot look for one by name",
            ),
        ),
    }
}

/// Follows on with a workload a backend found again, or stops it when its job
/// is not this worker's to follow.
async fn resume(
    recovery: &Recovery,
    job_id: JobId,
    backend: Arc<dyn Backend>,
    found: Recovered,
    capacity: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    let story = match recovery.author.open(&job_id).await {
        Ok(story) => story,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot read the record of a job found again; it is left as it is");
            return;
        }
    };
    let worker_id = recovery.author.worker_id();
    let mine = story
        .as_ref()
        .is_some_and(|s| s.record().worker == worker_id && !s.record().tombstone);
    let span = tracing::Span::current();
    match story {
        Some(story) if mine && !story.record().state.is_terminal() => {
            let Some(registration) = recovery.registry.register(&job_id) else {
                return;
            };
            let permit = capacity.clone().try_acquire_owned().ok();
            tracing::info!(state = %story.record().state, "re-attached to a job found again after a restart");
            let gpus = recovery
                .resources
                .hold(job_id.as_str(), story.record().gpus.as_deref());
            let job = Job::new(recovery.jobs.clone(), story, registration, permit).holding(gpus);
            tracker.spawn(job.resume(backend, found.launched).instrument(span));
        }
        story => {
            // Its GPUs stay taken until it is gone.
            let gpus = story.as_ref().filter(|_| mine).and_then(|s| {
                recovery
                    .resources
                    .hold(job_id.as_str(), s.record().gpus.as_deref())
            });
            if let Some(ended) = story.filter(|s| mine && s.record().state.is_terminal()) {
                // Its end is recorded; its final event may not have gone out.
                ended.republish_unless_stored().await;
            } else {
                tracing::warn!(
                    "a workload of this worker whose record it does not own; stopping it"
                );
            }
            let mut launched = found.launched;
            launched.control.stop(Duration::ZERO).await;
            tracker.spawn(
                async move {
                    while let Some(observation) = launched.observations.recv().await {
                        if observation.ends_running_workload() {
                            break;
                        }
                    }
                    drop(gpus);
                    backend.release(job_id.as_str()).await;
                }
                .instrument(span),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BackendRef;
    use crate::worker::story::fresh_record;

    #[test]
    fn a_job_whose_backend_cannot_adopt_ends_lost_saying_so() {
        let mut record = fresh_record(&JobId::new("j").unwrap(), "w", JobState::Running);
        record.backend_ref = Some(BackendRef::K8s {
            namespace: "n".into(),
            pod: "flare-j".into(),
            uid: "u".into(),
        });
        let (to, change) = end_of_unfound(&record, false);
        assert_eq!(to, JobState::Lost);
        assert_eq!(change.reason.as_deref(), Some(reason::WORKLOAD_VANISHED));
        let message = change.message.unwrap_or_default();
        assert!(message.contains("cannot look for one by name"), "{message}");
        let (to, change) = end_of_unfound(&record, true);
        assert_eq!(to, JobState::Lost);
        let message = change.message.unwrap_or_default();
        assert!(!message.contains("by name"), "{message}");
    }
}
