//! Answers for the worker's resources (its policy, its GPUs, which job holds
//! which, what is free) on `P.worker.WORKER.resources`, and on
//! `P.resources.POOL`, where every worker of the pool answers for itself.

use super::service::{Registration, ServiceError};
use crate::nats::subjects::Subjects;
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use async_nats::service::Request;
use async_nats::service::endpoint::Endpoint;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The subscriptions resource questions arrive on.
pub struct ResourceSubscriptions {
    worker: Endpoint,
    pool: Endpoint,
}

impl ResourceSubscriptions {
    /// Subscribes (before the worker's set-up calls, like the control
    /// subscriptions, so it answers once it is ready).
    ///
    /// # Errors
    /// The [`ServiceError`] when an endpoint cannot be opened.
    pub async fn subscribe(
        service: &Registration,
        subjects: &Subjects,
        worker_id: &str,
        pool: &str,
    ) -> Result<Self, ServiceError> {
        Ok(ResourceSubscriptions {
            worker: service
                .own("resources", subjects.worker_resources(worker_id))
                .await?,
            pool: service
                .own("pool_resources", subjects.pool_resources(pool))
                .await?,
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

async fn answer(answers: &ResourceAnswers, request: Request) {
    if request.message.reply.is_none() {
        return;
    }
    let status = answers.resources.status(&answers.worker_id, &answers.pool);
    let body = serde_json::to_vec(&status).expect("a ResourceStatus always serializes");
    if let Err(e) = request.respond(Ok(body.into())).await {
        tracing::warn!(error = %error_chain(&e), "could not answer a resource question");
    }
}
