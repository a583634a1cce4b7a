//! The answer to a launch request's delivery: acknowledged once the job no
//! longer needs it (its workload is named in its record, or it ended), kept in
//! progress while the workload is being created, or handed back to the queue.
//!
//! A request is acknowledged only once its workload exists and the job's record
//! names it, so a worker that dies anywhere between pulling a request and that
//! point loses nothing: the request comes again (after the ack wait, or at once
//! when handed back), and whichever worker takes it takes the claim over and
//! launches the job, adopting the workload by its name if it was created. A
//! process, which has no such name, may run on its worker's host once the
//! launch handed it to the supervisor: the record says so, and the job is left
//! to that host (see [`super::intake`]).

use crate::report::error_chain;
use async_nats::jetstream::{AckKind, Message};
use std::time::Duration;

/// Shortest time between two in-progress acknowledgements.
const MIN_PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// A delivered launch request not answered yet.
pub struct RequestAck {
    message: Message,
    /// How often the server is told the request is still being worked on.
    progress_every: Duration,
}

impl RequestAck {
    /// `message`, delivered with `ack_wait`: kept in progress three times
    /// within it.
    pub fn new(message: Message, ack_wait: Duration) -> Self {
        RequestAck {
            message,
            progress_every: (ack_wait / 3).max(MIN_PROGRESS_EVERY),
        }
    }

    /// When the request was published, as the stream tells.
    pub fn published(&self) -> Option<time::OffsetDateTime> {
        self.message.info().ok().map(|info| info.published)
    }

    /// Tells the server, again and again, that the request is being worked on,
    /// so that it is not delivered again meanwhile; never returns.
    pub async fn keep_in_progress(&self) {
        loop {
            tokio::time::sleep(self.progress_every).await;
            if let Err(e) = self.message.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %error_chain(&*e), "could not tell the server a launch request is in progress");
            }
        }
    }

    /// Acknowledges the request: the job no longer needs it.
    pub async fn ack(self) {
        ack(&self.message).await;
    }

    /// Hands the request back to the queue, for another worker now.
    pub async fn hand_back(self) {
        hand_back(&self.message, None).await;
    }
}

/// Acknowledges `message`. A lost ack means a redelivery, which the job record
/// makes harmless.
pub async fn ack(message: &Message) {
    if let Err(e) = message.ack_with(AckKind::Ack).await {
        tracing::warn!(error = %error_chain(&*e), "could not acknowledge a launch request");
    }
}

/// Gives a request back to the stream: for another worker now (`after: None`),
/// or for whichever worker takes it once `after` has passed.
pub async fn hand_back(message: &Message, after: Option<Duration>) {
    if let Err(e) = message.ack_with(AckKind::Nak(after)).await {
        // Unanswered, the request comes back after the ack wait instead.
        tracing::warn!(error = %error_chain(&*e), "could not hand a launch request back");
    }
}
