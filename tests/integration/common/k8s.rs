//! kube-sim for the Kubernetes tests: a simulated cluster per test (its kubelet
//! runs each pod's command as a local process, so a pod and the test share the
//! file system), a kubeconfig file for the worker, a client to look at pods, and
//! builders for requests and worker configurations.

use super::system::System;
use flare_launcher::backend::container::ContainerSettings;
use flare_launcher::backend::k8s::K8sBackend;
use flare_launcher::config::{K8sArgs, WorkerConfig};
use flare_launcher::protocol::{BackendKind, BackendRef, JobRecord, LaunchRequest};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Config, KubeSim, UserConfig};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The image every pod names (kube-sim pulls any image but `unpullable` ones).
pub const TEST_IMAGE: &str = "flare-launcher-test:1";

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The user the worker talks to kube-sim as: the service account the project
/// ships (`deploy/k8s/`), bound to its Role and its ClusterRole (nodes) and
/// nothing else, so a request they do not allow fails the test.
pub const WORKER_USER: &str = "system:serviceaccount:default:flare-launcher";
const WORKER_TOKEN: &str = "flare-launcher-worker-token";

/// A second user of the cluster, for a second worker (or a second generation
/// of workers) whose requests are counted apart from the first's.
pub const SECOND_USER: &str = "flare-launcher-second";
const SECOND_TOKEN: &str = "flare-launcher-second-token";

/// The folder of the shipped manifests.
pub const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");

/// The shipped RBAC files kube-sim loads at start: the Role and its binding,
/// and, with `nodes`, the ClusterRole that reads nodes and its binding (a copy
/// in `dir` naming the tests' namespace, `default`, for the shipped `flare`).
pub fn shipped_rbac(dir: &std::path::Path, nodes: bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["role.yaml", "rolebinding.yaml"]
        .iter()
        .map(|file| PathBuf::from(DEPLOY).join(file))
        .collect();
    if nodes {
        let binding =
            std::fs::read_to_string(PathBuf::from(DEPLOY).join("clusterrolebinding.yaml"))
                .expect("the shipped ClusterRoleBinding");
        let ours = binding.replace("namespace: flare", "namespace: default");
        assert_ne!(ours, binding, "the shipped binding names its namespace");
        let copy = dir.join("clusterrolebinding.yaml");
        std::fs::write(&copy, ours).expect("the binding's copy");
        files.push(PathBuf::from(DEPLOY).join("clusterrole.yaml"));
        files.push(copy);
    }
    files
}

/// A running kube-sim and the worker's kubeconfig file.
pub struct Cluster {
    pub sim: KubeSim,
    /// The worker's kubeconfig.
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster on the defaults, with `edit` applied; the worker may read
    /// nodes.
    pub async fn start(edit: impl FnOnce(&mut Config)) -> Cluster {
        Cluster::start_with_rbac(true, edit).await
    }

    /// A cluster on the defaults, with `edit` applied; the worker may read
    /// nodes only if `nodes`.
    pub async fn start_with_rbac(nodes: bool, edit: impl FnOnce(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            // Quick pull retries keep the back-off reasons coming.
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            users: vec![UserConfig {
                name: WORKER_USER.into(),
                token: WORKER_TOKEN.into(),
            }],
            rbac_files: shipped_rbac(dir.path(), nodes),
            ..Config::default()
        };
        edit(&mut config);
        let sim = KubeSim::start(config).await.expect("kube-sim starts");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig_for(WORKER_USER, WORKER_TOKEN))
            .expect("kubeconfig written");
        Cluster {
            sim,
            kubeconfig,
            _dir: dir,
        }
    }

    /// A cluster on the defaults (the worker may read nodes) that also knows
    /// [`SECOND_USER`], bound to the shipped Role (and, with `nodes`, to the
    /// shipped ClusterRole that reads nodes); and that user's kubeconfig, in
    /// `dir`.
    pub async fn start_with_second_user(dir: &std::path::Path, nodes: bool) -> (Cluster, PathBuf) {
        let cluster = Cluster::start(|config| {
            config.users.push(UserConfig {
                name: SECOND_USER.into(),
                token: SECOND_TOKEN.into(),
            });
        })
        .await;
        let subjects =
            json!([{"kind": "User", "name": SECOND_USER, "apiGroup": "rbac.authorization.k8s.io"}]);
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "flare-launcher-second"},
            "subjects": subjects,
            "roleRef": {"kind": "Role", "name": "flare-launcher", "apiGroup": "rbac.authorization.k8s.io"},
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(cluster.client().await, "default")
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding created");
        if nodes {
            let binding: ClusterRoleBinding = serde_json::from_value(json!({
                "metadata": {"name": "flare-launcher-nodes-second"},
                "subjects": subjects,
                "roleRef": {"kind": "ClusterRole", "name": "flare-launcher-nodes", "apiGroup": "rbac.authorization.k8s.io"},
            }))
            .unwrap();
            Api::<ClusterRoleBinding>::all(cluster.client().await)
                .create(&PostParams::default(), &binding)
                .await
                .expect("cluster binding created");
        }
        let kubeconfig = dir.join("second-kubeconfig");
        std::fs::write(
            &kubeconfig,
            cluster.sim.kubeconfig_for(SECOND_USER, SECOND_TOKEN),
        )
        .unwrap();
        (cluster, kubeconfig)
    }

    /// A client of the admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::from_yaml(&self.sim.kubeconfig()).expect("kubeconfig parses");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("client builds")
    }

    /// Creates the claims and secrets named in `default`, as the admin.
    pub async fn create_claims_and_secrets(&self, claims: &[&str], secrets: &[&str]) {
        let admin = self.client().await;
        for claim in claims {
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }))
            .unwrap();
            Api::<PersistentVolumeClaim>::namespaced(admin.clone(), "default")
                .create(&PostParams::default(), &pvc)
                .await
                .expect("claim created");
        }
        for secret in secrets {
            let secret: Secret = serde_json::from_value(
                json!({"metadata": {"name": secret}, "stringData": {"k": "v"}}),
            )
            .unwrap();
            Api::<Secret>::namespaced(admin.clone(), "default")
                .create(&PostParams::default(), &secret)
                .await
                .expect("secret created");
        }
    }

    /// The pods in `default`.
    pub async fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client().await, "default")
    }

    /// The pods of `job_id`, whatever their state.
    pub async fn pods_of(&self, job_id: &str) -> Vec<Pod> {
        self.pods()
            .await
            .list(&ListParams::default().labels(&format!("flare-launcher/job-id={job_id}")))
            .await
            .expect("pods listed")
            .items
    }

    /// Creates the pod `worker` would make for `request` on `system`, as a
    /// worker would: what a worker that died between creating a pod and
    /// recording it leaves.
    pub async fn create_pod_by_hand(&self, system: &System, request: &LaunchRequest, worker: &str) {
        let manifest = flare_launcher::backend::k8s::manifest::pod(
            request,
            &flare_launcher::backend::GpuAssignment::Unaccounted,
            "img",
            &flare_launcher::backend::k8s::manifest::Owner {
                worker,
                pool: "default",
                namespace: "default",
            },
            &system.config.k8s,
            &serde_json::json!({}),
        )
        .unwrap();
        self.pods()
            .await
            .create(
                &kube::api::PostParams::default(),
                &serde_json::from_value(manifest).unwrap(),
            )
            .await
            .expect("pod created");
    }

    /// Waits until `job_id` has no pod left.
    pub async fn wait_until_deleted(&self, job_id: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.pods_of(job_id).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pod of {job_id} was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker's requests so far, by (verb, resource).
    pub fn requests(&self) -> Vec<(String, String, u64)> {
        self.sim
            .requests()
            .into_iter()
            .filter(|count| count.user == WORKER_USER)
            .map(|count| (count.verb, count.resource, count.count))
            .collect()
    }

    /// How many requests the worker made with `verb` on `resource`.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|(v, r, _)| v == verb && r == resource)
            .map(|(_, _, count)| count)
            .sum()
    }
}

/// A configuration of a worker with only the Kubernetes backend on `cluster`.
pub fn k8s_worker(config: &mut WorkerConfig, cluster: &Cluster) {
    config.backend = BackendKind::K8s;
    config.backends = vec![BackendKind::K8s];
    config.k8s.kubeconfig = Some(cluster.kubeconfig.clone());
}

/// A request running `sh -c SCRIPT` in a pod.
pub fn in_pod(job_id: &str, script: &str) -> LaunchRequest {
    let mut request = LaunchRequest::new(job_id, vec!["sh".into(), "-c".into(), script.into()]);
    request.image = Some(TEST_IMAGE.into());
    request.backend = Some(BackendKind::K8s);
    request
}

/// Waits until `path` exists (a pod's process made it).
pub async fn wait_for_file(path: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Launches `job_id` as a pod that prints `ready`, makes a file and then runs
/// until it is stopped; returns once it runs and the file is there.
pub async fn launch_until_ready(system: &System, job_id: &str) {
    let ready = system.path(&format!("{job_id}-ready"));
    let script = format!(
        "echo ready; touch {}; while true; do sleep 0.1; done",
        ready.display()
    );
    system.launch_until_running(&in_pod(job_id, &script)).await;
    wait_for_file(&ready).await;
}

/// A worker with only the Kubernetes backend on `cluster`, as a process of its
/// own (killed when dropped), its data in the system's `data`.
pub fn spawn_k8s_worker(
    system: &System,
    cluster: &Cluster,
    worker_id: &str,
) -> tokio::process::Child {
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let env = [
        ("FLARE_BACKEND", "k8s"),
        ("FLARE_KUBECONFIG", kubeconfig.as_str()),
    ];
    system.spawn_worker_process(worker_id, &system.path("data"), &env)
}

/// A Kubernetes backend of `worker` on the cluster of `kubeconfig`, driven
/// directly (no worker around it), its job logs under `logs`.
pub async fn k8s_backend(
    kubeconfig: &std::path::Path,
    worker: &str,
    logs: &std::path::Path,
) -> K8sBackend {
    let mut config = K8sArgs::default().config();
    config.kubeconfig = Some(kubeconfig.to_owned());
    K8sBackend::start(ContainerSettings {
        log_dir: logs.join(worker),
        worker_id: worker.into(),
        pool: "default".into(),
        labels: Default::default(),
        worker_secrets: Vec::new(),
        metrics: std::sync::Arc::new(flare_launcher::observe::Metrics::new(1)),
        config,
    })
    .await
    .expect("the backend starts")
}

/// The record the worker `first` keeps of `job_id` in `state`, its workload
/// `backend_ref` (none: the worker went before it made a pod).
pub fn k8s_record(job_id: &str, state: &str, backend_ref: Option<&BackendRef>) -> JobRecord {
    serde_json::from_value(json!({
        "job_id": job_id, "state": state, "return_code": null, "exit_code": null,
        "reason": null, "message": null, "worker": "first", "backend": "k8s", "site": null,
        "seq": 2, "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:01Z",
        "backend_ref": backend_ref,
    }))
    .unwrap()
}
