//! A node lost on demand and brought back, as the node lifecycle controller
//! reports a node whose kubelet it no longer hears from: the node's `Ready`
//! condition becomes `Unknown` and it is tainted unreachable (`NoSchedule`, so
//! the scheduler places nothing more on it, and `NoExecute`, so that
//! [`crate::eviction`] evicts its pods once they stop tolerating it); each of
//! its pods keeps its phase and its containers' last reported states, but is
//! marked not ready (its `Ready` condition `False`).
//!
//! From then on its kubelet neither hears the API nor reaches it: no status, no
//! event, no deletion confirmed. What its containers do meanwhile is kept aside
//! (the kubelet's own view of its pods) and reported once the node is restored:
//! its taints go, `Ready` is `True` again, its pods' statuses are written from
//! that view, and the kubelet carries out what happened in its absence (a pod
//! marked for deletion is stopped and removed). Its containers' processes run
//! on meanwhile, as on an unreachable machine, until their pod is removed from
//! the API.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::resources::{NODES, PODS};
use crate::scheduler::set_condition;
use crate::store::{Key, StoreError};
use crate::{objects, pods, podstatus};

/// The taint of a node the control plane cannot reach.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// The reason a pod of a lost node is given when it is evicted.
pub const NODE_LOST: &str = "NodeLost";

/// Why a node could not be lost or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeLossError {
    #[error("no node {0}")]
    NoSuchNode(String),
}

#[derive(Default)]
struct Lost {
    /// When each lost node was lost.
    nodes: HashMap<String, Instant>,
    /// The pods of lost nodes as their kubelet sees them, by uid: what it could
    /// not report.
    unreported: HashMap<String, Value>,
}

/// The nodes lost now, and what their kubelets could not report.
#[derive(Default)]
pub struct LostNodes {
    lost: Mutex<Lost>,
}

impl LostNodes {
    fn lock(&self) -> MutexGuard<'_, Lost> {
        // Every change is a single insert or removal: a poisoned lock holds
        // consistent maps.
        self.lost.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `node` is lost.
    pub fn contains(&self, node: &str) -> bool {
        self.lock().nodes.contains_key(node)
    }

    /// Whether the node `pod` is bound to is lost.
    pub fn holds(&self, pod: &Value) -> bool {
        node_of(pod).is_some_and(|node| self.contains(node))
    }

    /// The lost nodes, with when each was lost.
    pub fn since(&self) -> Vec<(String, Instant)> {
        let lost = self.lock();
        lost.nodes.iter().map(|(n, at)| (n.clone(), *at)).collect()
    }

    /// If `pod`'s node is lost, applies its kubelet's `edit` to the kubelet's
    /// own view of the pod (to be reported once the node is back) and returns
    /// true; false (nothing done) if the node is not lost.
    pub fn withhold(&self, pod: &Value, edit: impl FnOnce(&mut Value)) -> bool {
        let mut lost = self.lock();
        if !node_of(pod).is_some_and(|node| lost.nodes.contains_key(node)) {
            return false;
        }
        let view = lost
            .unreported
            .entry(objects::uid(pod).to_owned())
            .or_insert_with(|| pod.clone());
        edit(view);
        true
    }

    /// Forgets node `node` (restored or deleted); returns whether it was lost.
    fn forget(&self, node: &str) -> bool {
        self.lock().nodes.remove(node).is_some()
    }

    /// Takes what the kubelet could not report of the pod `uid`.
    fn take_unreported(&self, uid: &str) -> Option<Value> {
        self.lock().unreported.remove(uid)
    }
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// The pods bound to `node`.
pub fn pods_on(cluster: &Cluster, node: &str) -> Vec<std::sync::Arc<Value>> {
    let (all, _) = cluster.store.list(PODS.name, None);
    all.into_iter()
        .filter(|pod| node_of(pod) == Some(node))
        .collect()
}

/// The store key of `pod`.
pub fn pod_key(pod: &Value) -> Key {
    Key::new(
        PODS.name,
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        objects::name(pod),
    )
}

/// Loses node `node`: its kubelet falls silent first, then the node and its
/// pods are reported as the node lifecycle controller reports them.
pub fn lose(cluster: &Cluster, node: &str) -> Result<(), NodeLossError> {
    if !cluster.config.nodes.iter().any(|n| n.name == node) {
        return Err(NodeLossError::NoSuchNode(node.to_owned()));
    }
    cluster
        .lost_nodes
        .lock()
        .nodes
        .entry(node.to_owned())
        .or_insert_with(Instant::now);
    let _ = cluster
        .store
        .update::<StoreError>(&Key::new(NODES.name, "", node), |n| {
            mark_unreachable(n);
            Ok(())
        });
    for pod in pods_on(cluster, node) {
        if pods::is_terminal(&pod) {
            continue;
        }
        // The controller marks them not ready; phase and containers stay as
        // last reported.
        let _ = cluster.store.update::<StoreError>(&pod_key(&pod), |p| {
            set_condition(p, "Ready", "False", Some("NodeNotReady"), None);
            Ok(())
        });
    }
    Ok(())
}

/// Brings node `node` back: it is ready and untainted again, and its kubelet
/// reports what it could not. Every pod of the node that has not ended so
/// changes (its `Ready` condition at least, which the loss set `False` with
/// reason `NodeNotReady`), and the kubelet, hearing of it, carries out the
/// deletions it missed.
pub fn restore(cluster: &Cluster, node: &str) -> Result<(), NodeLossError> {
    let key = Key::new(NODES.name, "", node);
    if cluster.store.get(&key).is_none() {
        return Err(NodeLossError::NoSuchNode(node.to_owned()));
    }
    if !cluster.lost_nodes.forget(node) {
        return Ok(());
    }
    for pod in pods_on(cluster, node) {
        let seen = cluster.lost_nodes.take_unreported(objects::uid(&pod));
        if pods::is_terminal(&pod) && seen.is_none() {
            continue;
        }
        podstatus::update(cluster, &pod_key(&pod), |p| {
            if let Some(seen) = seen {
                p["status"] = seen["status"].clone();
            }
        });
    }
    let _ = cluster.store.update::<StoreError>(&key, |n| {
        mark_reachable(n);
        Ok(())
    });
    Ok(())
}

/// Forgets a deleted node, and what its kubelet could not report.
pub fn forget(cluster: &Cluster, node: &str, pods: &[std::sync::Arc<Value>]) {
    cluster.lost_nodes.forget(node);
    for pod in pods {
        cluster.lost_nodes.take_unreported(objects::uid(pod));
    }
}

/// Sets the node's `Ready` condition.
fn set_ready(node: &mut Value, status: &str, reason: &str, message: &str) {
    let now = crate::meta::now();
    for condition in node["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if condition["type"] == "Ready" {
            if condition["status"] != status {
                condition["lastTransitionTime"] = json!(now);
            }
            condition["status"] = json!(status);
            condition["reason"] = json!(reason);
            condition["message"] = json!(message);
            condition["lastHeartbeatTime"] = json!(now);
        }
    }
}

/// The node's `Ready` condition `Unknown`, and the unreachable taints.
fn mark_unreachable(node: &mut Value) {
    set_ready(
        node,
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    );
    let now = crate::meta::now();
    let mut taints = untainted(node);
    taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": now}));
    taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": now}));
    node["spec"]["taints"] = json!(taints);
}

/// The node's `Ready` condition `True`, without the unreachable taints.
fn mark_reachable(node: &mut Value) {
    set_ready(
        node,
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    );
    let taints = untainted(node);
    if taints.is_empty() {
        if let Some(spec) = node["spec"].as_object_mut() {
            spec.remove("taints");
        }
    } else {
        node["spec"]["taints"] = json!(taints);
    }
}

/// The node's taints but the unreachable ones.
fn untainted(node: &Value) -> Vec<Value> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["key"] != UNREACHABLE_TAINT)
        .cloned()
        .collect()
}
