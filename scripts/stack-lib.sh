# Shared by scripts/stack-up.sh and scripts/stack-down.sh (sourced, not run): which Compose to
# call, the addresses the stack binds, who holds a port, and the Docker engine make up started.
# Compose detection and the address list use bash builtins only, so the unit tests can run them
# with nothing on PATH but stand-in `docker` and `docker-compose` commands.

STACK_REPO_ROOT="$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)"
# What make up leaves for make down (git-ignored): the PID of a dockerd it started.
STACK_STATE_DIR="$STACK_REPO_ROOT/.deploy-cache/stack"
STACK_DOCKERD_PID_FILE="$STACK_STATE_DIR/dockerd.pid"
# Compose 1.28 is the first v1 with profiles (COMPOSE_PROFILES) and `service_healthy` in the spec.
COMPOSE_V1_MINIMUM=(1 28)

stack_say() { printf 'make up: %s\n' "$*" >&2; }
stack_die() { printf 'make up: error: %s\n' "$*" >&2; exit 1; }

# Sets STACK_COMPOSE (an array: the command to run) and STACK_COMPOSE_VERSION, or fails saying
# what to install. Prefers v2's plugin (`docker compose`); else `docker-compose`, which is v1
# (1.28+) or v2's standalone binary. Profiles are always chosen through COMPOSE_PROFILES: v1 has
# no `docker compose --profile`, and `docker-compose --profile` is unknown before 1.28.
stack_detect_compose() {
    local version major minor
    if command -v docker >/dev/null 2>&1 && version="$(docker compose version --short 2>/dev/null)" \
            && [ -n "$version" ]; then
        STACK_COMPOSE=(docker compose)
        STACK_COMPOSE_VERSION="${version#v}"
        return 0
    fi
    if command -v docker-compose >/dev/null 2>&1; then
        version="$(docker-compose version --short 2>/dev/null)" || version=""
        version="${version#v}"
        if [[ "$version" =~ ^([0-9]+)\.([0-9]+) ]]; then
            major="${BASH_REMATCH[1]}"
            minor="${BASH_REMATCH[2]}"
            if (( major > COMPOSE_V1_MINIMUM[0] || (major == COMPOSE_V1_MINIMUM[0] && minor >= COMPOSE_V1_MINIMUM[1]) )); then
                STACK_COMPOSE=(docker-compose)
                STACK_COMPOSE_VERSION="$version"
                return 0
            fi
            stack_die "docker-compose $version is too old: the stack needs Compose v2, or v1 ${COMPOSE_V1_MINIMUM[0]}.${COMPOSE_V1_MINIMUM[1]} or later (profiles, health-checked depends_on)"
        fi
        stack_die "cannot read the version of docker-compose ($(command -v docker-compose)): \`docker-compose version --short\` printed '$version'"
    fi
    stack_die "neither \`docker compose\` (Compose v2) nor \`docker-compose\` (v1 1.28+) is installed: install Docker's compose plugin, or on Debian/Ubuntu \`apt-get install docker-compose\`"
}

# The Grafana service's image, as Compose resolves docker-compose.yml (the one place it is named).
# awk reads to the end: quitting early would kill Compose with SIGPIPE and fail the pipeline.
stack_grafana_image() {
    COMPOSE_PROFILES=grafana "${STACK_COMPOSE[@]}" config 2>/dev/null | awk '
        /^[^ ]/ { in_services = ($0 ~ /^services:/) }
        in_services && /^  [^ ]/ { service = $1 }
        in_services && service == "grafana:" && $1 == "image:" && !found { print $2; found = 1 }'
}

# The RNNS_* variables of a .env file beside docker-compose.yml, for those not set in the
# environment: Compose reads that file, so the addresses checked here must too.
stack_read_dotenv() {
    local file="$STACK_REPO_ROOT/.env" line name
    [ -r "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        [[ "$line" =~ ^[[:space:]]*(RNNS_[A-Z0-9_]+)=(.*)$ ]] || continue
        name="${BASH_REMATCH[1]}"
        [ -n "${!name+set}" ] && continue
        line="${BASH_REMATCH[2]}"
        line="${line%\"}"; line="${line#\"}"; line="${line%\'}"; line="${line#\'}"
        export "$name=$line"
    done <"$file"
}

# Prints "NAME ADDRESS" for every address the stack binds on the host (all of them: with host
# networking a container's listen address is the host's). The defaults are docker-compose.yml's.
# Grafana's only with STACK_WITH_GRAFANA=1; the TLS listener only with docker-compose.tls.yml in
# COMPOSE_FILE.
stack_addresses() {
    echo "load-balancer ${RNNS_LB_ADDRESS:-127.0.0.1:50051}"
    if [[ "${COMPOSE_FILE:-}" == *docker-compose.tls.yml* ]]; then
        echo "load-balancer-tls ${RNNS_LB_TLS_ADDRESS:-127.0.0.1:50443}"
    fi
    echo "rnn-sentiment-1 ${RNNS_REPLICA1_ADDRESS:-127.0.0.1:50052}"
    echo "rnn-sentiment-1-metrics ${RNNS_REPLICA1_METRICS:-127.0.0.1:9465}"
    echo "rnn-sentiment-2 ${RNNS_REPLICA2_ADDRESS:-127.0.0.1:50053}"
    echo "rnn-sentiment-2-metrics ${RNNS_REPLICA2_METRICS:-127.0.0.1:9466}"
    echo "prometheus ${RNNS_PROMETHEUS_ADDRESS:-127.0.0.1:9090}"
    if [ "${STACK_WITH_GRAFANA:-0}" = 1 ]; then
        echo "grafana ${RNNS_GRAFANA_HOST:-127.0.0.1}:${RNNS_GRAFANA_PORT:-3000}"
    fi
}

# A host to connect to for ADDRESS: its own host, or loopback for a wildcard.
stack_connect_host() {
    local host="${1%:*}"
    host="${host#[}"; host="${host%]}"
    case "$host" in "" | 0.0.0.0 | "::" | "*") host=127.0.0.1 ;; esac
    echo "$host"
}

# Prints who listens on TCP ADDRESS ("PID COMMAND-LINE", or "? unknown process" when this user
# may not see it); prints nothing and fails when the address is free. A listener on the
# wildcard, on the same host, or anywhere when ADDRESS is itself a wildcard, takes it.
stack_port_holder() {
    local address="$1" port="${1##*:}" host line local_address listen_host users pid
    host="${address%:*}"; host="${host#[}"; host="${host%]}"
    if command -v ss >/dev/null 2>&1; then
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            # columns: State Recv-Q Send-Q Local:Port Peer:Port [users:(("name",pid=N,fd=M))]
            read -r _ _ _ local_address _ users <<<"$line"
            listen_host="${local_address%:*}"; listen_host="${listen_host#[}"; listen_host="${listen_host%]}"
            listen_host="${listen_host%%%*}"  # 127.0.0.1%lo: the interface does not matter here
            case "$listen_host" in
                "$host" | 0.0.0.0 | "::" | "*") ;;
                *) case "$host" in 0.0.0.0 | "::" | "*" | "") ;; *) continue ;; esac ;;
            esac
            if [[ "$users" =~ pid=([0-9]+) ]]; then
                pid="${BASH_REMATCH[1]}"
                echo "$pid $(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
            else
                echo "? a process this user cannot see (run as root to name it)"
            fi
            return 0
        done < <(ss -Hltnp "sport = :$port" 2>/dev/null)
        return 1
    fi
    # No ss (iproute2): a connection that succeeds means someone listens; whom is unknown.
    if timeout 2 bash -c "exec 3<>/dev/tcp/$(stack_connect_host "$address")/$port" 2>/dev/null; then
        echo "? unknown process (install iproute2 to name it)"
        return 0
    fi
    return 1
}

# Whether process PID runs inside one of the containers whose IDs are given (its cgroup path
# names the container): the stack's own listeners are no clash when make up runs again.
stack_pid_in_containers() {
    local pid="$1" cgroup id
    shift
    [ "$pid" != "?" ] && [ -r "/proc/$pid/cgroup" ] || return 1
    cgroup="$(cat "/proc/$pid/cgroup")"
    for id in "$@"; do
        [ -n "$id" ] && [[ "$cgroup" == *"${id:0:12}"* ]] && return 0
    done
    return 1
}

# Fails, naming every taken address and its holder, when another process listens on an address
# the stack binds. Container IDs given as arguments are the stack's own (already running).
stack_check_ports() {
    local name address holder pid clashes=()
    while read -r name address; do
        holder="$(stack_port_holder "$address")" || continue
        pid="${holder%% *}"
        stack_pid_in_containers "$pid" "$@" && continue
        clashes+=("$address ($name) is taken by PID $holder")
    done < <(stack_addresses)
    if [ ${#clashes[@]} -gt 0 ]; then
        printf 'make up: error: %s\n' "${clashes[@]}" >&2
        printf 'make up: stop that process first (a `make serve` holds 127.0.0.1:50051 and :9464: Ctrl-C it), or move the stack with the RNNS_*_ADDRESS variables (docs/deployment.md), e.g. RNNS_LB_ADDRESS=127.0.0.1:50061 make up\n' >&2
        return 1
    fi
}

# Whether PID_FILE names a live process called COMMAND (not a PID reused by something else).
stack_pid_file_names() {
    local pid_file="$1" command="$2" pid
    pid="$(cat "$pid_file" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$command" ] || return 1
    # a zombie is as good as gone
    [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != [ZX] ]]
}
