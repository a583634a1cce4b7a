"""A lost node as the Python `kubernetes` client sees it.

Run by tests/clients.rs with the kubeconfig path as the only argument. Starts a
pod that tolerates its node's loss for one second, loses the node through the
admin API, and checks that the pod stays Running but not ready, that the node is
Ready=Unknown with the unreachable NoExecute taint, that the pod is then evicted
(deletionTimestamp, reason NodeLost) and stays, and that it is gone once the
node is restored.
"""

import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
NS = "default"
NODE = "kube-sim-node"
UNREACHABLE = "node.kubernetes.io/unreachable"


def until(what, probe, patience=60):
    deadline = time.monotonic() + patience
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.05)


def condition(pod, kind):
    for c in pod.status.conditions or []:
        if c.type == kind:
            return c.status
    return None


def admin(path):
    request = v1.api_client.param_serialize(
        method="POST", resource_path=path, body={"node": NODE},
        header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"])
    answer = v1.api_client.call_api(*request)
    answer.read()
    assert answer.status == 200, answer.data


v1.create_namespaced_pod(NS, {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py-lost"},
    "spec": {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "tolerations": [{"key": UNREACHABLE, "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 1}],
        "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}],
    },
})
until("running", lambda: condition(v1.read_namespaced_pod("py-lost", NS), "Ready") == "True")

admin("/kube-sim/lose-node")
node = v1.read_node(NODE)
ready = [c.status for c in node.status.conditions if c.type == "Ready"]
assert ready == ["Unknown"], ready
taints = [(t.key, t.effect) for t in node.spec.taints]
assert (UNREACHABLE, "NoExecute") in taints, taints

unready = until("not ready", lambda: (lambda p: p if condition(p, "Ready") == "False" else None)(
    v1.read_namespaced_pod("py-lost", NS)))
assert unready.status.phase == "Running", unready.status

evicted = until("evicted", lambda: (lambda p: p if p.metadata.deletion_timestamp else None)(
    v1.read_namespaced_pod("py-lost", NS)))
assert evicted.status.phase == "Running", evicted.status
assert evicted.status.reason == "NodeLost", evicted.status
assert evicted.metadata.deletion_grace_period_seconds == 5, evicted.metadata
assert condition(evicted, "DisruptionTarget") == "True", evicted.status.conditions

admin("/kube-sim/restore-node")


def gone():
    try:
        v1.read_namespaced_pod("py-lost", NS)
        return False
    except ApiException as e:
        assert e.status == 404, e
        return True


until("gone", gone)
node = v1.read_node(NODE)
assert not node.spec.taints, node.spec.taints
print("ok")
