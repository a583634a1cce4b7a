//! How many workloads each job had, counted by the places that make them: the
//! containers the Docker engine created (its event stream, followed from before
//! the first launch, since the engine keeps only its latest events) and the
//! pods kube-sim created (the Events its scheduler and kubelet record of each
//! pod, which outlive the pod and name its uid).

use super::k8s::Cluster;
use flare_launcher::backend::container::workload::JOB_ID;
use flare_launcher::backend::k8s::name::pod_name;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The engine's container creations, followed from [`ContainerCreations::follow`]
/// on: the job id of each created container that has one.
pub struct ContainerCreations {
    events: tokio::process::Child,
    job_ids: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ContainerCreations {
    /// Starts following the engine's events (`docker events`), from a second
    /// before now.
    pub fn follow() -> ContainerCreations {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            - 1;
        let mut events = tokio::process::Command::new("docker")
            .args(["events", "--since", &since.to_string()])
            .args(["--filter", "type=container", "--filter", "event=create"])
            .args(["--filter", &format!("label={JOB_ID}")])
            .args([
                "--format",
                &format!("{{{{index .Actor.Attributes \"{JOB_ID}\"}}}}"),
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("docker events starts");
        let stdout = events.stdout.take().expect("its output");
        let job_ids = Arc::new(Mutex::new(Vec::new()));
        let seen = job_ids.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        ContainerCreations {
            events,
            job_ids,
            reader,
        }
    }

    /// Stops following (a moment from now, so that what the engine did by now
    /// has come through), and returns how many containers each of `jobs` had.
    pub async fn stop(mut self, jobs: &[String]) -> BTreeMap<String, usize> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.events.start_kill().expect("docker events stops");
        self.events.wait().await.expect("docker events reaped");
        self.reader.await.expect("the reader ends");
        let job_ids = self.job_ids.lock().unwrap();
        jobs.iter()
            .map(|job| (job.clone(), job_ids.iter().filter(|id| *id == job).count()))
            .collect()
    }
}

/// How many pods each of `jobs` had on `cluster`, whatever became of them.
pub async fn pods_created(cluster: &Cluster, jobs: &[String]) -> BTreeMap<String, usize> {
    let events = Api::<Event>::namespaced(cluster.client().await, "default")
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items;
    let mut uids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in events {
        let object = event.involved_object;
        if let (Some("Pod"), Some(name), Some(uid)) =
            (object.kind.as_deref(), object.name, object.uid)
        {
            uids.entry(name).or_default().insert(uid);
        }
    }
    jobs.iter()
        .map(|job| {
            let pods = uids.get(&pod_name(None, job)).map_or(0, BTreeSet::len);
            (job.clone(), pods)
        })
        .collect()
}
