//! A pod taken over by another worker, two Kubernetes backends with different
//! worker ids on one kube-sim, each talking to it as a user of its own under
//! the Role the project ships: one launches, the other adopts (by the record's
//! `backend_ref`, or by meeting the pod's name on a launch of the same job) and
//! follows the pod to its end, while the first sees it leave without taking
//! that for an end, and neither stops nor deletes it.

use crate::common::docker::unique;
use crate::common::k8s::{
    Cluster, PATIENCE, SECOND_USER, in_pod, k8s_backend, k8s_record, wait_for_file,
};
use flare_launcher::backend::k8s::K8sBackend;
use flare_launcher::backend::{Backend, GpuAssignment, LaunchProgress, Launched, Observation};
use flare_launcher::protocol::LaunchRequest;
use flare_launcher::state::Exit;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;

/// Two Kubernetes backends, `first` and `second`, each a worker of its own
/// on one cluster, their job logs in `dir`.
async fn two_backends(dir: &Path) -> (Cluster, K8sBackend, K8sBackend) {
    let (cluster, second_kubeconfig) = Cluster::start_with_second_user(dir, false).await;
    let first = k8s_backend(&cluster.kubeconfig, "first", dir).await;
    let second = k8s_backend(&second_kubeconfig, "second", dir).await;
    (cluster, first, second)
}

async fn launch(backend: &K8sBackend, request: &LaunchRequest) -> Launched {
    let (progress, _) = LaunchProgress::channel();
    backend
        .launch(request, &GpuAssignment::Unaccounted, &progress)
        .await
        .expect("launched")
}

async fn next(launched: &mut Launched) -> Observation {
    tokio::time::timeout(PATIENCE, launched.observations.recv())
        .await
        .expect("an observation in time")
        .expect("the observations go on")
}

/// A pod that says it is ready, then runs until `go` exists and exits 3.
fn held_until(job_id: &str, ready: &Path, go: &Path) -> LaunchRequest {
    in_pod(
        job_id,
        &format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo done; exit 3",
            ready.display(),
            go.display()
        ),
    )
}

/// The requests of the second worker's user, but its watches, by (verb, resource).
fn second_requests(cluster: &Cluster) -> Vec<(String, String, u64)> {
    let mut counts: Vec<(String, String, u64)> = cluster
        .sim
        .requests()
        .into_iter()
        .filter(|count| count.user == SECOND_USER && count.verb != "watch")
        .map(|count| (count.verb, count.resource, count.count))
        .collect();
    counts.sort();
    counts
}

/// The first worker's followed job after its pod left: no observation at all
/// (neither an end nor a closed channel).
fn assert_told_nothing(launched: &mut Launched) {
    assert_eq!(
        launched.observations.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "the first worker was told something of a pod it no longer holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_adopts_a_running_pod_and_follows_it_to_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, first, second) = two_backends(dir.path()).await;
    let job_id = unique("adopted");
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let mut launched = launch(&first, &held_until(&job_id, &ready, &go)).await;
    assert_eq!(next(&mut launched).await, Observation::Running);
    wait_for_file(&ready).await;

    let before = second_requests(&cluster);
    let adoption = second.adoption().expect("the backend adopts");
    let record = k8s_record(&job_id, "running", Some(&launched.backend_ref));
    let mut adopted = adoption
        .adopt(&record)
        .await
        .expect("the cluster answers")
        .expect("the pod is found");
    let after = second_requests(&cluster);
    // One adoption: one read of the pod and one patch of its label.
    let spent: Vec<_> = after
        .iter()
        .filter(|count| !before.contains(count))
        .map(|(verb, resource, _)| (verb.as_str(), resource.as_str()))
        .collect();
    assert_eq!(
        spent,
        [("get", "pods"), ("patch", "pods")],
        "{before:?} {after:?}"
    );
    assert_eq!(adopted.backend_ref, launched.backend_ref);
    assert_eq!(next(&mut adopted).await, Observation::Running);

    // The first worker sees the pod leave its watch (and reads it once to tell
    // a move from a deletion): from then on its stop and its release touch
    // nothing.
    let pods = cluster.pods().await;
    let pod_name = format!("flare-{job_id}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster.request_count("get", "pods") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker never read the pod that left its watch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    launched.control.stop(Duration::ZERO).await;
    assert_told_nothing(&mut launched);

    std::fs::write(&go, "").unwrap();
    match next(&mut adopted).await {
        Observation::Exited { exit, stopped, .. } => {
            assert_eq!((exit, stopped), (Exit::Code(3), false));
        }
        other => panic!("not the pod's exit: {other:?}"),
    }
    assert_told_nothing(&mut launched);
    first.release(&job_id).await;
    assert_eq!(cluster.request_count("delete", "pods"), 0);
    assert!(pods.get_opt(&pod_name).await.unwrap().is_some());
    second.release(&job_id).await;
    cluster.wait_until_deleted(&job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_meeting_another_workers_pod_of_its_job_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, first, second) = two_backends(dir.path()).await;
    let job_id = unique("relaunched");
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let request = held_until(&job_id, &ready, &go);
    let mut launched = launch(&first, &request).await;
    assert_eq!(next(&mut launched).await, Observation::Running);

    // The first worker died before it acknowledged the request: the second
    // launches the job again, and meets its pod.
    let mut relaunched = launch(&second, &request).await;
    assert_eq!(relaunched.backend_ref, launched.backend_ref);
    assert_eq!(next(&mut relaunched).await, Observation::Running);
    assert_eq!(cluster.pods_of(&job_id).await.len(), 1);

    std::fs::write(&go, "").unwrap();
    match next(&mut relaunched).await {
        Observation::Exited { exit, .. } => assert_eq!(exit, Exit::Code(3)),
        other => panic!("not the pod's exit: {other:?}"),
    }
    assert_told_nothing(&mut launched);
    first.release(&job_id).await;
    assert_eq!(cluster.request_count("delete", "pods"), 0);
    second.release(&job_id).await;
    cluster.wait_until_deleted(&job_id).await;
}
