//! Docker jobs start locked down: no new privileges, every capability dropped
//! but those the site gives back, the site's user (the worker's own by
//! default), optionally a read-only root file system, and the site's default
//! limits. Each test reads back what the engine holds and runs a job that tries
//! what the guard forbids: the job succeeds only when every try fails.

use crate::common::docker::{
    containers_of, docker_cli, docker_system_with, in_container, setuid_image, unique,
};
use crate::common::system::{System, log_path};
use flare_launcher::config::values::{JobLimits, NumericUser};
use flare_launcher::protocol::{LaunchRequest, Mount, Resources};
use flare_launcher::state::JobState;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// A shell function the jobs' scripts start with: `refused CMD...` runs the
/// command and ends the job with 1 if it succeeds.
const REFUSED: &str = "refused() { if \"$@\" >/dev/null 2>&1; then echo \"ALLOWED: $*\"; exit 1; fi; echo \"refused: $*\"; }";

/// Runs `script` (after [`REFUSED`]) as `job_id`'s container in the setuid
/// image, with `host` mounted read-write at `/hm`, and returns the job's log
/// once it succeeded; fails the test, with the log, otherwise.
async fn run_locked(system: &System, job_id: &str, host: &Path, script: &str) -> String {
    let mut request: LaunchRequest = in_container(job_id, &format!("{REFUSED}\n{script}"));
    request.image = Some(setuid_image().into());
    request.mounts = vec![Mount {
        source: format!("host:{}", host.display()),
        target: "/hm".into(),
        read_only: false,
    }];
    let events = system.run(&request).await;
    let log = std::fs::read_to_string(log_path(&events)).unwrap_or_default();
    assert_eq!(
        events.last().unwrap().state,
        JobState::Succeeded,
        "{log}\n{events:?}"
    );
    log
}

/// A folder for host mounts, holding a file `f` owned by this process.
fn host_folder() -> tempfile::TempDir {
    let folder = tempfile::tempdir().expect("a host folder");
    std::fs::write(folder.path().join("f"), "x").expect("a file in it");
    folder
}

/// `docker inspect --format FORMAT` of the job's container (kept after its
/// end), which is then removed.
fn inspect(job_id: &str, format: &str) -> String {
    let name = containers_of(job_id)
        .pop()
        .unwrap_or_else(|| panic!("the container of {job_id} is kept"));
    let held = docker_cli(&["inspect", "--format", format, &name])
        .trim()
        .to_owned();
    docker_cli(&["rm", "-f", &name]);
    held
}

/// A worker that keeps ended containers long enough to read them back, may
/// mount `host`, and is adjusted by `configure`.
async fn locked_system(
    host: &Path,
    configure: impl FnOnce(&mut flare_launcher::config::WorkerConfig),
) -> System {
    let host = host.to_owned();
    docker_system_with(move |config| {
        config.docker.keep = Duration::from_secs(60);
        config.docker.host_roots = vec![host];
        configure(config);
    })
    .await
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_container_runs_as_the_worker_without_capabilities_or_new_privileges() {
    let host = host_folder();
    let system = locked_system(host.path(), |_| {}).await;
    let job_id = unique("locked");
    let script = "refused chown 1234 /hm/f\n\
                  refused /suid/busybox ping -c1 -W2 127.0.0.1\n\
                  grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status";
    let log = run_locked(&system, &job_id, host.path(), script).await;
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
    let owner = std::fs::metadata(host.path().join("f")).unwrap().uid();
    assert_eq!(
        owner,
        nix::unistd::getuid().as_raw(),
        "the file kept its owner"
    );
    assert_eq!(
        inspect(
            &job_id,
            "{{.Config.User}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}} {{.HostConfig.Privileged}}"
        ),
        format!(
            "{} [\"no-new-privileges\"] [\"ALL\"] null false",
            NumericUser::of_this_process()
        )
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_setuid_binary_gains_no_capability_the_site_gave_back() {
    let host = host_folder();
    // NET_RAW back in the bounding set: only no-new-privileges keeps a setuid
    // ping run by an ordinary user from raising it.
    let system = locked_system(host.path(), |config| {
        config.docker.user = "1000:1000".parse().unwrap();
        config.docker.cap_add = vec!["NET_RAW".parse().unwrap()];
    })
    .await;
    let job_id = unique("setuid");
    let script = "refused /suid/busybox ping -c1 -W2 127.0.0.1\nid -u";
    let log = run_locked(&system, &job_id, host.path(), script).await;
    assert!(log.lines().any(|line| line == "1000"), "{log}");
    assert_eq!(
        inspect(&job_id, "{{json .HostConfig.CapAdd}}"),
        "[\"NET_RAW\"]"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_capability_the_site_gives_back_works_and_no_other() {
    let host = host_folder();
    let system = locked_system(host.path(), |config| {
        config.docker.user = "0:0".parse().unwrap();
        config.docker.cap_add = vec!["CHOWN".parse().unwrap()];
    })
    .await;
    let job_id = unique("chown");
    let script = "chown 1234 /hm/f || exit 2\n\
                  refused /suid/busybox ping -c1 -W2 127.0.0.1";
    run_locked(&system, &job_id, host.path(), script).await;
    let owner = std::fs::metadata(host.path().join("f")).unwrap().uid();
    assert_eq!(owner, 1234, "CHOWN given back");
    assert_eq!(
        inspect(&job_id, "{{json .HostConfig.CapAdd}}"),
        "[\"CHOWN\"]"
    );
}

#[tokio::test]
#[cfg_attr(no_docker, ignore = "no Docker engine answers")]
async fn a_read_only_root_leaves_tmp_writable_and_the_sites_limits_hold_unless_the_request_names_its_own()
 {
    let host = host_folder();
    let system = locked_system(host.path(), |config| {
        config.docker.read_only_root = true;
        config.docker.default_limits = JobLimits {
            memory_mb: Some(96),
            cpus: Some(0.5),
        };
    })
    .await;
    let job_id = unique("readonly");
    let script = "refused touch /made-by-the-job\n\
                  touch /tmp/made-by-the-job || exit 2\n\
                  echo written > /hm/out || exit 3";
    run_locked(&system, &job_id, host.path(), script).await;
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        inspect(
            &job_id,
            "{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.Tmpfs}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"
        ),
        format!(
            "true {{\"/tmp\":\"rw,nosuid,nodev\"}} {} 500000000",
            96 * 1024 * 1024
        )
    );
    let own_id = unique("own-limits");
    let mut request = in_container(&own_id, "true");
    request.resources = Some(Resources {
        memory_mb: Some(200),
        ..Resources::default()
    });
    let events = system.run(&request).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    assert_eq!(
        inspect(&own_id, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"),
        format!("{} 500000000", 200 * 1024 * 1024)
    );
}
