//! An in-process backend that plays a script, for tests of the job task,
//! intake, control and recovery: its launch fails or hands out a workload whose
//! observations are given up front, may wait until the test lets it go on, and
//! every stop it is asked for is noted and answered with the workload's end
//! (killed by SIGTERM, stopped), except the first few of a workload that is
//! slow to stop. Every launch asked of it is noted too.
//!
//! It declares no capability unless told to: [`FakeBackend::recovering`] makes
//! it find scripted workloads again after a restart (`Recover`), and
//! [`FakeBackend::adopting`] makes it adopt scripted workloads by their job's
//! name (`Adopt`), noting every job it is asked to adopt.

use async_trait::async_trait;
use flare_launcher::backend::{
    Adopt, AdoptionScope, Backend, Failure, GpuAssignment, LaunchError, LaunchProgress, Launched,
    Leaving, LookupError, Observation, Recover, Recovered, Sweep, WorkloadControl,
};
use flare_launcher::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};
use flare_launcher::state::Exit;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// What the fake's one launch does.
pub enum Script {
    /// The launch fails.
    Fail(LaunchError),
    /// The launch creates a workload that reports `observations` at once.
    Run {
        /// Reported in order as soon as the workload exists.
        observations: Vec<Observation>,
    },
}

/// A launch request for `job_id` that the fake can run (it runs nothing).
pub fn request(job_id: &str) -> LaunchRequest {
    LaunchRequest::new(job_id, vec!["anything".into()])
}

/// A workload's end with exit code `code`, not asked for.
pub fn exited(code: i32) -> Observation {
    Observation::Exited {
        exit: Exit::Code(code),
        stopped: false,
        reason: None,
    }
}

/// A workload the fake holds before the worker asks for it (found again after
/// a restart, or adopted): its job, and what it reports at once.
pub type Scripted = (&'static str, Vec<Observation>);

/// A backend whose one launch follows a [`Script`].
pub struct FakeBackend {
    script: Mutex<Option<Script>>,
    /// When set, the launch waits for it.
    hold: Option<Arc<Notify>>,
    /// How many stops go unanswered before one ends the workload.
    unanswered_stops: usize,
    /// The grace of every stop asked of a workload, in order.
    pub stops: Arc<Mutex<Vec<Duration>>>,
    /// The job of every launch asked, in order.
    pub launches: Arc<Mutex<Vec<String>>>,
    /// When set, the workloads found again after a restart (taken once).
    found: Option<Mutex<Vec<Scripted>>>,
    /// When set, the workloads that can be adopted, by job.
    adoptable: Option<Mutex<HashMap<String, Vec<Observation>>>>,
    /// The job of every adoption asked, in order.
    pub adoptions: Arc<Mutex<Vec<String>>>,
}

impl FakeBackend {
    /// A backend playing `script` at once.
    pub fn new(script: Script) -> Self {
        FakeBackend {
            script: Mutex::new(Some(script)),
            hold: None,
            unanswered_stops: 0,
            stops: Arc::default(),
            launches: Arc::default(),
            found: None,
            adoptable: None,
            adoptions: Arc::default(),
        }
    }

    /// A backend with no launch to play: a launch asked of it is noted, then
    /// panics.
    pub fn idle() -> Self {
        FakeBackend {
            script: Mutex::new(None),
            ..FakeBackend::new(Script::Run {
                observations: Vec::new(),
            })
        }
    }

    /// The same, with a workload that ignores its first `count` stops (a long
    /// grace, a process that does not react to SIGTERM).
    pub fn slow_to_stop(self, count: usize) -> Self {
        FakeBackend {
            unanswered_stops: count,
            ..self
        }
    }

    /// The same, with a launch that waits until `hold` is notified.
    pub fn held(script: Script, hold: Arc<Notify>) -> Self {
        FakeBackend {
            hold: Some(hold),
            ..FakeBackend::new(script)
        }
    }

    /// The same, finding `workloads` again after a restart.
    pub fn recovering(self, workloads: Vec<Scripted>) -> Self {
        FakeBackend {
            found: Some(Mutex::new(workloads)),
            ..self
        }
    }

    /// The same, able to adopt a workload by its job's name: those of
    /// `workloads` exist, any other does not.
    pub fn adopting(self, workloads: Vec<Scripted>) -> Self {
        let workloads = workloads
            .into_iter()
            .map(|(job_id, observations)| (job_id.to_owned(), observations))
            .collect();
        FakeBackend {
            adoptable: Some(Mutex::new(workloads)),
            ..self
        }
    }

    /// A workload that reports `observations` at once and answers stops.
    fn workload(&self, observations: Vec<Observation>) -> Launched {
        let (sender, receiver) = mpsc::channel(16);
        for observation in observations {
            sender.try_send(observation).unwrap();
        }
        Launched {
            backend_ref: BackendRef::Process { pid: 1 },
            detail: None,
            observations: receiver,
            control: Box::new(FakeControl {
                sender,
                stops: self.stops.clone(),
                unanswered: self.unanswered_stops,
            }),
        }
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    async fn launch(
        &self,
        request: &LaunchRequest,
        _gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError> {
        self.launches.lock().unwrap().push(request.job_id.clone());
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        let script = self.script.lock().unwrap().take().expect("one launch");
        let observations = match script {
            Script::Fail(error) => return Err(error),
            Script::Run { observations } => observations,
        };
        let launched = self.workload(observations);
        progress.created(launched.backend_ref.clone());
        Ok(launched)
    }

    /// A stand-in for a backend that cannot hand a job its secrets.
    fn gives_secrets(&self) -> bool {
        false
    }

    fn recovery(&self) -> Option<&dyn Recover> {
        self.found.as_ref().map(|_| self as &dyn Recover)
    }

    fn adoption(&self) -> Option<&dyn Adopt> {
        self.adoptable.as_ref().map(|_| self as &dyn Adopt)
    }

    fn sweep(&self) -> Option<&dyn Sweep> {
        None
    }

    async fn release(&self, _job_id: &str) {}

    async fn answers(&self) -> Result<(), Failure> {
        Ok(())
    }

    async fn close(&self, _leaving: Leaving) {}
}

#[async_trait]
impl Recover for FakeBackend {
    async fn recover(&self) -> Vec<Recovered> {
        let found = self.found.as_ref().expect("declared only when set");
        let workloads = std::mem::take(&mut *found.lock().unwrap());
        workloads
            .into_iter()
            .map(|(job_id, observations)| Recovered {
                job_id: job_id.to_owned(),
                launched: self.workload(observations),
            })
            .collect()
    }
}

#[async_trait]
impl Adopt for FakeBackend {
    fn scope(&self) -> AdoptionScope {
        AdoptionScope::ThisWorker
    }

    async fn adopt(&self, record: &JobRecord) -> Result<Option<Launched>, LookupError> {
        self.adoptions.lock().unwrap().push(record.job_id.clone());
        let adoptable = self.adoptable.as_ref().expect("declared only when set");
        let observations = adoptable.lock().unwrap().remove(&record.job_id);
        Ok(observations.map(|observations| self.workload(observations)))
    }
}

/// Notes each stop and answers it with the workload's end, but the first
/// `unanswered`.
struct FakeControl {
    sender: mpsc::Sender<Observation>,
    stops: Arc<Mutex<Vec<Duration>>>,
    unanswered: usize,
}

#[async_trait]
impl WorkloadControl for FakeControl {
    async fn stop(&self, grace: Duration) {
        let mut stops = self.stops.lock().unwrap();
        stops.push(grace);
        if stops.len() <= self.unanswered {
            return;
        }
        let _ = self.sender.try_send(Observation::Exited {
            exit: Exit::Signal(15),
            stopped: true,
            reason: None,
        });
    }
}
