//! One task per job: it launches the workload, follows the backend's observations,
//! acts on terminate commands and time limits, and is the only writer of the job's
//! record and events, so `seq` is gap-free without locks. It holds the job's GPUs
//! (under the `gpu` policy) until the workload has ended.

use super::Shared;
use super::registry::{JobCommand, Registration};
use super::rejected::{self, Refusal};
use crate::backend::{Backend, GpuAssignment, LaunchProgress, Launched, Observation, Progress};
use crate::protocol::{
    BackendRef, DEFAULT_GRACE_S, DEFAULT_START_TIMEOUT_S, JobRecord, LaunchRequest, reason,
    time_until, timestamp_in, timestamp_now,
};
use crate::resources::gpu_pool::GpuLease;
use crate::state::{self, JobState};
use crate::store::JobStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::{Instant, sleep_until};

/// Longest time a job that ended before its workload's end was seen keeps its
/// GPUs, waiting for that end (the workload was told to stop at once).
const WORKLOAD_END_WAIT: Duration = Duration::from_secs(60);

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

/// A record that has published nothing yet (seq 0): the first [`apply`] may put
/// it in any state, since that is the job's first event.
pub fn fresh_record(job_id: &str, worker: &str, state: JobState) -> JobRecord {
    let now = timestamp_now();
    JobRecord {
        job_id: job_id.to_owned(),
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

/// Applies a state change to a record: the one place where `seq`, `return_code`
/// and `updated` move. Returns `false` (and leaves the record alone) when the
/// state machine forbids the transition.
pub fn apply(record: &mut JobRecord, to: JobState, change: Change) -> bool {
    if record.seq > 0
        && let Err(e) = state::transition(record.state, to)
    {
        tracing::error!(job_id = %record.job_id, error = %e, "refusing a state change");
        return false;
    }
    record.state = to;
    record.exit_code = change.exit_code;
    record.return_code = state::return_code_for(to, change.exit_code);
    record.reason = change.reason;
    record.message = change.message;
    record.seq += 1;
    record.updated = timestamp_now();
    true
}

/// Why the worker itself asked the workload to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    Terminate,
    RunTimeout,
    WorkerShutdown,
}

impl StopCause {
    fn reason(self) -> &'static str {
        match self {
            StopCause::Terminate => reason::TERMINATE_REQUESTED,
            StopCause::RunTimeout => reason::RUN_TIMEOUT,
            StopCause::WorkerShutdown => reason::WORKER_SHUTDOWN,
        }
    }

    /// The cause a record's `stop_reason` names.
    fn from_reason(reason: &str) -> Option<StopCause> {
        [
            StopCause::Terminate,
            StopCause::RunTimeout,
            StopCause::WorkerShutdown,
        ]
        .into_iter()
        .find(|cause| cause.reason() == reason)
    }

    fn describe(self) -> &'static str {
        match self {
            StopCause::Terminate => "stopped by a terminate request",
            StopCause::RunTimeout => "stopped because its run time (run_s) ran out",
            StopCause::WorkerShutdown => "stopped because its worker shut down",
        }
    }
}

/// When a state change is written to the job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Before its event is published.
    Now,
    /// With the change that follows at once (already observed): a record
    /// passing through a state only for an instant is written once, not twice.
    WithNext,
}

/// A job this worker owns, with everything its task needs.
pub struct Job {
    shared: Arc<Shared>,
    record: JobRecord,
    /// The record holds a change not yet written (see [`Persist::WithNext`]).
    record_behind: bool,
    /// Its registry entry, with the commands sent to it; gone with the task.
    registration: Registration,
    /// `start_s`, and when it runs out.
    start_s: u64,
    start_deadline: Instant,
    /// `run_s`, if any.
    run_s: Option<u64>,
    /// The backend holding the workload, once there is one.
    backend: Option<Arc<dyn Backend>>,
    /// Its share of the worker's capacity (none for a job found again at start-up
    /// beyond `--max-jobs`), until its end is recorded.
    permit: Option<OwnedSemaphorePermit>,
    /// The GPUs it holds under the `gpu` policy, until its workload has ended.
    gpus: Option<GpuLease>,
}

impl Job {
    /// A job whose record is written: its claim (state `starting`, seq 1), or the
    /// record of a job found again after a restart.
    pub fn new(
        shared: Arc<Shared>,
        record: JobRecord,
        registration: Registration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Job {
            shared,
            record,
            record_behind: false,
            registration,
            start_s: DEFAULT_START_TIMEOUT_S,
            start_deadline: Instant::now() + Duration::from_secs(DEFAULT_START_TIMEOUT_S),
            run_s: None,
            backend: None,
            permit,
            gpus: None,
        }
    }

    /// The job, holding the GPUs of `lease` (those its record names) until its
    /// workload has ended.
    pub fn holding(mut self, lease: Option<GpuLease>) -> Self {
        self.gpus = lease;
        self
    }

    /// Runs a newly claimed job to its terminal event.
    pub async fn launch(mut self, request: LaunchRequest) {
        self.start_s = request.start_timeout_s();
        self.start_deadline = Instant::now() + Duration::from_secs(self.start_s);
        self.run_s = request.run_timeout_s();
        let starting = self.record.event(self.shared.backends.default_kind());
        let (progress, reports) = LaunchProgress::channel();
        // The workload is created while the `starting` event is on its way, and
        // the record follows the launch's progress; nothing else is published or
        // written before all are done, so events and records stay in order.
        let (published, created, created_ref) = tokio::join!(
            self.shared.events.publish(&starting),
            async {
                let created = self.create_workload(&request, &progress).await;
                drop(progress);
                created
            },
            record_progress(&self.shared.store, self.record.clone(), reports),
        );
        drop(request);
        if created_ref.is_some() {
            self.record.backend_ref = created_ref;
        }
        if let Err(refused) = published {
            if let Ok((backend, launched)) = &created {
                launched.control.stop(Duration::ZERO).await;
                self.backend = Some(backend.clone());
            }
            self.record = rejected::end_job(&self.shared, &self.record, &refused.into()).await;
            return self.finish().await;
        }
        match created {
            Ok((backend, launched)) => {
                self.backend = Some(backend);
                self.record.backend_ref = Some(launched.backend_ref.clone());
                let unended = self.follow(launched).await;
                self.await_workload_end(unended).await;
            }
            Err((backend, change)) => {
                // A backend that tried keeps what it knows of the attempt until
                // the job's end is recorded.
                self.backend = backend;
                self.advance(JobState::Error, change, Persist::Now).await;
            }
        }
        self.finish().await;
    }

    /// Follows a workload found again after the worker restarted to the job's
    /// terminal event; its `seq`, run deadline and stop carry on from the record.
    pub async fn resume(mut self, backend: Arc<dyn Backend>, launched: Launched) {
        self.backend = Some(backend);
        if self.record.backend_ref.is_none() {
            self.record.backend_ref = Some(launched.backend_ref.clone());
        }
        let unended = self.follow(launched).await;
        self.await_workload_end(unended).await;
        self.finish().await;
    }

    /// Ends a job found again after a restart whose workload is not there.
    pub async fn end(mut self, to: JobState, change: Change) {
        self.advance(to, change, Persist::Now).await;
        self.finish().await;
    }

    /// Keeps the job's GPUs until its workload, told to stop when the job ended
    /// without its end being seen (`start_s` ran out, a refused write), has ended:
    /// then, or after [`WORKLOAD_END_WAIT`], they are free.
    async fn await_workload_end(&mut self, unended: Option<mpsc::Receiver<Observation>>) {
        let (Some(lease), Some(mut observations)) = (self.gpus.take(), unended) else {
            return;
        };
        if lease.gpus().is_empty() {
            return;
        }
        let ended = async {
            while let Some(observation) = observations.recv().await {
                if observation.ends_running_workload() {
                    break;
                }
            }
        };
        if tokio::time::timeout(WORKLOAD_END_WAIT, ended)
            .await
            .is_err()
        {
            tracing::warn!(job_id = %self.record.job_id, gpus = ?lease.gpus(), "the workload was not seen to end; its GPUs are handed out again");
        }
    }

    /// Logs the end, frees the job's share of the worker's capacity and lets
    /// the backend go of the workload: the next job need not wait while a
    /// container or pod that ended is removed.
    async fn finish(mut self) {
        tracing::info!(
            job_id = %self.record.job_id,
            state = %self.record.state,
            return_code = ?self.record.return_code,
            "job ended"
        );
        drop(self.permit.take());
        if let Some(backend) = &self.backend
            && self.record.state.is_terminal()
        {
            backend.release(&self.record.job_id).await;
        }
    }

    /// Creates the workload within the start timeout; on failure, the change that
    /// ends the job in `error`.
    async fn create_workload(
        &self,
        request: &LaunchRequest,
        progress: &LaunchProgress,
    ) -> Result<(Arc<dyn Backend>, Launched), (Option<Arc<dyn Backend>>, Change)> {
        let backend = self
            .shared
            .backends
            .for_request(request)
            .map_err(|e| (None, Change::because(e.reason(), e.to_string())))?;
        let gpus = GpuAssignment::from_recorded(self.record.gpus.as_deref());
        match tokio::time::timeout_at(
            self.start_deadline,
            backend.launch(request, &gpus, progress),
        )
        .await
        {
            Ok(Ok(launched)) => Ok((backend, launched)),
            Ok(Err(e)) => Err((Some(backend), Change::because(e.reason(), e.to_string()))),
            Err(_) => Err((
                Some(backend),
                Change::because(
                    reason::START_TIMEOUT,
                    format!(
                        "the backend did not create the workload within {} s",
                        self.start_s
                    ),
                ),
            )),
        }
    }

    /// Follows the workload until the job is terminal. Returns its observations
    /// when the job ended without the workload's end being seen. The job's GPUs
    /// are free as soon as that end is seen, before it is recorded.
    async fn follow(&mut self, mut launched: Launched) -> Option<mpsc::Receiver<Observation>> {
        let control = launched.control;
        let mut workload_ended = false;
        let mut stop = self
            .record
            .stop_reason
            .as_deref()
            .and_then(StopCause::from_reason);
        let mut shutting_down = false;
        let mut run_deadline = self.run_deadline();
        let mut run_timed_out = false;
        let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        while !self.record.state.is_terminal() {
            let starting = self.record.state == JobState::Starting;
            tokio::select! {
                observation = launched.observations.recv() => {
                    let mut observation = observation.unwrap_or_else(|| Observation::Vanished {
                        reason: reason::WORKLOAD_VANISHED,
                        message: "the backend stopped reporting on the workload".into(),
                    });
                    loop {
                        if observation.ends_running_workload()
                            || matches!(observation, Observation::StartFailed { .. })
                        {
                            workload_ended = true;
                            self.gpus = None;
                        }
                        // With the workload's end observed already, `running` is
                        // over at once: its event goes out, its record is written
                        // with the end.
                        let later = launched.observations.try_recv().ok();
                        let persist = match &later {
                            Some(next) if next.ends_running_workload() => Persist::WithNext,
                            _ => Persist::Now,
                        };
                        if self.observe(observation, stop, launched.detail.take(), persist).await
                            && self.record.state == JobState::Running
                        {
                            run_deadline = self.run_deadline();
                        }
                        match later {
                            Some(next) if !self.record.state.is_terminal() => observation = next,
                            _ => break,
                        }
                    }
                    // Should the end not have come as expected, the record catches up.
                    if self.record_behind {
                        if let Err(error) = self.shared.store.put(&self.record).await {
                            // The job's next change writes it again, and ends the job if refused.
                            tracing::error!(job_id = %self.record.job_id, %error, "could not catch the job's record up");
                        }
                        self.record_behind = false;
                    }
                }
                Some(command) = self.registration.commands.recv() => match command {
                    JobCommand::Terminate { grace } => {
                        control.stop(grace).await;
                        self.note_stop(&mut stop, StopCause::Terminate).await;
                    }
                },
                () = sleep_until(self.start_deadline), if starting => {
                    let blocker = control.start_blocker().await;
                    control.stop(Duration::ZERO).await;
                    let message = format!("the workload did not start running within {} s", self.start_s);
                    let change = match blocker {
                        Some((why, detail)) => Change::because(&why, format!("{message}: {detail}")),
                        None => Change::because(reason::START_TIMEOUT, message),
                    };
                    self.advance(JobState::Error, change, Persist::Now).await;
                }
                // Also while a stop with a long grace is under way: the kill then
                // comes at whichever is first.
                () = sleep_until(run_deadline.unwrap_or(far_future)), if run_deadline.is_some() && !run_timed_out => {
                    run_timed_out = true;
                    control.stop(Duration::from_secs(DEFAULT_GRACE_S)).await;
                    self.note_stop(&mut stop, StopCause::RunTimeout).await;
                }
                // Also after a terminate with a long grace: the worker is leaving
                // and must not leave the workload behind.
                () = self.shared.hard_stop.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    control.stop(Duration::from_secs(DEFAULT_GRACE_S)).await;
                    self.note_stop(&mut stop, StopCause::WorkerShutdown).await;
                }
            }
        }
        // Ended by a refused write (`running`, say) while its workload may still
        // run: it must not be left behind (a stop after its exit does nothing).
        if self.record.reason.as_deref() == Some(reason::RECORD_REJECTED) {
            control.stop(Duration::ZERO).await;
        }
        (!workload_ended).then_some(launched.observations)
    }

    /// When `run_s` runs out, as the record keeps it (set when the job starts
    /// running, so a restarted worker keeps the same limit).
    fn run_deadline(&self) -> Option<Instant> {
        let left = time_until(self.record.run_deadline.as_deref()?)?;
        Some(Instant::now() + left)
    }

    /// Records the first stop asked of a running workload, so that its end is
    /// reported with that cause, also by a worker that restarts before the end.
    async fn note_stop(&mut self, stop: &mut Option<StopCause>, cause: StopCause) {
        if stop.is_some() || self.record.state.is_terminal() {
            return;
        }
        *stop = Some(cause);
        self.record.stop_reason = Some(cause.reason().to_owned());
        if let Err(error) = self.shared.store.put(&self.record).await {
            // The job's next change writes it again, and ends the job if refused.
            tracing::error!(job_id = %self.record.job_id, %error, "could not record the stop");
        }
    }

    /// Turns an observation into state changes. Returns whether the state changed.
    async fn observe(
        &mut self,
        observation: Observation,
        stop: Option<StopCause>,
        detail: Option<String>,
        persist: Persist,
    ) -> bool {
        match observation {
            Observation::Running => {
                if self.record.state != JobState::Starting {
                    return false;
                }
                if let Some(run_s) = self.run_s {
                    self.record.run_deadline = Some(timestamp_in(Duration::from_secs(run_s)));
                }
                let change = Change {
                    message: detail,
                    ..Change::default()
                };
                self.advance(JobState::Running, change, persist).await
            }
            Observation::Exited {
                exit,
                stopped,
                reason: exit_reason,
            } => {
                let to = state::state_after_exit(exit, stopped);
                // A workload seen only after it ended did run: say so before the end.
                if !self.record.state.can_become(to) && JobState::Running.can_become(to) {
                    let change = Change {
                        message: Some("the workload ended before it was seen running".into()),
                        ..Change::default()
                    };
                    self.advance(JobState::Running, change, Persist::WithNext)
                        .await;
                }
                let mut what = match exit {
                    state::Exit::Signal(signal) => format!("killed by signal {signal}"),
                    state::Exit::Code(code) => format!("exit code {code}"),
                };
                if exit_reason == Some(reason::OOM_KILLED) {
                    what = format!("killed for using more memory than its limit; {what}");
                }
                let (reason, message) = match stop {
                    // The pod's own deadline stopped it first (its worker was
                    // away, and its run_s timer fired only on its return).
                    Some(StopCause::RunTimeout)
                        if exit_reason == Some(reason::DEADLINE_EXCEEDED) =>
                    {
                        (exit_reason.map(str::to_owned), what)
                    }
                    Some(cause) if to == JobState::Terminated => (
                        Some(cause.reason().to_owned()),
                        format!("{}; {what}", cause.describe()),
                    ),
                    _ => (exit_reason.map(str::to_owned), what),
                };
                let change = Change {
                    reason,
                    message: Some(message),
                    exit_code: Some(exit.exit_code()),
                };
                self.advance(to, change, Persist::Now).await
            }
            Observation::StartFailed { reason, message } => {
                self.advance(
                    JobState::Error,
                    Change {
                        reason: Some(reason),
                        message: Some(message),
                        exit_code: None,
                    },
                    Persist::Now,
                )
                .await
            }
            Observation::Vanished { reason, message } => {
                self.advance(
                    JobState::Lost,
                    Change {
                        reason: Some(reason.into()),
                        message: Some(message),
                        exit_code: None,
                    },
                    Persist::Now,
                )
                .await
            }
        }
    }

    /// Records a state change (now, or with the change that follows), then
    /// publishes its event. Should the server refuse either for good, the job
    /// ends at once with a minimal record instead.
    async fn advance(&mut self, to: JobState, change: Change, persist: Persist) -> bool {
        if !apply(&mut self.record, to, change) {
            return false;
        }
        tracing::debug!(job_id = %self.record.job_id, seq = self.record.seq, state = %to, "job state changed");
        self.record_behind = persist == Persist::WithNext;
        let written = async {
            if persist == Persist::Now {
                self.shared.store.put(&self.record).await?;
            }
            let event = self.record.event(self.shared.backends.default_kind());
            self.shared.events.publish(&event).await?;
            Ok::<_, Refusal>(())
        };
        if let Err(refused) = written.await {
            self.record = rejected::end_job(&self.shared, &self.record, &refused).await;
            self.record_behind = false;
        }
        true
    }
}

/// Writes `record` again at each change of its launch's progress (the
/// workload's name as soon as it exists, what the launch is doing) until the
/// launch is over; returns the workload's name if it was reported.
async fn record_progress(
    store: &JobStore,
    mut record: JobRecord,
    mut reports: watch::Receiver<Progress>,
) -> Option<BackendRef> {
    while reports.changed().await.is_ok() {
        let Progress { backend_ref, step } = reports.borrow_and_update().clone();
        record.backend_ref = backend_ref;
        record.message = step;
        if let Err(error) = store.put(&record).await {
            // The job's next change writes its record again.
            tracing::warn!(job_id = %record.job_id, %error, "could not record the launch's progress");
        }
    }
    record.backend_ref
}
