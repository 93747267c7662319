# shellcheck shell=bash
# etcd (sourced by scripts/cluster.sh): one member per host, a 3-member cluster that Patroni uses
# as its DCS. Raft timing is relaxed from etcd's defaults (100/1000 ms) to 250/2500 ms, so a
# machine loaded by other work does not make the members re-elect; a cut member is still noticed
# in 2.5 s. --pre-vote: a healed member that campaigned alone with ever higher terms does not
# depose the leader when it comes back (without it, a heal costs an election, and Patroni's
# leader, unable to reach etcd meanwhile, demoted itself).

etcd_endpoints() {
    local n sep=""
    for n in "${HOSTS[@]}"; do printf '%shttp://%s:2379' "$sep" "$(ip_of "$n")"; sep=,; done
}

etcd_start() {
    local n=$1 ip peers="" m sep=""
    ip=$(ip_of "$n")
    for m in "${HOSTS[@]}"; do peers+="${sep}h$m=http://$(ip_of "$m"):2380"; sep=,; done
    # On a second `up` the data folder exists and etcd ignores the --initial-* flags.
    start_daemon "$n" etcd root etcd --name "h$n" --data-dir "$(hostdir "$n")/etcd" \
        --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
        --listen-client-urls "http://$ip:2379,http://127.0.0.1:2379" \
        --advertise-client-urls "http://$ip:2379" \
        --initial-cluster "$peers" --initial-cluster-state new \
        --initial-cluster-token agentdeck-cluster \
        --heartbeat-interval 250 --election-timeout 2500 --pre-vote \
        --logger zap --log-level warn
}

etcdctl_() { ETCDCTL_API=3 etcdctl --dial-timeout=2s --command-timeout=4s "$@"; }

etcd_ready() {
    wait_until etcd "$TIMEOUT" etcdctl_ --endpoints="$(etcd_endpoints)" endpoint health
}

# leader|follower|down, as the member on host N sees itself (asked inside its namespace, so a
# cut member still answers).
etcd_role() {
    live_pid "$(hostdir "$1")/etcd.pid" >/dev/null || { echo down; return; }
    local line
    line=$(in_ns "$1" env ETCDCTL_API=3 etcdctl --dial-timeout=2s --command-timeout=3s \
        --endpoints=http://127.0.0.1:2379 endpoint status -w simple 2>/dev/null) || {
        echo unhealthy
        return
    }
    # endpoint, ID, version, db size, is leader, is learner, raft term, ...
    [[ $(cut -d, -f5 <<<"$line" | tr -d ' ') == true ]] && echo leader || echo follower
}
