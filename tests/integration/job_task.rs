//! The job task's state machine, driven by an in-process fake backend, with its
//! story told into a real nats-server: observations in odd orders, a terminate
//! that comes while the launch is under way, a run timeout, the worker giving
//! up on its jobs (also while a slow stop's long grace runs), a failed launch,
//! a request with secrets on a backend that cannot give them.

use crate::common::fake_backend::{FakeBackend, Script, request};
use crate::common::nats_server::NatsServer;
use crate::common::story_bench::{Bench, bench, states};
use flare_launcher::backend::{Backends, LaunchError, Observation};
use flare_launcher::protocol::{DEFAULT_GRACE_S, LaunchRequest, Timeouts, reason};
use flare_launcher::state::{Exit, JobState};
use flare_launcher::worker::job::{Job, JobSupport};
use flare_launcher::worker::registry::{JobCommand, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs `request`'s job on `backend` in its own task, as intake would after the
/// claim; returns the task and the registry it is registered in.
async fn launch(
    bench: &Bench,
    backend: Arc<FakeBackend>,
    request: LaunchRequest,
) -> (tokio::task::JoinHandle<()>, Registry) {
    launch_until(bench, backend, request, CancellationToken::new()).await
}

/// [`launch`], in a worker that gives up on its jobs when `hard_stop` is
/// cancelled.
async fn launch_until(
    bench: &Bench,
    backend: Arc<FakeBackend>,
    request: LaunchRequest,
    hard_stop: CancellationToken,
) -> (tokio::task::JoinHandle<()>, Registry) {
    let story = bench.claimed(&request.job_id).await;
    let registry = Registry::default();
    let registration = registry.register(story.job_id()).unwrap();
    let support = Arc::new(JobSupport {
        backends: Backends::new(backend),
        hard_stop,
    });
    let job = Job::new(support, story, registration, None);
    let delivery = bench.delivery(&request).await;
    (tokio::spawn(job.launch(request, delivery)), registry)
}

#[tokio::test]
async fn an_end_seen_before_running_is_told_as_running_then_the_end() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![Observation::Exited {
            exit: Exit::Code(3),
            stopped: false,
            reason: None,
        }],
    }));
    let (task, _registry) = launch(&bench, backend, request("j1")).await;
    task.await.unwrap();
    let events = bench.events("j1").await;
    assert_eq!(
        states(&events),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Failed)
        ]
    );
    assert_eq!(
        events[1].message.as_deref(),
        Some("the workload ended before it was seen running")
    );
    let ended = bench.stored("j1").await;
    assert_eq!((ended.seq, ended.exit_code), (3, Some(3)));
}

#[tokio::test]
async fn a_running_seen_twice_and_an_end_right_after_it_make_one_story() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![
            Observation::Running,
            Observation::Running,
            Observation::Exited {
                exit: Exit::Code(0),
                stopped: false,
                reason: None,
            },
        ],
    }));
    let (task, _registry) = launch(&bench, backend, request("j2")).await;
    task.await.unwrap();
    assert_eq!(
        states(&bench.events("j2").await),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Succeeded)
        ]
    );
    assert_eq!(bench.stored("j2").await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_terminate_during_the_launch_stops_the_workload_once_it_exists() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let hold = Arc::new(Notify::new());
    let backend = Arc::new(FakeBackend::held(
        Script::Run {
            observations: Vec::new(),
        },
        hold.clone(),
    ));
    let (task, registry) = launch(&bench, backend.clone(), request("j3")).await;
    let grace = Duration::from_secs(7);
    registry
        .get("j3")
        .unwrap()
        .send(JobCommand::Terminate { grace })
        .await
        .unwrap();
    hold.notify_one();
    task.await.unwrap();
    assert_eq!(*backend.stops.lock().unwrap(), [grace]);
    let events = bench.events("j3").await;
    assert_eq!(
        states(&events),
        [(1, JobState::Starting), (2, JobState::Terminated)]
    );
    assert_eq!(
        events[1].reason.as_deref(),
        Some(reason::TERMINATE_REQUESTED)
    );
    let ended = bench.stored("j3").await;
    assert_eq!(
        ended.stop_reason.as_deref(),
        Some(reason::TERMINATE_REQUESTED)
    );
}

#[tokio::test]
async fn a_run_timeout_stops_the_workload_and_says_why() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![Observation::Running],
    }));
    let mut request = request("j4");
    request.timeouts = Some(Timeouts {
        start_s: None,
        run_s: Some(1),
    });
    let (task, _registry) = launch(&bench, backend.clone(), request).await;
    task.await.unwrap();
    assert_eq!(backend.stops.lock().unwrap().len(), 1);
    let events = bench.events("j4").await;
    assert_eq!(
        states(&events),
        [
            (1, JobState::Starting),
            (2, JobState::Running),
            (3, JobState::Terminated)
        ]
    );
    assert_eq!(events[2].reason.as_deref(), Some(reason::RUN_TIMEOUT));
    let ended = bench.stored("j4").await;
    assert!(ended.run_deadline.is_some());
    assert_eq!(ended.stop_reason.as_deref(), Some(reason::RUN_TIMEOUT));
}

#[tokio::test]
async fn a_worker_giving_up_stops_the_workload_with_the_default_grace() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: vec![Observation::Running],
    }));
    let hard_stop = CancellationToken::new();
    let (task, _registry) =
        launch_until(&bench, backend.clone(), request("j6"), hard_stop.clone()).await;
    bench
        .stored_once("j6", |record| record.state == JobState::Running)
        .await;
    hard_stop.cancel();
    task.await.unwrap();
    assert_eq!(
        *backend.stops.lock().unwrap(),
        [Duration::from_secs(DEFAULT_GRACE_S)]
    );
    let events = bench.events("j6").await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
    assert_eq!(
        events.last().unwrap().reason.as_deref(),
        Some(reason::WORKER_SHUTDOWN)
    );
}

#[tokio::test]
async fn a_worker_giving_up_during_a_long_grace_stops_the_workload_again() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(
        FakeBackend::new(Script::Run {
            observations: vec![Observation::Running],
        })
        .slow_to_stop(1),
    );
    let hard_stop = CancellationToken::new();
    let (task, registry) =
        launch_until(&bench, backend.clone(), request("j7"), hard_stop.clone()).await;
    let long = Duration::from_secs(3600);
    registry
        .get("j7")
        .unwrap()
        .send(JobCommand::Terminate { grace: long })
        .await
        .unwrap();
    bench
        .stored_once("j7", |record| record.stop_reason.is_some())
        .await;
    hard_stop.cancel();
    task.await.unwrap();
    assert_eq!(
        *backend.stops.lock().unwrap(),
        [long, Duration::from_secs(DEFAULT_GRACE_S)]
    );
    // The first stop asked is the one the end is told with.
    let events = bench.events("j7").await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
    assert_eq!(
        events.last().unwrap().reason.as_deref(),
        Some(reason::TERMINATE_REQUESTED)
    );
}

#[tokio::test]
async fn a_failed_launch_ends_the_job_in_error_with_the_backends_reason() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    let backend = Arc::new(FakeBackend::new(Script::Fail(LaunchError::Spawn(
        "no such program".into(),
    ))));
    let (task, _registry) = launch(&bench, backend.clone(), request("j5")).await;
    task.await.unwrap();
    assert!(backend.stops.lock().unwrap().is_empty());
    let events = bench.events("j5").await;
    assert_eq!(
        states(&events),
        [(1, JobState::Starting), (2, JobState::Error)]
    );
    assert_eq!(events[1].reason.as_deref(), Some(reason::SPAWN_FAILED));
    assert_eq!(events[1].message.as_deref(), Some("no such program"));
}

#[tokio::test]
async fn secrets_are_never_handed_to_a_backend_that_cannot_give_them() {
    let nats = NatsServer::start();
    let bench = bench(&nats, "w1").await;
    // The fake backend gives no secrets.
    let backend = Arc::new(FakeBackend::new(Script::Run {
        observations: Vec::new(),
    }));
    let mut with_secret = request("j6");
    with_secret
        .secret_env
        .insert("TOKEN".into(), "s3cret".into());
    let (task, _registry) = launch(&bench, backend.clone(), with_secret).await;
    task.await.unwrap();
    assert!(
        backend.launches.lock().unwrap().is_empty(),
        "it was launched"
    );
    let events = bench.events("j6").await;
    assert_eq!(
        states(&events),
        [(1, JobState::Starting), (2, JobState::Error)]
    );
    assert_eq!(events[1].reason.as_deref(), Some(reason::INVALID_REQUEST));
    assert!(
        events[1].message.as_deref().unwrap().contains("secret_env"),
        "{events:?}"
    );
}
