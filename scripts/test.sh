#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs nats-server if
# needed, then unit, integration and doc tests, then the Python tests of the NVFlare
# launchers (scripts/test-python.sh). Extra arguments go to the test runner
# (cargo nextest run, or cargo test when nextest is not installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/ensure-nats-server.sh
source scripts/ensure-nats-server.sh
# A static busybox and the registry, for the Docker tests (which a build that
# finds no Docker engine ignores, except in CI).
# shellcheck source=scripts/ensure-docker-test-tools.sh
source scripts/ensure-docker-test-tools.sh ||
    echo "test.sh: no busybox-static or docker-registry (apt-get install them): the Docker tests will fail" >&2
# The Python kubernetes client, for kube-sim's conformance tests (in the project's
# virtual environment; exports KUBE_SIM_PYTHON, which those tests run).
# shellcheck source=scripts/ensure-python-kube.sh
source scripts/ensure-python-kube.sh

# nextest does not run doctests; they go first so that the runner's summary of all
# the other tests closes the output.
cargo test --workspace --doc

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@" || status=$?
else
    echo "test.sh: cargo-nextest not found, using cargo test" >&2
    cargo test --workspace --all-targets --no-fail-fast "$@" || status=$?
fi

# The NVFlare launchers (Python), against the worker the Rust tests just built.
bash scripts/test-python.sh || status=$?
exit "$status"
