//! Reading a job's output from whichever worker owns it: the job's record names
//! the owner, which answers `P.worker.WORKER.logs` a bounded chunk at a time.
//! When the owner does not answer (it went, or handed the job over) or says the
//! job is no longer its own, the record is read again and the new owner asked
//! for the same offset; an owner that stays silent is waited for a while, since
//! the pool adopts a gone worker's containers and pods once its lease lapses.

use super::{Client, ClientError};
use crate::protocol::{OutputChunk, OutputRequest};
use base64::Engine;
use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

/// What a request may take beyond the wait it asks for.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// Pause before asking again after the owner did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a silent owner is waited for (a lease lapses in 10 s by default,
/// and the pool adopts within a few seconds of that).
const OWNER_PATIENCE: Duration = Duration::from_secs(60);

/// A piece of a job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The bytes, from the offset asked for.
    pub data: Bytes,
    /// The offset after them.
    pub next_offset: u64,
    /// The output's size as its owner holds it now.
    pub size: u64,
    /// Whether the job ended and nothing follows `next_offset`.
    pub complete: bool,
    /// The worker that answered.
    pub worker: String,
}

/// Reads one job's output, following it from owner to owner.
pub struct OutputReader<'a> {
    client: &'a Client,
    job_id: String,
    owner: Option<String>,
}

impl<'a> OutputReader<'a> {
    /// A reader of the output of `job_id`.
    pub fn new(client: &'a Client, job_id: impl Into<String>) -> Self {
        OutputReader {
            client,
            job_id: job_id.into(),
            owner: None,
        }
    }

    /// Up to `max_bytes` of the output from `offset`. With `wait` above zero,
    /// the owner holds the request that long while the job runs and nothing
    /// new is there.
    ///
    /// # Errors
    /// [`ClientError::Refused`] when the owner refuses the request (an unknown
    /// job, an offset past the end of an ended job's output), or the error of
    /// the last try when no owner answered within a minute.
    pub async fn read(
        &mut self,
        offset: u64,
        max_bytes: u64,
        wait: Duration,
    ) -> Result<Piece, ClientError> {
        let request = OutputRequest {
            job_id: self.job_id.clone(),
            offset,
            max_bytes: Some(max_bytes),
            wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        };
        let body = Bytes::from(serde_json::to_vec(&request).expect("requests serialize"));
        let patience = Instant::now() + OWNER_PATIENCE;
        loop {
            let owner = match &self.owner {
                Some(owner) => owner.clone(),
                None => self.client.status(&self.job_id).await?.worker,
            };
            let subject = self.client.subjects().worker_logs(&owner);
            let asked = self
                .client
                .request_within::<OutputChunk>(
                    subject.clone(),
                    body.clone(),
                    Some(wait + ANSWER_MARGIN),
                )
                .await;
            match asked {
                Ok(chunk) => {
                    self.owner = Some(owner);
                    return piece(chunk, &subject);
                }
                Err(e) if moved_or_silent(&e) && Instant::now() < patience => {
                    self.owner = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a failed request is worth asking the record again: the owner does
/// not answer, or says the job is no longer its own.
fn moved_or_silent(e: &ClientError) -> bool {
    match e {
        ClientError::NoWorker(_) | ClientError::Request { .. } => true,
        ClientError::Refused(reply) => matches!(reply.error.as_str(), "not_owner" | "unavailable"),
        _ => false,
    }
}

fn piece(chunk: OutputChunk, subject: &str) -> Result<Piece, ClientError> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(&chunk.data)
        .map_err(|e| ClientError::Decode {
            subject: subject.to_owned(),
            message: format!("the output chunk's data is not base64: {e}"),
        })?;
    Ok(Piece {
        data: data.into(),
        next_offset: chunk.next_offset,
        size: chunk.size,
        complete: chunk.complete,
        worker: chunk.worker,
    })
}

/// The offset where the last `lines` lines of the output start (a last line
/// without its newline counts), found by reading back from `size` a chunk at
/// a time.
///
/// # Errors
/// As [`OutputReader::read`].
pub async fn tail_start(
    reader: &mut OutputReader<'_>,
    size: u64,
    lines: u64,
    chunk: u64,
) -> Result<u64, ClientError> {
    let mut end = size;
    let mut found = 0;
    while end > 0 && lines > 0 {
        let start = end.saturating_sub(chunk);
        let piece = reader.read(start, end - start, Duration::ZERO).await?;
        for (at, byte) in piece.data.iter().enumerate().rev() {
            let position = start + at as u64;
            if *byte == b'\n' && position + 1 < size {
                found += 1;
                if found == lines {
                    return Ok(position + 1);
                }
            }
        }
        if piece.data.is_empty() {
            break;
        }
        end = start;
    }
    Ok(if lines == 0 { size } else { 0 })
}
