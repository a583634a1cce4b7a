//! A pod's status as a kubelet reports it: container states, and the phase and
//! conditions that follow from them; while the pod's node is lost, kept aside
//! as the kubelet's own view (see [`crate::node_loss`]).

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::scheduler::set_condition;
use crate::store::{Key, StoreError};

/// Why the kubelet's update was not written.
enum NotWritten {
    Store,
    /// The pod's node is lost: its kubelet no longer reaches the API.
    NodeLost,
}

impl From<StoreError> for NotWritten {
    fn from(_: StoreError) -> NotWritten {
        NotWritten::Store
    }
}

/// Changes `pod`'s status with `edit`, then derives phase and conditions.
/// Returns the pod as stored, or `None` once it is gone (or while its node is
/// lost: the change then goes to the kubelet's own view, reported on restore).
pub fn update(
    cluster: &Cluster,
    key: &Key,
    edit: impl FnOnce(&mut Value),
) -> Option<std::sync::Arc<Value>> {
    cluster
        .store
        .update::<NotWritten>(key, |pod| {
            let mut edit = Some(edit);
            let withheld = cluster.lost_nodes.withhold(pod, |view| {
                if let Some(edit) = edit.take() {
                    edit(view);
                    derive(view);
                }
            });
            if withheld {
                return Err(NotWritten::NodeLost);
            }
            if let Some(edit) = edit.take() {
                edit(pod);
            }
            derive(pod);
            Ok(())
        })
        .ok()
}

/// Sets the state of container `name` (`{"waiting": {...}}`, `{"running": ...}`,
/// `{"terminated": ...}`), with `ready`/`started` following from it.
pub fn set_container(
    cluster: &Cluster,
    key: &Key,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> Option<std::sync::Arc<Value>> {
    update(cluster, key, |pod| {
        if let Some(list) = pod["status"]["containerStatuses"].as_array_mut()
            && let Some(cs) = list.iter_mut().find(|c| c["name"] == name)
        {
            edit(cs);
            let running = !cs["state"]["running"].is_null();
            cs["ready"] = json!(running);
            cs["started"] = json!(running);
        }
    })
}

/// The container statuses a pod starts with: every container waiting.
pub fn initial_containers(pod: &Value) -> Value {
    let list: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"], "imageID": "",
                "ready": false, "started": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
            })
        })
        .collect();
    Value::Array(list)
}

/// Derives phase and conditions from the container states, as a kubelet does.
fn derive(pod: &mut Value) {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if statuses.is_empty() {
        return;
    }
    let state = |c: &Value, s: &str| !c["state"][s].is_null();
    let all_terminated = statuses.iter().all(|c| state(c, "terminated"));
    let deadline = pod["status"]["reason"] == "DeadlineExceeded";
    let phase = if deadline {
        "Failed"
    } else if all_terminated {
        let all_ok = statuses
            .iter()
            .all(|c| c["state"]["terminated"]["exitCode"] == 0);
        if all_ok { "Succeeded" } else { "Failed" }
    } else if statuses.iter().any(|c| {
        state(c, "running") || state(c, "terminated") || c["restartCount"].as_u64() > Some(0)
    }) {
        "Running"
    } else {
        "Pending"
    };
    pod["status"]["phase"] = json!(phase);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|c| c["ready"] != true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    let (ready, reason, message) = if terminal {
        ("False", Some("PodCompleted"), None)
    } else if unready.is_empty() {
        ("True", None, None)
    } else {
        (
            "False",
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let to_start = if terminal { "False" } else { "True" };
    set_condition(pod, "PodReadyToStartContainers", to_start, None, None);
    set_condition(pod, "Initialized", "True", None, None);
    set_condition(pod, "Ready", ready, reason, message.as_deref());
    set_condition(pod, "ContainersReady", ready, reason, message.as_deref());
}
