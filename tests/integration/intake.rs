//! Intake over a real nats-server: a job is started once however often its launch
//! is delivered, malformed and invalid requests are reported without blocking the
//! requests behind them, and capacity bounds the jobs a worker runs.

use crate::common::system::{CoreEvents, JOB_TIMEOUT, System, assert_well_formed, sh, states};
use async_nats::jetstream;
use flare_launcher::nats::setup::Layout;
use flare_launcher::protocol::{BackendKind, InvalidRequest, JobId};
use flare_launcher::state::JobState;
use flare_launcher::worker::story::{OWNER_PUBLISH_BOUND, fresh_record};
use futures::StreamExt;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A job that appends a line to `file` and returns, so the file tells how often it ran.
fn appender(job_id: &str, file: &std::path::Path) -> flare_launcher::protocol::LaunchRequest {
    sh(job_id, &format!("echo ran >> {}", file.display()))
}

fn runs(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Stores `value` as the record of `job_id`, as another worker (or an operator) would have.
async fn store_record(system: &System, job_id: &str, value: Vec<u8>) {
    let js = jetstream::new(system.client.nats().clone());
    let bucket = js.get_key_value("flare_jobs").await.unwrap();
    bucket.create(job_id, value.into()).await.unwrap();
}

/// A record of `job_id` owned by a worker that is gone.
fn record_of_gone_worker(job_id: &str, state: JobState, seq: u64) -> Vec<u8> {
    record_written_at(job_id, state, seq, OffsetDateTime::now_utc())
}

/// A record of `job_id`, owned by a worker that is gone, last written at `written`.
fn record_written_at(job_id: &str, state: JobState, seq: u64, written: OffsetDateTime) -> Vec<u8> {
    let mut record = fresh_record(&JobId::new(job_id).unwrap(), "gone-worker", state);
    // Named from the claim on, as every worker does.
    record.backend = Some(BackendKind::Process);
    record.seq = seq;
    record.updated = written.format(&Rfc3339).unwrap();
    serde_json::to_vec(&record).unwrap()
}

/// Acts as a worker that takes the pool's next launch request and dies before it
/// records or acks it: the request is pulled and dropped.
async fn take_without_ack(system: &System) {
    let js = jetstream::new(system.client.nats().clone());
    let layout = Layout::new(
        js,
        system.client.subjects().clone(),
        "default",
        system.config.ack_wait,
    );
    let consumer = layout.launch_consumer().await.unwrap();
    // Waits for the request: a no-wait fetch may run ahead of the consumer on a busy server.
    let mut taken = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .unwrap();
    // Dropped without an ack. (A pull of a worker that stopped a moment ago may have
    // been offered the request first; the server then redelivers it at once.)
    taken.next().await.expect("one request").unwrap();
}

#[tokio::test]
async fn the_same_launch_published_twice_starts_one_process() {
    let system = System::start().await;
    let mut core = CoreEvents::subscribe(&system.client).await;
    let file = system.path("dup-runs");
    let request = appender("dup", &file);
    let payload = serde_json::to_vec(&request).unwrap();
    // Without a Nats-Msg-Id the stream keeps both copies: the worker must see that
    // the job is claimed.
    system
        .client
        .publish_launch(payload.clone().into(), None)
        .await
        .unwrap();
    system
        .client
        .publish_launch(payload.clone().into(), None)
        .await
        .unwrap();
    let events = system.events_until_terminal("dup").await;
    assert_well_formed(&events);
    system
        .client
        .publish_launch(payload.into(), None)
        .await
        .unwrap();
    system.wait_until_intake_idle().await;
    assert_eq!(runs(&file), 1);
    let stored = system.events_until_terminal("dup").await;
    assert_eq!(states(&stored), ["starting", "running", "succeeded"]);
    core.assert_each_once(&["dup"]).await;
}

#[tokio::test]
async fn a_launch_redelivered_after_a_worker_died_before_its_ack_runs_once() {
    let mut system = System::without_worker(|c| {
        c.ack_wait = Duration::from_secs(1);
        c.worker_id = "survivor".into();
    })
    .await;
    let file = system.path("crashy-runs");
    system
        .client
        .launch(&appender("crashy", &file))
        .await
        .unwrap();

    // A first worker takes the request and dies before it records or acks it.
    take_without_ack(&system).await;

    system.start_worker().await;
    let events = system.events_until_terminal("crashy").await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().worker, "survivor");
    system.wait_until_intake_idle().await;
    assert_eq!(runs(&file), 1);
}

#[tokio::test]
async fn a_redelivery_long_after_a_job_ended_publishes_no_second_terminal_event() {
    let mut system = System::start_with(|c| c.ack_wait = Duration::from_secs(1)).await;
    let mut core = CoreEvents::subscribe(&system.client).await;
    // A short duplicate window on the events stream stands for a redelivery that
    // comes after the window has passed.
    let js = jetstream::new(system.client.nats().clone());
    let mut events_stream = js.get_stream("FLARE_JOB_EVENTS").await.unwrap();
    let mut config = events_stream.info().await.unwrap().config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(&config).await.unwrap();

    let file = system.path("late-runs");
    let request = appender("late", &file);
    let first = system.run(&request).await;
    assert_well_formed(&first);
    system.shutdown_worker().await;

    // The launch again, taken by a worker that died before its ack; its redelivery
    // comes after the events' duplicate window.
    let payload = serde_json::to_vec(&request).unwrap();
    system
        .client
        .publish_launch(payload.into(), None)
        .await
        .unwrap();
    take_without_ack(&system).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    system.start_worker().await;
    system.wait_until_intake_idle().await;

    assert_eq!(runs(&file), 1);
    let stored = system.events_until_terminal("late").await;
    assert_eq!(stored, first, "no event published twice");
    core.assert_each_once(&["late"]).await;
}

#[tokio::test]
async fn a_launch_whose_claiming_worker_went_before_its_ack_runs_once_here() {
    let system = System::start_with(|c| c.ack_wait = Duration::from_secs(1)).await;
    let file = system.path("claimed-runs");
    // A worker wrote the claim record and went (no lease) before its workload
    // existed: its request was never acknowledged, so it comes again, and this
    // worker takes the claim over and runs the job, once.
    let request = appender("claimed", &file);
    let claim = record_of_gone_worker("claimed", JobState::Starting, 1);
    store_record(&system, "claimed", claim).await;
    system.client.launch(&request).await.unwrap();
    let events = system.events_until_terminal("claimed").await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "the story goes on from the claim"
    );
    assert!(events.iter().all(|e| e.worker == system.config.worker_id));
    system.wait_until_intake_idle().await;
    assert_eq!(runs(&file), 1);
    let record = system.client.status("claimed").await.unwrap();
    assert_eq!(record.worker, system.config.worker_id);
}

#[tokio::test]
async fn a_duplicate_of_a_job_whose_final_event_never_went_out_publishes_it() {
    let system = System::start().await;
    let mut core = CoreEvents::subscribe(&system.client).await;
    let file = system.path("ended-runs");
    // A worker ended the job an hour ago, wrote its final record and died before
    // publishing the event; the duplicate delivery seen here is the last chance to
    // publish it, and the owner's time is long up.
    let an_hour_ago = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let ended = record_written_at("ended", JobState::Succeeded, 3, an_hour_ago);
    store_record(&system, "ended", ended).await;
    system
        .client
        .launch(&appender("ended", &file))
        .await
        .unwrap();
    let events = system.events_until_terminal("ended").await;
    assert_eq!(states(&events), ["succeeded"]);
    assert_eq!((events[0].seq, events[0].return_code), (3, Some(0)));
    assert_eq!(events[0].worker, "gone-worker");
    system.wait_until_intake_idle().await;
    assert_eq!(runs(&file), 0);
    core.assert_each_once(&["ended"]).await;
}

#[tokio::test]
async fn a_duplicate_of_a_job_that_ended_just_now_leaves_its_owner_time_to_publish() {
    let system = System::start().await;
    let file = system.path("just-ended-runs");
    // The job's owner wrote its final record a moment ago, so its publish may be
    // on its way: the duplicate delivery must not publish the event before the
    // owner's time is up (a few seconds from now), yet must publish it then,
    // since the owner never will.
    let written = OffsetDateTime::now_utc() - (OWNER_PUBLISH_BOUND - Duration::from_secs(4));
    let ended = record_written_at("just-ended", JobState::Failed, 3, written);
    store_record(&system, "just-ended", ended).await;
    system
        .client
        .launch(&appender("just-ended", &file))
        .await
        .unwrap();
    system.events_until_terminal("just-ended").await;
    let stored = system.stored_events("just-ended").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].event.worker, "gone-worker");
    assert!(
        stored[0].stored >= written + OWNER_PUBLISH_BOUND,
        "published {} after the record was written, within the owner's {OWNER_PUBLISH_BOUND:?}",
        stored[0].stored - written
    );
    system.wait_until_intake_idle().await;
    assert_eq!(runs(&file), 0);
}

#[tokio::test]
async fn a_launch_whose_record_is_unreadable_waits_in_the_queue() {
    let system = System::start().await;
    let mut invalid = system.invalid_reports().await;
    store_record(&system, "garbled", b"not a record".to_vec()).await;
    let file = system.path("garbled-runs");
    system
        .client
        .launch(&appender("garbled", &file))
        .await
        .unwrap();
    // The request is taken, left unacknowledged for later, and not reported as
    // unusable; the jobs behind it run.
    let events = system.run(&sh("behind", "exit 0")).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), invalid.next())
            .await
            .is_err(),
        "nothing reported on the invalid subject"
    );
    let js = jetstream::new(system.client.nats().clone());
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("launch-default", "FLARE_JOBS")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 1),
        "kept: {info:?}"
    );
    assert_eq!(runs(&file), 0);
}

#[tokio::test]
async fn malformed_and_invalid_requests_are_reported_and_the_next_one_runs() {
    let system = System::start().await;
    let mut invalid = system.invalid_reports().await;

    system
        .client
        .publish_launch("{not json".into(), None)
        .await
        .unwrap();
    system
        .client
        .publish_launch(r#"{"job_id":"bad id","command":["true"]}"#.into(), None)
        .await
        .unwrap();
    system
        .client
        .publish_launch(r#"{"job_id":"a..b","command":["true"]}"#.into(), None)
        .await
        .unwrap();
    system
        .client
        .publish_launch(r#"{"job_id":"bad1","command":[]}"#.into(), None)
        .await
        .unwrap();
    system
        .client
        .publish_launch(
            r#"{"job_id":"bad2","command":["true"],"comand":["x"]}"#.into(),
            None,
        )
        .await
        .unwrap();
    let events = system.run(&sh("good", "exit 0")).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");

    let mut reports = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(JOB_TIMEOUT, invalid.next())
            .await
            .unwrap()
            .unwrap();
        let report: InvalidRequest = serde_json::from_slice(&message.payload).unwrap();
        reports.push(report);
    }
    assert!(reports[0].error.contains("not valid JSON"), "{reports:?}");
    assert_eq!(reports[0].payload, "{not json");
    assert!(reports[1].error.contains("' '"), "{reports:?}");
    assert!(reports[2].error.contains(".."), "{reports:?}");

    for (job_id, needle) in [("bad1", "non-empty"), ("bad2", "unknown field `comand`")] {
        let events = system.events_until_terminal(job_id).await;
        assert_eq!(states(&events), ["error"]);
        let event = &events[0];
        assert_eq!((event.seq, event.return_code), (1, Some(104)));
        assert_eq!(event.reason.as_deref(), Some("InvalidRequest"));
        assert!(
            event.message.as_deref().unwrap().contains(needle),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn two_hundred_jobs_through_eight_slots_all_finish() {
    let system = System::start_with(|c| c.max_jobs = 8).await;
    // Each job holds a marker file while it runs and records how many markers it
    // sees, so the jobs themselves measure how many run at once.
    let markers = system.path("running");
    std::fs::create_dir(&markers).unwrap();
    let counts = system.path("counts");
    let mut all = Box::pin(system.client.events(None, true).await.unwrap());
    for n in 0..200 {
        let marker = markers.join(format!("many-{n}"));
        let script = format!(
            "touch {marker} && ls {markers} | wc -l >> {counts} && sleep 0.02; rm -f {marker}",
            marker = marker.display(),
            markers = markers.display(),
            counts = counts.display(),
        );
        system
            .client
            .launch(&sh(&format!("many-{n}"), &script))
            .await
            .unwrap();
    }
    let mut terminal = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while terminal.len() < 200 {
            let event = all.next().await.unwrap().unwrap();
            if event.state.is_terminal() {
                assert!(
                    terminal.insert(event.job_id.clone(), event).is_none(),
                    "one terminal event per job"
                );
            }
        }
    })
    .await
    .expect("all 200 jobs end");
    assert!(terminal.values().all(|e| e.state.as_str() == "succeeded"));
    let counts: Vec<usize> = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 200, "every job counted once");
    let most_running = counts.into_iter().max().unwrap();
    assert!(
        most_running <= 8,
        "never more than --max-jobs at once: {most_running}"
    );
    assert!(
        most_running >= 2,
        "jobs run side by side: at most {most_running} at once"
    );
}
