//! A whole flare-launcher system for a test: its own nats-server, one worker
//! running in the test process, and a client, plus builders for launch requests
//! and the two views of a job's events that checks count on: the events the
//! stream stores, and the events a plain core subscriber receives (which also
//! shows copies the stream's duplicate window dropped).

use super::nats_server::NatsServer;
use async_nats::jetstream::stream::RawMessageErrorKind;
use flare_launcher::client::Client;
use flare_launcher::config::WorkerConfig;
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::protocol::{JobEvent, JobRecord, LaunchRequest};
use flare_launcher::state::JobState;
use flare_launcher::worker::Worker;
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, HashSet};
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
        let mut config = worker_config(&nats.url(), dir.path().join("data"));
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

    /// Starts a worker on this system's configuration, which must refuse to
    /// start; returns why.
    pub async fn worker_refusal(&self) -> String {
        Worker::start(self.config.clone())
            .await
            .err()
            .expect("the worker refuses to start")
            .to_string()
    }

    /// A scratch path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes `request` and waits for its job's `running` event.
    pub async fn launch_until_running(&self, request: &LaunchRequest) {
        self.client.launch(request).await.expect("launch published");
        self.events_until(&request.job_id, |e| e.state == JobState::Running)
            .await;
    }

    /// Publishes `request` and returns all its events up to the terminal one.
    pub async fn run(&self, request: &LaunchRequest) -> Vec<JobEvent> {
        self.client.launch(request).await.expect("launch published");
        self.events_until_terminal(&request.job_id).await
    }

    /// Waits for a job's terminal event, then returns every event the stream
    /// holds for the job, so that an event stored after the terminal one (a
    /// second terminal event) is there for the checks to see.
    pub async fn events_until_terminal(&self, job_id: &str) -> Vec<JobEvent> {
        self.events_until_terminal_within(job_id, JOB_TIMEOUT).await
    }

    /// [`System::events_until_terminal`], for a job whose end may take up to
    /// `limit`.
    pub async fn events_until_terminal_within(
        &self,
        job_id: &str,
        limit: Duration,
    ) -> Vec<JobEvent> {
        self.events_until_within(job_id, |e| e.state.is_terminal(), limit)
            .await;
        self.stored_events(job_id)
            .await
            .into_iter()
            .map(|stored| stored.event)
            .collect()
    }

    /// Every event the events stream holds for a job, in order, each with the
    /// time the stream stored it: read by subject and sequence, one message after
    /// the other, until the stream has no later one on the job's subject.
    pub async fn stored_events(&self, job_id: &str) -> Vec<StoredEvent> {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let stream = js
            .get_stream(self.client.subjects().events_stream())
            .await
            .expect("events stream");
        let subject = self.client.subjects().events(job_id);
        let mut stored = Vec::new();
        let mut from = 1;
        loop {
            let found = stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let message = match found {
                Ok(message) => message,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return stored,
                Err(e) => panic!("reading the events of {job_id}: {e}"),
            };
            from = message.sequence + 1;
            stored.push(StoredEvent {
                event: serde_json::from_slice(&message.payload).expect("a stored JobEvent"),
                stored: message.time,
            });
        }
    }

    /// Every revision of `job_id`'s record the bucket keeps, oldest first (read
    /// from the bucket, with or without a worker to ask).
    pub async fn record_history(&self, job_id: &str) -> Vec<JobRecord> {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let kv = js
            .get_key_value(self.client.subjects().jobs_bucket())
            .await
            .expect("the jobs bucket");
        let mut history = kv.history(job_id).await.expect("the record's history");
        let mut records = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry.expect("a revision");
            records.push(serde_json::from_slice(&entry.value).expect("a JobRecord"));
        }
        records
    }

    /// Replays a job's events until one satisfies `done`.
    pub async fn events_until(
        &self,
        job_id: &str,
        done: impl Fn(&JobEvent) -> bool,
    ) -> Vec<JobEvent> {
        self.events_until_within(job_id, done, JOB_TIMEOUT).await
    }

    /// Replays a job's events until one satisfies `done`, for at most `limit`.
    pub async fn events_until_within(
        &self,
        job_id: &str,
        done: impl Fn(&JobEvent) -> bool,
        limit: Duration,
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
        tokio::time::timeout(limit, collect)
            .await
            .unwrap_or_else(|_| panic!("job {job_id}: no such event within {limit:?}"))
    }

    /// Subscribes to reports of unusable requests, before anything is published.
    pub async fn invalid_reports(&self) -> async_nats::Subscriber {
        let nats = self.client.nats();
        let subscriber = nats.subscribe("flare.jobs.invalid").await.unwrap();
        nats.flush().await.unwrap();
        subscriber
    }

    /// What the pool's consumer of launch requests says of itself.
    pub async fn intake_info(&self) -> async_nats::jetstream::consumer::Info {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(Subjects::consumer(&self.config.pool), "FLARE_JOBS")
            .await
            .expect("consumer");
        consumer.info().await.expect("consumer info").clone()
    }

    /// How many deliveries of launch requests the pool's consumer has made
    /// (redeliveries counted).
    pub async fn deliveries(&self) -> u64 {
        self.intake_info().await.delivered.consumer_sequence
    }

    /// Waits until the pool's consumer has handed out and settled every request.
    pub async fn wait_until_intake_idle(&self) {
        let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
        loop {
            let info = self.intake_info().await;
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

    /// Runs a worker as a process of its own (the binary), on this system's
    /// nats-server, with `env` added to its environment; killed when dropped.
    pub fn spawn_worker_process(
        &self,
        worker_id: &str,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> tokio::process::Child {
        self.worker_process(worker_id, data_dir, env)
            .spawn()
            .expect("the worker starts")
    }

    /// The command [`System::spawn_worker_process`] runs, for a test to adjust
    /// (e.g. to read the worker's log).
    pub fn worker_process(
        &self,
        worker_id: &str,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"));
        command
            .envs(env.iter().copied())
            .arg("--nats-url")
            .arg(self.nats.url())
            .args(["worker", "--worker-id", worker_id, "--data-dir"])
            .arg(data_dir)
            .kill_on_drop(true);
        command
    }

    /// Shuts the worker down (drain, then terminate what is left).
    pub async fn shutdown_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
    }
}

/// A worker configuration on the defaults, its supervisor being the project's
/// binary (the test binary cannot supervise).
pub fn worker_config(nats_url: &str, data_dir: PathBuf) -> WorkerConfig {
    let mut config = WorkerConfig::new(nats_url, data_dir);
    config.supervisor_program = PathBuf::from(env!("CARGO_BIN_EXE_flare-launcher"));
    config
}

/// An event as the events stream holds it.
#[derive(Debug)]
pub struct StoredEvent {
    /// The event.
    pub event: JobEvent,
    /// When the stream stored it (the server's clock).
    pub stored: time::OffsetDateTime,
}

/// Job events as a plain core-NATS subscriber (`nats sub`) receives them: every
/// copy counts, also one the events stream dropped as a duplicate.
pub struct CoreEvents {
    client: Client,
    subscriber: async_nats::Subscriber,
    /// How often each (job, seq) arrived.
    copies: HashMap<(String, u64), usize>,
    /// The terminal events of each job, as they arrived.
    ends: HashMap<String, Vec<JobEvent>>,
}

impl CoreEvents {
    /// Subscribes to every job's events; in place on the server when this returns,
    /// so call it before publishing anything.
    pub async fn subscribe(client: &Client) -> CoreEvents {
        let subscriber = client
            .nats()
            .subscribe(client.subjects().all("events"))
            .await
            .expect("subscribe to events");
        // A round trip: the server has the subscription once it answers.
        round_trip(client).await;
        CoreEvents {
            client: client.clone(),
            subscriber,
            copies: HashMap::new(),
            ends: HashMap::new(),
        }
    }

    /// Counts an event; returns its job when it is terminal.
    fn count(&mut self, message: &async_nats::Message) -> Option<String> {
        let event: JobEvent = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("unreadable event on {}: {e}", message.subject));
        *self
            .copies
            .entry((event.job_id.clone(), event.seq))
            .or_default() += 1;
        event.state.is_terminal().then(|| {
            let job_id = event.job_id.clone();
            self.ends.entry(job_id.clone()).or_default().push(event);
            job_id
        })
    }

    /// Receives events until each of `jobs` has had a terminal one.
    pub async fn until_terminal(&mut self, jobs: &[String], timeout: Duration) {
        let mut waiting: HashSet<&str> = jobs
            .iter()
            .map(String::as_str)
            .filter(|job| !self.ends.contains_key(*job))
            .collect();
        let receive = async {
            while !waiting.is_empty() {
                let message = self.subscriber.next().await.expect("subscribed");
                if let Some(ended) = self.count(&message) {
                    waiting.remove(ended.as_str());
                }
            }
        };
        if tokio::time::timeout(timeout, receive).await.is_err() {
            let missing = waiting.len();
            panic!("{missing} jobs without a terminal event within {timeout:?}");
        }
    }

    /// Takes in every event published before this call.
    async fn catch_up(&mut self) {
        for message in received_so_far(&self.client, &mut self.subscriber).await {
            self.count(&message);
        }
    }

    /// The first terminal event of a job, if one arrived.
    pub fn end(&self, job_id: &str) -> Option<&JobEvent> {
        self.ends.get(job_id).and_then(|ends| ends.first())
    }

    /// Takes in every event published so far, then asserts that no (job, seq)
    /// arrived more than once and that each of `jobs` had exactly one terminal
    /// event.
    pub async fn assert_each_once<S: AsRef<str>>(&mut self, jobs: &[S]) {
        self.catch_up().await;
        let mut repeated: Vec<_> = self
            .copies
            .iter()
            .filter(|(_, copies)| **copies > 1)
            .collect();
        repeated.sort_unstable();
        assert_eq!(repeated, [], "((job, seq), copies) received more than once");
        for job_id in jobs.iter().map(AsRef::as_ref) {
            let terminal = self.ends.get(job_id).map_or(0, Vec::len);
            assert_eq!(terminal, 1, "terminal events of {job_id}");
        }
    }
}

/// A JetStream API request and its answer on `client`'s connection.
async fn round_trip(client: &Client) {
    async_nats::jetstream::new(client.nats().clone())
        .query_account()
        .await
        .expect("the server answers");
}

/// Every message `subscriber` (a subscription of `client`) has not taken yet
/// of those published before this call: the server routed them to the
/// connection before it answers a request made now, and the client reads its
/// connection in order.
pub async fn received_so_far(
    client: &Client,
    subscriber: &mut async_nats::Subscriber,
) -> Vec<async_nats::Message> {
    round_trip(client).await;
    let mut received = Vec::new();
    while let Some(Some(message)) = subscriber.next().now_or_never() {
        received.push(message);
    }
    received
}

/// A client on `url` (comma-separated URLs: servers of one cluster) for the
/// default prefix and pool.
pub async fn connect_client(url: &str) -> Client {
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|url| url.parse().expect("a server URL"))
        .collect();
    let nats = async_nats::connect(servers).await.expect("client connects");
    Client::new(nats, Subjects::new("flare.jobs"), "default")
}

/// A launch request running `sh -c SCRIPT`.
pub fn sh(job_id: &str, script: &str) -> LaunchRequest {
    LaunchRequest::new(job_id, vec!["sh".into(), "-c".into(), script.into()])
}

/// The log file a process job's `running` event names ("..., output in PATH").
pub fn log_path(events: &[JobEvent]) -> PathBuf {
    let running = events
        .iter()
        .find(|e| e.state == JobState::Running)
        .and_then(|e| e.message.as_deref())
        .unwrap_or_else(|| panic!("no running event with a message: {events:#?}"));
    let (_, path) = running
        .split_once("output in ")
        .unwrap_or_else(|| panic!("no log path in {running:?}"));
    PathBuf::from(path)
}

/// The states of a list of events, in order.
pub fn states(events: &[JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.state.as_str()).collect()
}

/// Asserts `events` are well formed and end `lost` after `running`, with
/// `reason`, and `why` in their message.
pub fn assert_lost_after_running(events: &[JobEvent], reason: &str, why: &str) {
    assert_well_formed(events);
    assert_eq!(states(events), ["starting", "running", "lost"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some(reason), "{last:?}");
    assert!(last.message.as_deref().unwrap().contains(why), "{last:?}");
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
