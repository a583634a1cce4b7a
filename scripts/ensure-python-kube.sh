#!/usr/bin/env bash
# Makes sure the Python `kubernetes` client (PyPI) is importable by python3, for
# kube-sim's conformance tests; installs it with pip if it is missing.
#
#   bash scripts/ensure-python-kube.sh     # install/check
#   source scripts/ensure-python-kube.sh   # same
#
# Idempotent; quiet when the client is already there.

_ensure_python_kube() {
    if python3 -c 'import kubernetes' >/dev/null 2>&1; then
        return 0
    fi
    echo "ensure-python-kube: installing the Python kubernetes client" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'kubernetes>=31' >&2 || return 1
    python3 -c 'import kubernetes' >/dev/null 2>&1
}

_ensure_python_kube
