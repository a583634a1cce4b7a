//! The record that ends a job whose record or event the server refuses for good
//! (one larger than it takes, say). Retrying cannot help, and the job must
//! neither hang nor hold its slot: it ends at once with a minimal record that
//! surely fits (reason `RecordRejected`, none of the request's texts) and that
//! record's event ([`super::Story::end_refused`] writes them). Should even those
//! be refused, the worker says so in its log and lets the job go.

use super::events::EventRejected;
use crate::protocol::bounded::bounded_to;
use crate::protocol::{JobRecord, reason, timestamp_now};
use crate::state::{self, JobState};
use crate::store::StoreError;

/// Most bytes of the refusal that a minimal record quotes.
const MAX_REFUSAL_TEXT: usize = 512;

/// A write of a job's change that the server refused for good.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its record was refused.
    #[error(transparent)]
    Record(#[from] StoreError),
    /// Its event was refused.
    #[error(transparent)]
    Event(#[from] EventRejected),
}

/// The smallest record that ends a job after the server refused the change
/// `refused` (not published: the minimal record takes its `seq`). A terminal
/// change keeps its state and exit code, as the workload did end that way; any
/// other (`starting`, or `running` after `starting`) ends the job in `error`,
/// which `starting` allows.
pub fn minimal_record(refused: &JobRecord, refusal: &Refusal) -> JobRecord {
    let (state, exit_code) = if refused.state.is_terminal() {
        (refused.state, refused.exit_code)
    } else {
        (JobState::Error, None)
    };
    JobRecord {
        job_id: refused.job_id.clone(),
        state,
        return_code: state::return_code_for(state, exit_code),
        exit_code,
        reason: Some(reason::RECORD_REJECTED.into()),
        message: Some(bounded_to(&refusal.to_string(), MAX_REFUSAL_TEXT)),
        worker: refused.worker.clone(),
        backend: refused.backend,
        site: None,
        seq: refused.seq,
        created: refused.created.clone(),
        updated: timestamp_now(),
        backend_ref: refused.backend_ref.clone(),
        pool: refused.pool.clone(),
        tombstone: false,
        run_deadline: None,
        stop_reason: None,
        gpus: refused.gpus.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BackendKind, JobId};
    use crate::worker::story::fresh_record;

    fn refusal() -> Refusal {
        Refusal::Record(StoreError::Rejected {
            job_id: "j1".into(),
            source: format!("too big: {}", "x".repeat(10_000)).into(),
        })
    }

    fn refused(state: JobState, message: &str) -> JobRecord {
        let mut record = fresh_record(&JobId::new("j1").unwrap(), "w1", state);
        record.seq = 2;
        record.backend = Some(BackendKind::Process);
        record.site = Some("s".repeat(100_000));
        record.message = Some(message.repeat(100_000));
        record.exit_code = Some(3);
        record
    }

    #[test]
    fn a_job_that_did_not_end_ends_in_error_with_a_small_record() {
        let minimal = minimal_record(&refused(JobState::Running, "m"), &refusal());
        assert_eq!(minimal.state, JobState::Error);
        assert_eq!((minimal.return_code, minimal.exit_code), (Some(104), None));
        assert_eq!(minimal.reason.as_deref(), Some("RecordRejected"));
        assert_eq!(minimal.seq, 2, "takes the refused change's place");
        assert_eq!(minimal.site, None);
        assert!(serde_json::to_vec(&minimal).unwrap().len() < 2048);
    }

    #[test]
    fn a_job_that_ended_keeps_its_end() {
        let minimal = minimal_record(&refused(JobState::Failed, "m"), &refusal());
        assert_eq!(minimal.state, JobState::Failed);
        assert_eq!((minimal.return_code, minimal.exit_code), (Some(1), Some(3)));
        assert_eq!(minimal.reason.as_deref(), Some("RecordRejected"));
    }
}
