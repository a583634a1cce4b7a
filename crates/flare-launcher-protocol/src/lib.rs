//! The wire protocol of flare-launcher (docs/protocol.md, version 1) as Rust
//! types: what an FL engine sends to flare-launcher workers over NATS, what the
//! workers send back, the job state machine with NVFlare's return codes, and the
//! JSON Schemas of every message. It stands on its own: an engine written in Rust
//! depends on this crate, not on the worker, and needs no async runtime for it.
//!
//! An engine publishes a [`LaunchRequest`] on `P.launch.POOL` (`P` is the subject
//! prefix, `flare.jobs` by default), then follows the job's [`JobEvent`]s on
//! `P.events.JOB_ID` until one carries a terminal [`state::JobState`] and its
//! NVFlare `return_code`:
//!
//! ```
//! use flare_launcher_protocol::state::{self, JobState};
//! use flare_launcher_protocol::{BackendKind, JobEvent, LaunchRequest};
//!
//! let mut request = LaunchRequest::new("job-1", vec!["python3".into(), "train.py".into()]);
//! request.backend = Some(BackendKind::Process);
//! request.validate().expect("a valid request");
//! let payload = serde_json::to_vec(&request).unwrap(); // publish on `flare.jobs.launch.POOL`
//! # assert_eq!(flare_launcher_protocol::decode_launch(&payload).unwrap(), request);
//!
//! // Received on `flare.jobs.events.job-1`:
//! let event: JobEvent = serde_json::from_str(r#"{
//!     "v": 1, "job_id": "job-1", "seq": 3, "state": "succeeded", "return_code": 0,
//!     "exit_code": 0, "reason": null, "message": null, "worker": "host-a1b2c3",
//!     "backend": "process", "ts": "2026-01-01T00:00:00.000000Z"
//! }"#).unwrap();
//! assert!(event.state.is_terminal());
//! assert_eq!(event.return_code, state::return_code_for(JobState::Succeeded, Some(0)));
//! ```
//!
//! The JSON Schemas in the repository's `schemas/` are generated from these types
//! (see [`schema`]); a test fails when the two drift apart.
//!
//! - `job_id`: [`JobId`], a job's identity, checked once.
//! - `launch`: the launch request and its decoding.
//! - [`bounded`]: bounding text taken from requests before it goes into records,
//!   events, replies, headers and logs.
//! - `messages`: what workers send (events, records, replies, reports) and the
//!   terminate request.
//! - `output`: reading a job's output from its worker, a bounded chunk at a
//!   time.
//! - [`reason`]: the machine-readable causes events carry.
//! - [`state`]: the job state machine and NVFlare's return codes.
//! - [`schema`]: the JSON Schema of every message.

pub mod bounded;
mod job_id;
mod launch;
mod messages;
mod output;
pub mod reason;
pub mod schema;
mod secret_excerpt;
pub mod state;

pub use job_id::{JobId, JobIdError};
pub use launch::{
    BadMountSource, InvalidLaunch, LaunchDecodeError, LaunchRequest, Mount, MountSource, Resources,
    SecretEnv, Timeouts, decode_launch, decode_launch_within,
};
pub use messages::{
    AssignedGpu, BackendRef, ErrorReply, GpuStatus, InvalidRequest, InvalidTerminate, JobEvent,
    JobRecord, ResourceStatus, TerminateReply, TerminateRequest, WorkerLease,
};
pub use output::{
    DEFAULT_OUTPUT_CHUNK, InvalidOutputRequest, MAX_OUTPUT_CHUNK, MAX_OUTPUT_REQUEST_BYTES,
    MAX_OUTPUT_WAIT_MS, OutputChunk, OutputRequest,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest allowed `job_id`.
pub const MAX_JOB_ID_LEN: usize = 128;
/// How much of a rejected payload an [`InvalidRequest`] carries.
pub const MAX_ECHOED_PAYLOAD: usize = 4096;
/// Default limit of a launch request's size: well under the 1 MiB that
/// nats-server allows a message by default, so that whatever a worker writes
/// about a request fits.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Default `start_s`: longest time from acceptance to `running`.
pub const DEFAULT_START_TIMEOUT_S: u64 = 120;
/// Default `grace_s` of a terminate request.
pub const DEFAULT_GRACE_S: u64 = 10;
/// Longest `start_s`, `run_s` or `grace_s` a worker accepts (a year): larger values
/// are surely mistakes, and would overflow the worker's clocks.
pub const MAX_DURATION_S: u64 = 366 * 24 * 3600;

/// A duration field of a request outside `min..=`[`MAX_DURATION_S`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be between {min} and {max} seconds, got {value}", max = MAX_DURATION_S)]
pub struct DurationOutOfRange {
    /// The field (`timeouts.start_s`).
    pub name: &'static str,
    /// Its least value.
    pub min: u64,
    /// The value given.
    pub value: u64,
}

/// Checks one duration field of a request against [`MAX_DURATION_S`] and `min`.
fn check_duration(
    name: &'static str,
    value: Option<u64>,
    min: u64,
) -> Result<(), DurationOutOfRange> {
    match value {
        Some(value) if value < min || value > MAX_DURATION_S => {
            Err(DurationOutOfRange { name, min, value })
        }
        _ => Ok(()),
    }
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

fn is_default_version(v: &u32) -> bool {
    *v == PROTOCOL_VERSION
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A local process on the worker's host.
    Process,
    /// A container on the worker's Docker engine.
    Docker,
    /// A pod in a Kubernetes cluster.
    K8s,
}

impl BackendKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Process => "process",
            BackendKind::Docker => "docker",
            BackendKind::K8s => "k8s",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name that is none of [`BackendKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: expected process, docker or k8s")]
pub struct UnknownBackend(pub String);

impl std::str::FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(BackendKind::Process),
            "docker" => Ok(BackendKind::Docker),
            "k8s" => Ok(BackendKind::K8s),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

/// `len` random lowercase letters and digits, for generated names (job ids,
/// worker ids): valid in a job id, a subject token and a KV key.
pub fn random_suffix(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}

/// The current time in RFC 3339 UTC, with microseconds.
pub fn timestamp_now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// The time `delay` from now, as [`timestamp_now`] writes it (a deadline kept in
/// a record).
pub fn timestamp_in(delay: std::time::Duration) -> String {
    format_timestamp(time::OffsetDateTime::now_utc() + delay)
}

/// How long until an RFC 3339 `timestamp`: zero when it has passed, `None` when
/// it cannot be read.
pub fn time_until(timestamp: &str) -> Option<std::time::Duration> {
    let at = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(left.try_into().unwrap_or(std::time::Duration::ZERO))
}

fn format_timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_parsed_by_name() {
        assert_eq!("k8s".parse(), Ok(BackendKind::K8s));
        assert_eq!(
            "podman".parse::<BackendKind>().unwrap_err().to_string(),
            "unknown backend \"podman\": expected process, docker or k8s"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = timestamp_now();
        assert!(
            time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{ts}"
        );
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn deadlines_are_read_back_as_time_left() {
        let hour = std::time::Duration::from_secs(3600);
        let left = time_until(&timestamp_in(hour)).unwrap();
        assert!(left <= hour && left > hour - std::time::Duration::from_secs(60));
        assert_eq!(
            time_until("2001-01-01T00:00:00.000000Z"),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(time_until("yesterday"), None);
    }
}
