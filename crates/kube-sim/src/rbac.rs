//! RBAC authorization of resource requests, from the Roles and RoleBindings in
//! the store: a user may do what a Role bound to them (by a RoleBinding with a
//! `User` subject) in the request's namespace allows, and nothing else. The admin
//! is not checked. ClusterRoles and ClusterRoleBindings are not served, so a
//! request at the cluster scope is allowed to the admin only.

use serde_json::Value;

use crate::auth::User;
use crate::cluster::Cluster;
use crate::resources::{ROLE_BINDINGS, ROLES};
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
        .is_some_and(|ns| allowed_in(cluster, &user.name, ns, &attributes));
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

/// Whether a Role bound to `user` in `namespace` allows the request.
fn allowed_in(cluster: &Cluster, user: &str, namespace: &str, attributes: &Attributes) -> bool {
    let (bindings, _) = cluster.store.list(ROLE_BINDINGS.name, Some(namespace));
    bindings
        .iter()
        .filter(|b| binds(b, user))
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .filter_map(|role| cluster.store.get(&Key::new(ROLES.name, namespace, role)))
        .any(|role| {
            role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| rule_allows(rule, attributes))
        })
}

/// Whether `binding` binds a Role (not a ClusterRole) to the user `user`: a
/// `User` subject of that name, or a `ServiceAccount` subject whose token user
/// (`system:serviceaccount:NAMESPACE:NAME`) it is.
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
    role_ref["kind"] == "Role"
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
        assert!(!binds(&binding("ClusterRole", "User"), "alice"));
        assert!(!binds(&binding("Role", "Group"), "alice"));
        let account = json!({"metadata": {"namespace": "flare"},
                             "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
                             "subjects": [{"kind": "ServiceAccount", "name": "worker"}]});
        assert!(binds(&account, "system:serviceaccount:flare:worker"));
        assert!(!binds(&account, "system:serviceaccount:default:worker"));
        assert!(!binds(&account, "worker"));
    }
}
