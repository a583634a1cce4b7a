#!/usr/bin/env bash
# Makes sure /bin/busybox is a static busybox (Debian's busybox-static), from which
# the Docker tests build their image (FROM scratch); installs it with apt-get if
# it is missing.
#
#   bash scripts/ensure-busybox-static.sh     # install/check
#   source scripts/ensure-busybox-static.sh   # same
#
# Idempotent; quiet when it is already there.

_ensure_busybox_static() {
    if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
        return 0
    fi
    echo "ensure-busybox-static: installing busybox-static" >&2
    apt-get install -y -qq busybox-static >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; } || return 1
    [ -x /bin/busybox ]
}

_ensure_busybox_static
