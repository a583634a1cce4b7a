#!/usr/bin/env bash
# The one virtual environment every Python tool of this project lives in (the
# tests' nats-server from PyPI, the Python kubernetes client of kube-sim's
# conformance tests, nvflare, nats-py and pytest for clients/python), so that
# nothing is installed into the system's python3 (which PEP 668 forbids on
# Debian and Ubuntu). Sourced by scripts/ensure-*.sh; it installs nothing itself.
#
#   source scripts/ensure-python-venv.sh
#   _python_venv_install WHO CHECK REQUIREMENT...
#
# The environment is $FLARE_PY_VENV (default ~/.cache/flare-launcher/venv), made
# with `python3 -m venv` on first use and exported. Where `python3 -m venv` cannot
# work (Debian without python3-venv), python3-venv is installed with apt-get.

# Makes the environment unless it already has a working pip; exports FLARE_PY_VENV.
_python_venv_make() {
    export FLARE_PY_VENV="${FLARE_PY_VENV:-$HOME/.cache/flare-launcher/venv}"
    if "$FLARE_PY_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "ensure-python-venv: python3 is required" >&2
        return 1
    fi
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "ensure-python-venv: python3 -m venv needs python3-venv; install it as root (apt-get install python3-venv)" >&2
            return 1
        fi
        echo "ensure-python-venv: installing python3-venv" >&2
        { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; } || return 1
    fi
    echo "ensure-python-venv: making $FLARE_PY_VENV" >&2
    # --clear: a directory left by an attempt that failed (no pip in it) is made anew.
    python3 -m venv --clear "$FLARE_PY_VENV" >&2 || return 1
}

# _python_venv_install WHO CHECK REQUIREMENT...: makes the environment, and
# installs the REQUIREMENTs (pip specifiers) into it unless the Python code CHECK
# already succeeds there. WHO names the caller in messages.
_python_venv_install() {
    local who="$1" check="$2"
    shift 2
    _python_venv_make || return 1
    local py="$FLARE_PY_VENV/bin/python"
    if "$py" -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    echo "$who: installing $* into $FLARE_PY_VENV" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --no-input "$@" >&2 || return 1
    "$py" -c "$check" >/dev/null 2>&1 || {
        echo "$who: installed $*, but \`$check\` still fails in $FLARE_PY_VENV" >&2
        return 1
    }
}
