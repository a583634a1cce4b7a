//! The readiness of the cluster's nodes, from one shared watch (a kube-runtime
//! watcher on every node, with its backoff, re-listing after `410 Gone`): a
//! node whose `Ready` condition is not `True` is noted with when the worker
//! first saw it so (its own clock, whatever the cluster's), so that a job can
//! tell how long its pod's node has been unready without a request of its own.
//! The judgement a job's pod is lost ([`verdict`]) is a pure function, checked
//! without a cluster.
//!
//! Reading nodes needs `get`, `list` and `watch` on nodes at the cluster scope
//! (a ClusterRole): a worker that is refused says so once and carries on
//! without (its jobs then end only when the cluster ends their pods).

use crate::locked::lock;
use crate::protocol::bounded::bounded;
use crate::protocol::reason;
use crate::report::error_chain;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The nodes not ready now, each with when the watch first showed it so.
#[derive(Default)]
pub struct Nodes {
    unready: Mutex<HashMap<String, Instant>>,
    /// The watch was refused for want of permission (said once).
    refused: AtomicBool,
}

impl Nodes {
    fn unready(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Every change is one insert or removal: a poisoned lock holds a
        // consistent map.
        lock(&self.unready)
    }

    /// How long node `node` has been seen not ready; `None` if it is ready or
    /// unknown.
    pub fn unready_for(&self, node: &str) -> Option<Duration> {
        self.unready().get(node).map(Instant::elapsed)
    }

    /// Takes in the state of `node`.
    fn observe(&self, node: &Node) {
        let Some(name) = node.metadata.name.as_deref() else {
            return;
        };
        let mut unready = self.unready();
        if is_ready(node) {
            unready.remove(name);
        } else {
            unready.entry(name.to_owned()).or_insert_with(Instant::now);
        }
    }

    /// Follows every node until the task is aborted.
    pub async fn run(&self, api: Api<Node>) {
        let mut events =
            std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
        // The nodes of a re-list under way.
        let mut relisted: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(node)) => self.observe(&node),
                Ok(Event::InitApply(node)) => {
                    self.observe(&node);
                    relisted.extend(node.metadata.name.clone());
                }
                Ok(Event::Delete(node)) => {
                    if let Some(name) = &node.metadata.name {
                        self.unready().remove(name);
                    }
                }
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitDone) => {
                    self.unready().retain(|name, _| relisted.contains(name));
                    relisted.clear();
                }
                Err(e) if forbidden(&e) => {
                    if !self.refused.swap(true, Ordering::SeqCst) {
                        tracing::warn!(
                            error = %error_chain(&e),
                            "this worker may not watch the cluster's nodes (it needs get, list and watch on nodes: deploy/k8s/clusterrole.yaml); \
                             a job on a lost node ends only when the cluster ends its pod"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "the node watch failed; it resumes with backoff")
                }
            }
        }
    }
}

/// Whether `node`'s `Ready` condition is `True`.
fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether the watch was refused for want of permission.
fn forbidden(error: &watcher::Error) -> bool {
    let refused = |e: &kube::Error| super::api::status(e) == Some(403);
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => refused(e),
        watcher::Error::WatchError(status) => status.code == 403,
        watcher::Error::NoResourceVersion => false,
    }
}

/// What the worker knows of a job's pod that may be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWatch<'a> {
    /// Its node, and how long that node has been seen not ready.
    pub node: Option<(&'a str, Option<Duration>)>,
    /// Since when its graceful deletion has been seen, and its grace period.
    pub deletion: Option<(Duration, Duration)>,
    /// Whether this worker asked it to stop.
    pub stopped: bool,
    /// Whether its job was told it runs.
    pub ran: bool,
}

/// Why a job's pod is taken for lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// `NodeLost`, or `StopUnconfirmed` for a job this worker asked to stop.
    pub reason: &'static str,
    /// What was seen.
    pub message: String,
}

/// Whether a job's pod is lost, after `after`: its node not ready for longer,
/// or its graceful deletion unconfirmed for longer than its grace period
/// plus `after`.
pub fn verdict(pod: &PodWatch<'_>, after: Duration) -> Option<Lost> {
    let seen = match (pod.node, pod.deletion) {
        (Some((node, Some(unready))), _) if unready > after => format!(
            "its pod's node {node} has not been ready for {}s",
            unready.as_secs()
        ),
        (_, Some((since, grace))) if since > grace + after => format!(
            "its pod's deletion (grace period {}s) has not been confirmed for {}s",
            grace.as_secs(),
            since.as_secs()
        ),
        _ => return None,
    };
    let (reason, message) = if pod.stopped {
        (
            reason::STOP_UNCONFIRMED,
            format!(
                "the stop was not confirmed: {seen}; the pod was force-deleted and may have run on a while"
            ),
        )
    } else if pod.ran {
        (
            reason::NODE_LOST,
            format!("{seen}; the pod was force-deleted, its end unknown"),
        )
    } else {
        (
            reason::NODE_LOST,
            format!("{seen} before it ran; the pod was force-deleted"),
        )
    };
    Some(Lost {
        reason,
        message: bounded(&message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn pod(node: Option<Duration>, deletion: Option<(Duration, Duration)>) -> PodWatch<'static> {
        PodWatch {
            node: Some(("n1", node)),
            deletion,
            stopped: false,
            ran: true,
        }
    }

    #[test]
    fn a_node_unready_past_the_patience_loses_the_pod() {
        assert_eq!(verdict(&pod(None, None), AFTER), None);
        assert_eq!(verdict(&pod(Some(secs(60)), None), AFTER), None);
        let lost = verdict(&pod(Some(secs(61)), None), AFTER).expect("lost");
        assert_eq!(lost.reason, "NodeLost");
        assert_eq!(
            lost.message,
            "its pod's node n1 has not been ready for 61s; the pod was force-deleted, its end unknown"
        );
        let unbound = PodWatch {
            node: None,
            ..pod(None, None)
        };
        assert_eq!(verdict(&unbound, AFTER), None);
    }

    #[test]
    fn a_deletion_unconfirmed_past_grace_and_patience_loses_the_pod() {
        let deletion = |since: u64| pod(None, Some((secs(since), secs(10))));
        assert_eq!(verdict(&deletion(70), AFTER), None);
        let lost = verdict(&deletion(71), AFTER).expect("lost");
        assert_eq!(lost.reason, "NodeLost");
        assert!(
            lost.message.contains("grace period 10s"),
            "{}",
            lost.message
        );
    }

    #[test]
    fn a_stopped_job_says_its_stop_was_not_confirmed() {
        let stopped = PodWatch {
            stopped: true,
            ..pod(Some(secs(61)), None)
        };
        let lost = verdict(&stopped, AFTER).expect("lost");
        assert_eq!(lost.reason, "StopUnconfirmed");
        assert!(
            lost.message.starts_with("the stop was not confirmed"),
            "{}",
            lost.message
        );
    }
}
