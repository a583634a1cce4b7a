//! How a launch goes, as far as the job's record should know ([`Progress`]):
//! the backend reports it on a [`LaunchProgress`], and the job, the record's
//! one author, writes each change and says which it has stored
//! ([`ProgressReports`]).
//!
//! Most steps only inform (`pulling image IMAGE`); a backend goes on at once.
//! One step is a promise a worker taking the launch over relies on: a backend
//! whose workloads only their worker's host can follow records
//! [`LaunchProgress::starting_on_host`], and waits until the record holds it,
//! before it starts the workload there. A record left `starting` without that
//! step names a launch that started nothing; one with it, a launch whose
//! workload may run on its worker's host ([`started_on_host`]).

use crate::protocol::BackendRef;
use crate::protocol::JobRecord;
use crate::protocol::bounded::bounded;
use crate::state::JobState;
use tokio::sync::watch;

/// The step recorded before a workload only its worker's host can follow is
/// started (see [`LaunchProgress::starting_on_host`]).
const STARTING_ON_HOST: &str = "starting the workload on its worker's host";

/// How a launch is going, as far as the job's record should know: the
/// workload's name once it exists, and what the backend is doing meanwhile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The workload, as soon as it exists (before it is started).
    pub backend_ref: Option<BackendRef>,
    /// What the launch is doing now (e.g. `pulling image IMAGE`).
    pub step: Option<String>,
}

/// Where a backend reports a launch's [`Progress`]; the job keeps only the
/// latest, so reporting never waits (but for [`LaunchProgress::starting_on_host`]).
pub struct LaunchProgress {
    progress: watch::Sender<Progress>,
    /// The latest progress the job's record holds.
    recorded: watch::Receiver<Progress>,
}

/// The job's record did not take a step a launch must see stored before it
/// goes on: the job was taken over, or the server refused the record.
#[derive(Debug, thiserror::Error)]
#[error("the job's record could not be written before its workload was started")]
pub struct Unrecorded;

impl LaunchProgress {
    /// A reporter, and the job's side of it.
    pub fn channel() -> (LaunchProgress, ProgressReports) {
        let (progress, reports) = watch::channel(Progress::default());
        let (stored, recorded) = watch::channel(Progress::default());
        (
            LaunchProgress { progress, recorded },
            ProgressReports {
                reports,
                stored: Some(stored),
            },
        )
    }

    /// The workload exists (before it is started).
    pub fn created(&self, backend_ref: BackendRef) {
        self.progress
            .send_modify(|progress| progress.backend_ref = Some(backend_ref));
    }

    /// The launch is now doing `step` (kept short: it is bounded).
    pub fn step(&self, step: &str) {
        let step = bounded(step);
        self.progress.send_if_modified(|progress| {
            let changed = progress.step.as_deref() != Some(step.as_str());
            progress.step = Some(step);
            changed
        });
    }

    /// The launch is about to start a workload that only its worker's host can
    /// follow: returns once the job's record says so, so that a worker taking
    /// the launch over after this one went knows the workload may run.
    ///
    /// # Errors
    /// [`Unrecorded`] when the record will not hold it: the workload must not
    /// be started.
    pub async fn starting_on_host(&self) -> Result<(), Unrecorded> {
        self.step(STARTING_ON_HOST);
        let wanted = self.progress.borrow().clone();
        let mut recorded = self.recorded.clone();
        recorded
            .wait_for(|stored| *stored == wanted)
            .await
            .map(drop)
            .map_err(|_| Unrecorded)
    }
}

/// The job's side of a [`LaunchProgress`]: the reports, and where it says
/// which of them its record holds.
pub struct ProgressReports {
    reports: watch::Receiver<Progress>,
    /// Gone once a report could not be stored: nothing waits in vain.
    stored: Option<watch::Sender<Progress>>,
}

impl ProgressReports {
    /// The latest progress, once it changed; `None` once the launch is over.
    pub async fn next(&mut self) -> Option<Progress> {
        self.reports.changed().await.ok()?;
        Some(self.reports.borrow_and_update().clone())
    }

    /// The job's record holds `progress` (`stored`), or could not store it.
    pub fn recorded(&mut self, progress: Progress, stored: bool) {
        if !stored {
            self.stored = None;
        }
        if let Some(sender) = &self.stored {
            sender.send_replace(progress);
        }
    }
}

/// Whether `record` is that of a launch that went as far as
/// [`LaunchProgress::starting_on_host`] without its workload recorded: the
/// workload may run on the host of the record's worker.
pub fn started_on_host(record: &JobRecord) -> bool {
    record.state == JobState::Starting
        && record.backend_ref.is_none()
        && record.message.as_deref() == Some(STARTING_ON_HOST)
}
