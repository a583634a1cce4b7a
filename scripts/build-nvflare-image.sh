#!/usr/bin/env bash
# Builds a Docker image for NVFlare jobs, with Python 3, nvflare and numpy, on a
# machine whose engine has no base image and can pull none: the root file system
# comes from Debian's packages (debootstrap, a minimal bookworm), Python's
# packages from PyPI into a virtual environment at /opt/nvflare, and the result
# is imported into the engine. Runs as root (debootstrap and chroot need it).
#
#   scripts/build-nvflare-image.sh [TAG]    # default flare-launcher-nvflare:2.9.0
#
# Environment: NVFLARE_VERSION (2.9.0), DEBIAN_MIRROR (http://deb.debian.org/debian),
# DEBIAN_SUITE (bookworm). A tag the engine has already is kept: remove it
# (`docker rmi TAG`) to build again.
set -euo pipefail

tag="${1:-flare-launcher-nvflare:2.9.0}"
nvflare_version="${NVFLARE_VERSION:-2.9.0}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-bookworm}"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "build-nvflare-image: $tag exists already"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d)
root="$work/rootfs"
cleanup() {
    for mount in "$root/proc" "$root/dev"; do
        mountpoint -q "$mount" && umount -l "$mount"
    done
    rm -rf "$work"
}
trap cleanup EXIT

echo "build-nvflare-image: a minimal $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }

echo "build-nvflare-image: nvflare==$nvflare_version and numpy from PyPI"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The host's certificate authorities, for a network whose TLS the host's trust
# (a site's proxy, say) and the fresh system's does not.
cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$root/tmp/host-ca.crt"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
chroot "$root" python3 -m venv /opt/nvflare
# A clean environment: the host's settings (certificate paths among them) name
# the host's files.
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root /opt/nvflare/bin/pip install --quiet --no-cache-dir \
    --disable-pip-version-check --cert /tmp/host-ca.crt "nvflare==$nvflare_version" numpy
umount -l "$root/proc" "$root/dev"
# What the image does not need: package lists, caches, the host's files.
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/* "$root/etc/resolv.conf" \
    "$root/tmp/host-ca.crt"
# Jobs run as the worker's uid, which may have no passwd entry: HOME and the
# PATH to the environment come from the image.
mkdir -p "$root/home/nvflare" && chmod 1777 "$root/home/nvflare"

echo "build-nvflare-image: importing $tag"
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/opt/nvflare/bin:/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV HOME=/home/nvflare' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'WORKDIR /home/nvflare' \
    - "$tag" >/dev/null
docker run --rm "$tag" python3 -c 'import nvflare, numpy; print("nvflare", nvflare.__version__, "numpy", numpy.__version__)'
