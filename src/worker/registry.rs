//! The jobs this worker owns right now: job id to the command channel of the task
//! that runs it. Control requests use it to reach a job's task.

use crate::protocol::JobId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a job task can be told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    /// Stop the job: polite stop now, kill after `grace`.
    Terminate {
        /// Time between the polite stop and the kill.
        grace: Duration,
    },
    /// Let go of the job without touching its workload: the worker hands its
    /// jobs over to the pool as it leaves.
    HandOver,
}

/// A job's entry in the registry, held by whatever handles the job: dropping it
/// removes the entry, also when the job's task ends by a panic.
pub struct Registration {
    registry: Registry,
    job_id: String,
    /// The commands sent to the job.
    pub commands: mpsc::Receiver<JobCommand>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.job_id);
    }
}

/// Job id → the job task's command channel.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: Arc<Mutex<HashMap<String, mpsc::Sender<JobCommand>>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<JobCommand>>> {
        crate::locked::lock(&self.jobs)
    }

    /// Registers a job, or returns `None` when it is registered already.
    pub fn register(&self, job_id: &JobId) -> Option<Registration> {
        let mut jobs = self.lock();
        if jobs.contains_key(job_id.as_str()) {
            return None;
        }
        let (sender, commands) = mpsc::channel(4);
        jobs.insert(job_id.to_string(), sender);
        Some(Registration {
            registry: self.clone(),
            job_id: job_id.to_string(),
            commands,
        })
    }

    /// The channel of a job this worker runs (any text may be looked up: a
    /// workload's label, a log's name).
    pub fn get(&self, job_id: &str) -> Option<mpsc::Sender<JobCommand>> {
        self.lock().get(job_id).cloned()
    }

    /// How many jobs this worker runs.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Tells every job's task `command`.
    pub async fn tell_all(&self, command: JobCommand) {
        let senders: Vec<_> = self.lock().values().cloned().collect();
        for sender in senders {
            // A task that ended meanwhile needs nothing more.
            let _ = sender.send(command).await;
        }
    }
}
