//! Jobs run as pods on kube-sim (a Kubernetes API server whose kubelet runs each
//! pod's command as a local process), end to end over a real nats-server, the
//! worker talking to the API under the Role the project ships, beyond what
//! every backend does (`conformance`): the pod's manifest, startup failures,
//! one pod per job, faults of the API, ends the cluster reports (OOM kills, a
//! deadline; lost nodes are `k8s_nodes`'), the orphan sweep, and what jobs cost in API requests.

use crate::common::docker::unique;
use crate::common::k8s::{
    Cluster, PATIENCE, in_pod, k8s_worker, launch_until_ready, spawn_k8s_worker, wait_for_file,
};
use crate::common::system::{
    System, assert_lost_after_running, assert_well_formed, log_path, states,
};
use flare_launcher::config::values::JobLimits;
use flare_launcher::protocol::{LaunchRequest, Mount, Resources, Timeouts};
use flare_launcher::state::JobState;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube_sim::{ContainerName, ErrorFault, Faults};
use serde_json::json;
use std::time::Duration;

async fn k8s_system(cluster: &Cluster) -> System {
    System::start_with(|config| k8s_worker(config, cluster)).await
}

#[tokio::test]
async fn the_pod_carries_gpus_every_claim_secrets_and_labels() {
    let cluster = Cluster::start(|_| {}).await;
    cluster
        .create_claims_and_secrets(&["data", "models"], &["creds"])
        .await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.k8s.allowed_claims = vec!["data".into(), "models".into()];
        config.k8s.allowed_secrets = vec!["creds".into()];
    })
    .await;
    let job_id = unique("manifest");
    let mut request = in_pod(&job_id, "sleep 600");
    request.site = Some("site-1".into());
    request.resources = Some(Resources {
        gpus: Some(1),
        cpus: Some(0.5),
        memory_mb: Some(64),
        ..Resources::default()
    });
    let mount = |source: &str, target: &str| Mount {
        source: source.into(),
        target: target.into(),
        read_only: false,
    };
    request.mounts = vec![
        mount("pvc:data", "/data"),
        mount("pvc:models", "/models"),
        mount("secret:creds", "/run/creds"),
    ];
    request.labels.insert("nvflare-job-id".into(), "abc".into());
    request.timeouts = Some(Timeouts {
        start_s: Some(60),
        run_s: Some(3600),
    });
    system.client.launch(&request).await.unwrap();
    system
        .events_until(&job_id, |e| e.state == JobState::Running)
        .await;
    let pods = cluster.pods_of(&job_id).await;
    assert_eq!(pods.len(), 1);
    let pod = serde_json::to_value(&pods[0]).unwrap();
    assert_eq!(pod["metadata"]["name"], format!("flare-site-1-{job_id}"));
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "flare-launcher");
    assert_eq!(labels["app.kubernetes.io/name"], "flare-launcher-job");
    assert_eq!(labels["flare-launcher/site"], "site-1");
    assert_eq!(labels["flare-launcher/pool"], "default");
    assert_eq!(labels["flare-launcher/worker"], "w1");
    assert_eq!(labels["nvflare-job-id"], "abc");
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], 3660);
    let limits = &spec["containers"][0]["resources"]["limits"];
    assert_eq!(limits["nvidia.com/gpu"], "1");
    assert_eq!(limits["cpu"], "500m");
    assert_eq!(limits["memory"], "64Mi");
    let claims: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .collect();
    assert_eq!(claims, ["data", "models"]);
    let secrets: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(secrets, ["creds"]);
    let paths: Vec<&str> = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/data", "/models", "/run/creds"]);
    system.client.terminate(&job_id, Some(0)).await.unwrap();
    let events = system.events_until_terminal(&job_id).await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
}

#[tokio::test]
async fn the_api_server_holds_the_pod_locked_down_with_what_the_site_gives_back() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.k8s.cap_add = vec!["NET_BIND_SERVICE".parse().unwrap()];
        config.k8s.read_only_root = true;
        config.k8s.default_limits = JobLimits {
            memory_mb: Some(96),
            cpus: Some(0.25),
        };
    })
    .await;
    let job_id = unique("locked");
    system
        .client
        .launch(&in_pod(&job_id, "sleep 600"))
        .await
        .unwrap();
    system
        .events_until(&job_id, |e| e.state == JobState::Running)
        .await;
    let pods = cluster.pods_of(&job_id).await;
    let pod = serde_json::to_value(&pods[0]).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    let container = &spec["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "readOnlyRootFilesystem": true,
        })
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "250m", "memory": "96Mi"})
    );
    system.client.terminate(&job_id, Some(0)).await.unwrap();
    let events = system.events_until_terminal(&job_id).await;
    assert_eq!(events.last().unwrap().state, JobState::Terminated);
}

#[tokio::test]
async fn an_unpullable_image_ends_in_error_with_the_kubelets_reason() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("pull");
    let mut request = in_pod(&job_id, "true");
    request.image = Some("registry.example/unpullable:1".into());
    let events = system.run(&request).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.return_code, Some(104));
    assert!(
        matches!(
            last.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "{last:?}"
    );
    assert!(
        last.message.as_deref().unwrap().contains("unpullable"),
        "{last:?}"
    );
    cluster.wait_until_deleted(&job_id).await;
}

/// A pod that mounts a secret that does not exist: bound to a node, it waits.
/// The secret no cluster holds.
pub const MISSING_SECRET: &str = "missing";

/// A request whose pod waits for a secret that never comes (the worker must
/// allow [`MISSING_SECRET`]).
pub fn needing_a_missing_secret(job_id: &str) -> LaunchRequest {
    let mut request = in_pod(job_id, "true");
    request.mounts = vec![Mount {
        source: format!("secret:{MISSING_SECRET}"),
        target: "/run/missing".into(),
        read_only: true,
    }];
    request
}

#[tokio::test]
async fn an_unschedulable_gpu_request_and_a_missing_secret_end_in_error_at_start_s() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.k8s.allowed_secrets = vec![MISSING_SECRET.into()];
    })
    .await;
    let timeouts = Some(Timeouts {
        start_s: Some(2),
        run_s: None,
    });
    let gpus = unique("gpus");
    let mut request = in_pod(&gpus, "true");
    request.resources = Some(Resources {
        gpus: Some(64),
        ..Resources::default()
    });
    request.timeouts = timeouts.clone();
    system.client.launch(&request).await.unwrap();
    let secret = unique("secret");
    let mut request = needing_a_missing_secret(&secret);
    request.timeouts = timeouts;
    system.client.launch(&request).await.unwrap();

    let events = system.events_until_terminal(&gpus).await;
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("Unschedulable"), "{last:?}");
    assert!(
        last.message.as_deref().unwrap().contains("nvidia.com/gpu"),
        "{last:?}"
    );
    let events = system.events_until_terminal(&secret).await;
    assert_eq!(states(&events), ["starting", "error"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("FailedMount"), "{last:?}");
    assert!(
        last.message.as_deref().unwrap().contains("missing"),
        "{last:?}"
    );
    cluster.wait_until_deleted(&gpus).await;
    cluster.wait_until_deleted(&secret).await;
}

#[tokio::test]
async fn a_repeated_launch_makes_one_pod() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("dup");
    let go = system.path("go");
    let request = in_pod(
        &job_id,
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    );
    system.client.launch(&request).await.unwrap();
    system
        .events_until(&job_id, |e| e.state == JobState::Running)
        .await;
    system.client.launch(&request).await.unwrap();
    system.wait_until_intake_idle().await;
    assert_eq!(cluster.pods_of(&job_id).await.len(), 1);
    std::fs::write(&go, "").unwrap();
    let events = system.events_until_terminal(&job_id).await;
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    assert_eq!(cluster.request_count("create", "pods"), 1);
}

#[tokio::test]
async fn pods_no_job_claims_are_deleted_after_the_grace_period() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.orphan_grace = Duration::from_secs(2);
    })
    .await;
    let worker = system.config.worker_id.clone();
    // A job that runs on: its pod is claimed.
    let runs = unique("runs");
    system
        .launch_until_running(&in_pod(&runs, "sleep 600"))
        .await;
    // No record claims this one (the API made it, and the call failed).
    let orphan = unique("orphan");
    cluster
        .create_pod_by_hand(&system, &in_pod(&orphan, "sleep 600"), &worker)
        .await;
    // Another worker's pod is not this worker's to sweep.
    let foreign = unique("foreign");
    let foreign_request = in_pod(&foreign, "sleep 600");
    cluster
        .create_pod_by_hand(&system, &foreign_request, "another-worker")
        .await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cluster.pods_of(&orphan).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan pod was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cluster.pods_of(&foreign).await.len(), 1, "another worker's");
    assert_eq!(cluster.pods_of(&runs).await.len(), 1, "a running job's");
    system.client.terminate(&runs, Some(0)).await.unwrap();
    let events = system.events_until_terminal(&runs).await;
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
}

#[tokio::test]
async fn labels_kubernetes_refuses_end_the_job_as_an_invalid_request() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("label");
    let mut request = in_pod(&job_id, "true");
    request
        .labels
        .insert("nvflare-site".into(), "not a label value".into());
    let events = system.run(&request).await;
    assert_eq!(states(&events), ["starting", "error"]);
    assert_eq!(events[1].reason.as_deref(), Some("InvalidRequest"));
    assert_eq!(cluster.request_count("create", "pods"), 0);
}

/// 20 ms of latency on every request, watches dropped after every
/// `watch_drop_after` events, and `code` for the next 3 requests with `verb` on
/// `resource`.
fn faults(code: u16, verb: &str, resource: &str, watch_drop_after: u64) -> Faults {
    Faults {
        latency_ms: 20,
        error: Some(ErrorFault {
            code,
            retry_after_seconds: 1,
            count: Some(3),
            verb: Some(verb.into()),
            resource: Some(resource.into()),
        }),
        watch_drop_after: Some(watch_drop_after),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_429s_500s_latency_and_watch_drops_lose_no_change() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    cluster
        .sim
        .set_faults(faults(500, "create", "pods", 2))
        .unwrap();
    let jobs: Vec<(String, i32)> = (0..6)
        .map(|i| (unique(&format!("fault{i}")), if i % 2 == 0 { 0 } else { 3 }))
        .collect();
    for (job_id, code) in &jobs {
        system
            .client
            .launch(&in_pod(job_id, &format!("echo {job_id}; exit {code}")))
            .await
            .unwrap();
    }
    for (job_id, code) in &jobs {
        if *job_id == jobs[2].0 {
            // Throttling from here on, on reads of output.
            cluster
                .sim
                .set_faults(faults(429, "get", "pods/log", 1))
                .unwrap();
        }
        let events = system.events_until_terminal(job_id).await;
        assert_well_formed(&events);
        assert_eq!(
            states(&events),
            [
                "starting",
                "running",
                if *code == 0 { "succeeded" } else { "failed" }
            ],
            "{job_id}: {events:?}"
        );
        assert_eq!(events.last().unwrap().exit_code, Some(*code));
        let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
        assert_eq!(log, format!("{job_id}\n"));
    }
    cluster.sim.set_faults(Faults::default()).unwrap();
    for (job_id, _) in &jobs {
        cluster.wait_until_deleted(job_id).await;
    }
}

/// A fault answering every `verb` request on pods with a 500.
fn failing(verb: &str) -> ErrorFault {
    ErrorFault {
        code: 500,
        retry_after_seconds: 1,
        count: None,
        verb: Some(verb.into()),
        resource: Some("pods".into()),
    }
}

/// Closes the worker's watch and keeps it from opening again while the pod of
/// `job_id` is deleted (and, with `replacement`, made again); then compacts,
/// so that the watch must re-list, and leaves `faults` in force.
async fn change_the_pod_while_the_watch_is_down(
    cluster: &Cluster,
    job_id: &str,
    replacement: Option<(&System, &str)>,
    faults: Faults,
) {
    // The watch closes at the next change and cannot open again...
    cluster
        .sim
        .set_faults(Faults {
            error: Some(failing("watch")),
            watch_drop_after: Some(0),
            ..Faults::default()
        })
        .unwrap();
    let watches = cluster.request_count("watch", "pods");
    let client = cluster.client().await;
    let other: Api<ConfigMap> = Api::namespaced(client, "default");
    let change = serde_json::from_value(json!({"metadata": {"name": unique("change")}})).unwrap();
    other.create(&PostParams::default(), &change).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster.request_count("watch", "pods") == watches {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... while the pod goes.
    let pods = cluster.pods().await;
    pods.delete(
        &format!("flare-{job_id}"),
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    cluster.wait_until_deleted(job_id).await;
    if let Some((system, worker)) = replacement {
        cluster
            .create_pod_by_hand(system, &in_pod(job_id, "sleep 600"), worker)
            .await;
    }
    cluster.sim.compact();
    cluster.sim.set_faults(faults).unwrap();
}

/// The job's events once it ended `lost`, with `why` in its message.
async fn assert_lost(system: &System, job_id: &str, why: &str) {
    // The read of a pod a re-list lacked may take a minute before it gives up.
    let events = system
        .events_until_terminal_within(job_id, Duration::from_secs(150))
        .await;
    assert_lost_after_running(&events, "WorkloadVanished", why);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_a_relist_lacks_that_cannot_be_read_ends_its_job_lost() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("unread");
    launch_until_ready(&system, &job_id).await;
    // The re-list lacks the pod, and reading it fails for good.
    let get_fails = Faults {
        error: Some(failing("get")),
        ..Faults::default()
    };
    change_the_pod_while_the_watch_is_down(&cluster, &job_id, None, get_fails).await;
    assert_lost(&system, &job_id, "could not be read").await;
    assert!(cluster.request_count("get", "pods") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_replaced_while_the_watch_was_down_ends_its_job_lost() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("replaced");
    launch_until_ready(&system, &job_id).await;
    let worker = system.config.worker_id.clone();
    let replacement = Some((&system, worker.as_str()));
    change_the_pod_while_the_watch_is_down(&cluster, &job_id, replacement, Faults::default()).await;
    assert_lost(&system, &job_id, "replaced").await;
    // The replacement is no job's: the sweep, not the job, deletes it.
    assert_eq!(cluster.pods_of(&job_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_cost_no_requests_in_steady_state() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.max_jobs = 100;
    })
    .await;
    let go = system.path("go");
    let jobs: Vec<String> = (0..40).map(|i| unique(&format!("idle{i}"))).collect();
    for job_id in &jobs {
        let script = format!("while [ ! -e {} ]; do sleep 0.2; done", go.display());
        system
            .client
            .launch(&in_pod(job_id, &script))
            .await
            .unwrap();
    }
    for job_id in &jobs {
        system
            .events_until(job_id, |e| e.state == JobState::Running)
            .await;
    }
    let before = cluster.requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.requests(), before, "no request while the pods run");
    std::fs::write(&go, "").unwrap();
    for job_id in &jobs {
        let events = system.events_until_terminal(job_id).await;
        assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    }
    // Per job: one create, one log read, one delete; plus the watch's list
    // and watch requests and the start-up list, whatever the number of pods.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster.request_count("delete", "pods") < jobs.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            cluster.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = jobs.len() as u64;
    assert_eq!(cluster.request_count("create", "pods"), n);
    assert_eq!(cluster.request_count("get", "pods/log"), n);
    assert_eq!(cluster.request_count("delete", "pods"), n);
    let shared = cluster.request_count("list", "pods") + cluster.request_count("watch", "pods");
    assert!(shared <= 6, "{:?}", cluster.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_launches_keeps_to_the_limit_of_requests_in_flight() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| {
        k8s_worker(config, &cluster);
        config.max_jobs = 100;
    })
    .await;
    // A slow API server: without a limit, every launch would be a request
    // waiting at once.
    cluster
        .sim
        .set_faults(Faults {
            latency_ms: 200,
            ..Faults::default()
        })
        .unwrap();
    let jobs: Vec<String> = (0..80).map(|i| unique(&format!("burst{i}"))).collect();
    for job_id in &jobs {
        system.client.launch(&in_pod(job_id, "true")).await.unwrap();
    }
    for job_id in &jobs {
        let events = system.events_until_terminal(job_id).await;
        assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    }
    let peak = cluster.sim.peak_in_flight();
    let limit = flare_launcher::backend::k8s::MAX_REQUESTS_IN_FLIGHT as u64;
    assert!(peak <= limit, "{peak} requests in flight at once");
    // The launches did overlap: the limit was put to the test.
    assert!(peak >= limit / 4, "only {peak} requests in flight at once");
    cluster.sim.set_faults(Faults::default()).unwrap();
}

#[tokio::test]
async fn a_container_killed_for_its_memory_fails_with_oomkilled() {
    let cluster = Cluster::start(|_| {}).await;
    let system = k8s_system(&cluster).await;
    let job_id = unique("oom");
    launch_until_ready(&system, &job_id).await;
    cluster
        .sim
        .oom_kill(&ContainerName {
            namespace: "default".into(),
            pod: format!("flare-{job_id}"),
            container: "job".into(),
        })
        .expect("the job's container runs");
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"), "{last:?}");
    assert_eq!(
        (last.exit_code, last.return_code),
        (Some(137), Some(1)),
        "{last:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "ready\n");
    cluster.wait_until_deleted(&job_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_its_deadline_while_its_worker_is_away_ends_terminated() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::without_worker(|_| {}).await;
    let worker_id = unique("away");
    let mut worker = spawn_k8s_worker(&system, &cluster, &worker_id);
    let job_id = unique("deadline");
    let ready = system.path("ready");
    let mut request = in_pod(
        &job_id,
        &format!(
            "trap 'exit 0' TERM; echo ready; touch {}; while true; do sleep 0.1; done",
            ready.display()
        ),
    );
    // activeDeadlineSeconds 3: start_s + run_s.
    request.timeouts = Some(Timeouts {
        start_s: Some(2),
        run_s: Some(1),
    });
    system.launch_until_running(&request).await;
    wait_for_file(&ready).await;
    // Away before run_s runs out: only the pod's deadline stops it.
    worker.kill().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pods = cluster.pods_of(&job_id).await;
        let status = pods[0].status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Failed") {
            assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _worker = spawn_k8s_worker(&system, &cluster, &worker_id);
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    let last = events.last().unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.return_code),
        (Some("DeadlineExceeded"), Some(9)),
        "{last:?}"
    );
    // The kubelet signals the whole process group: the shell may report its
    // child's end too.
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert!(log.starts_with("ready\n"), "{log:?}");
    cluster.wait_until_deleted(&job_id).await;
}

#[tokio::test]
async fn the_deploy_manifests_apply_with_kubectl() {
    let cluster = Cluster::start(|_| {}).await;
    let admin_kubeconfig = tempfile::NamedTempFile::new().unwrap();
    cluster
        .sim
        .write_kubeconfig(admin_kubeconfig.path())
        .unwrap();
    // The shipped RBAC is loaded already: apply the whole folder over it.
    let applied = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(admin_kubeconfig.path())
        .args(["apply", "--validate=false", "-n", "default", "-f"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s"))
        .output()
        .await
        .expect("kubectl runs");
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        applied.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    for applied in [
        "serviceaccount/flare-launcher",
        "role.rbac.authorization.k8s.io/flare-launcher",
        "rolebinding.rbac.authorization.k8s.io/flare-launcher",
        "clusterrole.rbac.authorization.k8s.io/flare-launcher-nodes",
        "clusterrolebinding.rbac.authorization.k8s.io/flare-launcher-nodes",
        "secret/flare-launcher-nats",
        "deployment.apps/flare-launcher",
        "poddisruptionbudget.policy/flare-launcher",
    ] {
        assert!(out.contains(applied), "{applied} in {out}");
    }
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        Api::namespaced(cluster.client().await, "default")
            .get("flare-launcher")
            .await
            .expect("the deployment is there");
    let template = deployment.spec.unwrap().template;
    let spec = template.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("flare-launcher"));
    // The disruption budget covers the workers, one at a time.
    let budget: PodDisruptionBudget = Api::namespaced(cluster.client().await, "default")
        .get("flare-launcher")
        .await
        .expect("the budget is there");
    let budget = budget.spec.unwrap();
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    let labels = template.metadata.unwrap().labels.unwrap();
    let selected = budget.selector.unwrap().match_labels.unwrap();
    assert!(
        !selected.is_empty() && selected.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the budget selects {selected:?}, not the workers ({labels:?})"
    );
    // Jobs run under that Role in every other test of this file; here, a job
    // through a worker as that service account, end to end.
    let system = k8s_system(&cluster).await;
    let events = system.run(&in_pod(&unique("sa"), "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
}
