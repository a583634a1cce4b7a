//! Start-up checks against real nats-servers: a server without JetStream is
//! refused with a plain explanation, a bad configuration never connects, and the
//! shared consumer follows the newest worker's settings; each subject prefix has
//! its own streams; more replicas than a lone server keeps are refused; a
//! restart reads its unfinished jobs' records and none of its ended ones.

use crate::common::nats_server::NatsServer;
use crate::common::system::{System, sh};
use flare_launcher::nats::setup::Layout;
use flare_launcher::nats::wiretap::Wiretap;
use flare_launcher::protocol::JobId;
use flare_launcher::state::JobState;
use flare_launcher::store::{Claim, JobStore};
use flare_launcher::worker::story::fresh_record;
use flare_launcher::worker::{Worker, WorkerError};
use futures::StreamExt;

#[tokio::test]
async fn a_server_without_jetstream_is_refused_plainly() {
    let nats = NatsServer::start_with_config("jetstream: disabled");
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::system::worker_config(&nats.url(), dir.path().to_owned());
    match Worker::start(config).await {
        Err(error @ WorkerError::Setup(_)) => {
            let message = error.to_string();
            assert!(message.contains("JetStream is not enabled"), "{message}");
            assert!(message.contains("-js"), "says what to do: {message}");
        }
        Err(other) => panic!("expected a set-up error, got {other}"),
        Ok(_) => panic!("a worker must not start without JetStream"),
    }
}

#[tokio::test]
async fn an_invalid_pool_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        crate::common::system::worker_config("nats://127.0.0.1:1", dir.path().to_owned());
    config.pool = "gpu.a100".into();
    match Worker::start(config).await {
        Err(WorkerError::Config(message)) => {
            assert!(message.to_string().contains("pool"), "{message}")
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("an invalid pool must be refused"),
    }
}

#[tokio::test]
async fn a_worker_started_with_another_ack_wait_updates_the_pools_consumer() {
    let mut system = crate::common::system::System::start().await;
    system.shutdown_worker().await;
    system.config.ack_wait = std::time::Duration::from_secs(7);
    system.start_worker().await;
    let js = async_nats::jetstream::new(system.client.nats().clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("launch-default", "FLARE_JOBS")
        .await
        .unwrap();
    let config = &consumer.info().await.unwrap().config;
    assert_eq!(config.ack_wait, std::time::Duration::from_secs(7));
    assert_eq!(
        config.filter_subject, "flare.jobs.launch.default",
        "the rest is kept"
    );
}

#[tokio::test]
async fn each_subject_prefix_has_its_own_streams_and_a_clash_is_refused() {
    use flare_launcher::client::Client;
    use flare_launcher::nats::subjects::Subjects;
    use futures::StreamExt;

    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    for prefix in ["flare.jobs", "staging.jobs"] {
        let mut config = crate::common::system::worker_config(&nats.url(), dir.path().join(prefix));
        config.subject_prefix = prefix.into();
        config.worker_id = format!("w-{}", prefix.replace('.', "-"));
        workers.push(Worker::start(config).await.expect("worker starts"));
    }
    for prefix in ["flare.jobs", "staging.jobs"] {
        let connection = async_nats::connect(nats.url()).await.unwrap();
        let client = Client::new(connection, Subjects::new(prefix), "default");
        let request = flare_launcher::protocol::LaunchRequest::new("same-id", vec!["true".into()]);
        client.launch(&request).await.unwrap();
        let mut events = Box::pin(client.events(Some("same-id"), true).await.unwrap());
        let last = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let event = events.next().await.unwrap().unwrap();
                if event.state.is_terminal() {
                    break event;
                }
            }
        })
        .await
        .expect("the job ends");
        assert_eq!(last.state.as_str(), "succeeded", "{prefix}");
        assert_eq!(last.worker, format!("w-{}", prefix.replace('.', "-")));
    }

    // `staging_jobs` maps to the same stream names as `staging.jobs`.
    let mut clash = crate::common::system::worker_config(&nats.url(), dir.path().join("clash"));
    clash.subject_prefix = "staging_jobs".into();
    match Worker::start(clash).await {
        Err(error @ WorkerError::Setup(_)) => {
            let message = error.to_string();
            assert!(message.contains("FLARE_JOBS_STAGING_JOBS"), "{message}");
            assert!(message.contains("staging.jobs.launch.>"), "{message}");
        }
        Err(other) => panic!("expected a set-up error, got {other}"),
        Ok(_) => panic!("a prefix whose streams serve another prefix must be refused"),
    }
    for worker in workers {
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn a_job_log_directory_that_cannot_be_made_stops_the_worker() {
    let system = crate::common::system::System::without_worker(|_| {}).await;
    // A file where the directory of the jobs' logs belongs.
    std::fs::create_dir_all(&system.config.data_dir).unwrap();
    std::fs::write(system.config.data_dir.join("logs"), "").unwrap();
    let message = system.worker_refusal().await;
    assert!(
        message.contains("cannot create the job log directory"),
        "{message}"
    );
}

#[tokio::test]
async fn more_replicas_than_a_lone_server_keeps_stop_the_worker_with_the_servers_reason() {
    // The client made the streams with one replica: the worker would raise them.
    let system = crate::common::system::System::without_worker(|c| c.replicas = 3).await;
    let message = system.worker_refusal().await;
    assert!(
        message.contains("raise the replicas of stream FLARE_JOBS to 3"),
        "{message}"
    );
}

/// Ended records naming the restarting worker.
const ENDED_RECORDS: usize = 2_000;

#[tokio::test]
async fn a_restart_reads_the_record_of_its_running_job_and_none_of_its_many_ended_ones() {
    let mut system = System::start().await;
    system
        .launch_until_running(&sh("still-running", "sleep 300"))
        .await;
    let js = async_nats::jetstream::new(system.client.nats().clone());
    let layout = Layout::new(
        js,
        system.client.subjects().clone(),
        &system.config.pool,
        system.config.ack_wait,
    );
    let store = JobStore::new(layout.prepare().await.unwrap().bucket, layout);
    futures::stream::iter(0..ENDED_RECORDS)
        .for_each_concurrent(64, |n| {
            let store = store.clone();
            async move {
                let job_id = JobId::new(format!("ended-{n}")).unwrap();
                let record = fresh_record(&job_id, "w1", JobState::Succeeded);
                assert!(matches!(
                    store.claim(&record).await.unwrap(),
                    Claim::Created { .. }
                ));
            }
        })
        .await;
    // Handed over: the process job stays with its supervisor for the restart.
    system.shutdown_worker().await;

    let tap = Wiretap::start(&async_nats::connect(system.nats.url()).await.unwrap())
        .await
        .unwrap();
    system.start_worker().await;
    let requests = tap.take().await.unwrap();
    let stream = format!("KV_{}", system.client.subjects().jobs_bucket());
    let listings = requests.get(&format!("CONSUMER.CREATE {stream}"));
    let reads = requests.get(&format!("DIRECT.GET {stream}"));
    println!(
        "start-up with 1 running and {ENDED_RECORDS} ended jobs: {listings} listings and {reads} reads of the record bucket\n{}",
        requests.text(1)
    );
    assert_eq!(listings, 0, "nothing lists the record bucket");
    assert!(
        (1..=4).contains(&reads),
        "the running job's record is read, no ended one: {reads} reads"
    );

    system
        .client
        .terminate("still-running", Some(1))
        .await
        .unwrap();
    let events = system.events_until_terminal("still-running").await;
    let end = events.last().unwrap();
    assert_eq!(
        (end.state, end.worker.as_str()),
        (JobState::Terminated, "w1"),
        "the restarted worker followed its job on"
    );
}
