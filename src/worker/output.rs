//! Jobs' output for readers on any host: a worker answers
//! `P.worker.WORKER.logs` for the jobs whose record names it, one bounded chunk
//! of the job's log file per request.
//!
//! Reads are pulled: nothing is sent that was not asked for, so a reader who
//! stops costs nothing, and a worker holds at most [`MAX_ANSWERS`] chunks at
//! once, whatever the size of the output. A request may ask to be held while
//! its job runs and there is nothing new ([`OutputRequest::wait_ms`]); at most
//! [`MAX_WAITERS`] are held at once, each looking at the file's size a few
//! times a second, and others are answered at once with what there is. Every
//! log a worker writes is appended to, never rewritten, so an offset means the
//! same byte in every answer about a job.

use super::reply::{self, Refused};
use super::service::{Registration, ServiceError};
use crate::job_logs;
use crate::nats::subjects::Subjects;
use crate::protocol::{InvalidOutputRequest, JobId, OutputChunk, OutputRequest};
use crate::report::error_chain;
use crate::store::{JobStore, StoreError};
use async_nats::service::Request;
use async_nats::service::endpoint::Endpoint;
use base64::Engine;
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most requests answered at once; more wait in the subscription.
const MAX_ANSWERS: usize = 16;
/// Most requests held at once for output that is not there yet.
const MAX_WAITERS: usize = 12;
/// How often a held request looks at the log's size.
const GROWTH_POLL: Duration = Duration::from_millis(200);
/// How often a held request reads the job's record again (for its end, or a
/// new owner).
const RECORD_RECHECK: Duration = Duration::from_secs(1);
/// Room a chunk's reply keeps for its fields other than the data.
const REPLY_OVERHEAD: u64 = 2048;
/// Longest time spent on one answer besides the wait the request asked for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// A request this module refuses, with the service error code it replies with.
#[derive(Debug, thiserror::Error)]
enum OutputError {
    #[error(transparent)]
    BadRequest(#[from] InvalidOutputRequest),
    #[error(
        "offset {offset} is beyond the end of the output of the ended job {job_id} ({size} bytes)"
    )]
    BeyondEnd {
        job_id: JobId,
        offset: u64,
        size: u64,
    },
    #[error("no job {0} is known")]
    NotFound(JobId),
    #[error("job {job_id} is not this worker's: its record names worker {owner}")]
    NotOwner { job_id: JobId, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the log of job {job_id}: {source}")]
    Log {
        job_id: JobId,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl OutputError {
    fn kind(&self) -> (&'static str, u16) {
        match self {
            OutputError::BadRequest(_) | OutputError::BeyondEnd { .. } => ("bad_request", 400),
            OutputError::NotFound(_) => ("not_found", 404),
            OutputError::NotOwner { .. } => ("not_owner", 409),
            OutputError::Store(_) | OutputError::Log { .. } | OutputError::Timeout(_) => {
                ("unavailable", 503)
            }
        }
    }

    fn refused(&self) -> Refused {
        let (error, code) = self.kind();
        Refused {
            error,
            code,
            message: error_chain(self),
        }
    }
}

/// Opens this worker's output endpoint, `logs` (before the worker's set-up
/// calls, like the control endpoints).
///
/// # Errors
/// The [`ServiceError`] when the endpoint cannot be opened.
pub async fn subscribe(
    service: &Registration,
    subjects: &Subjects,
    worker_id: &str,
) -> Result<Endpoint, ServiceError> {
    service.own("logs", subjects.worker_logs(worker_id)).await
}

/// What the answers need of their worker.
pub struct OutputAnswers {
    /// Where the jobs' records are read.
    pub store: JobStore,
    /// The connection, for replies.
    pub client: async_nats::Client,
    /// This worker's id.
    pub worker_id: String,
    /// Where this worker's jobs' logs are.
    pub log_dir: PathBuf,
}

/// Answers output requests until `stop` is cancelled.
pub async fn run(
    answers: OutputAnswers,
    mut requests: Endpoint,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let answers = Arc::new(Answering {
        answers,
        waiters: Semaphore::new(MAX_WAITERS),
        leaving: stop.clone(),
    });
    let in_flight = Arc::new(Semaphore::new(MAX_ANSWERS));
    loop {
        let Some(permit) = reply::place(&in_flight, &stop).await else {
            break;
        };
        let message = tokio::select! {
            () = stop.cancelled() => break,
            Some(message) = requests.next() => message,
            else => break,
        };
        let answers = answers.clone();
        tracker.spawn(async move {
            answer(&answers, message).await;
            drop(permit);
        });
    }
}

/// The answers' shared state.
struct Answering {
    answers: OutputAnswers,
    /// Places for requests held for output that is not there yet.
    waiters: Semaphore,
    /// Cancelled as the worker leaves: held requests are answered at once.
    leaving: CancellationToken,
}

async fn answer(answering: &Answering, asked: Request) {
    let message = &asked.message;
    // Nobody to answer: nothing is read.
    if message.reply.is_none() {
        return;
    }
    let result = match OutputRequest::decode(&message.payload) {
        Ok((request, job_id)) => {
            let limit = ANSWER_TIMEOUT + Duration::from_millis(request.wait_ms());
            tokio::time::timeout(limit, chunk(answering, &request, job_id))
                .await
                .unwrap_or(Err(OutputError::Timeout(limit)))
        }
        Err(e) => Err(e.into()),
    };
    let answer = result
        .map(|chunk| serde_json::to_vec(&chunk).expect("an output chunk always serializes"))
        .map_err(|e| e.refused());
    if let Err(e) = reply::send(&asked, answer).await {
        tracing::warn!(error = %error_chain(&e), "could not answer an output request");
    }
}

/// The chunk a request asks for; held while its job runs and there is nothing
/// new, for as long as it asked and a waiter's place is free.
async fn chunk(
    answering: &Answering,
    request: &OutputRequest,
    job_id: JobId,
) -> Result<OutputChunk, OutputError> {
    let answers = &answering.answers;
    let deadline = Instant::now() + Duration::from_millis(request.wait_ms());
    let max_bytes = request.max_bytes().min(fitting(&answers.client));
    let mut waiting = None;
    loop {
        let record = answers
            .store
            .get(job_id.as_str())
            .await?
            .ok_or_else(|| OutputError::NotFound(job_id.clone()))?;
        if record.worker != answers.worker_id {
            return Err(OutputError::NotOwner {
                job_id,
                owner: record.worker,
            });
        }
        // The record is read before the log: the log of an ended job is whole.
        let ended = record.state.is_terminal();
        let log = job_logs::find(&answers.log_dir, job_id.as_str()).map_err(|source| {
            OutputError::Log {
                job_id: job_id.clone(),
                source,
            }
        })?;
        let (data, size) = match &log {
            Some(path) => read_at(path, request.offset, max_bytes)
                .await
                .map_err(|source| OutputError::Log {
                    job_id: job_id.clone(),
                    source,
                })?,
            None => (Vec::new(), 0),
        };
        if ended && request.offset > size {
            return Err(OutputError::BeyondEnd {
                job_id,
                offset: request.offset,
                size,
            });
        }
        let next_offset = request.offset + data.len() as u64;
        let complete = ended && next_offset >= size;
        let done = !data.is_empty() || complete || max_bytes == 0;
        let may_wait = Instant::now() < deadline
            && !answering.leaving.is_cancelled()
            && (waiting.is_some() || {
                waiting = answering.waiters.try_acquire().ok();
                waiting.is_some()
            });
        if done || !may_wait {
            return Ok(OutputChunk {
                job_id: job_id.to_string(),
                worker: answers.worker_id.clone(),
                offset: request.offset,
                next_offset,
                size,
                data: base64::engine::general_purpose::STANDARD.encode(&data),
                complete,
            });
        }
        let until = deadline.min(Instant::now() + RECORD_RECHECK);
        tokio::select! {
            () = wait_for_growth(log, &answers.log_dir, &job_id, request.offset, until) => {}
            () = answering.leaving.cancelled() => {}
        }
    }
}

/// Most bytes of output a reply may carry on this connection: in base64, with
/// the reply's other fields, within the server's maximum payload.
fn fitting(client: &async_nats::Client) -> u64 {
    let max_payload = u64::try_from(client.server_info().max_payload).unwrap_or(u64::MAX);
    max_payload.saturating_sub(REPLY_OVERHEAD) / 4 * 3
}

/// Up to `max` bytes of the file at `path` from `offset`, and the file's size.
async fn read_at(path: &PathBuf, offset: u64, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    if offset >= size || max == 0 {
        return Ok((Vec::new(), size));
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let wanted = max.min(size - offset);
    let mut data = Vec::with_capacity(usize::try_from(wanted).unwrap_or(0));
    file.take(wanted).read_to_end(&mut data).await?;
    Ok((data, size))
}

/// Returns once the job's log holds more than `offset` bytes, or at `until`.
async fn wait_for_growth(
    mut log: Option<PathBuf>,
    log_dir: &std::path::Path,
    job_id: &JobId,
    offset: u64,
    until: Instant,
) {
    while Instant::now() < until {
        tokio::time::sleep(GROWTH_POLL.min(until - Instant::now())).await;
        if log.is_none() {
            log = job_logs::find(log_dir, job_id.as_str()).ok().flatten();
        }
        let size = match &log {
            Some(path) => tokio::fs::metadata(path).await.map_or(0, |m| m.len()),
            None => 0,
        };
        if size > offset {
            return;
        }
    }
}
