//! Launch requests pulled by a worker's intake whose jobs run on an in-process
//! fake backend (a real nats-server, nothing run for real): two deliveries of
//! one launch start one workload, on one worker or on two; a launch on a
//! backend the worker lacks ends in `error` without launching anything.

use crate::common::fake_backend::{FakeBackend, Script, request};
use crate::common::fake_worker::FakeWorker;
use crate::common::nats_server::NatsServer;
use crate::common::story_bench::{Bench, bench, states};
use flare_launcher::backend::Observation;
use flare_launcher::protocol::{BackendKind, reason};
use flare_launcher::state::{Exit, JobState, return_code};
use std::sync::Arc;
use std::time::Duration;

/// Waits until every launch request published has been taken off the queue
/// (acknowledged: the work queue keeps none then). A request handed back
/// while the job's end is not published may take 20 s to come again.
async fn queue_emptied(bench: &Bench) {
    let mut stream = bench
        .js
        .get_stream(bench.subjects.jobs_stream())
        .await
        .unwrap();
    let emptied = async {
        while stream.info().await.unwrap().state.messages > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(90), emptied)
        .await
        .expect("the launch requests were taken off the queue");
}

#[tokio::test]
async fn two_deliveries_of_one_launch_to_one_worker_start_one_workload() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![
            Observation::Running,
            Observation::Exited {
                exit: Exit::Code(0),
                stopped: false,
                reason: None,
            },
        ],
    }));
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    // Without a message id, the stream keeps both: each is delivered.
    let payload = serde_json::to_vec(&request("twice")).unwrap();
    for _ in 0..2 {
        worker
            .client
            .publish_launch(payload.clone().into(), None)
            .await
            .unwrap();
    }
    let ended = bench.ended("twice").await;
    queue_emptied(&bench).await;
    assert_eq!(*backend.launches.lock().unwrap(), ["twice"]);
    assert_eq!((ended.state, ended.seq), (JobState::Succeeded, 3));
    assert_eq!(
        states(&bench.events("twice").await),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Succeeded)
        ]
    );
}

#[tokio::test]
async fn a_delivery_of_a_launch_a_live_worker_claimed_waits_in_the_queue_starting_nothing() {
    let nats = NatsServer::start();
    let owner = bench(&nats, "w1").await;
    owner.claimed("taken").await;
    let claimed = owner.stored("taken").await;
    let bench = bench(&nats, "w2").await;
    let backend = Arc::new(FakeBackend::idle());
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    worker.client.launch(&request("taken")).await.unwrap();
    // w1 holds its lease: the request goes back and comes again, unacknowledged,
    // for as long as w1 may still be launching the job.
    let consumer = bench.layout.launch_consumer().await.unwrap();
    let handed_back = async {
        let mut consumer = consumer;
        while consumer.info().await.unwrap().num_redelivered == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), handed_back)
        .await
        .expect("the request came again");
    let mut stream = bench
        .js
        .get_stream(bench.subjects.jobs_stream())
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    assert!(backend.launches.lock().unwrap().is_empty());
    assert_eq!(bench.stored("taken").await, claimed);
    assert!(bench.events("taken").await.is_empty());
}

#[tokio::test]
async fn a_launch_on_a_backend_the_worker_lacks_ends_in_error_launching_nothing() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::idle());
    let worker = FakeWorker::start(&bench, backend.clone()).await;
    let mut request = request("elsewhere");
    request.backend = Some(BackendKind::Docker);
    request.image = Some("busybox".into());
    worker.client.launch(&request).await.unwrap();
    let ended = bench.ended("elsewhere").await;
    assert_eq!(
        (ended.state, ended.return_code, ended.backend),
        (
            JobState::Error,
            Some(return_code::INFRASTRUCTURE_ERROR),
            Some(BackendKind::Docker)
        )
    );
    assert_eq!(ended.reason.as_deref(), Some(reason::BACKEND_UNAVAILABLE));
    assert_eq!(
        ended.message.as_deref(),
        Some("this worker has no docker backend (it runs process)")
    );
    assert_eq!(
        states(&bench.events("elsewhere").await),
        [(1, JobState::Starting), (2, JobState::Error)]
    );
    assert!(backend.launches.lock().unwrap().is_empty());
}
