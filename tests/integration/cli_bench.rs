//! `flare-launcher bench` against a real nats-server and an in-process worker:
//! it finishes by itself and reports every job, latencies and the worker's memory
//! and CPU time.

use crate::common::nats_server::NatsServer;
use flare_launcher::worker::Worker;

const BIN: &str = env!("CARGO_BIN_EXE_flare-launcher");

/// Runs `flare-launcher bench --json ARGS` against `server` and returns its
/// result; fails the test when the bench fails.
async fn bench_json(server: &NatsServer, args: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(BIN)
        .args(["--nats-url", &server.url(), "bench", "--json"])
        .args(args)
        .output()
        .await
        .expect("run flare-launcher bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON object on stdout")
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reports_every_job_its_latencies_and_the_worker_memory() {
    let server = NatsServer::start();
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let worker = Worker::start(crate::common::system::worker_config(
        &server.url(),
        data_dir.path().to_owned(),
    ))
    .await
    .expect("worker starts");

    let pid = std::process::id().to_string();
    let result = bench_json(
        &server,
        &[
            "--jobs",
            "30",
            "--concurrency",
            "5",
            "--warmup",
            "2",
            "--worker-pid",
            &pid,
        ],
    )
    .await;

    assert_eq!(result["jobs"], 30, "{result}");
    assert_eq!(result["completed"], 30, "{result}");
    assert_eq!(result["succeeded"], 30, "{result}");
    assert_eq!(result["failures"], 0, "{result}");
    for latency in ["to_running", "to_terminal"] {
        assert_eq!(result[latency]["count"], 30, "{result}");
        assert!(
            result[latency]["p50_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{result}"
        );
    }
    let worker_memory = &result["workers"][0];
    assert_eq!(worker_memory["pid"], std::process::id(), "{result}");
    assert!(
        worker_memory["peak_rss_mib"]
            .as_f64()
            .is_some_and(|mib| mib > 0.0),
        "{result}"
    );
    assert!(
        worker_memory["rss_mib"]
            .as_f64()
            .is_some_and(|mib| mib > 0.0),
        "{result}"
    );
    // Clock ticks are coarse: 30 jobs may cost less than one.
    assert!(
        worker_memory["cpu_ms_per_job"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "{result}"
    );

    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_docker_bench_measures_the_engine_floor_in_the_same_run() {
    let image = crate::common::docker::test_image();
    let server = NatsServer::start();
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config =
        crate::common::system::worker_config(&server.url(), data_dir.path().to_owned());
    crate::common::docker::docker_worker(&mut config);
    let worker = Worker::start(config).await.expect("worker starts");

    let pid = std::process::id().to_string();
    let result = bench_json(
        &server,
        &[
            "--backend",
            "docker",
            "--image",
            image,
            "--jobs",
            "4",
            "--concurrency",
            "2",
            "--warmup",
            "1",
            "--floor-containers",
            "2",
            "--worker-pid",
            &pid,
            "--",
            "/bin/true",
        ],
    )
    .await;
    assert_eq!(result["succeeded"], 4, "{result}");
    assert_eq!(result["backend"], "docker", "{result}");
    // Right before and right after the worker's jobs, one at a time and at
    // the bench's concurrency.
    let floors = result["engine_floor"].as_array().expect("engine floor");
    assert_eq!(floors.len(), 4, "{result}");
    let rounds = [(1, "before"), (2, "before"), (1, "after"), (2, "after")];
    for (floor, (concurrency, measured)) in floors.iter().zip(rounds) {
        assert_eq!(floor["concurrency"], concurrency, "{result}");
        assert_eq!(floor["measured"], measured, "{result}");
        assert_eq!(floor["create_start"]["count"], 2, "{result}");
        assert!(floor["containers_per_s"].as_f64().is_some_and(|n| n > 0.0));
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_against_kube_sim_reports_api_requests_per_job_and_exit_latency() {
    let cluster = crate::common::k8s::Cluster::start(|_| {}).await;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temporary dir");
    let mut config = crate::common::system::worker_config(&server.url(), dir.path().join("data"));
    crate::common::k8s::k8s_worker(&mut config, &cluster);
    let worker = Worker::start(config).await.expect("worker starts");
    let admin = dir.path().join("admin.kubeconfig");
    cluster.sim.write_kubeconfig(&admin).expect("kubeconfig");
    let stamps = dir.path().join("stamps");
    let pid = std::process::id().to_string();
    let result = bench_json(
        &server,
        &[
            "--backend",
            "k8s",
            "--image",
            "flare-bench:1",
            "--jobs",
            "6",
            "--concurrency",
            "2",
            "--warmup",
            "1",
            "--worker-pid",
            &pid,
            "--exit-stamps",
            stamps.to_str().unwrap(),
            "--kube-sim-kubeconfig",
            admin.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(result["succeeded"], 6, "{result}");
    assert_eq!(result["exit_to_terminal"]["count"], 6, "{result}");
    let api = &result["api_requests"];
    for request in ["create pods", "get pods/log", "delete pods"] {
        assert_eq!(api[request], 6, "{request}: {result}");
    }
    assert_eq!(result["api_requests_per_job"], 3.0, "{result}");
    worker.shutdown().await;
}
