//! What a backend can do besides launching, stopping and letting go of its
//! workloads. Each capability is a trait of its own, which a backend declares by
//! handing it out ([`super::Backend::recovery`], [`super::Backend::adoption`],
//! [`super::Backend::sweep`]); `None` says it cannot, and the worker acts on
//! that rather than on an answer that only looks empty.
//!
//! - [`Recover`]: after a restart, the workloads a worker with the same id left.
//! - [`Adopt`]: one job's workload found by its name; [`AdoptionScope`] says
//!   whether only this worker's workloads can be, or any worker's on the same
//!   engine or cluster (what a worker taking over another's jobs needs: Docker
//!   and Kubernetes can; a local process can never be adopted elsewhere).
//! - [`Sweep`]: the workloads carrying this worker's labels, listed, and those no
//!   job claims removed.

use super::{Launched, LookupError, Recovered, Workload};
use crate::protocol::JobRecord;
use async_trait::async_trait;

/// Finds again the workloads a worker with the same id left when it stopped.
#[async_trait]
pub trait Recover: Send + Sync {
    /// The workloads this worker had before it restarted, each with its current
    /// state as first observation; taken once, at start-up.
    async fn recover(&self) -> Vec<Recovered>;
}

/// Whose workloads a backend can adopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptionScope {
    /// Only the workloads of workers with this worker's id.
    ThisWorker,
    /// The workload of any worker on the same engine or cluster, found by the
    /// name its job gives it: another worker can take over the job. A Docker
    /// container is followed wherever it came from (the event stream is the
    /// engine's, filtered by the managed-by label); a Kubernetes pod is moved
    /// to the adopting worker (its worker label patched, so that this worker's
    /// watch shows it and the former worker's sees it leave, which that worker
    /// takes for a move, neither an end nor a pod to stop or delete).
    AnyWorker,
}

/// Re-attaches to one job's workload, found by its name.
#[async_trait]
pub trait Adopt: Send + Sync {
    /// Whose workloads [`Adopt::adopt`] finds.
    fn scope(&self) -> AdoptionScope;

    /// Re-attaches to the workload of a job that [`Recover::recover`] did not
    /// find (by its `backend_ref`, or the name its launch would give it): the
    /// first observation is its current state. `None` when it does not exist.
    ///
    /// # Errors
    /// A [`LookupError`] when the backend cannot tell.
    async fn adopt(&self, record: &JobRecord) -> Result<Option<Launched>, LookupError>;
}

/// Lists a backend's workloads and removes those no job claims.
#[async_trait]
pub trait Sweep: Send + Sync {
    /// The workloads that carry this worker's labels, whatever their state.
    ///
    /// # Errors
    /// A [`LookupError`] when the backend cannot tell.
    async fn discover(&self) -> Result<Vec<Workload>, LookupError>;

    /// Removes a workload no job claims (found by [`Sweep::discover`]).
    async fn remove(&self, workload: &Workload);
}
