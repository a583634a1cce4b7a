//! Stops of containers the engine cannot be reached for, end to end with a
//! worker that reaches the engine only through a proxy the test cuts: a kill
//! that fails while the engine is away is tried again until the container's
//! end is seen, and the job ends `terminated`; with the engine away for good,
//! the job ends `lost` with `StopUnconfirmed` once the stop patience is over,
//! in one terminal event. Ignored in a build that found no engine.

use crate::common::docker::{
    EngineProxy, containers_of, docker_cli, in_container, launch_until_ready, system_through_proxy,
    unique,
};
use crate::common::system::{System, assert_lost_after_running, assert_well_formed, states};
use flare_launcher::protocol::reason;
use flare_launcher::state::JobState;
use std::time::Duration;

const RUNS_UNTIL_KILLED: &str = "echo ready; while true; do sleep 0.1; done";

/// Cuts the engine off, then asks `job_id` to stop at once, and waits until its
/// worker has asked (and so tried the kill) while the engine is away.
async fn terminate_while_cut(proxy: &EngineProxy, system: &System, job_id: &str) {
    proxy.cut();
    system.client.terminate(job_id, Some(0)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let record = system.client.status(job_id).await.unwrap();
        if record.stop_reason.as_deref() == Some(reason::TERMINATE_REQUESTED) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stop was never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A few tries fail meanwhile (they start 50 ms apart).
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_kill_that_fails_while_the_engine_is_away_is_tried_again() {
    let (proxy, system) = system_through_proxy(|_| {}).await;
    let job_id = unique("unreached");
    launch_until_ready(&system, &job_id, RUNS_UNTIL_KILLED).await;
    terminate_while_cut(&proxy, &system, &job_id).await;
    let before = proxy.requests().len();
    proxy.resume();
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    let kills = proxy.requests()[before..]
        .iter()
        .filter(|request| request.starts_with("POST") && request.contains("/kill"))
        .count();
    assert!(kills >= 1, "{:#?}", proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn an_engine_away_for_good_ends_the_job_lost_unconfirmed_once() {
    let (proxy, system) = system_through_proxy(|config| {
        config.docker.stop_patience = Duration::from_secs(2);
    })
    .await;
    let job_id = unique("unconfirmed");
    launch_until_ready(&system, &job_id, RUNS_UNTIL_KILLED).await;
    terminate_while_cut(&proxy, &system, &job_id).await;
    // The message says why the last kill failed.
    let events = system.events_until_terminal(&job_id).await;
    assert_lost_after_running(&events, "StopUnconfirmed", "SIGKILL");
    // The container still runs; once the engine is back and it ends, nothing
    // more is told of the job.
    let container = format!("flare-{job_id}");
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.State.Running}}", &container]).trim(),
        "true"
    );
    proxy.resume();
    docker_cli(&["kill", &container]);
    // Its `die` reaches the worker before a later job's container has run.
    let later = system.run(&in_container(&unique("after"), "exit 0")).await;
    assert_eq!(later.last().unwrap().state, JobState::Succeeded);
    let events = system.events_until_terminal(&job_id).await;
    assert_lost_after_running(&events, "StopUnconfirmed", "SIGKILL");
    for name in containers_of(&job_id) {
        docker_cli(&["rm", "-f", &name]);
    }
}
