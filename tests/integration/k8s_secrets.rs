//! A job's `secret_env` on kube-sim, the worker under the shipped Role: the
//! job sees each value as an ordinary variable, read from a Secret of its own
//! that its pod owns; the pod, as the API server holds it, carries no value;
//! the Secret is gone once the job's pod is; one left without an owner goes
//! when the job ends, or when an adoption finds no pod; one a launch that
//! did not finish left is reused; one of that name someone else made is left
//! as it is (the launch fails); the worker may not read secrets.

use crate::common::docker::unique;
use crate::common::k8s::{Cluster, PATIENCE, in_pod, k8s_backend, k8s_record, k8s_worker};
use crate::common::system::System;
use flare_launcher::backend::Backend;
use flare_launcher::protocol::LaunchRequest;
use flare_launcher::state::JobState;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{ErrorFault, Faults};
use serde_json::{Value, json};
use std::time::Duration;

/// The value the job is given, which nothing but the Secret may hold.
const VALUE: &str = "s3cret-9f1c7e";

/// A job that exits 0 only if `FLARE_TOKEN` holds [`VALUE`] (read from a
/// file, so that its command does not hold it), once `go` exists.
fn checking_job(system: &System, job_id: &str) -> LaunchRequest {
    let expected = system.path(&format!("{job_id}-expected"));
    std::fs::write(&expected, VALUE).unwrap();
    let go = system.path(&format!("{job_id}-go"));
    let script = format!(
        "[ \"$FLARE_TOKEN\" = \"$(cat {})\" ] || exit 7; while [ ! -e {} ]; do sleep 0.1; done",
        expected.display(),
        go.display()
    );
    let mut request = in_pod(job_id, &script);
    request
        .secret_env
        .insert("FLARE_TOKEN".into(), VALUE.into());
    request
}

/// Lets the job of [`checking_job`] end, and asserts it succeeded.
async fn finish(system: &System, job_id: &str) {
    std::fs::write(system.path(&format!("{job_id}-go")), "").unwrap();
    let events = system.events_until_terminal(job_id).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.exit_code),
        (JobState::Succeeded, Some(0)),
        "{last:?}"
    );
}

async fn secrets(cluster: &Cluster) -> Api<Secret> {
    Api::namespaced(cluster.client().await, "default")
}

/// Waits until Secret `name` is gone.
async fn wait_until_gone(cluster: &Cluster, name: &str) {
    let api = secrets(cluster).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "secret {name} was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_jobs_environment_through_a_secret_its_pod_owns_never_the_pod() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("secret");
    system
        .launch_until_running(&checking_job(&system, &job_id))
        .await;
    let pods = cluster.pods_of(&job_id).await;
    assert_eq!(pods.len(), 1);
    let pod: Value = serde_json::to_value(&pods[0]).unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(!pod.to_string().contains(VALUE), "{pod}");
    assert_eq!(
        pod["spec"]["containers"][0]["env"],
        json!([{"name": "FLARE_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "FLARE_TOKEN"}}}])
    );
    let secret = serde_json::to_value(secrets(&cluster).await.get(name).await.unwrap()).unwrap();
    assert_eq!(secret["type"], "Opaque");
    let data = secret["data"]["FLARE_TOKEN"].as_str().unwrap();
    let decoded: k8s_openapi::ByteString = serde_json::from_value(json!(data)).unwrap();
    assert_eq!(decoded.0, VALUE.as_bytes());
    let labels = &secret["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "flare-launcher");
    assert_eq!(labels["flare-launcher/job-id"], job_id);
    assert_eq!(labels["flare-launcher/worker"], "w1");
    assert_eq!(labels["flare-launcher/pool"], "default");
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}])
    );
    finish(&system, &job_id).await;
    cluster.wait_until_deleted(&job_id).await;
    wait_until_gone(&cluster, name).await;
    for verb in ["create", "patch", "delete"] {
        assert_eq!(
            cluster.request_count(verb, "secrets"),
            1,
            "{verb}: {:?}",
            cluster.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_whose_owner_cannot_be_set_is_deleted_when_the_job_ends() {
    let cluster = Cluster::start(|_| {}).await;
    cluster
        .sim
        .set_faults(Faults {
            error: Some(ErrorFault {
                code: 403,
                retry_after_seconds: 1,
                count: None,
                verb: Some("patch".into()),
                resource: Some("secrets".into()),
            }),
            ..Faults::default()
        })
        .unwrap();
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("unowned");
    system
        .launch_until_running(&checking_job(&system, &job_id))
        .await;
    let pod = cluster.pods_of(&job_id).await.remove(0);
    let name = pod.metadata.name.unwrap();
    let secret = secrets(&cluster).await.get(&name).await.unwrap();
    assert_eq!(secret.metadata.owner_references, None);
    finish(&system, &job_id).await;
    wait_until_gone(&cluster, &name).await;
}

/// Makes Secret `name` holding a stale `FLARE_TOKEN`, with `labels`.
async fn make_secret(cluster: &Cluster, name: &str, labels: Value) {
    let left: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "type": "Opaque",
        "data": {"FLARE_TOKEN": "c3RhbGU="},
    }))
    .unwrap();
    secrets(cluster)
        .await
        .create(&PostParams::default(), &left)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_left_by_a_launch_that_did_not_finish_is_given_the_jobs_values() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("left");
    let name = flare_launcher::backend::k8s::name::pod_name(None, &job_id);
    let labels =
        json!({"app.kubernetes.io/managed-by": "flare-launcher", "flare-launcher/job-id": job_id});
    make_secret(&cluster, &name, labels).await;
    system
        .launch_until_running(&checking_job(&system, &job_id))
        .await;
    finish(&system, &job_id).await;
    assert_eq!(cluster.request_count("create", "secrets"), 1);
    wait_until_gone(&cluster, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_the_jobs_name_someone_else_made_is_never_changed_and_the_launch_fails() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("taken");
    let name = flare_launcher::backend::k8s::name::pod_name(None, &job_id);
    make_secret(&cluster, &name, json!({"team": "ops"})).await;
    let before = secrets(&cluster).await.get(&name).await.unwrap();
    let events = system.run(&checking_job(&system, &job_id)).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (JobState::Error, Some("SpawnFailed")),
        "{last:?}"
    );
    assert!(
        last.message
            .as_deref()
            .unwrap_or_default()
            .contains("is not this job's"),
        "{last:?}"
    );
    assert!(cluster.pods_of(&job_id).await.is_empty());
    let after = secrets(&cluster).await.get(&name).await.unwrap();
    assert_eq!(
        (after.metadata.resource_version, after.data),
        (before.metadata.resource_version, before.data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_secrets_costs_three_requests_and_none_on_secrets() {
    let cluster = Cluster::start(|_| {}).await;
    let system = System::start_with(|config| k8s_worker(config, &cluster)).await;
    let job_id = unique("plain");
    let events = system.run(&in_pod(&job_id, "exit 0")).await;
    assert_eq!(events.last().unwrap().state, JobState::Succeeded);
    cluster.wait_until_deleted(&job_id).await;
    let per_job: Vec<(String, String, u64)> = cluster
        .requests()
        .into_iter()
        .filter(|(verb, _, _)| !matches!(verb.as_str(), "list" | "watch"))
        .collect();
    let mut per_job: Vec<(&str, &str, u64)> = per_job
        .iter()
        .map(|(v, r, n)| (v.as_str(), r.as_str(), *n))
        .collect();
    per_job.sort_unstable();
    assert_eq!(
        per_job,
        [
            ("create", "pods", 1),
            ("delete", "pods", 1),
            ("get", "pods/log", 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_may_write_secrets_but_never_read_them() {
    let cluster = Cluster::start(|_| {}).await;
    make_secret(&cluster, "creds", json!({})).await;
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let worker: Api<Secret> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let refused = |result: Result<_, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("{:?}", other.map(drop)),
    };
    assert_eq!(refused(worker.get("creds").await.map(drop)), 403);
    assert_eq!(
        refused(worker.list(&ListParams::default()).await.map(drop)),
        403
    );
    let delete = worker.delete("creds", &DeleteParams::default()).await;
    assert!(delete.is_ok(), "{:?}", delete.map(drop));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adoption_finding_no_pod_deletes_the_jobs_secret_and_no_one_elses() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(|_| {}).await;
    let backend = k8s_backend(&cluster.kubeconfig, "w2", dir.path()).await;
    let (left, taken) = (unique("left"), unique("taken"));
    let name = |job_id: &str| flare_launcher::backend::k8s::name::pod_name(None, job_id);
    let labels =
        json!({"app.kubernetes.io/managed-by": "flare-launcher", "flare-launcher/job-id": left});
    make_secret(&cluster, &name(&left), labels).await;
    make_secret(&cluster, &name(&taken), json!({"team": "ops"})).await;
    let adopt = backend.adoption().unwrap();
    for job_id in [&left, &taken] {
        let found = adopt
            .adopt(&k8s_record(job_id, "starting", None))
            .await
            .unwrap();
        assert!(found.is_none());
    }
    let secrets = secrets(&cluster).await;
    assert!(secrets.get_opt(&name(&left)).await.unwrap().is_none());
    assert!(secrets.get_opt(&name(&taken)).await.unwrap().is_some());
}
