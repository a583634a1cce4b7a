//! The request counter: how many resource requests each user made, by verb and
//! resource, served as JSON at `GET /kube-sim/requests`, and the most that were
//! being served at once (until each one's response began).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Resource requests being served now.
    in_flight: AtomicU64,
    /// The most served at once.
    peak: AtomicU64,
}

/// One resource request being served: counted in flight until dropped.
pub struct InFlight<'a>(&'a RequestCounter);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
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

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    /// The most resource requests served at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
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
        self.peak
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_most_requests_in_flight_at_once() {
        let counter = RequestCounter::default();
        let first = counter.begin();
        let second = counter.begin();
        drop(first);
        let _third = counter.begin();
        assert_eq!(counter.peak_in_flight(), 2);
        drop(second);
        counter.reset();
        assert_eq!(counter.peak_in_flight(), 1, "the one still in flight");
    }

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
