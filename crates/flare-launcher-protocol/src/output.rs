//! A job's output read from its owner, one bounded chunk per request: the
//! request a reader sends on `P.worker.WORKER.logs` and the chunk the worker
//! answers with.

use crate::{JobId, JobIdError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bytes of output a chunk carries when the request names no `max_bytes`.
pub const DEFAULT_OUTPUT_CHUNK: u64 = 64 * 1024;
/// Most bytes of output one chunk carries, whatever the request asks: in base64
/// well under the 1 MiB nats-server allows a message by default.
pub const MAX_OUTPUT_CHUNK: u64 = 256 * 1024;
/// Longest time a worker holds a request for output that is not there yet.
pub const MAX_OUTPUT_WAIT_MS: u64 = 10_000;
/// Longest output request a worker reads.
pub const MAX_OUTPUT_REQUEST_BYTES: usize = 4096;

/// A request for a chunk of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    /// The job.
    pub job_id: String,
    /// The byte of the output to start at (0 by default).
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to return (65536 by default; more than 262144 is read as
    /// 262144; 0 returns no bytes, only the output's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// How long the worker may hold the request while there is nothing new to
    /// return and the job runs, in milliseconds (0 by default, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Why an output request is refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidOutputRequest {
    /// Longer than [`MAX_OUTPUT_REQUEST_BYTES`].
    #[error(
        "an output request may have at most {MAX_OUTPUT_REQUEST_BYTES} bytes, this one has {0}"
    )]
    TooLarge(usize),
    /// Not a request.
    #[error("invalid output request: {0}")]
    Json(#[source] serde_json::Error),
    /// The job id breaks a rule.
    #[error("invalid output request: {0}")]
    JobId(#[source] JobIdError),
    /// `wait_ms` is over its limit.
    #[error("invalid output request: wait_ms may be at most {MAX_OUTPUT_WAIT_MS}, not {0}")]
    Wait(u64),
}

impl OutputRequest {
    /// Decodes and checks a request; returns it with its job id.
    ///
    /// # Errors
    /// An [`InvalidOutputRequest`] saying which rule it breaks.
    pub fn decode(payload: &[u8]) -> Result<(OutputRequest, JobId), InvalidOutputRequest> {
        if payload.len() > MAX_OUTPUT_REQUEST_BYTES {
            return Err(InvalidOutputRequest::TooLarge(payload.len()));
        }
        let request: OutputRequest =
            serde_json::from_slice(payload).map_err(InvalidOutputRequest::Json)?;
        let job_id = JobId::new(request.job_id.clone()).map_err(InvalidOutputRequest::JobId)?;
        if let Some(wait) = request.wait_ms.filter(|&wait| wait > MAX_OUTPUT_WAIT_MS) {
            return Err(InvalidOutputRequest::Wait(wait));
        }
        Ok((request, job_id))
    }

    /// `max_bytes`, defaulted and capped.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
            .unwrap_or(DEFAULT_OUTPUT_CHUNK)
            .min(MAX_OUTPUT_CHUNK)
    }

    /// `wait_ms`, defaulted.
    pub fn wait_ms(&self) -> u64 {
        self.wait_ms.unwrap_or(0)
    }
}

/// A chunk of a job's output: the reply to an [`OutputRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputChunk {
    /// The job.
    pub job_id: String,
    /// The worker that answered (the job's owner).
    pub worker: String,
    /// The byte of the output `data` starts at (the request's offset).
    pub offset: u64,
    /// The offset to ask for next: `offset` plus the bytes in `data`.
    pub next_offset: u64,
    /// How many bytes of output the worker holds now.
    pub size: u64,
    /// The bytes, base64-encoded (standard alphabet, padded).
    pub data: String,
    /// Whether the output is complete: the job ended and `next_offset` is its
    /// end. Nothing more will come.
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_defaulted() {
        let (request, job_id) = OutputRequest::decode(br#"{"job_id":"j1"}"#).unwrap();
        assert_eq!(job_id.as_str(), "j1");
        assert_eq!(
            (request.offset, request.max_bytes(), request.wait_ms()),
            (0, 65536, 0)
        );
        let (big, _) = OutputRequest::decode(br#"{"job_id":"j1","max_bytes":99999999}"#).unwrap();
        assert_eq!(big.max_bytes(), MAX_OUTPUT_CHUNK);
        for bad in [
            &br#"{"job_id":"j1","offset":-1}"#[..],
            br#"{"job_id":"../etc/passwd"}"#,
            br#"{"job_id":"j1","wait_ms":10001}"#,
            br#"{"job_id":"j1","tail":3}"#,
            b"not json",
        ] {
            assert!(
                OutputRequest::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = format!(r#"{{"job_id":"j1","x":"{}"}}"#, "a".repeat(5000));
        assert!(matches!(
            OutputRequest::decode(huge.as_bytes()),
            Err(InvalidOutputRequest::TooLarge(_))
        ));
    }
}
