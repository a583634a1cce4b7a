//! The state machine's step on a job's record: [`apply`] is the one place where
//! `seq`, `return_code` and `updated` move; [`fresh_record`] is a record before
//! its first step.

use crate::protocol::{JobId, JobRecord, timestamp_now};
use crate::state::{self, InvalidTransition, JobState};

/// What changes with a state, besides the state.
#[derive(Debug, Default)]
pub struct Change {
    /// Machine-readable cause.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Raw exit code, if known.
    pub exit_code: Option<i32>,
}

impl Change {
    /// A change with a reason and a message.
    pub fn because(reason: &str, message: impl Into<String>) -> Self {
        Change {
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
            exit_code: None,
        }
    }
}

/// A record that has published nothing yet (seq 0), owned by `worker`, naming no
/// backend: the first [`apply`] may put it in any state, since that is the job's
/// first event.
pub fn fresh_record(job_id: &JobId, worker: &str, state: JobState) -> JobRecord {
    let now = timestamp_now();
    JobRecord {
        job_id: job_id.to_string(),
        state,
        return_code: state::return_code_for(state, None),
        exit_code: None,
        reason: None,
        message: None,
        worker: worker.to_owned(),
        backend: None,
        site: None,
        seq: 0,
        created: now.clone(),
        updated: now,
        backend_ref: None,
        pool: None,
        tombstone: false,
        run_deadline: None,
        stop_reason: None,
        gpus: None,
    }
}

/// Applies a state change to a record. Leaves the record alone and says why
/// when the state machine forbids the transition.
///
/// # Errors
/// The [`InvalidTransition`] of a transition the state machine forbids.
pub fn apply(
    record: &mut JobRecord,
    to: JobState,
    change: Change,
) -> Result<(), InvalidTransition> {
    if record.seq > 0 {
        state::transition(record.state, to)?;
    }
    record.state = to;
    record.exit_code = change.exit_code;
    record.return_code = state::return_code_for(to, change.exit_code);
    record.reason = change.reason;
    record.message = change.message;
    record.seq += 1;
    record.updated = timestamp_now();
    Ok(())
}
