//! An in-process backend that plays a script, for tests of the job task: its
//! launch fails or hands out a workload whose observations are given up front,
//! may wait until the test lets it go on, and every stop it is asked for is
//! noted and answered with the workload's end (killed by SIGTERM, stopped),
//! except the first few of a workload that is slow to stop.

use async_trait::async_trait;
use flare_launcher::backend::{
    Adopt, Backend, GpuAssignment, LaunchError, LaunchProgress, Launched, Observation, Recover,
    Sweep, WorkloadControl,
};
use flare_launcher::protocol::{BackendKind, BackendRef, LaunchRequest};
use flare_launcher::state::Exit;
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

/// A backend whose one launch follows a [`Script`].
pub struct FakeBackend {
    script: Mutex<Option<Script>>,
    /// When set, the launch waits for it.
    hold: Option<Arc<Notify>>,
    /// How many stops go unanswered before one ends the workload.
    unanswered_stops: usize,
    /// The grace of every stop asked of the workload, in order.
    pub stops: Arc<Mutex<Vec<Duration>>>,
}

impl FakeBackend {
    /// A backend playing `script` at once.
    pub fn new(script: Script) -> Self {
        FakeBackend {
            script: Mutex::new(Some(script)),
            hold: None,
            unanswered_stops: 0,
            stops: Arc::default(),
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
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    async fn launch(
        &self,
        _request: &LaunchRequest,
        _gpus: &GpuAssignment,
        progress: &LaunchProgress,
    ) -> Result<Launched, LaunchError> {
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        let script = self.script.lock().unwrap().take().expect("one launch");
        let observations = match script {
            Script::Fail(error) => return Err(error),
            Script::Run { observations } => observations,
        };
        let backend_ref = BackendRef::Process { pid: 1 };
        progress.created(backend_ref.clone());
        let (sender, receiver) = mpsc::channel(16);
        for observation in observations {
            sender.try_send(observation).unwrap();
        }
        Ok(Launched {
            backend_ref,
            detail: None,
            observations: receiver,
            control: Box::new(FakeControl {
                sender,
                stops: self.stops.clone(),
                unanswered: self.unanswered_stops,
            }),
        })
    }

    /// It finds nothing again after a restart: the job task's tests start none.
    fn recovery(&self) -> Option<&dyn Recover> {
        None
    }

    fn adoption(&self) -> Option<&dyn Adopt> {
        None
    }

    fn sweep(&self) -> Option<&dyn Sweep> {
        None
    }

    async fn release(&self, _job_id: &str) {}

    async fn close(&self) {}
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
