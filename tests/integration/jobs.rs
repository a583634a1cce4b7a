//! Jobs run as local processes, end to end over a real nats-server, beyond what
//! every backend does (`conformance`): signals, spawn failures, environment,
//! working directory, logs and time limits.

use crate::common::processes::{is_alive, read_pid};
use crate::common::system::{System, assert_well_formed, log_path, sh, states};
use flare_launcher::protocol::{BackendKind, BackendRef, LaunchRequest, Timeouts};

#[tokio::test]
async fn a_job_killed_by_a_signal_nobody_asked_for_fails() {
    let system = System::start().await;
    let events = system.run(&sh("killed", "kill -KILL $$")).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state.as_str(), "failed");
    assert_eq!((last.return_code, last.exit_code), (Some(1), Some(137)));
}

#[tokio::test]
async fn a_command_that_cannot_be_spawned_ends_in_error() {
    let system = System::start().await;
    let request = LaunchRequest::new("nosuch", vec!["/no/such/program".into()]);
    let events = system.run(&request).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.return_code, Some(104));
    assert_eq!(last.reason.as_deref(), Some("SpawnFailed"));
    let message = last.message.as_deref().unwrap();
    assert!(message.contains("No such file or directory"), "{message}");
}

#[tokio::test]
async fn a_missing_workdir_is_named_in_the_error() {
    let system = System::start().await;
    let mut request = sh("nowhere", "true");
    request.workdir = Some("/no/such/dir".into());
    let events = system.run(&request).await;
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("SpawnFailed"));
    assert!(
        last.message.as_deref().unwrap().contains("/no/such/dir"),
        "{last:?}"
    );
}

#[tokio::test]
async fn env_workdir_and_the_log_file_reach_the_job() {
    let system = System::start().await;
    let workdir = system.path("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let mut request = sh("envjob", r#"echo "$GREETING from $(pwd)"; echo oops >&2"#);
    request.env.insert("GREETING".into(), "hello world".into());
    request.workdir = Some(workdir.to_string_lossy().into_owned());
    let events = system.run(&request).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    let log = std::fs::read_to_string(log_path(&events)).unwrap();
    assert_eq!(
        log,
        format!("hello world from {}\noops\n", workdir.display())
    );
    // Another job (another user) cannot read it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(log_path(&events))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "log mode {mode:o}");
    let record = system.client.status("envjob").await.unwrap();
    assert!(matches!(record.backend_ref, Some(BackendRef::Process { pid }) if pid > 0));
}

#[tokio::test]
async fn run_timeout_terminates_the_job() {
    let system = System::start().await;
    let mut request = LaunchRequest::new("slow", vec!["sleep".into(), "30".into()]);
    request.timeouts = Some(Timeouts {
        start_s: None,
        run_s: Some(1),
    });
    let events = system.run(&request).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state.as_str(), "terminated");
    assert_eq!(last.return_code, Some(9));
    assert_eq!(last.reason.as_deref(), Some("RunTimeout"));
}

#[tokio::test]
async fn a_backend_this_worker_lacks_is_an_error() {
    let system = System::start().await;
    let mut request = sh("dockerjob", "true");
    request.backend = Some(BackendKind::Docker);
    request.image = Some("busybox".into());
    let events = system.run(&request).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state.as_str(), "error");
    assert_eq!(last.reason.as_deref(), Some("BackendUnavailable"));
    assert_eq!(last.backend, BackendKind::Docker);
}

#[tokio::test]
async fn mounts_are_refused_by_the_process_backend() {
    let system = System::start().await;
    let mut request = sh("mounted", "true");
    request.mounts = vec![flare_launcher::protocol::Mount {
        source: "emptydir:".into(),
        target: "/scratch".into(),
        read_only: false,
    }];
    let events = system.run(&request).await;
    let last = events.last().unwrap();
    assert_eq!(last.state.as_str(), "error");
    assert_eq!(last.reason.as_deref(), Some("InvalidRequest"));
}

#[tokio::test]
async fn processes_a_job_leaves_behind_are_killed_with_it() {
    let system = System::start().await;
    let pidfile = system.path("orphan.pid");
    let script = format!("sleep 60 & echo $! > {}; exit 0", pidfile.display());
    let events = system.run(&sh("orphans", &script)).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    let pid = read_pid(&pidfile).await;
    // Killed before the end is reported.
    assert!(
        !is_alive(pid),
        "the background sleep {pid} outlived its job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_do_not_inherit_the_workers_flare_settings() {
    // The worker runs as its own process, so the variable is set in its environment
    // only. FLARE_TEST_SECRET is not one the worker reads (a FLARE_NATS_PASSWORD
    // without a user would stop it from connecting), but it is withheld all the same.
    let system = System::without_worker(|_| {}).await;
    let data_dir = system.path("data");
    let _worker = system.spawn_worker_process(
        "scrub",
        &data_dir,
        &[("FLARE_TEST_SECRET", "worker-secret")],
    );
    let mut request = sh(
        "scrubbed",
        r#"echo "secret=${FLARE_TEST_SECRET:-unset} own=$OWN""#,
    );
    request.env.insert("OWN".into(), "kept".into());
    let events = system.run(&request).await;
    assert_eq!(events.last().unwrap().state.as_str(), "succeeded");
    assert_eq!(events.last().unwrap().worker, "scrub");
    let log = std::fs::read_to_string(log_path(&events)).unwrap();
    assert_eq!(log, "secret=unset own=kept\n");
}
