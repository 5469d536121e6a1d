#!/usr/bin/env bash
# Install h2load (Debian package nghttp2-client), the C HTTP/2 load generator the benchmarks use.
# Needs root and apt-get; elsewhere it says what to install and fails.
set -euo pipefail
command -v h2load >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "h2load is missing: install nghttp2-client (Debian/Ubuntu: apt-get install nghttp2-client)" >&2
    exit 1
fi
echo "installing Debian package nghttp2-client (h2load)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
command -v h2load >/dev/null
