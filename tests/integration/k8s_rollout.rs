//! A rollout of the shipped Deployment (`deploy/k8s/deployment.yaml`) on
//! kube-sim while jobs run, and more are launched: every job ends once,
//! `succeeded`, followed to its end by a worker of the new generation, and no
//! old worker deletes a pod.
//!
//! kube-sim has no Deployment controller, so the test plays it as the manifest
//! says: its `replicas`, `maxSurge`, `maxUnavailable`, `minReadySeconds` and
//! `terminationGracePeriodSeconds` are read from the file, so that a manifest
//! that regresses breaks the test. Each worker pod is a process of the binary run
//! as the manifest's container: its args and plain environment values, the pod's
//! name and namespace for its field references, a data directory of its own (the
//! `emptyDir`), the NATS URL (the secret) and a kubeconfig (the in-cluster
//! configuration). The old generation talks to kube-sim as one user, the new as
//! another, so that the requests of each are counted apart.

use crate::common::docker::unique;
use crate::common::k8s::{Cluster, DEPLOY, SECOND_USER, WORKER_USER, in_pod};
use crate::common::system::{System, assert_well_formed};
use flare_launcher::protocol::JobEvent;
use flare_launcher::state::JobState;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Jobs launched before the rollout.
const BEFORE: usize = 30;
/// Jobs launched at each step of the rollout, once its new worker is ready.
const DURING: usize = 4;

/// What the test takes from the shipped Deployment.
struct Shipped {
    replicas: usize,
    max_surge: usize,
    max_unavailable: usize,
    min_ready: Duration,
    grace: Duration,
    /// The worker container's arguments.
    args: Vec<String>,
    /// Its environment: plain values, and field references by their path.
    env: Vec<(String, EnvValue)>,
}

enum EnvValue {
    Plain(String),
    Field(String),
}

/// A count of the rolling update's (the test reads counts, not percentages).
fn count(value: Option<IntOrString>, what: &str) -> usize {
    match value {
        Some(IntOrString::Int(n)) => usize::try_from(n).expect("a count"),
        other => panic!("{what} is {other:?}: the manifest should give it as a count"),
    }
}

fn shipped() -> Shipped {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("deployment.yaml"))
        .expect("the shipped Deployment");
    let value: serde_json::Value = serde_saphyr::from_str(&text).expect("the Deployment parses");
    let deployment: Deployment = serde_json::from_value(value).expect("a Deployment");
    let spec = deployment.spec.expect("its spec");
    let strategy = spec.strategy.expect("the manifest names its strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy
        .rolling_update
        .expect("the rolling update's numbers");
    let pod = spec.template.spec.expect("the pod's spec");
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "worker")
        .expect("the worker container");
    let env = container
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|var| {
            let value = match (var.value, var.value_from) {
                (Some(value), _) => EnvValue::Plain(value),
                (None, Some(from)) => {
                    EnvValue::Field(from.field_ref.expect("a field reference").field_path)
                }
                (None, None) => EnvValue::Plain(String::new()),
            };
            (var.name, value)
        })
        .collect();
    Shipped {
        replicas: usize::try_from(spec.replicas.expect("replicas")).unwrap(),
        max_surge: count(rolling.max_surge, "maxSurge"),
        max_unavailable: count(rolling.max_unavailable, "maxUnavailable"),
        min_ready: Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).try_into().unwrap()),
        // Kubernetes' default when the manifest gives none.
        grace: Duration::from_secs(
            pod.termination_grace_period_seconds
                .unwrap_or(30)
                .try_into()
                .unwrap(),
        ),
        args: container.args.unwrap_or_default(),
        env,
    }
}

/// A worker pod: its name (the worker's id) and its process.
struct WorkerPod {
    name: String,
    process: tokio::process::Child,
    started: Instant,
}

/// The cluster and NATS the pods of both generations run against.
struct Place<'a> {
    system: &'a System,
    shipped: &'a Shipped,
}

impl Place<'_> {
    /// Starts the pod `name`, talking to kube-sim with `kubeconfig`.
    fn start(&self, name: &str, kubeconfig: &Path) -> WorkerPod {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flare-launcher"));
        command.args(&self.shipped.args);
        for (var, value) in &self.shipped.env {
            let value = match value {
                EnvValue::Plain(value) => value.as_str(),
                EnvValue::Field(path) if path == "metadata.name" => name,
                EnvValue::Field(path) if path == "metadata.namespace" => "default",
                EnvValue::Field(path) => panic!("{var}: no stand-in for the field {path}"),
            };
            command.env(var, value);
        }
        let process = command
            .env("FLARE_DATA_DIR", self.system.path(name))
            .env("FLARE_NATS_URL", self.system.nats.url())
            .env("FLARE_KUBECONFIG", kubeconfig)
            // Pods have a network of their own; here they share the host's.
            .env("FLARE_METRICS_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        WorkerPod {
            name: name.to_owned(),
            process,
            started: Instant::now(),
        }
    }

    /// The live pool's worker ids.
    async fn pool(&self) -> Vec<String> {
        match self.system.client.workers().await {
            Ok(leases) => leases.into_iter().map(|lease| lease.worker).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until `pod` is available as the controller counts it (its worker
    /// holds its lease, and `minReadySeconds` have passed since it started).
    async fn wait_available(&self, pod: &WorkerPod) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.pool().await.contains(&pod.name) {
            assert!(
                Instant::now() < deadline,
                "{} never took its lease",
                pod.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leased = pod.started.elapsed();
        tokio::time::sleep(self.shipped.min_ready.saturating_sub(leased)).await;
        println!(
            "{}: lease seen {leased:?} after its start, available after {:?}",
            pod.name,
            pod.started.elapsed()
        );
    }

    /// The workers named in the records of `jobs`.
    async fn owners(&self, jobs: &[String]) -> Vec<String> {
        let mut owners = Vec::new();
        for job_id in jobs {
            if let Ok(record) = self.system.client.status(job_id).await {
                owners.push(record.worker);
            }
        }
        owners
    }

    /// Sends SIGTERM to `pod`; returns how long until none of `jobs` is its
    /// any more, and how long until it exited (within the grace period).
    async fn stop(&self, mut pod: WorkerPod, jobs: &[String]) -> (usize, Duration, Duration) {
        let held = self
            .owners(jobs)
            .await
            .iter()
            .filter(|owner| **owner == pod.name)
            .count();
        let pid = pod.process.id().expect("the worker runs") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM sent");
        let stopped = Instant::now();
        let status = tokio::time::timeout(self.shipped.grace, pod.process.wait())
            .await
            .unwrap_or_else(|_| panic!("{} outlived its grace period", pod.name))
            .expect("the worker's exit");
        let exited = stopped.elapsed();
        assert!(status.success(), "{}: {status:?}", pod.name);
        while self.owners(jobs).await.contains(&pod.name) {
            assert!(
                stopped.elapsed() < self.shipped.grace,
                "{}'s jobs were not taken over within the grace period",
                pod.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (held, stopped.elapsed(), exited)
    }
}

/// A pod that runs until `go` exists, then exits 0.
fn held_until_go(job_id: &str, go: &Path) -> flare_launcher::protocol::LaunchRequest {
    in_pod(
        job_id,
        &format!("while [ ! -e {} ]; do sleep 1; done; exit 0", go.display()),
    )
}

/// Launches `n` held jobs (without waiting for them), adding them to `jobs`.
async fn launch(system: &System, go: &Path, n: usize, jobs: &mut Vec<String>) {
    for _ in 0..n {
        let job_id = unique("rolled");
        system
            .client
            .launch(&held_until_go(&job_id, go))
            .await
            .expect("launch published");
        jobs.push(job_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_the_shipped_deployment_finishes_every_job_once_under_the_new_workers() {
    let shipped = shipped();
    println!(
        "the Deployment: replicas {}, maxSurge {}, maxUnavailable {}, minReadySeconds {:?}, \
         terminationGracePeriodSeconds {:?}",
        shipped.replicas,
        shipped.max_surge,
        shipped.max_unavailable,
        shipped.min_ready,
        shipped.grace
    );
    assert!(
        shipped.replicas >= 2,
        "one worker leaves an empty pool whenever it is stopped on its own"
    );
    let system = System::without_worker(|_| {}).await;
    let (cluster, new_kubeconfig): (Cluster, PathBuf) =
        Cluster::start_with_second_user(system.dir.path(), true).await;
    let place = Place {
        system: &system,
        shipped: &shipped,
    };
    let go = system.path("go");

    // The old generation, and the jobs that run through the rollout.
    let mut old: Vec<WorkerPod> = (1..=shipped.replicas)
        .map(|n| place.start(&format!("flare-launcher-old-{n}"), &cluster.kubeconfig))
        .collect();
    for pod in &old {
        place.wait_available(pod).await;
    }
    let mut jobs = Vec::new();
    launch(&system, &go, BEFORE, &mut jobs).await;
    for job_id in &jobs {
        system
            .events_until(job_id, |e| e.state == JobState::Running)
            .await;
    }
    let owners = place.owners(&jobs).await;
    println!(
        "{} jobs running: {:?}",
        jobs.len(),
        tally(owners.iter().map(String::as_str))
    );

    // The rollout, as the strategy says.
    let mut new: Vec<WorkerPod> = Vec::new();
    let mut hand_overs = Vec::new();
    while !old.is_empty() {
        while new.len() < shipped.replicas
            && old.len() + new.len() < shipped.replicas + shipped.max_surge
        {
            let pod = place.start(
                &format!("flare-launcher-new-{}", new.len() + 1),
                &new_kubeconfig,
            );
            place.wait_available(&pod).await;
            new.push(pod);
        }
        launch(&system, &go, DURING, &mut jobs).await;
        let live = old.len() + new.len();
        let stopping = live
            .saturating_sub(shipped.replicas - shipped.max_unavailable)
            .min(old.len());
        assert!(
            stopping > 0,
            "the strategy lets the rollout make no progress"
        );
        assert!(
            live - stopping >= shipped.replicas,
            "the rollout would leave {} of {} workers",
            live - stopping,
            shipped.replicas
        );
        for pod in old.drain(..stopping).collect::<Vec<_>>() {
            let name = pod.name.clone();
            let (held, handed_over, exited) = place.stop(pod, &jobs).await;
            println!(
                "{name}: SIGTERM with {held} jobs; all taken over after {handed_over:?}, \
                 exited after {exited:?}"
            );
            hand_overs.push((name, held, handed_over));
        }
    }
    let new_names: Vec<String> = new.iter().map(|pod| pod.name.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while place.pool().await != new_names {
        assert!(Instant::now() < deadline, "the pool is not the new workers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every job, old and launched during the rollout, runs under a new worker
    // before it is let go.
    for job_id in &jobs {
        system
            .events_until(job_id, |e| e.state == JobState::Running)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let owners = place.owners(&jobs).await;
        if owners.len() == jobs.len() && owners.iter().all(|owner| new_names.contains(owner)) {
            println!(
                "after the rollout: {:?}",
                tally(owners.iter().map(String::as_str))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs left behind: {:?}",
            tally(owners.iter().map(String::as_str))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&go, "").unwrap();

    let mut ends = Vec::new();
    for job_id in &jobs {
        let events = system.events_until_terminal(job_id).await;
        ends.push(assert_one_end(job_id, &events, &new_names));
    }
    for job_id in &jobs {
        cluster.wait_until_deleted(job_id).await;
    }
    println!(
        "{} jobs ({BEFORE} before the rollout, {} during it): {} succeeded, ended by {:?}",
        jobs.len(),
        jobs.len() - BEFORE,
        ends.len(),
        tally(ends.iter().map(String::as_str))
    );
    for (name, held, handed_over) in &hand_overs {
        println!("hand-over of {name}: {held} jobs in {handed_over:?}");
    }
    let deletes_by = |user: &str| {
        cluster
            .sim
            .requests()
            .into_iter()
            .filter(|c| c.user == user && c.verb == "delete" && c.resource == "pods")
            .map(|c| c.count)
            .sum::<u64>()
    };
    let (old_deletes, new_deletes) = (deletes_by(WORKER_USER), deletes_by(SECOND_USER));
    println!("pods deleted: {old_deletes} by the old workers, {new_deletes} by the new");
    assert_eq!(old_deletes, 0, "an old worker deleted a pod");
    assert!(new_deletes >= jobs.len() as u64);
}

/// Checks that `events` end once, `succeeded`, by a worker of `new`; returns
/// that worker.
fn assert_one_end(job_id: &str, events: &[JobEvent], new: &[String]) -> String {
    let terminal: Vec<&JobEvent> = events.iter().filter(|e| e.state.is_terminal()).collect();
    assert_eq!(terminal.len(), 1, "{job_id}: {events:?}");
    assert_well_formed(events);
    let last = terminal[0];
    assert_eq!(
        (last.state, last.reason.as_deref()),
        (JobState::Succeeded, None),
        "{job_id}: {events:?}"
    );
    assert!(new.contains(&last.worker), "{job_id}: {events:?}");
    last.worker.clone()
}

/// How many of `names` each name is.
fn tally<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts
}
