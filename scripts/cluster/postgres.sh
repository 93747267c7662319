# shellcheck shell=bash
# PostgreSQL 15 under Patroni (sourced by scripts/cluster.sh): one Patroni per host, as the
# postgres user, on the etcd cluster (v3 API). Whoever takes the initialize key first runs
# initdb; the others clone it. synchronous_mode: one standby is synchronous, and only it may be
# promoted, so a failover loses no committed transaction.
#
# Timing: ttl 20 s (the least Patroni 4 accepts: it raises a smaller ttl to 20 with a warning),
# loop_wait 2 s, retry_timeout 4 s (Patroni wants loop_wait + 2 * retry_timeout <= ttl). A cut
# primary stops serving writes once it cannot reach etcd for retry_timeout (and, synchronous, it
# could not commit one without its standby anyway); its leader key lapses at most ttl after its
# last refresh, and the synchronous standby is promoted on its next loop, once it has given up
# asking the old primary's REST API: measured 22-28 s from the cut to the first write on the new
# primary. failsafe_mode: a primary that loses etcd but still reaches every other member keeps
# running (an etcd election alone does not demote it).

PATRONI_VERSION=4.1.5
PSYCOPG_VERSION=3.3.9

patroni_install() {
    [[ -x $VENV/bin/patroni ]] && return 0
    log "installing Patroni $PATRONI_VERSION into $VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "patroni[etcd3]==$PATRONI_VERSION" "psycopg[binary]==$PSYCOPG_VERSION" >&2
}

pg_dir() { printf '%s/pg' "$(hostdir "$1")"; }

patroni_config() {
    local n=$1 ip m etcd_hosts="" sep=""
    ip=$(ip_of "$n")
    for m in "${HOSTS[@]}"; do etcd_hosts+="$sep$(ip_of "$m"):2379"; sep=", "; done
    cat <<YAML
scope: agentdeck
namespace: /agentdeck-cluster/
name: h$n
log:
  level: INFO
restapi:
  listen: $ip:8008
  connect_address: $ip:8008
etcd3:
  hosts: [$etcd_hosts]
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 4
    failsafe_mode: true
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: "on"
        wal_keep_size: 128MB
  initdb:
    - encoding: UTF8
    - data-checksums
postgresql:
  listen: 0.0.0.0:5432
  connect_address: $ip:5432
  data_dir: $(pg_dir "$n")/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: $(pg_dir "$n")/pgpass
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
      password: $PG_SUPER_PASS
    replication:
      username: replicator
      password: $PG_REPL_PASS
  parameters:
    unix_socket_directories: $(pg_dir "$n")
    shared_buffers: 32MB
    max_connections: 100
  pg_hba:
    - local all all trust
    - local replication all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host replication replicator $NET.0/24 scram-sha-256
    - host all all $NET.0/24 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
YAML
}

patroni_start() {
    local n=$1 d
    d=$(pg_dir "$n")
    mkdir -p "$d"
    (umask 077 && patroni_config "$n" >"$d/patroni.yml")
    chown -R postgres:postgres "$d"
    start_daemon "$n" patroni postgres env HOME="$d" "$VENV/bin/patroni" "$d/patroni.yml"
}

# A new cluster is bootstrapped by h1 (the others start once it leads, so the first primary is
# always on h1, where the first Redis primary is too); later, whatever is not running starts.
patroni_start_all() {
    patroni_start 1
    if [[ ! -d $(pg_dir 2)/data && ! -d $(pg_dir 3)/data ]]; then
        wait_until "postgres bootstrap on h1" "$TIMEOUT" patroni_h1_leads || true
    fi
    patroni_start 2
    patroni_start 3
}

patroni_h1_leads() { [[ $(postgres_role 1) == leader ]]; }

# Patroni's view of the cluster as "name role state" lines, from the first host that answers.
patroni_members() {
    local n
    for n in "${HOSTS[@]}"; do
        curl -fsS --max-time 3 "http://$(ip_of "$n"):8008/cluster" 2>/dev/null |
            python3 -c 'import json,sys
for m in json.load(sys.stdin)["members"]:
    print(m["name"], m["role"], m["state"])' 2>/dev/null && return 0
    done
    return 1
}

# A leader running, a synchronous standby streaming, the third member streaming.
patroni_healthy() {
    local members
    members=$(patroni_members) || return 1
    grep -q ' leader running$' <<<"$members" || return 1
    grep -q ' sync_standby streaming$' <<<"$members" || return 1
    [[ $(grep -cE ' (running|streaming)$' <<<"$members") == 3 ]]
}

pg_leader() { patroni_members | awk '$2 == "leader" {print $1}' | head -n1; }

patroni_ready() {
    wait_until "postgres (patroni: leader + sync standby + replica)" "$TIMEOUT" patroni_healthy ||
        return 1
    local leader
    leader=$(pg_leader)
    [[ -n $leader ]] || return 1
    # The application's role and database, made on the primary (idempotent).
    local -a psql=(env PGPASSWORD="$PG_SUPER_PASS" PGCONNECT_TIMEOUT=5 psql -X -q -tA
        -v ON_ERROR_STOP=1 "host=$(ip_of "${leader#h}") user=postgres dbname=postgres")
    if [[ -z $("${psql[@]}" -c "select 1 from pg_roles where rolname = 'agentdeck'") ]]; then
        "${psql[@]}" -c "create role agentdeck login password '$PG_APP_PASS'" || return 1
    fi
    if [[ -z $("${psql[@]}" -c "select 1 from pg_database where datname = 'agentdeck'") ]]; then
        "${psql[@]}" -c "create database agentdeck owner agentdeck" || return 1
    fi
    # agentdeck's group roles, made once per cluster by a superuser as a DBA would
    # (backends/postgres/schema.py CREATE_ROLES_BY_HAND): the owner may not create roles.
    local role
    for role in agentdeck_viewer agentdeck_operator agentdeck_node; do
        if [[ -z $("${psql[@]}" -c "select 1 from pg_roles where rolname = '$role'") ]]; then
            "${psql[@]}" -c "create role $role nologin" || return 1
        fi
    done
}

# Patroni's role for the member on host N (leader|sync_standby|replica, and its state when
# not running/streaming), asked of that host's own Patroni; down when its postgres is not running.
postgres_role() {
    local pid
    pid=$(head -n1 "$(pg_dir "$1")/data/postmaster.pid" 2>/dev/null || true)
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
        echo down
        return
    fi
    in_ns "$1" curl -fsS --max-time 3 "http://$(ip_of "$1"):8008/patroni" 2>/dev/null |
        python3 -c 'import json,sys
p = json.load(sys.stdin)
role = {"master": "leader", "primary": "leader"}.get(p.get("role"), p.get("role"))
if role == "replica" and p.get("sync_standby"):
    role = "sync_standby"
print(role if p.get("state") in ("running", "streaming") else role + "/" + p.get("state", "?"))' \
        2>/dev/null ||
        echo unknown
}
