#!/bin/sh
# Grafana's entrypoint in docker-compose.yml: make sure the admin account never has a known
# password, then run Grafana's own start script.
#
# GF_SECURITY_ADMIN_PASSWORD (compose passes RNNS_GRAFANA_ADMIN_PASSWORD) is used when given;
# otherwise a random one is generated on the first start into the data volume, mode 0600, and
# reused after. The password itself is never printed. Grafana applies it when it creates the
# admin user, i.e. on a fresh data volume; for an existing one use `grafana cli admin
# reset-admin-password`.
set -eu
data="${GF_PATHS_DATA:-/var/lib/grafana}"
password_file="$data/admin-password"
case "${GF_SECURITY_ADMIN_PASSWORD:-}" in
    admin)
        echo "grafana: refusing the admin password 'admin': set RNNS_GRAFANA_ADMIN_PASSWORD to another, or leave it empty to generate one" >&2
        exit 2 ;;
    "")
        if [ ! -s "$password_file" ]; then
            umask 077
            head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$password_file.tmp"
            mv "$password_file.tmp" "$password_file"
            echo "grafana: generated the admin password into $password_file (docker compose exec grafana cat $password_file)" >&2
        fi
        GF_SECURITY_ADMIN_PASSWORD="$(cat "$password_file")"
        export GF_SECURITY_ADMIN_PASSWORD ;;
esac
exec "${GRAFANA_RUN:-/run.sh}" "$@"
