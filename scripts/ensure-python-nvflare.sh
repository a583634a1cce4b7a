#!/usr/bin/env bash
# Makes sure the Python environment for clients/python's tests exists: a virtual
# environment with nvflare 2.9.0, nats-py and pytest. Exports FLARE_PY_VENV (its
# directory; default ~/.cache/flare-launcher/venv, or as set beforehand).
#
#   bash scripts/ensure-python-nvflare.sh     # install/check
#   source scripts/ensure-python-nvflare.sh   # same, and export FLARE_PY_VENV
#
# Idempotent; quiet when everything is already there.

_ensure_python_nvflare() {
    local venv="${FLARE_PY_VENV:-$HOME/.cache/flare-launcher/venv}"
    local py="$venv/bin/python"
    if [ -x "$py" ] && "$py" - >/dev/null 2>&1 <<'PY'
import importlib.metadata as m, nats, pytest  # noqa: F401
assert m.version("nvflare") == "2.9.0"
PY
    then
        export FLARE_PY_VENV="$venv"
        return 0
    fi
    echo "ensure-python-nvflare: installing nvflare 2.9.0, nats-py and pytest into $venv" >&2
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'nvflare==2.9.0' 'nats-py>=2.9' 'pytest>=8' >&2 || return 1
    export FLARE_PY_VENV="$venv"
}

_ensure_python_nvflare
