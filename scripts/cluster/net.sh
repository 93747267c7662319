# shellcheck shell=bash
# The network of the test hosts (sourced by scripts/cluster.sh): a bridge in the root namespace
# holding $ROOT_IP, one namespace per host joined to it by a veth pair (adk-hN in the root
# namespace, eth0 inside), and the names h1-h3 in /etc/hosts. A cut is the root end of a host's
# veth set down: the host keeps its address and processes but reaches no one, and no one it.

HOSTS_MARK='# agentdeck-cluster'

net_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$ROOT_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Should the bridge ever lose its route, the subnet is unreachable rather than sent to the
    # default gateway: these addresses exist only here.
    ip route replace unreachable "$NET.0/24" metric 4096
    local n
    for n in "${HOSTS[@]}"; do
        local name veth
        name=$(ns "$n")
        veth=$name
        [[ -e /run/netns/$name ]] || ip netns add "$name"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$name"
        fi
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        in_ns "$n" ip link set lo up
        in_ns "$n" ip addr replace "$(ip_of "$n")/24" dev eth0
        in_ns "$n" ip link set eth0 up
    done
    hosts_write
}

# The h1-h3 lines in /etc/hosts, rewritten in place (the file may be a bind mount) only when
# they differ, so readers elsewhere on the machine never see a half-written file for nothing.
hosts_write() {
    local want n
    want=$(for n in "${HOSTS[@]}"; do printf '%s h%s %s\n' "$(ip_of "$n")" "$n" "$HOSTS_MARK"; done)
    [[ $(grep -F "$HOSTS_MARK" /etc/hosts || true) == "$want" ]] && return 0
    local keep
    keep=$(grep -vF "$HOSTS_MARK" /etc/hosts || true)
    printf '%s\n%s\n' "$keep" "$want" >/etc/hosts
}

hosts_clear() {
    grep -qF "$HOSTS_MARK" /etc/hosts || return 0
    local keep
    keep=$(grep -vF "$HOSTS_MARK" /etc/hosts || true)
    printf '%s\n' "$keep" >/etc/hosts
}

link_set() {
    ip link show "$(ns "$1")" >/dev/null 2>&1 || die "no host h$1: run 'scripts/cluster.sh up' first"
    ip link set "$(ns "$1")" "$2"
}

link_state() {
    if ! ip link show "$(ns "$1")" >/dev/null 2>&1; then
        echo missing
    elif ip -o link show "$(ns "$1")" | grep -q ',UP'; then
        echo up
    else
        echo cut
    fi
}

# Stops every process in host N's namespace: SIGTERM, up to 20 s, then SIGKILL.
ns_kill_all() {
    local name
    name=$(ns "$1")
    [[ -e /run/netns/$name ]] || return 0
    local -a pids
    mapfile -t pids < <(ip netns pids "$name")
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local end=$((SECONDS + 20))
    while ((SECONDS < end)); do
        mapfile -t pids < <(ip netns pids "$name")
        ((${#pids[@]})) || return 0
        sleep 0.5
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.5
}

net_down() {
    local n
    for n in "${HOSTS[@]}"; do
        ip link del "$(ns "$n")" 2>/dev/null || true
        [[ -e /run/netns/$(ns "$n") ]] && ip netns del "$(ns "$n")"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    ip route del unreachable "$NET.0/24" metric 4096 2>/dev/null || true
    hosts_clear
}
