//! The worker's endpoint (`--metrics-listen`), over real HTTP: `/metrics`
//! counts the jobs that really ran; `/healthz` answers while the process
//! serves; `/readyz` turns unready, naming why, when NATS goes away or a backend
//! stops answering, and ready again when they come back.

use crate::common::docker::{Held, docker_system_with, in_container, system_through_proxy, unique};
use crate::common::k8s::{Cluster, in_pod, k8s_worker};
use crate::common::probe::{get, sample};
use crate::common::system::{System, sh};
use flare_launcher::config::PullPolicy;
use flare_launcher::state::JobState;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a probe may take to change its answer: NATS reconnects and the
/// lease is taken anew within seconds; generous for a loaded machine.
const CHANGE_WITHIN: Duration = Duration::from_secs(60);

/// Polls `/readyz` until its status is `status`; returns its body then.
async fn readyz_until(address: SocketAddr, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + CHANGE_WITHIN;
    loop {
        let (now, body) = get(address, "/readyz").await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {now} ({body:?}), not {status}, after {CHANGE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn probe_address(system: &System) -> SocketAddr {
    system
        .worker
        .as_ref()
        .and_then(|worker| worker.probe_address())
        .expect("the worker serves probes")
}

fn listening(config: &mut flare_launcher::config::WorkerConfig) {
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn metrics_count_the_jobs_that_ran_by_their_end_and_show_the_running_ones() {
    let system = System::start_with(|config| {
        listening(config);
        config.max_jobs = 7;
    })
    .await;
    let address = probe_address(&system);
    for (job_id, script) in [
        ("m-ok-1", "exit 0"),
        ("m-ok-2", "exit 0"),
        ("m-three", "exit 3"),
    ] {
        system.run(&sh(job_id, script)).await;
    }
    // A program that cannot be started: a launch the backend refuses.
    let mut no_program = sh("m-no-program", "");
    no_program.command = vec!["/no/such/program".into()];
    system.run(&no_program).await;
    system
        .launch_until_running(&sh("m-runs", "sleep 300"))
        .await;
    let (status, metrics) = get(address, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    for (series, value) in [
        (
            "flare_launcher_jobs_ended_total{state=\"succeeded\",reason=\"\",backend=\"process\"}",
            2.0,
        ),
        (
            "flare_launcher_job_events_total{state=\"starting\",backend=\"process\"}",
            5.0,
        ),
        (
            "flare_launcher_launch_failures_total{backend=\"process\",error=\"spawn\"}",
            1.0,
        ),
        // Each job that ran noted its launch; each that ended, its end.
        (
            "flare_launcher_launch_seconds_count{backend=\"process\"}",
            4.0,
        ),
        ("flare_launcher_end_seconds_count{backend=\"process\"}", 3.0),
        ("flare_launcher_gpus{state=\"free\"}", 0.0),
        ("flare_launcher_nats_reconnects_total", 0.0),
        (
            "flare_launcher_job_events_total{state=\"running\",backend=\"process\"}",
            4.0,
        ),
        (
            "flare_launcher_job_events_total{state=\"failed\",backend=\"process\"}",
            1.0,
        ),
        ("flare_launcher_jobs_running", 1.0),
        ("flare_launcher_capacity_jobs", 7.0),
        ("flare_launcher_lease_held", 1.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    let failed: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("flare_launcher_jobs_ended_total{state=\"failed\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 1.0, "{metrics}");
    system.client.terminate("m-runs", Some(0)).await.unwrap();
    system.events_until_terminal("m-runs").await;
}

#[tokio::test]
async fn readyz_is_unready_while_nats_is_away_and_ready_again_when_it_returns() {
    let mut system = System::start_with(listening).await;
    let address = probe_address(&system);
    assert_eq!(get(address, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(readyz_until(address, 200).await, "ready\n");
    assert_eq!(get(address, "/elsewhere").await.0, 404);

    system.nats.stop();
    let why = readyz_until(address, 503).await;
    assert!(why.contains("nats: "), "{why}");
    assert_eq!(get(address, "/healthz").await.0, 200, "it still lives");

    system.nats.restart();
    assert_eq!(readyz_until(address, 200).await, "ready\n");
    let (_, metrics) = get(address, "/metrics").await;
    assert_eq!(
        sample(&metrics, "flare_launcher_nats_reconnects_total"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn readyz_names_a_backend_that_stops_answering() {
    let (proxy, system) = system_through_proxy(listening).await;
    let address = probe_address(&system);
    readyz_until(address, 200).await;
    proxy.hold("/_ping", Held::Request);
    let why = readyz_until(address, 503).await;
    assert!(why.contains("backend docker: "), "{why}");
    assert!(!why.contains("nats: "), "{why}");
    proxy.let_through();
    readyz_until(address, 200).await;
}

#[tokio::test]
async fn a_worker_draining_its_jobs_is_not_ready_and_its_endpoint_stops_with_it() {
    let mut system = System::start_with(|config| {
        listening(config);
        config.drain = true;
        config.drain_timeout = Duration::from_secs(120);
    })
    .await;
    let address = probe_address(&system);
    let job_id = "draining-job";
    system.launch_until_running(&sh(job_id, "sleep 300")).await;
    readyz_until(address, 200).await;
    let worker = system.worker.take().unwrap();
    let leaving = tokio::spawn(worker.shutdown());
    let why = readyz_until(address, 503).await;
    assert!(why.contains("worker: leaving"), "{why}");
    assert_eq!(get(address, "/healthz").await.0, 200, "it still lives");
    system.client.terminate(job_id, Some(0)).await.unwrap();
    leaving.await.unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the endpoint stops with the worker"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn metrics_count_the_docker_engine_requests_and_the_launches_it_refused() {
    let system = docker_system_with(|config| {
        listening(config);
        config.docker.pull = PullPolicy::Never;
    })
    .await;
    let address = probe_address(&system);
    let ran = unique("m-docker");
    let events = system.run(&in_container(&ran, "exit 3")).await;
    assert_eq!(events.last().unwrap().state, JobState::Failed, "{events:?}");
    let missing = unique("m-no-image");
    let mut no_image = in_container(&missing, "exit 0");
    no_image.image = Some("flare-launcher-no-such-image:1".into());
    let events = system.run(&no_image).await;
    assert_eq!(events.last().unwrap().state, JobState::Error, "{events:?}");

    let (_, metrics) = get(address, "/metrics").await;
    for (series, value) in [
        // Both jobs asked for a container; the engine refused the second.
        (
            "flare_launcher_api_requests_total{api=\"docker\",kind=\"create_container\"}",
            2.0,
        ),
        (
            "flare_launcher_api_errors_total{api=\"docker\",kind=\"create_container\"}",
            1.0,
        ),
        (
            "flare_launcher_api_requests_total{api=\"docker\",kind=\"start_container\"}",
            1.0,
        ),
        (
            "flare_launcher_launch_failures_total{backend=\"docker\",error=\"image_not_found\"}",
            1.0,
        ),
        (
            "flare_launcher_launch_seconds_count{backend=\"docker\"}",
            1.0,
        ),
        ("flare_launcher_end_seconds_count{backend=\"docker\"}", 1.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "flare_launcher_api_errors_total{api=\"docker\",kind=\"start_container\"}"
        ),
        None,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_request_the_kubernetes_api_server_saw_from_the_worker() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        listening(config);
        k8s_worker(config, &cluster);
    })
    .await;
    let address = probe_address(&system);
    let job_id = unique("m-pod");
    let events = system.run(&in_pod(&job_id, "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    cluster.wait_until_deleted(&job_id).await;
    // The server counts a request before the worker has its answer: the two
    // agree once the answers are in.
    let deadline = tokio::time::Instant::now() + CHANGE_WITHIN;
    loop {
        let (_, metrics) = get(address, "/metrics").await;
        let seen = cluster.requests();
        let differing: Vec<String> = seen
            .iter()
            .filter_map(|(verb, resource, count)| {
                let series = format!(
                    "flare_launcher_api_requests_total{{api=\"kubernetes\",kind=\"{verb} {resource}\"}}"
                );
                let counted = sample(&metrics, &series);
                (counted != Some(*count as f64))
                    .then(|| format!("{verb} {resource}: server {count}, worker {counted:?}"))
            })
            .collect();
        let kinds_counted = metrics
            .lines()
            .filter(|line| line.starts_with("flare_launcher_api_requests_total{api=\"kubernetes\""))
            .count();
        if differing.is_empty() && kinds_counted == seen.len() {
            assert!(
                seen.iter()
                    .any(|(verb, resource, _)| verb == "create" && resource == "pods")
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{differing:?}, {kinds_counted} kinds counted, server saw {seen:?}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
