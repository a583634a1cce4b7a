//! RBAC authorization of resource requests, from the RBAC objects in the store:
//! a user may do what a Role or ClusterRole bound to them in the request's
//! namespace (by a RoleBinding with a `User` or `ServiceAccount` subject) allows,
//! or what a ClusterRole bound to them everywhere (by a ClusterRoleBinding)
//! allows, and nothing else; a request at the cluster scope (nodes, a list
//! across namespaces) needs the latter. The admin is not checked.

use serde_json::Value;

use crate::auth::User;
use crate::cluster::Cluster;
use crate::resources::{CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES};
use crate::router::Target;
use crate::status::{ApiError, ForbiddenRequest};
use crate::store::Key;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do, as RBAC rules are matched against it.
struct Attributes<'a> {
    verb: &'a str,
    group: &'a str,
    /// `pods` or `pods/log`.
    resource: &'a str,
    name: Option<&'a str>,
}

/// Allows `user`'s request with `verb` on `target`, or refuses it with the real
/// `403 Forbidden` Status.
pub fn authorize(
    cluster: &Cluster,
    user: &User,
    verb: &str,
    target: &Target,
) -> Result<(), ApiError> {
    if user.admin {
        return Ok(());
    }
    let resource = target.resource_path();
    let attributes = Attributes {
        verb,
        group: target.resource.group,
        resource: &resource,
        name: target.name.as_deref(),
    };
    let allowed = target
        .namespace
        .as_deref()
        .is_some_and(|ns| allowed_in(cluster, &user.name, ns, &attributes))
        || allowed_everywhere(cluster, &user.name, &attributes);
    if allowed {
        return Ok(());
    }
    Err(forbidden(user, verb, target))
}

/// The real `403 Forbidden` of `user`'s request with `verb` on `target`.
pub fn forbidden(user: &User, verb: &str, target: &Target) -> ApiError {
    ApiError::Forbidden(Box::new(ForbiddenRequest {
        user: user.name.clone(),
        verb: verb.to_owned(),
        resource: target.resource.name.to_owned(),
        subresource: target.subresource.clone(),
        group: target.resource.group.to_owned(),
        name: target.name.clone(),
        namespace: target.namespace.clone(),
    }))
}

/// Whether a Role or ClusterRole bound to `user` in `namespace` allows the request.
fn allowed_in(cluster: &Cluster, user: &str, namespace: &str, attributes: &Attributes) -> bool {
    let (bindings, _) = cluster.store.list(ROLE_BINDINGS.name, Some(namespace));
    bindings
        .iter()
        .filter(|b| binds(b, user))
        .filter_map(|b| match b["roleRef"]["kind"].as_str()? {
            "Role" => role_ref_name(b).map(|name| Key::new(ROLES.name, namespace, name)),
            _ => role_ref_name(b).map(|name| Key::new(CLUSTER_ROLES.name, "", name)),
        })
        .any(|key| role_allows(cluster, &key, attributes))
}

/// Whether a ClusterRole bound to `user` by a ClusterRoleBinding allows the request.
fn allowed_everywhere(cluster: &Cluster, user: &str, attributes: &Attributes) -> bool {
    let (bindings, _) = cluster.store.list(CLUSTER_ROLE_BINDINGS.name, None);
    bindings
        .iter()
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole" && binds(b, user))
        .filter_map(|b| role_ref_name(b).map(|name| Key::new(CLUSTER_ROLES.name, "", name)))
        .any(|key| role_allows(cluster, &key, attributes))
}

fn role_ref_name(binding: &Value) -> Option<&str> {
    binding["roleRef"]["name"].as_str()
}

/// Whether a rule of the role at `key` allows the request.
fn role_allows(cluster: &Cluster, key: &Key, attributes: &Attributes) -> bool {
    cluster.store.get(key).is_some_and(|role| {
        role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| rule_allows(rule, attributes))
    })
}

/// Whether `binding` binds its role (a Role or ClusterRole) to the user `user`:
/// a `User` subject of that name, or a `ServiceAccount` subject whose token
/// user (`system:serviceaccount:NAMESPACE:NAME`) it is.
fn binds(binding: &Value, user: &str) -> bool {
    let role_ref = &binding["roleRef"];
    let namespace = binding["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let is_user = |s: &Value| match s["kind"].as_str() {
        Some("User") => s["name"] == user,
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().unwrap_or(namespace);
            let name = s["name"].as_str().unwrap_or_default();
            user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    };
    matches!(role_ref["kind"].as_str(), Some("Role" | "ClusterRole"))
        && role_ref["apiGroup"] == RBAC_GROUP
        && binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(is_user)
}

/// Whether `list` (a rule's `verbs`, `apiGroups`, ...) holds `wanted` or `*`.
fn holds(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v == "*" || v == wanted)
}

/// Whether one PolicyRule allows the request.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => a.name.is_some_and(|n| names.iter().any(|v| v == n)),
        _ => true,
    };
    holds(&rule["verbs"], a.verb)
        && holds(&rule["apiGroups"], a.group)
        && holds(&rule["resources"], a.resource)
        && names_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods(verb: &'static str, name: Option<&'static str>) -> Attributes<'static> {
        Attributes {
            verb,
            group: "",
            resource: "pods",
            name,
        }
    }

    #[test]
    fn a_rule_allows_its_verbs_groups_resources_and_names_only() {
        let rule = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &pods("get", Some("p"))));
        assert!(rule_allows(&rule, &pods("list", None)));
        assert!(!rule_allows(&rule, &pods("delete", Some("p"))));
        let log = Attributes {
            resource: "pods/log",
            ..pods("get", Some("p"))
        };
        assert!(!rule_allows(&rule, &log));
        let roles = Attributes {
            group: RBAC_GROUP,
            resource: "roles",
            ..pods("get", None)
        };
        assert!(!rule_allows(&rule, &roles));

        let named = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"],
                           "resourceNames": ["mine"]});
        assert!(rule_allows(&named, &pods("delete", Some("mine"))));
        assert!(!rule_allows(&named, &pods("delete", Some("yours"))));
        assert!(!rule_allows(&named, &pods("list", None)));

        let everything = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(&everything, &roles));
    }

    #[test]
    fn only_role_bindings_of_the_user_count() {
        let binding = |kind: &str, subject: &str| {
            json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": "r"},
                   "subjects": [{"kind": subject, "name": "alice"}]})
        };
        assert!(binds(&binding("Role", "User"), "alice"));
        assert!(!binds(&binding("Role", "User"), "bob"));
        assert!(binds(&binding("ClusterRole", "User"), "alice"));
        assert!(!binds(&binding("Secret", "User"), "alice"));
        assert!(!binds(&binding("Role", "Group"), "alice"));
        let account = json!({"metadata": {"namespace": "flare"},
                             "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
                             "subjects": [{"kind": "ServiceAccount", "name": "worker"}]});
        assert!(binds(&account, "system:serviceaccount:flare:worker"));
        assert!(!binds(&account, "system:serviceaccount:default:worker"));
        assert!(!binds(&account, "worker"));
    }
}
