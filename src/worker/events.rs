//! Publishing job events (and invalid-request reports) to JetStream.
//!
//! Each event carries `Nats-Msg-Id: JOB_ID:SEQ`, so a publish retried after a lost
//! acknowledgement, or repeated after a crash, is dropped by the stream instead of
//! being seen twice.

use crate::nats::subjects::Subjects;
use crate::protocol::{InvalidRequest, JobEvent};
use crate::retry::retry_forever;
use async_nats::jetstream::{self, message::PublishMessage};

/// Publishes events for one worker.
#[derive(Clone)]
pub struct EventPublisher {
    js: jetstream::Context,
    subjects: Subjects,
}

impl EventPublisher {
    /// A publisher on `js` under `subjects`.
    pub fn new(js: jetstream::Context, subjects: Subjects) -> Self {
        EventPublisher { js, subjects }
    }

    /// Publishes `event` and waits until the events stream stored it, retrying
    /// for as long as it takes (the caller bounds that by dropping the future).
    pub async fn publish(&self, event: &JobEvent) {
        let subject = self.subjects.events(&event.job_id);
        let payload = serde_json::to_vec(event).expect("a JobEvent always serializes");
        let msg_id = format!("{}:{}", event.job_id, event.seq);
        retry_forever("publishing a job event", || async {
            let publish = PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(&msg_id);
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        tracing::debug!(job_id = %event.job_id, seq = event.seq, state = %event.state, "event published");
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
