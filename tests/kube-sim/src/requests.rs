//! The request counter: how many resource requests each user made, by verb and
//! resource, served as JSON at `GET /kube-sim/requests`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// How many requests one user made with one verb on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    pub verb: String,
    /// `pods`, or `pods/log` for a subresource.
    pub resource: String,
    pub user: String,
    pub count: u64,
}

/// Counts of every resource request since start (or the last reset). Verbs,
/// resources and users all come from fixed sets, so the map stays small.
#[derive(Default)]
pub struct RequestCounter {
    counts: Mutex<BTreeMap<(String, String, String), u64>>,
}

impl RequestCounter {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String, String), u64>> {
        // Each update is one insert, so a poisoned map is still whole.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request.
    pub fn record(&self, verb: &str, resource: &str, user: &str) {
        let key = (verb.to_owned(), resource.to_owned(), user.to_owned());
        *self.lock().entry(key).or_default() += 1;
    }

    /// Every count, ordered by verb, resource and user.
    pub fn snapshot(&self) -> Vec<RequestCount> {
        self.lock()
            .iter()
            .map(|((verb, resource, user), count)| RequestCount {
                verb: verb.clone(),
                resource: resource.clone(),
                user: user.clone(),
                count: *count,
            })
            .collect()
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_verb_resource_and_user() {
        let counter = RequestCounter::default();
        counter.record("get", "pods", "alice");
        counter.record("get", "pods", "alice");
        counter.record("get", "pods", "bob");
        counter.record("watch", "pods", "alice");
        let snapshot = counter.snapshot();
        let got: Vec<(&str, &str, &str, u64)> = snapshot
            .iter()
            .map(|c| {
                (
                    c.verb.as_str(),
                    c.resource.as_str(),
                    c.user.as_str(),
                    c.count,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("get", "pods", "alice", 2),
                ("get", "pods", "bob", 1),
                ("watch", "pods", "alice", 1)
            ]
        );
        counter.reset();
        assert!(counter.snapshot().is_empty());
    }
}
