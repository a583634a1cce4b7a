//! `deploy/nats-roles.conf` on a real nats-server: a worker connected as the
//! `worker` user runs the jobs an `engine` client launches, terminates and asks
//! about; the engine cannot write a job record or publish an event; an
//! `operator` lists jobs and workers and follows events, and cannot launch or
//! write; neither reads the launch requests (a consumer on `FLARE_JOBS`, the
//! worker's inbox). The server names each refusal in its log, and none of them
//! is the worker's.

use crate::common::nats_server::NatsServer;
use crate::common::system::{JOB_TIMEOUT, sh, worker_config};
use async_nats::jetstream::consumer;
use flare_launcher::client::Client;
use flare_launcher::nats::connect::{NatsArgs, connect};
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::protocol::{JobEvent, JobRecord};
use flare_launcher::state::JobState;
use flare_launcher::worker::Worker;
use futures::StreamExt;
use std::process::Output;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flare-launcher");
const ROLES: [&str; 3] = ["engine", "worker", "operator"];
/// How long a refused JetStream publish may wait for the ack that never comes.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

fn password(role: &str) -> String {
    format!("{role}-pw-7f3a")
}

/// The shipped file, each placeholder password filled in.
fn roles_conf() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nats-roles.conf");
    let mut conf = std::fs::read_to_string(path).expect("deploy/nats-roles.conf");
    for role in ROLES {
        let placeholder = format!("REPLACE-{role}-password");
        assert!(conf.contains(&placeholder), "{placeholder} in {path}");
        conf = conf.replace(&placeholder, &password(role));
    }
    conf
}

/// Each role's replies come on inboxes of its own.
fn inbox_prefix(role: &str) -> String {
    format!("_INBOX_{role}")
}

fn credentials(server: &NatsServer, role: &str) -> NatsArgs {
    NatsArgs {
        url: Some(server.url()),
        user: Some(role.to_owned()),
        password: Some(password(role)),
        inbox_prefix: Some(inbox_prefix(role)),
        ..NatsArgs::default()
    }
}

async fn client_as(server: &NatsServer, role: &str) -> Client {
    let nats = connect(&credentials(server, role), role, false)
        .await
        .unwrap_or_else(|e| panic!("{role} connects: {e}"));
    Client::new(nats, Subjects::new("flare.jobs"), "default")
}

/// `flare-launcher ARGS` as the operator (the password in the environment),
/// without blocking the in-process worker that answers it.
async fn cli_as_operator(server: &NatsServer, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(["--nats-url", &server.url(), "--nats-user", "operator"])
        .args(args)
        .env("FLARE_NATS_PASSWORD", password("operator"))
        .env("FLARE_NATS_INBOX_PREFIX", inbox_prefix("operator"))
        .output()
        .await
        .expect("flare-launcher runs")
}

/// A job's events, replayed and followed by `client` until the terminal one.
async fn events_until_terminal(client: &Client, job_id: &str) -> Vec<JobEvent> {
    let mut events = Box::pin(client.events(Some(job_id), true).await.expect("events"));
    let mut seen = Vec::new();
    tokio::time::timeout(JOB_TIMEOUT, async {
        while let Some(event) = events.next().await {
            let event = event.expect("a readable event");
            let terminal = event.state.is_terminal();
            seen.push(event);
            if terminal {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{job_id} did not end within {JOB_TIMEOUT:?}: {seen:?}"));
    seen
}

/// Publishes through JetStream as `client` and waits for the stream's ack,
/// which a refused publish never gets.
async fn stored(client: &Client, subject: &str, payload: &'static [u8]) -> bool {
    let js = async_nats::jetstream::new(client.nats().clone());
    let attempt = async {
        js.publish(subject.to_owned(), payload.into())
            .await
            .ok()?
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(REFUSAL_TIMEOUT, attempt).await,
        Ok(Some(_))
    )
}

/// The server's log lines refusing `role` something.
fn refusals(server: &NatsServer, role: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|line| line.contains(" Violation - ") && line.contains(&format!("user:{role}\"")))
        .map(str::to_owned)
        .collect()
}

/// Checks that the server refused `role` each of `subjects`; returns how many
/// refusals of `role` it logged.
fn assert_refused(server: &NatsServer, role: &str, subjects: &[&str]) -> usize {
    let refused = refusals(server, role);
    for subject in subjects {
        assert!(
            refused.iter().any(|line| line.contains(subject)),
            "{role}, {subject}: {refused:#?}"
        );
    }
    refused.len()
}

#[tokio::test]
async fn each_role_keeps_to_its_subjects() {
    let server = NatsServer::start_with_config(&roles_conf());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker_config(&server.url(), dir.path().join("data"));
    config.worker_id = "roles-w1".into();
    config.nats = credentials(&server, "worker");
    let worker = Worker::start(config)
        .await
        .expect("the worker starts as `worker`");

    // The engine launches, asks for status, terminates and follows events.
    let engine = client_as(&server, "engine").await;
    engine
        .ensure_streams()
        .await
        .expect("the engine finds the streams");
    engine
        .launch(&sh("roles-done", "exit 0"))
        .await
        .expect("the engine launches");
    let done = events_until_terminal(&engine, "roles-done").await;
    assert_eq!(
        done.last().map(|e| e.state),
        Some(JobState::Succeeded),
        "{done:?}"
    );
    let record = engine
        .status("roles-done")
        .await
        .expect("the engine asks for status");
    assert_eq!(record.state, JobState::Succeeded);

    engine
        .launch(&sh("roles-stopped", "sleep 300"))
        .await
        .expect("the engine launches");
    let mut events = Box::pin(
        engine
            .events(Some("roles-stopped"), true)
            .await
            .expect("events"),
    );
    tokio::time::timeout(JOB_TIMEOUT, async {
        while let Some(event) = events.next().await {
            if event.expect("an event").state == JobState::Running {
                return;
            }
        }
    })
    .await
    .expect("roles-stopped runs");
    let reply = engine
        .terminate("roles-stopped", Some(1))
        .await
        .expect("the engine terminates");
    assert!(reply.accepted, "{reply:?}");
    let stopped = events_until_terminal(&engine, "roles-stopped").await;
    let end = stopped.last().expect("a terminal event");
    assert_eq!(end.state, JobState::Terminated, "{stopped:?}");
    assert_eq!(end.reason.as_deref(), Some("TerminateRequested"));

    // The engine cannot forge a record or an event.
    assert!(
        !stored(&engine, "$KV.flare_jobs.roles-done", b"{\"forged\":true}").await,
        "the engine wrote a job record"
    );
    assert!(
        !stored(
            &engine,
            "flare.jobs.events.roles-done",
            b"{\"forged\":true}"
        )
        .await,
        "the engine published an event"
    );
    let after = events_until_terminal(&engine, "roles-done").await;
    assert_eq!(after.len(), done.len(), "{after:?}");
    let record = engine.status("roles-done").await.expect("status");
    assert_eq!(record.state, JobState::Succeeded, "{record:?}");

    // The operator lists jobs and workers and follows events.
    let status = cli_as_operator(&server, &["status", "roles-done"]).await;
    assert!(status.status.success(), "{status:?}");
    let shown: JobRecord = serde_json::from_slice(&status.stdout).expect("a record");
    assert_eq!(shown.state, JobState::Succeeded);
    let workers = cli_as_operator(&server, &["workers"]).await;
    assert!(workers.status.success(), "{workers:?}");
    assert!(
        String::from_utf8_lossy(&workers.stdout).contains("roles-w1"),
        "{workers:?}"
    );
    let operator = client_as(&server, "operator").await;
    let js = async_nats::jetstream::new(operator.nats().clone());
    let records = js
        .get_key_value("flare_jobs")
        .await
        .expect("the records bucket");
    let mut keys: Vec<String> = records
        .keys()
        .await
        .expect("the operator lists the records")
        .map(|key| key.expect("a key"))
        .collect()
        .await;
    keys.sort();
    assert_eq!(keys, ["roles-done", "roles-stopped"]);
    let followed = events_until_terminal(&operator, "roles-stopped").await;
    assert_eq!(followed.len(), stopped.len(), "{followed:?}");
    // The operator finds the worker through service discovery.
    let pong = tokio::time::timeout(
        JOB_TIMEOUT,
        operator
            .nats()
            .request("$SRV.PING.flare-launcher", "".into()),
    )
    .await
    .expect("a discovery answer in time")
    .expect("the worker answers the operator's ping");
    let pong: serde_json::Value = serde_json::from_slice(&pong.payload).expect("a JSON pong");
    assert_eq!(pong["metadata"]["worker_id"], "roles-w1", "{pong}");

    // The operator cannot launch, terminate or write.
    let launch = operator.launch(&sh("roles-operator", "exit 0")).await;
    assert!(launch.is_err(), "the operator launched");
    let terminate = operator.terminate("roles-done", None).await;
    assert!(terminate.is_err(), "the operator terminated: {terminate:?}");
    assert!(
        !stored(&operator, "$KV.flare_jobs.roles-done", b"{}").await,
        "the operator wrote a job record"
    );
    assert!(
        !stored(&operator, "flare.jobs.events.roles-done", b"{}").await,
        "the operator published an event"
    );
    let unknown = engine.status("roles-operator").await;
    assert!(unknown.is_err(), "the operator's launch ran: {unknown:?}");

    // Neither reads the launch requests: not from their stream, nor from the
    // worker's inbox, where they are delivered.
    for client in [&engine, &operator] {
        let js = async_nats::jetstream::new(client.nats().clone());
        let consumer = js
            .create_consumer_on_stream(consumer::pull::Config::default(), "FLARE_JOBS")
            .await;
        assert!(consumer.is_err(), "a consumer on FLARE_JOBS");
        let _peek = client
            .nats()
            .subscribe(format!("{}.>", inbox_prefix("worker")))
            .await
            .expect("the subscription is sent");
        client.nats().flush().await.expect("flushed");
        // A round trip: the server has handled the subscription.
        client.status("roles-done").await.expect("status");
    }

    // The server refused each of those, and nothing of the worker's.
    let forged = [
        "$KV.flare_jobs.roles-done",
        "flare.jobs.events.roles-done",
        "$JS.API.CONSUMER.CREATE.FLARE_JOBS",
        "_INBOX_worker.>",
    ];
    let engine_refused = assert_refused(&server, "engine", &forged);
    let ordered = [
        "flare.jobs.launch.default",
        "flare.jobs.terminate.roles-done",
    ];
    let operator_refused = assert_refused(&server, "operator", &[&forged[..], &ordered].concat());
    println!("refused: engine {engine_refused}, operator {operator_refused}");
    assert_eq!(refusals(&server, "worker"), Vec::<String>::new());
    worker.shutdown().await;
    assert_eq!(refusals(&server, "worker"), Vec::<String>::new());
}
