//! Publishing job events (and invalid-request reports) to JetStream.
//!
//! Each event carries `Nats-Msg-Id: JOB_ID:SEQ`, so a publish retried after a lost
//! acknowledgement, or repeated after a crash, is dropped by the stream instead of
//! being seen twice. A terminal event sent again long after the job ended (when
//! the stream's duplicate window has passed) is first looked up on the stream.
//!
//! A publish is retried while it fails in a way that may pass (see
//! [`crate::nats::failure`]); one the server refuses for good is not.

use crate::nats::failure::is_permanent;
use crate::nats::setup::Layout;
use crate::nats::subjects::Subjects;
use crate::protocol::{InvalidRequest, JobEvent};
use crate::retry::retry_transient;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, message::PublishMessage};

/// The events stream refused an event for good (e.g. it is larger than the
/// server takes); retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("the events stream refused event {seq} of job {job_id} for good: {source}")]
pub struct EventRejected {
    /// The job.
    pub job_id: String,
    /// The event's `seq`.
    pub seq: u64,
    /// The server's refusal.
    #[source]
    pub source: PublishError,
}

/// Publishes events for one worker.
#[derive(Clone)]
pub struct EventPublisher {
    js: jetstream::Context,
    stream: Stream,
    subjects: Subjects,
    layout: Layout,
}

impl EventPublisher {
    /// A publisher on `js` into the events `stream` of `layout`, under `subjects`.
    pub fn new(js: jetstream::Context, stream: Stream, subjects: Subjects, layout: Layout) -> Self {
        EventPublisher {
            js,
            stream,
            subjects,
            layout,
        }
    }

    /// Publishes `event` unless the stream holds it (or a later event of its job)
    /// already: for an event that may have gone out before a crash, at any time
    /// after it.
    pub async fn publish_unless_stored(&self, event: &JobEvent) {
        match self.last_stored_seq(&event.job_id).await {
            Ok(Some(stored)) if stored >= event.seq => {
                tracing::debug!(job_id = %event.job_id, seq = event.seq, "event stored already");
            }
            Ok(_) => self.publish_or_log(event).await,
            Err(error) => {
                // The duplicate window still drops a recent copy.
                tracing::warn!(job_id = %event.job_id, %error, "could not read the job's last event; publishing it again");
                self.publish_or_log(event).await;
            }
        }
    }

    /// Publishes an event that was published before, or should have been: its
    /// job ended already, so a refusal can only be reported.
    async fn publish_or_log(&self, event: &JobEvent) {
        if let Err(error) = self.publish(event).await {
            tracing::error!(job_id = %event.job_id, %error, "could not publish the job's event again");
        }
    }

    /// The `seq` of the last event the stream holds for a job.
    async fn last_stored_seq(&self, job_id: &str) -> Result<Option<u64>, String> {
        let subject = self.subjects.events(job_id);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => serde_json::from_slice::<JobEvent>(&message.payload)
                .map(|stored| Some(stored.seq))
                .map_err(|e| format!("unreadable event on {subject}: {e}")),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes `event` and waits until the events stream stored it, retrying
    /// failures that may pass for as long as it takes (the caller bounds that by
    /// dropping the future).
    ///
    /// # Errors
    /// [`EventRejected`] when the server refuses the event for good.
    pub async fn publish(&self, event: &JobEvent) -> Result<(), EventRejected> {
        let subject = self.subjects.events(&event.job_id);
        let payload =
            bytes::Bytes::from(serde_json::to_vec(event).expect("a JobEvent always serializes"));
        let msg_id = format!("{}:{}", event.job_id, event.seq);
        let stored = retry_transient(
            "publishing a job event",
            || async {
                let publish = PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(&msg_id);
                let ack = self.js.send_publish(subject.clone(), publish).await?;
                let stored = ack.await.map(drop);
                if let Err(e) = &stored
                    && !is_permanent(e)
                {
                    // Should an operator have removed the stream, it is back for the retry.
                    self.layout.restore_if_missing().await;
                }
                stored
            },
            |e: &PublishError| !is_permanent(e),
        )
        .await;
        stored.map_err(|source| EventRejected {
            job_id: event.job_id.clone(),
            seq: event.seq,
            source,
        })?;
        tracing::debug!(job_id = %event.job_id, seq = event.seq, state = %event.state, "event published");
        Ok(())
    }

    /// Reports a launch payload without a usable job id on `P.invalid` (core NATS:
    /// it is a report for whoever listens, not a job).
    pub async fn report_invalid(&self, report: &InvalidRequest) {
        let payload = serde_json::to_vec(report).expect("an InvalidRequest always serializes");
        if let Err(e) = self
            .js
            .client()
            .publish(self.subjects.invalid(), payload.into())
            .await
        {
            tracing::warn!(error = %e, "could not report an invalid launch request");
        }
    }
}
