//! Requests made to hurt a worker, over a real nats-server: a program name of
//! 300,000 double quotes (and the same with a NUL), a request over the size
//! limit, records and events the server refuses for good, a delivery arriving
//! while an earlier one still claims its job. Each ends its job with one
//! terminal event and a bounded message, the requests behind it run, and the
//! worker stays healthy. Also: logs written to a pipe carry no colour codes.

use crate::common::system::{System, assert_well_formed, sh, states};
use async_nats::jetstream::{self, stream};
use flare_launcher::nats::subjects::Subjects;
use flare_launcher::protocol::bounded::MAX_TEXT;
use flare_launcher::protocol::{InvalidRequest, JobRecord};
use flare_launcher::state::JobState;
use futures::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How long a worker with nothing left to do may take to shut down.
const PROMPT_SHUTDOWN: Duration = Duration::from_secs(25);

/// A launch payload whose program is 300,000 double quotes (600 KB of JSON)
/// followed by `tail` (JSON text).
fn quotes_program(job_id: &str, tail: &str) -> Vec<u8> {
    let quotes = r#"\""#.repeat(300_000);
    format!(r#"{{"job_id":"{job_id}","command":["{quotes}{tail}"]}}"#).into_bytes()
}

/// Changes a stream's configuration, as an operator would.
async fn reconfigure(system: &System, name: &str, change: impl FnOnce(&mut stream::Config)) {
    let js = jetstream::new(system.client.nats().clone());
    let mut stream = js.get_stream(name).await.expect("stream");
    let mut config = stream.info().await.expect("stream info").config.clone();
    change(&mut config);
    js.update_stream(config).await.expect("stream updated");
}

/// Sets a stream's limit on the size of one message (`-1`: none).
async fn limit_message_size(system: &System, name: &str, max: i32) {
    reconfigure(system, name, |config| config.max_message_size = max).await;
}

/// The last event of a job that ended, with all its events well-formed.
async fn end_of(system: &System, job_id: &str) -> flare_launcher::protocol::JobEvent {
    let events = system.events_until_terminal(job_id).await;
    assert_well_formed(&events);
    events.last().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_requests_end_in_error_and_the_jobs_behind_them_run() {
    // A limit above the poison's size, so that it is decoded and spawned.
    let mut system = System::start_with(|c| {
        c.max_jobs = 2;
        c.max_request_bytes = 1024 * 1024;
    })
    .await;
    for (job_id, tail) in [("p1", ""), ("p2", r"\u0000")] {
        let payload = quotes_program(job_id, tail);
        assert!(payload.len() > 600_000);
        system
            .client
            .publish_launch(payload.into(), None)
            .await
            .unwrap();
    }
    for n in 0..4 {
        system
            .client
            .launch(&sh(&format!("behind-{n}"), "exit 0"))
            .await
            .unwrap();
    }
    let spawned = system.events_until_terminal("p1").await;
    assert_well_formed(&spawned);
    assert_eq!(states(&spawned), ["starting", "error"], "{spawned:#?}");
    let invalid = system.events_until_terminal("p2").await;
    assert_well_formed(&invalid);
    assert_eq!(states(&invalid), ["error"], "{invalid:#?}");
    for (end, reason) in [
        (spawned.last().unwrap(), "SpawnFailed"),
        (invalid.last().unwrap(), "InvalidRequest"),
    ] {
        assert_eq!(end.reason.as_deref(), Some(reason), "{end:#?}");
        assert_eq!(end.return_code, Some(104));
        let message = end.message.as_deref().unwrap();
        assert!(message.len() <= MAX_TEXT, "{} bytes", message.len());
    }
    assert!(
        spawned[1]
            .message
            .as_deref()
            .unwrap()
            .starts_with("could not start"),
        "{spawned:#?}"
    );
    for n in 0..4 {
        let end = end_of(&system, &format!("behind-{n}")).await;
        assert_eq!(end.state, JobState::Succeeded, "{end:#?}");
    }
    for job_id in ["p1", "p2"] {
        let record = system.client.status(job_id).await.unwrap();
        assert_eq!(record.state, JobState::Error, "{record:#?}");
    }
    tokio::time::timeout(PROMPT_SHUTDOWN, system.shutdown_worker())
        .await
        .expect("the worker shuts down promptly: no job task is left hanging");
}

#[tokio::test]
async fn a_request_over_the_size_limit_ends_its_job_naming_size_and_limit() {
    let system = System::start().await;
    let limit = system.config.max_request_bytes;
    let mut reports = system.invalid_reports().await;
    let padding = "a".repeat(limit);
    let big = format!(r#"{{"job_id":"big","command":["true"],"x":{{"pad":"{padding}"}}}}"#);
    system
        .client
        .publish_launch(big.clone().into(), None)
        .await
        .unwrap();
    let end = end_of(&system, "big").await;
    assert_eq!(end.state, JobState::Error);
    assert_eq!(end.reason.as_deref(), Some("InvalidRequest"));
    assert_eq!(
        end.message.as_deref(),
        Some(
            format!(
                "the request is {} bytes, over this worker's limit of {limit} bytes",
                big.len()
            )
            .as_str()
        )
    );
    // Without a usable job id, it is reported on the invalid subject, cut.
    let anonymous = format!(r#"{{"command":["true"],"x":"{padding}"}}"#);
    system
        .client
        .publish_launch(anonymous.clone().into(), None)
        .await
        .unwrap();
    let report = tokio::time::timeout(crate::common::system::JOB_TIMEOUT, reports.next())
        .await
        .expect("a report")
        .unwrap();
    let report: InvalidRequest = serde_json::from_slice(&report.payload).unwrap();
    assert!(
        report
            .error
            .contains(&format!("over this worker's limit of {limit} bytes")),
        "{}",
        report.error
    );
    assert_eq!(report.payload, anonymous[..4096]);
    // The worker goes on as before.
    system.client.launch(&sh("after", "exit 0")).await.unwrap();
    assert_eq!(end_of(&system, "after").await.state, JobState::Succeeded);
}

#[tokio::test]
async fn records_and_events_the_server_refuses_for_good_end_the_job() {
    let system = System::start().await;
    // The bucket takes no record over 1 KiB.
    limit_message_size(&system, "KV_flare_jobs", 1024).await;
    // The first record itself is refused (its site is long): a minimal one is
    // written instead, and the job ends at once.
    let mut far = sh("far", "exit 0");
    far.site = Some("s".repeat(2000));
    system.client.launch(&far).await.unwrap();
    let end = end_of(&system, "far").await;
    assert_eq!(
        (end.state, end.seq, end.reason.as_deref()),
        (JobState::Error, 1, Some("RecordRejected")),
        "{end:#?}"
    );
    // A later record is refused (its spawn error names a long working
    // directory): the job ends in its place.
    let mut lost_dir = sh("nowhere", "exit 0");
    lost_dir.workdir = Some(format!("/{}", "d".repeat(2000)));
    let events = system.run(&lost_dir).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "error"]);
    assert_eq!(events[1].reason.as_deref(), Some("RecordRejected"));
    let record = system.client.status("nowhere").await.unwrap();
    assert_eq!((record.state, record.seq), (JobState::Error, 2));
    // The same with the events stream refusing the event, the record taken.
    limit_message_size(&system, "KV_flare_jobs", -1).await;
    limit_message_size(&system, "FLARE_JOB_EVENTS", 1024).await;
    let mut lost_again = lost_dir.clone();
    lost_again.job_id = "nowhere-again".into();
    system.client.launch(&lost_again).await.unwrap();
    let end = end_of(&system, "nowhere-again").await;
    assert_eq!(
        (end.state, end.seq, end.reason.as_deref()),
        (JobState::Error, 2, Some("RecordRejected")),
        "{end:#?}"
    );
    let record = system.client.status("nowhere-again").await.unwrap();
    assert_eq!(record.reason.as_deref(), Some("RecordRejected"));
    // Jobs whose records fit run as ever.
    system.client.launch(&sh("fine", "exit 0")).await.unwrap();
    assert_eq!(end_of(&system, "fine").await.state, JobState::Succeeded);
}

/// Launches a job that touches a marker after 5 s, while the events stream takes
/// no message over `events_limit` bytes; returns the job's final record once
/// it ends, after checking that the workload was stopped.
async fn ends_in_its_record_and_stops(
    mut system: System,
    job_id: &str,
    events_limit: i32,
) -> JobRecord {
    limit_message_size(&system, "FLARE_JOB_EVENTS", events_limit).await;
    let marker = system.path("ran-on");
    let script = format!("sleep 5; touch {}", marker.display());
    system.client.launch(&sh(job_id, &script)).await.unwrap();
    // No event can be awaited: the record is read until it shows the end.
    let deadline = tokio::time::Instant::now() + crate::common::system::JOB_TIMEOUT;
    let record = loop {
        match system.client.status(job_id).await {
            Ok(record) if record.state.is_terminal() => break record,
            _ => assert!(tokio::time::Instant::now() < deadline, "no end recorded"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The worker is free to leave, and the workload is gone.
    tokio::time::timeout(PROMPT_SHUTDOWN, system.shutdown_worker())
        .await
        .expect("the worker shuts down promptly");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!marker.exists(), "the workload ran on");
    record
}

#[tokio::test]
async fn a_job_whose_events_are_all_refused_ends_in_its_record_and_stops() {
    let system = System::start().await;
    // No event fits, not even the first.
    let record = ends_in_its_record_and_stops(system, "mute", 64).await;
    assert_eq!(
        (record.state, record.seq, record.reason.as_deref()),
        (JobState::Error, 1, Some("RecordRejected")),
        "{record:#?}"
    );
}

#[tokio::test]
async fn a_job_whose_running_event_is_refused_ends_and_stops() {
    let system = System::start().await;
    // A long job id: `starting` fits in 450 bytes, `running` (whose message
    // names the log file, with the job id) does not.
    let job_id = "r".repeat(120);
    let record = ends_in_its_record_and_stops(system, &job_id, 450).await;
    assert_eq!(
        (record.state, record.seq, record.reason.as_deref()),
        (JobState::Error, 2, Some("RecordRejected")),
        "{record:#?}"
    );
}

/// Makes the job bucket refuse every write for a while (full, and new writes are
/// the ones discarded), or take them again.
async fn fill_bucket(system: &System, full: bool) {
    reconfigure(system, "KV_flare_jobs", |config| {
        assert_eq!(config.discard, stream::DiscardPolicy::New);
        config.max_bytes = if full { 1 } else { -1 };
    })
    .await;
}

#[tokio::test]
async fn a_delivery_arriving_while_its_job_is_being_claimed_is_handed_back_not_dropped() {
    let system = System::start_with(|c| c.ack_wait = Duration::from_secs(1)).await;
    fill_bucket(&system, true).await;
    let file = system.path("slow-runs");
    let script = format!("echo ran >> {}", file.display());
    system.client.launch(&sh("slow", &script)).await.unwrap();
    // The first delivery claims the job, and retries while the bucket refuses;
    // the ack wait runs out and the request comes again. That delivery must not
    // be acknowledged: handed back, it comes a third time.
    let js = jetstream::new(system.client.nats().clone());
    let deadline = tokio::time::Instant::now() + crate::common::system::JOB_TIMEOUT;
    loop {
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(Subjects::consumer("default"), "FLARE_JOBS")
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("consumer info");
        assert_eq!(
            info.num_ack_pending + info.num_pending as usize,
            1,
            "the request left the queue while its claim was under way: {info:?}"
        );
        if info.delivered.consumer_sequence >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never came a third time: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fill_bucket(&system, false).await;
    let end = end_of(&system, "slow").await;
    assert_eq!(end.state, JobState::Succeeded, "{end:#?}");
    system.wait_until_intake_idle().await;
    let runs = std::fs::read_to_string(&file).unwrap();
    assert_eq!(runs.lines().count(), 1, "the job ran once");
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let system = System::without_worker(|_| {}).await;
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"))
        .arg("--nats-url")
        .arg(system.nats.url())
        .args(["worker", "--worker-id", "piped", "--data-dir"])
        .arg(system.path("data"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut stderr = BufReader::new(worker.stderr.take().unwrap());
    let mut log = String::new();
    let ready = async {
        while stderr.read_line(&mut log).await.unwrap() > 0 {
            if log.contains("worker ready") {
                return;
            }
        }
    };
    tokio::time::timeout(crate::common::system::JOB_TIMEOUT, ready)
        .await
        .expect("the worker says it is ready");
    // A job's lines too, then the shutdown's.
    system
        .client
        .launch(&sh("piped-job", "exit 0"))
        .await
        .unwrap();
    end_of(&system, "piped-job").await;
    let pid = nix::unistd::Pid::from_raw(worker.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    stderr.read_to_string(&mut log).await.unwrap();
    assert!(worker.wait().await.unwrap().success());
    assert!(log.contains("job ended"), "{log}");
    assert!(!log.contains("\x1b["), "colour codes in {log:?}");
}
