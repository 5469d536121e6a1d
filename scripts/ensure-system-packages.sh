#!/usr/bin/env bash
# Install the Debian packages the system tests use (promtool from `prometheus`), when missing.
# Needs root and apt-get; elsewhere it says what is missing and the tests that need it skip.
set -euo pipefail

declare -A COMMAND_PACKAGE=( [promtool]=prometheus [nginx]=nginx )
missing=()
for command in "${!COMMAND_PACKAGE[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${COMMAND_PACKAGE[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not installing ${missing[*]} (needs root and apt-get); tests that need them will skip" >&2
    exit 0
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
