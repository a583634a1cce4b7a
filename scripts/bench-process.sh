#!/usr/bin/env bash
# Measures the process backend on this machine, the way
# docs/performance.md's "Process jobs" section reports it: a fresh nats-server and a release worker (supervised jobs),
# then `flare-launcher bench` one job at a time and at concurrency 50, with the
# machine's own spawn rate (`xargs -P 50` spawning `true`) measured right beside
# the throughput run. Needs a release build (`cargo build --release`).
#
#   scripts/bench-process.sh [JOBS_AT_50]    # default 5000
#
# The worker's data directory (job logs, the supervisor's job files) goes under
# BENCH_DATA_ROOT (default: the system's temporary directory), e.g. /dev/shm to
# take the file system out of the figures (see docs/performance.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh

jobs=${1:-5000}
bin=target/release/flare-launcher
work=$(mktemp -d)
data=$(mktemp -d -p "${BENCH_DATA_ROOT:-${TMPDIR:-/tmp}}")
port=$((20000 + RANDOM % 20000))
cleanup() {
    [[ -n ${worker:-} ]] && kill -TERM "$worker" 2>/dev/null && wait "$worker" 2>/dev/null
    [[ -n ${nats:-} ]] && kill "$nats" 2>/dev/null && wait "$nats" 2>/dev/null
    rm -rf "$work" "$data"
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats=$!
url="nats://127.0.0.1:$port"
"$bin" --nats-url "$url" worker --max-jobs 64 --data-dir "$data" >"$work/worker.log" 2>&1 &
worker=$!
sleep 2

spawn_rate() {
    local start end
    start=$(date +%s.%N)
    seq "$1" | xargs -P 50 -n 1 true
    end=$(date +%s.%N)
    python3 -c "print(round($1 / ($end - $start)))"
}

echo "== one job at a time"
"$bin" --nats-url "$url" bench --jobs 500 --concurrency 1 --worker-pid "$worker"
echo "== concurrency 50, with the spawn rate before and after"
before=$(spawn_rate "$jobs")
"$bin" --nats-url "$url" bench --jobs "$jobs" --concurrency 50 --worker-pid "$worker"
after=$(spawn_rate "$jobs")
echo "spawn rate of xargs -P 50 true: $before/s before, $after/s after"
