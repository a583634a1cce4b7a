//! Pulls from a registry (Debian's `docker-registry` on loopback). One that
//! wants a login (htpasswd basic auth): the login from a Docker `config.json`,
//! from the credential helper it names, or from the worker's own configuration
//! gets the image; no login, a wrong one or a failing helper ends the job
//! promptly in `error` with reason `ImagePullFailed`. A long pull (through a
//! slow link) shows its progress in the worker's log and says so in the job's
//! record. Ignored in a build that found no engine (never in CI).

use crate::common::docker::{
    REGISTRY_PASSWORD, REGISTRY_USER, Registry, SlowLink, docker_worker, in_container, test_image,
    unique, wait_until_removed,
};
use crate::common::processes::collect_lines;
use crate::common::system::{JOB_TIMEOUT, System, states};
use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::{LaunchRequest, Timeouts};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A registry wanting a login, holding the test image under a name of its own.
async fn registry_with_image() -> (Registry, String) {
    test_image();
    let registry = Registry::start_with_login().await;
    let image = registry.push_test_image(&format!("{}:1", unique("flare-test/private")));
    (registry, image)
}

/// A request for `job_id` that needs `image` and gives its pull far more time
/// than any here takes (a refusal must not wait for it).
fn pulling(job_id: &str, image: &str) -> LaunchRequest {
    let mut request = in_container(job_id, "echo pulled");
    request.image = Some(image.to_owned());
    request.timeouts = Some(Timeouts {
        start_s: Some(600),
        run_s: None,
    });
    request
}

/// Runs a job needing `image` on a Docker worker that `configure` adjusts;
/// returns its events.
async fn run_pulling(
    image: &str,
    configure: impl FnOnce(&mut WorkerConfig),
) -> Vec<flare_launcher::protocol::JobEvent> {
    let system = System::start_with(|config| {
        docker_worker(config);
        configure(config);
    })
    .await;
    run_job_needing(&system, image).await
}

/// Runs a job needing `image` on the worker of `system`; returns its events
/// once its container is gone.
async fn run_job_needing(system: &System, image: &str) -> Vec<flare_launcher::protocol::JobEvent> {
    let job_id = unique("private");
    let events = system.run(&pulling(&job_id, image)).await;
    wait_until_removed(&[&job_id]).await;
    events
}

/// Checks that the job of `events` ran, after removing the image it pulled.
fn assert_ran_and_remove(image: &str, events: &[flare_launcher::protocol::JobEvent]) {
    let _ = std::process::Command::new("docker")
        .args(["rmi", image])
        .output();
    assert_eq!(
        states(events),
        ["starting", "running", "succeeded"],
        "{events:?}"
    );
}

/// Runs a job needing `image` as [`run_pulling`] does and checks that it ran.
async fn assert_pulled_and_ran(image: &str, configure: impl FnOnce(&mut WorkerConfig)) {
    let events = run_pulling(image, configure).await;
    assert_ran_and_remove(image, &events);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_login_of_a_docker_config_file_pulls_the_image() {
    let (registry, image) = registry_with_image().await;
    // `docker login` wrote it for the push.
    let auth_file = registry.client_config_dir().join("config.json");
    assert_pulled_and_ran(&image, |config| {
        config.docker.auth_file = Some(auth_file);
    })
    .await;
}

/// A password file holding `password`, in a directory kept while it is used.
fn password_file(password: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    (dir, file)
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_workers_own_login_pulls_the_image() {
    let (registry, image) = registry_with_image().await;
    let (_dir, password) = password_file(REGISTRY_PASSWORD);
    let login = format!(
        "{}={REGISTRY_USER}:{}",
        registry.address(),
        password.display()
    );
    assert_pulled_and_ran(&image, |config| {
        config.docker.auth_file = Some(PathBuf::from("/nonexistent/config.json"));
        config.docker.registry_logins = vec![login.parse().unwrap()];
    })
    .await;
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn no_login_or_a_wrong_one_ends_promptly_in_image_pull_failed() {
    let (registry, image) = registry_with_image().await;
    let (_dir, wrong) = password_file("not-the-password");
    let wrong_login = format!("{}={REGISTRY_USER}:{}", registry.address(), wrong.display())
        .parse()
        .unwrap();
    for logins in [vec![], vec![wrong_login]] {
        let events = run_pulling(&image, |config| {
            config.docker.auth_file = Some(PathBuf::from("/nonexistent/config.json"));
            config.docker.registry_logins = logins.clone();
        })
        .await;
        assert_eq!(states(&events), ["starting", "error"], "{events:?}");
        let last = events.last().unwrap();
        assert_eq!(
            last.reason.as_deref(),
            Some("ImagePullFailed"),
            "logins {logins:?}: {last:?}"
        );
        assert!(
            last.message.as_deref().unwrap().contains(&image),
            "{last:?}"
        );
    }
}

/// Runs a job needing `image` of `registry` on a worker process whose Docker
/// `config.json` names the credential helper `docker-credential-flaretest`
/// for that registry, the helper (found on the worker's `PATH`) running
/// `body` with the server it is asked about in `$server`; returns the job's
/// events.
async fn run_with_credential_helper(
    registry: &Registry,
    image: &str,
    body: &str,
) -> Vec<flare_launcher::protocol::JobEvent> {
    let system = System::without_worker(|_| {}).await;
    let helpers = system.path("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-flaretest");
    std::fs::write(&helper, format!("#!/bin/sh\nserver=$(cat)\n{body}\n")).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = system.path("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"credHelpers": {{"{}": "flaretest"}}}}"#,
            registry.address()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = config.display().to_string();
    let _worker = system.spawn_worker_process(
        &unique("helped"),
        &system.path("data"),
        &[
            ("FLARE_BACKEND", "docker"),
            ("PATH", &path),
            ("FLARE_DOCKER_AUTH_FILE", &config),
        ],
    );
    run_job_needing(&system, image).await
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn the_credential_helper_named_for_the_registry_gives_the_login() {
    let (registry, image) = registry_with_image().await;
    // The helper answers only for the registry it is asked about.
    let body = format!(
        r#"[ "$1" = get ] && [ "$server" = "{}" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}
printf '{{"ServerURL":"%s","Username":"{REGISTRY_USER}","Secret":"{REGISTRY_PASSWORD}"}}' "$server""#,
        registry.address()
    );
    let events = run_with_credential_helper(&registry, &image, &body).await;
    assert_ran_and_remove(&image, &events);
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_failing_credential_helper_ends_the_job_with_what_it_said() {
    let (registry, image) = registry_with_image().await;
    let body = "echo 'the keychain is locked' >&2; exit 1";
    let events = run_with_credential_helper(&registry, &image, body).await;
    assert_eq!(states(&events), ["starting", "error"], "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("ImagePullFailed"), "{last:?}");
    let message = last.message.as_deref().unwrap();
    assert!(
        message.contains("docker-credential-flaretest")
            && message.contains("the keychain is locked"),
        "{last:?}"
    );
}

/// Waits until `holds` is true of something, failing the test after
/// [`JOB_TIMEOUT`] with `what`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut holds: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while !holds().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_long_pull_shows_its_progress_in_the_log_and_the_record() {
    test_image();
    let registry = Registry::start().await;
    // Far more than passes before the link is opened up.
    let pushed =
        registry.push_image_with_own_layer(&format!("{}:1", unique("flare-test/slow")), 1 << 20);
    let link = SlowLink::start(&registry.address()).await;
    let image = pushed.replacen(&registry.address(), &link.address(), 1);
    let system = System::without_worker(|_| {}).await;
    let mut worker = system
        .worker_process(
            &unique("w"),
            &system.path("data"),
            &[("FLARE_BACKEND", "docker"), ("RUST_LOG", "info")],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the worker starts");
    let log = collect_lines(worker.stderr.take().unwrap());

    let job_id = unique("slow-pull");
    let request = pulling(&job_id, &image);
    system.client.launch(&request).await.unwrap();
    // While the image comes, the job's record says so ...
    let pulling = format!("pulling image {image}");
    wait_until("the record says the image is being pulled", || async {
        let record = system.client.status(&job_id).await;
        record.is_ok_and(|record| record.message.as_deref() == Some(pulling.as_str()))
    })
    .await;
    // ... and the worker's log shows how far the pull got.
    wait_until("a progress line in the worker's log", || async {
        log.lock().unwrap().iter().any(|line| {
            line.contains("still pulling image")
                && line.contains(&image)
                && line.contains("MB downloaded")
        })
    })
    .await;
    link.open_up();

    let events = system.events_until_terminal(&job_id).await;
    wait_until_removed(&[&job_id]).await;
    assert_ran_and_remove(&image, &events);
}
