//! Supervised process jobs: a job's whole tree is contained (`setsid` and double
//! forks do not escape), time limits hold under a long grace, a worker that dies
//! finds its jobs again when it restarts (also at once, after an orderly
//! shutdown), a job whose worker died while its supervisor spawned it runs
//! once, a worker whose link to a living supervisor drops follows its jobs
//! over a new link, a job whose supervisor dies is lost, and so is one whose
//! stop its supervisor never confirms.

use crate::common::chaos::{Tally, tally_when_ended};
use crate::common::processes::{
    assert_root, cut_connections_to, is_alive, parent_of, read_pid, signal, supervisor_dir,
    supervisor_of, wait_for_recorded_end, wait_until_gone,
};
use crate::common::system::{System, assert_well_formed, sh, states};
use flare_launcher::protocol::{BackendRef, LaunchRequest, MAX_DURATION_S, Timeouts};
use flare_launcher::state::JobState;
use flare_launcher::supervisor::job_file::{JobEnd, JobFile};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};

/// A shell script that starts `sleep 300` in a session of its own, writes its
/// pid to `pidfile` and waits until it is written.
fn escape_into_own_session(pidfile: &Path) -> String {
    format!(
        "setsid sh -c 'echo $$ > {p}; exec sleep 300' & while [ ! -s {p} ]; do sleep 0.01; done",
        p = pidfile.display()
    )
}

#[tokio::test]
async fn a_process_that_left_the_jobs_session_is_killed_when_the_job_ends() {
    let system = System::start().await;
    let pidfile = system.path("escaped.pid");
    let script = format!("{}; exit 0", escape_into_own_session(&pidfile));
    let events = system.run(&sh("escapes", &script)).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    let pid = read_pid(&pidfile).await;
    // Killed before the end was reported.
    assert!(!is_alive(pid), "the setsid process {pid} outlived its job");
}

#[tokio::test]
async fn a_double_forked_daemon_is_killed_when_its_job_is_terminated() {
    let system = System::start().await;
    let pidfile = system.path("daemon.pid");
    // The subshell exits at once: the daemon is an orphan in its own session.
    let script = format!(
        "( {} ) ; while true; do sleep 0.1; done",
        escape_into_own_session(&pidfile)
    );
    system.client.launch(&sh("daemon", &script)).await.unwrap();
    let pid = read_pid(&pidfile).await;
    assert!(is_alive(pid));
    let reply = system.client.terminate("daemon", Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal("daemon").await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
    assert!(
        !is_alive(pid),
        "the daemon {pid} outlived its terminated job"
    );
}

#[tokio::test]
async fn run_s_holds_while_a_terminate_with_a_long_grace_runs() {
    let system = System::start().await;
    let ready = system.path("stubborn-ready");
    let mut request = sh(
        "stubborn",
        &format!(
            "trap '' TERM; touch {}; while true; do sleep 0.1; done",
            ready.display()
        ),
    );
    request.timeouts = Some(Timeouts {
        start_s: None,
        run_s: Some(2),
    });
    system.client.launch(&request).await.unwrap();
    while !ready.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = system
        .client
        .terminate("stubborn", Some(MAX_DURATION_S))
        .await
        .unwrap();
    assert!(reply.accepted, "{reply:?}");
    // The kill comes when run_s has run out and its own grace has passed, not a
    // year later.
    let events = system.events_until_terminal("stubborn").await;
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated);
    assert_eq!(last.reason.as_deref(), Some("TerminateRequested"));
    assert_eq!(last.exit_code, Some(128 + 9), "{last:?}");
}

/// The pid of a job's first process, from its record.
async fn job_pid(system: &System, job_id: &str) -> i32 {
    match system.client.status(job_id).await.unwrap().backend_ref {
        Some(BackendRef::Process { pid }) => pid as i32,
        other => panic!("{job_id}: no process in {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_re_attaches_to_its_jobs_and_learns_how_the_others_ended() {
    let system = System::without_worker(|_| {}).await;
    let data_dir = system.path("data");
    let go = system.path("go");
    let mut worker = system.spawn_worker_process("phoenix", &data_dir, &[]);
    let keeps = sh("keeps", "while true; do sleep 0.1; done");
    let ends = sh(
        "ends",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 3",
            go.display()
        ),
    );
    for request in [&keeps, &ends] {
        system.launch_until_running(request).await;
    }
    let keeps_pid = job_pid(&system, "keeps").await;

    worker.kill().await.unwrap();
    // One job ends while its worker is away; the other runs on.
    std::fs::write(&go, "").unwrap();
    let dir = supervisor_dir(&data_dir, "phoenix");
    let end = wait_for_recorded_end(&dir, "ends").await;
    assert!(
        matches!(end, JobEnd::Exited { stopped: false, .. }),
        "{end:?}"
    );
    assert!(is_alive(keeps_pid), "a job died with its worker");

    let _worker = system.spawn_worker_process("phoenix", &data_dir, &[]);
    let events = system.events_until_terminal("ends").await;
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    assert_well_formed(&events);
    assert_eq!(events[2].exit_code, Some(3));
    assert_eq!(events[2].worker, "phoenix");

    // The job that ran on is followed again: a terminate reaches it, and its
    // events carry on from its seq.
    let reply = system.client.terminate("keeps", Some(1)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal("keeps").await;
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    assert_well_formed(&events);
    assert!(!is_alive(keeps_pid));
    // Both ends are recorded: the supervisor lets go of their files.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !JobFile::read_all(&dir).is_empty() {
        assert!(Instant::now() < deadline, "job files were kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Launches `sleep 300` as `job_id` and returns, once it runs, its pid and the
/// pid of the supervisor above its job supervisor.
async fn sleeper_and_its_supervisor(system: &System, job_id: &str) -> (i32, i32) {
    system.launch_until_running(&sh(job_id, "sleep 300")).await;
    let pid = job_pid(system, job_id).await;
    let supervisor = parent_of(parent_of(pid).unwrap()).unwrap();
    (pid, supervisor)
}

fn kill(pid: i32) {
    signal(pid, Signal::SIGKILL);
}

/// What becomes of a spawn a worker asked of its supervisor, which was frozen,
/// when the worker is killed before the answer.
struct SpawnLeft {
    step: &'static str,
    /// What the frozen supervisor is sent once the worker is gone.
    then: Signal,
    /// Whether the job ran before the worker's next run.
    made: bool,
}

/// The steps of a process job's launch between its claim and its `running`
/// that a frozen supervisor holds a worker at.
const SPAWNS_LEFT: [SpawnLeft; 2] = [
    SpawnLeft {
        step: "claimed, the spawn never carried out (its supervisor died too)",
        then: Signal::SIGKILL,
        made: false,
    },
    SpawnLeft {
        step: "claimed, the job spawned once its worker was gone, the record not naming it",
        then: Signal::SIGCONT,
        made: true,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_its_supervisor_spawns_a_job_leaves_a_job_that_runs_once() {
    let system = System::without_worker(|_| {}).await;
    for (n, left) in SPAWNS_LEFT.iter().enumerate() {
        let worker_id = format!("spawner-{n}");
        let data_dir = system.path(&worker_id);
        let env = [("FLARE_ACK_WAIT_S", "2")];
        let mut worker = system.spawn_worker_process(&worker_id, &data_dir, &env);
        let warm_up = system.run(&sh(&format!("warm-up-{n}"), "exit 0")).await;
        assert_eq!(states(&warm_up), ["starting", "running", "succeeded"]);
        let supervisor = supervisor_of(&supervisor_dir(&data_dir, &worker_id)).unwrap();

        signal(supervisor, Signal::SIGSTOP);
        let job_id = format!("spawned-{n}");
        let runs = system.path(&format!("{job_id}-runs"));
        let request = sh(&job_id, &format!("echo ran >> {}", runs.display()));
        system.client.launch(&request).await.unwrap();
        let claimed = system
            .events_until(&job_id, |e| e.state == JobState::Starting)
            .await;
        assert_eq!(states(&claimed), ["starting"]);
        // Time for the worker to ask the frozen supervisor for the spawn, which
        // waits unread in its socket.
        tokio::time::sleep(Duration::from_secs(1)).await;
        worker.kill().await.unwrap();
        signal(supervisor, left.then);
        if left.made {
            wait_until_ran(&runs).await;
        } else {
            wait_until_gone(supervisor, Duration::from_secs(10)).await;
        }
        let record = system.record_history(&job_id).await.pop().unwrap();
        assert_eq!(
            (record.state, record.backend_ref),
            (JobState::Starting, None),
            "{}",
            left.step
        );

        // The worker's next run finds the job with the supervisor, or its
        // request comes again and it launches it: either way it runs once.
        let mut worker = system.spawn_worker_process(&worker_id, &data_dir, &env);
        let events = system.events_until_terminal(&job_id).await;
        assert_well_formed(&events);
        assert_eq!(
            states(&events),
            ["starting", "running", "succeeded"],
            "{}",
            left.step
        );
        system.wait_until_intake_idle().await;
        let ran = std::fs::read_to_string(&runs).unwrap_or_default();
        println!("{}: ran {} time(s)", left.step, ran.lines().count());
        assert_eq!(ran, "ran\n", "{}", left.step);
        worker.kill().await.unwrap();
    }
}

/// Waits until a job appending to `runs` has run.
async fn wait_until_ran(runs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !runs.exists() {
        assert!(Instant::now() < deadline, "{} never ran", runs.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_whose_supervisor_dies_is_lost_and_the_next_job_runs() {
    let system = System::start().await;
    let (pid, supervisor) = sleeper_and_its_supervisor(&system, "orphaned").await;
    kill(supervisor);
    let events = system.events_until_terminal("orphaned").await;
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Lost, "{events:#?}");
    assert_eq!(last.return_code, Some(104));
    assert_eq!(last.reason.as_deref(), Some("OwnerLost"));
    wait_until_gone(pid, Duration::from_secs(10)).await;
    // A new supervisor takes the next job.
    let events = system.run(&sh("after", "true")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_supervisor_died_while_its_worker_was_away_is_lost_at_restart() {
    let system = System::without_worker(|_| {}).await;
    let data_dir = system.path("data");
    let mut worker = system.spawn_worker_process("lazarus", &data_dir, &[]);
    let (pid, supervisor) = sleeper_and_its_supervisor(&system, "doomed").await;
    worker.kill().await.unwrap();
    kill(supervisor);
    wait_until_gone(pid, Duration::from_secs(10)).await;

    let _worker = system.spawn_worker_process("lazarus", &data_dir, &[]);
    let events = system.events_until_terminal("doomed").await;
    assert_eq!(states(&events), ["starting", "running", "lost"]);
    assert_well_formed(&events);
    assert_eq!(events[2].reason.as_deref(), Some("OwnerLost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_that_end_at_once_all_start_and_end() {
    // Job supervisors that start and end within one turn of the supervisor's
    // loop: each start must be reported before its end.
    let system = System::start_with(|c| c.max_jobs = 64).await;
    let jobs: Vec<String> = (0..400).map(|n| format!("quick-{n}")).collect();
    let publish = jobs.iter().map(|job_id| {
        let request = LaunchRequest::new(job_id, vec!["true".into()]);
        let client = system.client.clone();
        async move { client.launch(&request).await.unwrap() }
    });
    futures::future::join_all(publish).await;
    for job_id in &jobs {
        let events = system.events_until_terminal(job_id).await;
        assert_eq!(
            states(&events),
            ["starting", "running", "succeeded"],
            "{job_id}: {events:#?}"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not_root,
    ignore = "job cgroups need a supervisor that may make cgroups (root)"
)]
async fn a_job_runs_in_a_cgroup_of_its_own_which_goes_with_it() {
    assert_root("making job cgroups");
    let system = System::start_with(|c| c.job_cgroups = true).await;
    let events = system
        .run(&sh("grouped", "cat /proc/self/cgroup; sleep 0.2 & wait"))
        .await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    let log = std::fs::read_to_string(crate::common::system::log_path(&events)).unwrap();
    let line = log
        .lines()
        .find(|line| line.contains("/flare-launcher/job-grouped-"))
        .unwrap_or_else(|| panic!("the job ran in no job cgroup:\n{log}"));
    // `N:pids:/PATH` (v1) or `0::/PATH` (v2): the cgroup is gone with the job.
    let path = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
    for mount in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
        let dir = Path::new(mount).join(path);
        assert!(!dir.exists(), "{} outlived its job", dir.display());
    }
}

/// The processes whose parent is `pid`, with whether each is a zombie.
fn children_of(pid: i32) -> Vec<(i32, bool)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| parent_of(*child) == Some(pid))
        .map(|child| (child, !is_alive(child)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not_root, ignore = "a PID namespace needs root")]
async fn a_worker_running_as_pid_1_reaps_the_orphans_it_inherits() {
    assert_root("a PID namespace");
    let system = System::without_worker(|_| {}).await;
    let data_dir = system.path("data");
    // The worker is PID 1 of a namespace of its own, as in a container.
    let unshare = tokio::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(env!("CARGO_BIN_EXE_flare-launcher"))
        .arg("--nats-url")
        .arg(system.nats.url())
        .args(["worker", "--worker-id", "init", "--data-dir"])
        .arg(&data_dir)
        .kill_on_drop(true)
        .spawn()
        .expect("unshare runs");
    system
        .launch_until_running(&sh("inherited", "sleep 300"))
        .await;
    let unshare_pid = unshare.id().unwrap() as i32;
    let worker = children_of(unshare_pid)[0].0;
    let supervisor = children_of(worker)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(9).any(|w| w == b"supervise"))
        })
        .expect("the worker's supervisor");
    let job_supervisor = children_of(supervisor)[0].0;
    // The job supervisor, orphaned, comes to the worker, kills its job and ends:
    // a zombie until the worker reaps it.
    kill(supervisor);
    let events = system.events_until_terminal("inherited").await;
    assert_eq!(events.last().unwrap().state, JobState::Lost);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{job_supervisor}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the job supervisor {job_supervisor} was never reaped: {:?}",
            children_of(worker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_job_supervisor_takes_its_jobs_whole_tree_with_it() {
    let system = System::start().await;
    let pidfile = system.path("grandchild.pid");
    // The first process, a child and a grandchild.
    let script = format!(
        "sh -c 'sleep 1000 & echo $! > {}; wait' & while [ ! -s {} ]; do sleep 0.01; done; wait",
        pidfile.display(),
        pidfile.display()
    );
    // Its pid is in its record once it runs (its processes may start before).
    system.launch_until_running(&sh("deep", &script)).await;
    let grandchild = read_pid(&pidfile).await;
    let pid = job_pid(&system, "deep").await;
    kill(parent_of(pid).unwrap());
    let events = system.events_until_terminal("deep").await;
    assert_eq!(events.last().unwrap().state, JobState::Lost);
    wait_until_gone(grandchild, Duration::from_secs(10)).await;
    wait_until_gone(pid, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_second_supervisor_for_the_same_directory_leaves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let supervise = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
            .args(["supervise", "--dir"])
            .arg(dir.path())
            .spawn()
            .unwrap()
    };
    let mut first = supervise();
    let socket = dir.path().join("supervisor.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the first supervisor never listened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = supervise().wait_with_output().unwrap();
    assert!(second.status.success());
    assert!(
        socket.exists(),
        "the second supervisor took the first one's socket"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first supervisor is gone"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_at_once_after_an_orderly_shutdown_finds_a_supervisor() {
    let mut system = System::start().await;
    // Each successor connects while its predecessor's supervisor, told goodbye,
    // is on its way out.
    for _ in 0..20 {
        system.shutdown_worker().await;
        system.start_worker().await;
    }
    let events = system
        .run(&LaunchRequest::new("after-restarts", vec!["true".into()]))
        .await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_link_to_a_living_supervisor_loses_no_job() {
    let system = System::start().await;
    let socket = supervisor_dir(&system.config.data_dir, "w1").join("supervisor.sock");
    let go = system.path("go");
    let waits = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    system.launch_until_running(&sh("waiting", &waits)).await;
    // Short jobs end while the link is cut again and again: some of their ends
    // come while no link is there.
    let short: Vec<String> = (0..20).map(|n| format!("short-{n}")).collect();
    for job_id in &short {
        system
            .client
            .launch(&sh(job_id, "sleep 0.2"))
            .await
            .unwrap();
    }
    // Each cut once the worker has connected again.
    let mut cuts = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cuts < 10 {
        assert!(
            Instant::now() < deadline,
            "the worker connected again only {cuts} times"
        );
        cuts += cut_connections_to(&socket);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = tally_when_ended(&system.client, &short, Duration::from_secs(60)).await;
    assert_eq!(tally, Tally::clean(short.len(), 3 * short.len()));

    // The job that ran across every cut ends as it ends, followed all along.
    std::fs::write(&go, "").unwrap();
    let events = system.events_until_terminal("waiting").await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_its_supervisor_never_confirms_ends_the_job_lost() {
    let system = System::start().await;
    let (pid, supervisor) = sleeper_and_its_supervisor(&system, "unconfirmed").await;
    // The supervisor hangs: it carries out no stop and reports no end.
    let signal =
        |signal| nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), signal).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    let reply = system
        .client
        .terminate("unconfirmed", Some(1))
        .await
        .unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal("unconfirmed").await;
    signal(nix::sys::signal::Signal::SIGCONT);
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Lost, "{events:#?}");
    assert_eq!(last.reason.as_deref(), Some("StopUnconfirmed"));
    // Awake again, the supervisor carries out the stops it was sent.
    wait_until_gone(pid, Duration::from_secs(10)).await;
}
