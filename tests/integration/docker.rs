//! Jobs run as containers on the real Docker engine, end to end over a real
//! nats-server, beyond what every backend does (`conformance`): environment and
//! working directory, one container per job however often it is launched,
//! missing images, kills, mounts, the engine's events and requests, and the
//! site's settings. Ignored in a build that found no engine (never in CI).

use crate::common::docker::{
    Registry, containers_of, create_labelled_container, docker_cli, docker_system_with,
    docker_worker, hanging_registry, in_container, launch_until_ready, system_through_proxy,
    test_image, unique, wait_until_removed,
};
use crate::common::system::{System, assert_well_formed, log_path, states};
use flare_launcher::config::PullPolicy;
use flare_launcher::protocol::{Mount, Resources, Timeouts};
use flare_launcher::state::JobState;
use std::time::Duration;

/// A system whose worker runs only Docker jobs, with the test image built.
async fn docker_system() -> System {
    docker_system_with(|_| {}).await
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn env_and_workdir_reach_the_container() {
    let system = docker_system().await;
    let job_id = unique("env");
    let mut request = in_container(&job_id, "echo \"A=$A\"; pwd");
    request.env.insert("A".into(), "x y".into());
    request.workdir = Some("/tmp/work".into());
    let events = system.run(&request).await;
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "{events:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "A=x y\n/tmp/work\n");
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_repeated_launch_makes_one_container() {
    let system = docker_system().await;
    let job_id = unique("dup");
    let request = in_container(&job_id, "sleep 2");
    system.client.launch(&request).await.unwrap();
    system
        .events_until(&job_id, |e| e.state == JobState::Running)
        .await;
    system.client.launch(&request).await.unwrap();
    system.wait_until_intake_idle().await;
    assert_eq!(containers_of(&job_id).len(), 1);
    let events = system.events_until_terminal(&job_id).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_missing_image_ends_in_error_promptly() {
    let system = docker_system().await;
    let job_id = unique("noimage");
    let mut request = in_container(&job_id, "true");
    // Nothing listens on port 1: the pull fails at once.
    request.image = Some("127.0.0.1:1/flare-launcher/missing:1".into());
    let events = system.run(&request).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.return_code, Some(104));
    assert_eq!(last.reason.as_deref(), Some("ImagePullFailed"), "{last:?}");
    assert!(
        last.message.as_deref().unwrap().contains("127.0.0.1:1"),
        "{last:?}"
    );
    assert!(containers_of(&job_id).is_empty());
}

/// `docker create`s the container a launch of `job_id` would make, labelled as
/// belonging to `labelled_job`, running `script`: what a crash between create
/// and start leaves.
fn create_container_by_hand(system: &System, job_id: &str, labelled_job: &str, script: &str) {
    create_labelled_container(
        &format!("flare-{job_id}"),
        labelled_job,
        Some(&system.config.worker_id),
        script,
        false,
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_launch_that_meets_another_jobs_container_ends_in_error() {
    let system = docker_system().await;
    let job_id = unique("taken");
    let other_job = unique("other");
    create_container_by_hand(&system, &job_id, &other_job, "exit 0");
    let events = system.run(&in_container(&job_id, "exit 0")).await;
    // The other job's container is left alone (and removed here).
    let left = containers_of(&other_job);
    docker_cli(&["rm", "-f", &format!("flare-{job_id}")]);
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("SpawnFailed"));
    assert!(
        last.message.as_deref().unwrap().contains("another job"),
        "{last:?}"
    );
    assert_eq!(left.len(), 1);
}

/// How often the worker inspected the container of `job_id` among `requests`.
fn inspects_of(requests: &[String], job_id: &str) -> usize {
    let inspect = format!("/containers/flare-{job_id}/json");
    requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&inspect))
        .count()
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_container_killed_for_its_memory_fails_with_oomkilled() {
    let (proxy, system) = system_through_proxy(|_| {}).await;
    let job_id = unique("oom");
    // A shell variable far larger than the limit.
    let mut request = in_container(
        &job_id,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); exit 0",
    );
    request.resources = Some(Resources {
        memory_mb: Some(16),
        ..Resources::default()
    });
    let events = system.run(&request).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Failed, "{events:?}");
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"), "{last:?}");
    assert_eq!(last.return_code, Some(1));
    // Its `oom` and `die` events told it all.
    assert_eq!(inspects_of(&proxy.requests(), &job_id), 0);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_container_killed_by_someone_else_fails_with_137_after_one_inspect() {
    let (proxy, system) = system_through_proxy(|_| {}).await;
    let job_id = unique("killed");
    let script = "echo ready; while true; do sleep 0.1; done";
    launch_until_ready(&system, &job_id, script).await;
    docker_cli(&["kill", "--signal", "KILL", &format!("flare-{job_id}")]);
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    let last = events.last().unwrap();
    assert_eq!(last.exit_code, Some(137), "{last:?}");
    assert_eq!(last.reason, None, "{last:?}");
    // A SIGKILL no `oom` event explains is read again, in case the engine
    // tells of an out-of-memory kill late.
    assert_eq!(inspects_of(&proxy.requests(), &job_id), 1);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_pull_that_hangs_ends_at_start_s_without_a_container() {
    let system = docker_system().await;
    let (port, held) = hanging_registry().await;
    let job_id = unique("hangs");
    let mut request = in_container(&job_id, "true");
    request.image = Some(format!("127.0.0.1:{port}/flare-launcher/hangs:1"));
    request.timeouts = Some(Timeouts {
        start_s: Some(2),
        run_s: None,
    });
    let events = system.run(&request).await;
    held.abort();
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "error"]);
    assert_eq!(
        events[1].reason.as_deref(),
        Some("StartTimeout"),
        "{events:?}"
    );
    assert!(containers_of(&job_id).is_empty());
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn every_mount_kind_is_seen_from_inside_the_container() {
    test_image();
    let mut system = System::without_worker(docker_worker).await;
    let roots = system.path("roots");
    std::fs::create_dir_all(roots.join("data")).unwrap();
    std::fs::write(roots.join("data/hello"), "from the host\n").unwrap();
    let secrets = system.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("token"), "s3cret\n").unwrap();
    system.config.docker.host_roots = vec![roots.clone()];
    system.config.docker.secrets_dir = Some(secrets);
    let volume = unique("flare-test-volume");
    system.config.docker.allowed_volumes = vec![volume.clone()];
    system.start_worker().await;

    let job_id = unique("mounts");
    let script = "cat /in/hello; cat /run/token; (echo no > /run/token) 2>/dev/null || echo read-only; \
                  echo scratch > /scratch/f && cat /scratch/f; echo kept > /vol/f && cat /vol/f";
    let mut request = in_container(&job_id, script);
    let mount = |source: String, target: &str| Mount {
        source,
        target: target.into(),
        read_only: false,
    };
    request.mounts = vec![
        mount(format!("host:{}", roots.join("data").display()), "/in"),
        mount("secret:token".into(), "/run/token"),
        mount("emptydir:".into(), "/scratch"),
        mount(format!("pvc:{volume}"), "/vol"),
    ];
    let events = system.run(&request).await;
    wait_until_removed(&[&job_id]).await;
    docker_cli(&["volume", "rm", &volume]);
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "{events:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "from the host\ns3cret\nread-only\nscratch\nkept\n");
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_host_mount_outside_the_allowed_roots_ends_in_error() {
    test_image();
    let mut system = System::without_worker(docker_worker).await;
    let roots = system.path("roots");
    std::fs::create_dir_all(&roots).unwrap();
    // A link inside the root that leads out of it.
    std::os::unix::fs::symlink("/etc", roots.join("etc")).unwrap();
    system.config.docker.host_roots = vec![roots.clone()];
    system.start_worker().await;
    let job_id = unique("escape");
    let mut request = in_container(&job_id, "cat /in/passwd");
    request.mounts = vec![Mount {
        source: format!("host:{}", roots.join("etc").display()),
        target: "/in".into(),
        read_only: true,
    }];
    let events = system.run(&request).await;
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("MountNotAllowed"), "{last:?}");
    assert!(
        last.message.as_deref().unwrap().contains("/etc"),
        "{last:?}"
    );
    assert!(containers_of(&job_id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn an_exit_while_the_event_stream_is_cut_is_not_lost() {
    let (proxy, system) = system_through_proxy(|_| {}).await;
    let job_id = unique("cut");
    let script = "echo ready; while [ ! -e /go ]; do sleep 0.05; done; exit 4";
    launch_until_ready(&system, &job_id, script).await;

    // The stream is down while the container exits.
    proxy.cut();
    let container = format!("flare-{job_id}");
    docker_cli(&["exec", &container, "touch", "/go"]);
    assert_eq!(docker_cli(&["wait", &container]).trim(), "4");
    proxy.resume();

    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    assert_eq!(events[2].exit_code, Some(4));
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_job_costs_four_engine_requests_once_its_image_is_present() {
    let (proxy, system) = system_through_proxy(|_| {}).await;
    // What the worker asks once (version, ping, list, the event stream) is
    // behind it after a first job.
    let first = unique("first");
    system.run(&in_container(&first, "exit 0")).await;
    wait_until_removed(&[&first]).await;
    let before = proxy.requests().len();
    let jobs = 3;
    for n in 0..jobs {
        let job_id = unique(&format!("cost{n}"));
        let events = system.run(&in_container(&job_id, "exit 0")).await;
        assert_eq!(states(&events), ["starting", "running", "succeeded"]);
        wait_until_removed(&[&job_id]).await;
    }
    let requests = proxy.requests()[before..].to_vec();
    assert!(
        requests.len() <= 4 * jobs,
        "{} requests for {jobs} jobs: {requests:#?}",
        requests.len()
    );
    // Each of them: create, start, logs, remove; the exit code comes with the
    // `die` event, so no inspect.
    let count = |method: &str, part: &str| {
        requests
            .iter()
            .filter(|r| r.starts_with(method) && r.contains(part))
            .count()
    };
    for (method, part) in [
        ("POST", "/containers/create?"),
        ("POST", "/start"),
        ("GET", "/logs?"),
        ("DELETE", "/containers/"),
    ] {
        assert_eq!(count(method, part), jobs, "{method} {part}: {requests:#?}");
    }
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_container_being_removed_does_not_hold_the_workers_capacity() {
    let (proxy, system) = system_through_proxy(|config| config.max_jobs = 1).await;
    proxy.hold_removals();
    let first = unique("first");
    let events = system.run(&in_container(&first, "exit 0")).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    // The only job slot is free once the first job's end is recorded, while its
    // container's removal is still held back.
    let second = unique("second");
    let events = system.run(&in_container(&second, "exit 0")).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert_eq!(
        containers_of(&first).len(),
        1,
        "the first container was removed"
    );
    proxy.let_through();
    wait_until_removed(&[&first, &second]).await;
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn two_jobs_pull_their_image_from_a_registry_and_run() {
    let system = docker_system().await;
    let registry = Registry::start().await;
    let image = registry.push_test_image(&format!("{}:1", unique("flare-test/pulled")));
    let jobs: Vec<_> = (0..2)
        .map(|_| {
            let mut request = in_container(&unique("pulled"), "echo pulled");
            request.image = Some(image.clone());
            request
        })
        .collect();
    for request in &jobs {
        system.client.launch(request).await.unwrap();
    }
    for request in &jobs {
        let events = system.events_until_terminal(&request.job_id).await;
        assert_eq!(
            states(&events),
            ["starting", "running", "succeeded"],
            "{events:?}"
        );
    }
    wait_until_removed(&[&jobs[0].job_id, &jobs[1].job_id]).await;
    docker_cli(&["rmi", &image]);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn an_image_the_registry_lacks_is_not_found() {
    let system = docker_system().await;
    let registry = Registry::start().await;
    let job_id = unique("lacks");
    let mut request = in_container(&job_id, "true");
    request.image = Some(registry.image("flare-test/nothing:1"));
    let events = system.run(&request).await;
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("ImageNotFound"), "{last:?}");
    assert!(
        last.message
            .as_deref()
            .unwrap()
            .contains("flare-test/nothing"),
        "{last:?}"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn with_pull_never_a_missing_image_is_not_found() {
    let system = docker_system_with(|config| {
        config.docker.pull = PullPolicy::Never;
    })
    .await;
    let job_id = unique("never");
    let mut request = in_container(&job_id, "true");
    request.image = Some("flare-launcher-test-never-there:1".into());
    let events = system.run(&request).await;
    assert_eq!(states(&events), ["starting", "error"]);
    assert_eq!(
        events[1].reason.as_deref(),
        Some("ImageNotFound"),
        "{events:?}"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_sites_user_shm_size_and_ulimits_hold_inside_the_container() {
    let system = docker_system_with(|config| {
        config.docker.user = "1234:2345".parse().unwrap();
        config.docker.shm_size_mb = Some(32);
        config.docker.ulimits = vec!["nofile=321:654".parse().unwrap()];
    })
    .await;
    let job_id = unique("site");
    let script = "id -u; id -g; ulimit -n; ulimit -Hn; df -k /dev/shm | tail -n1";
    let events = system.run(&in_container(&job_id, script)).await;
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "{events:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[..4], ["1234", "2345", "321", "654"], "{log}");
    let shm_kib: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(shm_kib[1], "32768", "{log}");
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn shutdown_terminates_the_containers_left_after_the_drain() {
    let mut system = docker_system_with(|config| {
        config.drain = true;
        config.drain_timeout = Duration::from_secs(1);
    })
    .await;
    let job_id = unique("drained");
    let script = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    launch_until_ready(&system, &job_id, script).await;
    system.shutdown_worker().await;
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated, "{events:?}");
    assert_eq!(last.reason.as_deref(), Some("WorkerShutdown"));
    assert_eq!(last.exit_code, Some(0), "stopped politely: {last:?}");
    wait_until_removed(&[&job_id]).await;
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn an_ended_jobs_container_is_kept_for_keep_s() {
    let system = docker_system_with(|config| {
        config.docker.keep = Duration::from_secs(5);
    })
    .await;
    let job_id = unique("kept");
    let events = system.run(&in_container(&job_id, "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    assert_eq!(containers_of(&job_id).len(), 1, "kept after its end");
    wait_until_removed(&[&job_id]).await;
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_sites_workspace_gives_the_job_its_folder_and_startup_read_only() {
    test_image();
    let mut system = System::without_worker(docker_worker).await;
    let workspace = system.path("workspace");
    std::fs::create_dir_all(workspace.join("startup")).unwrap();
    std::fs::write(workspace.join("startup/fed_client.json"), "{}\n").unwrap();
    system.config.docker.workspace = Some(workspace.clone());
    system.start_worker().await;
    let job_id = unique("ws");
    let ws = workspace.display();
    let script = format!(
        "cat {ws}/startup/fed_client.json; (echo x > {ws}/startup/new) 2>/dev/null || echo read-only; \
         echo result > {ws}/{job_id}/out"
    );
    let events = system.run(&in_container(&job_id, &script)).await;
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "{events:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "{}\nread-only\n");
    let out = std::fs::read_to_string(workspace.join(&job_id).join("out")).unwrap();
    assert_eq!(out, "result\n");
}
