#!/bin/bash
# Healthy when Prometheus answers /-/ready (the image has no curl: bash's /dev/tcp does).
address="${PROMETHEUS_ADDRESS:-127.0.0.1:9090}"
host="${address%:*}"
case "$host" in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/$host/${address##*:}" || exit 1
printf 'GET /-/ready HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
read -r -t 2 status_line <&3 || exit 1
case "$status_line" in *" 200 "*) exit 0 ;; *) exit 1 ;; esac
