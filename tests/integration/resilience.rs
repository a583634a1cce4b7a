//! Faults and shutdown over a real nats-server: the server killed and restarted
//! while jobs flow loses no request and no event; a worker shutting down drains, then
//! terminates what is left; streams and buckets removed while it runs are created
//! again.

use crate::common::chaos::{Tally, publish_until_taken, tally_when_ended};
use crate::common::system::{System, assert_well_formed, sh};
use flare_launcher::state::JobState;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_and_restarted_while_jobs_flow_loses_no_request_and_no_event() {
    let mut system = System::start_with(|c| c.max_jobs = 20).await;
    // More than the worker holds: most wait in the stream across the outage.
    let before: Vec<String> = (0..100).map(|n| format!("before-{n}")).collect();
    for job_id in &before {
        system
            .client
            .launch(&sh(job_id, "sleep 0.3"))
            .await
            .unwrap();
    }
    system
        .events_until("before-0", |e| e.state == JobState::Running)
        .await;
    // Jobs end while the server is down, so their final events and records
    // wait for it; requests published meanwhile wait with their publisher.
    system.nats.kill();
    let client = system.client.clone();
    let during = tokio::spawn(async move {
        let during: Vec<String> = (0..100).map(|n| format!("during-{n}")).collect();
        for job_id in &during {
            publish_until_taken(&client, &sh(job_id, "sleep 0.1")).await;
        }
        during
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    system.nats.restart();
    let jobs = [before, during.await.unwrap()].concat();

    let tally = tally_when_ended(&system.client, &jobs, Duration::from_secs(120)).await;
    assert_eq!(tally, Tally::clean(jobs.len(), 3 * jobs.len()));
    for job_id in &jobs {
        let record = system.client.status(job_id).await.unwrap();
        assert_eq!(record.seq, 3, "{job_id}: {record:?}");
    }
}

#[tokio::test]
async fn shutdown_lets_short_jobs_finish_and_terminates_the_rest() {
    let mut system = System::start_with(|c| {
        c.drain = true;
        c.drain_timeout = Duration::from_secs(2);
    })
    .await;
    system
        .client
        .launch(&sh("short", "sleep 0.5"))
        .await
        .unwrap();
    system.client.launch(&sh("long", "sleep 60")).await.unwrap();
    for job_id in ["short", "long"] {
        system
            .events_until(job_id, |e| e.state == JobState::Running)
            .await;
    }
    let began = Instant::now();
    system.shutdown_worker().await;
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "shutdown is bounded"
    );

    let short = system.events_until_terminal("short").await;
    assert_eq!(short.last().unwrap().state, JobState::Succeeded);
    let long = system.events_until_terminal("long").await;
    assert_well_formed(&long);
    let last = long.last().unwrap();
    assert_eq!(last.state, JobState::Terminated);
    assert_eq!(last.reason.as_deref(), Some("WorkerShutdown"));
    assert_eq!(last.return_code, Some(9));

    // Requests published after the worker stopped wait for the next worker.
    system.client.launch(&sh("later", "exit 0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        system.client.status("later").await,
        Err(flare_launcher::client::ClientError::NoWorker(_))
    ));
    system.start_worker().await;
    let later = system.events_until_terminal("later").await;
    assert_eq!(later.last().unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn shutdown_stops_a_job_even_while_a_long_grace_runs() {
    let mut system = System::start_with(|c| {
        c.drain = true;
        c.drain_timeout = Duration::from_secs(1);
    })
    .await;
    system.launch_stubborn("stubborn").await;
    let reply = system
        .client
        .terminate("stubborn", Some(3600))
        .await
        .unwrap();
    assert!(reply.accepted);
    system.shutdown_worker().await;
    let events = system.events_until_terminal("stubborn").await;
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated);
    assert_eq!(
        last.exit_code,
        Some(128 + 9),
        "killed at shutdown, not after an hour"
    );
}

#[tokio::test]
async fn requests_published_while_a_worker_shuts_down_go_to_the_next_worker_at_once() {
    let mut system = System::start_with(|c| {
        c.drain = true;
        c.drain_timeout = Duration::from_secs(5);
        c.ack_wait = Duration::from_secs(120);
    })
    .await;
    // A running job keeps the stopping worker connected while it drains.
    system.launch_until_running(&sh("holder", "sleep 60")).await;
    let stopping = system.worker.take().unwrap();
    let shutdown = tokio::spawn(stopping.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.client.launch(&sh("later", "exit 0")).await.unwrap();

    system.config.worker_id = "w2".into();
    system.start_worker().await;
    let began = Instant::now();
    let events = system.events_until_terminal("later").await;
    assert_eq!(events.last().unwrap().worker, "w2");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "the request waited for the ack timeout: {:?}",
        began.elapsed()
    );
    shutdown.await.unwrap();
}

#[tokio::test]
async fn streams_and_the_bucket_removed_while_a_worker_runs_are_created_again() {
    let system = System::start().await;
    let js = async_nats::jetstream::new(system.client.nats().clone());
    let reappears = |name: &'static str| {
        let js = js.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while js.get_stream(name).await.is_err() {
                assert!(Instant::now() < deadline, "{name} was not created again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The job store and the events stream go: the next job's writes create them again.
    js.delete_stream("FLARE_JOB_EVENTS").await.unwrap();
    js.delete_key_value("flare_jobs").await.unwrap();
    system
        .client
        .launch(&sh("after-removal", "exit 0"))
        .await
        .unwrap();
    reappears("FLARE_JOB_EVENTS").await;
    let events = system.events_until_terminal("after-removal").await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    assert_eq!(system.client.status("after-removal").await.unwrap().seq, 3);

    // The launch stream goes, and the pool's consumer with it: the worker notices
    // on its next pull and creates both again.
    js.delete_stream("FLARE_JOBS").await.unwrap();
    reappears("FLARE_JOBS").await;
    let events = system.run(&sh("after-stream-removal", "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
}
