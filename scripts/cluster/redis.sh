# shellcheck shell=bash
# Redis (sourced by scripts/cluster.sh): one server per host on 6379 (h1 starts as the primary,
# h2 and h3 replicate it) and one Sentinel per host on 26379 watching `mymaster` with a quorum
# of 2. Sentinel timing: down-after-milliseconds 3000 (a silent primary is subjectively down
# after 3 s), failover-timeout 10000, parallel-syncs 1: a failover completes in about 5 s.
# A primary cut off from its replicas stops taking writes after 10 s (min-replicas-to-write 1,
# min-replicas-max-lag 10), which bounds what a partitioned old primary can accept.
#
# The config files are written once: Sentinel and failovers rewrite them (who is primary),
# and a second `up` must not undo that.

redis_dir() { printf '%s/redis' "$(hostdir "$1")"; }

redis_start() {
    local n=$1 d ip
    d=$(redis_dir "$n")
    ip=$(ip_of "$n")
    mkdir -p "$d"
    if [[ ! -s $d/redis.conf ]]; then
        {
            echo "bind 0.0.0.0"
            echo "port 6379"
            echo "protected-mode no"
            echo "dir $d"
            echo "save \"\""
            echo "appendonly no"
            echo "repl-diskless-sync yes"
            echo "repl-diskless-sync-delay 0"
            echo "min-replicas-to-write 1"
            echo "min-replicas-max-lag 10"
            echo "replica-announce-ip $ip"
            [[ $n == 1 ]] || echo "replicaof $(ip_of 1) 6379"
        } >"$d/redis.conf"
    fi
    if [[ ! -s $d/sentinel.conf ]]; then
        {
            echo "bind 0.0.0.0"
            echo "port 26379"
            echo "protected-mode no"
            echo "dir $d"
            echo "sentinel announce-ip $ip"
            echo "sentinel monitor mymaster $(ip_of 1) 6379 2"
            echo "sentinel down-after-milliseconds mymaster 3000"
            echo "sentinel failover-timeout mymaster 10000"
            echo "sentinel parallel-syncs mymaster 1"
        } >"$d/sentinel.conf"
    fi
    start_daemon "$n" redis root redis-server "$d/redis.conf"
    start_daemon "$n" sentinel root redis-server "$d/sentinel.conf" --sentinel
}

rcli() { timeout 5 redis-cli "$@"; }

# The primary has both replicas linked, and every Sentinel sees a quorum of Sentinels.
redis_healthy() {
    local primary n
    primary=$(rcli -h "$(ip_of 1)" -p 26379 sentinel get-master-addr-by-name mymaster | head -n1)
    [[ -n $primary ]] || return 1
    [[ $(rcli -h "$primary" info replication | tr -d '\r' | grep -c '^slave[0-9]*:.*state=online') == 2 ]] ||
        return 1
    for n in "${HOSTS[@]}"; do
        rcli -h "$(ip_of "$n")" -p 26379 sentinel ckquorum mymaster | grep -q '^OK' || return 1
        # ckquorum counts Sentinels; each must also know both replicas.
        [[ $(rcli -h "$(ip_of "$n")" -p 26379 sentinel replicas mymaster | grep -cx ip) == 2 ]] ||
            return 1
    done
}

redis_ready() {
    wait_until "redis (primary + 2 replicas + 3 sentinels)" "$TIMEOUT" redis_healthy
}

# master|replica|down, as the server on host N says (asked inside its namespace).
redis_role() {
    live_pid "$(hostdir "$1")/redis.pid" >/dev/null || { echo down; return; }
    local role
    role=$(in_ns "$1" timeout 5 redis-cli -h 127.0.0.1 role 2>/dev/null | head -n1) || true
    case $role in master) echo primary ;; slave) echo replica ;; *) echo unknown ;; esac
}

# The primary's address this host's Sentinel names, or down.
sentinel_view() {
    live_pid "$(hostdir "$1")/sentinel.pid" >/dev/null || { echo down; return; }
    local ip
    ip=$(in_ns "$1" timeout 5 redis-cli -h 127.0.0.1 -p 26379 \
        sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n1) || true
    echo "primary@${ip:-unknown}"
}
