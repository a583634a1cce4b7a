//! RBAC through kube-rs: Roles and RoleBindings (and ClusterRoles bound
//! cluster-wide) from a YAML file at start, or created through the API, allow
//! their verbs to their users; everything else is
//! refused with the real 403 `Forbidden` Status. The admin is not checked.

mod common;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube_sim::{Config, KubeSim, StartError, UserConfig};
use serde_json::json;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]},
    }))
    .expect("pod")
}

fn user(name: &str) -> UserConfig {
    UserConfig {
        name: name.to_owned(),
        token: format!("{name}-token"),
    }
}

/// `(code, reason, message)` of a refused request.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    let status = common::api_error(result.expect_err("refused"));
    (status.code, status.reason, status.message)
}

fn forbidden(message: &str) -> (u16, String, String) {
    (403, "Forbidden".to_owned(), message.to_owned())
}

#[tokio::test]
async fn a_role_from_a_file_allows_its_verbs_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, common::POD_READER_RBAC).expect("rbac file");
    let sim = common::start(|c| {
        c.users = vec![user("alice"), user("bob")];
        c.rbac_files = vec![rbac];
    })
    .await;
    let admin = common::client(&sim).await;
    Api::<Pod>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &pod("p"))
        .await
        .expect("the admin may do anything");

    let alice = common::client_for(&sim, "alice", "alice-token").await;
    let pods: Api<Pod> = Api::namespaced(alice.clone(), "default");
    pods.get("p").await.expect("alice may get");
    let listed = pods.list(&ListParams::default()).await.expect("may list");
    assert_eq!(listed.items.len(), 1);
    let mut events = pods
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .expect("may watch")
        .boxed();
    let first = events.try_next().await.expect("watch event");
    assert!(matches!(first, Some(WatchEvent::Added(_))), "{first:?}");

    assert_eq!(
        refused(pods.create(&PostParams::default(), &pod("mine")).await),
        forbidden(
            "pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );
    assert_eq!(
        refused(pods.delete("p", &DeleteParams::default()).await),
        forbidden(
            "pods \"p\" is forbidden: User \"alice\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );
    let elsewhere: Api<Pod> = Api::namespaced(alice.clone(), "kube-system");
    assert_eq!(
        refused(elsewhere.list(&ListParams::default()).await),
        forbidden(
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\""
        )
    );
    let everywhere: Api<Pod> = Api::all(alice.clone());
    assert_eq!(
        refused(everywhere.list(&ListParams::default()).await),
        forbidden(
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        )
    );
    let secrets: Api<Secret> = Api::namespaced(alice.clone(), "default");
    assert_eq!(refused(secrets.list(&ListParams::default()).await).0, 403);

    // bob has no binding until the admin makes one through the API.
    let bob = common::client_for(&sim, "bob", "bob-token").await;
    let bobs_pods: Api<Pod> = Api::namespaced(bob, "default");
    assert_eq!(refused(bobs_pods.list(&ListParams::default()).await).0, 403);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bob-reads-pods"},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"kind": "Role", "name": "pod-reader", "apiGroup": "rbac.authorization.k8s.io"},
    }))
    .expect("binding");
    let alices_bindings: Api<RoleBinding> = Api::namespaced(alice, "default");
    assert_eq!(
        refused(
            alices_bindings
                .create(&PostParams::default(), &binding)
                .await
        ),
        forbidden(
            "rolebindings.rbac.authorization.k8s.io is forbidden: User \"alice\" cannot create resource \"rolebindings\" in API group \"rbac.authorization.k8s.io\" in the namespace \"default\""
        )
    );
    Api::<RoleBinding>::namespaced(admin, "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("the admin binds bob");
    let now = bobs_pods
        .list(&ListParams::default())
        .await
        .expect("bob may list");
    assert_eq!(now.items.len(), 1);
}

#[tokio::test]
async fn an_rbac_file_with_other_kinds_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")
        .expect("rbac file");
    let config = Config {
        rbac_files: vec![rbac],
        ..Config::default()
    };
    let err = KubeSim::start(config).await.err().expect("refused");
    assert!(matches!(err, StartError::Rbac(_)), "{err}");
    assert!(err.to_string().contains("\"Secret\""), "{err}");
}

/// node-watcher may get, list and watch nodes everywhere; carol has it.
const NODE_WATCHER_RBAC: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-watcher}
rules:
- apiGroups: ['']
  resources: [nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: carol-watches-nodes}
subjects:
- {kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: node-watcher, apiGroup: rbac.authorization.k8s.io}
";

#[tokio::test]
async fn a_cluster_role_bound_cluster_wide_allows_nodes_and_nothing_else() {
    use k8s_openapi::api::core::v1::Node;
    let dir = tempfile::tempdir().expect("tempdir");
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, NODE_WATCHER_RBAC).expect("rbac file");
    let sim = common::start(|c| {
        c.users = vec![user("carol"), user("dave")];
        c.rbac_files = vec![rbac];
    })
    .await;
    let carol = common::client_for(&sim, "carol", "carol-token").await;
    let nodes: Api<Node> = Api::all(carol.clone());
    let listed = nodes.list(&ListParams::default()).await.expect("may list");
    assert_eq!(listed.items.len(), 1);
    nodes.get("kube-sim-node").await.expect("may get");
    assert_eq!(
        refused(
            nodes
                .delete("kube-sim-node", &DeleteParams::default())
                .await
        ),
        forbidden(
            "nodes \"kube-sim-node\" is forbidden: User \"carol\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
        )
    );
    let pods: Api<Pod> = Api::namespaced(carol, "default");
    assert_eq!(refused(pods.list(&ListParams::default()).await).0, 403);

    let dave = common::client_for(&sim, "dave", "dave-token").await;
    assert_eq!(
        refused(Api::<Node>::all(dave).list(&ListParams::default()).await),
        forbidden(
            "nodes is forbidden: User \"dave\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        )
    );
}
