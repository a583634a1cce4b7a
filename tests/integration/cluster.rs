//! Workers on a NATS cluster of three servers: `--replicas 3` keeps every stream
//! and bucket on all three (streams a client made with one are raised, and a
//! worker with fewer lowers nothing), and a server killed while jobs run (the
//! one that leads the events stream) loses no job and repeats no event.

use crate::common::chaos::{Tally, publish_until_taken, tally_when_ended};
use crate::common::nats_server::NatsCluster;
use crate::common::system::{connect_client, sh, worker_config};
use flare_launcher::worker::Worker;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_server_killed_mid_run_loses_no_job_and_repeats_no_event() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let client = connect_client(&urls).await;
    // Made by a client before any worker: one replica.
    client.ensure_streams().await.unwrap();
    let mut workers = Vec::new();
    // The second worker, on the default of one replica, lowers nothing.
    for (worker_id, replicas) in [("w1", 3), ("w2", 1)] {
        let mut config = worker_config(&urls, dir.path().join(worker_id));
        config.worker_id = worker_id.into();
        config.replicas = replicas;
        config.max_jobs = 10;
        workers.push(Worker::start(config).await.expect("the worker starts"));
    }
    let js = async_nats::jetstream::new(client.nats().clone());
    for name in ["FLARE_JOBS", "FLARE_JOB_EVENTS", "KV_flare_jobs"] {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }

    let before: Vec<String> = (0..60).map(|n| format!("before-{n}")).collect();
    for job_id in &before {
        publish_until_taken(&client, &sh(job_id, "sleep 0.3")).await;
    }
    let mut events = js.get_stream("FLARE_JOB_EVENTS").await.unwrap();
    // Jobs run when the server goes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while events.info().await.unwrap().state.messages < 20 {
        assert!(Instant::now() < deadline, "no jobs ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = events
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|cluster| cluster.leader)
        .expect("the events stream has a leader");
    println!("killing {leader}, the events stream's leader");
    cluster.server_named(&leader).kill();

    let during: Vec<String> = (0..60).map(|n| format!("during-{n}")).collect();
    for job_id in &during {
        publish_until_taken(&client, &sh(job_id, "sleep 0.1")).await;
    }
    let jobs = [before, during].concat();
    let tally = tally_when_ended(&client, &jobs, Duration::from_secs(120)).await;
    assert_eq!(tally, Tally::clean(jobs.len(), 3 * jobs.len()));
    for worker in workers {
        worker.shutdown().await;
    }
}
