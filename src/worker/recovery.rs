//! Jobs found again at start-up: the workloads a worker with the same id left
//! when it died. A job whose record this worker still owns and that has not
//! ended is followed on (its `seq` continues, a terminate reaches it); a job whose
//! end the record holds has its final event published if the stream lacks it;
//! a job another worker of the pool took over while this one was away is left
//! to it, when that worker can follow the workload; anything else (no record,
//! an ended job, a tombstone) is stopped and let go.
//!
//! Then every record this worker owns that has not ended and whose workload no
//! backend found is settled. A job still `starting` without a workload was being
//! launched when the worker went: its request was not acknowledged, so it comes
//! again and is launched then. Otherwise a backend that can adopt
//! re-attaches to the workload by name when there is one, and otherwise (or when
//! its backend cannot adopt: a Kubernetes pod, a local process) the job ends at
//! once with what is true of it (it never ran; or it was stopped; or its
//! workload is gone, `lost`).
//!
//! The GPUs a job's record says it was given are held again before any new
//! request is taken, until its workload has ended, so a restart never hands out
//! a GPU a workload still uses.

use super::job::{Job, JobSupport, Reattach};
use super::registry::Registry;
use super::story::{Author, Story};
use crate::backend::{Backend, Recovered};
use crate::protocol::JobId;
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
    let stories = match recovery
        .author
        .unfinished_of(recovery.author.worker_id())
        .await
    {
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
        let record = story.record();
        if record.state == JobState::Starting
            && record.backend_ref.is_none()
            && record.stop_reason.is_none()
        {
            // Its launch request was not acknowledged: it comes again, and
            // whichever worker takes it launches the job.
            tracing::info!(job_id = %story.job_id(), "a job this worker was launching when it went; its request comes again");
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
    let Some(registration) = recovery.registry.register(story.job_id()) else {
        return;
    };
    let permit = capacity.clone().try_acquire_owned().ok();
    let gpus = recovery
        .resources
        .hold(story.job_id().as_str(), record.gpus.as_deref());
    let job = Job::new(recovery.jobs.clone(), story, registration, permit).holding(gpus);
    let span = tracing::Span::current();
    tracker.spawn(job.reattach(backend, Reattach::Restart).instrument(span));
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
    let adopted_elsewhere = story
        .as_ref()
        .is_some_and(|s| !mine && !s.record().tombstone && !s.record().state.is_terminal())
        && backend.adoptable_anywhere();
    if adopted_elsewhere {
        // Another worker of the pool took the job over while this one was away.
        tracing::info!("a workload of this worker that another worker has taken over; left to it");
        return;
    }
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
