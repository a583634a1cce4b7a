//! Writing core/v1 Events as the scheduler and kubelet do, about a pod (or one of
//! its containers).

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::resources::EVENTS;
use crate::store::Key;

/// Whether an event reports something normal or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Who reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Scheduler,
    Kubelet,
}

/// The longest event message kept; the real server refuses longer ones.
const MAX_MESSAGE: usize = 1024;

/// Records an event about `pod` (about its container `container`, if given);
/// a lost node's kubelet records none.
pub fn record(
    cluster: &Cluster,
    pod: &Value,
    container: Option<&str>,
    kind: EventType,
    reason: &str,
    message: &str,
    source: Source,
) {
    if source == Source::Kubelet && cluster.lost_nodes.holds(pod) {
        return;
    }
    let meta = &pod["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("default");
    let pod_name = meta["name"].as_str().unwrap_or_default();
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let name = format!("{pod_name}.{nanos:x}");
    let now = crate::meta::now();
    let (component, host) = match source {
        Source::Scheduler => ("default-scheduler", None),
        Source::Kubelet => ("kubelet", pod["spec"]["nodeName"].as_str()),
    };
    let mut message = message.to_owned();
    if message.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
    }
    let mut involved = json!({
        "kind": "Pod",
        "namespace": namespace,
        "name": pod_name,
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta["resourceVersion"],
    });
    if let Some(c) = container {
        involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
    }
    let mut source_obj = json!({"component": component});
    if let Some(h) = host {
        source_obj["host"] = json!(h);
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source_obj,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": host.unwrap_or(component),
    });
    // Two events in the same nanosecond about the same pod collide; the second is
    // dropped, as a real recorder drops what it cannot write.
    let _ = cluster
        .store
        .create(Key::new(EVENTS.name, namespace, &name), event);
}
