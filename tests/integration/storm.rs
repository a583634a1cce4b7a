//! A storm of launch requests, some published twice, through three workers on one
//! nats-server: every job's events reach a plain core subscriber once each, with
//! exactly one terminal event per job, and the stream holds them once each.

use crate::common::system::{CoreEvents, System, assert_well_formed};
use flare_launcher::protocol::LaunchRequest;
use flare_launcher::worker::Worker;
use std::time::Duration;

/// Launch requests in the storm.
const JOBS: usize = 1000;
/// Every this many requests one is published twice, back to back.
const TWICE_EVERY: usize = 10;
/// How long the storm's jobs may take to end.
const STORM_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_duplicate_launches_shows_every_event_once() {
    let system = System::start_with(|c| c.worker_id = "storm-1".into()).await;
    let mut others = Vec::new();
    for n in [2, 3] {
        let mut config = system.config.clone();
        config.worker_id = format!("storm-{n}");
        config.data_dir = system.path(&format!("data-{n}"));
        others.push(Worker::start(config).await.expect("worker starts"));
    }
    let mut core = CoreEvents::subscribe(&system.client).await;

    let jobs: Vec<String> = (0..JOBS).map(|n| format!("storm-{n}")).collect();
    for (n, job_id) in jobs.iter().enumerate() {
        let request = LaunchRequest::new(job_id, vec!["true".into()]);
        let payload = bytes::Bytes::from(serde_json::to_vec(&request).unwrap());
        let copies = if n % TWICE_EVERY == 0 { 2 } else { 1 };
        for _ in 0..copies {
            // No Nats-Msg-Id: the stream keeps both copies of a duplicate.
            system
                .client
                .publish_launch(payload.clone(), None)
                .await
                .unwrap();
        }
    }
    core.until_terminal(&jobs, STORM_TIMEOUT).await;
    // Every delivery of every request is settled, so nothing more is published.
    system.wait_until_intake_idle().await;
    core.assert_each_once(&jobs).await;
    for job_id in jobs.iter().step_by(TWICE_EVERY) {
        let stored = system.events_until_terminal(job_id).await;
        assert_well_formed(&stored);
    }
    for worker in others {
        worker.shutdown().await;
    }
}
