#!/usr/bin/env bash
# bench/scale.sh: issue and validate through the PL/Proxy proxy at 1 and 2
# shards against the same calls made directly on a shard, and validate
# through PgBouncer (transaction pooling) against direct; pgbench on one
# throwaway cluster under tmp/bench-scale/ (fsync on), every figure computed
# here and written to bench/results-scale.md (BENCH_OUT to write elsewhere).
#
#   BENCH_SECONDS   seconds per pgbench run (default 15)
#   BENCH_CLIENTS   pgbench clients (default 2: the machine's cores)
#
# Needs root (or the packages installed) and the extension installed.
set -euo pipefail
source "$(dirname "$0")/../test/lib.sh"
cd "$ET_ROOT"
seconds=${BENCH_SECONDS:-15}
clients=${BENCH_CLIENTS:-2}
out=${BENCH_OUT:-$ET_ROOT/bench/results-scale.md}
tokens=2000

et_install_packages "postgresql-$PG_MAJOR-plproxy" pgbouncer
dir=$(et_workdir bench-scale)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'" "extension_tokens.issue_rate_limit = 0" \
    "extension_tokens.max_sessions_per_user = 0" "max_connections = 200" "fsync = on"
et_plproxy_setup 2 proxy2 shard
et_plproxy_proxy 1 proxy1 shard
authpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
psql -X -q -c "ALTER ROLE postgres PASSWORD '$authpw'"
et_start_pgbouncer "$dir" "$authpw" postgres

# The tokens each run validates: issued through its own route, kept in a
# table of the database pgbench connects to.
for db in shard0 proxy1 proxy2; do
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
SET ROLE service_role;
CREATE TEMP TABLE t AS
    SELECT i AS id, (extension_token_issue('bench-$db-' || i)).access_token AS access
      FROM generate_series(1, $tokens) i;
RESET ROLE;
CREATE TABLE bench_tokens AS SELECT * FROM t;
ALTER TABLE bench_tokens ADD PRIMARY KEY (id);
SQL
done

cat > "$dir/validate.sql" <<SQL
\\set id random(1, $tokens)
SELECT (extension_token_validate(access)).valid FROM bench_tokens WHERE id = :id;
SQL
cat > "$dir/issue.sql" <<'SQL'
\set u random(1, 1000000000)
BEGIN;
SET LOCAL ROLE service_role;
SELECT session_id FROM extension_token_issue('bench-user-' || :u);
COMMIT;
SQL

declare -A tps lat
# run NAME SCRIPT [pgbench connection options...]
run() {
    local name=$1 script=$2 log
    shift 2
    log=$dir/pgbench-$name.log
    pgbench -n -c "$clients" -j "$clients" -T "$seconds" -f "$script" "$@" >"$log" 2>&1 ||
        { cat "$log"; return 1; }
    tps[$name]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log" | tail -n 1)
    lat[$name]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$log")
    # a run whose queries failed is not a measurement
    if grep -q 'number of failed transactions: [1-9]' "$log" || [ -z "${tps[$name]}" ]; then
        cat "$log"; return 1
    fi
    printf '%-24s %10s TPS  %8s ms\n' "$name" "${tps[$name]}" "${lat[$name]}"
}

say "pgbench, $clients clients, $seconds s each"
run validate_direct "$dir/validate.sql" -d shard0
run validate_proxy1 "$dir/validate.sql" -d proxy1
run validate_proxy2 "$dir/validate.sql" -d proxy2
run issue_direct "$dir/issue.sql" -d shard0
run issue_proxy1 "$dir/issue.sql" -d proxy1
run issue_proxy2 "$dir/issue.sql" -d proxy2
PGPASSWORD=$authpw run validate_pgbouncer "$dir/validate.sql" -h 127.0.0.1 -p "$ET_PGBOUNCER_PORT" -d shard0
clients=$((clients * 8))
run validate_direct_many "$dir/validate.sql" -d shard0
PGPASSWORD=$authpw run validate_pgbouncer_many "$dir/validate.sql" -h 127.0.0.1 -p "$ET_PGBOUNCER_PORT" -d shard0
clients=$((clients / 8))

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { # row LABEL NAME BASELINE
    printf '| %s | %s | %s | %s× |\n' "$1" "$(printf '%.0f' "${tps[$2]}")" "${lat[$2]}" "$(ratio "${tps[$2]}" "${tps[$3]}")"
}
{
    echo "# extension_tokens: through PL/Proxy and PgBouncer"
    echo
    echo "Written by \`bench/scale.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, PostgreSQL $PG_MAJOR," \
         "$("$PG_BIN/postgres" --version | sed 's/.*) //'), $("$(et_pgbouncer_bin)" --version | head -n 1)," \
         "one cluster, fsync on). pgbench, $clients clients (16 for the last two rows), $seconds s per row;" \
         "$tokens tokens per database, each validated at random. The proxy and its shards are" \
         "databases of the same server, so every row shares the same two cores: the proxy's cost is" \
         "what the rows show, the added capacity of a second machine is not."
    echo
    echo "| operation | TPS | latency (ms) | vs direct |"
    echo "|---|---:|---:|---:|"
    row "validate, direct on a shard" validate_direct validate_direct
    row "validate through the proxy, 1 shard" validate_proxy1 validate_direct
    row "validate through the proxy, 2 shards" validate_proxy2 validate_direct
    row "issue, direct on a shard" issue_direct issue_direct
    row "issue through the proxy, 1 shard" issue_proxy1 issue_direct
    row "issue through the proxy, 2 shards" issue_proxy2 issue_direct
    row "validate through PgBouncer (transaction pooling)" validate_pgbouncer validate_direct
    row "validate, direct, 16 clients" validate_direct_many validate_direct_many
    row "validate through PgBouncer, 16 clients over 2 server connections" validate_pgbouncer_many validate_direct_many
} > "$out"
cat "$out"
