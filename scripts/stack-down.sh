#!/usr/bin/env bash
# `make down`: stop and remove the stack `make up` started (Grafana included), and the Docker
# engine when `make up` was the one that started it. An engine that was already running stays.
#
#   scripts/stack-down.sh              # keeps Prometheus' and Grafana's data volumes
#   scripts/stack-down.sh --volumes    # drops them too
set -euo pipefail
source "$(dirname "$0")/stack-lib.sh"
cd "$STACK_REPO_ROOT"

stack_say() { printf 'make down: %s\n' "$*" >&2; }
stack_die() { printf 'make down: error: %s\n' "$*" >&2; exit 1; }

main() {
    local down_args=(--remove-orphans)
    case "${1:-}" in
        --volumes) down_args+=(--volumes) ;;
        "") ;;
        *) stack_die "unknown argument '$1' (usage: scripts/stack-down.sh [--volumes])" ;;
    esac
    stack_read_dotenv
    stack_detect_compose
    if docker info >/dev/null 2>&1; then
        # Every profile make up may have started, so that their containers go too.
        COMPOSE_PROFILES=grafana "${STACK_COMPOSE[@]}" down "${down_args[@]}"
    else
        stack_say "no Docker engine answers: no stack to remove"
    fi
    if stack_pid_file_names "$STACK_DOCKERD_PID_FILE" dockerd; then
        local pid
        pid="$(cat "$STACK_DOCKERD_PID_FILE")"
        stack_say "stopping the Docker engine make up started (dockerd, PID $pid)"
        kill -TERM "$pid"
        local deadline=$((SECONDS + 60))
        # Gone, or a zombie (its parent, make, exited long ago: whoever reaps it is not us).
        while stack_pid_file_names "$STACK_DOCKERD_PID_FILE" dockerd; do
            (( SECONDS < deadline )) || stack_die "dockerd (PID $pid) still runs 60 s after SIGTERM"
            sleep 0.5
        done
    fi
    rm -f "$STACK_DOCKERD_PID_FILE"
    stack_say "done"
}

main "$@"
