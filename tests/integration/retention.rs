//! Retention: the records of ended jobs and tombstones expire after the
//! retention while a running job's record stays, old job logs are swept by day,
//! and a bucket made without per-message TTL is upgraded at start-up and while a
//! worker runs.

use crate::common::system::{JOB_TIMEOUT, System, log_path, sh};
use flare_launcher::client::ClientError;
use flare_launcher::job_logs;
use flare_launcher::protocol::{JobId, JobRecord};
use flare_launcher::state::JobState;
use flare_launcher::worker::retention::{Swept, sweep};
use flare_launcher::worker::story::fresh_record;
use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use time::macros::{date, datetime};

const SHORT_RETENTION: Duration = Duration::from_secs(2);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A job's record, or `None` once the status says `not_found`.
async fn record(system: &System, job_id: &str) -> Option<JobRecord> {
    match system.client.status(job_id).await {
        Ok(record) => Some(record),
        Err(ClientError::Refused(reply)) if reply.error == "not_found" => None,
        Err(e) => panic!("status of {job_id}: {e}"),
    }
}

/// Waits until a job's record is gone. Expiry is not announced, so this asks.
async fn until_expired(system: &System, job_id: &str) {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while let Some(found) = record(system, job_id).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record of {job_id} did not expire: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_ended_jobs_record_expires_and_a_running_ones_stays() {
    let system = System::start_with(|c| c.retention = SHORT_RETENTION).await;
    system
        .launch_until_running(&sh("long", "while true; do sleep 0.1; done"))
        .await;
    system.run(&sh("short", "exit 0")).await;
    // Gone after the retention, which has then passed for the running job too.
    until_expired(&system, "short").await;
    let running = record(&system, "long").await.expect("running job's record");
    assert_eq!(running.state, JobState::Running);

    system.client.terminate("long", Some(0)).await.unwrap();
    let events = system.events_until_terminal("long").await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
    // Its end replaced the earlier revisions, so nothing is left behind it.
    until_expired(&system, "long").await;
}

#[tokio::test]
async fn a_tombstone_expires_and_a_later_launch_then_runs() {
    let system = System::start_with(|c| c.retention = SHORT_RETENTION).await;
    let reply = system.client.terminate("early", None).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    until_expired(&system, "early").await;
    let events = system.run(&sh("early", "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn a_bucket_made_without_ttl_is_upgraded_at_start_up() {
    let mut system = System::without_worker(|c| c.retention = SHORT_RETENTION).await;
    // The bucket as the previous version made it, with a record it wrote.
    let js = async_nats::jetstream::new(system.client.nats().clone());
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "flare_jobs".into(),
            description: "flare-launcher job records, one per job id".into(),
            history: 5,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut info = js.get_stream("KV_flare_jobs").await.unwrap();
    assert!(!info.info().await.unwrap().config.allow_message_ttl);
    let old = fresh_record(&JobId::new("old").unwrap(), "w0", JobState::Succeeded);
    let old_value = serde_json::to_vec(&old).unwrap();
    bucket.put("old", old_value.into()).await.unwrap();

    system.start_worker().await;
    assert!(info.info().await.unwrap().config.allow_message_ttl);
    let events = system.run(&sh("new", "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    until_expired(&system, "new").await;
    // A record written without a TTL stays.
    assert_eq!(record(&system, "old").await, Some(old));
}

#[tokio::test]
async fn a_bucket_made_again_without_ttl_while_a_worker_runs_gets_it_back() {
    let system = System::start_with(|c| c.retention = SHORT_RETENTION).await;
    // An operator removes the bucket and makes it again by hand, without TTL.
    let js = async_nats::jetstream::new(system.client.nats().clone());
    js.delete_key_value("flare_jobs").await.unwrap();
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "flare_jobs".into(),
        history: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    // The job's end is written with a TTL: refused until TTL is allowed again.
    let events = system.run(&sh("after-remake", "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    until_expired(&system, "after-remake").await;
    let mut stream = js.get_stream("KV_flare_jobs").await.unwrap();
    assert!(stream.info().await.unwrap().config.allow_message_ttl);
}

/// Creates a log file last written at `written`.
fn log(dir: &Path, job_id: &str, written: SystemTime) {
    fs::create_dir_all(dir).unwrap();
    let file = File::create(dir.join(format!("{job_id}.log"))).unwrap();
    file.set_modified(written).unwrap();
}

#[test]
fn the_sweep_removes_past_days_and_keeps_what_is_still_in_use() {
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path();
    // A fixed clock: noon of 2000-01-05, an hour of retention.
    let now = datetime!(2000-01-05 12:00 UTC);
    let long_ago = SystemTime::from(datetime!(1999-01-01 0:00 UTC));
    let lately = SystemTime::from(datetime!(2000-01-05 11:30 UTC));
    let day_dir = |day| logs.join(job_logs::day_name(day));
    log(&day_dir(date!(2000 - 01 - 01)), "a", long_ago);
    log(&day_dir(date!(2000 - 01 - 01)), "b", long_ago);
    log(&day_dir(date!(2000 - 01 - 02)), "still-running", long_ago);
    log(&day_dir(date!(2000 - 01 - 02)), "c", long_ago);
    log(&day_dir(date!(2000 - 01 - 04)), "written-lately", lately);
    // The day is not over: its jobs may have started less than an hour ago.
    log(&day_dir(date!(2000 - 01 - 05)), "today", long_ago);
    // Logs of earlier versions, directly in the log directory.
    log(logs, "flat-old", long_ago);
    log(logs, "flat-new", lately);
    fs::write(logs.join("notes.txt"), "not a log").unwrap();

    let retention = Duration::from_secs(3600);
    let swept = sweep(logs, retention, now, |job_id| job_id == "still-running").unwrap();

    assert_eq!(
        swept,
        Swept {
            days: 1,
            logs: 4,
            kept: 3
        }
    );
    let mut left: Vec<_> = walk(logs);
    left.sort();
    let expected = [
        "2000-01-02/still-running.log",
        "2000-01-04/written-lately.log",
        "2000-01-05/today.log",
        "flat-new.log",
        "notes.txt",
    ];
    assert_eq!(left, expected);
}

#[test]
fn a_missing_log_directory_has_nothing_to_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let swept = sweep(
        &dir.path().join("logs"),
        DAY,
        OffsetDateTime::now_utc(),
        |_| false,
    );
    assert_eq!(swept.unwrap(), Swept::default());
}

/// The files under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            found.extend(
                walk(&entry.path())
                    .into_iter()
                    .map(|f| format!("{name}/{f}")),
            );
        } else {
            found.push(name);
        }
    }
    found
}

#[tokio::test]
async fn a_worker_files_logs_by_day_and_sweeps_old_days_at_start_up() {
    let mut system = System::without_worker(|_| {}).await;
    let logs = system.config.data_dir.join("logs");
    let old_day = logs.join("2000-01-01");
    log(&old_day, "ancient", SystemTime::now() - 400 * DAY);
    let today = logs.join(job_logs::day_name(OffsetDateTime::now_utc().date()));
    log(&today, "earlier-today", SystemTime::now() - 400 * DAY);

    system.start_worker().await;
    let events = system.run(&sh("fresh", "echo hello")).await;
    let path = log_path(&events);
    assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
    let day = path.parent().unwrap();
    assert_eq!(day.parent().unwrap(), logs);
    assert!(
        job_logs::parse_day(day.file_name().unwrap().to_str().unwrap()).is_some(),
        "{path:?}"
    );
    // Shutdown waits for the start-up sweep.
    system.shutdown_worker().await;
    assert!(!old_day.exists(), "the old day is swept");
    assert!(today.join("earlier-today.log").exists(), "today is kept");
    assert!(path.exists());
}
