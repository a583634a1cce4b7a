//! Intake: pulls launch requests only while the worker has capacity, claims each
//! job by creating its record, acknowledges the request once the record is
//! durable, and starts the job's task.
//!
//! Capacity is a semaphore of `max_jobs` permits: a permit is taken before a
//! request is pulled and moves into the job's task, so a full worker stops pulling
//! and the pool's other workers get the requests.

use super::Shared;
use super::job::{self, Change, Job};
use crate::nats::subjects::check_subject_safe;
use crate::protocol::{
    InvalidRequest, JobRecord, LaunchDecodeError, LaunchRequest, decode_launch, reason,
};
use crate::state::JobState;
use crate::store::{Claim, Replaced, StoreError};
use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most requests asked for in one pull.
const MAX_BATCH: usize = 64;
/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Pulls and dispatches launch requests until `stop` is cancelled.
pub async fn run(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    capacity: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut failures = crate::retry::Delays::default();
    'pulling: loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            permit = capacity.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match capacity.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let delay = failures.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "could not pull launch requests");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => {
                    hand_back_received(&mut batch).await;
                    break 'pulling;
                }
                next = batch.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    failures.reset();
                    let Some(permit) = permits.pop() else {
                        tracing::error!("the server sent more launch requests than were pulled");
                        break;
                    };
                    tracker.spawn(handle(shared.clone(), message, permit));
                }
                Some(Err(e)) => {
                    let delay = failures.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "pulling launch requests failed");
                    tokio::select! {
                        () = stop.cancelled() => break 'pulling,
                        () = tokio::time::sleep(delay) => break,
                    }
                }
            }
        }
    }
    tracing::info!("stopped taking launch requests");
}

/// Gives the requests that reached this worker but were not taken yet back to
/// the stream, so that another worker gets them now rather than after the ack
/// wait. (The server sends nothing more to a pull nobody reads.)
async fn hand_back_received(batch: &mut Batch) {
    while let Some(Some(next)) = batch.next().now_or_never() {
        if let Ok(message) = next {
            if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(error = %e, "could not hand a launch request back");
            }
        }
    }
}

/// Handles one launch request.
async fn handle(shared: Arc<Shared>, message: Message, permit: OwnedSemaphorePermit) {
    let redelivered = message
        .info()
        .map(|info| info.delivered > 1)
        .unwrap_or(false);
    let (record, request) = match decode_launch(&message.payload) {
        Err(LaunchDecodeError::Unidentifiable { error }) => {
            return report_invalid(&shared, &message, error).await;
        }
        Err(LaunchDecodeError::Invalid { job_id, error }) => {
            if let Err(unsafe_id) = check_subject_safe(&job_id) {
                return report_invalid(&shared, &message, unsafe_id).await;
            }
            tracing::warn!(%job_id, %error, "invalid launch request");
            let mut record = job::fresh_record(&job_id, &shared.worker_id, JobState::Error);
            record.pool = Some(shared.pool.clone());
            record.backend = Some(shared.backends.default_kind());
            job::apply(
                &mut record,
                JobState::Error,
                Change::because(reason::INVALID_REQUEST, error),
            );
            (record, None)
        }
        Ok(request) => {
            if let Err(unsafe_id) = check_subject_safe(&request.job_id) {
                return report_invalid(&shared, &message, unsafe_id).await;
            }
            let mut record =
                job::fresh_record(&request.job_id, &shared.worker_id, JobState::Starting);
            record.pool = Some(shared.pool.clone());
            record.backend = Some(shared.backends.kind_for(&request));
            record.site = request.site.clone();
            job::apply(&mut record, JobState::Starting, Change::default());
            (record, Some(request))
        }
    };
    let job_id = record.job_id.clone();
    // Registered before the claim, so that a terminate arriving right after it
    // finds the job's task.
    let Some(commands) = shared.registry.register(&job_id) else {
        tracing::info!(%job_id, "launch request for a job this worker runs already; ignored");
        return ack(&message).await;
    };
    let claim = shared.store.claim(&record).await;
    if !matches!((&claim, &request), (Ok(Claim::Created), Some(_))) {
        shared.registry.remove(&job_id);
    }
    let claim = match claim {
        Ok(claim) => claim,
        Err(e) => {
            tracing::error!(%job_id, error = %e, "could not claim the job; request dropped");
            report_invalid(&shared, &message, e.to_string()).await;
            return;
        }
    };
    match (claim, request) {
        (Claim::Created, Some(request)) => {
            ack(&message).await;
            tracing::debug!(%job_id, backend = ?record.backend, "job accepted");
            Job::new(shared, request, record, commands, permit)
                .run()
                .await;
        }
        (Claim::Created, None) => {
            // Published before the ack: a crash in between means a redelivery,
            // which publishes the event again (the stream drops the duplicate).
            shared
                .events
                .publish(&record.event(shared.backends.default_kind()))
                .await;
            ack(&message).await;
        }
        (
            Claim::Exists {
                record: existing,
                revision,
            },
            request,
        ) if existing.tombstone => {
            let tombstone = Tombstone {
                record: *existing,
                revision,
            };
            if let Err(e) = end_tombstoned(&shared, tombstone, record, request.as_ref()).await {
                tracing::error!(%job_id, error = %e, "could not end a job terminated before its launch; request dropped");
                return report_invalid(&shared, &message, e.to_string()).await;
            }
            ack(&message).await;
        }
        (
            Claim::Exists {
                record: existing, ..
            },
            _,
        ) => {
            tracing::info!(%job_id, owner = %existing.worker, state = %existing.state, "duplicate launch request ignored");
            // A redelivery means a worker took the request and died before its ack:
            // if the job ended, its final event may not have gone out.
            if redelivered && existing.state.is_terminal() && existing.seq > 0 {
                shared
                    .events
                    .publish_unless_stored(&existing.event(shared.backends.default_kind()))
                    .await;
            }
            ack(&message).await;
        }
    }
}

/// The record a terminate left for a job before its launch came.
struct Tombstone {
    record: JobRecord,
    revision: u64,
}

/// Ends a job whose terminate came before its launch: it goes straight to
/// `terminated`, and nothing is started. The tombstone is replaced by a
/// compare-and-set, so when two deliveries of the launch race, one publishes.
///
/// # Errors
/// [`StoreError::Corrupt`] when the record found instead cannot be read.
async fn end_tombstoned(
    shared: &Shared,
    tombstone: Tombstone,
    mut record: JobRecord,
    request: Option<&LaunchRequest>,
) -> Result<(), StoreError> {
    record.created = tombstone.record.created;
    record.seq = 0;
    let message = match request {
        Some(_) => "a terminate request came before the launch; nothing was started",
        None => "a terminate request came before the (invalid) launch; nothing was started",
    };
    job::apply(
        &mut record,
        JobState::Terminated,
        Change::because(reason::TERMINATE_REQUESTED, message),
    );
    if shared.store.replace(&record, tombstone.revision).await? == Replaced::Lost {
        tracing::info!(job_id = %record.job_id, "another delivery ended the terminated job first");
        return Ok(());
    }
    shared
        .events
        .publish(&record.event(shared.backends.default_kind()))
        .await;
    tracing::info!(job_id = %record.job_id, "launch of a job terminated before it came; nothing started");
    Ok(())
}

/// Reports a payload without a usable job id and drops it.
async fn report_invalid(shared: &Shared, message: &Message, error: String) {
    tracing::warn!(%error, "unusable launch request reported on the invalid subject");
    shared
        .events
        .report_invalid(&InvalidRequest::new(error, &message.payload))
        .await;
    ack(message).await;
}

async fn ack(message: &Message) {
    // A lost ack means a redelivery, which the job record makes harmless.
    if let Err(e) = message.ack_with(AckKind::Ack).await {
        tracing::warn!(error = %e, "could not acknowledge a launch request");
    }
}
