//! Tells the integration tests what this machine lacks, so that a test needing
//! it shows as ignored in the runner's summary instead of passing without having
//! run: `no_docker` when no Docker engine answers, `not_root` when the build does
//! not run as root (the tests that switch users need it), `no_setpriv` when
//! util-linux's `setpriv` is missing, `no_cgroup_v1_cpu` when no cgroup v1
//! hierarchy of the `cpu` controller is mounted. In CI (`CI=true`) none is set: there every
//! test runs, and one whose dependency is missing fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `docker version` may take before the engine counts as absent.
const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_docker)");
    println!("cargo::rustc-check-cfg=cfg(not_root)");
    println!("cargo::rustc-check-cfg=cfg(no_setpriv)");
    println!("cargo::rustc-check-cfg=cfg(no_cgroup_v1_cpu)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    // The engine's socket is made again when the engine starts, and is missing
    // while it is away (a missing path reruns this script at every build).
    println!("cargo::rerun-if-changed={}", docker_socket().display());

    if std::env::var("CI").as_deref() == Ok("true") {
        return;
    }
    if !docker_answers() {
        println!("cargo::rustc-cfg=no_docker");
        println!(
            "cargo::warning=no Docker engine answers: the Docker tests are ignored in this build"
        );
    }
    if !is_root() {
        println!("cargo::rustc-cfg=not_root");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("cargo::rustc-cfg=no_setpriv");
    }
    if !cgroup_v1_cpu() {
        println!("cargo::rustc-cfg=no_cgroup_v1_cpu");
    }
}

/// Whether a cgroup v1 hierarchy of the `cpu` controller is mounted.
fn cgroup_v1_cpu() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.get(2) == Some(&"cgroup")
                && fields
                    .get(3)
                    .is_some_and(|options| options.split(',').any(|o| o == "cpu"))
        })
    })
}

/// The engine's Unix socket, as the tests' Docker client finds it.
fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Whether `docker version` reaches an engine within [`DOCKER_PROBE_TIMEOUT`].
fn docker_answers() -> bool {
    let Ok(mut probe) = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + DOCKER_PROBE_TIMEOUT;
    loop {
        match probe.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = probe.kill();
                let _ = probe.wait();
                return false;
            }
        }
    }
}

/// Whether this build runs as root (the effective uid of `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            uids.split_whitespace()
                .nth(1)
                .map(|effective| effective == "0")
        })
        .unwrap_or(false)
}
