#!/usr/bin/env bash
# Make a Debian bookworm base image without pulling from an image registry (none is reachable
# in CI): debootstrap a minimal root filesystem from the machine's own Debian mirror and
# `docker import` it. Usage: scripts/local-base-image.sh [IMAGE_NAME]   (default rnn-sentiment-base:bookworm)
#
# Cached twice, so reruns take a second: the image in the engine, and the root filesystem
# tarball under .deploy-cache/base/ (git-ignored) for a freshly started engine.
# Needs root, debootstrap and a running Docker engine. Prints the image name on success.
set -euo pipefail

image="${1:-rnn-sentiment-base:bookworm}"
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cache_dir="$repo_root/.deploy-cache/base"
tarball="$cache_dir/bookworm-minbase.tar"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi

if [ ! -s "$tarball" ]; then
    # The mirror is this machine's own apt source, read at run time: never written into a file here.
    sources=/etc/apt/sources.list.d/debian.sources
    mirror=""
    if [ -r "$sources" ]; then
        mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")"
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
        mirror="$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)"
    fi
    if [ -z "$mirror" ]; then
        echo "error: no Debian mirror found in $sources or /etc/apt/sources.list" >&2
        exit 1
    fi
    command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed" >&2; exit 1; }

    mkdir -p "$cache_dir"
    rootfs="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
    echo "debootstrap bookworm (minbase) into $rootfs" >&2
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 \
        || { tail -20 "$cache_dir/debootstrap.log" >&2; exit 1; }
    # debootstrap leaves the downloaded packages behind; an image has no use for them.
    rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
    rm -rf "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi

docker import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "$image"
