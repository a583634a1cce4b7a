//! `deploy/docker/`: the images build here without a registry (FROM scratch),
//! and the compose file's NATS and worker run a Docker job launched from the host;
//! the worker's health check (`flare-launcher probe`) finds it healthy.
//! Ignored in a build that found no Docker engine (never in CI).

use crate::common::docker::{test_image, unique};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flare-launcher");

/// `docker-compose` on the project `project`, stopped and removed when dropped.
struct Compose {
    project: String,
    port: u16,
}

impl Compose {
    fn command(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .args(["-p", &self.project, "-f"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/compose.yaml"))
            .env("FLARE_NATS_PORT", self.port.to_string())
            .env("FLARE_WORKER_ID", &self.project);
        command
    }
}

impl Compose {
    /// The worker container's health as the engine judges it, polled until it
    /// is `wanted` (or two minutes passed: then what it was last).
    fn worker_health_until(&self, wanted: &str) -> String {
        let ps = self.command().args(["ps", "-q", "worker"]).output();
        let id = String::from_utf8_lossy(&ps.expect("docker-compose ps runs").stdout)
            .trim()
            .to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let inspected = Command::new("docker")
                .args(["inspect", "--format", "{{.State.Health.Status}}", &id])
                .output()
                .expect("docker inspect runs");
            let health = String::from_utf8_lossy(&inspected.stdout).trim().to_owned();
            if health == wanted || std::time::Instant::now() > deadline {
                return health;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["down", "-v", "--timeout", "60"])
            .output();
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
fn the_compose_files_worker_runs_a_docker_job() {
    let image = test_image();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/build-images.sh");
    let nats = crate::common::nats_server::server_bin();
    let built = Command::new("bash")
        .arg(&script)
        .arg(BIN)
        .arg(&nats)
        .output()
        .expect("build-images.sh runs");
    assert!(built.status.success(), "build-images.sh: {built:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let compose = Compose {
        project: unique("flaredeploy"),
        port,
    };
    let up = compose
        .command()
        .args(["up", "-d"])
        .output()
        .expect("docker-compose runs");
    assert!(up.status.success(), "docker-compose up: {up:?}");

    // `launch` waits for the worker's events: the job's return code is its exit.
    let launched = Command::new(BIN)
        .args(["--nats-url", &format!("nats://127.0.0.1:{port}"), "launch"])
        .args(["--backend", "docker", "--image", image, "--"])
        .args(["/bin/sh", "-c", "echo from compose; exit 3"])
        .output()
        .expect("launch runs");
    let stdout = String::from_utf8_lossy(&launched.stdout);
    assert_eq!(launched.status.code(), Some(1), "{launched:?}");
    assert!(
        stdout.contains("failed return_code=1 exit_code=3"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[docker on {}]", compose.project)),
        "{stdout}"
    );
    assert_eq!(compose.worker_health_until("healthy"), "healthy");
}
