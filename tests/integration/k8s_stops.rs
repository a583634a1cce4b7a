//! Stops of pods the API refuses, end to end on kube-sim with a worker: a delete
//! refused (403, 503) for a while is tried again until the pod is gone, and the
//! job ends `terminated`; refused for good, the job ends `lost` with
//! `StopUnconfirmed` once the stop patience is over, in one terminal event. A
//! later stop with less grace is sent, not swallowed by the one under way.

use crate::common::docker::unique;
use crate::common::k8s::{
    Cluster, PATIENCE, in_pod, k8s_worker, launch_until_ready, wait_for_file,
};
use crate::common::system::{System, assert_lost_after_running, assert_well_formed, states};
use kube::api::DeleteParams;
use kube_sim::{ErrorFault, Faults};
use std::time::Duration;

/// `code` for deletes of pods: the next `count`, or every one.
fn refused_deletes(code: u16, count: Option<u64>) -> Faults {
    Faults {
        error: Some(ErrorFault {
            code,
            retry_after_seconds: 1,
            count,
            verb: Some("delete".into()),
            resource: Some("pods".into()),
        }),
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_refused_for_a_while_is_tried_again_and_the_job_ends_terminated() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    for code in [403, 503] {
        let job_id = unique(&format!("refused{code}"));
        launch_until_ready(&system, &job_id).await;
        let deletes = cluster.request_count("delete", "pods");
        cluster
            .sim
            .set_faults(refused_deletes(code, Some(3)))
            .unwrap();
        system.client.terminate(&job_id, Some(0)).await.unwrap();
        let events = system.events_until_terminal(&job_id).await;
        assert_well_formed(&events);
        assert_eq!(
            states(&events),
            ["starting", "running", "terminated"],
            "{code}"
        );
        assert_eq!(
            events.last().unwrap().reason.as_deref(),
            Some("TerminateRequested")
        );
        // Three refused, then the one taken.
        assert!(
            cluster.request_count("delete", "pods") - deletes >= 4,
            "{code}"
        );
        cluster.wait_until_deleted(&job_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_refused_for_good_ends_the_job_lost_unconfirmed_once() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.k8s.stop_patience = Duration::from_secs(2);
    })
    .await;
    let job_id = unique("unstoppable");
    launch_until_ready(&system, &job_id).await;
    cluster.sim.set_faults(refused_deletes(403, None)).unwrap();
    system.client.terminate(&job_id, Some(0)).await.unwrap();
    let events = system.events_until_terminal(&job_id).await;
    assert_lost_after_running(&events, "StopUnconfirmed", "forbidden");
    assert!(cluster.request_count("delete", "pods") >= 2);
    // The pod still runs; once it goes, nothing more is told of the job.
    assert_eq!(cluster.pods_of(&job_id).await.len(), 1);
    cluster.sim.set_faults(Faults::default()).unwrap();
    let pods = cluster.pods().await;
    let zero = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(&format!("flare-{job_id}"), &zero)
        .await
        .unwrap();
    cluster.wait_until_deleted(&job_id).await;
    // The watch is one ordered stream: once it showed a later pod running, it
    // has shown the deletion.
    launch_until_ready(&system, &unique("after")).await;
    assert_lost_after_running(
        &system.events_until_terminal(&job_id).await,
        "StopUnconfirmed",
        "forbidden",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_stop_with_less_grace_is_sent_not_swallowed() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("stubborn");
    let ready = system.path(&format!("{job_id}-ready"));
    let script = format!(
        "trap '' TERM; touch {}; while true; do sleep 0.1; done",
        ready.display()
    );
    system.launch_until_running(&in_pod(&job_id, &script)).await;
    wait_for_file(&ready).await;
    // A stop with ten minutes of grace, which the pod ignores...
    system.client.terminate(&job_id, Some(600)).await.unwrap();
    let pods = cluster.pods().await;
    let name = format!("flare-{job_id}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while pods
        .get(&name)
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... then one without: the pod goes now.
    system.client.terminate(&job_id, Some(0)).await.unwrap();
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
}
