//! What workers send (job events, job records, terminate replies, reports of
//! unusable requests, error replies) and the terminate request they answer.

use super::bounded::{bounded, lossy_prefix};
use super::secret_excerpt::without_secrets;
use super::{
    BackendKind, DEFAULT_GRACE_S, DurationOutOfRange, MAX_ECHOED_PAYLOAD, PROTOCOL_VERSION,
    check_duration, timestamp_now,
};
use crate::state::JobState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names the workload a job runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BackendRef {
    /// A local process (the leader of its own process group).
    Process {
        /// Its process id.
        pid: u32,
    },
    /// A Docker container.
    Docker {
        /// The container's id.
        container_id: String,
        /// The container's name.
        name: String,
    },
    /// A Kubernetes pod.
    K8s {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's uid.
        uid: String,
    },
}

/// A GPU given to a job by its worker's `gpu` resource policy.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct AssignedGpu {
    /// Its index on the host, as `nvidia-smi` counts them.
    pub index: u32,
    /// Its UUID (`GPU-...`), when the worker's inventory knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// A state change of a job, published on `P.events.JOB_ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend(
    "if" = {"properties": {"state": {"enum": ["starting", "running"]}}},
    "then" = {"properties": {"return_code": {"type": "null"}}},
    "else" = {"properties": {"return_code": {"type": "integer"}}}
))]
pub struct JobEvent {
    /// Protocol version, 1.
    #[schemars(extend("const" = PROTOCOL_VERSION))]
    pub v: u32,
    /// The job.
    pub job_id: String,
    /// Per-job sequence number, from 1, gap-free.
    #[schemars(range(min = 1))]
    pub seq: u64,
    /// The state entered.
    pub state: JobState,
    /// NVFlare return code; non-null exactly when `state` is terminal.
    pub return_code: Option<i32>,
    /// Raw exit code of the workload, when known.
    pub exit_code: Option<i32>,
    /// Machine-readable cause.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Id of the worker that published the event.
    pub worker: String,
    /// Where the job runs.
    pub backend: BackendKind,
    /// RFC 3339 UTC time of the change.
    #[schemars(extend("format" = "date-time"))]
    pub ts: String,
    /// The GPUs the job was given, when its worker accounts for GPUs (an
    /// addition; empty: none); absent under the `best-effort` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<AssignedGpu>>,
}

/// Why a terminate body was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidTerminate {
    /// The body is neither empty nor a terminate request; the message is
    /// bounded, as the JSON error may name an unknown field of the body.
    #[error("{}", bounded(&format!("invalid terminate request: {}", .0)))]
    Json(#[source] serde_json::Error),
    /// `grace_s` is out of range.
    #[error("invalid terminate request: {0}")]
    Grace(#[source] DurationOutOfRange),
}

/// The body of a terminate request; an empty body means all defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    /// Seconds between the polite stop and the kill (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<u64>,
}

impl TerminateRequest {
    /// Decodes a terminate body; empty (or whitespace) means defaults.
    ///
    /// # Errors
    /// An [`InvalidTerminate`] for a body that is neither empty nor a valid
    /// request, or that breaks a rule.
    pub fn decode(payload: &[u8]) -> Result<Self, InvalidTerminate> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(TerminateRequest::default());
        }
        let request: TerminateRequest =
            serde_json::from_slice(payload).map_err(InvalidTerminate::Json)?;
        check_duration("grace_s", request.grace_s, 0).map_err(InvalidTerminate::Grace)?;
        Ok(request)
    }

    /// `grace_s`, defaulted.
    pub fn grace_s(&self) -> u64 {
        self.grace_s.unwrap_or(DEFAULT_GRACE_S)
    }
}

/// The reply to a terminate request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminateReply {
    /// The job.
    pub job_id: String,
    /// Whether the terminate was taken on (recorded or acted on).
    pub accepted: bool,
    /// The job's state when the reply was sent.
    pub state: JobState,
    /// What happened.
    pub message: String,
}

/// What a worker knows about a job: the reply to `P.status.JOB_ID`, and the value
/// stored for the job in the `flare_jobs` bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRecord {
    /// The job.
    pub job_id: String,
    /// Its current state.
    pub state: JobState,
    /// NVFlare return code, once terminal.
    pub return_code: Option<i32>,
    /// Raw exit code, when known.
    pub exit_code: Option<i32>,
    /// Machine-readable cause of the last change.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// The worker that owns the job (or recorded its tombstone).
    pub worker: String,
    /// Where the job runs, named from the job's first record (its claim) on;
    /// null only for a tombstone whose launch has not come yet.
    pub backend: Option<BackendKind>,
    /// The job's FL site.
    pub site: Option<String>,
    /// Sequence number of the last event published; 0 for a tombstone.
    pub seq: u64,
    /// RFC 3339 UTC time the record was created.
    #[schemars(extend("format" = "date-time"))]
    pub created: String,
    /// RFC 3339 UTC time of the last change.
    #[schemars(extend("format" = "date-time"))]
    pub updated: String,
    /// The workload, once it exists.
    pub backend_ref: Option<BackendRef>,
    /// The worker pool the job was launched in (an addition to the protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// True while the record is only a terminate that came before its launch (an
    /// addition to the protocol).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
    /// RFC 3339 UTC time when the job's `run_s` runs out, set when it starts
    /// running (an addition: what a restarted worker needs to keep the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub run_deadline: Option<String>,
    /// The reason of a stop under way (`TerminateRequested`, `RunTimeout`,
    /// `WorkerShutdown`), set when the worker asked the workload to stop (an
    /// addition: what a restarted worker needs to report the end rightly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The GPUs the job was given, when its worker accounts for GPUs (an
    /// addition: what a restarted worker needs so as not to give them again;
    /// empty: none); absent under the `best-effort` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<AssignedGpu>>,
}

impl JobRecord {
    /// The event announcing the record's current state; none for a record that
    /// names no backend (a tombstone, which announces nothing).
    pub fn event(&self) -> Option<JobEvent> {
        Some(JobEvent {
            v: PROTOCOL_VERSION,
            job_id: self.job_id.clone(),
            seq: self.seq,
            state: self.state,
            return_code: self.return_code,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            worker: self.worker.clone(),
            backend: self.backend?,
            ts: self.updated.clone(),
            gpus: self.gpus.clone(),
        })
    }
}

/// One GPU of a worker and the job holding it, in a [`ResourceStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GpuStatus {
    /// Its index on the host.
    pub index: u32,
    /// Its UUID, when the worker's inventory knows it.
    pub uuid: Option<String>,
    /// Its memory in MiB, when known.
    pub memory_mb: Option<u64>,
    /// The job it is allocated to; null: free.
    pub job_id: Option<String>,
}

/// A worker's resources: the reply to `P.worker.WORKER.resources` (an addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceStatus {
    /// The worker.
    pub worker: String,
    /// Its pool.
    pub pool: String,
    /// Its resource policy: `best-effort` (no accounting, no inventory) or `gpu`.
    pub policy: String,
    /// Whether the inventory was taken as given, without looking at the host.
    pub ignore_host: bool,
    /// The inventory, each GPU with the job holding it.
    pub gpus: Vec<GpuStatus>,
    /// The indices of the GPUs no job holds.
    pub free: Vec<u32>,
    /// The indices of the GPUs each job holds, by job id.
    pub allocations: std::collections::BTreeMap<String, Vec<u32>>,
}

/// A live worker's lease: the value of its key in the `flare_workers` bucket (an
/// addition), refreshed well within its TTL while the worker lives, removed
/// when it hands its jobs over, and gone when it lapses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerLease {
    /// The worker's id.
    pub worker: String,
    /// The host it runs on.
    pub host: String,
    /// Its pool.
    pub pool: String,
    /// The backends it runs jobs on.
    pub backends: Vec<BackendKind>,
    /// Most jobs it runs at once.
    pub capacity: u64,
    /// Jobs it runs now.
    pub running: u64,
    /// Its program's version.
    pub version: String,
    /// RFC 3339 UTC time it started.
    #[schemars(extend("format" = "date-time"))]
    pub started: String,
    /// How long the lease lives unless refreshed, in seconds.
    pub lease_s: u64,
    /// Tells this run of the worker from another with the same id.
    pub instance: String,
}

/// Reported on `P.invalid` for a launch payload without a usable `job_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvalidRequest {
    /// Protocol version, 1.
    #[schemars(extend("const" = PROTOCOL_VERSION))]
    pub v: u32,
    /// What is wrong with the payload.
    pub error: String,
    /// The raw payload, cut at 4 KiB, without the values of its `secret_env`
    /// (each shown as `<secret>`).
    #[schemars(length(max = MAX_ECHOED_PAYLOAD))]
    pub payload: String,
    /// RFC 3339 UTC time it was seen.
    #[schemars(extend("format" = "date-time"))]
    pub ts: String,
}

impl InvalidRequest {
    /// Reports `payload` without its secret values, cut at
    /// [`MAX_ECHOED_PAYLOAD`] bytes (on a character boundary), and `error`,
    /// bounded.
    pub fn new(error: &str, payload: &[u8]) -> Self {
        InvalidRequest {
            v: PROTOCOL_VERSION,
            error: bounded(error),
            payload: lossy_prefix(&without_secrets(payload), MAX_ECHOED_PAYLOAD),
            ts: timestamp_now(),
        }
    }
}

/// An error reply to a request (e.g. status of an unknown job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReply {
    /// Machine-readable kind, e.g. `not_found`.
    pub error: String,
    /// Human-readable detail.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminate_body_may_be_empty() {
        assert_eq!(TerminateRequest::decode(b"").unwrap().grace_s(), 10);
        assert_eq!(TerminateRequest::decode(b" \n").unwrap().grace_s(), 10);
        assert_eq!(
            TerminateRequest::decode(br#"{"grace_s":3}"#)
                .unwrap()
                .grace_s(),
            3
        );
        assert!(TerminateRequest::decode(br#"{"grace":3}"#).is_err());
        assert_eq!(
            TerminateRequest::decode(br#"{"grace_s":0}"#)
                .unwrap()
                .grace_s(),
            0
        );
        let huge = TerminateRequest::decode(br#"{"grace_s":18446744073709551615}"#);
        assert!(
            huge.unwrap_err()
                .to_string()
                .contains("grace_s must be between")
        );
        let long_field = format!(r#"{{"{}":1}}"#, "a".repeat(100_000));
        let error = TerminateRequest::decode(long_field.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.len() <= super::super::bounded::MAX_TEXT,
            "{}",
            error.len()
        );
    }

    #[test]
    fn invalid_request_cuts_the_payload_on_a_char_boundary() {
        let mut payload = vec![b'x'; MAX_ECHOED_PAYLOAD - 1];
        payload.extend_from_slice("é and more".as_bytes());
        let report = InvalidRequest::new("bad", &payload);
        assert_eq!(report.payload.len(), MAX_ECHOED_PAYLOAD - 1);
        let short = InvalidRequest::new("bad", b"{oops");
        assert_eq!(short.payload, "{oops");
    }
}
