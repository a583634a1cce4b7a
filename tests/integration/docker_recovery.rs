//! Records and recovery of Docker jobs on the real engine: the record names the
//! container as soon as it exists; the launches a worker was making when it died
//! are made again, once, when their requests come again, or taken up where they
//! were, whichever step of the launch it died at; containers carrying a
//! worker's labels that no job claims are removed after the grace period, and
//! the containers of its jobs are not. Ignored in a build that found no
//! engine (never in CI).

use crate::common::docker::{
    EngineProxy, Held, RestartableWorker, containers_of, create_labelled_container,
    docker_system_with, docker_worker, engine_actions, engine_time, hanging_registry, in_container,
    tag_test_image, test_image, unique, untag_test_image, wait_until_removed,
};
use crate::common::system::{System, assert_well_formed, log_path, states};
use flare_launcher::protocol::{BackendRef, Timeouts};
use flare_launcher::state::JobState;
use std::time::Duration;

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_record_names_the_container_before_it_runs() {
    test_image();
    let system = System::start_with(docker_worker).await;
    let job_id = unique("named");
    system
        .launch_until_running(&in_container(&job_id, "sleep 600"))
        .await;
    // Read before the end, whose record replaces every earlier revision.
    let history = system.record_history(&job_id).await;
    let reply = system.client.terminate(&job_id, Some(0)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    system.events_until_terminal(&job_id).await;

    let named_while_starting = history.iter().find(|record| {
        record.state == JobState::Starting
            && matches!(&record.backend_ref, Some(BackendRef::Docker { name, .. }) if name.ends_with(&job_id))
    });
    assert!(
        named_while_starting.is_some(),
        "no `starting` revision names the container: {history:#?}"
    );
}

/// Waits until the record of `job_id` says what its launch is doing, and
/// returns that.
async fn launch_step(system: &System, job_id: &str, starts_with: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(record) = system.client.status(job_id).await
            && let Some(message) = record.message.as_deref()
            && message.starts_with(starts_with)
        {
            assert_eq!(record.state, JobState::Starting, "{record:?}");
            return message.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{job_id}'s record never said {starts_with:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn launches_cut_short_by_their_workers_death_run_once_when_their_requests_come_again() {
    let restartable = RestartableWorker::new().await;
    let system = &restartable.system;
    let (port, held) = hanging_registry().await;
    let image = format!("127.0.0.1:{port}/flare-launcher/hangs:1");
    let mut worker = restartable.spawn();
    // Both jobs are claimed and stuck pulling when their worker dies: neither
    // request is acknowledged.
    let never_made = unique("never-made");
    let made_late = unique("made-late");
    for job_id in [&never_made, &made_late] {
        let mut request = in_container(job_id, "echo ran; exit 0");
        request.image = Some(image.clone());
        request.timeouts = Some(Timeouts {
            start_s: Some(600),
            run_s: None,
        });
        system.client.launch(&request).await.unwrap();
        let step = launch_step(system, job_id, "pulling image").await;
        assert_eq!(step, format!("pulling image {image}"));
    }
    worker.kill().await.unwrap();
    held.abort();
    // The image is here now, and the engine made one of the two containers
    // just as the worker died.
    tag_test_image(&image);
    create_labelled_container(
        &format!("flare-{made_late}"),
        &made_late,
        Some(&restartable.worker_id),
        "echo ran; exit 0",
        false,
    );

    // The requests come again (after the ack wait), and the worker's next run
    // takes each claim over and launches the job: the made container is
    // adopted by its name, the other made now; each job runs once.
    let _worker = restartable.spawn_with(&[("FLARE_ACK_WAIT_S", "2")]);
    for job_id in [&never_made, &made_late] {
        assert_ran_once(system, job_id).await;
    }
    wait_until_removed(&[&never_made, &made_late]).await;
    untag_test_image(&image);
}

/// Asserts `job_id` (`echo ran; exit 0`) ended with one story that ran it, its
/// output in its log once.
async fn assert_ran_once(system: &System, job_id: &str) {
    let events = system.events_until_terminal(job_id).await;
    assert_well_formed(&events);
    assert_eq!(
        states(&events),
        ["starting", "running", "succeeded"],
        "{job_id}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "ran\n", "{job_id} ran once");
}

/// A step of a launch, after the image is there, at which its worker is
/// killed: the engine request the proxy holds back (or whose answer it holds)
/// to keep the worker there, and how the step looks from outside.
struct EngineStep {
    step: &'static str,
    /// Held: the request whose line holds this.
    request: &'static str,
    held: Held,
    /// The container's state at the step.
    container: &'static [&'static str],
    /// Whether the job's record names the container at the step.
    named: bool,
}

/// The steps between the image and the first `running` that the engine's
/// answers mark.
const ENGINE_STEPS: [EngineStep; 3] = [
    EngineStep {
        step: "container made, the record not naming it",
        request: "/containers/create",
        held: Held::Answer,
        container: &["created"],
        named: false,
    },
    EngineStep {
        step: "the record naming the container, not started",
        request: "/start",
        held: Held::Request,
        container: &["created"],
        named: true,
    },
    EngineStep {
        step: "container started, not seen running",
        request: "/start",
        held: Held::Answer,
        container: &["running", "exited"],
        named: true,
    },
];

/// The engine's state of a container (`created`, `running`, ...), if it exists.
fn container_state(name: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.State.Status}}", name])
        .output()
        .expect("docker runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until `job_id`'s launch is at `at` (its request seen by the proxy,
/// its container and record as the step has them).
async fn until_at(system: &System, proxy: &EngineProxy, job_id: &str, at: &EngineStep) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let name = format!("flare-{job_id}");
    loop {
        let seen = proxy.requests().iter().any(|r| r.contains(at.request));
        let state = container_state(&name);
        let record = system.client.status(job_id).await.ok();
        if seen
            && state.as_deref().is_some_and(|s| at.container.contains(&s))
            && let Some(record) = record
            && record.backend_ref.is_some() == at.named
        {
            assert_eq!(record.state, JobState::Starting, "{}: {record:?}", at.step);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: never reached (container {state:?})",
            at.step
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_worker_killed_at_each_engine_step_of_a_launch_leaves_a_job_that_runs_once() {
    let proxy = EngineProxy::start().await;
    for at in &ENGINE_STEPS {
        let restartable = RestartableWorker::new().await;
        let system = &restartable.system;
        let since = engine_time();
        proxy.hold(at.request, at.held);
        let mut worker = restartable.spawn_with(&[("FLARE_DOCKER_HOST", &proxy.host())]);
        let job_id = unique("cut");
        system
            .client
            .launch(&in_container(&job_id, "echo ran; exit 0"))
            .await
            .unwrap();
        until_at(system, &proxy, &job_id, at).await;
        worker.kill().await.unwrap();
        proxy.let_through();

        // The worker's next run, on the engine itself, finds the container
        // (or the request comes again) and takes the job up from there.
        let mut worker = restartable.spawn_with(&[("FLARE_ACK_WAIT_S", "2")]);
        assert_ran_once(system, &job_id).await;
        // Its request, which came again, is settled too.
        system.wait_until_intake_idle().await;
        let actions = engine_actions(&job_id, &since);
        println!(
            "{}: the engine's actions on the job's containers: {actions:?}",
            at.step
        );
        for action in ["create", "start"] {
            let times = actions.iter().filter(|a| *a == action).count();
            assert_eq!(times, 1, "{}: {action} {actions:?}", at.step);
        }
        wait_until_removed(&[&job_id]).await;
        worker.kill().await.unwrap();
    }
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn containers_no_job_claims_are_removed_after_the_grace_period() {
    let system = docker_system_with(|config| {
        config.orphan_grace = Duration::from_secs(2);
    })
    .await;
    let worker_id = system.config.worker_id.clone();
    // A job that runs on: its container is claimed.
    let runs = unique("runs");
    system
        .launch_until_running(&in_container(&runs, "sleep 600"))
        .await;
    // No record claims this one: the engine made it, and the call failed.
    let orphan = unique("orphan");
    create_labelled_container(
        &format!("flare-{orphan}"),
        &orphan,
        Some(&worker_id),
        "sleep 600",
        true,
    );
    // Another worker's container is not this worker's to sweep.
    let foreign = unique("foreign");
    create_labelled_container(
        &format!("flare-{foreign}"),
        &foreign,
        Some("another-worker"),
        "sleep 600",
        true,
    );

    wait_until_removed(&[&orphan]).await;
    let foreign_left = containers_of(&foreign);
    std::process::Command::new("docker")
        .args(["rm", "-f", &format!("flare-{foreign}")])
        .output()
        .expect("docker runs");
    assert_eq!(
        foreign_left.len(),
        1,
        "another worker's container was swept"
    );
    assert_eq!(containers_of(&runs).len(), 1, "the running job's container");
    let record = system.client.status(&runs).await.unwrap();
    assert_eq!(record.state, JobState::Running, "{record:?}");

    let reply = system.client.terminate(&runs, Some(0)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal(&runs).await;
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    wait_until_removed(&[&runs]).await;
}
