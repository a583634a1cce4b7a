//! Publishing job events to JetStream, for the job's story ([`super`]).
//!
//! Each event carries `Nats-Msg-Id: JOB_ID:SEQ`, so a publish retried after a lost
//! acknowledgement, or repeated after a crash, is stored once by the stream. Core
//! subscribers (`nats sub`) get every copy, though, so a worker publishes another
//! worker's event only when that worker can no longer do it.
//!
//! A publish is retried while it fails in a way that may pass (see
//! [`crate::nats::failure`]); one the server refuses for good is not.
//!
//! # The final event of a job another worker ended
//!
//! A job's owner writes each state to the job's record first and publishes its
//! event after. A further delivery of the job's launch (published twice, or
//! redelivered after a lost ack) that finds the record ended cannot tell from
//! the stream alone whether the owner died before publishing or is publishing
//! right now. [`EventPublisher::settle_final_event`] decides:
//!
//! - the stream holds the event: nothing to do;
//! - the stream lacks it and the record was written less than
//!   [`OWNER_PUBLISH_BOUND`] ago: the owner may be publishing it; the caller looks
//!   again once the bound has passed (the launch request is handed back with
//!   that delay, so whichever worker gets it next looks);
//! - the stream lacks it and the bound has passed: the owner died, or NATS has
//!   refused its publishes for longer than its retries take to come round; the
//!   event is published now.
//!
//! What a crash at each point leaves behind:
//!
//! - The owner dies before writing the final record: the record is not ended, and
//!   a further delivery publishes nothing (the job's end is not known).
//! - The owner dies between the final record and its publish: a further delivery
//!   publishes the event once the bound has passed, now or when the handed-back
//!   request returns.
//! - The owner's publish is on its way when a further delivery looks: the bound
//!   has not passed, so that delivery waits and, when it returns, finds the event.
//! - The owner is alive but its publish is held up beyond the bound (NATS
//!   refusing it all that time): both copies go out; the stream stores one (its
//!   duplicate window is longer than the bound), and a core subscriber, which
//!   misses messages during such an outage anyway, may get two. Asking a live
//!   owner (it answers on its own subjects) would not help: it cannot publish
//!   either while NATS refuses it.
//! - The worker handling the further delivery dies before it acknowledges or
//!   hands back the request: the request returns after the ack wait, and the next
//!   worker decides the same way; had it published already, the stream holds the
//!   event.
//!
//! The record's time comes from the owner's clock and is compared with this
//! worker's: a clock behind only delays the decision; one ahead by `s` seconds
//! shortens the wait by as much, so workers' clocks must agree within a few
//! seconds (NTP). A time more than the bound ahead of this worker's clock, or one
//! that cannot be read, cannot hold the event back: it is published at once.

use crate::nats::failure::is_permanent;
use crate::nats::setup::Layout;
use crate::nats::subjects::Subjects;
use crate::protocol::JobEvent;
use crate::report::error_chain;
use crate::retry::{self, retry_transient};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, message::PublishMessage};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long one attempt to publish waits for the stream's acknowledgement (and,
/// before that, for the connection to take the message) before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after writing a record its owner may still be publishing the record's
/// event: a first attempt that timed out (twice `PUBLISH_TIMEOUT`), the longest
/// delay before the retry (the retry cap plus as much again of jitter), and the
/// retry's own wait. Past it, another worker publishes a missing final event.
pub const OWNER_PUBLISH_BOUND: Duration =
    Duration::from_secs(2 * retry::MAX_DELAY.as_secs() + 2 * PUBLISH_TIMEOUT.as_secs());

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

/// The last event of a job could not be read from the events stream.
#[derive(Debug, thiserror::Error)]
enum LastEventError {
    /// The stream could not be asked.
    #[error(transparent)]
    Read(#[from] LastRawMessageError),
    /// The stream holds something that is not a job event.
    #[error("unreadable event on {subject}")]
    Unreadable {
        /// The job's events subject.
        subject: String,
        /// Why it is not an event.
        #[source]
        source: serde_json::Error,
    },
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
    pub fn new(
        mut js: jetstream::Context,
        stream: Stream,
        subjects: Subjects,
        layout: Layout,
    ) -> Self {
        js.set_timeout(PUBLISH_TIMEOUT);
        EventPublisher {
            js,
            stream,
            subjects,
            layout,
        }
    }

    /// Publishes the final `event` of a job another worker ended, if the stream
    /// lacks it and that worker's time to publish it is up (see the module docs).
    /// `event.ts` is the time the owner wrote the record that holds it.
    ///
    /// Returns `None` when nothing is left to do (the stream holds the event, or
    /// it was published now), or how long to wait before looking again, while
    /// the owner may still be publishing it.
    #[must_use]
    pub async fn settle_final_event(&self, event: &JobEvent) -> Option<Duration> {
        if self.is_stored(event).await {
            return None;
        }
        if let Some(wait) = owner_time_left(&event.ts, OffsetDateTime::now_utc()) {
            return Some(wait);
        }
        tracing::warn!(seq = event.seq, owner = %event.worker, "the job's final event never reached the stream; publishing it for its owner");
        self.publish_or_log(event).await;
        None
    }

    /// Publishes `event` unless the stream holds it (or a later event of its job):
    /// for an owner finishing, after a restart, what it began before.
    pub async fn publish_unless_stored(&self, event: &JobEvent) {
        if !self.is_stored(event).await {
            self.publish_or_log(event).await;
        }
    }

    /// Whether the stream holds `event` or a later event of its job; an
    /// unreadable stream counts as not (the duplicate window drops a recent copy).
    async fn is_stored(&self, event: &JobEvent) -> bool {
        match self.last_stored_seq(&event.job_id).await {
            Ok(Some(stored)) if stored >= event.seq => {
                tracing::debug!(seq = event.seq, "event stored already");
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "could not read the job's last event");
                false
            }
        }
    }

    /// Publishes an event that was published before, or should have been: its
    /// job ended already, so a refusal can only be reported.
    async fn publish_or_log(&self, event: &JobEvent) {
        if let Err(error) = self.publish(event).await {
            tracing::error!(error = %error_chain(&error), "could not publish the job's event again");
        }
    }

    /// The `seq` of the last event the stream holds for a job.
    async fn last_stored_seq(&self, job_id: &str) -> Result<Option<u64>, LastEventError> {
        let subject = self.subjects.events(job_id);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => serde_json::from_slice::<JobEvent>(&message.payload)
                .map(|stored| Some(stored.seq))
                .map_err(|source| LastEventError::Unreadable { subject, source }),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
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
        tracing::debug!(seq = event.seq, state = %event.state, "event published");
        Ok(())
    }
}

/// How long the owner of a record written at `written` (RFC 3339) may still be
/// publishing its event, seen at `now`; `None` once [`OWNER_PUBLISH_BOUND`] has
/// passed, or when `written` cannot hold the event back (unreadable, or further
/// ahead of `now` than the bound).
fn owner_time_left(written: &str, now: OffsetDateTime) -> Option<Duration> {
    let written = OffsetDateTime::parse(written, &Rfc3339).ok()?;
    let bound = time::Duration::try_from(OWNER_PUBLISH_BOUND).ok()?;
    let left = bound - (now - written);
    if left > bound * 2 {
        return None;
    }
    // Fails for a negative time left: overdue.
    Duration::try_from(left).ok().filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

    fn ago(elapsed: Duration) -> String {
        (NOW - elapsed).format(&Rfc3339).unwrap()
    }

    #[test]
    fn a_record_written_just_now_leaves_its_owner_the_whole_bound() {
        assert_eq!(
            owner_time_left(&ago(Duration::ZERO), NOW),
            Some(OWNER_PUBLISH_BOUND)
        );
        let later = Duration::from_millis(2_500);
        assert_eq!(
            owner_time_left(&ago(later), NOW),
            Some(OWNER_PUBLISH_BOUND - later)
        );
    }

    #[test]
    fn a_record_written_longer_ago_than_the_bound_is_overdue() {
        assert_eq!(owner_time_left(&ago(OWNER_PUBLISH_BOUND), NOW), None);
        assert_eq!(owner_time_left(&ago(Duration::from_secs(3600)), NOW), None);
    }

    #[test]
    fn a_clock_a_little_ahead_waits_a_little_longer_but_nonsense_does_not_wait() {
        let ahead = (NOW + Duration::from_secs(3)).format(&Rfc3339).unwrap();
        assert_eq!(
            owner_time_left(&ahead, NOW),
            Some(OWNER_PUBLISH_BOUND + Duration::from_secs(3))
        );
        let far_ahead = (NOW + OWNER_PUBLISH_BOUND + Duration::from_secs(1))
            .format(&Rfc3339)
            .unwrap();
        assert_eq!(owner_time_left(&far_ahead, NOW), None);
        assert_eq!(owner_time_left("not a time", NOW), None);
    }
}
