//! What a pod's status says about its job: still pending (and why, when the
//! scheduler says so), running, ended (the job container's exit code and the
//! cluster's reason), failed to start for good (image pull errors, bad
//! container config, crash loops: the kubelet's reason and message), or in
//! phase `Unknown`. Pure functions over the pod, so every rule is checked
//! without a cluster.

use super::manifest::CONTAINER;
use crate::protocol::bounded::{bounded, bounded_to};
use crate::protocol::reason;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};

/// Waiting reasons from which a container does not start without someone
/// changing the pod or the cluster: the job fails at once.
pub const FAIL_FAST: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Longest reason taken from the cluster.
const MAX_REASON: usize = 128;

/// A pod's state, as its job sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; `blocked` says why when the cluster says (the pod cannot
    /// be scheduled), as a reason and a message.
    Pending {
        /// Why it waits, if known.
        blocked: Option<(String, String)>,
    },
    /// The job's container runs.
    Running,
    /// The job's container ended.
    Ended {
        /// Its exit code.
        exit_code: i32,
        /// `OOMKilled` or `DeadlineExceeded`, when that is why.
        reason: Option<&'static str>,
    },
    /// The pod will not run: the cluster's reason and message.
    StartFailed {
        /// Machine-readable cause, e.g. `ImagePullBackOff`.
        reason: String,
        /// The cluster's message.
        message: String,
    },
    /// The node stopped reporting on the pod.
    Unknown {
        /// What the cluster says.
        message: String,
    },
}

/// The state of `pod`.
pub fn classify(pod: &Pod) -> PodState {
    let no_status = PodStatus::default();
    let status = pod.status.as_ref().unwrap_or(&no_status);
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let deadline = status.reason.as_deref() == Some(reason::DEADLINE_EXCEEDED);
    let container = job_container(status.container_statuses.as_deref().unwrap_or_default());
    let no_state = ContainerState::default();
    let state = container
        .and_then(|c| c.state.as_ref())
        .unwrap_or(&no_state);
    if let Some(ended) = &state.terminated {
        let oom = ended.reason.as_deref() == Some(reason::OOM_KILLED);
        return PodState::Ended {
            exit_code: ended.exit_code,
            reason: if oom {
                Some(reason::OOM_KILLED)
            } else {
                deadline.then_some(reason::DEADLINE_EXCEEDED)
            },
        };
    }
    let said = |text: Option<&String>| bounded(text.map(String::as_str).unwrap_or_default());
    if phase == "Unknown" {
        return PodState::Unknown {
            message: said(status.message.as_ref()),
        };
    }
    if matches!(phase, "Succeeded" | "Failed") {
        // Ended without its container's end on record (stopped while waiting).
        return PodState::StartFailed {
            reason: bounded_to(status.reason.as_deref().unwrap_or(phase), MAX_REASON),
            message: said(status.message.as_ref()),
        };
    }
    if state.running.is_some() {
        return PodState::Running;
    }
    if let Some(waiting) = &state.waiting
        && let Some(why) = waiting.reason.as_deref()
        && FAIL_FAST.contains(&why)
    {
        return PodState::StartFailed {
            reason: why.to_owned(),
            message: said(waiting.message.as_ref()),
        };
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    PodState::Pending {
        blocked: unschedulable.map(|c| {
            (
                bounded_to(c.reason.as_deref().unwrap_or("Unschedulable"), MAX_REASON),
                said(c.message.as_ref()),
            )
        }),
    }
}

/// The status of the job's container (the first, should a template have
/// renamed it).
fn job_container(statuses: &[ContainerStatus]) -> Option<&ContainerStatus> {
    statuses
        .iter()
        .find(|c| c.name == CONTAINER)
        .or_else(|| statuses.first())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn container(state: serde_json::Value) -> serde_json::Value {
        json!({"name": CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state})
    }

    #[test]
    fn exit_codes_come_from_the_containers_terminated_state() {
        let ended = |code: i32, why: &str, pod_reason: Option<&str>| {
            classify(&pod(json!({
                // The pod's phase says Succeeded even for code 3 here: the
                // container's state is what counts.
                "phase": "Succeeded",
                "reason": pod_reason,
                "containerStatuses": [container(json!({"terminated": {"exitCode": code, "reason": why}}))],
            })))
        };
        assert_eq!(
            ended(0, "Completed", None),
            PodState::Ended {
                exit_code: 0,
                reason: None
            }
        );
        assert_eq!(
            ended(3, "Error", None),
            PodState::Ended {
                exit_code: 3,
                reason: None
            }
        );
        assert_eq!(
            ended(137, "OOMKilled", None),
            PodState::Ended {
                exit_code: 137,
                reason: Some("OOMKilled")
            }
        );
        assert_eq!(
            ended(143, "Error", Some("DeadlineExceeded")),
            PodState::Ended {
                exit_code: 143,
                reason: Some("DeadlineExceeded")
            }
        );
    }

    #[test]
    fn pull_and_config_errors_fail_fast_with_the_kubelets_words() {
        for why in FAIL_FAST {
            let state = classify(&pod(json!({
                "phase": "Pending",
                "containerStatuses": [container(json!({"waiting": {"reason": why, "message": "m"}}))],
            })));
            assert_eq!(
                state,
                PodState::StartFailed {
                    reason: (*why).into(),
                    message: "m".into()
                }
            );
        }
        let creating = classify(&pod(json!({
            "phase": "Pending",
            "containerStatuses": [container(json!({"waiting": {"reason": "ContainerCreating"}}))],
        })));
        assert_eq!(creating, PodState::Pending { blocked: None });
    }

    #[test]
    fn pending_running_unschedulable_and_unknown_are_told_apart() {
        assert_eq!(
            classify(&pod(json!({}))),
            PodState::Pending { blocked: None }
        );
        let unschedulable = classify(&pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}],
        })));
        assert_eq!(
            unschedulable,
            PodState::Pending {
                blocked: Some((
                    "Unschedulable".into(),
                    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.".into()
                ))
            }
        );
        let running = classify(&pod(json!({
            "phase": "Running",
            "containerStatuses": [container(json!({"running": {}}))],
        })));
        assert_eq!(running, PodState::Running);
        let unknown = classify(&pod(json!({"phase": "Unknown", "message": "node lost"})));
        assert_eq!(
            unknown,
            PodState::Unknown {
                message: "node lost".into()
            }
        );
        let stopped_waiting = classify(&pod(
            json!({"phase": "Failed", "reason": "DeadlineExceeded", "message": "too long"}),
        ));
        assert_eq!(
            stopped_waiting,
            PodState::StartFailed {
                reason: "DeadlineExceeded".into(),
                message: "too long".into()
            }
        );
    }
}
