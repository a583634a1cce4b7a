#!/usr/bin/env bash
# Brings up a worker with its defaults on a fresh machine: installs nats-server if
# needed, then runs `flare-launcher dev`, which starts a local JetStream-enabled
# nats-server if none is reachable and a worker with the process backend.
# Extra arguments go to `flare-launcher dev`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh

exec cargo run --release --locked -- dev "$@"
