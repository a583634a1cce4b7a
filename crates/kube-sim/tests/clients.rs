//! Conformance with clients no one here wrote: `kubectl` and the Python
//! `kubernetes` client, each run as a real process against its own kube-sim.
//! A build that finds no kubectl ignores the kubectl tests (in CI, `CI=true`, it
//! does not, so they fail). `KUBE_SIM_KUBECTL` names another kubectl to run. The
//! Python client runs with `KUBE_SIM_PYTHON` (the interpreter of the virtual
//! environment that `scripts/ensure-python-kube.sh` installs it in and exports),
//! else `python3`; its test fails when that interpreter lacks the client.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// The Python interpreter to run the `kubernetes` client with: `$KUBE_SIM_PYTHON`,
/// else `python3`. Panics, saying how to get the client, when it cannot import it.
fn python_with_kubernetes_client() -> std::ffi::OsString {
    let named = std::env::var_os("KUBE_SIM_PYTHON");
    let how = if named.is_some() {
        "KUBE_SIM_PYTHON"
    } else {
        "KUBE_SIM_PYTHON is not set"
    };
    let python = named.unwrap_or_else(|| "python3".into());
    let has_client = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_client,
        "{} ({how}) cannot import the Python kubernetes client; \
         `source scripts/ensure-python-kube.sh` installs it in the project's virtual \
         environment and exports KUBE_SIM_PYTHON",
        python.to_string_lossy()
    );
    python
}

/// The kubectl to run: `$KUBE_SIM_KUBECTL` (such as Debian's 1.20 unpacked
/// somewhere), else `kubectl` from the PATH.
fn kubectl_program() -> std::ffi::OsString {
    std::env::var_os("KUBE_SIM_KUBECTL").unwrap_or_else(|| "kubectl".into())
}

/// Runs kubectl with `args`, whatever its exit status.
fn kubectl_output(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_program())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "60s"])
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Runs kubectl with `args`, which must succeed.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    let out = kubectl_output(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `args` with `--token TOKEN`: the admin's kubeconfig used as another user.
fn as_user<'a>(token: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--token", token], args].concat()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `kubectl get pod NAME -w` and collects the phases it prints until `last`.
fn watch_phases(kubeconfig: &Path, name: &str, last: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut child = Command::new(kubectl_program())
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
#[cfg_attr(no_kubectl, ignore = "kubectl is not installed")]
async fn kubectl_creates_gets_lists_watches_logs_and_deletes_a_pod() {
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
        let missing = kubectl_output(&kc, &["get", "pod", "ctl-job"]);
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("pods \"ctl-job\" not found"));
    })
    .await
    .expect("kubectl steps");
}

/// Binds pod-reader to bob (`kubectl create rolebinding` would send protobuf,
/// which kube-sim does not read; `create -f` sends JSON).
const BOB_BINDING: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-reads-pods}
subjects:
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: pod-reader, apiGroup: rbac.authorization.k8s.io}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_kubectl, ignore = "kubectl is not installed")]
async fn kubectl_with_a_users_token_may_do_what_its_role_allows_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, common::POD_READER_RBAC).expect("rbac file");
    let sim = common::start(|c| {
        for name in ["alice", "bob"] {
            c.users.push(kube_sim::UserConfig {
                name: name.to_owned(),
                token: format!("{name}-token"),
            });
        }
        c.rbac_files = vec![rbac];
    })
    .await;
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    let dir_path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        kubectl(&kc, &["create", "-f", manifest.to_str().expect("path")]);
        let named = text(&kubectl(&kc, &as_user("alice-token", &["get", "pods", "-o", "name"])));
        assert_eq!(named.trim(), "pod/ctl-job");
        let denied = kubectl_output(&kc, &as_user("alice-token", &["delete", "pod", "ctl-job"]));
        assert!(!denied.status.success());
        assert_eq!(
            String::from_utf8_lossy(&denied.stderr).trim(),
            "Error from server (Forbidden): pods \"ctl-job\" is forbidden: User \"alice\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let secrets = kubectl_output(&kc, &as_user("alice-token", &["get", "secrets"]));
        assert!(!secrets.status.success());
        assert!(
            String::from_utf8_lossy(&secrets.stderr).contains("(Forbidden)"),
            "{}",
            String::from_utf8_lossy(&secrets.stderr)
        );
        // The request counter (admin only) saw alice's list.
        let counted: serde_json::Value =
            serde_json::from_str(&text(&kubectl(&kc, &["get", "--raw", "/kube-sim/requests"])))
                .expect("json");
        let alices_lists = counted["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["user"] == "alice" && c["verb"] == "list" && c["resource"] == "pods");
        assert!(alices_lists.is_some(), "{counted}");
        let admin_only = kubectl_output(
            &kc,
            &as_user("alice-token", &["get", "--raw", "/kube-sim/requests"]),
        );
        assert!(
            String::from_utf8_lossy(&admin_only.stderr).contains("(Forbidden)"),
            "{}",
            String::from_utf8_lossy(&admin_only.stderr)
        );
        // bob may list pods once the admin binds the role to him through the API.
        assert!(!kubectl_output(&kc, &as_user("bob-token", &["get", "pods"])).status.success());
        let binding = dir_path.join("binding.yaml");
        std::fs::write(&binding, BOB_BINDING).expect("binding");
        let bound = text(&kubectl(
            &kc,
            &["create", "-f", binding.to_str().expect("path")],
        ));
        assert_eq!(
            bound.trim(),
            "rolebinding.rbac.authorization.k8s.io/bob-reads-pods created"
        );
        let named = text(&kubectl(&kc, &as_user("bob-token", &["get", "pods", "-o", "name"])));
        assert_eq!(named.trim(), "pod/ctl-job");
    })
    .await
    .expect("kubectl steps");
}

/// Runs the Python client script `name` (in `tests/clients/`) against its own
/// kube-sim, which must succeed.
async fn run_python(sim: &kube_sim::KubeSim, name: &str) {
    let python = python_with_kubernetes_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name);
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&kc)
        .output()
        .await
        .expect("the Python interpreter runs");
    assert!(
        out.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_watches_resumes_gets_410_and_sees_relabels() {
    let sim = common::start(|c| c.history = 30).await;
    run_python(&sim, "python_conformance.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_sees_a_lost_nodes_pod_evicted_and_removed_on_restore() {
    let sim = common::start(|_| {}).await;
    run_python(&sim, "python_node_lifecycle.py").await;
}

const LOST_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: ctl-lost
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: [sleep, '600']
";

/// Polls `kubectl ARGS` until its output is `want`.
fn kubectl_until(kubeconfig: &Path, args: &[&str], want: &str) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let out = kubectl_output(kubeconfig, args);
        if out.status.success() && text(&out).trim() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl {args:?}: {} {}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_kubectl, ignore = "kubectl is not installed")]
async fn kubectl_sees_a_lost_nodes_pod_running_unready_then_evicted_then_removed() {
    let sim = common::start(|c| c.default_toleration_seconds = 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, LOST_MANIFEST).expect("manifest");
    let node = dir.path().join("node.json");
    std::fs::write(&node, r#"{"node": "kube-sim-node"}"#).expect("node");
    tokio::task::spawn_blocking(move || {
        kubectl(&kc, &["create", "-f", manifest.to_str().expect("path")]);
        let ready = "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}";
        kubectl_until(&kc, &["get", "pod", "ctl-lost", "-o", ready], "Running True");
        let node = node.to_str().expect("path");
        kubectl(&kc, &["create", "--raw", "/kube-sim/lose-node", "-f", node]);
        kubectl_until(
            &kc,
            &["get", "node", "kube-sim-node", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].effect}"],
            "Unknown NoSchedule NoExecute",
        );
        kubectl_until(&kc, &["get", "pod", "ctl-lost", "-o", ready], "Running False");
        kubectl_until(
            &kc,
            &["get", "pod", "ctl-lost", "-o", "jsonpath={.status.phase} {.status.reason} {.metadata.deletionGracePeriodSeconds}"],
            "Running NodeLost 5",
        );
        kubectl(&kc, &["create", "--raw", "/kube-sim/restore-node", "-f", node]);
        // Its kubelet, back, confirms the deletion.
        kubectl_until(&kc, &["get", "pods", "-o", "name"], "");
    })
    .await
    .expect("kubectl steps");
}

const OWNED_MANIFESTS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: ctl-owner
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: [sleep, '600']
---
apiVersion: v1
kind: Secret
metadata:
  name: ctl-owned
type: Opaque
data: {TOKEN: czNjcmV0}
---
apiVersion: v1
kind: Secret
metadata:
  name: ctl-unowned
type: Opaque
data: {TOKEN: czNjcmV0}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_kubectl, ignore = "kubectl is not installed")]
async fn kubectl_sees_a_secret_owned_by_a_pod_collected_with_it_and_json_patches_tested() {
    let sim = common::start(|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let manifest = dir.path().join("owned.yaml");
    std::fs::write(&manifest, OWNED_MANIFESTS).expect("manifest");
    tokio::task::spawn_blocking(move || {
        kubectl(&kc, &["create", "-f", manifest.to_str().expect("path")]);
        let uid = text(&kubectl(
            &kc,
            &["get", "pod", "ctl-owner", "-o", "jsonpath={.metadata.uid}"],
        ));
        let owner = serde_json::json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "ctl-owner", "uid": uid}
        ]}});
        kubectl(
            &kc,
            &["patch", "secret", "ctl-owned", "--type", "merge", "-p", &owner.to_string()],
        );
        let owners = "jsonpath={.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}/{.metadata.ownerReferences[*].uid}";
        let shown = text(&kubectl(&kc, &["get", "secret", "ctl-owned", "-o", owners]));
        assert_eq!(shown, format!("Pod/ctl-owner/{uid}"));
        // `delete` waits until the pod is removed; the collector follows.
        kubectl(&kc, &["delete", "pod", "ctl-owner"]);
        kubectl_until(&kc, &["get", "secrets", "-o", "name"], "secret/ctl-unowned");
        // A JSON patch applies only when its tests hold.
        let add = r#"{"op": "add", "path": "/data/MORE", "value": "bW9yZQ=="}"#;
        let refused = kubectl_output(
            &kc,
            &["patch", "secret", "ctl-unowned", "--type", "json", "-p",
              &format!(r#"[{{"op": "test", "path": "/type", "value": "other"}}, {add}]"#)],
        );
        assert!(!refused.status.success(), "{}", text(&refused));
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(why.contains("testing value /type failed"), "{why}");
        kubectl(
            &kc,
            &["patch", "secret", "ctl-unowned", "--type", "json", "-p",
              &format!(r#"[{{"op": "test", "path": "/type", "value": "Opaque"}}, {add}]"#)],
        );
        let data = text(&kubectl(&kc, &["get", "secret", "ctl-unowned", "-o", "jsonpath={.data.MORE}"]));
        assert_eq!(data, "bW9yZQ==");
        // An owner reference to a pod that is gone already is collected at once.
        kubectl(
            &kc,
            &["patch", "secret", "ctl-unowned", "--type", "merge", "-p", &owner.to_string()],
        );
        kubectl_until(&kc, &["get", "secrets", "-o", "name"], "");
    })
    .await
    .expect("kubectl steps");
}
