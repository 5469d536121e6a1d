#!/usr/bin/env bash
# Install the Debian packages the tests use (promtool from `prometheus`, nginx, chromium, Docker), when missing.
# Needs root and apt-get; elsewhere it says what is missing and the tests that need it skip.
set -euo pipefail

# chromium: the trace HTML screenshot test (tests/integration/test_trace_browser.py).
# dockerd, docker-compose, debootstrap: the docker-compose stack test (tests/system/test_docker_stack.py).
declare -A COMMAND_PACKAGE=(
    [promtool]=prometheus [prometheus]=prometheus [nginx]=nginx [chromium]=chromium
    [dockerd]=docker.io [docker-compose]=docker-compose [debootstrap]=debootstrap
)
missing=()
for command in "${!COMMAND_PACKAGE[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${COMMAND_PACKAGE[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)  # promtool and prometheus: one package

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not installing ${missing[*]} (needs root and apt-get); tests that need them will skip" >&2
    exit 0
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
