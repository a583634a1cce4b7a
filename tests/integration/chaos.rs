//! A worker killed in the middle of a busy pool: three workers, each running
//! process, Docker and Kubernetes (kube-sim) jobs, take 300 short jobs, and one
//! of them is SIGKILLed once a third of the jobs have ended. The survivors adopt
//! its Docker and Kubernetes jobs; then it comes back on its host (same id, same
//! data directory, as its service manager would start it again) and re-attaches
//! to the process jobs its supervisor kept, touching none of the jobs taken from
//! it. Every job ends exactly once, `succeeded`, without a repeated event, and
//! had exactly one workload: one container, one pod, one process.
//!
//! The workers run as processes of their own (the binary), on real processes,
//! the real Docker engine and kube-sim. Every count is printed with the checks
//! on it.

use crate::common::chaos::{publish_until_taken, stored_events, tally_when_ended, until_ended};
use crate::common::docker::{in_container, test_image, unique, wait_until_removed};
use crate::common::k8s::{Cluster, in_pod};
use crate::common::pool::{pool_until, record_until, signal};
use crate::common::system::{System, sh};
use crate::common::workloads::{ContainerCreations, pods_created};
use flare_launcher::protocol::{BackendKind, JobEvent, LaunchRequest};
use flare_launcher::state::JobState;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Jobs in the run, a third on each backend.
const JOBS: usize = 300;
/// The workers' lease, in seconds.
const LEASE_S: u64 = 3;
/// How long every job may take to end, the kill included.
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// How long the survivors may take to take the killed worker's jobs over (they
/// take them as room frees up).
const ADOPTION_LIMIT: Duration = Duration::from_secs(120);

/// Every event the events stream holds, by job.
type EventsByJob = BTreeMap<String, Vec<JobEvent>>;

/// One job of the run.
struct Job {
    id: String,
    backend: BackendKind,
    /// How long it runs.
    sleep: Duration,
}

/// Job `n` of the run `run`: on each backend in turn, sleeping 1 to 5 s (a
/// process job notes each start of its script in `starts`).
fn job(run: &str, n: usize, starts: &Path) -> (Job, LaunchRequest) {
    let id = format!("{run}-{n}");
    let sleep_s = 1 + (n / 3) % 5;
    let sleep = format!("sleep {sleep_s}");
    let (backend, request) = match n % 3 {
        0 => {
            let note = format!("echo $$ >> {}/{id}", starts.display());
            let mut request = sh(&id, &format!("{note}; {sleep}"));
            request.backend = Some(BackendKind::Process);
            (BackendKind::Process, request)
        }
        1 => (BackendKind::Docker, in_container(&id, &sleep)),
        _ => (BackendKind::K8s, in_pod(&id, &sleep)),
    };
    let sleep = Duration::from_secs(sleep_s as u64);
    (Job { id, backend, sleep }, request)
}

/// Whether `worker` runs, by `events`, a job on each backend with a second or
/// more still to go: killed now, it leaves jobs of every backend behind.
fn busy_on_every_backend(worker: &str, jobs: &[Job], events: &EventsByJob) -> bool {
    let now = time::OffsetDateTime::now_utc();
    let has_time_left = |job: &&Job| {
        let events = events.get(&job.id).map(Vec::as_slice).unwrap_or_default();
        let running = events
            .iter()
            .find(|e| e.state == JobState::Running && e.worker == worker);
        let since = running.and_then(|e| {
            time::OffsetDateTime::parse(&e.ts, &time::format_description::well_known::Rfc3339).ok()
        });
        !events.iter().any(|e| e.state.is_terminal())
            && since.is_some_and(|since| now - since < job.sleep - Duration::from_secs(1))
    };
    [BackendKind::Process, BackendKind::Docker, BackendKind::K8s]
        .iter()
        .all(|backend| {
            jobs.iter()
                .filter(|job| job.backend == *backend)
                .any(|job| has_time_left(&job))
        })
}

/// What a killed worker left: the jobs it had published an event of but no
/// terminal one, and the events stream as it was after the kill.
struct Left<'a> {
    worker: &'a str,
    jobs: Vec<&'a Job>,
    events: EventsByJob,
}

impl<'a> Left<'a> {
    /// What `worker` left of `jobs`, by `events` read after its kill.
    fn of(worker: &'a str, jobs: &'a [Job], events: EventsByJob) -> Left<'a> {
        let jobs = jobs
            .iter()
            .filter(|job| {
                let by_worker: Vec<&JobEvent> = events
                    .get(&job.id)
                    .into_iter()
                    .flatten()
                    .filter(|e| e.worker == worker)
                    .collect();
                !by_worker.is_empty() && !by_worker.iter().any(|e| e.state.is_terminal())
            })
            .collect();
        Left {
            worker,
            jobs,
            events,
        }
    }

    /// Its jobs on `backend`.
    fn on(&self, backend: BackendKind) -> Vec<&'a Job> {
        self.jobs
            .iter()
            .copied()
            .filter(|job| job.backend == backend)
            .collect()
    }

    /// Its Docker and Kubernetes jobs, which any worker of the pool can take.
    fn adoptable(&self) -> Vec<&'a Job> {
        [self.on(BackendKind::Docker), self.on(BackendKind::K8s)].concat()
    }

    /// Whether `job` was running when the worker was killed (rather than
    /// still being launched).
    fn was_running(&self, job: &Job) -> bool {
        self.events[&job.id]
            .iter()
            .any(|e| e.state == JobState::Running)
    }

    /// How many events the worker had published of `job`.
    fn published(&self, job: &Job) -> usize {
        published_by(self.worker, job, &self.events)
    }
}

/// How many events of `job` `worker` published, by `events`.
fn published_by(worker: &str, job: &Job, events: &EventsByJob) -> usize {
    events[&job.id]
        .iter()
        .filter(|e| e.worker == worker)
        .count()
}

/// The worker that published `job`'s last event.
fn last_worker<'e>(job: &Job, events: &'e EventsByJob) -> &'e str {
    &events[&job.id].last().expect("the job's events").worker
}

/// Checks that each Docker and Kubernetes job `left` names was finished by
/// one of `survivors`, and that the worker, back, published nothing more of
/// any; prints the counts.
fn assert_taken_over(left: &Left, survivors: &[String], events: &EventsByJob) {
    let adoptable = left.adoptable();
    let launching = adoptable
        .iter()
        .filter(|job| !left.was_running(job))
        .count();
    let by_survivor = adoptable
        .iter()
        .filter(|job| survivors.iter().any(|s| s == last_worker(job, events)))
        .count();
    let touched_when_back = adoptable
        .iter()
        .filter(|job| published_by(left.worker, job, events) != left.published(job))
        .count();
    println!(
        "taken over: {} Docker and {} Kubernetes jobs of {} ({launching} of them still launching); {by_survivor} finished by a survivor, {touched_when_back} touched by {} back",
        left.on(BackendKind::Docker).len(),
        left.on(BackendKind::K8s).len(),
        left.worker,
        left.worker,
    );
    assert_eq!((by_survivor, touched_when_back), (adoptable.len(), 0));
}

/// Checks that each process job `left` names that was running was ended by
/// its worker, back; prints the counts.
fn assert_process_jobs_taken_back(left: &Left, events: &EventsByJob) {
    let processes = left.on(BackendKind::Process);
    let running: Vec<&Job> = processes
        .iter()
        .copied()
        .filter(|job| left.was_running(job))
        .collect();
    let taken_back = running
        .iter()
        .filter(|job| last_worker(job, events) == left.worker)
        .count();
    println!(
        "process jobs of {}: {} left, {} running, {taken_back} of them ended by it, back",
        left.worker,
        processes.len(),
        running.len()
    );
    assert!(
        !running.is_empty(),
        "the kill should leave process jobs running"
    );
    assert_eq!(taken_back, running.len());
}

/// Checks that each of `jobs` on `backend` had exactly one workload by
/// `workloads` (a job's count of them), and prints the counts.
fn assert_one_workload_each(
    what: &str,
    jobs: &[Job],
    backend: BackendKind,
    workloads: &BTreeMap<String, usize>,
) {
    let ids = ids_on(jobs, backend);
    let total: usize = ids.iter().map(|id| workloads[*id]).sum();
    let not_one: Vec<(&str, usize)> = ids
        .iter()
        .map(|id| (*id, workloads[*id]))
        .filter(|(_, count)| *count != 1)
        .collect();
    println!(
        "{what}: {} jobs, {total} created, {} jobs without exactly one",
        ids.len(),
        not_one.len()
    );
    assert_eq!(not_one, [], "{what}: (job, workloads) not one each");
}

/// The ids of the `jobs` on `backend`.
fn ids_on(jobs: &[Job], backend: BackendKind) -> Vec<&str> {
    jobs.iter()
        .filter(|job| job.backend == backend)
        .map(|job| job.id.as_str())
        .collect()
}

/// The environment of the workers: every backend, kube-sim's kubeconfig, a
/// short lease.
fn worker_env(kubeconfig: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLARE_BACKENDS", "process,docker,k8s".into()),
        ("FLARE_KUBECONFIG", kubeconfig.into()),
        ("FLARE_LEASE_S", LEASE_S.to_string()),
        ("FLARE_MAX_JOBS", "16".into()),
        // A launch cut short by the kill comes again soon.
        ("FLARE_ACK_WAIT_S", "10".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_worker_killed_amid_300_jobs_on_three_backends_leaves_every_job_one_end_and_one_workload()
{
    test_image();
    let cluster = Cluster::start(|_| {}).await;
    let system = System::without_worker(|_| {}).await;
    let starts = system.path("starts");
    std::fs::create_dir(&starts).unwrap();
    let env = worker_env(&cluster.kubeconfig.display().to_string());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| unique(&format!("chaos-{name}")))
        .collect();
    let mut workers: Vec<tokio::process::Child> = ids
        .iter()
        .map(|id| system.spawn_worker_process(id, &system.path(id), &env))
        .collect();
    pool_until(&system, Duration::from_secs(60), |live| {
        ids.iter().all(|id| live.contains(id))
    })
    .await;
    // Each lease held a whole period: every worker may adopt.
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;

    let containers = ContainerCreations::follow();
    let run = unique("chaos");
    let (jobs, requests): (Vec<Job>, Vec<LaunchRequest>) =
        (0..JOBS).map(|n| job(&run, n, &starts)).unzip();
    let job_ids: Vec<String> = jobs.iter().map(|job| job.id.clone()).collect();
    let started = Instant::now();
    for request in &requests {
        publish_until_taken(&system.client, request).await;
    }

    // A third of the way, once it runs jobs of every backend.
    let at_kill = until_ended(&system.client, &job_ids, JOBS / 3, RUN_LIMIT).await;
    let (doomed, survivors) = (&ids[0], &ids[1..]);
    let deadline = Instant::now() + RUN_LIMIT;
    while !busy_on_every_backend(doomed, &jobs, &stored_events(&system.client).await.unwrap()) {
        assert!(
            Instant::now() < deadline,
            "{doomed} never ran jobs of every backend at once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&workers[0], Signal::SIGKILL);
    let killed = Instant::now();
    workers[0].wait().await.expect("the killed worker reaped");
    println!(
        "killed {doomed} {:?} after the first launch, {} jobs ended",
        killed - started,
        at_kill.ended
    );
    pool_until(&system, Duration::from_secs(30), |live| {
        !live.contains(doomed)
    })
    .await;
    println!("its lease lapsed {:?} after the kill", killed.elapsed());
    // Nothing it published can come after the kill.
    let after_kill = stored_events(&system.client)
        .await
        .expect("the events stream reads");
    let left = Left::of(doomed, &jobs, after_kill);
    println!(
        "{doomed} left {} jobs unfinished: {} process, {} Docker, {} Kubernetes",
        left.jobs.len(),
        left.on(BackendKind::Process).len(),
        left.on(BackendKind::Docker).len(),
        left.on(BackendKind::K8s).len()
    );
    assert!(
        [BackendKind::Process, BackendKind::Docker, BackendKind::K8s]
            .iter()
            .all(|backend| !left.on(*backend).is_empty()),
        "the kill should leave jobs of every backend behind"
    );
    for job in left.adoptable() {
        record_until(&system, &job.id, ADOPTION_LIMIT, |r| &r.worker != doomed).await;
    }
    println!(
        "the survivors took all {} {:?} after the kill",
        left.adoptable().len(),
        killed.elapsed()
    );

    // It comes back, and takes back the process jobs its supervisor kept.
    let _back = system.spawn_worker_process(doomed, &system.path(doomed), &env);
    let tally = tally_when_ended(&system.client, &job_ids, RUN_LIMIT).await;
    println!(
        "all {JOBS} jobs ended {:?} after the first launch",
        started.elapsed()
    );
    assert_eq!(
        (
            tally.jobs,
            tally.ended,
            tally.terminal,
            tally.succeeded,
            tally.repeated,
            tally.gapped
        ),
        (JOBS, JOBS, JOBS, JOBS, 0, 0),
        "one terminal event per job, succeeded, none repeated: {tally:?}"
    );
    let events = stored_events(&system.client)
        .await
        .expect("the events stream reads");
    assert_taken_over(&left, survivors, &events);
    assert_process_jobs_taken_back(&left, &events);

    let created = containers.stop(&job_ids).await;
    assert_one_workload_each("containers", &jobs, BackendKind::Docker, &created);
    let pods = pods_created(&cluster, &job_ids).await;
    assert_one_workload_each("pods", &jobs, BackendKind::K8s, &pods);
    let processes: BTreeMap<String, usize> = job_ids
        .iter()
        .map(|id| {
            let noted = std::fs::read_to_string(starts.join(id)).unwrap_or_default();
            (id.clone(), noted.lines().count())
        })
        .collect();
    assert_one_workload_each("processes", &jobs, BackendKind::Process, &processes);

    wait_until_removed(&ids_on(&jobs, BackendKind::Docker)).await;
}
