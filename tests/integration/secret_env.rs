//! A request's `secret_env` reaches its job and nothing else, end to end over a
//! real nats-server with the worker binary as its own process (logging
//! everything, `RUST_LOG=trace`): a process job gets its secrets as variables,
//! a Docker job as read-only files on a tmpfs, and the value is in no record,
//! event, log line, `P.invalid` report, container configuration or file the
//! worker leaves in its data directory; the Docker job's folder of secret files
//! goes with the job (and at a restart, with a job whose container is gone); a
//! worker whose secrets folder is not on a tmpfs does not start, and one whose
//! engine is not on its host refuses a job with secrets.
//!
//! Each job checks the value it got against two halves given in plain `env`, so
//! that the value itself is in no command line and in no output.

use crate::common::docker::{
    containers_of, docker_cli, docker_system_with, docker_worker, in_container,
    system_through_proxy, test_image, unique,
};
use crate::common::system::{JOB_TIMEOUT, System, log_path, sh};
use flare_launcher::protocol::{InvalidRequest, JobEvent, LaunchRequest};
use flare_launcher::state::JobState;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;

/// A secret value no other process on the machine holds.
fn unique_secret() -> String {
    format!("sec-{}", flare_launcher::protocol::random_suffix(24))
}

/// `request` given the secret `TOKEN`, and its two halves as plain variables
/// `HEAD` and `TAIL` for the job to check it against.
fn with_secret(mut request: LaunchRequest, secret: &str) -> LaunchRequest {
    let (head, tail) = secret.split_at(secret.len() / 2);
    request.env.insert("HEAD".into(), head.into());
    request.env.insert("TAIL".into(), tail.into());
    request.secret_env.insert("TOKEN".into(), secret.into());
    request
}

/// The worker binary on `system`'s server, logging everything to a file.
struct LoggedWorker {
    child: Child,
    log: PathBuf,
    data_dir: PathBuf,
}

impl LoggedWorker {
    fn spawn(system: &System, worker_id: &str, env: &[(&str, &str)]) -> LoggedWorker {
        let data_dir = system.path("data");
        let log = system.path("worker.stderr");
        let mut env = env.to_vec();
        env.push(("RUST_LOG", "trace"));
        let child = system
            .worker_process(worker_id, &data_dir, &env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the worker binary starts");
        LoggedWorker {
            child,
            log,
            data_dir,
        }
    }

    /// Runs `request` to its end; fails at once, with the worker's log, when
    /// the worker exits instead.
    async fn run(&mut self, system: &System, request: &LaunchRequest) -> Vec<JobEvent> {
        tokio::select! {
            events = system.run(request) => events,
            status = self.child.wait() => panic!("the worker exited ({status:?}):\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Fails when `text`, what `what` shows, holds `secret`.
fn assert_hidden(secret: &str, what: &str, text: &str) {
    assert!(
        !text.contains(secret),
        "the secret value is in {what}:\n{text}"
    );
}

/// Every job's record (each revision) and event (each stored one).
async fn assert_hidden_in_story(system: &System, secret: &str, job_id: &str) {
    let records = system.record_history(job_id).await;
    assert!(!records.is_empty(), "{job_id} has no record");
    assert_hidden(
        secret,
        &format!("{job_id}'s record"),
        &format!("{records:?}"),
    );
    let events: Vec<_> = system
        .stored_events(job_id)
        .await
        .into_iter()
        .map(|stored| stored.event)
        .collect();
    assert!(!events.is_empty(), "{job_id} has no event");
    assert_hidden(
        secret,
        &format!("{job_id}'s events"),
        &format!("{events:?}"),
    );
}

/// Every file below `dir` that can be read.
fn assert_hidden_in_files(secret: &str, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_hidden_in_files(secret, &path);
        } else if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert_hidden(secret, &path.display().to_string(), &text);
        }
    }
}

/// Publishes unusable launch requests carrying `secret`: two without a job id
/// (valid JSON, and broken JSON), reported on `P.invalid`, and one whose
/// `secret_env` has the wrong shape, which ends its job `bad_job` in `error`.
/// Checks that neither the reports nor that job's story show the value.
async fn assert_invalid_requests_hide(system: &System, secret: &str, bad_job: &str) {
    let mut reports = system.invalid_reports().await;
    let subject = system.client.subjects().launch(&system.config.pool);
    let nats = system.client.nats();
    let no_id = format!(r#"{{"command":["true"],"secret_env":{{"TOKEN":"{secret}"}}}}"#);
    let broken = format!(r#"{{"command":["true"],"secret_env":{{"TOKEN":"{secret}"}}"#);
    let bad_shape =
        format!(r#"{{"job_id":"{bad_job}","command":["true"],"secret_env":"{secret}"}}"#);
    for payload in [no_id, broken, bad_shape] {
        nats.publish(subject.clone(), payload.into()).await.unwrap();
    }
    nats.flush().await.unwrap();
    let mut shown = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(JOB_TIMEOUT, reports.next())
            .await
            .expect("an invalid-request report")
            .unwrap();
        let report: InvalidRequest = serde_json::from_slice(&message.payload).unwrap();
        assert_hidden(secret, "a P.invalid report", &format!("{report:?}"));
        shown.push(report.payload);
    }
    // The valid JSON is echoed with its secrets' names, the broken JSON cut
    // where they start.
    assert!(
        shown
            .iter()
            .any(|payload| payload.contains(r#""TOKEN":"<secret>""#)),
        "{shown:?}"
    );
    assert!(
        shown.contains(&r#"{"command":["true"],""#.to_owned()),
        "{shown:?}"
    );
    let events = system.events_until_terminal(bad_job).await;
    assert_hidden_in_story(system, secret, bad_job).await;
    let end = events.last().unwrap();
    assert_eq!(end.state, JobState::Error, "{events:?}");
    assert!(
        end.message
            .as_deref()
            .unwrap_or_default()
            .contains("secret_env"),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_process_job_gets_its_secret_and_nothing_else_shows_it() {
    let system = System::without_worker(|_| {}).await;
    let mut worker = LoggedWorker::spawn(&system, "w-secret", &[]);
    let secret = unique_secret();
    assert_invalid_requests_hide(&system, &secret, "proc-bad-secret").await;
    let request = with_secret(
        sh(
            "proc-secret",
            r#"[ "$TOKEN" = "$HEAD$TAIL" ] && echo matched"#,
        ),
        &secret,
    );
    let events = worker.run(&system, &request).await;
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "the job did not get its secret: {events:?}\n{}",
        worker.log()
    );
    assert_eq!(
        std::fs::read_to_string(log_path(&events)).unwrap(),
        "matched\n"
    );
    assert_hidden_in_story(&system, &secret, "proc-secret").await;
    assert_hidden_in_files(&secret, &worker.data_dir);
    let log = worker.log();
    assert!(
        log.contains("proc-secret"),
        "the worker logged nothing of the job:\n{log}"
    );
    assert_hidden(&secret, "the worker's log", &log);
}

/// A folder for secret files on /dev/shm, the tmpfs Linux mounts.
fn secrets_tmpfs() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("a folder on /dev/shm")
}

/// Waits until `path` is gone.
async fn wait_until_gone(path: &Path, what: &str) {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} is still there: {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_docker_job_reads_its_secret_from_a_file_that_goes_with_it() {
    test_image();
    let tmpfs = secrets_tmpfs();
    let system = System::without_worker(|_| {}).await;
    let worker_id = unique("w");
    let worker_folder = tmpfs.path().join(format!("worker-{worker_id}"));
    // A job's folder left by a worker of this id that died: no container has it.
    let left = worker_folder.join("job-gone");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("TOKEN"), "left behind").unwrap();
    let tmpfs_path = tmpfs.path().to_str().unwrap();
    let mut worker = LoggedWorker::spawn(
        &system,
        &worker_id,
        &[
            ("FLARE_BACKEND", "docker"),
            ("FLARE_DOCKER_SECRETS_TMPFS", tmpfs_path),
            // Kept, for `docker inspect` to read after the job's end.
            ("FLARE_DOCKER_KEEP_S", "600"),
        ],
    );
    let secret = unique_secret();
    let job_id = unique("dsecret");
    let script = r#"f="$FLARE_SECRETS_DIR/TOKEN"; [ "$(cat "$f")" = "$HEAD$TAIL" ] && [ -z "$TOKEN" ] && stat -c '%a %u' "$f" && ! touch "$FLARE_SECRETS_DIR/x" 2>/dev/null"#;
    let request = with_secret(in_container(&job_id, script), &secret);
    let events = worker.run(&system, &request).await;
    let containers = containers_of(&job_id);
    let inspected = docker_cli(&["inspect", &containers[0]]);
    docker_cli(&["rm", "-f", &containers[0]]);
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "the job did not read its secret: {events:?}\n{}",
        worker.log()
    );
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(
        std::fs::read_to_string(log_path(&events)).unwrap(),
        format!("400 {uid}\n")
    );
    assert_hidden(&secret, "docker inspect", &inspected);
    assert!(
        inspected.contains("/run/flare-launcher/secrets"),
        "{inspected}"
    );
    wait_until_gone(
        &worker_folder.join(format!("job-{job_id}")),
        "the job's secret files",
    )
    .await;
    wait_until_gone(&left, "the folder of a job whose container is gone").await;
    assert_hidden_in_story(&system, &secret, &job_id).await;
    assert_hidden_in_files(&secret, &worker.data_dir);
    let log = worker.log();
    assert!(
        log.contains(&job_id),
        "the worker logged nothing of the job:\n{log}"
    );
    assert_hidden(&secret, "the worker's log", &log);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_docker_job_with_secrets_is_refused_by_an_engine_off_the_host() {
    let tmpfs = secrets_tmpfs();
    let (_proxy, system) =
        system_through_proxy(|config| config.docker.secrets_tmpfs = tmpfs.path().to_owned()).await;
    let job_id = unique("remote");
    let request = with_secret(in_container(&job_id, "true"), &unique_secret());
    let events = system.run(&request).await;
    let end = events.last().unwrap();
    assert_eq!(end.state, JobState::Error, "{events:?}");
    assert_eq!(end.reason.as_deref(), Some("InvalidRequest"), "{end:?}");
    assert!(
        end.message.as_deref().unwrap().contains("Unix socket"),
        "{end:?}"
    );
    assert!(containers_of(&job_id).is_empty());
}

#[tokio::test]
async fn a_docker_worker_whose_secrets_folder_is_on_a_disk_does_not_start() {
    let on_disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let fs = nix::sys::statfs::statfs(on_disk.path()).unwrap();
    if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
        return eprintln!("the checkout is on a tmpfs; nothing to test");
    }
    let system = System::without_worker(|config| {
        docker_worker(config);
        config.docker.secrets_tmpfs = on_disk.path().to_owned();
    })
    .await;
    let refusal = system.worker_refusal().await;
    assert!(refusal.contains("is not on a tmpfs"), "{refusal}");
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_failed_docker_launch_leaves_no_secret_files() {
    let tmpfs = secrets_tmpfs();
    let system = docker_system_with(|config| {
        config.docker.secrets_tmpfs = tmpfs.path().to_owned();
    })
    .await;
    let job_id = unique("nosecretimage");
    let mut request = with_secret(in_container(&job_id, "true"), &unique_secret());
    // Nothing listens on port 1: the pull fails at once, after the files were written.
    request.image = Some("127.0.0.1:1/flare-launcher/missing:1".into());
    let events = system.run(&request).await;
    let end = events.last().unwrap();
    assert_eq!(end.reason.as_deref(), Some("ImagePullFailed"), "{end:?}");
    let folder = tmpfs
        .path()
        .join(format!("worker-{}", system.config.worker_id))
        .join(format!("job-{job_id}"));
    wait_until_gone(&folder, "the secret files of a launch that failed").await;
}
