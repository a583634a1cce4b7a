//! The resource types kube-sim serves, and the discovery documents that list them.
//!
//! One static table says, for every resource, its group, kind, whether it is
//! namespaced, which verbs it allows and which fields a field selector may name;
//! routing, validation and discovery (`/api`, `/api/v1`, `/apis`, `/apis/GROUP/v1`)
//! all read it, so they cannot disagree.

use serde_json::{Value, json};

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Plural name as it appears in paths (`pods`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// API group; empty for the core group.
    pub group: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    /// Fields a field selector may use besides `metadata.name` and `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    /// Subresources (`pods/status`, `pods/log`).
    pub subresources: &'static [&'static str],
}

impl Resource {
    /// `v1` or `GROUP/v1`, as in an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// The `kind` of this resource's lists (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const ALL_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub static PODS: Resource = Resource {
    name: "pods",
    singular: "pod",
    kind: "Pod",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["po"],
    selectable_fields: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    subresources: &["status", "log"],
};

pub static NAMESPACES: Resource = Resource {
    name: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    group: "",
    namespaced: false,
    verbs: &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ],
    short_names: &["ns"],
    selectable_fields: &["status.phase"],
    subresources: &[],
};

pub static NODES: Resource = Resource {
    name: "nodes",
    singular: "node",
    kind: "Node",
    group: "",
    namespaced: false,
    verbs: &["get", "list", "watch"],
    short_names: &["no"],
    selectable_fields: &["spec.unschedulable"],
    subresources: &[],
};

pub static EVENTS: Resource = Resource {
    name: "events",
    singular: "event",
    kind: "Event",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["ev"],
    selectable_fields: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    subresources: &[],
};

pub static SECRETS: Resource = Resource {
    name: "secrets",
    singular: "secret",
    kind: "Secret",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &[],
    selectable_fields: &["type"],
    subresources: &[],
};

pub static CONFIGMAPS: Resource = Resource {
    name: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["cm"],
    selectable_fields: &[],
    subresources: &[],
};

pub static PVCS: Resource = Resource {
    name: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    kind: "PersistentVolumeClaim",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["pvc"],
    selectable_fields: &[],
    subresources: &[],
};

pub static SERVICE_ACCOUNTS: Resource = Resource {
    name: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    group: "",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["sa"],
    selectable_fields: &[],
    subresources: &[],
};

/// Deployments are stored and served (so manifests apply), but no controller
/// makes their pods.
pub static DEPLOYMENTS: Resource = Resource {
    name: "deployments",
    singular: "deployment",
    kind: "Deployment",
    group: "apps",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["deploy"],
    selectable_fields: &[],
    subresources: &[],
};

/// PodDisruptionBudgets are stored and served (so manifests apply), but no
/// eviction API consults them.
pub static POD_DISRUPTION_BUDGETS: Resource = Resource {
    name: "poddisruptionbudgets",
    singular: "poddisruptionbudget",
    kind: "PodDisruptionBudget",
    group: "policy",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &["pdb"],
    selectable_fields: &[],
    subresources: &[],
};

pub static ROLES: Resource = Resource {
    name: "roles",
    singular: "role",
    kind: "Role",
    group: "rbac.authorization.k8s.io",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &[],
    selectable_fields: &[],
    subresources: &[],
};

pub static ROLE_BINDINGS: Resource = Resource {
    name: "rolebindings",
    singular: "rolebinding",
    kind: "RoleBinding",
    group: "rbac.authorization.k8s.io",
    namespaced: true,
    verbs: ALL_VERBS,
    short_names: &[],
    selectable_fields: &[],
    subresources: &[],
};

pub static CLUSTER_ROLES: Resource = Resource {
    name: "clusterroles",
    singular: "clusterrole",
    kind: "ClusterRole",
    group: "rbac.authorization.k8s.io",
    namespaced: false,
    verbs: ALL_VERBS,
    short_names: &[],
    selectable_fields: &[],
    subresources: &[],
};

pub static CLUSTER_ROLE_BINDINGS: Resource = Resource {
    name: "clusterrolebindings",
    singular: "clusterrolebinding",
    kind: "ClusterRoleBinding",
    group: "rbac.authorization.k8s.io",
    namespaced: false,
    verbs: ALL_VERBS,
    short_names: &[],
    selectable_fields: &[],
    subresources: &[],
};

/// Every served resource, core group first.
pub static ALL: &[&Resource] = &[
    &NAMESPACES,
    &NODES,
    &PODS,
    &EVENTS,
    &SECRETS,
    &CONFIGMAPS,
    &PVCS,
    &SERVICE_ACCOUNTS,
    &DEPLOYMENTS,
    &POD_DISRUPTION_BUDGETS,
    &ROLES,
    &ROLE_BINDINGS,
    &CLUSTER_ROLES,
    &CLUSTER_ROLE_BINDINGS,
];

/// The API groups besides core; each serves version `v1` only.
const GROUPS: &[&str] = &["apps", "policy", "rbac.authorization.k8s.io"];

/// The resource `name` of `group`, if served.
pub fn find(group: &str, name: &str) -> Option<&'static Resource> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.name == name)
}

/// The resource whose objects have `kind` in `api_version` (`v1`,
/// `GROUP/v1`), as an owner reference names it, if served.
pub fn of_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    ALL.iter()
        .copied()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|g| {
            let v = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [v.clone()], "preferredVersion": v})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/GROUP`, if the group is served.
pub fn group(group: &str) -> Option<Value> {
    GROUPS.contains(&group).then(|| {
        let v = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
               "versions": [v.clone()], "preferredVersion": v})
    })
}

/// `GET /api/v1` (group `""`) or `GET /apis/GROUP/v1`, if the group is served.
pub fn resource_list(group: &str) -> Option<Value> {
    if !group.is_empty() && !GROUPS.contains(&group) {
        return None;
    }
    let mut resources = Vec::new();
    for r in ALL.iter().filter(|r| r.group == group) {
        resources.push(json!({
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "shortNames": r.short_names,
        }));
        for sub in r.subresources {
            let verbs: &[&str] = if *sub == "log" {
                &["get"]
            } else {
                &["get", "patch", "update"]
            };
            resources.push(json!({
                "name": format!("{}/{sub}", r.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_discovery_lists_pods_and_their_subresources() {
        let list = resource_list("").expect("core group");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/log"));
        assert!(!names.contains(&"roles"));
        assert!(resource_list("batch").is_none());
    }

    #[test]
    fn rbac_resources_are_found_in_their_group_only() {
        assert!(find("rbac.authorization.k8s.io", "roles").is_some());
        assert!(find("", "roles").is_none());
        assert_eq!(ROLES.api_version(), "rbac.authorization.k8s.io/v1");
    }
}
