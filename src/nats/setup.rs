//! Start-up checks of the NATS server and the idempotent creation of the
//! streams, consumer and KV bucket the project needs, also again while workers run
//! should an operator have removed them. Every stream and bucket takes the
//! layout's replica count ([`Replicas`]).

use super::replicas::Replicas;
use super::subjects::Subjects;
use crate::report::error_chain;
use async_nats::jetstream::consumer::FromConsumer;
use async_nats::jetstream::{self, consumer, kv, stream};
use std::sync::Arc;
use std::time::Duration;

/// Oldest nats-server the project supports. Records of ended jobs expire by
/// per-message TTL (2.11), enabled on a bucket made without it by a stream update:
/// 2.11.0 and 2.11.1 refuse that update, and 2.11.2 to 2.11.4 accept it but do not
/// expire the messages; 2.11.5 is the first that does both.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 11, 5);
/// How long the events stream keeps events for subscribers that were away; also
/// the longest (and the default) retention of ended jobs' records and logs, so
/// that a job's record never outlives its events.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the marker a lapsed lease leaves in the workers' bucket stays.
const LAPSE_MARKER_TTL: Duration = Duration::from_secs(60);
/// Window inside which the streams drop a publish whose `Nats-Msg-Id` they saw.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why the NATS side could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The server is older than [`MIN_SERVER_VERSION`].
    #[error(
        "nats-server {found} is too old: flare-launcher needs {}.{}.{} or newer",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2
    )]
    ServerTooOld {
        /// The version the server reported.
        found: String,
    },
    /// JetStream is off on the server or for this account.
    #[error(
        "JetStream is not enabled for this account on the NATS server: start nats-server with -js (or `jetstream {{}}` in its config) and give the account JetStream limits ({0})"
    )]
    JetStreamDisabled(String),
    /// A stream or consumer of that name exists but serves other subjects (another
    /// subject prefix or pool whose names map to the same).
    #[error(
        "{what} exists but captures {found:?}, not {expected:?}: another subject prefix uses it; choose a prefix that does not map to the same names, or remove it"
    )]
    Mismatch {
        /// The stream or consumer.
        what: String,
        /// The subjects this configuration needs.
        expected: String,
        /// What it captures.
        found: Vec<String>,
    },
    /// A JetStream call failed.
    #[error("could not {what}: {source}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub(super) fn jetstream_error(
    what: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> SetupError {
    let what = what.into();
    move |source| SetupError::JetStream { what, source }
}

/// Everything a worker needs on the server, and the means to create it again.
#[derive(Clone)]
pub struct Layout {
    js: jetstream::Context,
    subjects: Subjects,
    pool: String,
    ack_wait: Duration,
    /// The replica count of every stream and bucket made or opened here.
    replicas: Replicas,
    /// Held while a repair runs.
    repairing: Arc<tokio::sync::Mutex<()>>,
}

/// What [`Layout::prepare`] opened.
pub struct Prepared {
    /// The events stream.
    pub events: stream::Stream,
    /// The job-record bucket.
    pub bucket: kv::Store,
    /// The workers' leases.
    pub workers: kv::Store,
    /// The index of unfinished jobs by pool and owner.
    pub owners: kv::Store,
    /// The pool's launch consumer.
    pub consumer: consumer::PullConsumer,
}

impl Layout {
    /// The layout of a worker of `pool` under `subjects`.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        pool: impl Into<String>,
        ack_wait: Duration,
    ) -> Self {
        Layout {
            js,
            subjects,
            pool: pool.into(),
            ack_wait,
            replicas: Replicas::default(),
            repairing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The layout with `replicas` for every stream and bucket.
    pub fn with_replicas(self, replicas: Replicas) -> Self {
        Layout { replicas, ..self }
    }

    /// The JetStream context everything is made with.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates what is missing and opens it all.
    ///
    /// # Errors
    /// The first [`SetupError`].
    pub async fn prepare(&self) -> Result<Prepared, SetupError> {
        let (jobs, events) = self.streams().await?;
        let bucket = ensure_jobs_bucket(&self.js, &self.subjects, self.replicas).await?;
        let workers =
            ensure_bucket(&self.js, self.replicas, workers_bucket(&self.subjects)).await?;
        let owners = ensure_bucket(&self.js, self.replicas, owners_bucket(&self.subjects)).await?;
        let consumer =
            ensure_launch_consumer(&jobs, &self.subjects, &self.pool, self.ack_wait).await?;
        // At start-up the consumer takes this worker's ack wait; later calls
        // (repairs) leave settings alone.
        let consumer = apply_ack_wait(&jobs, consumer, self.ack_wait).await?;
        Ok(Prepared {
            events,
            bucket,
            workers,
            owners,
            consumer,
        })
    }

    /// After a failed write: if the server answers and says a stream or the
    /// bucket is gone (an operator removed it while workers ran), creates again
    /// what is missing, and allows per-message TTL on a bucket made again
    /// without it, so that the retry can succeed. A few lookups otherwise.
    ///
    /// The future is boxed: it is large, and rarely run, so it is kept out of
    /// the state of every job task that might run it.
    pub fn restore_if_missing(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.restore_missing())
    }

    async fn restore_missing(&self) {
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return;
        }
        // One repair at a time: tasks failing meanwhile wait for it, then retry.
        let _repairing = match self.repairing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                drop(self.repairing.lock().await);
                return;
            }
        };
        let names = [
            self.subjects.jobs_stream(),
            self.subjects.events_stream(),
            format!("KV_{}", self.subjects.jobs_bucket()),
        ];
        let mut missing = Vec::new();
        for name in names {
            if let Err(e) = self.js.get_stream(&name).await
                && matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
            {
                missing.push(name);
            }
        }
        if missing.is_empty() {
            // The bucket may have been made again without per-message TTL (by hand),
            // which refuses the records of ended jobs until it is allowed again.
            if let Err(e) = ensure_jobs_bucket(&self.js, &self.subjects, self.replicas).await {
                tracing::warn!(error = %error_chain(&e), "could not check the job-record bucket");
            }
            return;
        }
        match self.create_missing().await {
            Ok(()) => tracing::warn!(
                ?missing,
                "streams removed while workers ran; created them again"
            ),
            Err(e) => {
                tracing::warn!(?missing, error = %error_chain(&e), "could not create removed streams again")
            }
        }
    }

    /// The pool's launch consumer, created again (with its stream) if it is gone.
    ///
    /// # Errors
    /// The first [`SetupError`].
    pub async fn launch_consumer(&self) -> Result<consumer::PullConsumer, SetupError> {
        let (jobs, _) = self.streams().await?;
        ensure_launch_consumer(&jobs, &self.subjects, &self.pool, self.ack_wait).await
    }

    /// Creates whatever of the streams, the bucket and the consumer is missing,
    /// changing nothing that exists (beyond letting the bucket's records expire).
    async fn create_missing(&self) -> Result<(), SetupError> {
        self.launch_consumer().await?;
        ensure_jobs_bucket(&self.js, &self.subjects, self.replicas).await?;
        Ok(())
    }

    /// The launch and events streams, created if missing, with the layout's
    /// replicas (raised to them if they have fewer).
    async fn streams(&self) -> Result<(stream::Stream, stream::Stream), SetupError> {
        let (jobs, events) = ensure_streams(&self.js, &self.subjects, self.replicas).await?;
        Ok((
            self.replicas.apply(&self.js, jobs).await?,
            self.replicas.apply(&self.js, events).await?,
        ))
    }
}

/// Parses `major.minor.patch` (anything after a `-` or `+` ignored).
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.trim_start_matches('v').split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Checks the server's version and that JetStream answers for this account.
///
/// # Errors
/// [`SetupError::ServerTooOld`] or [`SetupError::JetStreamDisabled`], with what to do.
pub async fn check_server(
    client: &async_nats::Client,
    js: &jetstream::Context,
) -> Result<(), SetupError> {
    let found = client.server_info().version;
    match parse_version(&found) {
        Some(version) if version >= MIN_SERVER_VERSION => {}
        _ => return Err(SetupError::ServerTooOld { found }),
    }
    js.query_account()
        .await
        .map_err(|e| SetupError::JetStreamDisabled(e.to_string()))?;
    Ok(())
}

/// Creates the launch and events streams if they are missing, with `replicas`,
/// and checks that existing ones capture this prefix's subjects (their replicas
/// left as they are: [`Layout`] raises them).
///
/// # Errors
/// [`SetupError::JetStream`] naming the stream, [`SetupError::Mismatch`] when it
/// captures other subjects.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: Replicas,
) -> Result<(stream::Stream, stream::Stream), SetupError> {
    let (jobs_name, events_name) = (subjects.jobs_stream(), subjects.events_stream());
    let jobs = js
        .get_or_create_stream(replicas.stream(stream::Config {
            name: jobs_name.clone(),
            description: Some("flare-launcher launch requests, one work queue per pool".into()),
            subjects: vec![subjects.all("launch")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }))
        .await
        .map_err(|e| jetstream_error(format!("create stream {jobs_name}"))(e.into()))?;
    check_captures(&jobs, &subjects.all("launch"))?;
    let events = js
        .get_or_create_stream(replicas.stream(stream::Config {
            name: events_name.clone(),
            description: Some("flare-launcher job events".into()),
            subjects: vec![subjects.all("events")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: EVENTS_MAX_AGE,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }))
        .await
        .map_err(|e| jetstream_error(format!("create stream {events_name}"))(e.into()))?;
    check_captures(&events, &subjects.all("events"))?;
    Ok((jobs, events))
}

/// Checks that an existing stream captures `wanted`.
fn check_captures(stream: &stream::Stream, wanted: &str) -> Result<(), SetupError> {
    let config = &stream.cached_info().config;
    if config.subjects.iter().any(|s| s == wanted) {
        return Ok(());
    }
    Err(SetupError::Mismatch {
        what: format!("stream {}", config.name),
        expected: wanted.to_owned(),
        found: config.subjects.clone(),
    })
}

/// Opens the job-record bucket, creating it if it is missing, and lets its
/// records expire (see [`allow_expiry`]).
///
/// # Errors
/// [`SetupError::JetStream`] naming the bucket.
async fn ensure_jobs_bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: Replicas,
) -> Result<kv::Store, SetupError> {
    let config = kv::Config {
        bucket: subjects.jobs_bucket(),
        description: "flare-launcher job records, one per job id".into(),
        history: 5,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let store = ensure_bucket(js, replicas, config).await?;
    allow_expiry(js, store).await
}

/// Opens the bucket `config` names, creating it if it is missing, with
/// `replicas` (raised to them if it has fewer): every bucket the worker makes
/// goes through here.
///
/// # Errors
/// [`SetupError::JetStream`] naming the bucket.
async fn ensure_bucket(
    js: &jetstream::Context,
    replicas: Replicas,
    config: kv::Config,
) -> Result<kv::Store, SetupError> {
    let name = config.bucket.clone();
    let store = match js.get_key_value(&name).await {
        Ok(store) => store,
        Err(_) => match js.create_key_value(replicas.bucket(config)).await {
            Ok(store) => store,
            // Another worker may have created it in between.
            Err(create_error) => js.get_key_value(&name).await.map_err(|_| {
                jetstream_error(format!("create bucket {name}"))(create_error.into())
            })?,
        },
    };
    let before = store.stream.cached_info().config.num_replicas;
    let stream = replicas.apply(js, store.stream.clone()).await?;
    if stream.cached_info().config.num_replicas == before {
        return Ok(store);
    }
    js.get_key_value(&name)
        .await
        .map_err(|e| jetstream_error(format!("open bucket {name}"))(e.into()))
}

/// The configuration of the bucket of the workers' leases: one key per live
/// worker, written with a per-message TTL, and a marker left when a lease
/// lapses so that the pool's watchers see it go.
fn workers_bucket(subjects: &Subjects) -> kv::Config {
    kv::Config {
        bucket: subjects.workers_bucket(),
        description: "flare-launcher worker leases, one per live worker".into(),
        history: 1,
        storage: stream::StorageType::File,
        limit_markers: Some(LAPSE_MARKER_TTL),
        ..Default::default()
    }
}

/// The configuration of the index of unfinished jobs: a key `POOL.OWNER.JOB`
/// for each job from its claim to its end.
fn owners_bucket(subjects: &Subjects) -> kv::Config {
    kv::Config {
        bucket: subjects.owners_bucket(),
        description: "flare-launcher unfinished jobs by pool and owner".into(),
        history: 1,
        storage: stream::StorageType::File,
        // Per-message TTL, for the markers of removed entries to expire.
        limit_markers: Some(LAPSE_MARKER_TTL),
        ..Default::default()
    }
}

/// Enables per-message TTL on the bucket's stream if it is off: the records of
/// ended jobs are written with one. A bucket made by an earlier version (or just
/// created: the KV configuration can only enable it together with delete
/// markers, which nothing here reads) gets it by a stream update; the server
/// allows turning it on, never off.
///
/// # Errors
/// [`SetupError::JetStream`] naming the bucket's stream.
async fn allow_expiry(js: &jetstream::Context, store: kv::Store) -> Result<kv::Store, SetupError> {
    let mut config = store.stream.cached_info().config.clone();
    if config.allow_message_ttl {
        return Ok(store);
    }
    config.allow_message_ttl = true;
    let stream = config.name.clone();
    js.update_stream(config).await.map_err(|e| {
        jetstream_error(format!("enable per-message TTL on stream {stream}"))(e.into())
    })?;
    tracing::info!(%stream, "enabled per-message TTL on the job-record bucket, so that records of ended jobs expire");
    js.get_key_value(&store.name)
        .await
        .map_err(|e| jetstream_error(format!("open bucket {}", store.name))(e.into()))
}

/// Gets or creates the durable pull consumer a pool's workers share (an existing
/// one as it is).
///
/// # Errors
/// [`SetupError::JetStream`] naming the consumer.
async fn ensure_launch_consumer(
    jobs_stream: &stream::Stream,
    subjects: &Subjects,
    pool: &str,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, SetupError> {
    let name = Subjects::consumer(pool);
    jobs_stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("launch requests of pool {pool}")),
                filter_subject: subjects.launch(pool),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| jetstream_error(format!("create consumer {name}"))(e.into()))
}

/// Gives the consumer `ack_wait` if it has another. The consumer outlives
/// workers: the newest worker's setting wins, so that changing `--ack-wait` and
/// restarting takes effect.
///
/// # Errors
/// [`SetupError::JetStream`] naming the consumer.
async fn apply_ack_wait(
    jobs_stream: &stream::Stream,
    consumer: consumer::PullConsumer,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, SetupError> {
    let info = consumer.cached_info();
    let (name, existing) = (info.name.clone(), info.config.ack_wait);
    if existing == ack_wait {
        return Ok(consumer);
    }
    let mut config = consumer::pull::Config::try_from_consumer_config(info.config.clone())
        .map_err(jetstream_error(format!("read consumer {name}")))?;
    config.ack_wait = ack_wait;
    let updated = jobs_stream
        .update_consumer(config)
        .await
        .map_err(|e| jetstream_error(format!("update consumer {name}"))(e.into()))?;
    tracing::warn!(consumer = %name, from = ?existing, to = ?ack_wait, "changed the ack wait of the pool's launch consumer (workers of one pool should agree on --ack-wait)");
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.10.0-beta.1"), Some((2, 10, 0)));
        assert_eq!(parse_version("2.11"), Some((2, 11, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("2.9.25").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("2.11.4").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("2.11.5").unwrap() >= MIN_SERVER_VERSION);
        assert!(parse_version("2.15.1").unwrap() >= MIN_SERVER_VERSION);
    }
}
