//! Jobs found again at start-up: the workloads a worker with the same id left
//! when it died. A job whose record this worker still owns and that has not
//! ended is followed on (its `seq` continues, a terminate reaches it); a job whose
//! end the record holds has its final event published if the stream lacks it;
//! anything else (no record, another owner) is stopped and let go.
//!
//! The GPUs a job's record says it was given are held again before any new
//! request is taken, until its workload has ended, so a restart never hands out
//! a GPU a workload still uses.

use super::Shared;
use super::job::Job;
use crate::backend::{Backend, Recovered};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Takes over every workload the backends found again, before any new request
/// is taken. Re-attached jobs take their share of `capacity` while it lasts.
pub async fn resume_jobs(shared: &Arc<Shared>, capacity: &Arc<Semaphore>, tracker: &TaskTracker) {
    let backends: Vec<Arc<dyn Backend>> = shared.backends.all().cloned().collect();
    for backend in backends {
        for found in backend.recover().await {
            resume(shared, backend.clone(), found, capacity, tracker).await;
        }
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
