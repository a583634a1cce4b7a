//! Intake: pulls launch requests only while the worker has capacity, claims each
//! job by creating its record, and starts the job's task, which acknowledges
//! the request once the record names the job's workload or ends the job (see
//! [`super::request_ack`]); a request whose job was claimed by a worker that went
//! before that point is taken over and launched here, unless that worker had
//! handed the job's process to its host's supervisor: then it is left to that
//! host (see `take_over_launch`).
//!
//! Capacity is a semaphore of `max_jobs` permits: a permit is taken before a
//! request is pulled and moves into the job's task, so a full worker stops pulling
//! and the pool's other workers get the requests. While jobs of a gone worker
//! wait for room here (see [`super::adoption`]), no request is pulled: the room
//! that frees up goes to them first.
//!
//! Before the claim, the request is placed under the worker's resource policy:
//! one that does not fit now is handed back with a delay (see [`super::placement`])
//! and its permit freed, so it never holds up the requests behind it; its GPUs,
//! when it fits, are written in its first record and held by its job's task.
//!
//! A request over the size limit is not decoded, only its job id is read; what a
//! request holds goes into records, events and logs only bounded. A record the
//! server refuses for good ends the job with a minimal one (see [`super::story`]).

use super::job::{Job, JobSupport};
use super::placement::{self, Census, Verdict};
use super::registry::{Registration, Registry};
use super::request_ack::{RequestAck, ack, hand_back};
use super::story::{Author, Change, Claimed, Opening, Story, TombstoneEnded};
use crate::backend::started_on_host;
use crate::nats::setup::Layout;
use crate::pool::members::Members;
use crate::protocol::bounded::{bounded, one_line};
use crate::protocol::{
    InvalidRequest, JobRecord, LaunchDecodeError, LaunchRequest, decode_launch_within, reason,
};
use crate::report::error_chain;
use crate::resources::ResourcePolicy;
use crate::resources::gpu_pool::{GpuLease, NotPlaced};
use crate::state::JobState;
use crate::store::StoreError;
use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{Message, consumer::PullConsumer};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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

/// What intake needs of its worker.
pub struct Intake {
    /// Writes the jobs' records and events.
    pub author: Arc<Author>,
    /// What the jobs' tasks need (the backends among it).
    pub jobs: Arc<JobSupport>,
    /// The jobs this worker runs.
    pub registry: Registry,
    /// What the worker has room for.
    pub resources: ResourcePolicy,
    /// Asks the pool's workers what they could hold.
    pub census: Census,
    /// Where launch payloads without a usable job id are reported.
    pub invalid: InvalidReports,
    /// Largest launch request decoded; a larger one ends its job in `error`.
    pub max_request_bytes: usize,
    /// The pool's live workers, to tell a launch in progress from one whose
    /// worker went.
    pub members: Members,
    /// How long the server waits for a request's acknowledgement.
    pub ack_wait: Duration,
}

/// Reports of launch payloads without a usable job id, on `P.invalid` (core
/// NATS: a report for whoever listens, not a job).
pub struct InvalidReports {
    /// The connection.
    pub client: async_nats::Client,
    /// `P.invalid`.
    pub subject: String,
}

impl InvalidReports {
    async fn report(&self, report: &InvalidRequest) {
        let payload = serde_json::to_vec(report).expect("an InvalidRequest always serializes");
        if let Err(e) = self
            .client
            .publish(self.subject.clone(), payload.into())
            .await
        {
            tracing::warn!(error = %error_chain(&e), "could not report an invalid launch request");
        }
    }
}

/// Pulls and dispatches launch requests until `stop` is cancelled, while
/// `adoption_waits` does not say that jobs of gone workers wait for room.
/// After a failed pull, the consumer is looked up again through `layout`, and
/// created again if an operator removed it.
pub async fn run(
    intake: Arc<Intake>,
    mut consumer: PullConsumer,
    layout: Layout,
    capacity: Arc<Semaphore>,
    mut adoption_waits: watch::Receiver<bool>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut failures = crate::retry::Delays::default();
    'pulling: loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            permit = permit_after_adoption(&capacity, &mut adoption_waits) => match permit {
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
                tracing::warn!(error = %error_chain(&e), retry_in = ?delay, "could not pull launch requests");
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
                    tracker.spawn(handle(intake.clone(), message, permit));
                }
                Some(Err(e)) => {
                    let delay = failures.next_delay();
                    tracing::warn!(error = %error_chain(&*e), retry_in = ?delay, "pulling launch requests failed");
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

/// A permit to pull a request with, once no job of a gone worker waits for
/// room here (those take the room first).
async fn permit_after_adoption(
    capacity: &Arc<Semaphore>,
    adoption_waits: &mut watch::Receiver<bool>,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    loop {
        // Adoption gone (the worker stopping) holds nothing back.
        let _ = adoption_waits.wait_for(|waits| !*waits).await;
        let permit = capacity.clone().acquire_owned().await?;
        if !*adoption_waits.borrow() {
            return Ok(permit);
        }
    }
}

/// Opens the pool's consumer again `delay` after a failed pull, creating it (and
/// its stream) should it be gone; keeps the old handle when the server cannot say.
async fn reopen_after(delay: Duration, layout: &Layout, consumer: &mut PullConsumer) {
    tokio::time::sleep(delay).await;
    match layout.launch_consumer().await {
        Ok(reopened) => *consumer = reopened,
        Err(e) => {
            tracing::debug!(error = %error_chain(&e), "could not open the launch consumer again")
        }
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

/// Handles one launch request, within its job's span once its job id is known.
async fn handle(intake: Arc<Intake>, message: Message, permit: OwnedSemaphorePermit) {
    let author = &intake.author;
    let (opening, request, invalid) =
        match decode_launch_within(&message.payload, intake.max_request_bytes) {
            Err(LaunchDecodeError::Unidentifiable { error }) => {
                return report_invalid(&intake, &message, error).await;
            }
            Err(LaunchDecodeError::Invalid { job_id, error }) => {
                let backend = intake.jobs.backends.default_kind();
                let change = Change::because(reason::INVALID_REQUEST, error.clone());
                let opening = author.opening(&job_id, backend, JobState::Error, change);
                (opening, None, Some(error))
            }
            Ok((job_id, request)) => {
                let backend = intake.jobs.backends.kind_for(&request);
                let mut opening =
                    author.opening(&job_id, backend, JobState::Starting, Change::default());
                opening.record.site = request.site.as_deref().map(bounded);
                (opening, Some(request), None)
            }
        };
    let span = author.span(opening.job_id(), opening.record.backend);
    async move {
        if let Some(error) = invalid {
            tracing::warn!(error = %one_line(&error), "invalid launch request");
        }
        claim_and_run(&intake, opening, request, message, permit).await;
    }
    .instrument(span)
    .await;
}

/// Claims a job whose request was read, and runs it if it is this worker's.
async fn claim_and_run(
    intake: &Intake,
    mut opening: Opening,
    mut request: Option<LaunchRequest>,
    message: Message,
    permit: OwnedSemaphorePermit,
) {
    let job_id = opening.job_id().clone();
    // Registered before the claim, so that a terminate arriving right after it
    // finds the job's task.
    let Some(registration) = intake.registry.register(&job_id) else {
        // Boxed: a rare path, kept out of the state of every job's task.
        return Box::pin(held_by_earlier_delivery(
            intake,
            opening,
            request.is_some(),
            &message,
        ))
        .await;
    };
    // Placed before the claim: a request that does not fit here now goes back,
    // for this worker or another of the pool to take later.
    let placed = request
        .as_ref()
        .map(|request| intake.resources.place(request));
    let gpus = match placed {
        None => None,
        Some(Ok(lease)) => lease,
        Some(Err(not_placed)) => {
            let start_s = request.as_ref().map_or(0, LaunchRequest::start_timeout_s);
            match verdict_on(intake, &message, start_s, &not_placed).await {
                Verdict::RetryIn(delay) => {
                    drop(registration);
                    tracing::debug!(%not_placed, retry_in = ?delay, "no room for the job here now; its request goes back");
                    return hand_back(&message, Some(delay)).await;
                }
                Verdict::Unschedulable(text) => {
                    tracing::warn!(%not_placed, "no worker placed the job in time; it ends");
                    let backend = opening
                        .record
                        .backend
                        .unwrap_or(intake.jobs.backends.default_kind());
                    let change = Change::because(reason::UNSCHEDULABLE, text);
                    let site = opening.record.site.take();
                    opening = intake
                        .author
                        .opening(&job_id, backend, JobState::Error, change);
                    opening.record.site = site;
                    request = None;
                    None
                }
            }
        }
    };
    opening.record.gpus = gpus.as_ref().map(|lease| lease.gpus().to_vec());
    // A claim retries while JetStream is away; a worker that gives up on its jobs
    // at shutdown gives up on the claim too, and the request goes back.
    let claim = tokio::select! {
        claim = intake.author.claim(opening) => claim,
        () = intake.jobs.hard_stop.cancelled() => {
            tracing::warn!("shutting down before the job could be claimed; its request goes back");
            return hand_back(&message, None).await;
        }
    };
    let mut story = match claim {
        Ok(Claimed::Created(story)) => *story,
        Ok(Claimed::Found { found, opening }) => {
            let launch_left =
                found.record().state == JobState::Starting && !found.record().tombstone;
            if let Some(request) = request.take_if(|_| launch_left) {
                // Boxed: a rare path, kept out of the state of every job's task.
                let taken = TakenRequest {
                    request,
                    message,
                    registration,
                    permit,
                    gpus,
                };
                return Box::pin(take_over_launch(intake, *found, taken)).await;
            }
            // Not this worker's to run.
            drop(registration);
            // Boxed: a rare path, kept out of the state of every job's task.
            Box::pin(end_unclaimed(
                intake,
                *found,
                *opening,
                request.is_some(),
                &message,
            ))
            .await;
            return;
        }
        Err(e) => return leave_for_later(&message, &e).await,
    };
    // A first record that ends the job (an invalid request, one nobody could
    // place, one refused for good) has only its event left to publish.
    let request = match request {
        Some(request) if !story.record().state.is_terminal() => request,
        _ => {
            drop(registration);
            // Published before the ack: a crash in between means a redelivery,
            // which publishes the event if the stream lacks it.
            if let Err(superseded) = story.announce().await {
                tracing::error!(%superseded, "the job's story was taken over while it ended");
            }
            return ack(&message).await;
        }
    };
    tracing::debug!("job accepted");
    Job::new(intake.jobs.clone(), story, registration, Some(permit))
        .holding(gpus)
        .launch(request, RequestAck::new(message, intake.ack_wait))
        .await;
}

/// A request this worker claimed the job of, with what it holds for it.
struct TakenRequest {
    request: LaunchRequest,
    message: Message,
    registration: Registration,
    permit: OwnedSemaphorePermit,
    gpus: Option<GpuLease>,
}

/// Handles a launch whose job's record was left `starting` by a launch that
/// did not get as far as naming its workload's end, or acknowledging its
/// request. While the worker that claimed it lives (its lease held), the
/// request goes back and comes again later. Once that worker went (or it was
/// this worker, before a restart), this worker takes the claim over by
/// compare-and-set and launches the job, adopting its workload by name should
/// the first launch have created it; unless the workload may run on the gone
/// worker's host, which no other can follow: then the request goes back until
/// the job ends there (its worker back) or by adoption (`lost`, once its worker
/// has been gone for `--owner-lost-after`), and then comes as a duplicate.
async fn take_over_launch(intake: &Intake, found: Story, taken: TakenRequest) {
    let owner = found.record().worker.clone();
    let owner_gone = owner == intake.author.worker_id()
        || match intake.members.is_live(&owner).await {
            Ok(live) => !live,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot tell whether the job's worker lives");
                false
            }
        };
    if !owner_gone {
        tracing::info!(%owner, retry_in = ?CLAIM_IN_PROGRESS_RETRY, "launch request of a job another worker is launching; it comes back later");
        return hand_back(&taken.message, Some(CLAIM_IN_PROGRESS_RETRY)).await;
    }
    if owner != intake.author.worker_id() && may_run_on_owners_host(intake, found.record()) {
        tracing::info!(%owner, retry_in = ?CLAIM_IN_PROGRESS_RETRY, "launch request of a job whose workload may run on the host of its worker, which went; left to that host or to adoption, it comes back later");
        return hand_back(&taken.message, Some(CLAIM_IN_PROGRESS_RETRY)).await;
    }
    let mut found = found;
    found.assign_gpus(taken.gpus.as_ref().map(|lease| lease.gpus().to_vec()));
    let story = match intake.author.take_over(found).await {
        Ok(story) => story,
        Err(superseded) => {
            tracing::info!(%superseded, retry_in = ?CLAIM_IN_PROGRESS_RETRY, "another worker took the job's launch over first; the request comes back later");
            return hand_back(&taken.message, Some(CLAIM_IN_PROGRESS_RETRY)).await;
        }
    };
    tracing::warn!(%owner, "took over the launch of a job whose worker went before its workload was recorded");
    Job::new(
        intake.jobs.clone(),
        story,
        taken.registration,
        Some(taken.permit),
    )
    .holding(taken.gpus)
    .launch(
        taken.request,
        RequestAck::new(taken.message, intake.ack_wait),
    )
    .await;
}

/// Whether the launch of `record`, left by a worker that went, may have
/// started a workload that only that worker's host can follow: its record says
/// it was being started there ([`started_on_host`]), and its backend cannot
/// be adopted from elsewhere.
fn may_run_on_owners_host(intake: &Intake, record: &JobRecord) -> bool {
    started_on_host(record)
        && !record
            .backend
            .and_then(|kind| intake.jobs.backends.get(kind))
            .is_some_and(|backend| backend.adoptable_anywhere())
}

/// The verdict on a request this worker could not place, from how long ago it
/// was published and how often it was delivered; for one it could never hold,
/// also from what the pool's other workers could.
async fn verdict_on(
    intake: &Intake,
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
        && let Some(text) = intake.census.never_schedulable(not_placed).await
    {
        return Verdict::Unschedulable(text);
    }
    verdict
}

/// Handles a delivery that finds its job registered on this worker by an earlier
/// delivery of the same launch. Once that one's claim is recorded, this is a
/// duplicate like any other. While it is still claiming (slowly, or retrying
/// while NATS is away), the request is not acknowledged, since that claim may
/// yet fail: it goes back to the queue and returns after
/// [`CLAIM_IN_PROGRESS_RETRY`] to find the record.
async fn held_by_earlier_delivery(
    intake: &Intake,
    opening: Opening,
    valid: bool,
    message: &Message,
) {
    match intake.author.open(opening.job_id()).await {
        Ok(Some(found)) => end_unclaimed(intake, found, opening, valid, message).await,
        Ok(None) => {
            tracing::info!(retry_in = ?CLAIM_IN_PROGRESS_RETRY, "launch request for a job whose claim is under way on this worker; it comes back later");
            hand_back(message, Some(CLAIM_IN_PROGRESS_RETRY)).await;
        }
        Err(e) => leave_for_later(message, &e).await,
    }
}

/// Handles a launch whose job record existed already (`found`): a tombstone
/// ends the job at once, with `opening` (the launch's record; `valid`: whether
/// its request was); anything else is a duplicate, whose job may need its final
/// event.
async fn end_unclaimed(
    intake: &Intake,
    found: Story,
    opening: Opening,
    valid: bool,
    message: &Message,
) {
    let look_again = if found.record().tombstone {
        let why = if valid {
            "a terminate request came before the launch; nothing was started"
        } else {
            "a terminate request came before the (invalid) launch; nothing was started"
        };
        match found.end_tombstone(opening, why).await {
            Ok(TombstoneEnded::Ended) => {
                tracing::info!("launch of a job terminated before it came; nothing started");
                None
            }
            Ok(TombstoneEnded::Lost(winner)) => {
                tracing::info!("another delivery ended the terminated job first");
                intake.author.settle_final_event(&winner).await
            }
            Ok(TombstoneEnded::Gone) => {
                // The tombstone went (its retention ran out, or an operator removed
                // it) between reading and replacing it: the request goes back and
                // comes again as a launch of a job nobody has seen.
                tracing::info!(
                    "the job's tombstone went away meanwhile; its launch request goes back"
                );
                return hand_back(message, None).await;
            }
            Err(e) => return leave_for_later(message, &e).await,
        }
    } else {
        let existing = found.record();
        tracing::info!(owner = %existing.worker, state = %existing.state, "duplicate launch request ignored");
        intake.author.settle_final_event(existing).await
    };
    match look_again {
        Some(wait) => look_again_after(message, wait).await,
        None => ack(message).await,
    }
}

/// Hands a request back to the queue for `wait`, after which whichever worker
/// gets it looks at its job's final event again.
async fn look_again_after(message: &Message, wait: Duration) {
    tracing::info!(retry_in = ?wait, "the job's final event is not stored yet and its owner may still publish it; looking again later");
    hand_back(message, Some(wait)).await;
}

/// Leaves a request whose job record cannot be read in the queue: it comes back
/// after [`UNREADABLE_RECORD_RETRY`], until the record is repaired or removed.
async fn leave_for_later(message: &Message, error: &StoreError) {
    tracing::error!(error = %error_chain(&error), retry_in = ?UNREADABLE_RECORD_RETRY, "cannot read the job's record; the launch request waits in the queue");
    hand_back(message, Some(UNREADABLE_RECORD_RETRY)).await;
}

/// Reports a payload without a usable job id and drops it.
async fn report_invalid(intake: &Intake, message: &Message, error: String) {
    tracing::warn!(error = %one_line(&error), "unusable launch request reported on the invalid subject");
    intake
        .invalid
        .report(&InvalidRequest::new(&error, &message.payload))
        .await;
    ack(message).await;
}
