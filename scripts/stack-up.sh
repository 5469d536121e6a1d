#!/usr/bin/env bash
# `make up`: the docker-compose stack (two replicas, the nginx load balancer, Prometheus, and
# Grafana when its image is here) on a machine with or without an image registry.
#
#   scripts/stack-up.sh                 # what `make up` runs
#   scripts/stack-up.sh --check-ports   # only say whether the stack's addresses are free
#
# In order: find Compose (v2 `docker compose` or v1 1.28+ `docker-compose`); refuse, before
# anything starts, when another process listens on an address the stack binds; start the Docker
# engine when it is not running (root only); build the Debian base image offline (scripts/local-base-image.sh) unless
# RNNS_BASE_IMAGE names one; put pip's CA bundle and local wheels into the build context
# (scripts/docker-pip-context.sh), with the PyTorch index emptied when torch is among them; build
# and start; start Grafana only when its image is present (it comes from a registry); wait until
# a call through the load balancer is answered SERVING; print where everything is.
# Every RNNS_* variable of docker-compose.yml (set in the shell or in .env) is honoured.
set -euo pipefail
source "$(dirname "$0")/stack-lib.sh"
cd "$STACK_REPO_ROOT"

# The offline base image this script builds when none is given.
LOCAL_BASE_IMAGE=rnn-sentiment-base:bookworm
# How long the replicas, the balancer and Prometheus get to answer after `up`.
READY_TIMEOUT_SECONDS="${STACK_READY_TIMEOUT_SECONDS:-120}"

compose() { "${STACK_COMPOSE[@]}" "$@"; }

ensure_docker_engine() {
    command -v docker >/dev/null 2>&1 || stack_die "the docker command is not installed (Debian/Ubuntu: apt-get install docker.io)"
    docker info >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        stack_die "the Docker engine is not running, and starting it needs root: \`sudo systemctl start docker\`, or run \`sudo make up\`"
    fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        stack_say "the Docker engine is not running: starting it (systemctl start docker)"
        systemctl start docker || stack_die "systemctl start docker failed: see \`journalctl -u docker\`"
    else
        command -v dockerd >/dev/null 2>&1 || stack_die "the Docker engine is not installed (Debian/Ubuntu: apt-get install docker.io)"
        # Left behind by an engine that was killed: dockerd refuses to start over them.
        if [ -e /var/run/docker.pid ] && ! stack_pid_file_names /var/run/docker.pid dockerd; then
            rm -f /var/run/docker.pid
        fi
        local containerd_pid=/var/run/docker/containerd/containerd.pid
        if [ -e "$containerd_pid" ] && ! stack_pid_file_names "$containerd_pid" containerd; then
            rm -f "$containerd_pid"
        fi
        mkdir -p "$STACK_STATE_DIR"
        local log="$STACK_STATE_DIR/dockerd.log"
        # No systemd: dockerd by hand, without the bridge and firewall rules it cannot set up in
        # a container or a minimal VM (every service uses the host network). Its own session, so
        # it outlives make and a Ctrl-C; `make down` stops it again.
        stack_say "the Docker engine is not running: starting dockerd --iptables=false --ip6tables=false --bridge=none (log: $log)"
        setsid dockerd --iptables=false --ip6tables=false --bridge=none </dev/null >"$log" 2>&1 &
        local started=$!
        local deadline=$((SECONDS + 60))
        until docker info >/dev/null 2>&1; do
            if ! kill -0 "$started" 2>/dev/null; then
                tail -n 20 "$log" >&2
                stack_die "dockerd exited before it answered (log above, whole in $log)"
            fi
            (( SECONDS < deadline )) || stack_die "dockerd did not answer \`docker info\` within 60 s (log: $log)"
            sleep 0.5
        done
        echo "$started" >"$STACK_DOCKERD_PID_FILE"
    fi
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        (( SECONDS < deadline )) || stack_die "the Docker engine did not answer \`docker info\` within 60 s"
        sleep 0.5
    done
}

prepare_build() {
    if [ -z "${RNNS_BASE_IMAGE:-}" ]; then
        if ! docker image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
            command -v debootstrap >/dev/null 2>&1 || stack_die "building the offline base image needs debootstrap (apt-get install debootstrap); with an image registry instead: RNNS_BASE_IMAGE=python:3.11-slim RNNS_DEBIAN_IMAGE=debian:bookworm-slim make up"
            stack_say "building the base image $LOCAL_BASE_IMAGE offline (debootstrap from this machine's apt mirror, about 30 s once)"
        fi
        RNNS_BASE_IMAGE="$(scripts/local-base-image.sh "$LOCAL_BASE_IMAGE")" \
            || stack_die "scripts/local-base-image.sh failed; with an image registry instead: RNNS_BASE_IMAGE=python:3.11-slim RNNS_DEBIAN_IMAGE=debian:bookworm-slim make up"
        export RNNS_BASE_IMAGE
        export RNNS_DEBIAN_IMAGE="${RNNS_DEBIAN_IMAGE:-$RNNS_BASE_IMAGE}"
    fi
    scripts/docker-pip-context.sh 2>/dev/null
    if [ -z "${RNNS_TORCH_INDEX_URL+set}" ]; then
        if compgen -G ".deploy-cache/pip/wheels/torch-*.whl" >/dev/null; then
            # pip would otherwise try the PyTorch index first and retry it for minutes offline.
            export RNNS_TORCH_INDEX_URL=
            stack_say "torch from the local wheel in .deploy-cache/pip/wheels (RNNS_TORCH_INDEX_URL emptied)"
        else
            stack_say "torch from the PyTorch CPU index (no local torch wheel in \$PIP_FIND_LINKS)"
        fi
    fi
}

# HTTP status of GET URL_PATH on ADDRESS, through bash alone (no curl on a bare machine).
http_status() {
    local host port
    host="$(stack_connect_host "$1")"; port="${1##*:}"
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
        read -r _ status _ <&3 && echo "$status"' _ "$host" "$port" "$2" 2>/dev/null || echo 000
}

wait_until_serving() {
    local lb="${RNNS_LB_ADDRESS:-127.0.0.1:50051}" deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    local lb_ask="$(stack_connect_host "$lb"):${lb##*:}"
    # The client inside a replica's image (host network): the same call a user makes, no host Python needed.
    until compose exec -T rnn-sentiment-1 rnn-sentiment health "$lb_ask" --timeout 3 >/dev/null 2>&1; do
        if (( SECONDS >= deadline )); then
            compose ps >&2 || true
            compose logs --no-color --tail 20 lb >&2 || true
            stack_die "no SERVING answer through the load balancer at $lb within ${READY_TIMEOUT_SECONDS} s (state and its log above; \`make down\` removes the stack)"
        fi
        sleep 1
    done
    local prometheus="${RNNS_PROMETHEUS_ADDRESS:-127.0.0.1:9090}"
    until [ "$(http_status "$prometheus" /-/ready)" = 200 ]; do
        (( SECONDS < deadline )) || stack_die "Prometheus at $prometheus is not ready within ${READY_TIMEOUT_SECONDS} s"
        sleep 1
    done
}

# Prometheus' UI pages: /alerts on upstream builds; Debian's 2.42 (the image here) has only the
# classic UI, where /alerts is a 404 and the page is /classic/alerts.
prometheus_page() {
    local address="$1" page="$2"
    if [ "$(http_status "$address" "/$page")" = 200 ]; then
        echo "http://$address/$page"
    else
        echo "http://$address/classic/$page"
    fi
}

main() {
    local check_only=0
    case "${1:-}" in
        --check-ports) check_only=1 ;;
        "") ;;
        *) stack_die "unknown argument '$1' (usage: scripts/stack-up.sh [--check-ports])" ;;
    esac
    stack_read_dotenv
    stack_detect_compose
    # Before anything starts: the stack's own running containers (an engine answering, make up
    # run again) hold their addresses rightfully; anyone else's listener is a clash.
    local own=()
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        mapfile -t own < <(compose ps -q 2>/dev/null)
    fi
    stack_check_ports "${own[@]}" || exit 1
    if [ "$check_only" = 1 ]; then
        stack_say "every address the stack binds is free"
        return 0
    fi
    stack_say "using ${STACK_COMPOSE[*]} $STACK_COMPOSE_VERSION"
    ensure_docker_engine
    local grafana_wanted=0 grafana
    grafana="$(stack_grafana_image)"
    if [ -n "$grafana" ] && docker image inspect "$grafana" >/dev/null 2>&1; then
        grafana_wanted=1
        mapfile -t own < <(compose ps -q 2>/dev/null)
        STACK_WITH_GRAFANA=1 stack_check_ports "${own[@]}" || exit 1
    fi
    prepare_build
    stack_say "building the images (cached layers: seconds; the first build installs torch, minutes)"
    compose build rnn-sentiment-1 lb prometheus
    stack_say "starting the replicas (up waits for their health), then the load balancer and Prometheus"
    local profiles="${COMPOSE_PROFILES:-}"
    [ "$grafana_wanted" = 1 ] && profiles="${profiles:+$profiles,}grafana"
    COMPOSE_PROFILES="$profiles" compose up -d
    local grafana_line
    if [ "$grafana_wanted" = 1 ]; then
        grafana_line="http://${RNNS_GRAFANA_HOST:-127.0.0.1}:${RNNS_GRAFANA_PORT:-3000}  (admin password: ${STACK_COMPOSE[*]} exec grafana cat /var/lib/grafana/admin-password)"
    else
        grafana_line="skipped: its image ${grafana:-?} is not on this machine and comes from a registry (docker pull $grafana, then make up again)"
        stack_say "Grafana $grafana_line"
    fi
    wait_until_serving
    local lb="${RNNS_LB_ADDRESS:-127.0.0.1:50051}" prometheus="${RNNS_PROMETHEUS_ADDRESS:-127.0.0.1:9090}"
    cat <<EOF
rnn-sentiment stack is up (${STACK_COMPOSE[*]} $STACK_COMPOSE_VERSION):
  gRPC, load balancer  $lb   try: ${STACK_COMPOSE[*]} exec rnn-sentiment-1 rnn-sentiment predict --target $(stack_connect_host "$lb"):${lb##*:} "a warm, funny film"
  replicas             ${RNNS_REPLICA1_ADDRESS:-127.0.0.1:50052}, ${RNNS_REPLICA2_ADDRESS:-127.0.0.1:50053}; metrics http://${RNNS_REPLICA1_METRICS:-127.0.0.1:9465}/metrics, http://${RNNS_REPLICA2_METRICS:-127.0.0.1:9466}/metrics
  Prometheus           http://$prometheus  alerts $(prometheus_page "$prometheus" alerts)  targets $(prometheus_page "$prometheus" targets)
  Grafana              $grafana_line
  stop it all:         make down
EOF
}

main "$@"
