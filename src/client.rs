//! The engine's side of the protocol: publish launch requests, ask for terminate
//! and status, follow events, read a job's output ([`output`]). The CLI, the
//! benchmark and the tests use it.

pub mod output;

use crate::nats::replicas::Replicas;
use crate::nats::setup::{self, SetupError};
use crate::nats::subjects::Subjects;
use crate::pool::members::{LeaseChange, Members};
use crate::protocol::{
    ErrorReply, JobEvent, JobRecord, LaunchRequest, ResourceStatus, TerminateReply,
    TerminateRequest, WorkerLease,
};
use crate::report::error_chain;
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::time::Duration;

/// What went wrong talking to the workers.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Streams could not be prepared.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// JetStream did not store a launch request.
    #[error("the launch request was not stored: {0}")]
    Publish(String),
    /// No worker is listening.
    #[error("no worker answered on {0}: is a worker running with this subject prefix?")]
    NoWorker(String),
    /// The request failed (timed out, connection lost).
    #[error("request on {subject} failed: {message}")]
    Request {
        /// The subject asked.
        subject: String,
        /// What happened.
        message: String,
    },
    /// A worker answered with an error reply (e.g. `not_found`).
    #[error("{}: {}", .0.error, .0.message)]
    Refused(ErrorReply),
    /// The answer or event could not be decoded.
    #[error("unreadable message on {subject}: {message}")]
    Decode {
        /// Where it came from.
        subject: String,
        /// The decoding error.
        message: String,
    },
    /// Following events failed.
    #[error("following events failed: {0}")]
    Events(String),
    /// The workers' leases could not be read.
    #[error("cannot read the workers' leases in bucket {bucket}: {source}")]
    Leases {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        #[source]
        source: async_nats::Error,
    },
}

/// A connection to a flare-launcher system.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    pool: String,
}

impl Client {
    /// A client using an established connection, publishing launches to `pool`.
    pub fn new(nats: async_nats::Client, subjects: Subjects, pool: impl Into<String>) -> Self {
        let js = jetstream::new(nats.clone());
        Client {
            nats,
            js,
            subjects,
            pool: pool.into(),
        }
    }

    /// The subjects used.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Creates the launch and events streams if no worker has yet, so that a
    /// request published before any worker starts is kept. They get one
    /// replica: a worker with more (`--replicas`) raises them when it starts.
    ///
    /// # Errors
    /// [`ClientError::Setup`].
    pub async fn ensure_streams(&self) -> Result<(), ClientError> {
        setup::ensure_streams(&self.js, &self.subjects, Replicas::default()).await?;
        Ok(())
    }

    /// Publishes a launch request, with `Nats-Msg-Id: JOB_ID` so that the stream
    /// drops a duplicate inside its window, and waits until it is stored.
    ///
    /// # Errors
    /// [`ClientError::Publish`] when the stream did not take it.
    pub async fn launch(&self, request: &LaunchRequest) -> Result<(), ClientError> {
        let payload = serde_json::to_vec(request).expect("a LaunchRequest always serializes");
        self.publish_launch(payload.into(), Some(&request.job_id))
            .await
    }

    /// Publishes any payload as a launch request (for tests and tools that send
    /// what a careless engine might).
    ///
    /// # Errors
    /// [`ClientError::Publish`] when the stream did not take it.
    pub async fn publish_launch(
        &self,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut publish = PublishMessage::build().payload(payload);
        if let Some(id) = msg_id {
            publish = publish.message_id(id);
        }
        let ack = self
            .js
            .send_publish(self.subjects.launch(&self.pool), publish)
            .await
            .map_err(|e| ClientError::Publish(e.to_string()))?;
        ack.await.map_err(|e| ClientError::Publish(e.to_string()))?;
        Ok(())
    }

    /// Asks the workers to terminate a job (`grace_s` None: the protocol's default).
    ///
    /// # Errors
    /// [`ClientError`] when no worker answered or the answer is unreadable.
    pub async fn terminate(
        &self,
        job_id: &str,
        grace_s: Option<u64>,
    ) -> Result<TerminateReply, ClientError> {
        let body = match grace_s {
            Some(_) => serde_json::to_vec(&TerminateRequest { grace_s })
                .expect("serializes")
                .into(),
            None => Bytes::new(),
        };
        self.request(self.subjects.terminate(job_id), body).await
    }

    /// Asks for a job's record.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `not_found` for an unknown job.
    pub async fn status(&self, job_id: &str) -> Result<JobRecord, ClientError> {
        self.request(self.subjects.status(job_id), Bytes::new())
            .await
    }

    /// Asks a worker for its resources: policy, GPUs, allocations, what is free.
    ///
    /// # Errors
    /// [`ClientError::NoWorker`] when no worker of that id answers.
    pub async fn worker_resources(&self, worker: &str) -> Result<ResourceStatus, ClientError> {
        self.request(self.subjects.worker_resources(worker), Bytes::new())
            .await
    }

    /// Asks every worker of the pool for its resources, collecting the answers
    /// that come within `window`.
    ///
    /// # Errors
    /// [`ClientError::Request`] when the question cannot be sent.
    pub async fn pool_resources(
        &self,
        window: Duration,
    ) -> Result<Vec<ResourceStatus>, ClientError> {
        let subject = self.subjects.pool_resources(&self.pool);
        crate::resources::census::gather(&self.nats, subject.clone(), window)
            .await
            .map_err(|e| ClientError::Request {
                subject,
                message: error_chain(&e),
            })
    }

    /// The live workers (of every pool), from their leases, sorted by pool
    /// and id.
    ///
    /// # Errors
    /// [`ClientError::Leases`] when the leases' bucket cannot be read (no worker
    /// ever ran with this subject prefix, or NATS is away).
    pub async fn workers(&self) -> Result<Vec<WorkerLease>, ClientError> {
        let mut live = self
            .members()
            .await?
            .live()
            .await
            .map_err(|e| self.leases_failed(e))?;
        live.sort_by(|a, b| (&a.pool, &a.worker).cmp(&(&b.pool, &b.worker)));
        Ok(live)
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: Bytes,
    ) -> Result<T, ClientError> {
        self.request_within(subject, body, None).await
    }

    /// A request answered within `timeout` (the connection's request timeout
    /// when `None`), its answer decoded, an error reply as
    /// [`ClientError::Refused`].
    async fn request_within<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let mut request = async_nats::Request::new().payload(body);
        if timeout.is_some() {
            request = request.timeout(timeout);
        }
        let answer = self
            .nats
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    ClientError::NoWorker(subject.clone())
                }
                _ => ClientError::Request {
                    subject: subject.clone(),
                    message: e.to_string(),
                },
            })?;
        let decode_error = |e: serde_json::Error| ClientError::Decode {
            subject: subject.clone(),
            message: e.to_string(),
        };
        let is_error = answer
            .headers
            .as_ref()
            .is_some_and(|h| h.get("Nats-Service-Error-Code").is_some());
        if is_error {
            let error: ErrorReply =
                serde_json::from_slice(&answer.payload).map_err(decode_error)?;
            return Err(ClientError::Refused(error));
        }
        serde_json::from_slice(&answer.payload).map_err(decode_error)
    }

    /// Follows job events, in order: of one job or all, from the start of the
    /// stream (`replay`) or from now.
    ///
    /// # Errors
    /// [`ClientError::Events`] when the events stream cannot be read.
    pub async fn events(
        &self,
        job_id: Option<&str>,
        replay: bool,
    ) -> Result<impl Stream<Item = Result<JobEvent, ClientError>> + use<>, ClientError> {
        let filter = match job_id {
            Some(id) => self.subjects.events(id),
            None => self.subjects.all("events"),
        };
        let from = if replay {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::New
        };
        self.follow_events(filter, from).await
    }

    /// Every job's latest event (the last message on each job's subject), then
    /// each new event as it comes: the picture of every job the stream still
    /// holds without asking about any one of them.
    ///
    /// # Errors
    /// [`ClientError::Events`] when the events stream cannot be read.
    pub async fn latest_events(
        &self,
    ) -> Result<impl Stream<Item = Result<JobEvent, ClientError>> + use<>, ClientError> {
        self.follow_events(
            self.subjects.all("events"),
            consumer::DeliverPolicy::LastPerSubject,
        )
        .await
    }

    /// The leases of the live workers (of every pool), each as a change, then
    /// every change as it comes (a lease written, released or lapsed).
    ///
    /// # Errors
    /// [`ClientError::Leases`] when the leases' bucket cannot be watched.
    pub async fn lease_changes(
        &self,
    ) -> Result<impl Stream<Item = LeaseChange> + use<>, ClientError> {
        self.members()
            .await?
            .changes()
            .await
            .map_err(|e| self.leases_failed(e))
    }

    /// The leases' bucket, to read.
    async fn members(&self) -> Result<Members, ClientError> {
        let kv = self
            .js
            .get_key_value(self.subjects.workers_bucket())
            .await
            .map_err(|e| self.leases_failed(e))?;
        Ok(Members::new(kv, self.nats.clone()))
    }

    /// Reading the leases' bucket failed for `source`.
    fn leases_failed(&self, source: impl Into<async_nats::Error>) -> ClientError {
        ClientError::Leases {
            bucket: self.subjects.workers_bucket(),
            source: source.into(),
        }
    }

    /// Events on `filter` through an ordered consumer starting at `from`.
    async fn follow_events(
        &self,
        filter: String,
        from: consumer::DeliverPolicy,
    ) -> Result<impl Stream<Item = Result<JobEvent, ClientError>> + use<>, ClientError> {
        let stream = self
            .js
            .get_stream(self.subjects.events_stream())
            .await
            .map_err(|e| ClientError::Events(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: from,
                ..Default::default()
            })
            .await
            .map_err(|e| ClientError::Events(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| ClientError::Events(e.to_string()))?;
        Ok(messages.map(|message| {
            let message = message.map_err(|e| ClientError::Events(e.to_string()))?;
            serde_json::from_slice(&message.payload).map_err(|e| ClientError::Decode {
                subject: message.subject.to_string(),
                message: e.to_string(),
            })
        }))
    }
}
