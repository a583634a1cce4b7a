//! The pool survives a worker: leases list the live pool; the jobs of a worker
//! that is killed (its lease lapses) or stopped (it hands them over) are taken
//! over by a survivor and finished once; a terminate sent meanwhile is not
//! lost; a worker frozen past its lease acts on none of the jobs taken from it;
//! a process job, which no other host can follow, ends `lost` once its worker
//! has been gone too long, and its worker stops it when it comes back; a
//! process launch whose worker died once it had handed the process to its
//! supervisor starts once: a survivor leaves it to the worker's host, where the
//! worker back takes it up, or ends it `lost` when the worker never returns.
//!
//! The worker that goes runs as a process of its own (the binary), so that it
//! can be killed, stopped and frozen for real; the survivor runs in the test.
//! Every count is printed with the checks on it.

use crate::common::docker::{
    containers_of, docker_cli, docker_worker, in_container, test_image, unique, wait_until_removed,
};
use crate::common::pool::{pool_until, record_until, signal};
use crate::common::probe::{get, sample};
use crate::common::processes::{
    is_alive, read_pid, signal as signal_pid, supervisor_dir, supervisor_of, wait_until_gone,
};
use crate::common::system::{System, assert_well_formed, sh, states};
use flare_launcher::backend::started_on_host;
use flare_launcher::protocol::{BackendKind, JobEvent, reason};
use flare_launcher::state::JobState;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lease of the workers of these tests, in seconds.
const LEASE_S: u64 = 3;

/// Waits until the server has dropped the subscriptions of the worker `worker`
/// (its forwarded terminates find no responders).
async fn until_unsubscribed(system: &System, worker: &str) {
    let subject = system.client.subjects().worker_terminate(worker, "probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ask = system.client.nats().request(subject.clone(), "".into());
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(200), ask).await
            && e.kind() == async_nats::RequestErrorKind::NoResponders
        {
            return;
        }
        assert!(Instant::now() < deadline, "{worker} stayed subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that the stream holds exactly one terminal event of each job,
/// and prints the count.
fn assert_one_terminal(job_id: &str, events: &[JobEvent]) {
    let terminal = events.iter().filter(|e| e.state.is_terminal()).count();
    println!("{job_id}: {} events, {terminal} terminal", events.len());
    assert_eq!(terminal, 1, "{events:?}");
    assert_well_formed(events);
}

/// A Docker system whose worker (the survivor, not started yet) has a short
/// lease, and the environment of a Docker worker process with the same lease.
async fn docker_pool() -> System {
    test_image();
    System::without_worker(|config| {
        docker_worker(config);
        config.lease = Duration::from_secs(LEASE_S);
    })
    .await
}

const LEASE_ENV: (&str, &str) = ("FLARE_LEASE_S", "3");
/// A short ack wait, for requests to come again soon after their worker died.
const ACK_WAIT: Duration = Duration::from_secs(2);
const ACK_WAIT_ENV: (&str, &str) = ("FLARE_ACK_WAIT_S", "2");
const DOCKER_ENV: (&str, &str) = ("FLARE_BACKEND", "docker");

/// Starts a Docker worker with a short lease, to be killed, as a process of
/// its own; returns its id and process once it is in the pool.
async fn start_doomed(system: &System) -> (String, tokio::process::Child) {
    let doomed = unique("doomed");
    let worker =
        system.spawn_worker_process(&doomed, &system.path("doomed"), &[DOCKER_ENV, LEASE_ENV]);
    pool_until(system, Duration::from_secs(30), |ids| ids.contains(&doomed)).await;
    (doomed, worker)
}

/// Starts the survivor and waits until it may adopt (its lease held a whole
/// period).
async fn start_survivor(system: &mut System) {
    system.start_worker().await;
    let survivor = system.config.worker_id.clone();
    pool_until(system, Duration::from_secs(30), |ids| {
        ids.contains(&survivor)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_lists_its_live_workers_and_forgets_one_whose_lease_lapsed() {
    let system = System::start_with(|c| c.lease = Duration::from_secs(LEASE_S)).await;
    let data_dir = system.path("w2");
    let mut w2 = system.spawn_worker_process("w2", &data_dir, &[LEASE_ENV]);
    pool_until(&system, Duration::from_secs(30), |ids| ids == ["w1", "w2"]).await;
    let leases = system.client.workers().await.unwrap();
    let w2_lease = leases.iter().find(|lease| lease.worker == "w2").unwrap();
    assert_eq!(
        (
            w2_lease.pool.as_str(),
            w2_lease.backends.as_slice(),
            w2_lease.capacity,
            w2_lease.lease_s
        ),
        ("default", [BackendKind::Process].as_slice(), 64, LEASE_S)
    );
    assert_eq!(w2_lease.version, env!("CARGO_PKG_VERSION"));
    // The command line lists the same pool.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .args(["--nats-url", &system.nats.url(), "workers", "--json"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = listed.iter().filter_map(|l| l["worker"].as_str()).collect();
    assert_eq!(ids, ["w1", "w2"]);

    w2.start_kill().unwrap();
    let killed = Instant::now();
    pool_until(&system, Duration::from_secs(30), |ids| ids == ["w1"]).await;
    println!(
        "w2's lease lapsed {:?} after it was killed",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_docker_job_of_a_killed_worker_is_adopted_and_finished_once() {
    let mut system = docker_pool().await;
    let (doomed, doomed_worker) = start_doomed(&system).await;
    let job_id = unique("adopted");
    system
        .launch_until_running(&in_container(&job_id, "sleep 12; exit 3"))
        .await;
    assert_eq!(system.client.status(&job_id).await.unwrap().worker, doomed);
    start_survivor(&mut system).await;
    let survivor = system.config.worker_id.clone();

    signal(&doomed_worker, Signal::SIGKILL);
    let killed = Instant::now();
    record_until(&system, &job_id, Duration::from_secs(60), |r| {
        r.worker == survivor
    })
    .await;
    println!(
        "adopted {:?} after the kill (lease {LEASE_S} s)",
        killed.elapsed()
    );
    let events = system.events_until_terminal(&job_id).await;
    assert_one_terminal(&job_id, &events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    let last = events.last().unwrap();
    assert_eq!(
        (last.exit_code, last.worker.as_str()),
        (Some(3), survivor.as_str())
    );
    wait_until_removed(&[&job_id]).await;
    assert!(containers_of(&job_id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_full_survivor_adopts_a_killed_workers_job_before_it_takes_a_new_request() {
    let mut system = docker_pool().await;
    system.config.max_jobs = 1;
    let doomed = unique("doomed");
    let doomed_worker = system.spawn_worker_process(
        &doomed,
        &system.path("doomed"),
        &[DOCKER_ENV, LEASE_ENV, ("FLARE_MAX_JOBS", "1")],
    );
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&doomed)
    })
    .await;
    let orphaned = unique("orphaned");
    system
        .launch_until_running(&in_container(&orphaned, "sleep 40"))
        .await;
    start_survivor(&mut system).await;
    let survivor = system.config.worker_id.clone();
    // The survivor's one slot is taken past the kill's adoption look, and a
    // request waits behind it.
    let busy = unique("busy");
    system
        .launch_until_running(&in_container(&busy, "sleep 15"))
        .await;
    assert_eq!(system.client.status(&busy).await.unwrap().worker, survivor);
    let queued = unique("queued");
    system
        .client
        .launch(&in_container(&queued, "sleep 1"))
        .await
        .unwrap();

    signal(&doomed_worker, Signal::SIGKILL);
    record_until(&system, &orphaned, Duration::from_secs(60), |r| {
        r.worker == survivor
    })
    .await;
    let queued_then = system.client.status(&queued).await;
    println!("when the survivor adopted {orphaned}, {queued}: {queued_then:?}");
    assert!(
        queued_then.is_err(),
        "the new request was taken before the adoption: {queued_then:?}"
    );
    // It runs to its end under the survivor.
    let events = system.events_until_terminal(&orphaned).await;
    assert_one_terminal(&orphaned, &events);
    assert_eq!(
        (
            events.last().unwrap().state,
            events.last().unwrap().worker.as_str()
        ),
        (JobState::Succeeded, survivor.as_str())
    );
    // Then the request, with the room the adopted job left.
    let events = system.events_until_terminal(&queued).await;
    assert_one_terminal(&queued, &events);
    assert_eq!(
        (
            events.last().unwrap().state,
            events.last().unwrap().worker.as_str()
        ),
        (JobState::Succeeded, survivor.as_str())
    );
    wait_until_removed(&[&orphaned, &busy, &queued]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_stopped_worker_hands_its_docker_job_over_without_waiting_for_its_lease() {
    let mut system = docker_pool().await;
    let leaving = unique("leaving");
    // A lease far longer than the test waits: only a hand-over lets the
    // survivor take the job in time.
    let leaving_worker = system.spawn_worker_process(
        &leaving,
        &system.path("leaving"),
        &[DOCKER_ENV, ("FLARE_LEASE_S", "600")],
    );
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&leaving)
    })
    .await;
    let job_id = unique("handed");
    system
        .launch_until_running(&in_container(&job_id, "sleep 8; exit 0"))
        .await;
    system.config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    start_survivor(&mut system).await;
    let survivor = system.config.worker_id.clone();

    signal(&leaving_worker, Signal::SIGTERM);
    let stopped = Instant::now();
    record_until(&system, &job_id, Duration::from_secs(30), |r| {
        r.worker == survivor
    })
    .await;
    println!("handed over {:?} after SIGTERM", stopped.elapsed());
    let address = system.worker.as_ref().unwrap().probe_address().unwrap();
    let (_, metrics) = get(address, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "flare_launcher_adoptions_total{backend=\"docker\",outcome=\"followed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let events = system.events_until_terminal(&job_id).await;
    assert_one_terminal(&job_id, &events);
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert_eq!(events.last().unwrap().worker, survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_terminate_sent_while_a_killed_workers_job_awaits_adoption_is_carried_out() {
    let mut system = docker_pool().await;
    let (doomed, doomed_worker) = start_doomed(&system).await;
    let job_id = unique("stopped");
    system
        .launch_until_running(&in_container(&job_id, "sleep 600"))
        .await;
    start_survivor(&mut system).await;
    signal(&doomed_worker, Signal::SIGKILL);
    // Sent once the server has dropped the dead worker's subscriptions (a
    // request that met one would go unanswered), while its lease still holds.
    until_unsubscribed(&system, &doomed).await;
    let reply = system.client.terminate(&job_id, Some(1)).await.unwrap();
    println!("terminate reply: {reply:?}");
    assert!(reply.accepted, "{reply:?}");
    assert!(
        reply.message.contains("does not answer") || reply.message.contains(" went"),
        "answered while the job awaited its adoption: {reply:?}"
    );
    let events = system.events_until_terminal(&job_id).await;
    assert_one_terminal(&job_id, &events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated, "{events:?}");
    assert_eq!(last.reason.as_deref(), Some(reason::TERMINATE_REQUESTED));
    assert_eq!(last.worker, system.config.worker_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_full_survivor_still_takes_over_and_stops_a_job_whose_terminate_it_recorded() {
    let mut system = docker_pool().await;
    system.config.max_jobs = 1;
    start_survivor(&mut system).await;
    // The survivor's one place is taken for the whole test.
    let own = unique("own");
    system
        .launch_until_running(&in_container(&own, "sleep 600"))
        .await;
    let (doomed, doomed_worker) = start_doomed(&system).await;
    let job_id = unique("stopped");
    system
        .launch_until_running(&in_container(&job_id, "sleep 600"))
        .await;
    signal(&doomed_worker, Signal::SIGKILL);
    until_unsubscribed(&system, &doomed).await;
    let reply = system.client.terminate(&job_id, Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    // Taken over for its stop, though the survivor has no room to run it.
    let events = system.events_until_terminal(&job_id).await;
    assert_one_terminal(&job_id, &events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated, "{events:?}");
    assert_eq!(last.worker, system.config.worker_id);
    system.client.terminate(&own, Some(0)).await.unwrap();
    system.events_until_terminal(&own).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_worker_frozen_past_its_lease_acts_on_none_of_the_jobs_taken_from_it() {
    let mut system = docker_pool().await;
    let frozen = unique("frozen");
    // It drains when stopped, and gives up on its jobs at once: woken, then
    // stopped, a worker acting on what it last knew would stop the job.
    let frozen_worker = system.spawn_worker_process(
        &frozen,
        &system.path("frozen"),
        &[
            DOCKER_ENV,
            LEASE_ENV,
            ("FLARE_DRAIN", "true"),
            ("FLARE_DRAIN_TIMEOUT_S", "0"),
        ],
    );
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&frozen)
    })
    .await;
    // The job ends at the first SIGTERM it gets.
    let job_id = unique("kept");
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    system
        .launch_until_running(&in_container(&job_id, script))
        .await;
    start_survivor(&mut system).await;
    let survivor = system.config.worker_id.clone();

    signal(&frozen_worker, Signal::SIGSTOP);
    record_until(&system, &job_id, Duration::from_secs(60), |r| {
        r.worker == survivor
    })
    .await;
    signal(&frozen_worker, Signal::SIGCONT);
    // Woken, it finds its lease lost and takes it anew; then it is stopped.
    pool_until(&system, Duration::from_secs(30), |ids| {
        ids.contains(&frozen)
    })
    .await;
    signal(&frozen_worker, Signal::SIGTERM);
    let mut frozen_worker = frozen_worker;
    let exited = tokio::time::timeout(Duration::from_secs(60), frozen_worker.wait()).await;
    assert!(exited.is_ok(), "the woken worker did not stop");
    // It left the job alone: the container runs on, and the survivor stops it.
    let container = format!("flare-{job_id}");
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.State.Running}}", &container]).trim(),
        "true",
        "the woken worker stopped a job it no longer owned"
    );
    let reply = system.client.terminate(&job_id, Some(5)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal(&job_id).await;
    assert_one_terminal(&job_id, &events);
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.reason.as_deref(), last.worker.as_str()),
        (
            JobState::Terminated,
            Some(reason::TERMINATE_REQUESTED),
            survivor.as_str()
        ),
        "{events:?}"
    );
    let by_frozen: Vec<&JobEvent> = events
        .iter()
        .filter(|e| e.worker == frozen && e.seq > 2)
        .collect();
    assert!(by_frozen.is_empty(), "{by_frozen:?}");
    wait_until_removed(&[&job_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_job_of_a_worker_gone_too_long_ends_lost_and_its_return_stops_it() {
    let mut system = System::without_worker(|c| {
        c.lease = Duration::from_secs(LEASE_S);
        c.owner_lost_after = Duration::from_secs(2);
    })
    .await;
    let data_dir = system.path("host-a");
    let host_a = system.spawn_worker_process("host-a", &data_dir, &[LEASE_ENV]);
    pool_until(&system, Duration::from_secs(30), |ids| ids == ["host-a"]).await;
    let pid_file = system.path("job.pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    system.launch_until_running(&sh("stranded", &script)).await;
    let pid = read_pid(&pid_file).await;
    start_survivor(&mut system).await;

    signal(&host_a, Signal::SIGKILL);
    let events = system.events_until_terminal("stranded").await;
    assert_one_terminal("stranded", &events);
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (JobState::Lost, Some(reason::OWNER_LOST)),
        "{events:?}"
    );
    assert_eq!(last.worker, "w1");
    // Its supervisor kept it running on its host; the worker that comes back
    // there finds it declared lost and stops it.
    assert!(is_alive(pid), "the job ran on under its supervisor");
    let _back = system.spawn_worker_process("host-a", &data_dir, &[LEASE_ENV]);
    wait_until_gone(pid, Duration::from_secs(60)).await;
    let again = system.events_until_terminal("stranded").await;
    assert_eq!(again.len(), events.len(), "nothing published after the end");
}

/// A process job whose worker, `host-a`, was killed while its supervisor held
/// its launch, once the job's record said its process was being started there.
struct Stranded {
    /// `host-a`'s data directory.
    data_dir: PathBuf,
    /// The file the job's process waits for before it exits 0.
    go: PathBuf,
    /// The file each start of the job's process adds its pid to.
    started: PathBuf,
    /// The process, which the supervisor started after the worker died.
    pid: i32,
}

/// Runs `host-a`, launches `job_id` on it while its supervisor hangs (stopped),
/// starts the survivor, then kills `host-a` once the job's record says its
/// process is being started, and wakes the supervisor, which starts it.
async fn kill_at_the_supervisor(system: &mut System, job_id: &str) -> Stranded {
    let data_dir = system.path("host-a");
    let host_a = system.spawn_worker_process("host-a", &data_dir, &[LEASE_ENV, ACK_WAIT_ENV]);
    pool_until(system, Duration::from_secs(30), |ids| ids == ["host-a"]).await;
    // Its supervisor hangs: the launch goes no further than the link to it.
    let supervisor = supervisor_of(&supervisor_dir(&data_dir, "host-a")).unwrap();
    signal_pid(supervisor, Signal::SIGSTOP);
    let go = system.path("go");
    let started = system.path("started");
    let script = format!(
        "echo $$ >> {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        go.display()
    );
    system.client.launch(&sh(job_id, &script)).await.unwrap();
    let record = record_until(system, job_id, Duration::from_secs(30), started_on_host).await;
    assert_eq!(record.worker, "host-a");
    start_survivor(system).await;
    assert!(
        starts(&started) == 0,
        "the process started before its supervisor woke"
    );
    signal(&host_a, Signal::SIGKILL);
    signal_pid(supervisor, Signal::SIGCONT);
    let pid = read_pid(&started).await;
    Stranded {
        data_dir,
        go,
        started,
        pid,
    }
}

/// How often the job's process started.
fn starts(started: &Path) -> usize {
    std::fs::read_to_string(started).map_or(0, |pids| pids.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_launch_whose_worker_died_at_its_supervisor_is_taken_back_on_its_host_once() {
    let mut system = System::without_worker(|c| {
        c.lease = Duration::from_secs(LEASE_S);
        c.ack_wait = ACK_WAIT;
    })
    .await;
    let stranded = kill_at_the_supervisor(&mut system, "once").await;
    // With host-a's lease gone, the request comes to the survivor, which
    // leaves the job to host-a's host: it hands the request back, and the
    // request comes again.
    pool_until(&system, Duration::from_secs(30), |ids| ids == ["w1"]).await;
    let before = system.deliveries().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while system.deliveries().await < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the request did not come back: the survivor took it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = system.client.status("once").await.unwrap();
    println!(
        "after {} deliveries to the survivor: {} {}, {} start(s)",
        system.deliveries().await - before,
        record.worker,
        record.state,
        starts(&stranded.started)
    );
    assert_eq!(
        (record.worker.as_str(), record.state),
        ("host-a", JobState::Starting)
    );
    assert_eq!(starts(&stranded.started), 1);

    // host-a, back on its host, takes the process up and follows it to its end.
    let _back =
        system.spawn_worker_process("host-a", &stranded.data_dir, &[LEASE_ENV, ACK_WAIT_ENV]);
    record_until(&system, "once", Duration::from_secs(60), |r| {
        r.state == JobState::Running
    })
    .await;
    std::fs::write(&stranded.go, "").unwrap();
    let events = system.events_until_terminal("once").await;
    assert_one_terminal("once", &events);
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert_eq!(events.last().unwrap().worker, "host-a");
    // The request is acknowledged as the duplicate it now is.
    system.wait_until_intake_idle().await;
    println!("starts: {}", starts(&stranded.started));
    assert_eq!(starts(&stranded.started), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_launch_whose_worker_died_at_its_supervisor_and_never_returned_ends_lost_once() {
    let mut system = System::without_worker(|c| {
        c.lease = Duration::from_secs(LEASE_S);
        c.ack_wait = ACK_WAIT;
        c.owner_lost_after = Duration::from_secs(2);
    })
    .await;
    let stranded = kill_at_the_supervisor(&mut system, "stranded-launch").await;
    let events = system.events_until_terminal("stranded-launch").await;
    assert_one_terminal("stranded-launch", &events);
    assert_eq!(states(&events), ["starting", "lost"]);
    let last = events.last().unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.worker.as_str()),
        (Some(reason::OWNER_LOST), "w1"),
        "{events:?}"
    );
    // The request is acknowledged as the duplicate it now is.
    system.wait_until_intake_idle().await;
    println!("starts: {}", starts(&stranded.started));
    assert_eq!(starts(&stranded.started), 1);
    // It ran on its host all along, under its supervisor.
    assert!(is_alive(stranded.pid));
    std::fs::write(&stranded.go, "").unwrap();
    wait_until_gone(stranded.pid, Duration::from_secs(30)).await;
}
