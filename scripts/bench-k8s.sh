#!/usr/bin/env bash
# Measures the Kubernetes backend against kube-sim, the way
# docs/performance.md's "Kubernetes jobs" section reports it: a fresh nats-server, a kube-sim whose worker
# user has the Role of deploy/k8s, a release worker with the k8s backend, then
# `flare-launcher bench --backend k8s` one job at a time (exit → terminal event
# latency, API requests per job) and with 1,000 pods running at once (the
# worker's memory). Needs a release build (`cargo build --release --workspace`),
# or BENCH_PROFILE=debug for the debug binaries.
#
#   scripts/bench-k8s.sh [JOBS]    # default 500
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh

jobs=${1:-500}
profile=${BENCH_PROFILE:-release}
bin=target/$profile/flare-launcher
sim=target/$profile/kube-sim
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() {
    [[ -n ${worker:-} ]] && kill -TERM "$worker" 2>/dev/null && wait "$worker" 2>/dev/null
    [[ -n ${kube:-} ]] && kill "$kube" 2>/dev/null && wait "$kube" 2>/dev/null
    [[ -n ${nats:-} ]] && kill "$nats" 2>/dev/null && wait "$nats" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats=$!
url="nats://127.0.0.1:$port"
user=system:serviceaccount:default:flare-launcher
# The shipped ClusterRoleBinding (nodes) names the namespace `flare`; here it is `default`.
sed "s/namespace: flare/namespace: default/" deploy/k8s/clusterrolebinding.yaml >"$work/clusterrolebinding.yaml"
"$sim" --kubeconfig "$work/admin.kubeconfig" --user "$user=bench-token" \
    --rbac deploy/k8s/role.yaml --rbac deploy/k8s/rolebinding.yaml \
    --rbac deploy/k8s/clusterrole.yaml --rbac "$work/clusterrolebinding.yaml" >"$work/kube-sim.log" 2>&1 &
kube=$!
for _ in $(seq 100); do [[ -s $work/admin.kubeconfig ]] && break; sleep 0.1; done
# The worker's kubeconfig: the admin's, with the service account's token.
sed -e "s/kube-sim-admin/$user/" -e "s/token: .*/token: bench-token/" \
    "$work/admin.kubeconfig" >"$work/worker.kubeconfig"
FLARE_BACKEND=k8s FLARE_KUBECONFIG="$work/worker.kubeconfig" \
    "$bin" --nats-url "$url" worker --max-jobs 1100 --data-dir "$work/data" >"$work/worker.log" 2>&1 &
worker=$!
sleep 2

k8s_bench() {
    "$bin" --nats-url "$url" bench --backend k8s --image flare-bench:1 --worker-pid "$worker" \
        --kube-sim-kubeconfig "$work/admin.kubeconfig" "$@"
}
echo "== one job at a time: exit → terminal event, API requests per job"
k8s_bench --jobs "$jobs" --concurrency 1 --exit-stamps "$work/stamps"
echo "== concurrency 50"
k8s_bench --jobs "$jobs" --concurrency 50 --exit-stamps "$work/stamps"
echo "== 1,000 pods running at once (worker memory)"
k8s_bench --jobs 1000 --concurrency 1000 --warmup 0 --timeout-s 120 -- sleep 15
