//! Terminate and status as the protocol asks for them, answered by a worker's
//! control loop whose jobs run on an in-process fake backend (a real
//! nats-server, nothing run for real): a terminate before the launch, one for a
//! running job, one for an ended job, status of a known and an unknown job.

use crate::common::fake_backend::{FakeBackend, Script, exited, request};
use crate::common::fake_worker::FakeWorker;
use crate::common::nats_server::NatsServer;
use crate::common::story_bench::{bench, states};
use flare_launcher::backend::Observation;
use flare_launcher::client::ClientError;
use flare_launcher::protocol::reason;
use flare_launcher::state::{JobState, return_code};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_terminate_before_the_launch_ends_the_launch_without_launching() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![Observation::Running],
    }));
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    let reply = worker.client.terminate("early", None).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(reply.state, JobState::Terminated);
    let tombstone = bench.stored("early").await;
    assert!(tombstone.tombstone, "{tombstone:?}");
    assert!(bench.events("early").await.is_empty());

    worker.client.launch(&request("early")).await.unwrap();
    let ended = bench.ended("early").await;
    assert_eq!(
        (ended.state, ended.seq, ended.return_code),
        (JobState::Terminated, 1, Some(return_code::ABORTED))
    );
    assert_eq!(ended.reason.as_deref(), Some(reason::TERMINATE_REQUESTED));
    let events = bench.events("early").await;
    assert_eq!(states(&events), [(1, JobState::Terminated)]);
    assert!(backend.launches.lock().unwrap().is_empty());
    assert!(backend.stops.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_terminate_for_a_running_job_stops_its_workload_and_ends_it_terminated() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    // The first stop goes unanswered, so the job still runs when the reply to
    // the first terminate is made.
    let backend = Arc::new(
        FakeBackend::new(Script::Run {
            observations: vec![Observation::Running],
        })
        .slow_to_stop(1),
    );
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    worker.client.launch(&request("busy")).await.unwrap();
    bench
        .stored_once("busy", |record| record.state == JobState::Running)
        .await;
    let reply = worker.client.terminate("busy", Some(3)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(reply.state, JobState::Running);
    // A second terminate stops the workload again; this stop ends it.
    worker.client.terminate("busy", Some(1)).await.unwrap();
    let ended = bench.ended("busy").await;
    assert_eq!(
        *backend.stops.lock().unwrap(),
        [Duration::from_secs(3), Duration::from_secs(1)]
    );
    assert_eq!(
        (ended.state, ended.return_code),
        (JobState::Terminated, Some(return_code::ABORTED))
    );
    assert_eq!(ended.reason.as_deref(), Some(reason::TERMINATE_REQUESTED));
    assert_eq!(
        states(&bench.events("busy").await),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Terminated)
        ]
    );
}

#[tokio::test]
async fn a_terminate_for_an_ended_job_changes_nothing_and_replies_its_end() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![Observation::Running, exited(0)],
    }));
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    worker.client.launch(&request("done")).await.unwrap();
    let ended = bench.ended("done").await;
    assert_eq!(ended.state, JobState::Succeeded);
    let reply = worker.client.terminate("done", Some(0)).await.unwrap();
    assert!(!reply.accepted, "{reply:?}");
    assert_eq!(reply.state, JobState::Succeeded);
    assert_eq!(reply.message, "the job has ended already (succeeded)");
    assert_eq!(bench.stored("done").await, ended);
    assert_eq!(bench.events("done").await.len(), 3);
    assert!(backend.stops.lock().unwrap().is_empty());
}

#[tokio::test]
async fn status_replies_with_the_record_and_not_found_for_an_unknown_job() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![exited(5)],
    }));
    let worker = FakeWorker::start(&bench, backend).await;
    worker.client.launch(&request("asked")).await.unwrap();
    let ended = bench.ended("asked").await;
    let record = worker.client.status("asked").await.unwrap();
    assert_eq!(record, ended);
    assert_eq!(
        (record.state, record.exit_code, record.seq),
        (JobState::Failed, Some(5), 3)
    );
    match worker.client.status("never-seen").await {
        Err(ClientError::Refused(error)) => {
            assert_eq!(error.error, "not_found");
            assert_eq!(error.message, "no job never-seen is known");
        }
        other => panic!("expected not_found, got {other:?}"),
    }
}
