//! The workloads of ended jobs a container backend keeps for a while (for
//! debugging, `--docker-keep-s`, `--k8s-keep-s`) before it removes them: by
//! name, so that the orphan sweep passes them over meanwhile.

use crate::locked::lock;
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
        lock(&self.names)
    }

    /// The names kept now.
    pub fn now(&self) -> HashSet<String> {
        self.names().clone()
    }

    /// Removes the workload `name` with `remove`: now when `keep` is zero,
    /// else after `keep`, in a task of its own, kept meanwhile.
    pub async fn remove_after<R, F>(&self, name: String, keep: Duration, remove: R)
    where
        R: FnOnce(String) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        if keep.is_zero() {
            remove(name).await;
            return;
        }
        self.names().insert(name.clone());
        let removal = remove(name.clone());
        let kept = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            removal.await;
            kept.names().remove(&name);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn removal(removed: &Arc<AtomicBool>) -> impl FnOnce(String) -> BoxFuture<'static, ()> {
        let removed = removed.clone();
        move |_| async move { removed.store(true, Ordering::SeqCst) }.boxed()
    }

    #[tokio::test]
    async fn without_keep_a_workload_is_removed_at_once_and_not_kept() {
        let kept = Kept::default();
        let removed = Arc::new(AtomicBool::new(false));
        kept.remove_after("w".into(), Duration::ZERO, removal(&removed))
            .await;
        assert!(removed.load(Ordering::SeqCst));
        assert!(kept.now().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_workload_is_held_until_its_keep_ran_out_then_removed() {
        let kept = Kept::default();
        let removed = Arc::new(AtomicBool::new(false));
        kept.remove_after("w".into(), Duration::from_secs(60), removal(&removed))
            .await;
        assert!(!removed.load(Ordering::SeqCst));
        assert!(kept.now().contains("w"));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(removed.load(Ordering::SeqCst));
        assert!(kept.now().is_empty());
    }
}
