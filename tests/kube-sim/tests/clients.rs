//! Conformance with clients no one here wrote: `kubectl` and the Python
//! `kubernetes` client, each run as a real process against its own kube-sim.
//! Outside CI a missing client skips its test loudly; in CI (`CI=true`) a missing
//! client fails it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// Whether `program --version`-like `probe` works; panics in CI when it does not.
fn available(what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is required in CI (scripts/ensure-python-kube.sh installs the Python client)"
        );
        eprintln!("SKIPPED: {what} is not installed");
    }
    ok
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "60s"])
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `kubectl get pod NAME -w` and collects the phases it prints until `last`.
fn watch_phases(kubeconfig: &Path, name: &str, last: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "get",
            "pod",
            name,
            "-w",
            "-o",
            "jsonpath={.status.phase}{\"\\n\"}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut phases: Vec<String> = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if phases.last() != Some(&line) {
            phases.push(line.clone());
        }
        if line == last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(phases.last().map(String::as_str), Some(last), "{phases:?}");
    phases
}

const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: ctl-job
  labels: {suite: kubectl}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: [sh, -c, 'echo from-kubectl; sleep 1; exit 0']
    resources:
      limits: {nvidia.com/gpu: 1}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_gets_lists_watches_logs_and_deletes_a_pod() {
    if !available(
        "kubectl",
        Command::new("kubectl").args(["version", "--client"]),
    ) {
        return;
    }
    let sim = common::start(|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    tokio::task::spawn_blocking(move || {
        let created = text(&kubectl(
            &kc,
            &["create", "-f", manifest.to_str().expect("path")],
        ));
        assert_eq!(created.trim(), "pod/ctl-job created");
        // The watch prints one phase per event, through to completion.
        let phases = watch_phases(&kc, "ctl-job", "Succeeded");
        assert!(phases.contains(&"Running".to_owned()), "{phases:?}");
        let json: serde_json::Value = serde_json::from_str(&text(&kubectl(
            &kc,
            &["get", "pod", "ctl-job", "-o", "json"],
        )))
        .expect("json");
        assert_eq!(json["metadata"]["labels"]["suite"], "kubectl");
        let wide = text(&kubectl(&kc, &["get", "pods", "-o", "wide"]));
        assert!(wide.contains("ctl-job"), "{wide}");
        let named = text(&kubectl(
            &kc,
            &["get", "pods", "-l", "suite=kubectl", "-o", "name"],
        ));
        assert_eq!(named.trim(), "pod/ctl-job");
        let none = text(&kubectl(
            &kc,
            &["get", "pods", "-l", "suite=other", "-o", "name"],
        ));
        assert_eq!(none.trim(), "");
        let logs = text(&kubectl(&kc, &["logs", "ctl-job"]));
        assert_eq!(logs, "from-kubectl\n");
        // `delete` waits (by watching) until the pod is gone.
        let deleted = text(&kubectl(&kc, &["delete", "pod", "ctl-job"]));
        assert_eq!(deleted.trim(), "pod \"ctl-job\" deleted");
        let missing = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "pod", "ctl-job"])
            .output()
            .expect("kubectl runs");
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("pods \"ctl-job\" not found"));
    })
    .await
    .expect("kubectl steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_watches_resumes_and_gets_410() {
    if !available(
        "the Python kubernetes client",
        Command::new("python3").args(["-c", "import kubernetes"]),
    ) {
        return;
    }
    let sim = common::start(|c| c.history = 30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_conformance.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&kc)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python conformance failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
