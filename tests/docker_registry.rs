//! Pulls from a registry (Debian's `docker-registry` on loopback). One that
//! wants a login (htpasswd basic auth): the login from a Docker `config.json`
//! or from the worker's own configuration gets the image; no login, or a wrong
//! one, ends the job promptly in `error` with reason `ImagePullFailed`. A long
//! pull (through a slow link) shows its progress in the worker's log and says
//! so in the job's record. Skipped loudly when no engine answers (never in CI).

mod common;

use common::docker::{
    REGISTRY_PASSWORD, REGISTRY_USER, Registry, SlowLink, docker_worker, engine_available,
    in_container, test_image, unique, wait_until_removed,
};
use common::system::{JOB_TIMEOUT, System, states};
use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::{LaunchRequest, Timeouts};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncBufReadExt;

/// A registry wanting a login, holding the test image under a name of its own.
async fn registry_with_image() -> Option<(Registry, String)> {
    if !engine_available() {
        return None;
    }
    test_image();
    let registry = Registry::start_with_login().await;
    let image = registry.push_test_image(&format!("{}:1", unique("flare-test/private")));
    Some((registry, image))
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
    let job_id = unique("private");
    let request = pulling(&job_id, image);
    let events = system.run(&request).await;
    wait_until_removed(&[&job_id]).await;
    events
}

/// Runs a job needing `image` as [`run_pulling`] does, checks that it ran, and
/// removes the image pulled.
async fn assert_pulled_and_ran(image: &str, configure: impl FnOnce(&mut WorkerConfig)) {
    let events = run_pulling(image, configure).await;
    let _ = std::process::Command::new("docker")
        .args(["rmi", image])
        .output();
    assert_eq!(
        states(&events),
        ["starting", "running", "succeeded"],
        "{events:?}"
    );
}

#[tokio::test]
async fn the_login_of_a_docker_config_file_pulls_the_image() {
    let Some((registry, image)) = registry_with_image().await else {
        return;
    };
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
async fn the_workers_own_login_pulls_the_image() {
    let Some((registry, image)) = registry_with_image().await else {
        return;
    };
    let (_dir, password) = password_file(REGISTRY_PASSWORD);
    let login = format!(
        "{}={REGISTRY_USER}:{}",
        registry.address(),
        password.display()
    );
    assert_pulled_and_ran(&image, |config| {
        config.docker.auth_file = Some(PathBuf::from("/nonexistent/config.json"));
        config.docker.registry_logins = vec![login];
    })
    .await;
}

#[tokio::test]
async fn no_login_or_a_wrong_one_ends_promptly_in_image_pull_failed() {
    let Some((registry, image)) = registry_with_image().await else {
        return;
    };
    let (_dir, wrong) = password_file("not-the-password");
    let wrong_login = format!("{}={REGISTRY_USER}:{}", registry.address(), wrong.display());
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

/// Collects a worker process's log lines as they come.
fn collect_lines(stderr: tokio::process::ChildStderr) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    lines
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
async fn a_long_pull_shows_its_progress_in_the_log_and_the_record() {
    if !engine_available() {
        return;
    }
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
    let _ = std::process::Command::new("docker")
        .args(["rmi", &image])
        .output();
    assert_eq!(
        states(&events),
        ["starting", "running", "succeeded"],
        "{events:?}"
    );
}
