#!/usr/bin/env bash
# test/failover.sh: a failover under load with pg_auto_failover (Debian:
# pg-auto-failover-cli and postgresql-MAJOR-auto-failover), all on this
# machine under tmp/failover/, on free 127.0.0.1 ports: a monitor, a primary
# and a synchronous secondary (pg_auto_failover's default with one standby:
# synchronous_standby_names names it, synchronous_commit = on), both with
# extension_tokens preloaded and the same secret.  test/failover.py puts a
# steady load of issue, refresh, revoke and validate on the primary through a
# multi-host connection string, kills the primary's keeper and postgres with
# SIGKILL, waits for the monitor to promote the secondary, goes on, and then
# checks every acknowledged operation on the new primary (ET_FAILOVER_OPTIONS,
# e.g. '-c synchronous_commit=local', sets the load's own settings).  Ends with
# "N passed, M failed".  Needs root (or the packages installed) and the
# extension installed.
#
# --smoke (test/scale.sh --smoke, so test/run-all.sh): the same setup and the
# same checks with a shorter load (1 s before the kill, 100 operations
# acknowledged by the new primary after it) and the monitor's wait for the
# dead primary's demotion cut from 30 s to 5: under a minute.  Where Debian
# has no pg_auto_failover for this PostgreSQL, it says so in a line starting
# "UNAVAILABLE:" and exits 3 without counts (test/scale.sh counts that as a
# failure, never as passed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"
# pg_autoctl reads libpq's variables: one left by a stage before (test/run-all.sh
# runs this after others) would point its monitor at another server's socket.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS
smoke=
if [ "${1:-}" = --smoke ]; then
    smoke=1
    export ET_FAILOVER_LOAD_SECONDS=${ET_FAILOVER_LOAD_SECONDS:-1} ET_FAILOVER_AFTER=${ET_FAILOVER_AFTER:-100}
    workdir=failover-smoke
else
    workdir=failover
fi
started=$SECONDS

afpackages=("postgresql-$PG_MAJOR-auto-failover" pg-auto-failover-cli)
if ! et_install_packages "${afpackages[@]}"; then
    for p in "${afpackages[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then
            echo "UNAVAILABLE: pg_auto_failover is not available for PostgreSQL $PG_MAJOR here (no Debian package $p): the failover test did not run"
            exit 3
        fi
    done
    echo "could not install ${afpackages[*]}" >&2
    exit 1
fi
installed=$SECONDS
dir=$(et_workdir "$workdir")
mkdir -p "$dir/run" && chmod 700 "$dir/run"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir/run"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
mport=$(et_free_port)
port1=$(et_free_port)
port2=$(et_free_port)
AUTOCTL_PIDS=()

autoctl() {
    et_as_pg env XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/share" XDG_RUNTIME_DIR="$dir/run" \
        PG_CONFIG="$PG_BIN/pg_config" \
        PATH="$PG_BIN:$PATH" PGCONNECT_TIMEOUT=2 pg_autoctl "$@"
}
# run_node NAME: pg_autoctl run in the background (its log in NAME.log)
run_node() {
    autoctl run --pgdata "$dir/$1" >"$dir/$1.log" 2>&1 &
    AUTOCTL_PIDS+=("$!")
}
stop_all() {
    local node pid
    for node in node2 node1 monitor; do
        [ -d "$dir/$node" ] && autoctl stop --pgdata "$dir/$node" --immediate >/dev/null 2>&1 || true
    done
    for pid in "${AUTOCTL_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for node in node2 node1 monitor; do
        [ -f "$dir/$node/postmaster.pid" ] &&
            et_as_pg "$PG_BIN/pg_ctl" -D "$dir/$node" -m immediate stop >/dev/null 2>&1 || true
    done
    return 0
}
trap stop_all EXIT
monitor_uri="postgres://autoctl_node@127.0.0.1:$mport/pg_auto_failover?sslmode=disable"
common=(--hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$PG_BIN/pg_ctl")

say "pg_auto_failover: monitor on $mport, node1 on $port1, node2 on $port2"
autoctl create monitor --pgdata "$dir/monitor" --pgport "$mport" "${common[@]}" >"$dir/create-monitor.log" 2>&1 ||
    { cat "$dir/create-monitor.log"; exit 1; }
# Failover within seconds rather than the default half minute.
cat >> "$dir/monitor/postgresql.conf" <<CONF
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 4000
CONF
# The smoke: the promoted secondary takes writes 5 s (not 30) after the kill,
# when the monitor stops waiting for the dead primary to demote itself.
[ -z "$smoke" ] || echo "pgautofailover.primary_demote_timeout = 5000" >> "$dir/monitor/postgresql.conf"
run_node monitor

node_conf() { # the extension on a node: its own postgresql.conf, copied to the secondary by pg_basebackup
    cat >> "$dir/$1/postgresql.conf" <<CONF
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.refresh_retry_window = 0
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
log_min_messages = warning
CONF
}
for _ in $(seq 1 100); do
    autoctl show uri --pgdata "$dir/monitor" --monitor >/dev/null 2>&1 && break
    sleep 0.2
done
autoctl create postgres --pgdata "$dir/node1" --pgport "$port1" --name node1 --monitor "$monitor_uri" \
    "${common[@]}" >"$dir/create-node1.log" 2>&1 || { cat "$dir/create-node1.log"; exit 1; }
et_as_pg "$PG_BIN/pg_ctl" -D "$dir/node1" -m fast -w stop >/dev/null 2>&1 || true
node_conf node1
run_node node1

# state NODE: the node's state as the monitor last assigned it
state() {
    autoctl show state --pgdata "$dir/monitor" 2>/dev/null |
        awk -F'|' -v n="$1" '{ gsub(/ /, "", $1); gsub(/ /, "", $7) } $1 == n { print $7 }' || true
}
wait_state() { # wait_state NODE STATE SECONDS
    for _ in $(seq 1 $(($3 * 5))); do
        [ "$(state "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    echo "node $1 did not reach $2 within $3 s (it is: $(state "$1"))" >&2
    autoctl show state --pgdata "$dir/monitor" >&2 || true
    return 1
}
wait_state node1 single 60
autoctl create postgres --pgdata "$dir/node2" --pgport "$port2" --name node2 --monitor "$monitor_uri" \
    "${common[@]}" >"$dir/create-node2.log" 2>&1 || { cat "$dir/create-node2.log"; exit 1; }
run_node node2
wait_state node1 primary 90
wait_state node2 secondary 90
psql -X -q -h 127.0.0.1 -p "$port1" -U postgres -d postgres -c 'CREATE EXTENSION extension_tokens' 2>/dev/null
psql -X -A -t -h 127.0.0.1 -p "$port1" -U postgres -d postgres \
    -c "SELECT 'synchronous_standby_names = ' || current_setting('synchronous_standby_names') || ', synchronous_commit = ' || current_setting('synchronous_commit')"
autoctl show state --pgdata "$dir/monitor"

# The kill (by test/failover.py): node1's keeper, its children and postgres,
# with SIGKILL, at once.
export ET_FAILOVER_KEEPER_PIDFILE="$(find "$dir/run" /tmp/pg_autoctl -path "*$dir/node1/pg_autoctl.pid" 2>/dev/null | head -n 1)"
[ -n "$ET_FAILOVER_KEEPER_PIDFILE" ] || { echo "node1's keeper has no pid file" >&2; exit 1; }
export ET_FAILOVER_POSTMASTER_PIDFILE="$dir/node1/postmaster.pid"
export ET_FAILOVER_DSN="host=127.0.0.1,127.0.0.1 port=$port1,$port2 dbname=postgres user=postgres target_session_attrs=read-write connect_timeout=2"
export ET_FAILOVER_NEW_PRIMARY_PORT=$port2
say "set up in $((SECONDS - installed)) s (packages: $((installed - started)) s); the load and the kill (test/failover.py)"
rc=0
/usr/bin/python3 test/failover.py || rc=$?
autoctl show state --pgdata "$dir/monitor" || true
echo "# failover test: $((SECONDS - started)) s in all"
exit $rc
