#!/usr/bin/env bash
# Makes sure the Docker tests' tools are installed: a static busybox at
# /bin/busybox (Debian's busybox-static), from which the tests build their image
# (FROM scratch), the distribution registry (Debian's docker-registry), which the
# pull tests run on loopback, and docker-compose, which runs deploy/docker/;
# also tmux, the terminal in which the test of `flare-launcher top` drives it.
# Installs what is missing with apt-get.
#
#   bash scripts/ensure-docker-test-tools.sh     # install/check
#   source scripts/ensure-docker-test-tools.sh   # same
#
# Idempotent; quiet when all are there.

_ensure_docker_test_tools() {
    local missing=()
    if ! { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }; then
        missing+=(busybox-static)
    fi
    if ! command -v docker-registry >/dev/null 2>&1; then
        missing+=(docker-registry)
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        missing+=(docker-compose)
    fi
    if ! command -v tmux >/dev/null 2>&1; then
        missing+=(tmux)
    fi
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "ensure-docker-test-tools: installing ${missing[*]}" >&2
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } || return 1
    [ -x /bin/busybox ] && command -v docker-registry >/dev/null 2>&1 &&
        command -v docker-compose >/dev/null 2>&1 && command -v tmux >/dev/null 2>&1
}

_ensure_docker_test_tools
