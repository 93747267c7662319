# shellcheck shell=bash
# RabbitMQ (sourced by scripts/cluster.sh): node rabbit@hN on each host, its own folder, the
# cookie from secrets.env, AMQP on 5672 and distribution on 25672 of its namespace (the epmd it
# starts is its namespace's, never the root namespace's). h2 and h3 join h1's cluster. The vhost
# `agentdeck` has quorum as its default queue type, and a quorum queue gets 3 replicas
# (quorum_cluster_size). net_ticktime 10 s notices a cut node in 7-13 s instead of 45-75;
# pause_minority stops a node cut off from the others from serving.

rabbit_dir() { printf '%s/rabbitmq' "$(hostdir "$1")"; }

# The environment both the server and its CLI tools run in on host N.
rabbit_env() {
    local d
    d=$(rabbit_dir "$1")
    printf '%s\n' "HOME=$d/home" "RABBITMQ_NODENAME=rabbit@h$1" \
        "RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf" "RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins" "RABBITMQ_MNESIA_BASE=$d/mnesia" \
        "RABBITMQ_LOG_BASE=$d/log" "RABBITMQ_PID_FILE=$d/beam.pid" \
        "RABBITMQ_NODE_PORT=5672" "RABBITMQ_DIST_PORT=25672"
}

rabbitmqctl_() {
    local n=$1
    shift
    local -a envs
    mapfile -t envs < <(rabbit_env "$n")
    in_ns "$n" env "${envs[@]}" timeout "${RABBITMQCTL_TIMEOUT:-60}" /usr/lib/rabbitmq/bin/rabbitmqctl -n "rabbit@h$n" "$@"
}

rabbit_start() {
    local n=$1 d
    d=$(rabbit_dir "$n")
    mkdir -p "$d/home" "$d/mnesia" "$d/log"
    # Our own (empty) env file: /etc/rabbitmq/rabbitmq-env.conf pins the root node's name and
    # binds distribution to 127.0.0.1.
    : >"$d/rabbitmq-env.conf"
    echo '[].' >"$d/enabled_plugins"
    cat >"$d/rabbitmq.conf" <<CONF
listeners.tcp.default = 5672
cluster_partition_handling = pause_minority
log.file.level = info
log.console = false
CONF
    cat >"$d/advanced.config" <<CONF
[{kernel, [{net_ticktime, 10}]},
 {rabbit, [{quorum_cluster_size, 3}]}].
CONF
    if [[ ! -s $d/home/.erlang.cookie ]]; then
        (umask 077 && printf '%s' "$ERLANG_COOKIE" >"$d/home/.erlang.cookie")
    fi
    chmod 400 "$d/home/.erlang.cookie"
    local -a envs
    mapfile -t envs < <(rabbit_env "$n")
    start_daemon "$n" rabbitmq root env "${envs[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
}

rabbit_running_nodes() {
    rabbitmqctl_ "$1" -q cluster_status --formatter json 2>/dev/null |
        python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))' \
            2>/dev/null
}

rabbit_has_three() {
    [[ $(rabbit_running_nodes 1) == "rabbit@h1 rabbit@h2 rabbit@h3" ]]
}

rabbit_ready() {
    local n
    for n in "${HOSTS[@]}"; do
        wait_until "rabbitmq on h$n" "$TIMEOUT" rabbitmqctl_ "$n" -q await_startup || return 1
    done
    for n in 2 3; do
        if [[ " $(rabbit_running_nodes 1) " != *" rabbit@h$n "* ]]; then
            log "h$n: rabbit@h$n joins rabbit@h1"
            # The CLI's warnings while a node restarts its app go to the node's log.
            {
                rabbitmqctl_ "$n" -q stop_app && rabbitmqctl_ "$n" -q reset &&
                    rabbitmqctl_ "$n" -q join_cluster rabbit@h1 &&
                    rabbitmqctl_ "$n" -q start_app
            } >>"$(hostdir "$n")/rabbitmq.log" 2>&1 || return 1
        fi
    done
    wait_until "rabbitmq cluster of 3" "$TIMEOUT" rabbit_has_three || return 1
    if ! rabbitmqctl_ 1 -q list_users | grep -q '^agentdeck\b'; then
        rabbitmqctl_ 1 -q add_user agentdeck "$RABBIT_PASS" >/dev/null || return 1
    fi
    if ! rabbitmqctl_ 1 -q list_vhosts | grep -qx agentdeck; then
        rabbitmqctl_ 1 -q add_vhost agentdeck --default-queue-type quorum || return 1
    fi
    rabbitmqctl_ 1 -q set_permissions -p agentdeck agentdeck '.*' '.*' '.*' || return 1
}

# running:K (K = nodes of the cluster this node sees running)|down|starting
rabbit_role() {
    live_pid "$(hostdir "$1")/rabbitmq.pid" >/dev/null || { echo down; return; }
    local nodes
    # A paused node (pause_minority) may not answer: status waits 15 s at most.
    nodes=$(RABBITMQCTL_TIMEOUT=15 rabbit_running_nodes "$1") || { echo starting; return; }
    [[ -n $nodes ]] || { echo starting; return; }
    echo "running:$(wc -w <<<"$nodes")"
}
