# test/lib.sh: shared by quickstart.sh and test/run-all.sh.
# Installs what is missing, builds and installs the extension, and starts and
# stops a throwaway PostgreSQL cluster under the repository's tmp/ directory
# (Unix socket only unless a TCP port is asked for; 127.0.0.1 only).

set -euo pipefail

ET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
ET_PACKAGES=(build-essential "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
             "postgresql-$PG_MAJOR-cron" libjwt-dev libjansson-dev
             libssl-dev openssl libipc-run-perl python3 python3-jwt python3-cryptography python3-psycopg2)
# test/exporter.sh only: the exporter that reads monitoring/queries.yaml, and
# promtool (in Debian's prometheus package) for monitoring/alerts.yml.
ET_MONITORING_PACKAGES=(prometheus-postgres-exporter prometheus)

say() { printf '\n==> %s\n' "$*"; }

# Installs the Debian packages that are missing (root only; others are told).
et_install_packages() {
    local missing=() p
    for p in "${ET_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or install them first)" >&2
        return 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ET_WERROR=1 (test/run-all.sh sets it) builds from clean with every warning
# an error (make WERROR=1).
et_build_install() {
    say "building and installing extension_tokens"
    if [ -n "${ET_WERROR:-}" ]; then
        make -C "$ET_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" clean >/dev/null
        make -C "$ET_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" WERROR=1 >/dev/null
    fi
    make -C "$ET_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" >/dev/null
    if [ -w "$("$PG_BIN/pg_config" --pkglibdir)" ]; then
        make -C "$ET_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
    else
        sudo make -C "$ET_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
    fi
}

# The user that owns and runs the throwaway clusters: initdb refuses root.
et_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

et_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A work directory the cluster user can write: tmp/ in the repository, or a
# private directory under /tmp when the repository is not reachable to it.
et_workdir() {
    local name=$1 dir="$ET_ROOT/tmp/$1"
    mkdir -p "$ET_ROOT/tmp"
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            rm -rf "$dir"
            dir=$(mktemp -d "/tmp/extension_tokens.$name.XXXXXX")
            chown postgres: "$dir"
        fi
    fi
    echo "$dir"
}

# A free TCP port on 127.0.0.1.
et_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# et_start_cluster DIR [extra postgresql.conf lines...]
# Sets PGHOST, PGPORT, PGUSER, PGDATABASE for the caller.
et_start_cluster() {
    local dir=$1; shift
    local port
    port=$(et_free_port)
    et_as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log"; return 1; }
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'pg_cron,extension_tokens'"
        echo "cron.database_name = 'postgres'"
        echo "fsync = off"
        echo "log_min_messages = warning"
        # A server the test scripts started: make installcheck refuses others.
        echo "regress_extension_tokens.throwaway = on"
        for line in "$@"; do echo "$line"; done
    } >> "$dir/data/postgresql.conf"
    et_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
        { cat "$dir/server.log"; return 1; }
    export PGHOST=$dir PGPORT=$port PGUSER=postgres PGDATABASE=postgres
    ET_CLUSTERS+=("$dir")
}

# et_start_pgbouncer DIR PASSWORD ROLE...: a PgBouncer in transaction
# pooling mode on a free 127.0.0.1 port in front of the cluster started last
# (connecting to it over its Unix socket), accepting each ROLE with PASSWORD
# (SCRAM), ET_PGBOUNCER_POOL_SIZE (default 2) server connections per
# database and role.  Sets ET_PGBOUNCER_PORT; et_stop_clusters stops it.
et_pgbouncer_bin() {
    command -v pgbouncer || echo /usr/sbin/pgbouncer
}
et_start_pgbouncer() {
    local dir=$1 password=$2 role port
    shift 2
    port=$(et_free_port)
    ET_PGBOUNCER_POOL_SIZE=${ET_PGBOUNCER_POOL_SIZE:-2}
    for role in "$@"; do printf '"%s" "%s"\n' "$role" "$password"; done > "$dir/pgbouncer-users.txt"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=$PGHOST port=$PGPORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/pgbouncer-users.txt
pool_mode = transaction
default_pool_size = $ET_PGBOUNCER_POOL_SIZE
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
INI
    chmod 600 "$dir/pgbouncer-users.txt" "$dir/pgbouncer.ini"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pgbouncer-users.txt" "$dir/pgbouncer.ini"
    et_as_pg "$(et_pgbouncer_bin)" -d -q "$dir/pgbouncer.ini" ||
        { cat "$dir/pgbouncer.log" 2>/dev/null; return 1; }
    ET_PGBOUNCERS+=("$dir/pgbouncer.pid")
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$port" 2>/dev/null && { ET_PGBOUNCER_PORT=$port; return 0; }
        sleep 0.1
    done
    echo "PgBouncer did not listen on 127.0.0.1:$port" >&2
    cat "$dir/pgbouncer.log" >&2
    return 1
}

# et_plproxy_setup SHARDS PROXY_DB SHARD_PREFIX: in the cluster started last
# (the extension preloaded, admin_roles = 'service_role'), the roles as
# Supabase has them, the proxy's login roles et_proxy_<role>, SHARDS shard
# databases SHARD_PREFIX0.. (examples/plproxy/shard.sql, shard_tag = i) and
# the proxy database PROXY_DB (examples/plproxy/proxy.sql) over them.
# et_plproxy_proxy PARTITIONS PROXY_DB SHARD_PREFIX makes another proxy
# database over the first PARTITIONS shards.
et_plproxy_setup() {
    local shards=$1 proxy=$2 prefix=$3 i
    psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'et_proxy_anon') THEN
        CREATE ROLE et_proxy_anon LOGIN NOINHERIT IN ROLE anon;
        CREATE ROLE et_proxy_authenticated LOGIN NOINHERIT IN ROLE authenticated;
        CREATE ROLE et_proxy_service_role LOGIN NOINHERIT IN ROLE service_role;
    END IF;
END $$;
SQL
    for ((i = 0; i < shards; i++)); do
        psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $prefix$i" \
            -c "ALTER DATABASE $prefix$i SET extension_tokens.shard_tag = $i"
        psql -X -q -v ON_ERROR_STOP=1 -d "$prefix$i" \
            -c 'CREATE EXTENSION extension_tokens' -c 'SELECT extension_tokens_grant_api_roles()' \
            -f "$ET_ROOT/examples/plproxy/shard.sql" >/dev/null
    done
    et_plproxy_proxy "$shards" "$proxy" "$prefix"
}
et_plproxy_proxy() {
    local partitions=$1 proxy=$2 prefix=$3 i opts=""
    for ((i = 0; i < partitions; i++)); do
        opts+="${opts:+, }p$i 'dbname=$prefix$i host=$PGHOST port=$PGPORT'"
    done
    psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $proxy"
    psql -X -q -v ON_ERROR_STOP=1 -d "$proxy" >/dev/null <<SQL
CREATE EXTENSION plproxy;
CREATE SERVER extension_tokens FOREIGN DATA WRAPPER plproxy OPTIONS (connection_lifetime '1800', $opts);
CREATE USER MAPPING FOR PUBLIC SERVER extension_tokens OPTIONS (user 'et_proxy_anon');
CREATE USER MAPPING FOR authenticated SERVER extension_tokens OPTIONS (user 'et_proxy_authenticated');
CREATE USER MAPPING FOR service_role SERVER extension_tokens OPTIONS (user 'et_proxy_service_role');
GRANT USAGE ON FOREIGN SERVER extension_tokens TO PUBLIC;
\\i $ET_ROOT/examples/plproxy/proxy.sql
SQL
}

et_stop_clusters() {
    local dir pidfile pid
    for pidfile in "${ET_PGBOUNCERS[@]:-}"; do
        [ -n "$pidfile" ] && [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    ET_PGBOUNCERS=()
    for dir in "${ET_CLUSTERS[@]:-}"; do
        [ -n "$dir" ] && [ -f "$dir/data/postmaster.pid" ] &&
            et_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    done
    ET_CLUSTERS=()
}
ET_CLUSTERS=()
ET_PGBOUNCERS=()
trap et_stop_clusters EXIT
