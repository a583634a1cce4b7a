//! What the API server itself does to pods: validation and defaults on create
//! (with the default tolerations of a node that is not ready or unreachable),
//! and the grace period a delete gets.

use serde_json::{Value, json};

use crate::status::{ApiError, Cause};

/// The grace period of a pod that does not set `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The taints a pod tolerates for a while by default.
const DEFAULT_TOLERATED: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    crate::node_loss::UNREACHABLE_TAINT,
];

/// Checks a new pod and fills in what the real server defaults, resetting its
/// status to the initial `Pending`; like the `DefaultTolerationSeconds`
/// admission plugin, a pod that tolerates no `NoExecute` taint of a node that
/// is not ready (or unreachable) tolerates it for `toleration_seconds`.
pub fn prepare_create(pod: &mut Value, toleration_seconds: u64) -> Result<(), ApiError> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut causes = Vec::new();
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required("spec.containers"));
    }
    for (i, c) in containers.iter().enumerate() {
        if c["name"].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause::required(&format!("spec.containers[{i}].name")));
        }
        if c["image"].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause::required(&format!("spec.containers[{i}].image")));
        }
    }
    if let Some(deadline) = pod["spec"]["activeDeadlineSeconds"].as_i64()
        && deadline <= 0
    {
        causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &deadline.to_string(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
    if !matches!(policy, "Always" | "OnFailure" | "Never") {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
            field: "spec.restartPolicy".to_owned(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::Invalid {
            kind: "Pod".to_owned(),
            name,
            causes,
        });
    }

    let spec = &mut pod["spec"];
    let defaults = [
        ("restartPolicy", json!("Always")),
        (
            "terminationGracePeriodSeconds",
            json!(DEFAULT_GRACE_SECONDS),
        ),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ];
    for (field, value) in defaults {
        if spec.get(field).is_none_or(Value::is_null) {
            spec[field] = value;
        }
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            let image = c["image"].as_str().unwrap_or_default();
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            let pull = if !tagged || image.ends_with(":latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            for (field, value) in [
                ("imagePullPolicy", json!(pull)),
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                ("resources", json!({})),
            ] {
                if c.get(field).is_none_or(Value::is_null) {
                    c[field] = value;
                }
            }
        }
    }
    add_default_tolerations(&mut pod["spec"], toleration_seconds);
    let qos = qos_class(&pod["spec"]);
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
    Ok(())
}

/// Adds a toleration of each of [`DEFAULT_TOLERATED`] the pod does not
/// tolerate with `NoExecute` yet.
fn add_default_tolerations(spec: &mut Value, seconds: u64) {
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    let Some(tolerations) = spec["tolerations"].as_array_mut() else {
        return;
    };
    for taint in DEFAULT_TOLERATED {
        let tolerated = tolerations.iter().any(|t| {
            let key = t["key"].as_str().unwrap_or_default();
            let effect = t["effect"].as_str().unwrap_or_default();
            (key.is_empty() || key == taint) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            tolerations.push(json!({
                "key": taint, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let set = |c: &Value, kind: &str, res: &str| c["resources"][kind].get(res).is_some();
    let any = containers.iter().any(|c| {
        ["cpu", "memory"]
            .iter()
            .any(|r| set(c, "requests", r) || set(c, "limits", r))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// The grace period a delete gives `pod`: the request's, else the pod's own; zero
/// for a pod that never reached a node or has finished, as those have no
/// container for a kubelet to stop.
pub fn grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unbound = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty();
    if unbound || is_terminal(pod) {
        return 0;
    }
    requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_defaults_and_resets_status() {
        let mut pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"}});
        prepare_create(&mut pod, 300).expect("valid");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
    }

    #[test]
    fn a_pods_own_toleration_of_a_lost_node_is_kept() {
        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
        let mut pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": [own]}});
        prepare_create(&mut pod, 2).expect("valid");
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([own, {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}])
        );
    }

    #[test]
    fn a_pod_without_containers_is_invalid() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let err = prepare_create(&mut pod, 300).unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.to_string(),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
    }

    #[test]
    fn grace_is_zero_for_unbound_and_finished_pods() {
        let bound = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 7}});
        assert_eq!(grace_period(&bound, None), 7);
        assert_eq!(grace_period(&bound, Some(2)), 2);
        assert_eq!(grace_period(&json!({"spec": {}}), Some(5)), 0);
        let done = json!({"spec": {"nodeName": "n"}, "status": {"phase": "Failed"}});
        assert_eq!(grace_period(&done, None), 0);
    }
}
