//! The accounting of the `gpu` policy: which of the worker's GPUs are held by
//! which job. A job is placed only when enough GPUs, each with the memory it
//! asks for, are free; it then holds them through a [`GpuLease`], which gives
//! them back when dropped, so no path through a job's task (an error, a panic)
//! can leak one. GPUs are given to one job at a time, lowest index first.

use super::inventory::InventoryGpu;
use crate::locked::lock;
use crate::protocol::AssignedGpu;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuNeed {
    /// How many GPUs.
    pub count: u32,
    /// Memory each of them must have, MiB, if stated.
    pub memory_mb: Option<u64>,
}

impl GpuNeed {
    /// Whether a GPU of `memory_mb` has the memory asked for (unknown: yes).
    pub fn fits_memory(&self, memory_mb: Option<u64>) -> bool {
        match (self.memory_mb, memory_mb) {
            (Some(wanted), Some(has)) => has >= wanted,
            _ => true,
        }
    }
}

impl std::fmt::Display for GpuNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.count == 1 { "" } else { "s" };
        write!(f, "{} GPU{plural}", self.count)?;
        if let Some(mb) = self.memory_mb {
            write!(f, " with {mb} MiB each")?;
        }
        Ok(())
    }
}

/// Why a request was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("asked for {need}; {has}")]
pub struct NotPlaced {
    /// What was asked.
    pub need: GpuNeed,
    /// What this worker has, in words.
    pub has: String,
    /// Whether this worker could never hold it, even with every GPU free.
    pub never: bool,
}

/// One GPU of the pool, and the job that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuUse {
    /// The GPU.
    pub gpu: InventoryGpu,
    /// The job holding it, if any.
    pub job_id: Option<String>,
}

/// The worker's GPUs and who holds them.
#[derive(Debug)]
pub struct GpuPool {
    inventory: Vec<InventoryGpu>,
    /// Holder of each held GPU, by index.
    held: Mutex<BTreeMap<u32, String>>,
}

impl GpuPool {
    /// A pool of `inventory`, nothing held.
    pub fn new(mut inventory: Vec<InventoryGpu>) -> Arc<Self> {
        inventory.sort_by_key(|gpu| gpu.index);
        Arc::new(GpuPool {
            inventory,
            held: Mutex::new(BTreeMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, String>> {
        lock(&self.held)
    }

    /// Gives `job_id` the GPUs `need` asks for, if free.
    ///
    /// # Errors
    /// [`NotPlaced`] when not enough GPUs with the memory are free.
    pub fn place(self: &Arc<Self>, job_id: &str, need: GpuNeed) -> Result<GpuLease, NotPlaced> {
        let mut held = self.held();
        let wanted = usize::try_from(need.count).unwrap_or(usize::MAX);
        let fitting: Vec<&InventoryGpu> = self
            .inventory
            .iter()
            .filter(|gpu| need.fits_memory(gpu.memory_mb))
            .collect();
        let free: Vec<&InventoryGpu> = fitting
            .iter()
            .copied()
            .filter(|gpu| !held.contains_key(&gpu.index))
            .collect();
        if free.len() < wanted {
            return Err(NotPlaced {
                need,
                has: self.describe(&held),
                never: fitting.len() < wanted,
            });
        }
        let given: Vec<AssignedGpu> = free[..wanted]
            .iter()
            .map(|gpu| AssignedGpu {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
            })
            .collect();
        for gpu in &given {
            held.insert(gpu.index, job_id.to_owned());
        }
        Ok(GpuLease {
            pool: self.clone(),
            job_id: job_id.to_owned(),
            gpus: given,
        })
    }

    /// Holds for `job_id` the GPUs its record says it was given (a job found
    /// again after a restart). A GPU the inventory no longer has is not held;
    /// one held already stays with its holder (both are logged).
    pub fn hold(self: &Arc<Self>, job_id: &str, gpus: &[AssignedGpu]) -> GpuLease {
        let mut held = self.held();
        let mut kept = Vec::new();
        for gpu in gpus {
            if !self.inventory.iter().any(|known| known.index == gpu.index) {
                tracing::warn!(
                    gpu = gpu.index,
                    "a job found again holds a GPU this worker no longer hands out"
                );
            } else if let Some(holder) = held.get(&gpu.index) {
                tracing::error!(gpu = gpu.index, %holder, "two jobs found again hold the same GPU; it stays with the first");
            } else {
                held.insert(gpu.index, job_id.to_owned());
                kept.push(gpu.clone());
            }
        }
        GpuLease {
            pool: self.clone(),
            job_id: job_id.to_owned(),
            gpus: kept,
        }
    }

    /// Every GPU of the pool and its holder.
    pub fn uses(&self) -> Vec<GpuUse> {
        let held = self.held();
        self.inventory
            .iter()
            .map(|gpu| GpuUse {
                gpu: gpu.clone(),
                job_id: held.get(&gpu.index).cloned(),
            })
            .collect()
    }

    /// What this worker has, for messages: `2 GPUs (0: 16384 MiB, 1: 16384 MiB), 1 free`.
    fn describe(&self, held: &BTreeMap<u32, String>) -> String {
        let gpus: Vec<String> = self
            .inventory
            .iter()
            .map(|gpu| match gpu.memory_mb {
                Some(mb) => format!("{}: {mb} MiB", gpu.index),
                None => gpu.index.to_string(),
            })
            .collect();
        let free = self
            .inventory
            .iter()
            .filter(|gpu| !held.contains_key(&gpu.index))
            .count();
        let count = self.inventory.len();
        let plural = if count == 1 { "" } else { "s" };
        format!(
            "this worker has {count} GPU{plural} ({}), {free} free",
            gpus.join(", ")
        )
    }

    fn release(&self, job_id: &str, gpus: &[AssignedGpu]) {
        let mut held = self.held();
        for gpu in gpus {
            if held.get(&gpu.index).is_some_and(|holder| holder == job_id) {
                held.remove(&gpu.index);
            }
        }
    }
}

/// GPUs held by one job, given back when dropped.
#[derive(Debug)]
pub struct GpuLease {
    pool: Arc<GpuPool>,
    job_id: String,
    gpus: Vec<AssignedGpu>,
}

impl GpuLease {
    /// The GPUs held.
    pub fn gpus(&self) -> &[AssignedGpu] {
        &self.gpus
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        if !self.gpus.is_empty() {
            tracing::debug!(gpus = ?self.gpus, "GPUs released");
        }
        self.pool.release(&self.job_id, &self.gpus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(memories: &[u64]) -> Arc<GpuPool> {
        GpuPool::new(
            memories
                .iter()
                .enumerate()
                .map(|(index, mb)| InventoryGpu {
                    index: index as u32,
                    uuid: Some(format!("GPU-{index}")),
                    memory_mb: Some(*mb),
                })
                .collect(),
        )
    }

    fn need(count: u32, memory_mb: Option<u64>) -> GpuNeed {
        GpuNeed { count, memory_mb }
    }

    fn indices(lease: &GpuLease) -> Vec<u32> {
        lease.gpus().iter().map(|gpu| gpu.index).collect()
    }

    #[test]
    fn gpus_go_to_one_job_at_a_time_and_come_back_when_the_lease_goes() {
        let pool = pool(&[16384, 16384]);
        let first = pool.place("a", need(1, None)).unwrap();
        let second = pool.place("b", need(1, None)).unwrap();
        assert_eq!((indices(&first), indices(&second)), (vec![0], vec![1]));
        let refused = pool.place("c", need(1, None)).unwrap_err();
        assert!(!refused.never);
        assert_eq!(
            refused.to_string(),
            "asked for 1 GPU; this worker has 2 GPUs (0: 16384 MiB, 1: 16384 MiB), 0 free"
        );
        drop(first);
        let third = pool.place("c", need(1, None)).unwrap();
        assert_eq!(indices(&third), [0]);
        let uses = pool.uses();
        assert_eq!(uses[0].job_id.as_deref(), Some("c"));
        assert_eq!(uses[1].job_id.as_deref(), Some("b"));
        assert_eq!(uses[0].gpu.uuid.as_deref(), Some("GPU-0"));
    }

    #[test]
    fn no_gpu_is_always_placed_and_too_many_never() {
        let pool = pool(&[16384, 16384]);
        let _all = pool.place("a", need(2, None)).unwrap();
        assert!(pool.place("none", need(0, None)).unwrap().gpus().is_empty());
        let three = pool.place("b", need(3, None)).unwrap_err();
        assert!(three.never);
    }

    #[test]
    fn memory_per_gpu_is_checked() {
        let pool = pool(&[8192, 24576]);
        let big = pool.place("a", need(1, Some(16384))).unwrap();
        assert_eq!(indices(&big), [1]);
        let again = pool.place("b", need(1, Some(16384))).unwrap_err();
        assert!(!again.never);
        assert!(
            again
                .to_string()
                .contains("asked for 1 GPU with 16384 MiB each"),
            "{again}"
        );
        assert!(pool.place("c", need(2, Some(16384))).unwrap_err().never);
        assert_eq!(indices(&pool.place("d", need(1, Some(4096))).unwrap()), [0]);
    }

    #[test]
    fn held_gpus_are_not_given_again_and_a_late_release_frees_only_its_own() {
        let pool = pool(&[1, 1, 1]);
        let recorded = [
            AssignedGpu {
                index: 1,
                uuid: None,
            },
            AssignedGpu {
                index: 7,
                uuid: None,
            },
        ];
        let held = pool.hold("old", &recorded);
        assert_eq!(indices(&held), [1]);
        let twice = pool.hold("other", &recorded[..1]);
        assert!(twice.gpus().is_empty());
        drop(twice);
        let next = pool.place("new", need(2, None)).unwrap();
        assert_eq!(indices(&next), [0, 2]);
        assert!(pool.place("more", need(1, None)).is_err());
        drop(held);
        assert_eq!(indices(&pool.place("more", need(1, None)).unwrap()), [1]);
    }
}
