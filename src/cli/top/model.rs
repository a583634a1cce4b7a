//! The view model of `top`: job events, lease changes and the workers'
//! resources folded into what the screen shows (workers with capacity, jobs
//! running and GPUs; jobs by state with their age, backend and worker;
//! failures by reason) and the selected job. Pure: no I/O, no terminal, time
//! passed in.
//!
//! Every text taken from a message is bounded and has its control characters
//! escaped as it comes in, so the drawing can show it as it is.

use crate::pool::members::LeaseChange;
use crate::protocol::bounded::one_line_to;
use crate::protocol::{BackendKind, JobEvent, ResourceStatus, WorkerLease};
use crate::state::JobState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most bytes of a job id shown: the protocol's longest, so that every job
/// that can have events keeps its own id (the output command needs it).
const MAX_JOB_ID: usize = 128;
/// Most bytes of another name (worker, host, pool, version) shown.
const MAX_ID: usize = 64;
/// Most bytes of a reason shown.
const MAX_REASON: usize = 48;
/// Most distinct (state, reason) pairs counted; the rest are counted together.
const MAX_FAILURE_KINDS: usize = 64;
/// What the failures past [`MAX_FAILURE_KINDS`] are counted as.
const OTHER_REASONS: &str = "(other reasons)";

/// A change the view folds in.
#[derive(Debug, Clone)]
pub enum Update {
    /// A job event (its latest at start, then each new one).
    Event(Box<JobEvent>),
    /// A worker's lease was written, or went.
    Lease(LeaseChange),
    /// A worker's resources (asked once per run of the worker).
    Resources(Box<ResourceStatus>),
    /// Something the view cannot follow any more, said plainly.
    Problem(String),
}

/// A live worker, as its lease and resources say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The worker's id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Its pool.
    pub pool: String,
    /// Its backends, comma-separated.
    pub backends: String,
    /// Jobs it runs now.
    pub running: u64,
    /// Most jobs it runs at once.
    pub capacity: u64,
    /// Its program's version.
    pub version: String,
    /// When it started, if the lease says so readably.
    pub started: Option<OffsetDateTime>,
    /// Its GPUs, once its resources are known (empty under `best-effort`).
    pub gpus: Option<usize>,
    /// The run of the worker the lease belongs to.
    pub instance: String,
}

/// A job, as its latest event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// Its state.
    pub state: JobState,
    /// Its latest event's number.
    pub seq: u64,
    /// Where it runs.
    pub backend: BackendKind,
    /// The worker that published its latest event.
    pub worker: String,
    /// When it entered its state.
    pub since: OffsetDateTime,
    /// Its return code, once ended.
    pub return_code: Option<i32>,
    /// Its reason, if any.
    pub reason: Option<String>,
    /// GPUs it holds.
    pub gpus: usize,
}

/// Failures (jobs that ended other than `succeeded`) of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailureKind {
    /// The state they ended in.
    pub state: JobState,
    /// Their reason, or what stands for none (`exit code N`).
    pub reason: String,
}

/// Everything `top` shows.
#[derive(Debug)]
pub struct Model {
    workers: BTreeMap<String, Worker>,
    jobs: HashMap<String, Job>,
    /// The ended jobs in view, oldest end first.
    ended: VecDeque<String>,
    keep_ended: usize,
    failures: HashMap<FailureKind, u64>,
    selected: Option<String>,
    problem: Option<String>,
}

impl Model {
    /// An empty view keeping at most `keep_ended` ended jobs (the most recent).
    pub fn new(keep_ended: usize) -> Self {
        Model {
            workers: BTreeMap::new(),
            jobs: HashMap::new(),
            ended: VecDeque::new(),
            keep_ended,
            failures: HashMap::new(),
            selected: None,
            problem: None,
        }
    }

    /// Folds one change in.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Event(event) => self.event(&event),
            Update::Lease(LeaseChange::Written(lease)) => self.lease(&lease),
            Update::Lease(LeaseChange::Gone(worker)) => {
                self.workers.remove(&one_line_to(&worker, MAX_ID));
            }
            Update::Resources(status) => {
                if let Some(worker) = self.workers.get_mut(&status.worker) {
                    worker.gpus = Some(status.gpus.len());
                }
            }
            Update::Problem(problem) => self.problem = Some(one_line_to(&problem, 512)),
        }
    }

    fn lease(&mut self, lease: &WorkerLease) {
        let id = one_line_to(&lease.worker, MAX_ID);
        let gpus = self
            .workers
            .get(&id)
            .filter(|known| known.instance == lease.instance)
            .and_then(|known| known.gpus);
        let backends: Vec<&str> = lease.backends.iter().map(|kind| kind.as_str()).collect();
        let worker = Worker {
            id: id.clone(),
            host: one_line_to(&lease.host, MAX_ID),
            pool: one_line_to(&lease.pool, MAX_ID),
            backends: backends.join(","),
            running: lease.running,
            capacity: lease.capacity,
            version: one_line_to(&lease.version, MAX_ID),
            started: OffsetDateTime::parse(&lease.started, &Rfc3339).ok(),
            gpus,
            instance: lease.instance.clone(),
        };
        self.workers.insert(id, worker);
    }

    fn event(&mut self, event: &JobEvent) {
        let id = one_line_to(&event.job_id, MAX_JOB_ID);
        if self.jobs.get(&id).is_some_and(|job| job.seq >= event.seq) {
            return;
        }
        let reason = event
            .reason
            .as_deref()
            .map(|reason| one_line_to(reason, MAX_REASON));
        if event.state.is_terminal() {
            if event.state != JobState::Succeeded {
                self.count_failure(event.state, reason.clone(), event.exit_code);
            }
            self.ended.push_back(id.clone());
        }
        let since = OffsetDateTime::parse(&event.ts, &Rfc3339)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let job = Job {
            id: id.clone(),
            state: event.state,
            seq: event.seq,
            backend: event.backend,
            worker: one_line_to(&event.worker, MAX_ID),
            since,
            return_code: event.return_code,
            reason,
            gpus: event.gpus.as_ref().map_or(0, Vec::len),
        };
        self.jobs.insert(id, job);
        while self.ended.len() > self.keep_ended {
            if let Some(oldest) = self.ended.pop_front() {
                self.jobs.remove(&oldest);
            }
        }
    }

    fn count_failure(&mut self, state: JobState, reason: Option<String>, exit: Option<i32>) {
        let reason = reason.unwrap_or_else(|| match exit {
            Some(code) => format!("exit code {code}"),
            None => "-".to_owned(),
        });
        let mut kind = FailureKind { state, reason };
        if !self.failures.contains_key(&kind) && self.failures.len() >= MAX_FAILURE_KINDS {
            kind.reason = OTHER_REASONS.to_owned();
        }
        *self.failures.entry(kind).or_default() += 1;
    }

    /// The live workers, by id.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// GPUs the jobs in view hold on `worker`.
    pub fn gpus_in_use(&self, worker: &str) -> usize {
        self.jobs
            .values()
            .filter(|job| !job.state.is_terminal() && job.worker == worker)
            .map(|job| job.gpus)
            .sum()
    }

    /// The jobs in view: running, then starting, each oldest first, then the
    /// ended ones, latest end first.
    pub fn jobs(&self) -> Vec<&Job> {
        let rank = |job: &Job| match job.state {
            JobState::Running => 0,
            JobState::Starting => 1,
            _ => 2,
        };
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by(|a, b| {
            rank(a).cmp(&rank(b)).then_with(|| {
                if a.state.is_terminal() {
                    b.since.cmp(&a.since)
                } else {
                    a.since.cmp(&b.since)
                }
                .then_with(|| a.id.cmp(&b.id))
            })
        });
        jobs
    }

    /// How many jobs in view are in each state, in the protocol's order.
    pub fn counts(&self) -> Vec<(JobState, usize)> {
        JobState::ALL
            .into_iter()
            .map(|state| {
                let count = self.jobs.values().filter(|job| job.state == state).count();
                (state, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Failures by kind, most first.
    pub fn failures(&self) -> Vec<(&FailureKind, u64)> {
        let mut failures: Vec<(&FailureKind, u64)> =
            self.failures.iter().map(|(kind, n)| (kind, *n)).collect();
        failures.sort_by(|a, b| {
            let kind = |k: &FailureKind| (k.state.as_str(), k.reason.clone());
            b.1.cmp(&a.1).then_with(|| kind(a.0).cmp(&kind(b.0)))
        });
        failures
    }

    /// What the view cannot follow any more, if anything.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The selected job's id (the first job's when none was chosen, or the
    /// chosen one left the view).
    pub fn selected(&self) -> Option<String> {
        self.selected_index()
            .and_then(|at| self.jobs().get(at).map(|job| job.id.clone()))
    }

    /// The selected job's place in [`Model::jobs`].
    pub fn selected_index(&self) -> Option<usize> {
        let jobs = self.jobs();
        if jobs.is_empty() {
            return None;
        }
        let chosen = self
            .selected
            .as_ref()
            .and_then(|id| jobs.iter().position(|job| &job.id == id));
        Some(chosen.unwrap_or(0))
    }

    /// Moves the selection `by` rows (negative: up), stopping at the ends.
    pub fn move_selection(&mut self, by: isize) {
        let Some(at) = self.selected_index() else {
            return;
        };
        let jobs = self.jobs();
        let to = at.saturating_add_signed(by).min(jobs.len() - 1);
        self.selected = Some(jobs[to].id.clone());
    }
}

/// A duration as its two largest units: `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn age(from: OffsetDateTime, now: OffsetDateTime) -> String {
    let s = (now - from).whole_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AssignedGpu;

    fn event(job: &str, seq: u64, state: JobState, ts: &str) -> JobEvent {
        JobEvent {
            v: 1,
            job_id: job.into(),
            seq,
            state,
            return_code: state.is_terminal().then_some(1),
            exit_code: (state == JobState::Failed).then_some(3),
            reason: None,
            message: None,
            worker: "w1".into(),
            backend: BackendKind::Process,
            ts: ts.into(),
            gpus: None,
        }
    }

    fn lease(worker: &str, instance: &str, running: u64) -> WorkerLease {
        WorkerLease {
            worker: worker.into(),
            host: "h".into(),
            pool: "default".into(),
            backends: vec![BackendKind::Process, BackendKind::Docker],
            capacity: 8,
            running,
            version: "1.0.0".into(),
            started: "2026-12-07T00:00:00Z".into(),
            lease_s: 10,
            instance: instance.into(),
        }
    }

    fn written(lease: WorkerLease) -> Update {
        Update::Lease(LeaseChange::Written(Box::new(lease)))
    }

    fn apply(model: &mut Model, event: JobEvent) {
        model.apply(Update::Event(Box::new(event)));
    }

    fn ids(model: &Model) -> Vec<&str> {
        model
            .jobs()
            .into_iter()
            .map(|job| job.id.as_str())
            .collect()
    }

    const T0: &str = "2026-12-07T10:00:00Z";
    const T1: &str = "2026-12-07T10:00:01Z";
    const T2: &str = "2026-12-07T10:00:02Z";

    #[test]
    fn a_job_shows_its_latest_state_and_an_older_event_changes_nothing() {
        let mut model = Model::new(10);
        apply(&mut model, event("j", 2, JobState::Running, T1));
        apply(&mut model, event("j", 1, JobState::Starting, T0));
        let job = &model.jobs()[0];
        assert_eq!((job.state, job.seq), (JobState::Running, 2));
        assert_eq!(
            age(job.since, OffsetDateTime::parse(T2, &Rfc3339).unwrap()),
            "1s"
        );
        apply(&mut model, event("j", 3, JobState::Failed, T2));
        assert_eq!(model.jobs()[0].state, JobState::Failed);
        assert_eq!(model.counts(), [(JobState::Failed, 1)]);
    }

    #[test]
    fn jobs_are_running_then_starting_then_ended_latest_first() {
        let mut model = Model::new(10);
        apply(&mut model, event("ended-early", 3, JobState::Succeeded, T0));
        apply(&mut model, event("ended-late", 3, JobState::Failed, T2));
        apply(&mut model, event("starting", 1, JobState::Starting, T0));
        apply(&mut model, event("running", 2, JobState::Running, T1));
        assert_eq!(
            ids(&model),
            ["running", "starting", "ended-late", "ended-early"]
        );
    }

    #[test]
    fn only_the_most_recent_ended_jobs_are_kept_and_every_failure_is_counted() {
        let mut model = Model::new(2);
        apply(&mut model, event("run", 2, JobState::Running, T0));
        for job in ["a", "b", "c"] {
            apply(&mut model, event(job, 3, JobState::Failed, T1));
        }
        let mut kept = ids(&model);
        kept.sort_unstable();
        assert_eq!(kept, ["b", "c", "run"]);
        let failures = model.failures();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0.reason, "exit code 3");
        assert_eq!(failures[0].1, 3);
    }

    #[test]
    fn failures_are_counted_by_state_and_reason_and_successes_are_not() {
        let mut model = Model::new(10);
        let with_reason = |job: &str, state, reason: &str| {
            let mut e = event(job, 2, state, T0);
            e.reason = Some(reason.into());
            e
        };
        apply(&mut model, event("ok", 3, JobState::Succeeded, T0));
        apply(
            &mut model,
            with_reason("t1", JobState::Terminated, "RunTimeout"),
        );
        apply(
            &mut model,
            with_reason("t2", JobState::Terminated, "RunTimeout"),
        );
        apply(
            &mut model,
            with_reason("e1", JobState::Error, "SpawnFailed"),
        );
        let failures: Vec<(JobState, &str, u64)> = model
            .failures()
            .into_iter()
            .map(|(kind, n)| (kind.state, kind.reason.as_str(), n))
            .collect();
        assert_eq!(
            failures,
            [
                (JobState::Terminated, "RunTimeout", 2),
                (JobState::Error, "SpawnFailed", 1)
            ]
        );
    }

    #[test]
    fn distinct_reasons_are_bounded() {
        let mut model = Model::new(1);
        for n in 0..MAX_FAILURE_KINDS + 5 {
            let mut e = event(&format!("j{n}"), 2, JobState::Error, T0);
            e.reason = Some(format!("Reason{n}"));
            apply(&mut model, e);
        }
        let failures = model.failures();
        assert_eq!(failures.len(), MAX_FAILURE_KINDS + 1);
        assert_eq!(
            failures[0],
            (
                &FailureKind {
                    state: JobState::Error,
                    reason: OTHER_REASONS.into()
                },
                5
            )
        );
    }

    #[test]
    fn text_from_events_is_bounded_and_on_one_line() {
        let mut model = Model::new(10);
        let mut e = event(&"x".repeat(500), 2, JobState::Error, T0);
        e.reason = Some("Bad\u{1b}[2Jreason\n".repeat(20));
        apply(&mut model, e);
        let job = &model.jobs()[0];
        assert!(job.id.len() <= MAX_JOB_ID, "{}", job.id);
        let reason = job.reason.as_deref().unwrap();
        assert!(reason.len() <= MAX_REASON, "{reason}");
        assert!(!reason.contains(char::is_control), "{reason}");
    }

    #[test]
    fn workers_come_and_go_with_their_leases_and_keep_their_gpus_per_run() {
        let mut model = Model::new(10);
        model.apply(written(lease("w1", "run-1", 1)));
        model.apply(Update::Resources(Box::new(ResourceStatus {
            worker: "w1".into(),
            pool: "default".into(),
            policy: "gpu".into(),
            ignore_host: false,
            gpus: vec![
                crate::protocol::GpuStatus {
                    index: 0,
                    uuid: None,
                    memory_mb: None,
                    job_id: None
                };
                4
            ],
            free: vec![],
            allocations: BTreeMap::new(),
        })));
        let mut e = event("gpu-job", 2, JobState::Running, T0);
        e.gpus = Some(vec![AssignedGpu {
            index: 0,
            uuid: None,
        }]);
        apply(&mut model, e);
        model.apply(written(lease("w1", "run-1", 2)));
        let worker = model.workers().next().unwrap();
        assert_eq!((worker.running, worker.capacity), (2, 8));
        assert_eq!(worker.gpus, Some(4));
        assert_eq!(worker.backends, "process,docker");
        assert_eq!(model.gpus_in_use("w1"), 1);

        model.apply(written(lease("w1", "run-2", 0)));
        assert_eq!(model.workers().next().unwrap().gpus, None);
        model.apply(Update::Lease(LeaseChange::Gone("w1".into())));
        assert_eq!(model.workers().count(), 0);
    }

    #[test]
    fn the_selection_follows_its_job_and_stops_at_the_ends() {
        let mut model = Model::new(10);
        assert_eq!(model.selected(), None);
        model.move_selection(1);
        apply(&mut model, event("a", 2, JobState::Running, T0));
        apply(&mut model, event("b", 2, JobState::Running, T1));
        assert_eq!(model.selected().as_deref(), Some("a"));
        model.move_selection(1);
        model.move_selection(1);
        assert_eq!(model.selected().as_deref(), Some("b"));
        // A job placed before it does not move the selection off it.
        apply(
            &mut model,
            event("c", 2, JobState::Running, "2026-12-07T09:00:00Z"),
        );
        assert_eq!(model.selected().as_deref(), Some("b"));
        assert_eq!(model.selected_index(), Some(2));
        model.move_selection(-5);
        assert_eq!(model.selected().as_deref(), Some("c"));
    }

    #[test]
    fn ages_use_their_two_largest_units() {
        let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        let at = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(age(at, t(42)), "42s");
        assert_eq!(age(at, t(303)), "5m03s");
        assert_eq!(age(at, t(7500)), "2h05m");
        assert_eq!(age(at, t(3 * 86_400 + 4 * 3600 + 5)), "3d04h");
        assert_eq!(age(t(10), at), "0s");
    }
}
