#!/usr/bin/env bash
# Measures what a worker's start-up and an adoption cost while the job-record
# bucket keeps a long history, the way docs/performance.md's "Failover" section
# reports it: a fresh nats-server, then `flare-launcher bench failover`, which
# runs two rounds, the first with an empty job-record bucket, the second after
# writing RECORDS ended records (copies of the first round's own, owned by the
# workers the round starts and kills). Each round times five start-ups of a
# Docker worker and the adoption of JOBS containers of a SIGKILLed worker, and
# counts the KV and JetStream API requests of each. Needs a release build
# (`cargo build --release`; BENCH_PROFILE=debug for the debug binary) and a
# Docker engine; builds the image it runs when the engine lacks it.
#
#   scripts/bench-failover.sh [RECORDS] [JOBS]    # default 100000 20
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh
# shellcheck source=scripts/ensure-docker-test-tools.sh
source scripts/ensure-docker-test-tools.sh
# shellcheck source=scripts/ensure-bench-image.sh
source scripts/ensure-bench-image.sh

records=${1:-100000}
jobs=${2:-20}
bin=${CARGO_TARGET_DIR:-target}/${BENCH_PROFILE:-release}/flare-launcher
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() {
    [[ -n ${nats:-} ]] && kill "$nats" 2>/dev/null && wait "$nats" 2>/dev/null
    docker ps -aq --filter label=flare-launcher/worker=bench-killed | xargs -r docker rm -f >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats=$!
sleep 1
"$bin" --nats-url "nats://127.0.0.1:$port" bench failover --records "$records" --jobs "$jobs" \
    --image "$BENCH_IMAGE" --work-dir "$work"
