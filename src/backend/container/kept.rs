//! The workloads of ended jobs a container backend keeps for a while (for
//! debugging, `--docker-keep-s`, `--k8s-keep-s`) before it removes them: by
//! name, so that the orphan sweep passes them over meanwhile.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The workloads kept now, by name.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    names: Arc<Mutex<HashSet<String>>>,
}

impl Kept {
    fn names(&self) -> MutexGuard<'_, HashSet<String>> {
        // A panic while holding the lock leaves the set itself intact.
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The names kept now.
    pub fn now(&self) -> HashSet<String> {
        self.names().clone()
    }

    /// Removes the workload `name` by `remove`: now when `keep` is zero, else
    /// after `keep`, in a task of its own, kept meanwhile.
    pub async fn remove_after(
        &self,
        name: String,
        keep: Duration,
        remove: impl Future<Output = ()> + Send + 'static,
    ) {
        if keep.is_zero() {
            remove.await;
            return;
        }
        self.names().insert(name.clone());
        let kept = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            remove.await;
            kept.names().remove(&name);
        });
    }
}
