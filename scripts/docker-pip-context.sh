#!/usr/bin/env bash
# Put this machine's pip material into the Docker build context, for builds behind a
# TLS-intercepting proxy or without the PyPI/PyTorch indexes (CI here): the CA bundle named by
# $PIP_CERT and the wheels in the $PIP_FIND_LINKS directories go to .deploy-cache/pip/
# (git-ignored, the only part of .deploy-cache the .dockerignore lets in).
#
# The image's pip uses whatever lies there (see the Dockerfile); with local wheels, an empty
# TORCH_INDEX_URL keeps pip off the PyTorch index:
#   scripts/docker-pip-context.sh && docker build --build-arg TORCH_INDEX_URL= .
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$repo_root/.deploy-cache/pip"
mkdir -p "$dest/wheels"

if [ -n "${PIP_CERT:-}" ] && [ -r "$PIP_CERT" ]; then
    cp -u "$PIP_CERT" "$dest/ca.crt"
else
    rm -f "$dest/ca.crt"
fi

wanted=()
for location in ${PIP_FIND_LINKS:-}; do
    location="${location#file://}"
    [ -d "$location" ] || continue
    for wheel in "$location"/*.whl; do
        [ -e "$wheel" ] || continue
        wanted+=("$(basename "$wheel")")
        cp -u "$wheel" "$dest/wheels/"
    done
done
# Drop wheels this machine no longer offers, so the context does not grow forever.
for cached in "$dest"/wheels/*.whl; do
    [ -e "$cached" ] || continue
    name="$(basename "$cached")"
    [[ " ${wanted[*]-} " == *" $name "* ]] || rm -f "$cached"
done
[ ${#wanted[@]} -gt 0 ] || rmdir "$dest/wheels"
echo "pip material for Docker builds: $(ls "$dest" | tr '\n' ' ')" >&2
