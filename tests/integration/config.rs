//! A bad value of an option stops `flare-launcher worker` at start-up, before
//! anything connects, whether it comes as a flag, an environment variable or a
//! key of the config file, and the message names the option: its flag, and in
//! the file its table and key. One bad value of each kind the configuration
//! parses into a type of its own.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flare-launcher");

/// An option, its bad value as a flag gives it and as the file gives it.
struct Bad {
    flag: &'static str,
    env: &'static str,
    table: &'static str,
    key: &'static str,
    value: &'static str,
    toml: &'static str,
}

const BAD_VALUES: [Bad; 12] = [
    Bad {
        flag: "--docker-ulimits",
        env: "FLARE_DOCKER_ULIMITS",
        table: "docker",
        key: "ulimits",
        value: "nofile",
        toml: "[\"nofile\"]",
    },
    Bad {
        flag: "--docker-registry-login",
        env: "FLARE_DOCKER_REGISTRY_LOGIN",
        table: "docker",
        key: "registry_logins",
        value: "registry=user:relative/file",
        toml: "[\"registry=user:relative/file\"]",
    },
    Bad {
        flag: "--docker-user",
        env: "FLARE_DOCKER_USER",
        table: "docker",
        key: "user",
        value: "root",
        toml: "\"root\"",
    },
    Bad {
        flag: "--docker-pull",
        env: "FLARE_DOCKER_PULL",
        table: "docker",
        key: "pull",
        value: "sometimes",
        toml: "\"sometimes\"",
    },
    Bad {
        flag: "--k8s-node-selector",
        env: "FLARE_K8S_NODE_SELECTOR",
        table: "k8s",
        key: "node_selector",
        value: "gpu",
        toml: "[\"gpu\"]",
    },
    Bad {
        flag: "--k8s-tolerations",
        env: "FLARE_K8S_TOLERATIONS",
        table: "k8s",
        key: "tolerations",
        value: "gpu:Sometimes",
        toml: "[\"gpu:Sometimes\"]",
    },
    Bad {
        flag: "--k8s-user",
        env: "FLARE_K8S_USER",
        table: "k8s",
        key: "user",
        value: "0",
        toml: "\"0\"",
    },
    Bad {
        flag: "--job-user",
        env: "FLARE_JOB_USER",
        table: "worker",
        key: "job_user",
        value: "a:b:c",
        toml: "\"a:b:c\"",
    },
    Bad {
        flag: "--job-uids",
        env: "FLARE_JOB_UIDS",
        table: "worker",
        key: "job_uids",
        value: "0-10",
        toml: "\"0-10\"",
    },
    Bad {
        flag: "--drain-timeout",
        env: "FLARE_DRAIN_TIMEOUT_S",
        table: "worker",
        key: "drain_timeout_s",
        value: "-1",
        toml: "-1",
    },
    Bad {
        flag: "--backends",
        env: "FLARE_BACKENDS",
        table: "worker",
        key: "backends",
        value: "process,podman",
        toml: "[\"process\", \"podman\"]",
    },
    Bad {
        flag: "--gpus",
        env: "FLARE_GPUS",
        table: "resources",
        key: "gpus",
        value: "0,0",
        toml: "\"0,0\"",
    },
];

/// Longest a refusal may take before the worker counts as started (it then
/// waits for a NATS server where none listens, and is killed).
const START_UP: Duration = Duration::from_secs(60);

/// `flare-launcher worker` with `args` after the command and `env`.
fn worker(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--nats-url", "nats://127.0.0.1:1", "worker", "--data-dir"])
        .arg(data.path())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + START_UP;
    while child
        .try_wait()
        .expect("the worker can be waited for")
        .is_none()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("the worker's output")
}

/// Checks that `output` is a refusal to start whose message holds `named`.
fn refused(output: &Output, named: &str, context: &str) -> Option<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(2) && stderr.contains(named) {
        None
    } else {
        Some(format!(
            "{context}: expected exit 2 naming {named:?}, got {:?}: {stderr}",
            output.status.code()
        ))
    }
}

#[test]
fn a_bad_value_is_refused_at_start_up_naming_its_option() {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for bad in &BAD_VALUES {
        let flag = format!("{}={}", bad.flag, bad.value);
        let as_flag = worker(&[&flag], &[]);
        problems.extend(refused(&as_flag, bad.flag, &flag));
        let as_env = worker(&[], &[(bad.env, bad.value)]);
        problems.extend(refused(&as_env, bad.flag, bad.env));
        let file = dir.path().join(format!("{}-{}.toml", bad.table, bad.key));
        let text = format!("[{}]\n{} = {}\n", bad.table, bad.key, bad.toml);
        std::fs::write(&file, &text).unwrap();
        let config = format!("--config={}", file.display());
        let in_file = worker(&[&config], &[]);
        let named = format!("[{}] {} ({})", bad.table, bad.key, bad.flag);
        problems.extend(refused(&in_file, &named, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
