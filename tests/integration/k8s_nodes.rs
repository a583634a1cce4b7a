//! Jobs on a Kubernetes node that is lost, as a real cluster's node lifecycle
//! shows it (kube-sim's: the pod stays `Running`, its node `Ready=Unknown`, no
//! kubelet confirms anything): the worker, reading nodes through its one node
//! watch under the shipped ClusterRole, ends such a job `lost` (`NodeLost`)
//! after `--node-lost-after` and force-deletes its pod; a terminate of such a
//! job ends `StopUnconfirmed` instead of waiting for ever; a node back in time
//! changes nothing; a worker refused the nodes carries on.

use crate::common::docker::unique;
use crate::common::k8s::{
    Cluster, PATIENCE, in_pod, k8s_worker, launch_until_ready, wait_for_file,
};
use crate::common::processes::collect_lines;
use crate::common::system::{System, assert_well_formed, states};
use crate::k8s::{MISSING_SECRET, needing_a_missing_secret};
use flare_launcher::protocol::JobEvent;
use std::time::Duration;

const NODE: &str = "kube-sim-node";

/// A system whose worker takes a node unready for `after` for lost.
async fn system_losing_nodes_after(cluster: &Cluster, after: Duration) -> System {
    System::start_with(|config| {
        k8s_worker(config, cluster);
        config.k8s.node_lost_after = after;
        config.k8s.allowed_secrets = vec![MISSING_SECRET.into()];
    })
    .await
}

/// The job's events once it has ended and a while has passed: anything
/// published after the end would be there.
async fn events_after_the_end(system: &System, job_id: &str) -> Vec<JobEvent> {
    system.events_until_terminal(job_id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = system.events_until_terminal(job_id).await;
    assert_well_formed(&events);
    events
}

/// Waits until the pod of `job_id` is bound to a node.
async fn until_bound(cluster: &Cluster, job_id: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cluster.pods_of(job_id).await.iter().any(|pod| {
        pod.spec
            .as_ref()
            .is_some_and(|spec| spec.node_name.is_some())
    }) {
        assert!(tokio::time::Instant::now() < deadline, "never bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_on_a_lost_node_ends_lost_after_node_lost_after_and_its_pod_is_force_deleted() {
    let cluster = Cluster::start(|_| {}).await;
    let system = system_losing_nodes_after(&cluster, Duration::from_secs(2)).await;
    let waiting = unique("waits");
    system
        .client
        .launch(&needing_a_missing_secret(&waiting))
        .await
        .unwrap();
    let running = unique("runs");
    launch_until_ready(&system, &running).await;
    until_bound(&cluster, &waiting).await;

    cluster.sim.lose_node(NODE).expect("the node exists");
    let events = events_after_the_end(&system, &running).await;
    assert_eq!(states(&events), ["starting", "running", "lost"]);
    let last = events.last().unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.return_code),
        (Some("NodeLost"), Some(104)),
        "{last:?}"
    );
    let message = last.message.as_deref().unwrap();
    assert!(
        message.contains("node kube-sim-node has not been ready"),
        "{message}"
    );
    let events = events_after_the_end(&system, &waiting).await;
    assert_eq!(states(&events), ["starting", "error"]);
    assert_eq!(events.last().unwrap().reason.as_deref(), Some("NodeLost"));
    // Deleted without a grace: no kubelet has to confirm it (kube-sim's
    // default toleration, 300 s, keeps them from being evicted meanwhile).
    cluster.wait_until_deleted(&running).await;
    cluster.wait_until_deleted(&waiting).await;
}

#[tokio::test]
async fn a_terminate_of_a_job_on_a_lost_node_ends_unconfirmed() {
    let cluster = Cluster::start(|_| {}).await;
    let system = system_losing_nodes_after(&cluster, Duration::from_secs(3)).await;
    let job_id = unique("stop");
    launch_until_ready(&system, &job_id).await;

    cluster.sim.lose_node(NODE).expect("the node exists");
    let reply = system.client.terminate(&job_id, Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = events_after_the_end(&system, &job_id).await;
    assert_eq!(states(&events), ["starting", "running", "lost"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("StopUnconfirmed"), "{last:?}");
    assert!(
        last.message
            .as_deref()
            .unwrap()
            .starts_with("the stop was not confirmed"),
        "{last:?}"
    );
    cluster.wait_until_deleted(&job_id).await;
}

#[tokio::test]
async fn a_node_back_before_node_lost_after_changes_nothing() {
    let cluster = Cluster::start(|_| {}).await;
    let system = system_losing_nodes_after(&cluster, Duration::from_secs(60)).await;
    let job_id = unique("back");
    let (ready, go) = (system.path("ready"), system.path("go"));
    let script = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.1; done; echo done",
        ready.display(),
        go.display()
    );
    system.launch_until_running(&in_pod(&job_id, &script)).await;
    wait_for_file(&ready).await;

    cluster.sim.lose_node(NODE).expect("the node exists");
    // Long enough for the worker to have seen the node unready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.sim.restore_node(NODE).expect("the node exists");
    std::fs::write(&go, "").unwrap();
    let events = events_after_the_end(&system, &job_id).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    cluster.wait_until_deleted(&job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_not_read_nodes_says_so_once_and_carries_on() {
    let cluster = Cluster::start_with_rbac(false, |_| {}).await;
    let system = System::without_worker(|_| {}).await;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let env = [
        ("FLARE_BACKEND", "k8s"),
        ("FLARE_KUBECONFIG", kubeconfig.as_str()),
        ("RUST_LOG", "info"),
    ];
    let mut worker = system
        .worker_process(&unique("refused"), &system.path("data"), &env)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the worker starts");
    let log = collect_lines(worker.stderr.take().unwrap());
    let events = system.run(&in_pod(&unique("plain"), "exit 0")).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    // Refused again and again (the watch retries with backoff), said once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster.request_count("list", "nodes") < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            cluster.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("may not watch the cluster's nodes"))
        .cloned()
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(worker.try_wait().unwrap().is_none(), "the worker runs on");
}
