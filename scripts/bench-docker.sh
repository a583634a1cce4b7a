#!/usr/bin/env bash
# Measures the Docker backend on this machine, the way docs/performance.md's "Docker
# jobs" section reports it: a fresh nats-server and a release worker with the Docker
# backend, then `flare-launcher bench --backend docker` (which measures the
# engine's own floor in the same run) one container at a time, at concurrency
# 10, and with 200 containers running at once for the worker's memory. Needs a
# release build (`cargo build --release`), or BENCH_PROFILE=debug for the debug
# binary, and a Docker engine; builds the image it runs (FROM scratch plus
# Debian's static busybox) when the engine lacks it. BENCH_ONLY=1 or 2 runs only
# the first or the second measurement.
#
#   scripts/bench-docker.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh
# shellcheck source=scripts/ensure-docker-test-tools.sh
source scripts/ensure-docker-test-tools.sh
# shellcheck source=scripts/ensure-bench-image.sh
source scripts/ensure-bench-image.sh

image=$BENCH_IMAGE
profile=${BENCH_PROFILE:-release}
bin=target/$profile/flare-launcher
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() {
    [[ -n ${worker:-} ]] && kill -TERM "$worker" 2>/dev/null && wait "$worker" 2>/dev/null
    [[ -n ${nats:-} ]] && kill "$nats" 2>/dev/null && wait "$nats" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats=$!
url="nats://127.0.0.1:$port"
"$bin" --nats-url "$url" worker --backend docker --max-jobs 250 --data-dir "$work/data" >"$work/worker.log" 2>&1 &
worker=$!
sleep 2

bench() {
    "$bin" --nats-url "$url" bench --backend docker --image "$image" --worker-pid "$worker" "$@"
}
only=${BENCH_ONLY:-}
if [[ -z $only || $only == 1 ]]; then
    echo "== one container at a time"
    bench --jobs 40 --concurrency 1 --warmup 3 --floor-containers 30 -- /bin/true
fi
if [[ -z $only || $only == 2 ]]; then
    echo "== concurrency 10"
    bench --jobs 100 --concurrency 10 --warmup 5 --floor-containers 100 -- /bin/true
fi
if [[ -z $only ]]; then
    echo "== 200 containers running at once (worker memory)"
    bench --jobs 200 --concurrency 200 --warmup 0 --floor-containers 0 --timeout-s 600 -- sleep 90
fi
