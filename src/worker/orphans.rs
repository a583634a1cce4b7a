//! The orphan sweep: now and then, every backend that can lists the workloads carrying
//! this worker's labels, and those no live job claims (no job of this worker
//! follows them, and their job's record is gone or ended) are removed once they
//! are older than the grace period. The grace spares a workload whose launch is
//! still under way; what the sweep exists for is the rest: an engine can create a
//! container and still fail the call, and a worker can die between a job's
//! recorded end and the removal of its workload, or while keeping it for
//! debugging.

use super::registry::Registry;
use crate::backend::{Backends, Workload};
use crate::report::error_chain;
use crate::store::JobStore;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Shortest and longest time between two sweeps.
const SWEEP_EVERY_MIN: Duration = Duration::from_secs(1);
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(60);

/// What the sweep needs of its worker.
pub struct OrphanSweep {
    /// Where the workloads are.
    pub backends: Backends,
    /// The jobs this worker runs.
    pub registry: Registry,
    /// Where the jobs' records are read.
    pub store: JobStore,
}

/// Sweeps every half grace period (1 s to 1 min) until `stop` is cancelled.
pub async fn run(orphans: OrphanSweep, grace: Duration, stop: CancellationToken) {
    let every = (grace / 2).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        sweep(&orphans, grace).await;
    }
}

/// Removes the workloads no job claims that are older than `grace`.
async fn sweep(orphans: &OrphanSweep, grace: Duration) {
    for backend in orphans.backends.all() {
        let Some(sweep) = backend.sweep() else {
            continue;
        };
        let workloads = match sweep.discover().await {
            Ok(workloads) => workloads,
            Err(e) => {
                tracing::warn!(backend = %backend.kind(), error = %error_chain(&e), "orphan sweep: cannot list the workloads");
                continue;
            }
        };
        for workload in workloads {
            if is_orphan(orphans, &workload, grace).await {
                tracing::warn!(job_id = %workload.job_id, workload = ?workload.backend_ref, "removing a workload no job claims");
                sweep.remove(&workload).await;
            }
        }
    }
}

/// Whether no job claims `workload` and it is older than `grace`.
async fn is_orphan(orphans: &OrphanSweep, workload: &Workload, grace: Duration) -> bool {
    if workload.held || orphans.registry.get(&workload.job_id).is_some() {
        return false;
    }
    let old_enough = workload
        .created
        .and_then(|created| SystemTime::now().duration_since(created).ok())
        .is_some_and(|age| age >= grace);
    if !old_enough {
        return false;
    }
    match orphans.store.get(&workload.job_id).await {
        Ok(Some(record)) => record.tombstone || record.state.is_terminal(),
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(job_id = %workload.job_id, error = %error_chain(&e), "orphan sweep: cannot read the job's record; its workload is left");
            false
        }
    }
}
