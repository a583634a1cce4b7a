#!/usr/bin/env bash
# Evaluates every query of deploy/grafana/flare-launcher.json on a real
# Prometheus (Debian's package, installed with apt-get when missing, as root)
# that scrapes a real worker after a few real jobs: each query must parse, and
# the script prints how many series each returns. Grafana itself is not among
# Debian's packages, so the panels are not drawn.
#
#   scripts/check-dashboard.sh [path/to/flare-launcher]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${1:-target/debug/flare-launcher}"
[ -x "$bin" ] || cargo build --bin flare-launcher
# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh
if ! command -v prometheus >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port); metrics_port=$(free_port); prom_port=$(free_port)
nats_url="nats://127.0.0.1:$nats_port"

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
"$bin" --nats-url "$nats_url" worker --data-dir "$work/worker" --worker-id dash-w1 \
    --metrics-listen "127.0.0.1:$metrics_port" >"$work/worker.log" 2>&1 &
pids+=($!)
until "$bin" probe --address "127.0.0.1:$metrics_port" >/dev/null 2>&1; do sleep 0.2; done

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: flare-launcher
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

for code in 0 0 3; do
    "$bin" --nats-url "$nats_url" launch -- sh -c "exit $code" >/dev/null || true
done
"$bin" --nats-url "$nats_url" launch -- /no/such/program >/dev/null 2>&1 || true
"$bin" --nats-url "$nats_url" launch --no-follow -- sleep 120 >/dev/null
# A few scrapes, so that rates over the window have two points.
sleep 8

python3 - "$prom_port" deploy/grafana/flare-launcher.json <<'EOF'
import json, sys, urllib.parse, urllib.request

port, path = sys.argv[1], sys.argv[2]
dashboard = json.load(open(path))
queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
failed = 0
for title, expr in queries:
    query = expr.replace("$instance", ".*")
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=10))
        series = len(answer["data"]["result"])
        print(f"ok    {series:3d} series  {title}: {expr}")
    except urllib.error.HTTPError as error:
        failed += 1
        print(f"ERROR {title}: {expr}: {error.read().decode()}")
print(f"{len(queries)} queries, {failed} refused")
sys.exit(1 if failed else 0)
EOF
