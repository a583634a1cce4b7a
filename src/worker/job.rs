//! One task per job: it launches the workload, follows the backend's observations,
//! acts on terminate commands and time limits, and tells the job's story through
//! its [`Story`] (so `seq` is gap-free without locks). It holds the job's GPUs
//! (under the `gpu` policy) until the workload has ended.
//!
//! Should its story be taken over ([`Superseded`]: someone else wrote the job's
//! record), the task writes and publishes nothing more and ends at once, leaving
//! the workload to whoever tells the story now.

use super::registry::{JobCommand, Registration};
use super::request_ack::RequestAck;
use super::story::{Change, Persist, Story, Superseded};
use crate::backend::{
    Backend, Backends, GpuAssignment, LaunchError, LaunchProgress, Launched, Observation,
    ProgressReports, WorkloadControl,
};
use crate::protocol::{
    DEFAULT_GRACE_S, DEFAULT_START_TIMEOUT_S, JobRecord, LaunchRequest, reason, time_until,
    timestamp_in,
};
use crate::report::error_chain;
use crate::resources::gpu_pool::GpuLease;
use crate::state::{self, JobState};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// Longest time a job that ended before its workload's end was seen keeps its
/// GPUs, waiting for that end (the workload was told to stop at once).
const WORKLOAD_END_WAIT: Duration = Duration::from_secs(60);

/// What a job task needs of its worker besides its story: where jobs run, and
/// the signal that the worker gives up on the jobs still running.
pub struct JobSupport {
    /// The worker's backends.
    pub backends: Backends,
    /// Cancelled when the drain timeout has run out: jobs still running stop.
    pub hard_stop: CancellationToken,
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

/// A job this worker owns, with everything its task needs.
pub struct Job {
    support: Arc<JobSupport>,
    story: Story,
    /// Someone else wrote the job's record: the task ends at once.
    taken_over: bool,
    /// The record found when the job was taken over says it ended: its
    /// workload must not outlive it.
    taken_over_ended: bool,
    /// The worker handed the job over to the pool as it left.
    handed_over: bool,
    /// The launch request's delivery, until the job no longer needs it.
    delivery: Option<RequestAck>,
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
        support: Arc<JobSupport>,
        story: Story,
        registration: Registration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Job {
            support,
            story,
            taken_over: false,
            taken_over_ended: false,
            handed_over: false,
            delivery: None,
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

    /// Runs a newly claimed job to its terminal event; its `delivery` is
    /// acknowledged once the record names the workload or ends the job (see
    /// [`super::request_ack`]).
    pub async fn launch(mut self, request: LaunchRequest, delivery: RequestAck) {
        self.start_s = request.start_timeout_s();
        self.start_deadline = Instant::now() + Duration::from_secs(self.start_s);
        self.run_s = request.run_timeout_s();
        if let Some(published) = delivery.published() {
            self.story.note_requested_at(published);
        }
        let starting = self.story.announcement();
        let (progress, reports) = LaunchProgress::channel();
        let launch = Launch {
            backends: &self.support.backends,
            gpus: GpuAssignment::from_recorded(self.story.record().gpus.as_deref()),
            start_s: self.start_s,
            deadline: self.start_deadline,
        };
        // The workload is created while the `starting` event is on its way, and
        // the record follows the launch's progress; nothing else is published or
        // written before all are done, so events and records stay in order.
        let (published, created, recorded) = tokio::join!(
            starting.publish(),
            async {
                let created = tokio::select! {
                    created = launch.create_workload(&request, &progress) => created,
                    () = delivery.keep_in_progress() => unreachable!("keeping a request in progress never ends"),
                };
                drop(progress);
                created
            },
            record_progress(&mut self.story, reports),
        );
        drop(request);
        self.delivery = Some(delivery);
        if let Err(superseded) = recorded {
            return self.taken_over(superseded);
        }
        if let Err(refused) = published {
            if let Ok((backend, launched)) = &created {
                launched.control.stop(Duration::ZERO).await;
                self.backend = Some(backend.clone());
            }
            if let Err(superseded) = self.story.end_refused(&refused).await {
                return self.taken_over(superseded);
            }
            return self.finish().await;
        }
        match created {
            Ok((backend, launched)) => {
                self.backend = Some(backend);
                self.story.name_workload(launched.backend_ref.clone());
                self.settle_delivery().await;
                let unended = self.follow(launched).await;
                self.await_workload_end(unended).await;
            }
            Err(failed) => {
                // A backend that tried keeps what it knows of the attempt until
                // the job's end is recorded.
                self.backend = failed.backend;
                self.story.note_launch_failure(failed.error);
                self.advance(JobState::Error, failed.change, Persist::Now)
                    .await;
            }
        }
        self.finish().await;
    }

    /// Follows a workload found again after the worker restarted to the job's
    /// terminal event; its `seq`, run deadline and stop carry on from the record.
    pub async fn resume(mut self, backend: Arc<dyn Backend>, launched: Launched) {
        self.backend = Some(backend);
        if self.story.record().backend_ref.is_none() {
            self.story.name_workload(launched.backend_ref.clone());
        }
        let unended = self.follow(launched).await;
        self.await_workload_end(unended).await;
        self.finish().await;
    }

    /// Takes up the job of a record this worker now owns whose workload it has
    /// not found yet (its worker went, or this worker restarted and its backend
    /// did not list it): looks the workload up by its name, retrying while the
    /// backend cannot tell, and follows it, or ends the job when it is not there.
    /// A terminate meanwhile is recorded, and carried out once the workload is
    /// found.
    pub async fn reattach(mut self, backend: Arc<dyn Backend>, occasion: Reattach) {
        let Some(adopt) = backend.adoption() else {
            return self.end_unfound(occasion, false).await;
        };
        let mut failures = crate::retry::Delays::default();
        let mut stop = None;
        let launched = loop {
            match adopt.adopt(self.story.record()).await {
                Ok(Some(launched)) => break launched,
                Ok(None) => return self.end_unfound(occasion, true).await,
                Err(e) => {
                    let delay = failures.next_delay();
                    tracing::warn!(error = %error_chain(&e), retry_in = ?delay, "cannot look the job's workload up; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.support.hard_stop.cancelled() => return self.finish().await,
                        Some(command) = self.registration.commands.recv() => match command {
                            JobCommand::Terminate { .. } => self.note_stop(&mut stop, StopCause::Terminate).await,
                            JobCommand::HandOver => {
                                self.handed_over = true;
                                return self.finish().await;
                            }
                        },
                    }
                    if self.taken_over {
                        return;
                    }
                }
            }
        };
        tracing::info!(state = %self.story.record().state, "{}", occasion.found());
        self.resume(backend, launched).await;
    }

    /// Ends a job whose workload is not there (see [`Job::reattach`]).
    async fn end_unfound(self, occasion: Reattach, adoptable: bool) {
        let (to, change) = end_of_unfound(self.story.record(), adoptable, occasion);
        tracing::warn!(state = %self.story.record().state, ended = %to, "the job's workload is not there; the job ends");
        self.end(to, change).await;
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
            tracing::warn!(gpus = ?lease.gpus(), "the workload was not seen to end; its GPUs are handed out again");
        }
    }

    /// Logs the end, frees the job's share of the worker's capacity and lets
    /// the backend go of the workload: the next job need not wait while a
    /// container or pod that ended is removed. A job taken over lets go of
    /// nothing: its workload is the new writer's.
    async fn finish(mut self) {
        if self.taken_over {
            // Its request, if still held, comes again to whoever owns the job now.
            return;
        }
        if self.handed_over {
            tracing::info!(state = %self.story.record().state, "job handed over to the pool");
            if let Some(delivery) = self.delivery.take() {
                delivery.hand_back().await;
            }
            return;
        }
        if let Some(delivery) = self.delivery.take() {
            delivery.ack().await;
        }
        let record = self.story.record();
        tracing::info!(
            state = %record.state,
            return_code = ?record.return_code,
            "job ended"
        );
        drop(self.permit.take());
        if let Some(backend) = &self.backend
            && record.state.is_terminal()
        {
            backend.release(&record.job_id).await;
        }
    }

    /// Notes that someone else wrote the job's record: the task ends without
    /// writing, publishing or stopping anything more.
    fn taken_over(&mut self, superseded: Superseded) {
        tracing::error!(
            found = ?superseded.found.as_ref().map(|record| (&record.worker, record.state, record.seq)),
            "someone else wrote the job's record; this worker lets the job go"
        );
        self.taken_over = true;
        self.taken_over_ended = superseded
            .found
            .is_some_and(|record| record.state.is_terminal());
    }

    /// Whether the job is still this worker's to act on (see
    /// [`Story::confirm_owned`]); notes a take-over when it is not.
    async fn still_mine(&mut self) -> bool {
        if self.taken_over {
            return false;
        }
        match self.story.confirm_owned().await {
            Ok(()) => true,
            Err(superseded) => {
                self.taken_over(superseded);
                false
            }
        }
    }

    /// Stops the workload for `cause`, once the job is confirmed to be this
    /// worker's, after recording the first stop asked (a write that the
    /// record's compare-and-set fences).
    async fn stop_workload(
        &mut self,
        control: &dyn WorkloadControl,
        grace: Duration,
        stop: &mut Option<StopCause>,
        cause: StopCause,
    ) {
        if !self.still_mine().await {
            return;
        }
        self.note_stop(stop, cause).await;
        if !self.taken_over {
            control.stop(grace).await;
        }
    }

    /// Follows the workload until the job is terminal. Returns its observations
    /// when the job ended without the workload's end being seen. The job's GPUs
    /// are free as soon as that end is seen, before it is recorded.
    async fn follow(&mut self, mut launched: Launched) -> Option<mpsc::Receiver<Observation>> {
        let control = launched.control;
        let mut workload_ended = false;
        let mut stop = self
            .story
            .record()
            .stop_reason
            .as_deref()
            .and_then(StopCause::from_reason);
        let mut shutting_down = false;
        let mut run_deadline = self.run_deadline();
        let mut run_timed_out = false;
        let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        // A stop recorded for the job that its workload may not have had yet (its
        // worker went before carrying it out, or the job was taken over).
        if stop.is_some() && !self.story.record().state.is_terminal() && self.still_mine().await {
            control.stop(Duration::from_secs(DEFAULT_GRACE_S)).await;
        }
        while !self.story.record().state.is_terminal() && !self.taken_over {
            let starting = self.story.record().state == JobState::Starting;
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
                            self.story.note_workload_ended();
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
                            && self.story.record().state == JobState::Running
                        {
                            run_deadline = self.run_deadline();
                        }
                        match later {
                            Some(next) if !self.story.record().state.is_terminal() && !self.taken_over => observation = next,
                            _ => break,
                        }
                    }
                    // Should the end not have come as expected, the record catches up.
                    if let Err(superseded) = self.story.catch_up().await {
                        self.taken_over(superseded);
                    }
                    self.settle_delivery().await;
                }
                Some(command) = self.registration.commands.recv() => match command {
                    JobCommand::Terminate { grace } => {
                        self.stop_workload(control.as_ref(), grace, &mut stop, StopCause::Terminate).await;
                    }
                    JobCommand::HandOver => {
                        self.handed_over = true;
                        return None;
                    }
                },
                () = sleep_until(self.start_deadline), if starting => {
                    if !self.still_mine().await {
                        break;
                    }
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
                    self.stop_workload(control.as_ref(), Duration::from_secs(DEFAULT_GRACE_S), &mut stop, StopCause::RunTimeout).await;
                }
                // Also after a terminate with a long grace: the worker is leaving
                // and must not leave the workload behind.
                () = self.support.hard_stop.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    self.stop_workload(control.as_ref(), Duration::from_secs(DEFAULT_GRACE_S), &mut stop, StopCause::WorkerShutdown).await;
                }
            }
        }
        if self.taken_over {
            if self.taken_over_ended {
                // The job's story ended elsewhere (declared lost while this
                // worker was away): its workload must not go on.
                tracing::warn!(
                    "the job ended elsewhere while this worker followed it; stopping its workload"
                );
                control.stop(Duration::ZERO).await;
            }
            return None;
        }
        // Ended by a refused write (`running`, say) while its workload may still
        // run: it must not be left behind (a stop after its exit does nothing).
        if self.story.record().reason.as_deref() == Some(reason::RECORD_REJECTED) {
            control.stop(Duration::ZERO).await;
        }
        (!workload_ended).then_some(launched.observations)
    }

    /// Acknowledges the launch request once the stored record names the
    /// workload or ends the job.
    async fn settle_delivery(&mut self) {
        if self.story.launch_settled()
            && let Some(delivery) = self.delivery.take()
        {
            delivery.ack().await;
        }
    }

    /// When `run_s` runs out, as the record keeps it (set when the job starts
    /// running, so a restarted worker keeps the same limit).
    fn run_deadline(&self) -> Option<Instant> {
        let left = time_until(self.story.record().run_deadline.as_deref()?)?;
        Some(Instant::now() + left)
    }

    /// Records the first stop asked of a running workload, so that its end is
    /// reported with that cause, also by a worker that restarts before the end.
    async fn note_stop(&mut self, stop: &mut Option<StopCause>, cause: StopCause) {
        if stop.is_some() || self.story.record().state.is_terminal() {
            return;
        }
        *stop = Some(cause);
        if let Err(superseded) = self.story.record_stop(cause.reason()).await {
            self.taken_over(superseded);
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
                if self.story.record().state != JobState::Starting {
                    return false;
                }
                if let Some(run_s) = self.run_s {
                    self.story
                        .set_run_deadline(timestamp_in(Duration::from_secs(run_s)));
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
                // A workload seen only after it ended did run: say so before the
                // end, with what a `running` event says of it (where its output is).
                if !self.story.record().state.can_become(to) && JobState::Running.can_become(to) {
                    let late = "the workload ended before it was seen running";
                    let change = Change {
                        message: Some(match detail {
                            Some(detail) => format!("{late}; {detail}"),
                            None => late.to_owned(),
                        }),
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

    /// Takes the job's story to `to` (see [`Story::advance`]). Returns whether
    /// the state changed; once the story is taken over, nothing changes.
    async fn advance(&mut self, to: JobState, change: Change, persist: Persist) -> bool {
        if self.taken_over {
            return false;
        }
        match self.story.advance(to, change, persist).await {
            Ok(changed) => changed,
            Err(superseded) => {
                self.taken_over(superseded);
                false
            }
        }
    }
}

/// How a job's workload is created: on which backend, with which GPUs, by when.
struct Launch<'a> {
    backends: &'a Backends,
    gpus: GpuAssignment,
    start_s: u64,
    deadline: Instant,
}

impl Launch<'_> {
    /// Creates the workload within the start timeout; on failure, what
    /// ends the job in `error`.
    async fn create_workload(
        &self,
        request: &LaunchRequest,
        progress: &LaunchProgress,
    ) -> Result<(Arc<dyn Backend>, Launched), LaunchFailed> {
        let refused = |backend, e: LaunchError| LaunchFailed {
            backend,
            change: Change::because(e.reason(), e.to_string()),
            error: e.label(),
        };
        let backend = self
            .backends
            .for_request(request)
            .map_err(|e| refused(None, e))?;
        match tokio::time::timeout_at(self.deadline, backend.launch(request, &self.gpus, progress))
            .await
        {
            Ok(Ok(launched)) => Ok((backend, launched)),
            Ok(Err(e)) => Err(refused(Some(backend), e)),
            Err(_) => Err(LaunchFailed {
                backend: Some(backend),
                change: Change::because(
                    reason::START_TIMEOUT,
                    format!(
                        "the backend did not create the workload within {} s",
                        self.start_s
                    ),
                ),
                error: "start_timeout",
            }),
        }
    }
}

/// A launch that failed.
struct LaunchFailed {
    /// The backend that tried, if one did.
    backend: Option<Arc<dyn Backend>>,
    /// The change that ends the job in `error`.
    change: Change,
    /// The kind of failure, to count it by.
    error: &'static str,
}

/// Writes the job's record again at each change of its launch's progress (the
/// workload's name as soon as it exists, what the launch is doing) until the
/// launch is over.
async fn record_progress(
    story: &mut Story,
    mut reports: ProgressReports,
) -> Result<(), Superseded> {
    while let Some(progress) = reports.next().await {
        let stored = story.record_progress(progress.clone()).await?;
        reports.recorded(progress, stored);
    }
    Ok(())
}

/// When a worker takes up a job whose workload it has not followed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reattach {
    /// The worker restarted, and its backends did not list the workload.
    Restart,
    /// The worker took the job over from one that went.
    Adoption,
}

impl Reattach {
    fn found(self) -> &'static str {
        match self {
            Reattach::Restart => {
                "re-attached to a job's workload found by its name after a restart"
            }
            Reattach::Adoption => "adopted a job's workload from a worker that went",
        }
    }

    fn when(self) -> &'static str {
        match self {
            Reattach::Restart => "when its worker restarted",
            Reattach::Adoption => {
                "when another worker took the job over from its worker, which went"
            }
        }
    }
}

/// The true end of a job whose workload is not there: never created (its worker
/// went away while launching it), stopped before it ran, or gone. A backend
/// that cannot adopt a workload by name (`adoptable` false) found again all it
/// can at start: the job ends at once, its message saying so.
pub fn end_of_unfound(
    record: &JobRecord,
    adoptable: bool,
    occasion: Reattach,
) -> (JobState, Change) {
    match (
        record.state,
        &record.backend_ref,
        record.stop_reason.as_deref(),
    ) {
        (JobState::Starting, _, Some(stop)) => (
            JobState::Terminated,
            Change::because(stop, "stopped before its workload ran"),
        ),
        (JobState::Starting, None, None) => (
            JobState::Error,
            Change::because(
                reason::LAUNCH_INTERRUPTED,
                "the worker went away while launching the job, before its workload existed; it never ran",
            ),
        ),
        _ if adoptable => (
            JobState::Lost,
            Change::because(
                reason::WORKLOAD_VANISHED,
                format!("its workload was not there {}", occasion.when()),
            ),
        ),
        _ => (
            JobState::Lost,
            Change::because(
                reason::WORKLOAD_VANISHED,
                format!(
                    "its workload was not among those found again {}, and its backend cannot look for one by name",
                    occasion.when()
                ),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BackendRef, JobId};
    use crate::worker::story::fresh_record;

    #[test]
    fn a_job_whose_backend_cannot_adopt_ends_lost_saying_so() {
        let mut record = fresh_record(&JobId::new("j").unwrap(), "w", JobState::Running);
        record.backend_ref = Some(BackendRef::K8s {
            namespace: "n".into(),
            pod: "flare-j".into(),
            uid: "u".into(),
        });
        let (to, change) = end_of_unfound(&record, false, Reattach::Restart);
        assert_eq!(to, JobState::Lost);
        assert_eq!(change.reason.as_deref(), Some(reason::WORKLOAD_VANISHED));
        let message = change.message.unwrap_or_default();
        assert!(message.contains("cannot look for one by name"), "{message}");
        let (to, change) = end_of_unfound(&record, true, Reattach::Adoption);
        assert_eq!(to, JobState::Lost);
        let message = change.message.unwrap_or_default();
        assert!(!message.contains("by name"), "{message}");
        assert!(message.contains("took the job over"), "{message}");
    }
}
