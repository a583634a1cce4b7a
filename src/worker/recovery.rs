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

use super::Shared;
use super::job::{Change, Job};
use crate::backend::{Backend, Recovered};
use crate::protocol::{JobRecord, reason};
use crate::state::JobState;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Takes over every workload the backends found again, before any new request
/// is taken. Re-attached jobs take their share of `capacity` while it lasts.
pub async fn resume_jobs(shared: &Arc<Shared>, capacity: &Arc<Semaphore>, tracker: &TaskTracker) {
    let backends: Vec<Arc<dyn Backend>> = shared.backends.all().cloned().collect();
    let mut found_jobs = HashSet::new();
    for backend in backends {
        let Some(recovery) = backend.recovery() else {
            continue;
        };
        for found in recovery.recover().await {
            found_jobs.insert(found.job_id.clone());
            resume(shared, backend.clone(), found, capacity, tracker).await;
        }
    }
    settle_unfound(shared, capacity, tracker, &found_jobs).await;
}

/// Re-attaches or ends the jobs this worker's records hold that are not among
/// `found_jobs`.
async fn settle_unfound(
    shared: &Arc<Shared>,
    capacity: &Arc<Semaphore>,
    tracker: &TaskTracker,
    found_jobs: &HashSet<String>,
) {
    let records = match shared.store.unfinished_of(&shared.worker_id).await {
        Ok(records) => records,
        Err(e) => {
            tracing::error!(error = %e, "cannot list this worker's unfinished jobs; those without a workload found stay as they are");
            return;
        }
    };
    for record in records {
        if found_jobs.contains(&record.job_id) {
            continue;
        }
        let Some(backend) = record.backend.and_then(|kind| shared.backends.get(kind)) else {
            tracing::warn!(job_id = %record.job_id, backend = ?record.backend, "an unfinished job of a backend this worker does not have; left as it is");
            continue;
        };
        let adoption = backend.adoption();
        let adopted = match adoption.map(|adoption| adoption.adopt(&record)) {
            None => None,
            Some(adopting) => match adopting.await {
                Ok(adopted) => adopted,
                Err(e) => {
                    tracing::error!(job_id = %record.job_id, error = %e, "cannot tell whether an unfinished job's workload exists; left as it is");
                    continue;
                }
            },
        };
        let Some(registration) = shared.registry.register(&record.job_id) else {
            continue;
        };
        let job_id = record.job_id.clone();
        match adopted {
            Some(launched) => {
                tracing::info!(%job_id, state = %record.state, "re-attached to a job's workload found by its name after a restart");
                let permit = capacity.clone().try_acquire_owned().ok();
                let gpus = shared.resources.hold(&job_id, record.gpus.as_deref());
                let job = Job::new(shared.clone(), record, registration, permit).holding(gpus);
                tracker.spawn(job.resume(backend, launched));
            }
            None => {
                let (to, change) = end_of_unfound(&record, adoption.is_some());
                tracing::warn!(%job_id, state = %record.state, ended = %to, "a job's workload is not there after a restart; the job ends");
                let job = Job::new(shared.clone(), record, registration, None);
                tracker.spawn(job.end(to, change));
            }
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

async fn resume(
    shared: &Arc<Shared>,
    backend: Arc<dyn Backend>,
    found: Recovered,
    capacity: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    let job_id = found.job_id.clone();
    let record = match shared.store.get(&job_id).await {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(%job_id, error = %e, "cannot read the record of a job found again; it is left as it is");
            return;
        }
    };
    let mine = record
        .as_ref()
        .is_some_and(|r| r.worker == shared.worker_id && !r.tombstone);
    match record {
        Some(record) if mine && !record.state.is_terminal() => {
            let Some(registration) = shared.registry.register(&job_id) else {
                return;
            };
            let permit = capacity.clone().try_acquire_owned().ok();
            tracing::info!(%job_id, state = %record.state, "re-attached to a job found again after a restart");
            let gpus = shared.resources.hold(&job_id, record.gpus.as_deref());
            let job = Job::new(shared.clone(), record, registration, permit).holding(gpus);
            tracker.spawn(job.resume(backend, found.launched));
        }
        record => {
            // Its GPUs stay taken until it is gone.
            let gpus = record
                .as_ref()
                .filter(|_| mine)
                .and_then(|r| shared.resources.hold(&job_id, r.gpus.as_deref()));
            if let Some(ended) = record.filter(|r| mine && r.state.is_terminal()) {
                // Its end is recorded; its final event may not have gone out.
                let event = ended.event(shared.backends.default_kind());
                shared.events.publish_unless_stored(&event).await;
            } else {
                tracing::warn!(%job_id, "a workload of this worker whose record it does not own; stopping it");
            }
            let mut launched = found.launched;
            launched.control.stop(Duration::ZERO).await;
            tracker.spawn(async move {
                while let Some(observation) = launched.observations.recv().await {
                    if observation.ends_running_workload() {
                        break;
                    }
                }
                drop(gpus);
                backend.release(&job_id).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BackendRef;
    use crate::worker::job::fresh_record;

    #[test]
    fn a_job_whose_backend_cannot_adopt_ends_lost_saying_so() {
        let mut record = fresh_record("j", "w", JobState::Running);
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
