//! The jobs that follow a container backend's workloads, by job id: each has
//! its own small channel of observations, which the backend's one watch fills
//! with `try_send` so that it never waits on a job; the flag set when the job
//! asks the workload to stop; and what the backend notes of the
//! workload besides (`S`: an out-of-memory event seen, a pod's uid, ...). A job
//! follows its workload before the workload exists, so that no event of it is
//! missed.

use crate::backend::Observation;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Most observations a job gets (running, then its end): the channel never fills.
const OBSERVATIONS: usize = 4;

/// A workload a job follows.
pub struct Follower<S> {
    /// The workload's name.
    pub name: String,
    /// Where its output goes once it ended.
    pub log: PathBuf,
    /// Where its observations go.
    pub observe: mpsc::Sender<Observation>,
    /// Whether the worker asked it to stop.
    pub stopped: Arc<AtomicBool>,
    /// What its backend notes of it besides.
    pub noted: S,
}

/// What a new follower gets: its observations.
pub struct Following {
    /// The job's observations.
    pub observations: mpsc::Receiver<Observation>,
}

/// The workloads followed, by job id.
pub struct Followers<S> {
    followed: Mutex<HashMap<String, Follower<S>>>,
}

impl<S: Default> Default for Followers<S> {
    fn default() -> Self {
        Followers {
            followed: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Default> Followers<S> {
    /// Every follower, by job id, locked.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Follower<S>>> {
        crate::locked::lock(&self.followed)
    }

    /// Starts following the workload `name` of `job_id`, its output to go to `log`.
    pub fn follow(&self, job_id: &str, name: &str, log: PathBuf) -> Following {
        let (observe, observations) = mpsc::channel(OBSERVATIONS);
        self.lock().insert(
            job_id.to_owned(),
            Follower {
                name: name.to_owned(),
                log,
                observe,
                stopped: Arc::new(AtomicBool::new(false)),
                noted: S::default(),
            },
        );
        Following { observations }
    }

    /// Tells the job following `job_id` what happened; never waits.
    pub fn tell(&self, job_id: &str, observation: Observation) {
        if let Some(follower) = self.lock().get(job_id) {
            send(&follower.observe, job_id, observation);
        }
    }

    /// Whether a job follows its workload here.
    pub fn follows(&self, job_id: &str) -> bool {
        self.lock().contains_key(job_id)
    }

    /// Stops following `job_id`; returns what was followed.
    pub fn forget(&self, job_id: &str) -> Option<Follower<S>> {
        self.lock().remove(job_id)
    }
}

/// Sends `observation` to the job `job_id` on `observe`; never waits (the
/// channel has room for every observation a job gets: one that finds none is
/// dropped, and logged).
pub fn send(observe: &mpsc::Sender<Observation>, job_id: &str, observation: Observation) {
    if observe.try_send(observation).is_err() {
        tracing::warn!(%job_id, "a workload observation found no room; dropped");
    }
}
