//! The scheduler: binds each pending pod to a node with room for its requests
//! (CPU, memory, `nvidia.com/gpu`, pod count) and whose claims exist; a pod that
//! fits nowhere stays Pending with `PodScheduled=False, reason Unschedulable`, the
//! scheduler's message, and a `FailedScheduling` event. Every pod or claim change
//! triggers a new pass, so a pod is bound as soon as room frees up; a pass looks
//! at the pending pods only, what the nodes have given being kept up to date
//! from the changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::events::{self, EventType, Source};
use crate::quantity::{parse_millis, parse_units};
use crate::resources::{PODS, PVCS};
use crate::store::{ChangeKind, Key, StoreError};
use crate::{objects, pods};

/// What a pod asks for, or what a node has used.
#[derive(Debug, Default, Clone, Copy)]
struct Demand {
    cpu_millis: u64,
    memory_bytes: u64,
    gpus: u64,
    pods: u64,
}

impl std::ops::AddAssign for Demand {
    fn add_assign(&mut self, other: Demand) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.gpus += other.gpus;
        self.pods += other.pods;
    }
}

impl Demand {
    /// Gives back what `other` took.
    fn sub(&mut self, other: Demand) {
        self.cpu_millis = self.cpu_millis.saturating_sub(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
        self.gpus = self.gpus.saturating_sub(other.gpus);
        self.pods = self.pods.saturating_sub(other.pods);
    }
}

/// The sum of a pod's container requests (limits stand in for missing requests,
/// as the API server defaults them).
fn demand(pod: &Value) -> Demand {
    let mut d = Demand {
        pods: 1,
        ..Demand::default()
    };
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let get = |name: &str| {
            let r = &c["resources"];
            r["requests"][name]
                .as_str()
                .or_else(|| r["limits"][name].as_str())
        };
        d.cpu_millis += get("cpu").and_then(parse_millis).unwrap_or(0);
        d.memory_bytes += get("memory").and_then(parse_units).unwrap_or(0);
        d.gpus += get("nvidia.com/gpu").and_then(parse_units).unwrap_or(0);
    }
    d
}

/// Why `want` does not fit on `node` with `used` taken, if it does not (a lost
/// node takes nothing: it is tainted unreachable).
fn misfits(cluster: &Cluster, node: &NodeConfig, used: Demand, want: Demand) -> Vec<&'static str> {
    if cluster.lost_nodes.contains(&node.name) {
        return vec!["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"];
    }
    let mut why = Vec::new();
    if used.pods + want.pods > node.max_pods {
        why.push("Too many pods");
    }
    if used.cpu_millis + want.cpu_millis > node.cpu_millis {
        why.push("Insufficient cpu");
    }
    if used.memory_bytes + want.memory_bytes > node.memory_bytes {
        why.push("Insufficient memory");
    }
    if used.gpus + want.gpus > node.gpus {
        why.push("Insufficient nvidia.com/gpu");
    }
    why
}

/// The claim names `pod` mounts that do not exist.
fn missing_claims(cluster: &Cluster, pod: &Value) -> Vec<String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .filter(|claim| cluster.store.get(&Key::new(PVCS.name, ns, claim)).is_none())
        .map(str::to_owned)
        .collect()
}

/// What the scheduler knows of the pods, kept up to date from the change
/// stream (as the real scheduler keeps its cache from its informers), so that
/// a pass costs what the pending pods cost, not what every pod costs.
#[derive(Default)]
struct Tally {
    /// What each node has given to its bound pods that have not ended.
    used: HashMap<String, Demand>,
    /// Each such pod's node and demand.
    placed: HashMap<Key, (String, Demand)>,
    /// The pods that wait for a node, in list order.
    pending: BTreeMap<Key, Arc<Value>>,
}

impl Tally {
    /// The tally of every pod now.
    fn of(pods: Vec<Arc<Value>>) -> Tally {
        let mut tally = Tally::default();
        for pod in pods {
            tally.take(pod_key(&pod), Some(pod));
        }
        tally
    }

    /// Takes in the pod at `key` as it is now (`None`: deleted).
    fn take(&mut self, key: Key, pod: Option<Arc<Value>>) {
        self.pending.remove(&key);
        if let Some((node, demand)) = self.placed.remove(&key) {
            self.used.entry(node).or_default().sub(demand);
        }
        let Some(pod) = pod else { return };
        match pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            Some(node) if !pods::is_terminal(&pod) => self.place(key, node, demand(&pod)),
            Some(_) => {}
            None if waits_for_us(&pod) => {
                self.pending.insert(key, pod);
            }
            None => {}
        }
    }

    fn place(&mut self, key: Key, node: &str, demand: Demand) {
        *self.used.entry(node.to_owned()).or_default() += demand;
        self.placed.insert(key, (node.to_owned(), demand));
    }

    fn used(&self, node: &str) -> Demand {
        self.used.get(node).copied().unwrap_or_default()
    }
}

/// Whether `pod`, not bound to a node, is this scheduler's to place.
fn waits_for_us(pod: &Value) -> bool {
    pod["spec"]["schedulerName"]
        .as_str()
        .unwrap_or("default-scheduler")
        == "default-scheduler"
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Runs scheduling passes until `shutdown`: one after each batch of changes
/// that may matter (a pod's, or a claim's).
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let (pods, mut sub) = cluster.store.list_and_subscribe(PODS.name, None);
    let mut tally = Tally::of(pods);
    loop {
        pass(&cluster, &mut tally);
        let mut relevant = false;
        let mut lagged = false;
        loop {
            let next = if relevant {
                match sub.receiver.try_recv() {
                    Ok(change) => Ok(change),
                    Err(TryRecvError::Lagged(_)) => Err(RecvError::Lagged(0)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                }
            } else {
                tokio::select! {
                    change = sub.receiver.recv() => change,
                    () = shutdown.cancelled() => return,
                }
            };
            match next {
                Ok(change) if change.key.resource == PODS.name => {
                    let now = (change.kind != ChangeKind::Deleted).then(|| change.object.clone());
                    tally.take(change.key.clone(), now);
                    relevant = true;
                }
                Ok(change) => relevant |= change.key.resource == PVCS.name,
                Err(RecvError::Lagged(_)) => {
                    (lagged, relevant) = (true, true);
                }
                Err(RecvError::Closed) => return,
            }
        }
        if lagged {
            // Changes were missed: start again from the pods as they are.
            tally = Tally::of(cluster.store.list(PODS.name, None).0);
        }
    }
}

/// One pass over the pending pods.
fn pass(cluster: &Cluster, tally: &mut Tally) {
    let nodes = &cluster.config.nodes;
    let pending: Vec<(Key, Arc<Value>)> = tally
        .pending
        .iter()
        .map(|(key, pod)| (key.clone(), pod.clone()))
        .collect();
    for (key, pod) in pending {
        let missing = missing_claims(cluster, &pod);
        let want = demand(&pod);
        let chosen = if missing.is_empty() {
            nodes
                .iter()
                .find(|n| misfits(cluster, n, tally.used(&n.name), want).is_empty())
        } else {
            None
        };
        match chosen {
            Some(node) if bind(cluster, &pod, &node.name) => {
                tally.pending.remove(&key);
                tally.place(key, &node.name, want);
            }
            Some(_) => {}
            None => {
                let message = unschedulable_message(cluster, &tally.used, want, &missing);
                mark_unschedulable(cluster, &pod, &message);
            }
        }
    }
}

/// The scheduler's message for a pod that fits nowhere.
fn unschedulable_message(
    cluster: &Cluster,
    used: &HashMap<String, Demand>,
    want: Demand,
    missing: &[String],
) -> String {
    let nodes = &cluster.config.nodes;
    let total = nodes.len();
    if let Some(claim) = missing.first() {
        return format!(
            "0/{total} nodes are available: persistentvolumeclaim \"{claim}\" not found. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
        );
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for node in nodes {
        for why in misfits(
            cluster,
            node,
            used.get(&node.name).copied().unwrap_or_default(),
            want,
        ) {
            match counts.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => counts.push((why, 1)),
            }
        }
    }
    counts.sort();
    let reasons: Vec<String> = counts.iter().map(|(why, n)| format!("{n} {why}")).collect();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod.",
        reasons.join(", ")
    )
}

fn pod_key(pod: &Value) -> Key {
    Key::new(
        PODS.name,
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        objects::name(pod),
    )
}

/// Sets condition `kind` of `pod`'s status, keeping its transition time when
/// the status does not change.
pub fn set_condition(
    pod: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = crate::meta::now();
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let mut next =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        next["reason"] = json!(r);
    }
    if let Some(m) = message {
        next["message"] = json!(m);
    }
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            if existing["status"] == status {
                next["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = next;
        }
        None => list.push(next),
    }
}

fn mark_unschedulable(cluster: &Cluster, pod: &Value, message: &str) {
    let already = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["message"] == message);
    if already {
        return;
    }
    let updated = cluster.store.update::<StoreError>(&pod_key(pod), |p| {
        set_condition(
            p,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some(message),
        );
        Ok(())
    });
    if let Ok(p) = updated {
        events::record(
            cluster,
            &p,
            None,
            EventType::Warning,
            "FailedScheduling",
            message,
            Source::Scheduler,
        );
    }
}

/// Binds `pod` to `node`; false if the pod is gone or bound already.
fn bind(cluster: &Cluster, pod: &Value, node: &str) -> bool {
    let mut bound = false;
    let updated = cluster.store.update::<StoreError>(&pod_key(pod), |p| {
        if !p["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            return Ok(());
        }
        p["spec"]["nodeName"] = json!(node);
        set_condition(p, "PodScheduled", "True", None, None);
        bound = true;
        Ok(())
    });
    let Ok(p) = updated else { return false };
    if bound {
        let message = format!(
            "Successfully assigned {}/{} to {node}",
            p["metadata"]["namespace"].as_str().unwrap_or_default(),
            objects::name(&p)
        );
        events::record(
            cluster,
            &p,
            None,
            EventType::Normal,
            "Scheduled",
            &message,
            Source::Scheduler,
        );
    }
    bound
}
