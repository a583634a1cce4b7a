//! The controllers that act on lost and deleted nodes, as the real control
//! plane's taint eviction controller and pod garbage collector do:
//! - a pod on a lost node (tainted `node.kubernetes.io/unreachable:NoExecute`)
//!   is evicted once it stops tolerating the taint: at once without a matching
//!   toleration, never with one that sets no `tolerationSeconds`, else after
//!   the least `tolerationSeconds` of those that match, counted from the loss
//!   (the API server gives every pod a toleration of
//!   [`crate::Config::default_toleration_seconds`] unless it has its own).
//!   Eviction is a graceful delete: the pod is marked (`deletionTimestamp`),
//!   gets the `DisruptionTarget` condition and reason `NodeLost`, and stays so
//!   (`Terminating`) until its kubelet is back to confirm it;
//! - the pods of a deleted node are removed at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::node_loss::{self, NODE_LOST, UNREACHABLE_TAINT};
use crate::resources::NODES;
use crate::scheduler::set_condition;
use crate::store::{ChangeKind, StoreError};
use crate::{api, pods};

/// How often the pods of lost nodes are checked for eviction.
const EVICTION_TICK: Duration = Duration::from_millis(100);

/// Runs the controllers until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut changes = cluster.store.changes();
    let mut tick = tokio::time::interval(EVICTION_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => evict_due(&cluster),
            change = changes.recv() => match change {
                Ok(c) if c.key.resource == NODES.name && c.kind == ChangeKind::Deleted => {
                    collect_pods_of_deleted(&cluster, &c.key.name);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Evicts every pod of a lost node that no longer tolerates its loss.
fn evict_due(cluster: &Cluster) {
    for (node, since) in cluster.lost_nodes.since() {
        for pod in node_loss::pods_on(cluster, &node) {
            let marked = !pod["metadata"]["deletionTimestamp"].is_null();
            if marked || pods::is_terminal(&pod) {
                continue;
            }
            if toleration(&pod).is_some_and(|t| since + t <= Instant::now()) {
                evict(cluster, &node, &pod);
            }
        }
    }
}

/// How long `pod` tolerates the unreachable `NoExecute` taint (`None`: for
/// ever), as the taint eviction controller reads its tolerations.
pub fn toleration(pod: &Value) -> Option<Duration> {
    let matching: Vec<&Value> = pod["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| tolerates_unreachable(t))
        .collect();
    if matching.is_empty() {
        return Some(Duration::ZERO);
    }
    matching
        .iter()
        .filter_map(|t| t["tolerationSeconds"].as_i64())
        .min()
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// Whether toleration `t` matches the unreachable `NoExecute` taint (which has
/// no value).
fn tolerates_unreachable(t: &Value) -> bool {
    let effect = t["effect"].as_str().unwrap_or_default();
    let key = t["key"].as_str().unwrap_or_default();
    let exists = t["operator"] == "Exists";
    let value = t["value"].as_str().unwrap_or_default();
    let key_matches = if key.is_empty() {
        exists
    } else {
        key == UNREACHABLE_TAINT && (exists || value.is_empty())
    };
    (effect.is_empty() || effect == "NoExecute") && key_matches
}

/// Deletes `pod` of lost node `node` as the taint eviction controller does:
/// gracefully, with the pod's own grace period.
fn evict(cluster: &Cluster, node: &str, pod: &Value) {
    let key = node_loss::pod_key(pod);
    let uid = crate::objects::uid(pod).to_owned();
    let grace = pods::grace_period(pod, None);
    if grace == 0 {
        let _ = cluster.store.delete::<StoreError>(&key, |p| same(p, &uid));
        return;
    }
    let message = format!(
        "Node {node} which was running pod {} is unresponsive",
        crate::objects::name(pod)
    );
    let _ = cluster.store.update::<StoreError>(&key, |p| {
        same(p, &uid)?;
        api::mark_for_deletion(p, grace);
        p["status"]["reason"] = json!(NODE_LOST);
        p["status"]["message"] = json!(message);
        set_condition(
            p,
            "DisruptionTarget",
            "True",
            Some("DeletionByTaintManager"),
            Some("Taint manager: deleting due to NoExecute taint"),
        );
        Ok(())
    });
}

/// The pod garbage collector's part: a deleted node's pods go at once.
fn collect_pods_of_deleted(cluster: &Cluster, node: &str) {
    let pods = node_loss::pods_on(cluster, node);
    node_loss::forget(cluster, node, &pods);
    for pod in pods {
        let uid = crate::objects::uid(&pod).to_owned();
        let _ = cluster
            .store
            .delete::<StoreError>(&node_loss::pod_key(&pod), |p| same(p, &uid));
    }
}

/// Refuses to act on another pod of the same name.
fn same(pod: &Value, uid: &str) -> Result<(), StoreError> {
    if crate::objects::uid(pod) == uid {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerating(tolerations: Value) -> Option<Duration> {
        toleration(&json!({"spec": {"tolerations": tolerations}}))
    }

    #[test]
    fn the_least_matching_toleration_counts() {
        assert_eq!(tolerating(json!([])), Some(Duration::ZERO));
        let unreachable = |s: i64| json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s});
        assert_eq!(
            tolerating(json!([unreachable(30), unreachable(7)])),
            Some(Duration::from_secs(7))
        );
        let other = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1});
        assert_eq!(
            tolerating(json!([other, unreachable(30)])),
            Some(Duration::from_secs(30))
        );
        let no_schedule =
            json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(tolerating(json!([no_schedule])), Some(Duration::ZERO));
        let forever = json!({"operator": "Exists"});
        assert_eq!(tolerating(json!([forever])), None);
    }
}
