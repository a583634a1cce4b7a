//! A whole flare-launcher system for a test: its own nats-server, one worker
//! running in the test process, and a client, plus builders for launch requests.

use super::nats_server::NatsServer;
use flare_launcher::client::Client;
use flare_launcher::config::WorkerConfig;
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::protocol::{JobEvent, LaunchRequest};
use flare_launcher::state::JobState;
use flare_launcher::worker::Worker;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

/// How long a test waits for a job's terminal event before it fails.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A nats-server, a worker and a client.
pub struct System {
    pub nats: NatsServer,
    pub client: Client,
    pub worker: Option<Worker>,
    pub config: WorkerConfig,
    pub dir: tempfile::TempDir,
}

impl System {
    /// A system with a worker on the defaults.
    pub async fn start() -> System {
        Self::start_with(|_| {}).await
    }

    /// A system whose worker configuration `configure` adjusts.
    pub async fn start_with(configure: impl FnOnce(&mut WorkerConfig)) -> System {
        let mut system = Self::without_worker(configure).await;
        system.start_worker().await;
        system
    }

    /// A nats-server and a client, with streams, but no worker yet.
    pub async fn without_worker(configure: impl FnOnce(&mut WorkerConfig)) -> System {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = WorkerConfig::new(&nats.url(), dir.path().join("data"));
        config.worker_id = "w1".into();
        configure(&mut config);
        let client = connect_client(&nats.url()).await;
        client.ensure_streams().await.expect("streams");
        System {
            nats,
            client,
            worker: None,
            config,
            dir,
        }
    }

    /// Starts the worker (after [`System::without_worker`]).
    pub async fn start_worker(&mut self) {
        let worker = Worker::start(self.config.clone())
            .await
            .expect("worker starts");
        self.worker = Some(worker);
    }

    /// A scratch path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes `request` and returns all its events up to the terminal one.
    pub async fn run(&self, request: &LaunchRequest) -> Vec<JobEvent> {
        self.client.launch(request).await.expect("launch published");
        self.events_until_terminal(&request.job_id).await
    }

    /// Replays a job's events until (and including) the terminal one.
    pub async fn events_until_terminal(&self, job_id: &str) -> Vec<JobEvent> {
        self.events_until(job_id, |e| e.state.is_terminal()).await
    }

    /// Replays a job's events until one satisfies `done`.
    pub async fn events_until(
        &self,
        job_id: &str,
        done: impl Fn(&JobEvent) -> bool,
    ) -> Vec<JobEvent> {
        let collect = async {
            let mut stream = Box::pin(
                self.client
                    .events(Some(job_id), true)
                    .await
                    .expect("events"),
            );
            let mut seen = Vec::new();
            while let Some(event) = stream.next().await {
                let event = event.expect("readable event");
                let finished = done(&event);
                seen.push(event);
                if finished {
                    break;
                }
            }
            seen
        };
        tokio::time::timeout(JOB_TIMEOUT, collect)
            .await
            .unwrap_or_else(|_| panic!("job {job_id}: no such event within {JOB_TIMEOUT:?}"))
    }

    /// Subscribes to reports of unusable requests, before anything is published.
    pub async fn invalid_reports(&self) -> async_nats::Subscriber {
        let nats = self.client.nats();
        let subscriber = nats.subscribe("flare.jobs.invalid").await.unwrap();
        nats.flush().await.unwrap();
        subscriber
    }

    /// Waits until the pool's consumer has handed out and settled every request.
    pub async fn wait_until_intake_idle(&self) {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
        loop {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream(Subjects::consumer(&self.config.pool), "FLARE_JOBS")
                .await
                .expect("consumer");
            let info = consumer.info().await.expect("consumer info");
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "intake never became idle: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Launches a job that ignores SIGTERM, and returns once it runs with its
    /// trap set.
    pub async fn launch_stubborn(&self, job_id: &str) {
        self.launch_trapping_term(job_id, "''").await;
    }

    /// Launches a job that runs until stopped, handling SIGTERM with the shell
    /// command `handler` (quoted for `trap`), and returns once its trap is set.
    pub async fn launch_trapping_term(&self, job_id: &str, handler: &str) {
        let ready = self.path(&format!("{job_id}-trap-set"));
        let script = format!(
            "trap {handler} TERM; touch {}; while true; do sleep 0.1; done",
            ready.display()
        );
        self.client
            .launch(&sh(job_id, &script))
            .await
            .expect("launch published");
        self.events_until(job_id, |e| e.state == JobState::Running)
            .await;
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts the worker down (drain, then terminate what is left).
    pub async fn shutdown_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
    }
}

/// A client on `url` for the default prefix and pool.
pub async fn connect_client(url: &str) -> Client {
    let nats = async_nats::connect(url).await.expect("client connects");
    Client::new(nats, Subjects::new("flare.jobs"), "default")
}

/// A launch request running `sh -c SCRIPT`.
pub fn sh(job_id: &str, script: &str) -> LaunchRequest {
    LaunchRequest::new(job_id, vec!["sh".into(), "-c".into(), script.into()])
}

/// The states of a list of events, in order.
pub fn states(events: &[JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.state.as_str()).collect()
}

/// Asserts seq runs 1, 2, 3, ... and the last event is the only terminal one.
pub fn assert_well_formed(events: &[JobEvent]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "gap-free seq: {events:#?}");
        let last = i + 1 == events.len();
        assert_eq!(
            event.state.is_terminal(),
            last,
            "one terminal event, last: {events:#?}"
        );
        assert_eq!(
            event.return_code.is_some(),
            last,
            "return_code exactly when terminal: {events:#?}"
        );
    }
}
