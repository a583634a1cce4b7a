#!/usr/bin/env bash
# The image the Docker benchmarks run, flare-launcher-test-busybox:1 (the tests'
# image: FROM scratch plus Debian's static busybox, see
# scripts/ensure-docker-test-tools.sh), built when the engine lacks it.
#
#   source scripts/ensure-bench-image.sh    # sets BENCH_IMAGE
#
# Idempotent; quiet when the image is there.

_ensure_bench_image() {
    BENCH_IMAGE=flare-launcher-test-busybox:1
    docker image inspect "$BENCH_IMAGE" >/dev/null 2>&1 && return 0
    local context
    context=$(mktemp -d)
    cp /bin/busybox "$context/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$context/Dockerfile"
    docker build -q -t "$BENCH_IMAGE" "$context" >/dev/null
    local built=$?
    rm -rf "$context"
    return $built
}

_ensure_bench_image
