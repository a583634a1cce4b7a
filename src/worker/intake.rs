//! Intake: pulls launch requests only while the worker has capacity, claims each
//! job by creating its record, acknowledges the request once the record is
//! durable, and starts the job's task.
//!
//! Capacity is a semaphore of `max_jobs` permits: a permit is taken before a
//! request is pulled and moves into the job's task, so a full worker stops pulling
//! and the pool's other workers get the requests.
//!
//! Before the claim, the request is placed under the worker's resource policy:
//! one that does not fit now is handed back with a delay (see [`super::placement`])
//! and its permit freed, so it never holds up the requests behind it; its GPUs,
//! when it fits, are written in its first record and held by its job's task.
//!
//! A request over the size limit is not decoded, only its job id is read; what a
//! request holds goes into records, events and logs only bounded. A record the
//! server refuses for good ends the job with a minimal one (see [`super::rejected`]).

use super::Shared;
use super::job::{self, Change, Job};
use super::placement::{self, Verdict};
use super::rejected::{self, Refusal};
use crate::nats::setup::Layout;
use crate::nats::subjects::check_subject_safe;
use crate::protocol::bounded::{bounded, one_line};
use crate::protocol::{
    BackendKind, InvalidRequest, JobRecord, LaunchDecodeError, LaunchRequest, decode_launch_within,
    reason,
};
use crate::resources::gpu_pool::NotPlaced;
use crate::state::JobState;
use crate::store::{Claim, Replaced, StoreError};
use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most requests asked for in one pull.
const MAX_BATCH: usize = 64;
/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long after it stops pulling a worker waits for requests still on their way.
const HAND_BACK_WINDOW: Duration = Duration::from_millis(100);
/// Longest time a stopping worker spends handing requests back.
const HAND_BACK_LIMIT: Duration = Duration::from_secs(2);
/// When a request comes back whose job record cannot be read.
const UNREADABLE_RECORD_RETRY: Duration = Duration::from_secs(60);
/// When a request comes back that arrived while an earlier delivery of it was
/// still claiming its job on this worker.
const CLAIM_IN_PROGRESS_RETRY: Duration = Duration::from_secs(5);

/// Pulls and dispatches launch requests until `stop` is cancelled.
/// After a failed pull, the consumer is looked up again through `layout`, and
/// created again if an operator removed it.
pub async fn run(
    shared: Arc<Shared>,
    mut consumer: PullConsumer,
    layout: Layout,
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
                    () = reopen_after(delay, &layout, &mut consumer) => continue,
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
                        () = reopen_after(delay, &layout, &mut consumer) => break,
                    }
                }
            }
        }
    }
    tracing::info!("stopped taking launch requests");
}

/// Opens the pool's consumer again `delay` after a failed pull, creating it (and
/// its stream) should it be gone; keeps the old handle when the server cannot say.
async fn reopen_after(delay: Duration, layout: &Layout, consumer: &mut PullConsumer) {
    tokio::time::sleep(delay).await;
    match layout.launch_consumer().await {
        Ok(reopened) => *consumer = reopened,
        Err(e) => tracing::debug!(error = %e, "could not open the launch consumer again"),
    }
}

/// Gives the requests that reached this worker but were not taken, and those
/// still on their way within [`HAND_BACK_WINDOW`], back to the stream, so that
/// another worker gets them now rather than after the ack wait. Bounded by
/// [`HAND_BACK_LIMIT`] (a nak is a publish, which waits while NATS is away).
async fn hand_back_received(batch: &mut Batch) {
    let handing_back = async {
        while let Ok(Some(next)) = tokio::time::timeout(HAND_BACK_WINDOW, batch.next()).await {
            // Errors are the pull's status messages, not requests.
            if let Ok(message) = next {
                hand_back(&message, None).await;
            }
        }
    };
    if tokio::time::timeout(HAND_BACK_LIMIT, handing_back)
        .await
        .is_err()
    {
        tracing::warn!("stopped handing launch requests back; the rest return after the ack wait");
    }
}

/// Handles one launch request.
async fn handle(shared: Arc<Shared>, message: Message, permit: OwnedSemaphorePermit) {
    let (mut record, mut request) =
        match decode_launch_within(&message.payload, shared.max_request_bytes) {
            Err(LaunchDecodeError::Unidentifiable { error }) => {
                return report_invalid(&shared, &message, error).await;
            }
            Err(LaunchDecodeError::Invalid { job_id, error }) => {
                if let Err(unsafe_id) = check_subject_safe(&job_id) {
                    return report_invalid(&shared, &message, unsafe_id).await;
                }
                tracing::warn!(%job_id, error = %one_line(&error), "invalid launch request");
                let backend = shared.backends.default_kind();
                let change = Change::because(reason::INVALID_REQUEST, error);
                let record = first_record(&shared, &job_id, backend, JobState::Error, change);
                (record, None)
            }
            Ok(request) => {
                if let Err(unsafe_id) = check_subject_safe(&request.job_id) {
                    return report_invalid(&shared, &message, unsafe_id).await;
                }
                let backend = shared.backends.kind_for(&request);
                let mut record = first_record(
                    &shared,
                    &request.job_id,
                    backend,
                    JobState::Starting,
                    Change::default(),
                );
                record.site = request.site.as_deref().map(bounded);
                (record, Some(request))
            }
        };
    let job_id = record.job_id.clone();
    // Registered before the claim, so that a terminate arriving right after it
    // finds the job's task.
    let Some(registration) = shared.registry.register(&job_id) else {
        // Boxed: a rare path, kept out of the state of every job's task.
        return Box::pin(held_by_earlier_delivery(
            &shared,
            record,
            request.as_ref(),
            &message,
        ))
        .await;
    };
    // Placed before the claim: a request that does not fit here now goes back,
    // for this worker or another of the pool to take later.
    let placed = request
        .as_ref()
        .map(|request| shared.resources.place(request));
    let gpus = match placed {
        None => None,
        Some(Ok(lease)) => lease,
        Some(Err(not_placed)) => {
            let start_s = request.as_ref().map_or(0, LaunchRequest::start_timeout_s);
            match verdict_on(&shared, &message, start_s, &not_placed).await {
                Verdict::RetryIn(delay) => {
                    drop(registration);
                    tracing::debug!(%job_id, %not_placed, retry_in = ?delay, "no room for the job here now; its request goes back");
                    return hand_back(&message, Some(delay)).await;
                }
                Verdict::Unschedulable(text) => {
                    tracing::warn!(%job_id, %not_placed, "no worker placed the job in time; it ends");
                    let backend = record.backend.unwrap_or(shared.backends.default_kind());
                    let change = Change::because(reason::UNSCHEDULABLE, text);
                    let site = record.site.take();
                    record = first_record(&shared, &job_id, backend, JobState::Error, change);
                    record.site = site;
                    request = None;
                    None
                }
            }
        }
    };
    record.gpus = gpus.as_ref().map(|lease| lease.gpus().to_vec());
    // A claim retries while JetStream is away; a worker that gives up on its jobs
    // at shutdown gives up on the claim too, and the request goes back.
    let claim = tokio::select! {
        claim = shared.store.claim(&record) => claim,
        () = shared.hard_stop.cancelled() => {
            tracing::warn!(%job_id, "shutting down before the job could be claimed; its request goes back");
            return hand_back(&message, None).await;
        }
    };
    let claim = match claim {
        Err(refused @ StoreError::Rejected { .. }) => {
            // The job cannot be recorded as asked: it ends with a record that fits.
            let refused = Refusal::from(refused);
            tracing::error!(%job_id, error = %one_line(&refused.to_string()), "the server refused the job's first record for good; the job ends");
            record = rejected::minimal_record(&record, &refused);
            request = None;
            shared.store.claim(&record).await
        }
        claim => claim,
    };
    let claim = match claim {
        Ok(claim) => claim,
        Err(e) => return leave_for_later(&message, &job_id, &e).await,
    };
    if let Claim::Exists {
        record: found,
        revision,
    } = claim
    {
        // Not this worker's to run.
        drop(registration);
        let found = Found {
            record: *found,
            revision,
        };
        // Boxed: a rare path, kept out of the state of every job's task.
        Box::pin(end_unclaimed(
            &shared,
            found,
            record,
            request.as_ref(),
            &message,
        ))
        .await;
        return;
    }
    let Some(request) = request else {
        drop(registration);
        // Published before the ack: a crash in between means a redelivery, which
        // publishes the event if the stream lacks it.
        publish_or_end(&shared, &record).await;
        return ack(&message).await;
    };
    ack(&message).await;
    // The request is decoded; the message need not live as long as the job.
    drop(message);
    tracing::debug!(%job_id, backend = ?record.backend, "job accepted");
    Job::new(shared, record, registration, Some(permit))
        .holding(gpus)
        .launch(request)
        .await;
}

/// The verdict on a request this worker could not place, from how long ago it
/// was published and how often it was delivered; for one it could never hold,
/// also from what the pool's other workers could.
async fn verdict_on(
    shared: &Shared,
    message: &Message,
    start_s: u64,
    not_placed: &NotPlaced,
) -> Verdict {
    let (waited, deliveries) = match message.info() {
        Ok(info) => {
            let waited = time::OffsetDateTime::now_utc() - info.published;
            (
                Duration::try_from(waited).unwrap_or(Duration::ZERO),
                u64::try_from(info.delivered).unwrap_or(1),
            )
        }
        // Not a JetStream delivery (cannot happen on the work queue): try again.
        Err(_) => (Duration::ZERO, 1),
    };
    let verdict = placement::verdict(not_placed, start_s, waited, deliveries);
    if matches!(verdict, Verdict::RetryIn(_))
        && not_placed.never
        && let Some(text) = placement::never_schedulable(shared, not_placed).await
    {
        return Verdict::Unschedulable(text);
    }
    verdict
}

/// Publishes the event of a job's record, which ends the job: should the server
/// refuse it for good, the job ends with a minimal record instead.
async fn publish_or_end(shared: &Shared, record: &JobRecord) {
    if let Err(refused) = shared
        .events
        .publish(&record.event(shared.backends.default_kind()))
        .await
    {
        rejected::end_job(shared, record, &refused.into()).await;
    }
}

/// Handles a delivery that finds its job registered on this worker by an earlier
/// delivery of the same launch. Once that one's claim is recorded, this is a
/// duplicate like any other. While it is still claiming (slowly, or retrying
/// while NATS is away), the request is not acknowledged, since that claim may
/// yet fail: it goes back to the queue and returns after
/// [`CLAIM_IN_PROGRESS_RETRY`] to find the record.
async fn held_by_earlier_delivery(
    shared: &Shared,
    record: JobRecord,
    request: Option<&LaunchRequest>,
    message: &Message,
) {
    let job_id = record.job_id.clone();
    match shared.store.get_with_revision(&job_id).await {
        Ok(Some((found, revision))) => {
            let found = Found {
                record: found,
                revision,
            };
            end_unclaimed(shared, found, record, request, message).await;
        }
        Ok(None) => {
            tracing::info!(%job_id, retry_in = ?CLAIM_IN_PROGRESS_RETRY, "launch request for a job whose claim is under way on this worker; it comes back later");
            hand_back(message, Some(CLAIM_IN_PROGRESS_RETRY)).await;
        }
        Err(e) => leave_for_later(message, &job_id, &e).await,
    }
}

/// The first record of a job this worker takes on: its first state (seq 1), in
/// this worker's pool.
fn first_record(
    shared: &Shared,
    job_id: &str,
    backend: BackendKind,
    state: JobState,
    change: Change,
) -> JobRecord {
    let mut record = job::fresh_record(job_id, &shared.worker_id, state);
    record.pool = Some(shared.pool.clone());
    record.backend = Some(backend);
    job::apply(&mut record, state, change);
    record
}

/// Handles a launch whose job record existed already: a tombstone ends the job
/// at once; anything else is a duplicate, whose job may need its final event.
async fn end_unclaimed(
    shared: &Shared,
    found: Found,
    record: JobRecord,
    request: Option<&LaunchRequest>,
    message: &Message,
) {
    let job_id = record.job_id.clone();
    let look_again = if found.record.tombstone {
        match end_tombstoned(shared, found, record, request).await {
            Ok(Replaced::Done) => None,
            Ok(Replaced::Lost(Some(winner))) => finish_story(shared, &winner).await,
            Ok(Replaced::Lost(None)) => {
                // The tombstone went (its retention ran out, or an operator removed
                // it) between reading and replacing it: the request goes back and
                // comes again as a launch of a job nobody has seen.
                tracing::info!(%job_id, "the job's tombstone went away meanwhile; its launch request goes back");
                return hand_back(message, None).await;
            }
            Err(e) => return leave_for_later(message, &job_id, &e).await,
        }
    } else {
        tracing::info!(%job_id, owner = %found.record.worker, state = %found.record.state, "duplicate launch request ignored");
        finish_story(shared, &found.record).await
    };
    match look_again {
        Some(wait) => look_again_after(message, &job_id, wait).await,
        None => ack(message).await,
    }
}

/// For a job another delivery of its launch has ended: that delivery's worker may
/// have died after writing the final record and before publishing its event, and
/// this request may be the last chance to publish it; or it may be publishing it
/// right now. [`EventPublisher::settle_final_event`] tells which (its module
/// docs say how). Returns how long to wait before looking again, if the
/// owner may still publish the event; a job not ended needs nothing here.
///
/// [`EventPublisher::settle_final_event`]: super::events::EventPublisher::settle_final_event
async fn finish_story(shared: &Shared, existing: &JobRecord) -> Option<Duration> {
    if !(existing.state.is_terminal() && existing.seq > 0 && !existing.tombstone) {
        return None;
    }
    shared
        .events
        .settle_final_event(&existing.event(shared.backends.default_kind()))
        .await
}

/// Hands a request back to the queue for `wait`, after which whichever worker
/// gets it looks at its job's final event again.
async fn look_again_after(message: &Message, job_id: &str, wait: Duration) {
    tracing::info!(%job_id, retry_in = ?wait, "the job's final event is not stored yet and its owner may still publish it; looking again later");
    hand_back(message, Some(wait)).await;
}

/// Leaves a request whose job record cannot be read in the queue: it comes back
/// after [`UNREADABLE_RECORD_RETRY`], until the record is repaired or removed.
async fn leave_for_later(message: &Message, job_id: &str, error: &StoreError) {
    tracing::error!(%job_id, %error, retry_in = ?UNREADABLE_RECORD_RETRY, "cannot read the job's record; the launch request waits in the queue");
    hand_back(message, Some(UNREADABLE_RECORD_RETRY)).await;
}

/// The record found where a launch wanted to create one, with its revision.
struct Found {
    record: JobRecord,
    revision: u64,
}

/// Ends a job whose terminate came before its launch: it goes straight to
/// `terminated`, and nothing is started. The tombstone is replaced by a
/// compare-and-set, so when two deliveries of the launch race, one publishes;
/// the other gets [`Replaced::Lost`] with the record it lost to.
///
/// # Errors
/// [`StoreError::Corrupt`] when the record found instead cannot be read.
async fn end_tombstoned(
    shared: &Shared,
    tombstone: Found,
    mut record: JobRecord,
    request: Option<&LaunchRequest>,
) -> Result<Replaced, StoreError> {
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
    let replaced = shared.store.replace(&record, tombstone.revision).await?;
    if let Replaced::Lost(_) = replaced {
        tracing::info!(job_id = %record.job_id, "another delivery ended the terminated job first");
        return Ok(replaced);
    }
    publish_or_end(shared, &record).await;
    tracing::info!(job_id = %record.job_id, "launch of a job terminated before it came; nothing started");
    Ok(replaced)
}

/// Reports a payload without a usable job id and drops it.
async fn report_invalid(shared: &Shared, message: &Message, error: String) {
    tracing::warn!(error = %one_line(&error), "unusable launch request reported on the invalid subject");
    shared
        .events
        .report_invalid(&InvalidRequest::new(&error, &message.payload))
        .await;
    ack(message).await;
}

/// Gives a request back to the stream: for another worker now (`after: None`),
/// or for whichever worker takes it once `after` has passed.
async fn hand_back(message: &Message, after: Option<Duration>) {
    if let Err(e) = message.ack_with(AckKind::Nak(after)).await {
        // Unanswered, the request comes back after the ack wait instead.
        tracing::warn!(error = %e, "could not hand a launch request back");
    }
}

async fn ack(message: &Message) {
    // A lost ack means a redelivery, which the job record makes harmless.
    if let Err(e) = message.ack_with(AckKind::Ack).await {
        tracing::warn!(error = %e, "could not acknowledge a launch request");
    }
}
