//! A worker's intake and control loops around a [`Bench`]'s author, running
//! their jobs on a fake backend: launch requests are pulled from the pool's
//! consumer and terminate and status requests answered as a worker does, with
//! nothing run for real. The engine's side is a [`Client`] on the same
//! connection, so the control subscriptions are in place before its first
//! request reaches the server.

use super::story_bench::Bench;
use flare_launcher::backend::{Backend, Backends};
use flare_launcher::client::Client;
use flare_launcher::protocol::DEFAULT_MAX_REQUEST_BYTES;
use flare_launcher::protocol::WorkerLease;
use flare_launcher::resources::ResourcePolicy;
use flare_launcher::worker::control::{self, Control, ControlSubscriptions};
use flare_launcher::worker::intake::{self, Intake, InvalidReports};
use flare_launcher::worker::job::JobSupport;
use flare_launcher::worker::placement::Census;
use flare_launcher::worker::registry::Registry;
use flare_launcher::worker::service::Registration;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Jobs a fake worker runs at once.
const MAX_JOBS: usize = 4;

/// The engine's side of a worker whose loops run until the test ends.
pub struct FakeWorker {
    /// Publishes launches, asks for terminate and status.
    pub client: Client,
    /// The control loop's endpoints, open while it lives.
    _service: Registration,
}

impl FakeWorker {
    /// Starts intake and control for `bench`'s worker, with `backend` its only
    /// backend.
    pub async fn start(bench: &Bench, backend: Arc<dyn Backend>) -> FakeWorker {
        let nats = bench.js.client();
        let worker_id = bench.author.worker_id().to_owned();
        let lease = WorkerLease {
            worker: worker_id.clone(),
            host: "test-host".into(),
            pool: "default".into(),
            backends: vec![backend.kind()],
            capacity: MAX_JOBS as u64,
            running: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            started: String::new(),
            lease_s: 10,
            instance: worker_id.clone(),
        };
        let service = Registration::start(&nats, &lease).await.unwrap();
        let subscriptions = ControlSubscriptions::subscribe(&service, &bench.subjects, &worker_id)
            .await
            .unwrap();
        let registry = Registry::default();
        let control = Control {
            author: bench.author.clone(),
            store: bench.store.clone(),
            registry: registry.clone(),
            client: nats.clone(),
            subjects: bench.subjects.clone(),
            worker_id,
            members: bench.members.clone(),
        };
        tokio::spawn(control::run(
            Arc::new(control),
            subscriptions,
            CancellationToken::new(),
            TaskTracker::new(),
        ));
        let intake = Intake {
            author: bench.author.clone(),
            jobs: Arc::new(JobSupport {
                backends: Backends::new(backend),
                hard_stop: CancellationToken::new(),
            }),
            registry,
            resources: ResourcePolicy::BestEffort,
            census: Census {
                client: nats.clone(),
                subject: bench.subjects.pool_resources("default"),
            },
            invalid: InvalidReports {
                client: nats.clone(),
                subject: bench.subjects.invalid(),
            },
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            members: bench.members.clone(),
            ack_wait: Duration::from_secs(30),
        };
        tokio::spawn(intake::run(
            Arc::new(intake),
            bench.layout.launch_consumer().await.unwrap(),
            bench.layout.clone(),
            Arc::new(Semaphore::new(MAX_JOBS)),
            // No adoption here: nothing ever waits for room.
            tokio::sync::watch::channel(false).1,
            CancellationToken::new(),
            TaskTracker::new(),
        ));
        FakeWorker {
            client: Client::new(nats, bench.subjects.clone(), "default"),
            _service: service,
        }
    }
}
