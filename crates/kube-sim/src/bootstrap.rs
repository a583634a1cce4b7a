//! What exists in a fresh cluster: the default namespaces and the configured nodes.

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::resources::{NAMESPACES, NODES};
use crate::store::{Key, StoreError};

/// The namespaces every cluster starts with.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The Node object of `node`.
pub fn node_object(node: &NodeConfig) -> Value {
    let resources = json!({
        "cpu": format!("{}m", node.cpu_millis),
        "memory": node.memory_bytes.to_string(),
        "nvidia.com/gpu": node.gpus.to_string(),
        "pods": node.max_pods.to_string(),
    });
    let now = crate::meta::now();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0-kube-sim",
                "containerRuntimeVersion": "kube-sim://1.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "kube-sim", "kernelVersion": "", "kubeProxyVersion": "",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// Creates the default namespaces and the nodes.
pub fn seed(cluster: &Cluster) -> Result<(), StoreError> {
    for ns in DEFAULT_NAMESPACES {
        let object = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        cluster
            .store
            .create(Key::new(NAMESPACES.name, "", ns), object)?;
    }
    for node in &cluster.config.nodes {
        cluster
            .store
            .create(Key::new(NODES.name, "", &node.name), node_object(node))?;
    }
    Ok(())
}
