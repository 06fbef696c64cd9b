#!/usr/bin/env bash
# Makes a Python 3.11 base image from Debian packages alone and imports it into podman, for
# machines that cannot pull one from a registry (no Docker Hub). Needs root, debootstrap and
# podman. The result is the image `make image` builds on when python:3.11-slim is out of reach.
#
#   containers/base-image.sh [IMAGE]     (default: localhost/vision-pipelines-base:bookworm)
#
# The Debian mirror is the machine's own (DEBIAN_MIRROR overrides it), so a host behind a proxy
# or a snapshot mirror builds from what it already trusts. Nothing of this machine goes into the
# image: apt's lists and caches are removed and /etc/apt/sources.list names the public mirror.
set -euo pipefail

IMAGE="${1:-localhost/vision-pipelines-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,ca-certificates,passwd"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"

need() {
    command -v "$1" >/dev/null || { echo "base-image: $1 not found (apt-get install $2)" >&2; exit 2; }
}
need debootstrap debootstrap
need podman podman
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 2; }

if [ -z "${REBUILD:-}" ] && podman image exists "$IMAGE"; then
    echo "base-image: $IMAGE exists (REBUILD=1 to make it again)"
    exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # The first Debian (not security) URI of the machine's apt sources, deb822 or one-line style.
    mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v security | head -n1 || true)
    [ -n "$mirror" ] || mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -v security | head -n1 || true)
    mirror="${mirror:-http://deb.debian.org/debian}"
fi

work=$(mktemp -d /var/tmp/vp-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "base-image: debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/var/cache/apt/*.bin \
    "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/log/* "$work/root"/tmp/*
echo "deb http://deb.debian.org/debian $SUITE main" >"$work/root/etc/apt/sources.list"
# python3 is python 3.11 on bookworm; the Dockerfile calls `python3`, and `python` for symmetry
# with the python:3.11-slim base.
ln -sf python3 "$work/root/usr/bin/python"
tar -C "$work/root" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --quiet - "$IMAGE" >/dev/null
echo "base-image: $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)" \
    "in $(( $(date +%s) - start )) s"
