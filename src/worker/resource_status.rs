//! Answers for the worker's resources (its policy, its GPUs, which job holds
//! which, what is free) on `P.worker.WORKER.resources`, and on
//! `P.resources.POOL`, where every worker of the pool answers for itself.

use crate::nats::subjects::Subjects;
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use async_nats::{Message, Subscriber};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The subscriptions resource questions arrive on.
pub struct ResourceSubscriptions {
    worker: Subscriber,
    pool: Subscriber,
}

impl ResourceSubscriptions {
    /// Subscribes (before the worker's set-up calls, like the control
    /// subscriptions, so it answers once it is ready).
    ///
    /// # Errors
    /// The client's error when a subscription fails.
    pub async fn subscribe(
        client: &async_nats::Client,
        subjects: &Subjects,
        worker_id: &str,
        pool: &str,
    ) -> Result<Self, async_nats::SubscribeError> {
        Ok(ResourceSubscriptions {
            worker: client
                .subscribe(subjects.worker_resources(worker_id))
                .await?,
            pool: client.subscribe(subjects.pool_resources(pool)).await?,
        })
    }
}

/// What the answers need of their worker.
pub struct ResourceAnswers {
    /// What the worker has, and which job holds which GPU.
    pub resources: ResourcePolicy,
    /// This worker's id.
    pub worker_id: String,
    /// Its pool.
    pub pool: String,
    /// The connection.
    pub client: async_nats::Client,
}

/// Answers until `stop` is cancelled. An answer is computed from memory, at
/// once, so questions are answered in turn.
pub async fn run(
    answers: ResourceAnswers,
    mut subs: ResourceSubscriptions,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            Some(message) = subs.worker.next() => message,
            Some(message) = subs.pool.next() => message,
            else => break,
        };
        answer(&answers, message).await;
    }
}

async fn answer(answers: &ResourceAnswers, message: Message) {
    let Some(reply_to) = message.reply else {
        return;
    };
    let status = answers.resources.status(&answers.worker_id, &answers.pool);
    let body = serde_json::to_vec(&status).expect("a ResourceStatus always serializes");
    if let Err(e) = answers.client.publish(reply_to, body.into()).await {
        tracing::warn!(error = %error_chain(&e), "could not answer a resource question");
    }
}
