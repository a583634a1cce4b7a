//! The node lifecycle, as kube-rs's client sees it: a lost node's pods keep
//! their phase and last reported containers but are not ready, the node is
//! `Ready=Unknown` and tainted unreachable, each pod is evicted (a graceful
//! delete, reason `NodeLost`) once it no longer tolerates the taint and stays
//! `Terminating`; a restored node reports what its containers did meanwhile
//! and finishes the deletions; a deleted node's pods are removed.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const NODE: &str = "kube-sim-node";

/// A pod running `script`, tolerating the lost node for `toleration` seconds
/// (`None`: the server's default).
fn pod(name: &str, script: &str, toleration: Option<i64>) -> Pod {
    let tolerations = toleration.map(|s| {
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": s}])
    });
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "tolerations": tolerations,
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}],
        },
    }))
    .expect("pod")
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pod_until(pods: &Api<Pod>, name: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    until(name, async || pods.get(name).await.ok().filter(|p| done(p))).await
}

async fn until_gone(pods: &Api<Pod>, name: &str) {
    until(name, async || {
        pods.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let found = conditions.iter().find(|c| c.type_ == kind)?;
    Some(found.status.as_str())
}

fn running(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && condition(pod, "Ready") == Some("True")
}

fn marked(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn node_ready(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    Some(
        conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone(),
    )
}

fn taints(node: &Node) -> Vec<(String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

#[tokio::test]
async fn a_lost_nodes_pod_runs_on_unready_until_its_toleration_then_stays_terminating() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    pods.create(
        &PostParams::default(),
        &pod("tolerant", "sleep 600", Some(2)),
    )
    .await
    .expect("create");
    pod_until(&pods, "tolerant", running).await;

    sim.lose_node(NODE).expect("the node exists");
    let node = nodes.get(NODE).await.expect("node");
    assert_eq!(node_ready(&node).as_deref(), Some("Unknown"));
    let unreachable = "node.kubernetes.io/unreachable".to_owned();
    assert_eq!(
        taints(&node),
        [
            (unreachable.clone(), "NoSchedule".to_owned()),
            (unreachable, "NoExecute".to_owned())
        ]
    );
    let unready = pod_until(&pods, "tolerant", |p| {
        condition(p, "Ready") == Some("False")
    })
    .await;
    assert_eq!(phase(&unready), Some("Running"));
    assert!(!marked(&unready), "evicted before its toleration");
    let statuses = unready.status.clone().unwrap().container_statuses.unwrap();
    assert!(
        statuses[0].state.as_ref().unwrap().running.is_some(),
        "{statuses:?}"
    );

    // Nothing more is placed on it.
    pods.create(&PostParams::default(), &pod("after", "sleep 600", None))
        .await
        .expect("create");
    let pending = pod_until(&pods, "after", |p| {
        condition(p, "PodScheduled") == Some("False")
    })
    .await;
    let conditions = pending.status.unwrap().conditions.unwrap();
    let why = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.message.clone())
        .expect("message");
    assert!(why.contains("node.kubernetes.io/unreachable"), "{why}");

    let evicted = pod_until(&pods, "tolerant", marked).await;
    let status = evicted.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("NodeLost"));
    assert_eq!(
        status.message.as_deref(),
        Some("Node kube-sim-node which was running pod tolerant is unresponsive")
    );
    assert_eq!(condition(&evicted, "DisruptionTarget"), Some("True"));
    assert_eq!(evicted.metadata.deletion_grace_period_seconds, Some(5));
    // Past its grace period, no kubelet confirms it: still there, still Running.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let terminating = pods.get("tolerant").await.expect("still there");
    assert!(marked(&terminating));
    assert_eq!(phase(&terminating), Some("Running"));

    // Back, its kubelet stops the pod and confirms the deletion.
    sim.restore_node(NODE).expect("the node exists");
    until_gone(&pods, "tolerant").await;
    let node = nodes.get(NODE).await.expect("node");
    assert_eq!(node_ready(&node).as_deref(), Some("True"));
    assert!(taints(&node).is_empty(), "{:?}", taints(&node));
}

#[tokio::test]
async fn the_servers_default_toleration_applies_and_a_pod_without_one_goes_at_once() {
    let sim = common::start(|c| c.default_toleration_seconds = 1).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("defaulted", "sleep 600", None))
        .await
        .expect("create");
    let tolerations = created.spec.unwrap().tolerations.unwrap();
    let unreachable = tolerations
        .iter()
        .find(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
        .expect("the default toleration");
    assert_eq!(unreachable.toleration_seconds, Some(1));
    pods.create(
        &PostParams::default(),
        &pod("intolerant", "sleep 600", Some(0)),
    )
    .await
    .expect("create");
    pod_until(&pods, "defaulted", running).await;
    pod_until(&pods, "intolerant", running).await;

    sim.lose_node(NODE).expect("the node exists");
    pod_until(&pods, "intolerant", marked).await;
    pod_until(&pods, "defaulted", marked).await;
}

#[tokio::test]
async fn a_restored_node_reports_what_its_containers_did_meanwhile() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exit 3",
        go.display()
    );
    pods.create(&PostParams::default(), &pod("ends", &script, None))
        .await
        .expect("create");
    pods.create(&PostParams::default(), &pod("runs", "sleep 600", None))
        .await
        .expect("create");
    pod_until(&pods, "ends", running).await;
    pod_until(&pods, "runs", running).await;

    sim.lose_node(NODE).expect("the node exists");
    pod_until(&pods, "runs", |p| condition(p, "Ready") == Some("False")).await;
    std::fs::write(&go, "").expect("go");
    // Its container ends unheard: the API still shows it running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stale = pods.get("ends").await.expect("get");
    assert_eq!(phase(&stale), Some("Running"));

    sim.restore_node(NODE).expect("the node exists");
    let ended = pod_until(&pods, "ends", |p| phase(p) == Some("Failed")).await;
    let statuses = ended.status.unwrap().container_statuses.unwrap();
    let terminated = statuses[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(terminated.exit_code, 3);
    pod_until(&pods, "runs", running).await;
    // Its kubelet confirms deletions again.
    pods.delete("runs", &DeleteParams::default())
        .await
        .expect("delete");
    until_gone(&pods, "runs").await;
}

#[tokio::test]
async fn a_deleted_nodes_pods_are_removed() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    pods.create(&PostParams::default(), &pod("orphan", "sleep 600", Some(0)))
        .await
        .expect("create");
    pod_until(&pods, "orphan", running).await;
    sim.lose_node(NODE).expect("the node exists");
    pod_until(&pods, "orphan", marked).await;

    nodes
        .delete(NODE, &DeleteParams::default())
        .await
        .expect("delete the node");
    until_gone(&pods, "orphan").await;
    assert!(sim.restore_node(NODE).is_err(), "restored a deleted node");
}
