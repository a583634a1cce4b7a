"""kube-sim as the Python `kubernetes` client sees it.

Run by tests/clients.rs with the kubeconfig path as the only argument. Creates a
pod from a manifest, reads it, lists it with a selector, watches it to completion
(list-then-watch), reads its logs, resumes a watch from a resourceVersion, gets
410 Gone for a compacted one, sees a label change move the pod out of one
label-selector watch (DELETED) and into another (ADDED), and deletes the pod.
"""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
NS = "default"

pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "py-job", "labels": {"suite": "python"}},
    "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox:1.36",
                        "command": ["sh", "-c", "echo from-python; exit 0"]}],
    },
}

# A list, then a watch from the list's resourceVersion: every transition.
listed = v1.list_namespaced_pod(NS, label_selector="suite=python")
assert listed.items == [], listed.items
start_rv = listed.metadata.resource_version
created = v1.create_namespaced_pod(NS, pod)
assert created.metadata.uid, created

phases = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_pod, NS, label_selector="suite=python",
                      resource_version=start_rv, timeout_seconds=60):
    phase = event["object"].status.phase
    if not phases or phases[-1] != phase:
        phases.append(phase)
    if phase in ("Succeeded", "Failed"):
        w.stop()
assert phases[0] == "Pending" and phases[-1] == "Succeeded", phases

got = v1.read_namespaced_pod("py-job", NS)
status = got.status.container_statuses[0].state.terminated
assert status.exit_code == 0 and status.reason == "Completed", status
assert v1.read_namespaced_pod_log("py-job", NS) == "from-python\n"

# A resumed watch replays what happened after the given resourceVersion.
replayed = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_pod, NS, resource_version=created.metadata.resource_version,
                      field_selector="metadata.name=py-job", timeout_seconds=10):
    replayed.append(event["type"])
    if event["object"].status.phase == "Succeeded":
        w.stop()
assert replayed and all(t == "MODIFIED" for t in replayed), replayed

# Enough writes to compact the creation's revision away: a watch from it is gone.
for i in range(40):
    v1.create_namespaced_config_map(NS, {"metadata": {"name": f"filler-{i}"}})
try:
    for _ in watch.Watch().stream(v1.list_namespaced_pod, NS, resource_version=start_rv,
                                  timeout_seconds=10):
        pass
    raise AssertionError("a watch from a compacted resourceVersion did not fail")
except ApiException as e:
    assert e.status == 410, e

try:
    v1.read_namespaced_pod("nope", NS)
    raise AssertionError("reading a missing pod succeeded")
except ApiException as e:
    assert e.status == 404 and '"reason":"NotFound"' in e.body.replace(" ", ""), e.body

# A label change takes the pod out of one selection and into another: as the
# API server's watch cache does, a watch on each sees it leave or enter.
def relabelled_events(selector, since):
    seen = []
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_pod, NS, label_selector=selector,
                          resource_version=since, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        w.stop()
    return seen

before = v1.patch_namespaced_pod("py-job", NS, {"metadata": {"labels": {"owner": "a"}}})
since = before.metadata.resource_version
v1.patch_namespaced_pod("py-job", NS, {"metadata": {"labels": {"owner": "b"}}})
assert relabelled_events("owner=a", since) == [("DELETED", "py-job")]
assert relabelled_events("owner=b", since) == [("ADDED", "py-job")]

v1.delete_namespaced_pod("py-job", NS)
print("python conformance ok")
