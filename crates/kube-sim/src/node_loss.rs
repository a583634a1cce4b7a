//! A node lost on demand, as the node controller reports a node whose kubelet it
//! no longer hears from: the node's `Ready` condition becomes `Unknown` and it is
//! tainted unreachable (the scheduler places nothing more on it), and each of its
//! pods that has not ended goes to phase `Unknown` (reason `NodeLost`), not ready.
//! From then on its kubelet reports nothing: no status, no event, and a graceful
//! deletion is never confirmed (only a deletion without grace removes a pod).
//! Its containers' processes go on, as on an unreachable machine, until their
//! pod is removed from the API.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::resources::{NODES, PODS};
use crate::scheduler::set_condition;
use crate::store::{Key, StoreError};
use crate::{objects, pods};

/// The taint of a node the control plane cannot reach.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Why a node could not be lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeLossError {
    #[error("no node {0}")]
    NoSuchNode(String),
}

/// The nodes lost so far.
#[derive(Default)]
pub struct LostNodes {
    names: Mutex<HashSet<String>>,
}

impl LostNodes {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        // Names are only inserted: a poisoned lock holds a consistent set.
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `node` is lost.
    pub fn contains(&self, node: &str) -> bool {
        self.lock().contains(node)
    }

    /// Whether the node `pod` is bound to is lost.
    pub fn holds(&self, pod: &Value) -> bool {
        pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|node| self.contains(node))
    }
}

/// Loses node `node`: its kubelet falls silent first, then the node and its
/// pods are reported as the node controller reports them.
pub fn lose(cluster: &Cluster, node: &str) -> Result<(), NodeLossError> {
    if !cluster.config.nodes.iter().any(|n| n.name == node) {
        return Err(NodeLossError::NoSuchNode(node.to_owned()));
    }
    cluster.lost_nodes.lock().insert(node.to_owned());
    let _ = cluster
        .store
        .update::<StoreError>(&Key::new(NODES.name, "", node), |n| {
            mark_unreachable(n);
            Ok(())
        });
    let (all, _) = cluster.store.list(PODS.name, None);
    for pod in all {
        if pod["spec"]["nodeName"] != node || pods::is_terminal(&pod) {
            continue;
        }
        let key = Key::new(
            PODS.name,
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            objects::name(&pod),
        );
        let message = format!(
            "Node {node} which was running pod {} is unresponsive",
            objects::name(&pod)
        );
        let _ = cluster.store.update::<StoreError>(&key, |p| {
            p["status"]["phase"] = json!("Unknown");
            p["status"]["reason"] = json!("NodeLost");
            p["status"]["message"] = json!(message);
            set_condition(p, "Ready", "False", None, None);
            Ok(())
        });
    }
    Ok(())
}

/// The node's `Ready` condition `Unknown`, and the unreachable taints.
fn mark_unreachable(node: &mut Value) {
    let now = crate::meta::now();
    for condition in node["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if condition["type"] == "Ready" {
            condition["status"] = json!("Unknown");
            condition["reason"] = json!("NodeStatusUnknown");
            condition["message"] = json!("Kubelet stopped posting node status.");
            condition["lastTransitionTime"] = json!(now);
        }
    }
    node["spec"]["taints"] = json!([
        {"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": now},
        {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": now},
    ]);
}
