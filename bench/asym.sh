#!/usr/bin/env bash
# bench/asym.sh: issue and validate under ES256 and EdDSA beside HS256, in one
# run on one throwaway server (the row "ES256/EdDSA ... reported beside the
# HS256 access-token path, same run" of bench/README.md's targets).
#
#   bench/asym.sh                 N=2000 tokens per algorithm, median of 3
#   BENCH_N=500 BENCH_RUNS=1 bench/asym.sh      quicker
#
# For each algorithm, in one SQL statement each: issue N pairs (new users),
# validate those N tokens (cold: this backend has not verified them), then
# 100 of them N / 100 times each (warm: the verified-token cache hits, no
# signature check).  And OpenSSL's own figures for the bare operations
# (openssl speed), for scale.  Reported in µs per token, with the ratio to HS256.
# Builds and installs the extension (test/lib.sh), keys made with openssl.
# Output: bench/results-asym.md (BENCH_OUT).
set -euo pipefail
source "$(dirname "$0")/../test/lib.sh"
cd "$ET_ROOT"
N=${BENCH_N:-2000}
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-$ET_ROOT/bench/results-asym.md}

et_install_packages
et_build_install
dir=$(et_workdir bench-asym)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/es256.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$dir/eddsa.pem" 2>/dev/null
chmod 600 "$dir"/*.pem
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"/*.pem
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" "jit = off"
psql -X -q -c 'CREATE EXTENSION extension_tokens'

configure() { # ALG
    local key=""
    case $1 in ES256) key=$dir/es256.pem ;; EdDSA) key=$dir/eddsa.pem ;; esac
    if [ -n "$key" ]; then
        psql -X -q -c "ALTER SYSTEM SET extension_tokens.signing_key_file = '$key'"
    fi
    psql -X -q -c "ALTER SYSTEM SET extension_tokens.signing_algorithm = '$1'" -c 'SELECT pg_reload_conf()' >/dev/null
    for _ in $(seq 1 50); do
        [ "$(psql -X -A -t -c 'SHOW extension_tokens.signing_algorithm')" = "$1" ] && return
        sleep 0.1
    done
    echo "signing_algorithm $1 not in force" >&2
    exit 1
}

# One run for ALG: prints "issue cold warm" in µs per token.
run_once() { # ALG RUN
    psql -X -A -t -q -v ON_ERROR_STOP=1 <<SQL
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
CREATE TEMP TABLE t AS SELECT access_token FROM extension_token_issue('warmup-$1-$2');
DROP TABLE t;
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE t AS
  SELECT (extension_token_issue('bench-$1-$2-' || g)).access_token FROM generate_series(1, $N) g;
SELECT clock_timestamp() AS t1 \gset
SELECT count(*) FILTER (WHERE NOT (extension_token_validate(access_token)).valid) FROM t \gset bad_
SELECT clock_timestamp() AS t2 \gset
-- warm: the first 100 tokens, each validated N / 100 times (the
-- verified-token cache has 512 slots: N distinct tokens would evict)
SELECT count(*) FILTER (WHERE NOT (extension_token_validate(access_token)).valid)
  FROM (SELECT access_token FROM t LIMIT 100) w, generate_series(1, $N / 100) \gset bad2_
SELECT clock_timestamp() AS t3 \gset
SELECT CASE WHEN :bad_count + :bad2_count > 0 THEN 'invalid tokens: ' || :bad_count ELSE
  round(extract(epoch FROM (:'t1'::timestamptz - :'t0'::timestamptz)) * 1e6 / $N, 1) || ' ' ||
  round(extract(epoch FROM (:'t2'::timestamptz - :'t1'::timestamptz)) * 1e6 / $N, 1) || ' ' ||
  round(extract(epoch FROM (:'t3'::timestamptz - :'t2'::timestamptz)) * 1e6 / $N, 1) END;
SQL
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

rows=()
for alg in HS256 ES256 EdDSA; do
    configure "$alg"
    issue=() cold=() warm=()
    for r in $(seq 1 "$RUNS"); do
        read -r i c w <<<"$(run_once "$alg" "$r")"
        [[ $i =~ ^[0-9.]+$ ]] || { echo "$alg: $i $c $w" >&2; exit 1; }
        issue+=("$i") cold+=("$c") warm+=("$w")
    done
    rows+=("$alg $(printf '%s\n' "${issue[@]}" | median) $(printf '%s\n' "${cold[@]}" | median) $(printf '%s\n' "${warm[@]}" | median)")
done

{
    echo "# ES256 and EdDSA beside HS256"
    echo
    echo "bench/asym.sh, $(date -u +%Y-%m-%d), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $(openssl version | awk '{print $1, $2}'), $(nproc) CPU;"
    echo "$N tokens per algorithm in one SQL statement each, median of $RUNS runs, µs per token."
    echo
    echo "| algorithm | issue (one statement) | validate, cold | validate, warm (cache hit) |"
    echo "|---|---:|---:|---:|"
    base_i= base_c=
    for row in "${rows[@]}"; do
        read -r alg i c w <<<"$row"
        [ -z "$base_i" ] && { base_i=$i; base_c=$c; }
        ri=$(awk -v a="$i" -v b="$base_i" 'BEGIN { printf "%.2f", a / b }')
        rc=$(awk -v a="$c" -v b="$base_c" 'BEGIN { printf "%.2f", a / b }')
        echo "| $alg | $i (${ri}× HS256) | $c (${rc}× HS256) | $w |"
    done
    echo
    echo "Cold validation verifies the signature (ES256: ECDSA P-256 verify; EdDSA: Ed25519 verify);"
    echo "a warm one does not (the verified-token cache) unless it misses: the cache is direct mapped"
    echo "(512 slots), so a few of the 100 tokens evict each other, and each miss is a full verification."
    echo
    echo "The bare operations on this machine (\`openssl speed -seconds 1 ecdsap256 ed25519\`, µs per operation):"
    echo
    echo "| operation | sign | verify |"
    echo "|---|---:|---:|"
    openssl speed -seconds 1 ecdsap256 ed25519 2>/dev/null |
        awk '/^ *256 bits ecdsa \(nistp256\)/ { printf "| ECDSA P-256 | %.1f | %.1f |\n", 1e6 / $7, 1e6 / $8 }
             /^ *253 bits EdDSA \(Ed25519\)/  { printf "| Ed25519 | %.1f | %.1f |\n", 1e6 / $7, 1e6 / $8 }'
} > "$OUT"
cat "$OUT"
