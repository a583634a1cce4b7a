//! Terminate and status over a real nats-server: terminating running jobs (also
//! ones that ignore SIGTERM), terminating before the launch, terminating finished
//! jobs, status of finished and unknown jobs, and error replies to bad
//! terminate bodies. (A job that exits 0 when asked to stop is `conformance`'s.)

use crate::common::system::{System, assert_well_formed, sh, states};
use flare_launcher::client::ClientError;
use flare_launcher::protocol::ErrorReply;
use flare_launcher::state::JobState;
use std::time::{Duration, Instant};

#[tokio::test]
async fn terminating_a_running_job_ends_it_in_terminated() {
    let system = System::start().await;
    system.launch_until_running(&sh("long", "sleep 60")).await;
    let reply = system.client.terminate("long", None).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(reply.state, JobState::Running);
    let events = system.events_until_terminal("long").await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    let last = events.last().unwrap();
    assert_eq!(last.return_code, Some(9));
    assert_eq!(last.reason.as_deref(), Some("TerminateRequested"));
    assert_eq!(last.exit_code, Some(128 + 15));
}

#[tokio::test]
async fn a_job_that_ignores_sigterm_is_killed_after_the_grace() {
    let system = System::start().await;
    system.launch_stubborn("stubborn").await;
    let asked = Instant::now();
    let reply = system.client.terminate("stubborn", Some(1)).await.unwrap();
    assert!(reply.accepted);
    let events = system.events_until_terminal("stubborn").await;
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated);
    assert_eq!(
        last.exit_code,
        Some(128 + 9),
        "killed, not stopped politely: {last:?}"
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "the grace was honoured"
    );
}

#[tokio::test]
async fn a_terminate_before_the_launch_means_it_never_starts() {
    let system = System::start().await;
    let reply = system.client.terminate("early", None).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(reply.state, JobState::Terminated);
    let marker = system.path("early-ran");
    let events = system
        .run(&sh("early", &format!("touch {}", marker.display())))
        .await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["terminated"]);
    let last = &events[0];
    assert_eq!(last.return_code, Some(9));
    assert_eq!(last.reason.as_deref(), Some("TerminateRequested"));
    assert!(!marker.exists(), "the job must not have started");
    let record = system.client.status("early").await.unwrap();
    assert_eq!(
        (record.state, record.seq, record.tombstone),
        (JobState::Terminated, 1, false)
    );
    // A second terminate changes nothing.
    let again = system.client.terminate("early", None).await.unwrap();
    assert!(!again.accepted);
    assert_eq!(again.state, JobState::Terminated);
}

#[tokio::test]
async fn terminating_a_finished_job_changes_nothing() {
    let system = System::start().await;
    system.run(&sh("done", "exit 0")).await;
    let reply = system.client.terminate("done", Some(0)).await.unwrap();
    assert!(!reply.accepted);
    assert_eq!(reply.state, JobState::Succeeded);
    let record = system.client.status("done").await.unwrap();
    assert_eq!((record.state, record.seq), (JobState::Succeeded, 3));
}

#[tokio::test]
async fn status_of_a_finished_job_is_its_record() {
    let system = System::start().await;
    let mut request = sh("stat", "exit 103");
    request.site = Some("site-a".into());
    system.run(&request).await;
    let record = system.client.status("stat").await.unwrap();
    assert_eq!(record.job_id, "stat");
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(
        (record.return_code, record.exit_code),
        (Some(103), Some(103))
    );
    assert_eq!(record.seq, 3);
    assert_eq!(record.site.as_deref(), Some("site-a"));
    assert_eq!(record.worker, "w1");
    assert!(record.created <= record.updated);
}

#[tokio::test]
async fn status_of_an_unknown_job_is_a_not_found_error_reply() {
    let system = System::start().await;
    match system.client.status("never-seen").await {
        Err(ClientError::Refused(error)) => {
            assert_eq!(error.error, "not_found");
            assert!(error.message.contains("never-seen"));
        }
        other => panic!("expected not_found, got {other:?}"),
    }
    // The raw reply carries the NATS service error headers.
    let reply = system
        .client
        .nats()
        .request("flare.jobs.status.never-seen", "".into())
        .await
        .unwrap();
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("404")
    );
}

#[tokio::test]
async fn a_terminate_with_a_bad_body_is_refused_and_the_job_runs_on() {
    let system = System::start().await;
    system.launch_until_running(&sh("kept", "sleep 60")).await;
    let reply = system
        .client
        .nats()
        .request("flare.jobs.terminate.kept", r#"{"grace":1}"#.into())
        .await
        .unwrap();
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("400")
    );
    let record = system.client.status("kept").await.unwrap();
    assert_eq!(record.state, JobState::Running);
}

#[tokio::test]
async fn a_terminate_landing_on_another_worker_reaches_the_owner() {
    const JOBS: usize = 16;
    let mut system = System::start_with(|c| c.max_jobs = JOBS).await;
    // A second worker in another pool: it never takes a launch, so every job is
    // w1's, but control requests go to one queue group for all pools, so
    // terminates are shared out between both workers.
    let mut other = system.config.clone();
    other.worker_id = "w2".into();
    other.pool = "other".into();
    let w2 = flare_launcher::worker::Worker::start(other).await.unwrap();
    let job_ids: Vec<String> = (0..JOBS).map(|n| format!("owned-{n}")).collect();
    for job_id in &job_ids {
        system.client.launch(&sh(job_id, "sleep 60")).await.unwrap();
    }
    for job_id in &job_ids {
        system
            .events_until(job_id, |e| e.state == JobState::Running)
            .await;
    }
    // One terminate per job: each lands on w2 (and is forwarded) half the time,
    // so all of them reaching w1 directly has a chance of 2^-16.
    for job_id in &job_ids {
        let reply = system.client.terminate(job_id, None).await.unwrap();
        assert!(reply.accepted, "{reply:?}");
    }
    for job_id in &job_ids {
        let events = system.events_until_terminal(job_id).await;
        let last = events.last().unwrap();
        assert_eq!(last.state, JobState::Terminated, "{events:#?}");
        assert_eq!(last.reason.as_deref(), Some("TerminateRequested"));
        assert_eq!(last.worker, "w1");
    }
    w2.shutdown().await;
    system.shutdown_worker().await;
}

#[tokio::test]
async fn a_terminate_body_with_a_line_break_in_a_field_name_gets_a_400_on_one_line() {
    let system = System::start().await;
    // JSON for a field named "a", a line feed, "b": serde names it in its error.
    let body = r#"{"a\nb":1}"#;
    let reply = system
        .client
        .nats()
        .request("flare.jobs.terminate.nl", body.into())
        .await
        .expect("an answer");
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("400")
    );
    for (name, values) in headers.iter() {
        for value in values {
            assert!(!value.as_str().contains(['\r', '\n']), "{name}: {value:?}");
        }
    }
    let error = headers.get("Nats-Service-Error").unwrap().as_str();
    assert!(error.contains(r"unknown field `a\nb`"), "{error}");
    let body: ErrorReply = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body.error, "bad_request");
    assert!(body.message.contains("unknown field `a\nb`"), "{body:?}");
    // The worker answers the next request.
    let reply = system.client.terminate("nl", None).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
}
