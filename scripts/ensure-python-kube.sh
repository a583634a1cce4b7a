#!/usr/bin/env bash
# Makes sure the Python `kubernetes` client (PyPI) is installed for kube-sim's
# conformance tests, in the project's virtual environment
# (scripts/ensure-python-venv.sh), and exports KUBE_SIM_PYTHON: the interpreter
# those tests run it with.
#
#   bash scripts/ensure-python-kube.sh     # install/check
#   source scripts/ensure-python-kube.sh   # same, and export KUBE_SIM_PYTHON
#
# Idempotent; quiet when the client is already there.

# shellcheck source=scripts/ensure-python-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/ensure-python-venv.sh"

_ensure_python_kube() {
    _python_venv_install ensure-python-kube 'import kubernetes' 'kubernetes>=31' || return 1
    export KUBE_SIM_PYTHON="$FLARE_PY_VENV/bin/python"
}

_ensure_python_kube
