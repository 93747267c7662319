#!/usr/bin/env bash
# Three HA test hosts on this machine: Linux network namespaces adk-h1..adk-h3 on a bridge, each
# running one RabbitMQ node (one cluster, quorum queues of 3), one Redis (h1 starts as primary,
# h2 and h3 replicate) with a Sentinel, one etcd member (a 3-member cluster) and one Patroni
# managing PostgreSQL 15 (a primary, one synchronous standby, one more standby).
#
#   scripts/cluster.sh up               start what is missing (and heal cut hosts), wait until
#                                       every engine is healthy
#   scripts/cluster.sh env              the export AGENTDECK_*_URL=... lines for the cluster
#   scripts/cluster.sh cut N            take host N off the network (a partition)
#   scripts/cluster.sh heal N           put host N back
#   scripts/cluster.sh kill N SERVICE   SIGKILL one engine on host N
#                                       (rabbitmq|redis|sentinel|postgres|patroni|etcd)
#   scripts/cluster.sh status           per host: link, each engine and its role
#   scripts/cluster.sh down             remove everything `up` made (processes, namespaces,
#                                       bridge, /etc/hosts lines, state folder)
#
# Runs as root. The hosts are 10.213.7.1-3 (h1-h3 in /etc/hosts), the root namespace is
# 10.213.7.254 on the bridge; nothing else on the machine is touched, the RabbitMQ, epmd,
# Redis and PostgreSQL of the root namespace included: every process here is started inside a
# namespace and stopped by its PID file or by `ip netns pids`.
#
# Settings (environment): AGENTDECK_CLUSTER_DIR (state, default /tmp/agentdeck-cluster),
# AGENTDECK_CLUSTER_VENV (Patroni's virtualenv, kept across `down` as a cache, default
# /var/cache/agentdeck-cluster/patroni-venv), AGENTDECK_CLUSTER_TIMEOUT (seconds `up` may wait,
# once installed, for every engine to be healthy; default 600).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

STATE=${AGENTDECK_CLUSTER_DIR:-/tmp/agentdeck-cluster}
VENV=${AGENTDECK_CLUSTER_VENV:-/var/cache/agentdeck-cluster/patroni-venv}
TIMEOUT=${AGENTDECK_CLUSTER_TIMEOUT:-600}
[[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "cluster: AGENTDECK_CLUSTER_TIMEOUT must be seconds, not '$TIMEOUT'" >&2; exit 1; }
DEADLINE=$((SECONDS + TIMEOUT))  # `up` sets it again once the installs are done
NET=10.213.7             # a /24 nothing else here uses; .1-.3 the hosts, .254 the root namespace
ROOT_IP=$NET.254
BRIDGE=adk-br0
HOSTS=(1 2 3)
SERVICES=(rabbitmq redis sentinel postgres patroni etcd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ns() { printf 'adk-h%s' "$1"; }
ip_of() { printf '%s.%s' "$NET" "$1"; }
hostdir() { printf '%s/h%s' "$STATE" "$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

check_host() {
    [[ ${1:-} =~ ^[123]$ ]] || die "host must be 1, 2 or 3, not '${1:-}'"
}

# The PID in a PID file, if that process is alive.
live_pid() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

# start_daemon N NAME USER CMD...: run CMD in host N's namespace in a session of its own (so it
# outlives this script and its caller's signals), as USER, logging to hN/NAME.log; its PID goes
# to hN/NAME.pid. Does nothing when that PID is alive.
start_daemon() {
    local n=$1 name=$2 user=$3
    shift 3
    local pidf logf
    pidf="$(hostdir "$n")/$name.pid"
    logf="$(hostdir "$n")/$name.log"
    live_pid "$pidf" >/dev/null && return 0
    local -a as=()
    [[ $user == root ]] || as=(setpriv --reuid="$user" --regid="$user" --init-groups)
    # The inner sh writes its own PID, then execs: the PID is the daemon's.
    # shellcheck disable=SC2016  # $$ and $@ are the inner sh's
    in_ns "$n" setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidf" "${as[@]}" "$@" \
        >>"$logf" 2>&1 </dev/null &
    log "h$n: started $name"
}

# wait_until WHAT SECONDS CMD...: poll CMD each second until it succeeds; false after SECONDS,
# or sooner at `up`'s DEADLINE.
wait_until() {
    local what=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit)) started=$SECONDS
    ((end <= DEADLINE)) || end=$DEADLINE
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            log "$what is not healthy after $((SECONDS - started))s"
            return 1
        fi
        sleep 1
    done
}

# shellcheck source=cluster/net.sh
source "$HERE/cluster/net.sh"
# shellcheck source=cluster/etcd.sh
source "$HERE/cluster/etcd.sh"
# shellcheck source=cluster/rabbitmq.sh
source "$HERE/cluster/rabbitmq.sh"
# shellcheck source=cluster/redis.sh
source "$HERE/cluster/redis.sh"
# shellcheck source=cluster/postgres.sh
source "$HERE/cluster/postgres.sh"

# What this needs from Debian, as command -> package; missing ones are installed.
ensure_tools() {
    local -A need=(
        [ip]=iproute2 [setpriv]=util-linux [curl]=curl [etcd]=etcd-server [etcdctl]=etcd-client
        [redis-server]=redis-server [redis-cli]=redis-tools [psql]=postgresql-client-15
        [/usr/lib/rabbitmq/bin/rabbitmq-server]=rabbitmq-server
        [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
        [/usr/bin/python3]=python3
    )
    local -a missing=()
    local cmd
    for cmd in "${!need[@]}"; do
        if [[ $cmd == /* ]]; then [[ -e $cmd ]] || missing+=("${need[$cmd]}")
        else command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}"); fi
    done
    # Patroni's virtualenv is made with Debian's Python (readable by the postgres user).
    [[ -x /usr/bin/python3 ]] && ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null &&
        missing+=(python3-venv)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
            --no-install-recommends "${missing[@]}" >&2
    fi
    patroni_install
}

secrets() {
    local f=$STATE/secrets.env
    if [[ ! -s $f ]]; then
        (
            umask 077
            {
                echo "RABBIT_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
                echo "PG_APP_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
                echo "PG_SUPER_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
                echo "PG_REPL_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
                echo "ERLANG_COOKIE=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
            } >"$f"
        )
    fi
    # shellcheck disable=SC1090
    source "$f"
}

cmd_up() {
    local start=$SECONDS
    ensure_tools
    DEADLINE=$((SECONDS + TIMEOUT))
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    secrets
    net_up
    local n
    for n in "${HOSTS[@]}"; do mkdir -p "$(hostdir "$n")"; chmod 755 "$(hostdir "$n")"; done
    for n in "${HOSTS[@]}"; do etcd_start "$n"; done
    for n in "${HOSTS[@]}"; do redis_start "$n"; done
    for n in "${HOSTS[@]}"; do rabbit_start "$n"; done
    local -a sick=()
    etcd_ready || sick+=(etcd)
    patroni_start_all
    redis_ready || sick+=(redis)
    rabbit_ready || sick+=(rabbitmq)
    patroni_ready || sick+=(postgres)
    if ((${#sick[@]})); then
        local s
        for s in "${sick[@]}"; do show_logs "$s"; done
        die "not healthy: ${sick[*]} (logs under $STATE/h*/)"
    fi
    log "up: every engine healthy after $((SECONDS - start))s"
}

show_logs() {
    local n f prefix=$1
    [[ $prefix == postgres ]] && prefix=patroni # Patroni's log holds PostgreSQL's
    for n in "${HOSTS[@]}"; do
        for f in "$(hostdir "$n")/$prefix"*.log; do
            [[ -f $f ]] || continue
            log "--- last lines of $f"
            tail -n 15 "$f" >&2 || true
        done
    done
}

cmd_env() {
    [[ -s $STATE/secrets.env ]] || die "no cluster here: run 'scripts/cluster.sh up' first"
    secrets
    echo "export AGENTDECK_BUS_URL='amqp://agentdeck:$RABBIT_PASS@h1:5672,h2:5672,h3:5672/agentdeck?heartbeat=5'"
    echo "export AGENTDECK_REGISTRY_URL='redis+sentinel://h1:26379,h2:26379,h3:26379/mymaster'"
    echo "export AGENTDECK_STORE_URL='postgresql://agentdeck:$PG_APP_PASS@h1:5432,h2:5432,h3:5432/agentdeck?target_session_attrs=read-write&command_timeout=10'"
}

cmd_kill() {
    local n=${1:-} service=${2:-}
    check_host "$n"
    local pidf pid
    case $service in
        rabbitmq) pidf="$(hostdir "$n")/rabbitmq/beam.pid" ;;
        postgres) pidf="$(hostdir "$n")/pg/data/postmaster.pid" ;;
        redis | sentinel | patroni | etcd) pidf="$(hostdir "$n")/$service.pid" ;;
        *) die "service must be one of ${SERVICES[*]}, not '$service'" ;;
    esac
    # postmaster.pid holds more than the PID: its first line is the PID.
    pid=$(head -n1 "$pidf" 2>/dev/null || true)
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
        die "$service is not running on h$n"
    fi
    kill -KILL "$pid"
    log "h$n: killed $service (pid $pid)"
}

cmd_status() {
    [[ -d $STATE ]] || die "no cluster here: run 'scripts/cluster.sh up' first"
    local n
    for n in "${HOSTS[@]}"; do
        printf 'h%s %s link=%s etcd=%s rabbitmq=%s redis=%s sentinel=%s postgres=%s patroni=%s\n' \
            "$n" "$(ip_of "$n")" "$(link_state "$n")" "$(etcd_role "$n")" "$(rabbit_role "$n")" \
            "$(redis_role "$n")" "$(sentinel_view "$n")" "$(postgres_role "$n")" \
            "$(live_pid "$(hostdir "$n")/patroni.pid" >/dev/null && echo up || echo down)"
    done
}

cmd_down() {
    local n
    for n in "${HOSTS[@]}"; do ns_kill_all "$n"; done
    net_down
    rm -rf "$STATE"
    log "down: removed processes, namespaces, bridge, /etc/hosts lines and $STATE"
}

main() {
    local verb=${1:-}
    if [[ $verb == "" || $verb == -h || $verb == --help ]]; then
        awk 'NR > 1 && /^#/ && !/shellcheck/ {print} /^set -euo/ {exit}' "$0"
        exit 0
    fi
    [[ $(id -u) == 0 ]] || die "run as root (it makes network namespaces)"
    shift
    case $verb in
        up) cmd_up ;;
        env) cmd_env ;;
        cut) check_host "${1:-}"; link_set "$1" down; log "h$1 cut off" ;;
        heal) check_host "${1:-}"; link_set "$1" up; log "h$1 back on the network" ;;
        kill) cmd_kill "$@" ;;
        status) cmd_status ;;
        down) cmd_down ;;
        *) die "unknown command '$verb': use up, env, cut N, heal N, kill N SERVICE, status or down" ;;
    esac
}

main "$@"
