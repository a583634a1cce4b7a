//! The kubelet of kube-sim's nodes: runs every pod bound to one of them, and
//! carries out deletions (SIGTERM, the grace period, SIGKILL, then the pod is
//! removed from the API) and `activeDeadlineSeconds` (the pod ends `Failed` with
//! reason `DeadlineExceeded`). The kubelet of a lost node hears nothing of its
//! pods but their removal; once its node is back, the statuses it reports again
//! (see [`crate::node_loss::restore`]) bring each pod before it anew.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::container::{self, Context, Stop, StopReason};
use crate::events::{self, EventType, Source};
use crate::node_loss;
use crate::resources::{CONFIGMAPS, PODS, SECRETS};
use crate::store::{ChangeKind, Key, StoreError};
use crate::{objects, pods, podstatus};

/// Runs the kubelet until `shutdown`; pods' tasks go on `tasks`.
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken, tasks: TaskTracker) {
    let (initial, mut sub) = cluster.store.list_and_subscribe(PODS.name, None);
    let mut workers: HashMap<String, watch::Sender<Option<Stop>>> = HashMap::new();
    for pod in initial {
        consider(&cluster, &tasks, &mut workers, &pod, false);
    }
    loop {
        tokio::select! {
            change = sub.receiver.recv() => match change {
                Ok(c) if c.key.resource == PODS.name => {
                    consider(&cluster, &tasks, &mut workers, &c.object, c.kind == ChangeKind::Deleted);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (all, _) = cluster.store.list(PODS.name, None);
                    for pod in all {
                        consider(&cluster, &tasks, &mut workers, &pod, false);
                    }
                }
                Err(_) => return,
            },
            () = shutdown.cancelled() => {
                for tx in workers.values() {
                    let _ = tx.send(Some(Stop { reason: StopReason::Forced, grace: Duration::ZERO }));
                }
                return;
            }
        }
    }
}

fn on_our_node(cluster: &Cluster, pod: &Value) -> bool {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    cluster.config.nodes.iter().any(|n| n.name == node)
}

/// Starts, stops or forgets the worker of `pod` after a change.
fn consider(
    cluster: &Arc<Cluster>,
    tasks: &TaskTracker,
    workers: &mut HashMap<String, watch::Sender<Option<Stop>>>,
    pod: &Arc<Value>,
    deleted: bool,
) {
    if !on_our_node(cluster, pod) || (!deleted && cluster.lost_nodes.holds(pod)) {
        return;
    }
    let uid = objects::uid(pod).to_owned();
    if deleted {
        if let Some(tx) = workers.remove(&uid) {
            let _ = tx.send(Some(Stop {
                reason: StopReason::Forced,
                grace: Duration::ZERO,
            }));
        }
        workers.retain(|_, tx| !tx.is_closed());
        return;
    }
    let marked = !pod["metadata"]["deletionTimestamp"].is_null();
    let live = workers.get(&uid).filter(|tx| !tx.is_closed());
    match (live, marked) {
        (Some(tx), true) => {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(0);
            let stop = Stop {
                reason: StopReason::Deleted,
                grace: Duration::from_secs(grace),
            };
            tx.send_if_modified(|current| match current {
                Some(s) if s.reason == StopReason::Deleted && s.grace <= stop.grace => false,
                _ => {
                    *current = Some(stop);
                    true
                }
            });
        }
        (None, true) => remove(cluster, pod),
        (None, false) if !pods::is_terminal(pod) && !workers.contains_key(&uid) => {
            let (tx, rx) = watch::channel(None);
            workers.insert(uid, tx);
            tasks.spawn(run_pod(cluster.clone(), pod.clone(), rx));
        }
        _ => {}
    }
}

/// Removes a stopped pod from the API (only the same pod, by uid); a lost
/// node's kubelet cannot.
fn remove(cluster: &Cluster, pod: &Value) {
    if cluster.lost_nodes.holds(pod) {
        return;
    }
    let uid = objects::uid(pod).to_owned();
    let _ = cluster
        .store
        .delete::<StoreError>(&node_loss::pod_key(pod), |current| {
            if objects::uid(current) == uid {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            }
        });
}

/// The first volume of `pod` whose secret or config map is missing, as the
/// kubelet's `FailedMount` message.
fn missing_volume(cluster: &Cluster, pod: &Value) -> Option<String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or_default();
        let refs = [
            (
                SECRETS.name,
                "secret",
                &v["secret"]["secretName"],
                &v["secret"]["optional"],
            ),
            (
                CONFIGMAPS.name,
                "configmap",
                &v["configMap"]["name"],
                &v["configMap"]["optional"],
            ),
        ];
        for (resource, what, name, optional) in refs {
            let Some(name) = name.as_str() else { continue };
            if *optional != true && cluster.store.get(&Key::new(resource, ns, name)).is_none() {
                return Some(format!(
                    "MountVolume.SetUp failed for volume \"{vname}\" : {what} \"{name}\" not found"
                ));
            }
        }
    }
    None
}

/// Runs one pod from its first status to its end.
async fn run_pod(cluster: Arc<Cluster>, pod: Arc<Value>, mut stop: watch::Receiver<Option<Stop>>) {
    let key = node_loss::pod_key(&pod);
    let uid = objects::uid(&pod).to_owned();
    if let Err(e) = std::fs::create_dir_all(cluster.pod_dir(&uid)) {
        tracing::warn!(pod = %key.name, error = %e, "cannot make the pod directory");
    }
    let start = crate::meta::now();
    let Some(pod) = podstatus::update(&cluster, &key, |p| {
        let containers = podstatus::initial_containers(p);
        let status = &mut p["status"];
        status["hostIP"] = json!("127.0.0.1");
        status["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
        status["podIP"] = json!("127.0.0.1");
        status["podIPs"] = json!([{"ip": "127.0.0.1"}]);
        status["startTime"] = json!(start);
        status["containerStatuses"] = containers;
    }) else {
        return;
    };

    // The deadline, and stops from the API, reach the containers through `inner`.
    let (inner_tx, inner_rx) = watch::channel(None);
    let deadline = pod["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    let grace = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30),
    );

    let mut mount_attempt = 0u32;
    while let Some(message) = missing_volume(&cluster, &pod) {
        if mount_attempt == 0 {
            events::record(
                &cluster,
                &pod,
                None,
                EventType::Warning,
                "FailedMount",
                &message,
                Source::Kubelet,
            );
        }
        mount_attempt += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            s = stop.wait_for(Option::is_some) => {
                let s = s.ok().and_then(|r| *r);
                finish(&cluster, &pod, s);
                return;
            }
        }
    }

    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let runs = futures::future::join_all(containers.into_iter().map(|spec| {
        let ctx = Context {
            cluster: cluster.clone(),
            key: key.clone(),
            pod: pod.clone(),
            stop: inner_rx.clone(),
        };
        container::run(ctx, spec)
    }));
    tokio::pin!(runs);
    let deadline_sleep = tokio::time::sleep(deadline.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline_sleep);
    let mut deadline_hit = false;
    loop {
        tokio::select! {
            _ = &mut runs => break,
            () = &mut deadline_sleep, if deadline.is_some() && !deadline_hit => {
                deadline_hit = true;
                let message = "Pod was active on the node longer than the specified deadline";
                events::record(&cluster, &pod, None, EventType::Warning, "DeadlineExceeded", message, Source::Kubelet);
                podstatus::update(&cluster, &key, |p| {
                    p["status"]["reason"] = json!("DeadlineExceeded");
                    p["status"]["message"] = json!(message);
                });
                let _ = inner_tx.send(Some(Stop { reason: StopReason::Deadline, grace }));
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    let _ = inner_tx.send(Some(Stop { reason: StopReason::Forced, grace: Duration::ZERO }));
                } else if let Some(s) = *stop.borrow() {
                    let _ = inner_tx.send(Some(s));
                }
            }
        }
    }
    let last = *inner_rx.borrow();
    finish(&cluster, &pod, last);
}

/// After the containers have stopped: a deleted pod leaves the API.
fn finish(cluster: &Cluster, pod: &Value, stop: Option<Stop>) {
    if stop.is_some_and(|s| s.reason == StopReason::Deleted) {
        remove(cluster, pod);
    }
}
