//! A restarted worker's recovery (`resume_jobs`) over the records its earlier
//! self left in a real nats-server, with an in-process fake backend that finds
//! or adopts scripted workloads: a workload found again goes on with its job's
//! `seq`; a job without a workload ends with what is true of it (it never ran,
//! it was stopped, it is lost, saying whether its backend could look for it);
//! an adopted workload is followed to its end; a job found again holds its
//! GPUs until its workload ends; a workload of another worker's job is stopped.

use crate::common::fake_backend::{FakeBackend, exited};
use crate::common::nats_server::NatsServer;
use crate::common::story_bench::{Bench, bench, states};
use flare_launcher::backend::{Backends, Observation};
use flare_launcher::protocol::{AssignedGpu, BackendRef, reason};
use flare_launcher::resources::ResourcePolicy;
use flare_launcher::resources::gpu_pool::GpuPool;
use flare_launcher::resources::inventory::InventoryGpu;
use flare_launcher::state::{JobState, return_code};
use flare_launcher::worker::job::JobSupport;
use flare_launcher::worker::recovery::{Recovery, resume_jobs};
use flare_launcher::worker::registry::{JobCommand, Registry};
use flare_launcher::worker::story::{Change, Persist, Story};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the jobs recovery took on are waited for before a test gives up.
const TASKS_WAIT: Duration = Duration::from_secs(60);

/// The same worker started again, with the bucket opened anew (as a worker
/// does at start, before its recovery).
async fn restarted(nats: &NatsServer) -> Bench {
    bench(nats, "w1").await
}

/// The recovery of `bench`'s worker, restarted with `backend` its only backend.
fn recovery(bench: &Bench, backend: Arc<FakeBackend>, resources: ResourcePolicy) -> Recovery {
    Recovery {
        author: bench.author.clone(),
        jobs: Arc::new(JobSupport {
            backends: Backends::new(backend),
            hard_stop: CancellationToken::new(),
        }),
        registry: Registry::default(),
        resources,
    }
}

/// Runs `recovery`; returns the tasks it started, closed.
async fn recover(recovery: &Recovery) -> TaskTracker {
    let tasks = TaskTracker::new();
    resume_jobs(recovery, &Arc::new(Semaphore::new(4)), &tasks).await;
    tasks.close();
    tasks
}

/// Runs `recovery` and waits until every task it started has ended.
async fn recover_all(recovery: &Recovery) {
    settled(&recover(recovery).await).await;
}

async fn settled(tasks: &TaskTracker) {
    tokio::time::timeout(TASKS_WAIT, tasks.wait())
        .await
        .expect("the tasks recovery started ended");
}

/// Takes a claimed job to `running` on its workload, as its worker did before
/// it went away.
async fn run(mut story: Story) {
    story.name_workload(BackendRef::Process { pid: 1 });
    let changed = story
        .advance(JobState::Running, Change::default(), Persist::Now)
        .await
        .unwrap();
    assert!(changed);
}

#[tokio::test]
async fn a_workload_found_again_goes_on_with_its_jobs_seq() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    run(earlier.claimed("r1").await).await;
    let bench = restarted(&nats).await;
    let backend = Arc::new(
        FakeBackend::idle().recovering(vec![("r1", vec![Observation::Running, exited(0)])]),
    );
    let recovery = recovery(&bench, backend.clone(), ResourcePolicy::BestEffort);
    recover_all(&recovery).await;
    let ended = bench.ended("r1").await;
    assert_eq!(
        (ended.state, ended.seq, ended.exit_code),
        (JobState::Succeeded, 3, Some(0))
    );
    assert_eq!(
        states(&bench.events("r1").await),
        [(2, JobState::Running), (3, JobState::Succeeded)]
    );
    assert!(backend.launches.lock().unwrap().is_empty());
    assert_eq!(recovery.registry.count(), 0);
}

#[tokio::test]
async fn a_job_left_starting_without_a_workload_is_left_for_its_request() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    earlier.claimed("r2").await;
    let claimed = earlier.stored("r2").await;
    let bench = restarted(&nats).await;
    let backend = Arc::new(FakeBackend::idle());
    let recovery = recovery(&bench, backend.clone(), ResourcePolicy::BestEffort);
    recover_all(&recovery).await;
    // Its request was not acknowledged: it comes again and launches the job.
    assert_eq!(bench.stored("r2").await, claimed);
    assert!(bench.events("r2").await.is_empty());
    assert!(backend.launches.lock().unwrap().is_empty());
    assert_eq!(recovery.registry.count(), 0);
}

#[tokio::test]
async fn a_running_job_whose_backend_cannot_adopt_ends_lost_saying_so() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    run(earlier.claimed("r3").await).await;
    let bench = restarted(&nats).await;
    let backend = Arc::new(FakeBackend::idle());
    recover_all(&recovery(&bench, backend, ResourcePolicy::BestEffort)).await;
    let ended = bench.ended("r3").await;
    assert_eq!(
        (ended.state, ended.seq, ended.return_code),
        (JobState::Lost, 3, Some(return_code::INFRASTRUCTURE_ERROR))
    );
    assert_eq!(ended.reason.as_deref(), Some(reason::WORKLOAD_VANISHED));
    let message = ended.message.unwrap_or_default();
    assert!(message.contains("cannot look for one by name"), "{message}");
}

#[tokio::test]
async fn a_running_job_whose_workload_is_adopted_is_followed_to_its_end() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    run(earlier.claimed("r4").await).await;
    let bench = restarted(&nats).await;
    let backend =
        Arc::new(FakeBackend::idle().adopting(vec![("r4", vec![Observation::Running, exited(3)])]));
    recover_all(&recovery(
        &bench,
        backend.clone(),
        ResourcePolicy::BestEffort,
    ))
    .await;
    assert_eq!(*backend.adoptions.lock().unwrap(), ["r4"]);
    let ended = bench.ended("r4").await;
    assert_eq!(
        (ended.state, ended.seq, ended.exit_code),
        (JobState::Failed, 3, Some(3))
    );
    assert_eq!(
        states(&bench.events("r4").await),
        [(2, JobState::Running), (3, JobState::Failed)]
    );
}

#[tokio::test]
async fn a_running_job_whose_backend_finds_no_workload_to_adopt_ends_lost() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    run(earlier.claimed("r5").await).await;
    let bench = restarted(&nats).await;
    let backend = Arc::new(FakeBackend::idle().adopting(Vec::new()));
    recover_all(&recovery(
        &bench,
        backend.clone(),
        ResourcePolicy::BestEffort,
    ))
    .await;
    assert_eq!(*backend.adoptions.lock().unwrap(), ["r5"]);
    let ended = bench.ended("r5").await;
    assert_eq!(ended.state, JobState::Lost);
    assert_eq!(ended.reason.as_deref(), Some(reason::WORKLOAD_VANISHED));
    assert_eq!(
        ended.message.as_deref(),
        Some("its workload was not there when its worker restarted")
    );
}

#[tokio::test]
async fn a_job_whose_stop_was_asked_before_its_workload_ran_ends_terminated() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    let mut story = earlier.claimed("r6").await;
    story
        .record_stop(reason::TERMINATE_REQUESTED)
        .await
        .unwrap();
    let bench = restarted(&nats).await;
    recover_all(&recovery(
        &bench,
        Arc::new(FakeBackend::idle()),
        ResourcePolicy::BestEffort,
    ))
    .await;
    let ended = bench.ended("r6").await;
    assert_eq!(
        (ended.state, ended.seq, ended.return_code),
        (JobState::Terminated, 2, Some(return_code::ABORTED))
    );
    assert_eq!(ended.reason.as_deref(), Some(reason::TERMINATE_REQUESTED));
    assert_eq!(
        ended.message.as_deref(),
        Some("stopped before its workload ran")
    );
}

/// The job holding each GPU of `pool`, by index.
fn holders(pool: &GpuPool) -> Vec<Option<String>> {
    pool.uses().into_iter().map(|gpu| gpu.job_id).collect()
}

#[tokio::test]
async fn a_job_found_again_holds_its_gpus_until_its_workload_ends() {
    let nats = NatsServer::start();
    let earlier = bench(&nats, "w1").await;
    let mut opening = earlier.opening("r7");
    opening.record.gpus = Some(vec![AssignedGpu {
        index: 1,
        uuid: None,
    }]);
    run(earlier.claim(opening).await).await;
    let bench = restarted(&nats).await;
    let gpu = |index| InventoryGpu {
        index,
        uuid: None,
        memory_mb: None,
    };
    let pool = GpuPool::new(vec![gpu(0), gpu(1)]);
    let resources = ResourcePolicy::Gpu {
        pool: pool.clone(),
        ignore_host: true,
    };
    let backend =
        Arc::new(FakeBackend::idle().recovering(vec![("r7", vec![Observation::Running])]));
    let recovery = recovery(&bench, backend.clone(), resources);
    let tasks = recover(&recovery).await;
    assert_eq!(holders(&pool), [None, Some("r7".to_owned())]);
    recovery
        .registry
        .get("r7")
        .expect("the job's task is registered")
        .send(JobCommand::Terminate {
            grace: Duration::from_secs(1),
        })
        .await
        .unwrap();
    settled(&tasks).await;
    assert_eq!(holders(&pool), [None, None]);
    assert_eq!(*backend.stops.lock().unwrap(), [Duration::from_secs(1)]);
    let ended = bench.ended("r7").await;
    assert_eq!(ended.state, JobState::Terminated);
    assert_eq!(ended.reason.as_deref(), Some(reason::TERMINATE_REQUESTED));
}

#[tokio::test]
async fn a_workload_found_again_of_another_workers_job_is_stopped_and_let_go() {
    let nats = NatsServer::start();
    let owner = bench(&nats, "w0").await;
    run(owner.claimed("r8").await).await;
    let before = owner.stored("r8").await;
    let bench = restarted(&nats).await;
    let backend =
        Arc::new(FakeBackend::idle().recovering(vec![("r8", vec![Observation::Running])]));
    let recovery = recovery(&bench, backend.clone(), ResourcePolicy::BestEffort);
    recover_all(&recovery).await;
    assert_eq!(*backend.stops.lock().unwrap(), [Duration::ZERO]);
    assert_eq!(bench.stored("r8").await, before);
    assert_eq!(states(&bench.events("r8").await), [(2, JobState::Running)]);
    assert!(recovery.registry.get("r8").is_none());
}
