//! Start-up checks against real nats-servers: a server without JetStream is
//! refused with a plain explanation, a bad configuration never connects, and the
//! shared consumer follows the newest worker's settings.

mod common;

use common::nats_server::NatsServer;
use flare_launcher::config::WorkerConfig;
use flare_launcher::worker::{Worker, WorkerError};

#[tokio::test]
async fn a_server_without_jetstream_is_refused_plainly() {
    let nats = NatsServer::start_with_config("jetstream: disabled");
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerConfig::new(&nats.url(), dir.path().to_owned());
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
    let mut config = WorkerConfig::new("nats://127.0.0.1:1", dir.path().to_owned());
    config.pool = "gpu.a100".into();
    match Worker::start(config).await {
        Err(WorkerError::Config(message)) => assert!(message.contains("pool"), "{message}"),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("an invalid pool must be refused"),
    }
}

#[tokio::test]
async fn a_worker_started_with_another_ack_wait_updates_the_pools_consumer() {
    let mut system = common::system::System::start().await;
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
