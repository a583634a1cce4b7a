//! A worker's story author over a real nats-server, with what it wrote within
//! reach: its records, and the events the stream holds; and the layout and
//! subjects it was made with, for tests that start a worker's loops around it.

use super::nats_server::NatsServer;
use async_nats::jetstream::{self, stream};
use flare_launcher::nats::setup::Layout;
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::observe::Metrics;
use flare_launcher::pool::lease::LeaseKeeper;
use flare_launcher::pool::members::Members;
use flare_launcher::pool::owners::OwnerIndex;
use flare_launcher::protocol::{
    BackendKind, JobEvent, JobId, JobRecord, LaunchRequest, WorkerLease, random_suffix,
    timestamp_now,
};
use flare_launcher::state::JobState;
use flare_launcher::store::JobStore;
use flare_launcher::worker::request_ack::RequestAck;
use flare_launcher::worker::story::{Author, AuthorParts, Change, Claimed, Opening, Story};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a job is waited for before a test gives up on it.
const JOB_WAIT: Duration = Duration::from_secs(60);

/// The author of worker `worker`, with the store it writes into and the
/// JetStream context to look at what it wrote.
pub struct Bench {
    pub members: Members,
    pub author: Arc<Author>,
    pub store: JobStore,
    pub js: jetstream::Context,
    pub layout: Layout,
    pub subjects: Subjects,
}

pub async fn bench(nats: &NatsServer, worker: &str) -> Bench {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new("flare.jobs");
    let layout = Layout::new(
        js.clone(),
        subjects.clone(),
        "default",
        Duration::from_secs(30),
    );
    let prepared = layout.prepare().await.unwrap();
    let store = JobStore::new(prepared.bucket, layout.clone());
    let lease = WorkerLease {
        worker: worker.to_owned(),
        host: "bench".into(),
        pool: "default".into(),
        backends: vec![BackendKind::Process],
        capacity: 1,
        running: 0,
        version: "bench".into(),
        started: timestamp_now(),
        lease_s: 30,
        instance: random_suffix(8),
    };
    let members = Members::new(prepared.workers.clone(), client.clone());
    let (keeper, lease) = LeaseKeeper::take(prepared.workers, js.clone(), lease, Arc::new(|| 0))
        .await
        .unwrap();
    tokio::spawn(keeper.run(CancellationToken::new()));
    let author = Arc::new(Author::new(AuthorParts {
        store: store.clone(),
        owners: OwnerIndex::new(prepared.owners, client.clone()),
        lease,
        js: js.clone(),
        events: prepared.events,
        subjects: subjects.clone(),
        layout: layout.clone(),
        worker_id: worker.to_owned(),
        pool: "default".to_owned(),
        metrics: Arc::new(Metrics::new(1)),
    }));
    Bench {
        members,
        author,
        store,
        js,
        layout,
        subjects,
    }
}

pub fn id(job_id: &str) -> JobId {
    JobId::new(job_id).unwrap()
}

impl Bench {
    /// `request` published on the pool's launch subject and pulled from its
    /// consumer, as intake gets it: the delivery a launched job acknowledges.
    pub async fn delivery(&self, request: &LaunchRequest) -> RequestAck {
        let payload = serde_json::to_vec(request).unwrap();
        self.js
            .publish(self.subjects.launch("default"), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let consumer = self.layout.launch_consumer().await.unwrap();
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        let message = batch.next().await.unwrap().unwrap();
        RequestAck::new(message, Duration::from_secs(30))
    }

    /// Claims `job_id` on the process backend in `starting`; the claim must win.
    pub async fn claimed(&self, job_id: &str) -> Story {
        self.claim(self.opening(job_id)).await
    }

    /// The first record of `job_id` on the process backend, in `starting`.
    pub fn opening(&self, job_id: &str) -> Opening {
        self.author.opening(
            &id(job_id),
            BackendKind::Process,
            JobState::Starting,
            Change::default(),
        )
    }

    /// Claims `opening`'s job; the claim must win.
    pub async fn claim(&self, opening: Opening) -> Story {
        let job_id = opening.job_id().clone();
        match self.author.claim(opening).await.unwrap() {
            Claimed::Created(story) => *story,
            Claimed::Found { .. } => panic!("the claim of {job_id} found a record"),
        }
    }

    pub async fn stored(&self, job_id: &str) -> JobRecord {
        self.store.get(job_id).await.unwrap().expect("a record")
    }

    /// The record of `job_id` once it satisfies `done`, looked at every 20 ms.
    pub async fn stored_once(&self, job_id: &str, done: impl Fn(&JobRecord) -> bool) -> JobRecord {
        within(job_id, async {
            loop {
                if let Some(record) = self.store.get(job_id).await.unwrap()
                    && done(&record)
                {
                    return record;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// The record of `job_id` once the job has ended (a tombstone has not) and
    /// the stream holds the end's event.
    pub async fn ended(&self, job_id: &str) -> JobRecord {
        let ended = self
            .stored_once(job_id, |record| {
                record.state.is_terminal() && !record.tombstone
            })
            .await;
        within(job_id, async {
            while self.events(job_id).await.last().map(|event| event.seq) != Some(ended.seq) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        ended
    }

    /// The events of `job_id` the stream holds, in order.
    pub async fn events(&self, job_id: &str) -> Vec<JobEvent> {
        let mut stream = self.js.get_stream("FLARE_JOB_EVENTS").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let subject = format!("flare.jobs.events.{job_id}");
        let mut events = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && message.subject.as_str() == subject
            {
                events.push(serde_json::from_slice(&message.payload).unwrap());
            }
        }
        events
    }

    /// Limits the size of one message of a stream, as an operator would.
    pub async fn limit_message_size(&self, stream_name: &str, max: i32) {
        let mut stream = self.js.get_stream(stream_name).await.unwrap();
        let mut config: stream::Config = stream.info().await.unwrap().config.clone();
        config.max_message_size = max;
        self.js.update_stream(config).await.unwrap();
    }
}

/// What `waiting` for `job_id` gives; a test that waits longer than
/// [`JOB_WAIT`] fails.
async fn within<T>(job_id: &str, waiting: impl Future<Output = T>) -> T {
    tokio::time::timeout(JOB_WAIT, waiting)
        .await
        .unwrap_or_else(|_| panic!("job {job_id} did not come as awaited"))
}

pub fn states(events: &[JobEvent]) -> Vec<(u64, JobState)> {
    events
        .iter()
        .map(|event| (event.seq, event.state))
        .collect()
}
