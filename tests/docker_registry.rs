//! Pulls from a registry that wants a login (Debian's `docker-registry` with
//! htpasswd basic auth on loopback): the login from a Docker `config.json` or
//! from the worker's own configuration gets the image; no login, or a wrong
//! one, ends the job promptly in `error` with reason `ImagePullFailed`. Skipped
//! loudly when no engine answers (never in CI).

mod common;

use common::docker::{
    REGISTRY_PASSWORD, REGISTRY_USER, Registry, docker_worker, engine_available, in_container,
    test_image, unique, wait_until_removed,
};
use common::system::{System, states};
use flare_launcher::config::WorkerConfig;
use flare_launcher::protocol::Timeouts;
use std::path::PathBuf;

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
    let mut request = in_container(&job_id, "echo pulled");
    request.image = Some(image.to_owned());
    // Far more than a refused pull takes: a refusal must not wait for it.
    request.timeouts = Some(Timeouts {
        start_s: Some(600),
        run_s: None,
    });
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
