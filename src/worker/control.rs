//! Control requests: status and terminate on `P.status.JOB_ID` and
//! `P.terminate.JOB_ID` (one worker of all answers each, through a queue group),
//! and terminates forwarded to this worker as a job's owner.
//!
//! Any worker answers status from the job's record. A terminate is acted on by the
//! job's owner: the worker that receives it either owns the job, forwards it to the
//! owner on `P.worker.OWNER.terminate.JOB_ID`, or, for a job not seen yet, records
//! a tombstone so that the launch, when it comes, ends at once in `terminated`.
//! For a job whose owner went (its lease lapsed or was released) the stop is
//! written into the job's record by compare-and-set, and the worker that takes
//! the job over stops its workload first thing: a terminate sent during a
//! hand-over is not lost.

use super::registry::{JobCommand, Registry};
use super::reply::{self, Refused};
use super::service::{Registration, ServiceError};
use super::story::{Author, Tombstoned};
use crate::nats::subjects::Subjects;
use crate::pool::members::Members;
use crate::protocol::{
    DEFAULT_GRACE_S, ErrorReply, InvalidTerminate, JobId, JobRecord, TerminateReply,
    TerminateRequest,
};
use crate::report::error_chain;
use crate::state::JobState;
use crate::store::{JobStore, StoreError};
use async_nats::service::Request as ServiceRequest;
use async_nats::service::endpoint::Endpoint;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest time an owner spends answering a forwarded terminate.
const FORWARDED_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded terminate waits for the owner's reply: longer than the
/// owner may take, so a slow yes is not reported as a no.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(6);
/// Longest time spent answering one request from outside (more than a forward).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);
/// How often a terminate whose job's worker does not answer is tried again.
const PURSUIT_EVERY: Duration = Duration::from_millis(500);
/// How long such a terminate is pursued.
const PURSUIT_LIMIT: Duration = Duration::from_secs(120);
/// Times a terminate for a job whose worker went is tried on its record.
const RECORD_STOP_ATTEMPTS: usize = 3;
/// Most control requests answered at once; more wait in the subscriptions.
const MAX_ANSWERS_IN_FLIGHT: usize = 256;

/// A request this module refuses, with the service error code it replies with.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    BadTerminate(#[from] InvalidTerminate),
    #[error("no job {0} is known")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    fn kind(&self) -> (&'static str, u16) {
        match self {
            ControlError::BadRequest(_) | ControlError::BadTerminate(_) => ("bad_request", 400),
            ControlError::NotFound(_) => ("not_found", 404),
            ControlError::Store(_) | ControlError::Unavailable(_) => ("unavailable", 503),
        }
    }

    fn refused(&self) -> Refused {
        let (error, code) = self.kind();
        Refused {
            error,
            code,
            message: self.to_string(),
        }
    }
}

/// The subscriptions control requests arrive on.
pub struct ControlSubscriptions {
    status: Endpoint,
    terminate: Endpoint,
    forwarded: Endpoint,
}

impl ControlSubscriptions {
    /// Subscribes. Subscriptions reach the server asynchronously; the worker
    /// subscribes before its JetStream set-up calls, whose replies prove the server
    /// has processed the subscriptions, so it answers requests once it is ready.
    ///
    /// # Errors
    /// The [`ServiceError`] when an endpoint cannot be opened.
    pub async fn subscribe(
        service: &Registration,
        subjects: &Subjects,
        worker_id: &str,
    ) -> Result<Self, ServiceError> {
        Ok(ControlSubscriptions {
            status: service.shared("status", subjects.all("status")).await?,
            terminate: service
                .shared("terminate", subjects.all("terminate"))
                .await?,
            forwarded: service
                .own(
                    "terminate_forwarded",
                    subjects.worker_terminate_all(worker_id),
                )
                .await?,
        })
    }
}

/// What control needs of its worker.
pub struct Control {
    /// Records tombstones.
    pub author: Arc<Author>,
    /// Where the jobs' records are read.
    pub store: JobStore,
    /// The jobs this worker runs.
    pub registry: Registry,
    /// The connection, for replies and forwards.
    pub client: async_nats::Client,
    /// Subject names.
    pub subjects: Subjects,
    /// This worker's id.
    pub worker_id: String,
    /// The pool's live workers.
    pub members: Members,
}

/// Answers control requests until `stop` is cancelled.
pub async fn run(
    control: Arc<Control>,
    mut subs: ControlSubscriptions,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let status_head = format!("{}.status", control.subjects.prefix());
    let terminate_head = format!("{}.terminate", control.subjects.prefix());
    let forwarded_head = format!(
        "{}.worker.{}.terminate",
        control.subjects.prefix(),
        control.worker_id
    );
    let in_flight = Arc::new(Semaphore::new(MAX_ANSWERS_IN_FLIGHT));
    loop {
        let Some(permit) = reply::place(&in_flight, &stop).await else {
            break;
        };
        let (request, kind) = tokio::select! {
            () = stop.cancelled() => break,
            Some(m) = subs.status.next() => (m, Request::Status),
            Some(m) = subs.terminate.next() => (m, Request::Terminate),
            Some(m) = subs.forwarded.next() => (m, Request::Forwarded),
            else => break,
        };
        let head = match kind {
            Request::Status => &status_head,
            Request::Terminate => &terminate_head,
            Request::Forwarded => &forwarded_head,
        };
        let job_id = Subjects::job_id_after(&request.message.subject, head).map(str::to_owned);
        let control = control.clone();
        tracker.spawn(async move {
            answer(&control, request, kind, job_id).await;
            drop(permit);
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Status,
    Terminate,
    Forwarded,
}

async fn answer(
    control: &Arc<Control>,
    request: ServiceRequest,
    kind: Request,
    job_id: Option<String>,
) {
    let message = &request.message;
    let work = async {
        let job_id =
            job_id.ok_or_else(|| ControlError::BadRequest("the subject names no job".into()))?;
        let job_id = JobId::new(job_id).map_err(|e| ControlError::BadRequest(e.to_string()))?;
        match kind {
            Request::Status => status(control, &job_id).await.map(|r| to_json(&r)),
            Request::Terminate | Request::Forwarded => {
                let request = TerminateRequest::decode(&message.payload)?;
                let grace = Duration::from_secs(request.grace_s());
                let reply = match kind {
                    Request::Forwarded => terminate_owned(control, &job_id, grace).await?,
                    _ => terminate(control, &job_id, &message.payload, grace).await?,
                };
                Ok(to_json(&reply))
            }
        }
    };
    // Store calls retry while JetStream is away; the requester has long given up
    // by then, so the answer is bounded too (a forwarded one within the time its
    // forwarder waits).
    let limit = match kind {
        Request::Forwarded => FORWARDED_ANSWER_TIMEOUT,
        Request::Status | Request::Terminate => ANSWER_TIMEOUT,
    };
    let result = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(ControlError::Unavailable(format!(
            "no answer from the job store within {limit:?}"
        )))
    });
    // `nats pub` sends no reply subject: the request is acted on all the same.
    if message.reply.is_none() {
        if let Err(e) = result {
            tracing::warn!(subject = %message.subject, error = %error_chain(&e), "control request without a reply subject failed");
        }
        return;
    }
    let answer = result.map_err(|e| e.refused());
    if let Err(e) = reply::send(&request, answer).await {
        tracing::warn!(error = %error_chain(&e), "could not send a control reply");
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types always serialize")
}

async fn status(control: &Control, job_id: &JobId) -> Result<JobRecord, ControlError> {
    control
        .store
        .get(job_id.as_str())
        .await?
        .ok_or_else(|| ControlError::NotFound(job_id.to_string()))
}

fn reply(
    job_id: &str,
    accepted: bool,
    state: JobState,
    message: impl Into<String>,
) -> TerminateReply {
    TerminateReply {
        job_id: job_id.to_owned(),
        accepted,
        state,
        message: message.into(),
    }
}

/// The reply to a terminate of a job that ended.
fn already_ended(job_id: &JobId, state: JobState) -> TerminateReply {
    reply(
        job_id.as_str(),
        false,
        state,
        format!("the job has ended already ({state})"),
    )
}

/// A terminate that may concern any job.
async fn terminate(
    control: &Arc<Control>,
    job_id: &JobId,
    body: &[u8],
    grace: Duration,
) -> Result<TerminateReply, ControlError> {
    // The record, not the registry, says who owns the job: a worker registers a job
    // before it tries to claim it, and a duplicate delivery that loses the claim
    // must not swallow the terminate meant for the real owner.
    let record = match control.store.get(job_id.as_str()).await? {
        Some(record) => record,
        None => {
            match control.author.tombstone(job_id).await? {
                Tombstoned::Recorded => {
                    tracing::info!(%job_id, "terminate for an unknown job recorded as a tombstone");
                    return Ok(reply(
                        job_id.as_str(),
                        true,
                        JobState::Terminated,
                        "the job has not been launched yet: the terminate is recorded, and its launch will end in terminated without starting anything",
                    ));
                }
                // The launch won the race: deal with the job as it is now.
                Tombstoned::Found(record) => *record,
            }
        }
    };
    if record.tombstone {
        return Ok(reply(
            job_id.as_str(),
            true,
            record.state,
            "a terminate for this job is recorded already; its launch will end in terminated",
        ));
    }
    if record.state.is_terminal() {
        return Ok(already_ended(job_id, record.state));
    }
    if record.worker == control.worker_id {
        return terminate_owned(control, job_id, grace).await;
    }
    if !owner_lives(control, &record.worker).await {
        return record_stop(control, job_id, body).await;
    }
    if let Some(answered) = forward(control, &record, body).await? {
        return Ok(answered);
    }
    if !owner_lives(control, &record.worker).await {
        // The owner went while the terminate was on its way.
        return record_stop(control, job_id, body).await;
    }
    // The owner holds its lease but does not answer: it is gone from NATS (dead,
    // its lease not lapsed yet, or cut off). The terminate is pursued until it
    // answers or the pool takes the job over from it.
    let pursuit = Pursuit {
        control: control.clone(),
        job_id: job_id.clone(),
        body: body.to_vec(),
    };
    tokio::spawn(pursuit.run());
    Ok(reply(
        job_id.as_str(),
        true,
        record.state,
        format!(
            "the job's worker {} does not answer: the terminate is kept until it answers or another worker takes the job over, and is carried out then",
            record.worker
        ),
    ))
}

/// A terminate for a job whose owner holds its lease but does not answer.
struct Pursuit {
    control: Arc<Control>,
    job_id: JobId,
    body: Vec<u8>,
}

impl Pursuit {
    /// Forwards the terminate again, or writes it into the record once the
    /// owner's lease is gone, until one of them is done or
    /// [`PURSUIT_LIMIT`] has passed.
    async fn run(self) {
        let control = &self.control;
        let pursued = async {
            loop {
                tokio::time::sleep(PURSUIT_EVERY).await;
                let record = match control.store.get(self.job_id.as_str()).await {
                    Ok(Some(record)) if !record.state.is_terminal() => record,
                    // Ended (or gone): nothing left to stop.
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(job_id = %self.job_id, error = %error_chain(&e), "cannot read the record of a job whose terminate is pursued");
                        continue;
                    }
                };
                let done = if record.worker == control.worker_id {
                    terminate_owned(control, &self.job_id, terminate_grace(&self.body))
                        .await
                        .is_ok()
                } else if !owner_lives(control, &record.worker).await {
                    record_stop(control, &self.job_id, &self.body).await.is_ok()
                } else {
                    matches!(forward(control, &record, &self.body).await, Ok(Some(_)))
                };
                if done {
                    tracing::info!(job_id = %self.job_id, "a pursued terminate reached the job");
                    return;
                }
            }
        };
        if tokio::time::timeout(PURSUIT_LIMIT, pursued).await.is_err() {
            tracing::error!(job_id = %self.job_id, "a terminate could not reach its job within {PURSUIT_LIMIT:?}; given up");
        }
    }
}

/// The grace a terminate body asks for (the default when it is unreadable:
/// it was read once already).
fn terminate_grace(body: &[u8]) -> Duration {
    Duration::from_secs(
        TerminateRequest::decode(body)
            .map(|request| request.grace_s())
            .unwrap_or(DEFAULT_GRACE_S),
    )
}

/// Whether `worker` holds its lease; when that cannot be told, it is taken to
/// live (the terminate is forwarded to it).
async fn owner_lives(control: &Control, worker: &str) -> bool {
    control.members.is_live(worker).await.unwrap_or_else(|e| {
        tracing::warn!(%worker, error = %error_chain(&e), "cannot tell whether a job's worker lives");
        true
    })
}

/// Hands a terminate to the job's owner and relays its reply; `None` when the
/// owner does not answer (no responders, or not in time).
async fn forward(
    control: &Control,
    record: &JobRecord,
    body: &[u8],
) -> Result<Option<TerminateReply>, ControlError> {
    let subject = control
        .subjects
        .worker_terminate(&record.worker, &record.job_id);
    let request = control.client.request(subject, body.to_vec().into());
    match tokio::time::timeout(FORWARD_TIMEOUT, request).await {
        Ok(Ok(answer)) => relay(record, &answer.payload).map(Some),
        Ok(Err(e)) => {
            tracing::warn!(owner = %record.worker, error = %error_chain(&e), "a job's worker is not reachable");
            Ok(None)
        }
        Err(_) => {
            tracing::warn!(owner = %record.worker, "a job's worker did not answer within {FORWARD_TIMEOUT:?}");
            Ok(None)
        }
    }
}

/// The owner's answer to a forwarded terminate, as this worker's own: its reply,
/// or its error reply as the same kind of error.
fn relay(record: &JobRecord, payload: &[u8]) -> Result<TerminateReply, ControlError> {
    let owner = &record.worker;
    if let Ok(reply) = serde_json::from_slice::<TerminateReply>(payload) {
        return Ok(reply);
    }
    match serde_json::from_slice::<ErrorReply>(payload) {
        Ok(error) => Err(match error.error.as_str() {
            "bad_request" => ControlError::BadRequest(error.message),
            "not_found" => ControlError::NotFound(record.job_id.clone()),
            _ => ControlError::Unavailable(format!("owner {owner}: {}", error.message)),
        }),
        Err(e) => Err(ControlError::Unavailable(format!(
            "owner {owner} sent an unreadable reply: {e}"
        ))),
    }
}

/// A terminate for a job this worker owns (or owned). Its state is read before
/// the job's task is told, so a stop that ends the job at once is still
/// reported as accepted.
async fn terminate_owned(
    control: &Control,
    job_id: &JobId,
    grace: Duration,
) -> Result<TerminateReply, ControlError> {
    let record = status(control, job_id).await?;
    let state = record.state;
    if state.is_terminal() {
        return Ok(already_ended(job_id, state));
    }
    let sent = match control.registry.get(job_id.as_str()) {
        Some(commands) => commands.send(JobCommand::Terminate { grace }).await.is_ok(),
        None => false,
    };
    if sent {
        return Ok(reply(
            job_id.as_str(),
            true,
            state,
            format!(
                "stopping the job: polite stop now, kill after {} s",
                grace.as_secs()
            ),
        ));
    }
    if record.worker == control.worker_id && !record.tombstone {
        // Its task is gone (it was handed over as this worker leaves): the
        // worker that takes the job over carries the stop out.
        return record_stop(control, job_id, &[]).await;
    }
    Ok(reply(
        job_id.as_str(),
        false,
        state,
        format!("the job is not running on this worker ({state})"),
    ))
}

/// Records a terminate in the record of a job whose worker went (or is handing
/// it over), by compare-and-set: the worker that takes the job over stops its
/// workload first thing. Tried again while the record changes under it.
async fn record_stop(
    control: &Control,
    job_id: &JobId,
    body: &[u8],
) -> Result<TerminateReply, ControlError> {
    for _ in 0..RECORD_STOP_ATTEMPTS {
        let Some(mut story) = control.author.open(job_id).await? else {
            return Err(ControlError::NotFound(job_id.to_string()));
        };
        let (state, owner) = (story.record().state, story.record().worker.clone());
        if state.is_terminal() {
            return Ok(already_ended(job_id, state));
        }
        if owner != control.worker_id && owner_lives(control, &owner).await {
            // Taken over meanwhile: its new worker stops it.
            let record = story.record().clone();
            if let Some(answered) = forward(control, &record, body).await? {
                return Ok(answered);
            }
            continue;
        }
        if story.record().stop_reason.is_some() {
            return Ok(reply(
                job_id.as_str(),
                true,
                state,
                "a stop is recorded for the job already; it is carried out by the worker that follows it",
            ));
        }
        if story
            .record_stop(crate::protocol::reason::TERMINATE_REQUESTED)
            .await
            .is_ok()
        {
            tracing::info!(%job_id, %owner, "terminate recorded for a job whose worker went; the worker that takes it over stops it");
            return Ok(reply(
                job_id.as_str(),
                true,
                state,
                format!(
                    "the job's worker {owner} went: the stop is recorded, and the worker that takes the job over stops it"
                ),
            ));
        }
    }
    Err(ControlError::Unavailable(format!(
        "the record of job {job_id} kept changing; try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::story::fresh_record;

    #[test]
    fn error_replies_have_one_line_bounded_headers() {
        let refused =
            ControlError::BadRequest(format!("unknown field `a\r\nb{}`", "c".repeat(100_000)));
        let (headers, body) = reply::error_reply(&refused.refused());
        let header = headers.get("Nats-Service-Error").unwrap().as_str();
        assert!(!header.contains(['\r', '\n']), "{header}");
        assert!(header.starts_with("unknown field `a\\r\\nb"), "{header}");
        assert!(header.len() <= crate::protocol::bounded::MAX_TEXT);
        let reply: ErrorReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply.error, "bad_request");
        assert!(reply.message.starts_with("unknown field `a\r\nb"));
        assert!(reply.message.len() <= crate::protocol::bounded::MAX_TEXT);
    }

    #[test]
    fn an_owners_reply_or_error_reply_is_relayed_as_its_own_kind() {
        let record = fresh_record(&JobId::new("j1").unwrap(), "owner", JobState::Running);
        let accepted = reply("j1", true, JobState::Running, "stopping");
        assert_eq!(relay(&record, &to_json(&accepted)).unwrap(), accepted);
        let refused = ErrorReply {
            error: "bad_request".into(),
            message: "invalid terminate request".into(),
        };
        assert!(matches!(
            relay(&record, &to_json(&refused)),
            Err(ControlError::BadRequest(m)) if m == "invalid terminate request"
        ));
        let gone = ErrorReply {
            error: "not_found".into(),
            message: "whatever".into(),
        };
        assert!(matches!(
            relay(&record, &to_json(&gone)),
            Err(ControlError::NotFound(id)) if id == "j1"
        ));
        assert!(matches!(
            relay(&record, b"{oops"),
            Err(ControlError::Unavailable(m)) if m.contains("owner")
        ));
    }
}
