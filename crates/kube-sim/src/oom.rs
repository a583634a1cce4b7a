//! Out-of-memory kills on demand: the containers that run now, by namespace, pod
//! and container name, with their process groups, so that a request can kill one
//! as the kernel's OOM killer kills a container over its memory limit (SIGKILL to
//! every process of it). The kubelet then reports the container `terminated`
//! with reason `OOMKilled` and exit code 137, and the restart policy applies as
//! to any other exit.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A container, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerName {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Why a container could not be OOM-killed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OomError {
    #[error("no running container {} in pod {}/{}", .0.container, .0.namespace, .0.pod)]
    NotRunning(ContainerName),
}

/// One running container's process.
struct Running {
    container_id: String,
    process_group: Pid,
}

#[derive(Default)]
struct Inner {
    running: HashMap<ContainerName, Running>,
    /// Container ids killed for their memory whose end is not reported yet.
    killed: HashSet<String>,
}

/// The running containers of the cluster, and which of them were OOM-killed.
#[derive(Default)]
pub struct OomKiller {
    inner: Mutex<Inner>,
}

impl OomKiller {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is one insert or remove: a poisoned lock holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Container `name` runs as `container_id`, in its own process group.
    pub fn started(&self, name: ContainerName, container_id: &str, process_group: Pid) {
        let running = Running {
            container_id: container_id.to_owned(),
            process_group,
        };
        self.lock().running.insert(name, running);
    }

    /// Container `name` (`container_id`) has ended; returns whether it was
    /// OOM-killed.
    pub fn ended(&self, name: &ContainerName, container_id: &str) -> bool {
        let mut inner = self.lock();
        if inner
            .running
            .get(name)
            .is_some_and(|r| r.container_id == container_id)
        {
            inner.running.remove(name);
        }
        inner.killed.remove(container_id)
    }

    /// Kills container `name` for its memory.
    pub fn kill(&self, name: &ContainerName) -> Result<(), OomError> {
        let mut inner = self.lock();
        let Some(running) = inner.running.get(name) else {
            return Err(OomError::NotRunning(name.clone()));
        };
        let (container_id, group) = (running.container_id.clone(), running.process_group);
        inner.killed.insert(container_id);
        // A group that ended a moment before is reported OOMKilled all the same
        // (with the exit code it had), as by a kill that came at its last moment.
        let _ = killpg(group, Signal::SIGKILL);
        Ok(())
    }
}
