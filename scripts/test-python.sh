#!/usr/bin/env bash
# Runs the tests of the NVFlare launchers (clients/python) with pytest, against a
# real nats-server and the worker built by cargo (target/debug/flare-launcher).
# Extra arguments go to pytest. "No tests collected" (exit 5, e.g. with -k) is not
# a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh
# shellcheck source=scripts/ensure-python-nvflare.sh
source scripts/ensure-python-nvflare.sh
[ -x target/debug/flare-launcher ] || cargo build --bin flare-launcher

status=0
"$FLARE_PY_VENV/bin/python" -m pytest clients/python "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test-python.sh: no tests collected" >&2
    status=0
fi
exit "$status"
