//! Resource policies: whether a worker accounts for GPUs, and if so which it
//! has and which job holds which.
//!
//! - `best-effort` (the default, NVFlare's `BEResourceManager`): no accounting;
//!   every request the worker has a slot for is taken and whatever runs the job
//!   decides on devices.
//! - `gpu` (NVFlare's `GPUResourceManager`): the worker owns an [`inventory`] of
//!   GPUs and takes a request only when enough are free ([`gpu_pool`]); the job
//!   holds them until its workload has ended.

pub mod census;
pub mod gpu_pool;
pub mod inventory;

use crate::config::{ResourceConfig, ResourcePolicyKind};
use crate::protocol::{AssignedGpu, GpuStatus, LaunchRequest, ResourceStatus};
use gpu_pool::{GpuLease, GpuNeed, GpuPool, NotPlaced};
use inventory::InventoryError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A worker's resource policy.
#[derive(Debug, Clone)]
pub enum ResourcePolicy {
    /// No accounting.
    BestEffort,
    /// The worker hands out the GPUs of its pool.
    Gpu {
        /// Its GPUs and their holders.
        pool: Arc<GpuPool>,
        /// Whether the inventory was taken as given, without looking at the host.
        ignore_host: bool,
    },
}

impl ResourcePolicy {
    /// The policy `config` describes; for `gpu`, with the inventory read from
    /// the host unless `ignore_host` says otherwise.
    ///
    /// # Errors
    /// An [`InventoryError`] when the host does not have the GPUs asked for, or
    /// cannot say.
    pub async fn from_config(config: &ResourceConfig) -> Result<Self, InventoryError> {
        if config.policy == ResourcePolicyKind::BestEffort {
            return Ok(ResourcePolicy::BestEffort);
        }
        let host = if config.ignore_host {
            None
        } else {
            Some(inventory::query_host().await?)
        };
        let gpus = inventory::inventory(config, host)?;
        tracing::info!(
            gpus = ?gpus.iter().map(|gpu| gpu.index).collect::<Vec<_>>(),
            ignore_host = config.ignore_host,
            "the gpu resource policy hands out these GPUs"
        );
        Ok(ResourcePolicy::Gpu {
            pool: GpuPool::new(gpus),
            ignore_host: config.ignore_host,
        })
    }

    /// What `request` asks for: `resources.gpus` (none when it says nothing) and
    /// `resources.gpu_memory_mb`.
    pub fn need(request: &LaunchRequest) -> GpuNeed {
        let resources = request.resources.clone().unwrap_or_default();
        GpuNeed {
            count: resources.gpus.unwrap_or(0),
            memory_mb: resources.gpu_memory_mb,
        }
    }

    /// Places `request` on this worker: under `gpu`, the GPUs it is given
    /// (none when it asks for none); under `best-effort`, nothing to hold.
    ///
    /// # Errors
    /// [`NotPlaced`] when not enough GPUs are free.
    pub fn place(&self, request: &LaunchRequest) -> Result<Option<GpuLease>, NotPlaced> {
        match self {
            ResourcePolicy::BestEffort => Ok(None),
            ResourcePolicy::Gpu { pool, .. } => {
                pool.place(&request.job_id, Self::need(request)).map(Some)
            }
        }
    }

    /// Holds again, for a job found after a restart, the GPUs its record says
    /// it was given.
    pub fn hold(&self, job_id: &str, recorded: Option<&[AssignedGpu]>) -> Option<GpuLease> {
        match (self, recorded) {
            (ResourcePolicy::Gpu { pool, .. }, Some(gpus)) => Some(pool.hold(job_id, gpus)),
            (ResourcePolicy::BestEffort, Some(gpus)) if !gpus.is_empty() => {
                tracing::warn!(
                    ?gpus,
                    "a job found again holds GPUs, but this worker no longer accounts for them"
                );
                None
            }
            _ => None,
        }
    }

    /// The policy's state: the inventory, what is allocated to which job, and
    /// what is free.
    pub fn status(&self, worker: &str, pool_name: &str) -> ResourceStatus {
        let (policy, ignore_host, uses) = match self {
            ResourcePolicy::BestEffort => ("best-effort", false, Vec::new()),
            ResourcePolicy::Gpu { pool, ignore_host } => ("gpu", *ignore_host, pool.uses()),
        };
        let mut allocations: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for gpu_use in &uses {
            if let Some(job_id) = &gpu_use.job_id {
                allocations
                    .entry(job_id.clone())
                    .or_default()
                    .push(gpu_use.gpu.index);
            }
        }
        ResourceStatus {
            worker: worker.to_owned(),
            pool: pool_name.to_owned(),
            policy: policy.to_owned(),
            ignore_host,
            free: uses
                .iter()
                .filter(|gpu_use| gpu_use.job_id.is_none())
                .map(|gpu_use| gpu_use.gpu.index)
                .collect(),
            gpus: uses
                .into_iter()
                .map(|gpu_use| GpuStatus {
                    index: gpu_use.gpu.index,
                    uuid: gpu_use.gpu.uuid,
                    memory_mb: gpu_use.gpu.memory_mb,
                    job_id: gpu_use.job_id,
                })
                .collect(),
            allocations,
        }
    }
}
