//! The scheduler and kubelet through kube-rs, watched with kube-runtime's own
//! watcher: pods really run and exit, deletion stops them with SIGTERM within the
//! grace period, deadlines fail pods, GPUs are counted, unpullable images back off.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::json;

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec,
    }))
    .expect("pod")
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Waits (watching, not polling) until pod `name` satisfies `done`; returns it.
async fn wait_for(pods: &Api<Pod>, name: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(pods.clone(), config).boxed();
    tokio::time::timeout(common::PATIENCE, async {
        while let Some(event) = stream.try_next().await.expect("watch") {
            if let WatchEvent::Apply(p) | WatchEvent::InitApply(p) = event
                && done(&p)
            {
                return p;
            }
        }
        panic!("watch ended");
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} never got there"))
}

async fn reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn a_pod_runs_as_a_process_and_its_exit_code_is_reported() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // kube-runtime's watcher sees every phase the pod goes through.
    let seen = tokio::spawn({
        let pods = pods.clone();
        async move {
            let mut phases: Vec<String> = Vec::new();
            let config = watcher::Config::default().fields("metadata.name=job");
            let mut stream = watcher::watcher(pods, config).boxed();
            while let Some(event) = stream.try_next().await.expect("watch") {
                if let WatchEvent::Apply(p) | WatchEvent::InitApply(p) = event {
                    let ph = phase(&p);
                    if phases.last() != Some(&ph) {
                        phases.push(ph.clone());
                    }
                    if ph == "Failed" {
                        return phases;
                    }
                }
            }
            phases
        }
    });
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "echo \"hello $WHO from $POD\"; while [ ! -e \"$GO\" ]; do sleep 0.05; done; exit 3"],
            "env": [{"name": "WHO", "value": "kube-sim"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "GO", "value": "go"}]}],
    });
    pods.create(&PostParams::default(), &pod("job", spec))
        .await
        .expect("create");
    let running = wait_for(&pods, "job", |p| phase(p) == "Running").await;
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("kube-sim-node")
    );
    // The process runs in the pod directory: it exits once a file appears there.
    let uid = running.metadata.uid.clone().expect("uid");
    std::fs::write(find_pod_dir(&sim, &uid).join("go"), "").expect("write go file");
    let done = wait_for(&pods, "job", |p| phase(p) == "Failed").await;
    let state = done
        .status
        .and_then(|s| s.container_statuses)
        .expect("statuses")[0]
        .state
        .clone()
        .expect("state");
    let terminated = state.terminated.expect("terminated");
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert!(terminated.finished_at.is_some());
    let phases = tokio::time::timeout(common::PATIENCE, seen)
        .await
        .expect("watcher")
        .expect("task");
    assert_eq!(
        phases.first().map(String::as_str),
        Some("Pending"),
        "{phases:?}"
    );
    assert!(phases.contains(&"Running".to_owned()), "{phases:?}");
    assert_eq!(phases.last().map(String::as_str), Some("Failed"));

    let logs = pods.logs("job", &Default::default()).await.expect("logs");
    assert_eq!(logs, "hello kube-sim from job\n");
    let r = reasons(&client, "job").await;
    for want in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(r.contains(&want.to_owned()), "{want} missing from {r:?}");
    }
}

/// The working directory of the pod with `uid` (its containers' default).
fn find_pod_dir(sim: &kube_sim::KubeSim, uid: &str) -> std::path::PathBuf {
    sim.data_dir().join("pods").join(uid)
}

#[tokio::test]
async fn deletion_terminates_the_process_then_the_pod_is_gone() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({
        "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"]}],
    });
    pods.create(&PostParams::default(), &pod("svc", spec))
        .await
        .expect("create");
    wait_for(&pods, "svc", |p| phase(p) == "Running").await;
    let mut stream = watcher::watch_object(pods.clone(), "svc").boxed();
    let marked = pods
        .delete("svc", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = marked.left().expect("a graceful delete returns the pod");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    // The trap exits at once on SIGTERM, well within the 30 s grace period.
    tokio::time::timeout(common::PATIENCE, async {
        while let Some(obj) = stream.try_next().await.expect("watch") {
            if obj.is_none() {
                return;
            }
        }
    })
    .await
    .expect("the pod is deleted once its process has stopped");
    assert!(
        reasons(&client, "svc")
            .await
            .contains(&"Killing".to_owned())
    );
}

#[tokio::test]
async fn a_deadline_fails_the_pod_with_deadline_exceeded() {
    let sim = common::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim).await, "default");
    let spec = json!({
        "restartPolicy": "Never", "activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}],
    });
    pods.create(&PostParams::default(), &pod("slow", spec))
        .await
        .expect("create");
    let done = wait_for(&pods, "slow", |p| phase(p) == "Failed").await;
    let status = done.status.expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
}

#[tokio::test]
async fn a_pod_asking_for_more_gpus_than_the_node_has_is_unschedulable() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"containers": [{"name": "main", "image": "trainer:1",
        "command": ["sleep", "600"], "resources": {"limits": {"nvidia.com/gpu": "3"}}}]});
    pods.create(&PostParams::default(), &pod("big", spec))
        .await
        .expect("create");
    let p = wait_for(&pods, "big", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
    })
    .await;
    let cond = p
        .status
        .and_then(|s| s.conditions)
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert!(
        cond.message
            .as_deref()
            .is_some_and(|m| m.contains("1 Insufficient nvidia.com/gpu")),
        "{cond:?}"
    );
    assert!(
        reasons(&client, "big")
            .await
            .contains(&"FailedScheduling".to_owned())
    );
}

#[tokio::test]
async fn an_unpullable_image_backs_off() {
    let sim = common::start(|c| c.backoff_initial = Duration::from_millis(200)).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"containers": [{"name": "main", "image": "registry.example/unpullable:1"}]});
    pods.create(&PostParams::default(), &pod("nopull", spec))
        .await
        .expect("create");
    let waiting_reason = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
    };
    wait_for(&pods, "nopull", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    let p = pods.get("nopull").await.expect("get");
    assert_eq!(phase(&p), "Pending");
    let r = reasons(&client, "nopull").await;
    assert!(
        r.contains(&"Failed".to_owned()) && r.contains(&"BackOff".to_owned()),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_pending_pod_is_bound_once_a_deleted_or_finished_pod_gives_its_gpus_back() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let both_gpus = |command: &str| {
        json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "trainer:1",
            "command": ["sh", "-c", command], "resources": {"limits": {"nvidia.com/gpu": "2"}}}]})
    };
    let create = |name: &'static str, command: &'static str| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod(name, both_gpus(command)))
                .await
                .expect("create")
        }
    };
    create("hog", "sleep 600").await;
    wait_for(&pods, "hog", |p| phase(p) == "Running").await;
    create("next", "true").await;
    wait_for(&pods, "next", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled"))
    })
    .await;
    assert_eq!(phase(&pods.get("next").await.expect("get")), "Pending");

    // Deleted: its GPUs go to the pod that waits, which runs and ends...
    pods.delete("hog", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    wait_for(&pods, "next", |p| phase(p) == "Succeeded").await;
    // ... and, ended, gives them back in turn.
    create("last", "sleep 600").await;
    wait_for(&pods, "last", |p| phase(p) == "Running").await;
}

#[tokio::test]
async fn a_followed_log_has_all_the_output_and_ends_with_its_container() {
    let sim = common::start(|_| {}).await;
    let client = common::client(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36",
        "command": ["sh", "-c", "echo one; sleep 0.3; echo two"]}]});
    pods.create(&PostParams::default(), &pod("talker", spec))
        .await
        .expect("create");
    wait_for(&pods, "talker", |p| phase(p) == "Running").await;
    let params = kube::api::LogParams {
        follow: true,
        ..Default::default()
    };
    let mut stream = pods.log_stream("talker", &params).await.expect("log");
    let mut text = String::new();
    tokio::time::timeout(
        common::PATIENCE,
        futures::AsyncReadExt::read_to_string(&mut stream, &mut text),
    )
    .await
    .expect("the log ends with its container")
    .expect("read");
    assert_eq!(text, "one\ntwo\n");
}
